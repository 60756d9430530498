// SPDX-License-Identifier: Apache-2.0
// Throughput of our HTTP/1 request parser against libhttp-parser 2.9.4 on a fixed set of realistic
// requests (curl GET, browser GET with a dozen fields, JSON API POST with its body, keep-alive
// request with large cookies). Both parsers do what a proxy needs: ours fills the field views and
// skips the Content-Length body; http_parser's callbacks record the URL and each field and value
// span and note the body. Timed rounds alternate between the two so both see the same machine
// load; prints MB/s and requests/s as median, min and max, and the per-round ratio. Run:
//     ninja -C build bench_http1 && ./build/bench_http1 [rounds] [seconds-per-round]
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <http_parser.h>

#include "core/error.h"
#include "net/http1.h"

static const char *const requests[] = {
    /* curl */
    "GET /api/v1/health HTTP/1.1\r\n"
    "Host: localhost:8080\r\n"
    "User-Agent: curl/8.5.0\r\n"
    "Accept: */*\r\n"
    "\r\n",
    /* a browser */
    "GET /static/js/app.3f9a1c2b.js?v=20240101 HTTP/1.1\r\n"
    "Host: www.example.com\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0\r\n"
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;"
    "q=0.8\r\n"
    "Accept-Language: en-US,en;q=0.5\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "Referer: https://www.example.com/products/widgets?page=2&sort=price\r\n"
    "Connection: keep-alive\r\n"
    "Upgrade-Insecure-Requests: 1\r\n"
    "Sec-Fetch-Dest: script\r\n"
    "Sec-Fetch-Mode: no-cors\r\n"
    "Sec-Fetch-Site: same-origin\r\n"
    "If-None-Match: \"5f3a-1c2b3d4e5f60\"\r\n"
    "Cache-Control: max-age=0\r\n"
    "\r\n",
    /* a JSON API call with its body */
    "POST /api/v2/orders HTTP/1.1\r\n"
    "Host: orders.internal.svc.cluster.local:8443\r\n"
    "User-Agent: okhttp/4.12.0\r\n"
    "Content-Type: application/json; charset=utf-8\r\n"
    "Accept: application/json\r\n"
    "Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFt"
    "ZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c\r\n"
    "X-Request-Id: 7f1d3c2a-9b8e-4f6d-a5c4-3b2a1f0e9d8c\r\n"
    "Content-Length: 82\r\n"
    "\r\n"
    "{\"customer\":\"c-1029\",\"items\":[{\"sku\":\"w-17\",\"qty\":2},{\"sku\":\"g-3\",\"qty\":1}],"
    "\"x\":1}",
    /* keep-alive with cookies */
    "GET /account/settings HTTP/1.1\r\n"
    "Host: app.example.com\r\n"
    "Connection: keep-alive\r\n"
    "Accept: text/html\r\n"
    "Cookie: _ga=GA1.2.1234567890.1700000000; _gid=GA1.2.987654321.1700000000; "
    "session_id=8f14e45fceea167a5a36dedd4bea2543a2b1c3d4e5f60718293a4b5c6d7e8f90; "
    "csrftoken=Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5d2FsZG9mcmVk; theme=dark; "
    "lang=en-US; tz=Europe%2FBerlin; consent=v2:analytics=1,ads=0,functional=1; "
    "ab_bucket=checkout-redesign-b; last_seen=1700001234\r\n"
    "User-Agent: Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 (KHTML, "
    "like Gecko) Version/17.2 Safari/605.1.15\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "\r\n",
};

#define NREQ (sizeof(requests) / sizeof(requests[0]))
#define MAXH 64
#define MAX_ROUNDS 64

static size_t lens[NREQ];
static size_t corpus_bytes;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- ours ---- */

static uint64_t run_ours(size_t iters)
{
    struct sc_http_header hs[MAXH];
    struct sc_http_msg msg = { .headers = hs };
    struct sc_http_error err;
    uint64_t sink = 0;
    for (size_t i = 0; i < iters; i++) {
        for (size_t r = 0; r < NREQ; r++) {
            int head = sc_http1_parse_request(requests[r], lens[r], 0, NULL, &msg, MAXH, &err);
            if (head <= 0) {
                fprintf(stderr, "bench: our parser failed on request %zu: %s\n", r,
                        head < 0 ? err.reason : "incomplete");
                exit(1);
            }
            /* a proxy forwards the body by length without looking at it */
            sink += (uint64_t)head + msg.nheaders + msg.content_length;
        }
    }
    return sink;
}

/* ---- http_parser, with the callbacks a proxy would set ---- */

struct span {
    const char *p;
    size_t len;
};

struct hp_ctx {
    struct span url;
    struct span names[MAXH];
    struct span values[MAXH];
    size_t nh;
    int in_value;
    size_t body;
    int done;
};

static int hp_url(http_parser *p, const char *at, size_t n)
{
    struct hp_ctx *c = p->data;
    c->url.p = at;
    c->url.len = n;
    return 0;
}

static int hp_field(http_parser *p, const char *at, size_t n)
{
    struct hp_ctx *c = p->data;
    if (c->in_value || c->nh == 0) {
        if (c->nh == MAXH) {
            return -1;
        }
        c->nh++;
        c->in_value = 0;
    }
    c->names[c->nh - 1].p = at;
    c->names[c->nh - 1].len = n;
    return 0;
}

static int hp_value(http_parser *p, const char *at, size_t n)
{
    struct hp_ctx *c = p->data;
    c->values[c->nh - 1].p = at;
    c->values[c->nh - 1].len = n;
    c->in_value = 1;
    return 0;
}

static int hp_headers_complete(http_parser *p)
{
    (void)p;
    return 0;
}

static int hp_body(http_parser *p, const char *at, size_t n)
{
    struct hp_ctx *c = p->data;
    (void)at;
    c->body += n;
    return 0;
}

static int hp_complete(http_parser *p)
{
    struct hp_ctx *c = p->data;
    c->done = 1;
    return 0;
}

static const http_parser_settings hp_settings = {
    .on_url = hp_url,
    .on_header_field = hp_field,
    .on_header_value = hp_value,
    .on_headers_complete = hp_headers_complete,
    .on_body = hp_body,
    .on_message_complete = hp_complete,
};

static uint64_t run_theirs(size_t iters)
{
    http_parser p;
    struct hp_ctx c;
    uint64_t sink = 0;
    for (size_t i = 0; i < iters; i++) {
        for (size_t r = 0; r < NREQ; r++) {
            c.nh = 0;
            c.in_value = 0;
            c.body = 0;
            c.done = 0;
            http_parser_init(&p, HTTP_REQUEST);
            p.data = &c;
            size_t n = http_parser_execute(&p, &hp_settings, requests[r], lens[r]);
            if (n != lens[r] || !c.done) {
                fprintf(stderr, "bench: http_parser failed on request %zu: %s\n", r,
                        http_errno_name(HTTP_PARSER_ERRNO(&p)));
                exit(1);
            }
            sink += n + c.nh + c.body;
        }
    }
    return sink;
}

/* ---- timing ---- */

struct series {
    const char *name;
    uint64_t (*fn)(size_t);
    size_t iters;
    double mbs[MAX_ROUNDS];
    uint64_t sink;
};

/* Returns the iteration count that takes about <secs>. */
static size_t calibrate(uint64_t (*fn)(size_t), double secs)
{
    size_t iters = 1000;
    for (;;) {
        double t0 = now();
        fn(iters);
        double dt = now() - t0;
        if (dt > 0.05) {
            return (size_t)((double)iters * secs / dt) + 1;
        }
        iters *= 4;
    }
}

static double run_round(struct series *s)
{
    double t0 = now();
    s->sink += s->fn(s->iters);
    double dt = now() - t0;
    return (double)corpus_bytes * (double)s->iters / dt / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts <v> in place and returns its median. */
static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(v[0]), cmp_double);
    return v[n / 2];
}

static void report(struct series *s, int rounds)
{
    double v[MAX_ROUNDS];
    memcpy(v, s->mbs, sizeof(double) * (size_t)rounds);
    double med = median(v, rounds);
    double mb_per_req = (double)corpus_bytes / NREQ / 1e6;
    printf("%-12s %8.1f MB/s (min %8.1f, max %8.1f)   %6.2f M req/s (min %6.2f, max %6.2f)"
           "   [sink %llu]\n",
           s->name, med, v[0], v[rounds - 1], med / mb_per_req / 1e6, v[0] / mb_per_req / 1e6,
           v[rounds - 1] / mb_per_req / 1e6, (unsigned long long)(s->sink & 0xff));
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? (int)strtol(argv[1], NULL, 10) : 9;
    double secs = argc > 2 ? strtod(argv[2], NULL) : 0.5;
    if (rounds < 1 || rounds > MAX_ROUNDS || !(secs > 0)) {
        fprintf(stderr, "usage: %s [rounds 1..%d] [seconds per round]\n", argv[0], MAX_ROUNDS);
        return 2;
    }
    for (size_t r = 0; r < NREQ; r++) {
        lens[r] = strlen(requests[r]);
        corpus_bytes += lens[r];
    }
    printf("corpus: %zu requests, %zu bytes (", NREQ, corpus_bytes);
    for (size_t r = 0; r < NREQ; r++) {
        printf("%s%zu", r ? " + " : "", lens[r]);
    }
    printf("); %d rounds of ~%.2fs each; http_parser %d.%d.%d\n", rounds, secs,
           HTTP_PARSER_VERSION_MAJOR, HTTP_PARSER_VERSION_MINOR, HTTP_PARSER_VERSION_PATCH);

    /* Rounds alternate between the parsers so both see the same machine load; the ratio is taken
     * per round. */
    struct series ours = { .name = "sidecar", .fn = run_ours };
    struct series theirs = { .name = "http_parser", .fn = run_theirs };
    ours.iters = calibrate(run_ours, secs);
    theirs.iters = calibrate(run_theirs, secs);
    double ratio[MAX_ROUNDS];
    for (int r = 0; r < rounds; r++) {
        ours.mbs[r] = run_round(&ours);
        theirs.mbs[r] = run_round(&theirs);
        ratio[r] = ours.mbs[r] / theirs.mbs[r];
    }
    report(&ours, rounds);
    report(&theirs, rounds);
    double med = median(ratio, rounds);
    printf("ratio sidecar/http_parser per round: median %.2fx (min %.2fx, max %.2fx)\n", med,
           ratio[0], ratio[rounds - 1]);
    return 0;
}

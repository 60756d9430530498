// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the HTTP/1.1 client's response handling (net/h1client.c): heads with
// interim responses, Content-Length, chunked (decoded in place) and close-delimited bodies, caps.
// The input's first byte picks the request's options (HEAD, head only, discarded body); the rest
// is what the server sends, then the connection ends. It reaches the client through a fake
// transport layer stacked with the client's wrap hook, whole, in two pieces split at a point taken
// from the data, and one byte per read. Every way must fire the callback exactly once and agree on
// success, status and body; a body never passes its cap and is empty when discarded. A plain GET
// is also run streamed (on_head, on_body): the head comes once and first, and when both succeed
// the streamed bytes are the body the client kept. Any violation aborts.
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "net/h1client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_h1client: invariant failed: %s (%s:%d)\n", #cond, __FILE__,      \
                    __LINE__);                                                                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define MAX_BODY 4096

/* ---- a fake layer: connects at once, swallows writes, reads what the harness feeds ---- */

struct fake {
    struct sc_xport base;
    const struct sc_xport_cbs *up;
    void *up_owner;
    bool reading;
};

static struct fake fake;

static void on_bottom_closed(void *owner)
{
    (void)owner;
    fake.up->closed(fake.up_owner);
}

static void on_bottom_alloc(void *owner, uv_buf_t *b)
{
    (void)owner;
    *b = uv_buf_init(NULL, 0);
}

static void on_bottom_read(void *owner, ssize_t n)
{
    (void)owner;
    (void)n;
}

static void on_bottom_status(void *owner, int status)
{
    (void)owner;
    (void)status;
}

static const struct sc_xport_cbs bottom_cbs = {
    .alloc = on_bottom_alloc,
    .read = on_bottom_read,
    .write_done = on_bottom_status,
    .connected = on_bottom_status,
    .closed = on_bottom_closed,
};

static int fake_read_start(struct sc_xport *x)
{
    (void)x;
    fake.reading = true;
    return 0;
}

static void fake_read_stop(struct sc_xport *x)
{
    (void)x;
    fake.reading = false;
}

static int fake_write(struct sc_xport *x, uv_buf_t *iov, unsigned n)
{
    (void)x;
    (void)iov;
    (void)n;
    return 0;
}

static void fake_close(struct sc_xport *x)
{
    fake.reading = false;
    sc_xport_close(x->next);
}

static int fake_shutdown(struct sc_xport *x)
{
    (void)x;
    return 0;
}

static int fake_connect(struct sc_xport *x, const struct sockaddr *addr)
{
    (void)x;
    (void)addr;
    return 0; /* the harness reports the connection */
}

static const struct sc_xport_ops fake_ops = {
    .name = "fake",
    .read_start = fake_read_start,
    .read_stop = fake_read_stop,
    .write = fake_write,
    .close = fake_close,
    .shutdown = fake_shutdown,
    .connect = fake_connect,
};

static struct sc_xport *wrap(void *arg, struct sc_xport *bottom)
{
    (void)arg;
    memset(&fake, 0, sizeof(fake));
    fake.base.ops = &fake_ops;
    fake.base.next = bottom;
    fake.up = bottom->cbs;
    fake.up_owner = bottom->owner;
    bottom->cbs = &bottom_cbs;
    bottom->owner = &fake;
    return &fake.base;
}

/* ---- the harness ---- */

struct outcome {
    int calls;
    int error;
    int status;
    size_t body_len;
    char body[MAX_BODY];
    int heads;       /* streamed: on_head calls */
    int head_status; /* streamed: the status on_head saw */
};

static int on_stream_head(void *arg, const struct sc_http_msg *head)
{
    struct outcome *o = arg;
    CHECK(o->heads == 0 && o->body_len == 0);
    o->heads++;
    o->head_status = head->status;
    return 0;
}

static int on_stream_body(void *arg, const char *p, size_t n)
{
    struct outcome *o = arg;
    CHECK(o->heads == 1 && n > 0 && o->body_len + n <= MAX_BODY);
    memcpy(o->body + o->body_len, p, n);
    o->body_len += n;
    return 0;
}

static void on_done(void *arg, const struct sc_h1cli_resp *r)
{
    struct outcome *o = arg;
    o->calls++;
    o->error = r->error;
    o->status = r->status;
    CHECK(r->body.len <= MAX_BODY);
    CHECK((r->error == 0) == (r->msg != NULL));
    CHECK(r->error != 0 || (r->status >= 200 && r->status <= 999));
    if (o->heads) {
        CHECK(r->body.len == 0); /* streamed: the body arrived piece by piece */
        return;
    }
    o->body_len = r->body.len;
    if (r->body.len) {
        memcpy(o->body, r->body.p, r->body.len);
    }
}

/* Feeds <in> in pieces of at most <piece> bytes (0: as much as a read takes), then the end. */
static void run(uv_loop_t *loop, unsigned opts, const char *in, size_t len, size_t piece,
                size_t first, struct outcome *o)
{
    static const struct sc_http_header host = { SC_STR("Host"), SC_STR("fuzz") };
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 9, &a);
    const struct sc_h1cli_req req = {
        .method = opts & 1 ? SC_STR("HEAD") : SC_STR("GET"),
        .target = SC_STR("/"),
        .headers = &host,
        .nheaders = 1,
        .max_head = 2048,
        .max_body = MAX_BODY,
        .head_only = (opts & 2) != 0,
        .discard_body = (opts & 4) != 0,
        .wrap = wrap,
        .on_head = (opts & 0x100) ? on_stream_head : NULL,
        .on_body = (opts & 0x100) ? on_stream_body : NULL,
        .stream_arg = o,
    };
    memset(o, 0, sizeof(*o));
    struct sc_h1cli *c = NULL;
    CHECK(sc_h1cli_send(loop, (struct sockaddr *)&a, &req, on_done, o, &c) == 0);
    fake.up->connected(fake.up_owner, 0);
    size_t off = 0;
    while (o->calls == 0 && fake.reading && off < len) {
        uv_buf_t b;
        fake.up->alloc(fake.up_owner, &b);
        if (b.len == 0) {
            fake.up->read(fake.up_owner, UV_ENOBUFS);
            break;
        }
        size_t n = len - off;
        size_t lim = first ? first : piece;
        first = 0;
        if (lim && n > lim) {
            n = lim;
        }
        if (n > b.len) {
            n = b.len;
        }
        memcpy(b.base, in + off, n);
        off += n;
        fake.up->read(fake.up_owner, (ssize_t)n);
    }
    if (o->calls == 0 && fake.reading) {
        fake.up->read(fake.up_owner, UV_EOF);
    }
    CHECK(o->calls == 1); /* the end of the connection always decides */
    uv_run(loop, UV_RUN_DEFAULT);
    CHECK(o->calls == 1);
    if (o->error == 0 && (opts & 6)) {
        CHECK(o->body_len == 0);
    }
    if ((opts & 0x100) && o->error == 0) {
        CHECK(o->heads == 1 && o->head_status == o->status);
    }
}

static void same(const struct outcome *a, const struct outcome *b)
{
    CHECK((a->error == 0) == (b->error == 0));
    if (a->error == 0) {
        CHECK(a->status == b->status);
        CHECK(a->body_len == b->body_len);
        CHECK(memcmp(a->body, b->body, a->body_len) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uv_loop_t loop;
    static bool init;
    static struct outcome whole, split, bytes;
    if (!init) {
        uv_loop_init(&loop);
        init = true;
    }
    if (size < 1 || size > 64 * 1024) {
        return 0;
    }
    unsigned opts = data[0];
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    run(&loop, opts, in, len, 0, 0, &whole);
    size_t cut = len ? 1 + (size_t)(opts >> 3) * len / 32 : 0;
    run(&loop, opts, in, len, 0, cut, &split);
    same(&whole, &split);
    if (len <= 4096) {
        run(&loop, opts, in, len, 1, 0, &bytes);
        same(&whole, &bytes);
    }
    if ((opts & 7) == 0) {
        static struct outcome streamed;
        run(&loop, opts | 0x100, in, len, 0, cut, &streamed);
        if (whole.error == 0 && streamed.error == 0) {
            same(&whole, &streamed);
        }
        CHECK(whole.error != 0 || streamed.error == 0 || streamed.error == SC_ETOOBIG);
    }
    return 0;
}

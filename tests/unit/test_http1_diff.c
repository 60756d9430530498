// SPDX-License-Identifier: Apache-2.0
// Differential test of our request parser against libhttp-parser 2.9.4. Every file of the HTTP/1
// fuzz corpus (argv[1]), a grid of generated requests (methods x targets x versions x field sets x
// framings) and seeded mutations of the corpus go to both parsers. Whenever both accept a head
// they must agree on the method, target, version, fields, framing, keep-alive and upgrade, and,
// when both complete the message, on the body bytes. We are stricter, so inputs only we reject are
// expected and summarised by reason; inputs only http_parser rejects must fall in a class
// explained in justify() below, or the test fails. The corpus files' names are checked too:
// "ok-*" requests are accepted, "bad-*" rejected, "resp-*" / "bad-resp-*" likewise as responses.
#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <http_parser.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "net/http1.h"

#define MAXH 128

/* ---- http_parser side ---- */

struct theirs {
    http_parser p;
    bool head_done;
    bool complete;
    struct sc_str url;
    size_t nh;
    struct sc_str name[MAXH];
    struct sc_str value[MAXH];
    bool in_value;
    bool too_many;
    struct sc_buf body;
    /* as seen when the head completed */
    bool chunked;
    uint64_t cl;
    bool keep_alive;
    bool has_close; /* the flags behind keep_alive, for the one justified divergence */
    bool has_keep_alive;
};

/* Grows a view by a contiguous callback span; one execute call delivers each item in one span. */
static void extend(struct sc_str *v, const char *at, size_t n)
{
    if (v->p == NULL) {
        *v = sc_str_n(at, n);
    } else {
        v->len = (size_t)(at + n - v->p);
    }
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    struct theirs *t = p->data;
    extend(&t->url, at, n);
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    struct theirs *t = p->data;
    if (t->head_done) {
        return 0; /* a trailer field: the comparison is about the head */
    }
    if (t->in_value || t->nh == 0) {
        if (t->nh == MAXH) {
            t->too_many = true;
            return 0;
        }
        t->nh++;
        t->name[t->nh - 1] = SC_STR_NULL;
        t->value[t->nh - 1] = sc_str_n(at, 0);
        t->in_value = false;
    }
    extend(&t->name[t->nh - 1], at, n);
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct theirs *t = p->data;
    if (!t->too_many && !t->head_done) {
        struct sc_str *v = &t->value[t->nh - 1];
        if (v->len == 0) {
            *v = sc_str_n(at, n);
        } else {
            extend(v, at, n);
        }
    }
    t->in_value = true;
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct theirs *t = p->data;
    t->head_done = true;
    t->chunked = (p->flags & F_CHUNKED) != 0;
    t->cl = p->content_length;
    t->keep_alive = http_should_keep_alive(p) != 0;
    t->has_close = (p->flags & F_CONNECTION_CLOSE) != 0;
    t->has_keep_alive = (p->flags & F_CONNECTION_KEEP_ALIVE) != 0;
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct theirs *t = p->data;
    return sc_buf_append(&t->body, at, n) == 0 ? 0 : -1;
}

static int on_message_complete(http_parser *p)
{
    struct theirs *t = p->data;
    t->complete = true;
    http_parser_pause(p, 1); /* only the first message of a pipeline is compared */
    return 0;
}

static const http_parser_settings settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static enum http_errno run_theirs(struct theirs *t, const char *buf, size_t len)
{
    memset(t, 0, sizeof(*t));
    sc_buf_init(&t->body, 1 << 20);
    http_parser_init(&t->p, HTTP_REQUEST);
    t->p.data = t;
    http_parser_execute(&t->p, &settings, buf, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&t->p);
    return e == HPE_PAUSED ? HPE_OK : e;
}

/* ---- our side ---- */

struct ours {
    int rc;
    struct sc_http_error err;
    struct sc_http_msg msg;
    struct sc_http_header h[MAXH];
    bool complete;
    bool body_error;
    const char *body_reason;
    struct sc_buf body;
};

static void run_ours(struct ours *o, const char *buf, size_t len)
{
    memset(o, 0, sizeof(*o));
    sc_buf_init(&o->body, 1 << 20);
    o->msg.headers = o->h;
    o->rc = sc_http1_parse_request(buf, len, 0, NULL, &o->msg, MAXH, &o->err);
    if (o->rc <= 0) {
        return;
    }
    const char *rest = buf + o->rc;
    size_t n = len - (size_t)o->rc;
    switch (o->msg.body) {
    case SC_HTTP_BODY_NONE:
        o->complete = true;
        break;
    case SC_HTTP_BODY_LENGTH:
        if (n >= o->msg.content_length) {
            sc_buf_append(&o->body, rest, (size_t)o->msg.content_length);
            o->complete = true;
        }
        break;
    case SC_HTTP_BODY_CHUNKED: {
        struct sc_http1_chunked d;
        sc_http1_chunked_init(&d);
        size_t off = 0;
        while (off <= n) {
            size_t used;
            struct sc_str data;
            struct sc_http_error err;
            int rc = sc_http1_chunked_next(&d, rest + off, n - off, &used, &data, &err);
            off += used;
            if (rc == SC_HTTP1_CHUNK_DATA) {
                sc_buf_append(&o->body, data.p, data.len);
                continue;
            }
            if (rc == SC_HTTP1_CHUNK_DONE) {
                o->complete = true;
            } else if (rc < 0) {
                o->body_error = true;
                o->body_reason = err.reason;
            }
            break;
        }
        break;
    }
    default:
        break;
    }
}

/* ---- bookkeeping ---- */

struct tally {
    const char *what;
    size_t count;
};

struct stats {
    size_t total;
    size_t both_accept;
    size_t both_complete;
    size_t both_reject;
    size_t incomplete;
    size_t only_ours_rejects;
    size_t only_theirs_rejects;
    size_t body_only_ours_rejects;
    size_t disagreements;
    size_t unjustified;
    struct tally ours_reasons[64];
    struct tally their_classes[16];
};

static void count(struct tally *t, size_t cap, const char *what)
{
    for (size_t i = 0; i < cap; i++) {
        if (t[i].what == NULL || strcmp(t[i].what, what) == 0) {
            t[i].what = what;
            t[i].count++;
            return;
        }
    }
}

static void print_tally(const char *title, struct tally *t, size_t cap)
{
    printf("%s\n", title);
    for (size_t i = 0; i < cap && t[i].what != NULL; i++) {
        printf("    %6zu  %s\n", t[i].count, t[i].what);
    }
}

static void show(const char *label, const char *buf, size_t len)
{
    printf("  %s: \"", label);
    for (size_t i = 0; i < len && i < 160; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"') {
            putchar(c);
        } else {
            printf("\\x%02x", c);
        }
    }
    printf("%s\"\n", len > 160 ? "..." : "");
}

static bool is_their_method(struct sc_str m)
{
#define XX(num, name, string) #string,
    static const char *const known[] = { HTTP_METHOD_MAP(XX) };
#undef XX
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        if (sc_str_eq(m, sc_str_c(known[i]))) {
            return true;
        }
    }
    return false;
}

/* Whether a field named like <name> has a value followed by OWS on the wire (trimmed by us). */
static bool field_has_trailing_ows(const struct sc_http_msg *m, const char *name)
{
    for (size_t i = 0; i < m->nheaders; i++) {
        const struct sc_http_header *h = &m->headers[i];
        if (sc_str_caseeq(h->name, sc_str_c(name)) && h->value.len > 0 &&
            (h->value.p[h->value.len] == ' ' || h->value.p[h->value.len] == '\t')) {
            return true; /* in bounds: at least the CR follows a value */
        }
    }
    return false;
}

/* Whether a field's name is "Transfer-Encoding" followed by more token characters. */
static bool has_te_lookalike(const struct sc_http_msg *m)
{
    struct sc_str te = SC_STR("transfer-encoding");
    for (size_t i = 0; i < m->nheaders; i++) {
        struct sc_str n = m->headers[i].name;
        if (n.len > te.len && sc_str_caseeq(sc_str_n(n.p, te.len), te)) {
            return true;
        }
    }
    return false;
}

/* Explains an input we accept and http_parser rejects, or returns NULL. Each class is a place
 * where http_parser is narrower than RFC 9110/9112, or wrong, not one where we are lax:
 * - extension methods: http_parser knows a fixed list; RFC 9110 9.1 keeps the method set open
 *   and a proxy must pass unknown methods through;
 * - "Transfer-Encoding: chunked<OWS>": http_parser compares the coding before trimming trailing
 *   OWS, which RFC 9112 5 says is not part of the value; we trim it, and the proxy re-emits the
 *   trimmed value, so nothing downstream sees the whitespace;
 * - a field named "Transfer-Encoding" plus more characters (say "Transfer-Encodingx"): a
 *   different field, which http_parser's name matcher takes for Transfer-Encoding. */
static const char *justify(const struct ours *o, enum http_errno e)
{
    if (e == HPE_INVALID_METHOD && !is_their_method(o->msg.method)) {
        return "extension method unknown to http_parser (RFC 9110 9.1: methods are an open set)";
    }
    if (e == HPE_INVALID_TRANSFER_ENCODING && has_te_lookalike(&o->msg)) {
        return "http_parser takes a field named Transfer-Encoding<more> for Transfer-Encoding";
    }
    if (e == HPE_INVALID_TRANSFER_ENCODING &&
        field_has_trailing_ows(&o->msg, "transfer-encoding")) {
        return "http_parser matches chunked before trimming trailing OWS (RFC 9112 5)";
    }
    return NULL;
}

static bool view_eq(struct sc_str a, struct sc_str b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static struct sc_str trim_right(struct sc_str v)
{
    while (v.len > 0 && (v.p[v.len - 1] == ' ' || v.p[v.len - 1] == '\t')) {
        v.len--;
    }
    return v;
}

static bool disagree(const char *name, const char *buf, size_t len, const char *what)
{
    printf("DISAGREEMENT (%s): %s\n", name, what);
    show("input", buf, len);
    return true;
}

/* Compares two accepted heads (and bodies when both completed). Returns true on a disagreement. */
static bool compare(const char *name, const char *buf, size_t len, const struct ours *o,
                    const struct theirs *t, struct stats *st)
{
    const struct sc_http_msg *m = &o->msg;
    const http_parser *p = &t->p;
    bool connect = sc_str_eq(m->method, SC_STR("CONNECT"));
    if (!sc_str_eq(m->method, sc_str_c(http_method_str((enum http_method)p->method)))) {
        return disagree(name, buf, len, "method");
    }
    if (!view_eq(m->target, t->url)) {
        return disagree(name, buf, len, "target");
    }
    if (p->http_major != 1 || p->http_minor != m->minor_version) {
        return disagree(name, buf, len, "version");
    }
    if (t->too_many || t->nh != m->nheaders) {
        return disagree(name, buf, len, "header count");
    }
    for (size_t i = 0; i < t->nh; i++) {
        /* http_parser drops leading OWS but keeps trailing OWS; RFC 9112 5 excludes both */
        if (!view_eq(m->headers[i].name, t->name[i]) ||
            !view_eq(m->headers[i].value, trim_right(t->value[i]))) {
            return disagree(name, buf, len, "header field");
        }
    }
    bool their_len = !t->chunked && t->cl != UINT64_MAX;
    if ((m->body == SC_HTTP_BODY_CHUNKED) != t->chunked ||
        (m->body == SC_HTTP_BODY_LENGTH) != their_len ||
        (their_len && m->content_length != t->cl)) {
        return disagree(name, buf, len, "body framing");
    }
    /* http_should_keep_alive() lets keep-alive win over close in HTTP/1.0; we let close win
     * (RFC 9112 9.6: close means the connection will close), the only case where we differ. */
    bool ka_justified = m->minor_version == 0 && t->has_close && t->has_keep_alive;
    if (m->keep_alive != t->keep_alive && !ka_justified) {
        return disagree(name, buf, len, "keep-alive");
    }
    /* http_parser reports CONNECT as an upgrade, and honours Upgrade in HTTP/1.0 requests, which
     * RFC 9110 7.8 says to ignore. */
    bool their_upgrade = p->upgrade != 0;
    bool our_upgrade = m->upgrade || connect;
    if (their_upgrade != our_upgrade && !(m->minor_version == 0 && their_upgrade)) {
        return disagree(name, buf, len, "upgrade");
    }
    /* bodies: http_parser stops at the head of an upgrade or CONNECT */
    if (o->complete && t->complete && !their_upgrade) {
        st->both_complete++;
        if (o->body.len != t->body.len ||
            (o->body.len > 0 && memcmp(o->body.p, t->body.p, o->body.len) != 0)) {
            return disagree(name, buf, len, "body bytes");
        }
    }
    if (o->body_error && t->complete && !their_upgrade) {
        st->body_only_ours_rejects++;
        count(st->ours_reasons, 64, o->body_reason);
    }
    return false;
}

static bool rejects_once_line_ends(const char *buf, size_t len)
{
    char *more = sc_malloc(len + 1);
    memcpy(more, buf, len);
    more[len] = '\n';
    struct ours o;
    run_ours(&o, more, len + 1);
    sc_buf_cleanup(&o.body);
    sc_free(more);
    return o.rc < 0;
}

static void run_case(const char *name, const char *src, size_t len, struct stats *st)
{
    /* an exact copy, so both parsers are held to the input's end */
    char *buf = sc_malloc(len ? len : 1);
    memcpy(buf, src, len);
    struct ours o;
    struct theirs t;
    run_ours(&o, buf, len);
    enum http_errno e = run_theirs(&t, buf, len);
    /* http_parser judges Transfer-Encoding just after on_headers_complete: that error rejects
     * the head; any other error after the head is about the body */
    bool their_head_ok = t.head_done && e != HPE_INVALID_TRANSFER_ENCODING;
    bool their_reject = !their_head_ok && e != HPE_OK;
    st->total++;
    if (o.rc > 0 && their_head_ok) {
        st->both_accept++;
        if (compare(name, buf, len, &o, &t, st)) {
            st->disagreements++;
        } else if (o.complete && !t.complete && e != HPE_OK && !t.p.upgrade) {
            /* we decoded a whole body that http_parser rejects: nothing explains that yet */
            st->unjustified++;
            printf("UNJUSTIFIED: we accept the body, http_parser rejects it (%s): %s\n",
                   http_errno_name(e), name);
            show("input", buf, len);
        }
    } else if (o.rc < 0 && their_reject) {
        st->both_reject++;
    } else if (o.rc < 0) {
        st->only_ours_rejects++;
        count(st->ours_reasons, 64, o.err.reason);
    } else if (o.rc > 0 && their_reject) {
        st->only_theirs_rejects++;
        const char *why = justify(&o, e);
        if (why != NULL) {
            count(st->their_classes, 16, why);
        } else {
            st->unjustified++;
            printf("UNJUSTIFIED: we accept, http_parser rejects (%s): %s\n", http_errno_name(e),
                   name);
            show("input", buf, len);
        }
    } else if (o.rc > 0 || their_head_ok) {
        /* One side has a complete head where the other wants more: they disagree on where the
         * head ends, which is what smuggling is made of. The one benign form: http_parser, built
         * without HTTP_PARSER_STRICT, ends a head at CR plus any byte, while we wait for the LF
         * that ends the line and then reject the bare CR; an LF appended shows that. */
        if (o.rc == 0 && rejects_once_line_ends(buf, len)) {
            st->only_ours_rejects++;
            count(st->ours_reasons, 64, "bare CR (pending: http_parser ended the head at it)");
        } else {
            st->disagreements++;
            disagree(name, buf, len, o.rc > 0 ? "only we see a complete head" : "only they do");
        }
    } else {
        st->incomplete++; /* both want more, or one wants more and the other rejects */
    }
    sc_buf_cleanup(&o.body);
    sc_buf_cleanup(&t.body);
    sc_free(buf);
}

/* ---- inputs ---- */

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    struct sc_buf b;
    sc_buf_init(&b, 1 << 24);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (sc_buf_append(&b, chunk, n) < 0) {
            break;
        }
    }
    fclose(f);
    *len = b.len;
    if (b.p == NULL) {
        return sc_malloc(1);
    }
    return b.p;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Mutates <in> once: replace, insert or delete a byte, picking bytes that matter to framing. */
static size_t mutate(const char *in, size_t len, char *out)
{
    static const char special[] = { ' ', '\t', '\r', '\n',   '\0',   ':',    ',', ';',
                                    '0', '9',  'a',  '\x7f', '\x80', '\x0b', '/', '*' };
    size_t pos = len ? (size_t)(rnd() % len) : 0;
    char c = special[rnd() % sizeof(special)];
    switch (rnd() % 3) {
    case 0:
        memcpy(out, in, len);
        if (len) {
            out[pos] = c;
        }
        return len;
    case 1:
        memcpy(out, in, pos);
        out[pos] = c;
        memcpy(out + pos + 1, in + pos, len - pos);
        return len + 1;
    default:
        if (len == 0) {
            return 0;
        }
        memcpy(out, in, pos);
        memcpy(out + pos, in + pos + 1, len - pos - 1);
        return len - 1;
    }
}

static int name_checks;

/* Holds the corpus to its names: ok-* and resp-* parse, bad-* fail. */
static bool check_name(const char *name, const char *buf, size_t len)
{
    struct sc_http_header hs[MAXH];
    struct sc_http_msg msg = { .headers = hs };
    struct sc_http_error err;
    int rc;
    bool want_ok;
    if (strncmp(name, "resp-", 5) == 0 || strncmp(name, "bad-resp-", 9) == 0) {
        rc = sc_http1_parse_response(buf, len, 0, NULL, 0, &msg, MAXH, &err);
        want_ok = name[0] == 'r';
    } else if (strncmp(name, "ok-", 3) == 0 || strncmp(name, "bad-", 4) == 0) {
        rc = sc_http1_parse_request(buf, len, 0, NULL, &msg, MAXH, &err);
        want_ok = name[0] == 'o';
    } else {
        return true; /* found by the fuzzer: no claim */
    }
    name_checks++;
    if (want_ok ? rc < 0 : rc >= 0) {
        printf("CORPUS NAME MISMATCH: %s gives %d (%s)\n", name, rc, rc < 0 ? err.reason : "");
        return false;
    }
    return true;
}

static const char *const methods[] = { "GET",   "POST",    "PUT",   "DELETE", "HEAD",    "OPTIONS",
                                       "PATCH", "CONNECT", "PURGE", "FOO",    "M-SEARCH" };
static const char *const targets[] = {
    "/",       "/a/b?c=d&e=%20f", "*", "http://example.com:8080/x?y", "example.com:443",
    "/a#frag", "//double//slash"
};
static const char *const versions[] = { "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.2" };
static const char *const field_sets[] = {
    "Host: example.com\r\n",
    "Host: example.com\r\nConnection: close\r\n",
    "Host: example.com\r\nConnection: keep-alive\r\n",
    "",
    "Host: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    "Host: example.com\r\nExpect: 100-continue\r\nX-Trailing: v  \r\n",
    "Host: example.com:8080\r\nAccept: */*\r\nUser-Agent: t/1\r\nCookie: a=b; c=d\r\n",
};
static const struct {
    const char *fields;
    const char *body;
} framings[] = {
    { "", "" },
    { "Content-Length: 5\r\n", "hello" },
    { "Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n" },
    { "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n" },
    { "Content-Length: 5\r\nContent-Length: 5\r\n", "hello" },
    { "Transfer-Encoding: gzip\r\n", "hello" },
    { "Transfer-Encoding: gzip, chunked\r\n", "5;e=1\r\nhello\r\n0\r\nT: v\r\n\r\n" },
};

#define N(a) (sizeof(a) / sizeof((a)[0]))

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    struct stats st = { 0 };
    bool names_ok = true;

    /* the corpus, and mutations of each small file */
    struct dirent **ents;
    int nents = scandir(argv[1], &ents, NULL, alphasort);
    if (nents < 0) {
        fprintf(stderr, "%s: cannot read %s\n", argv[0], argv[1]);
        return 2;
    }
    size_t files = 0;
    for (int i = 0; i < nents; i++) {
        const char *fname = ents[i]->d_name;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", argv[1], fname);
        struct stat sb;
        size_t len;
        char *data;
        if (fname[0] != '.' && stat(path, &sb) == 0 && S_ISREG(sb.st_mode) &&
            (data = read_file(path, &len)) != NULL) {
            files++;
            names_ok &= check_name(fname, data, len);
            run_case(fname, data, len, &st);
            if (len <= 8192) {
                char *mut = sc_malloc(len + 2);
                for (int k = 0; k < 40; k++) {
                    size_t mlen = mutate(data, len, mut);
                    run_case(fname, mut, mlen, &st);
                }
                sc_free(mut);
            }
            sc_free(data);
        }
        sc_free(ents[i]); /* scandir allocates with the C allocator, which sc_free accepts */
    }
    sc_free(ents);

    /* the generated grid */
    struct sc_buf b;
    sc_buf_init(&b, 1 << 16);
    for (size_t mi = 0; mi < N(methods); mi++) {
        for (size_t ti = 0; ti < N(targets); ti++) {
            for (size_t vi = 0; vi < N(versions); vi++) {
                for (size_t fi = 0; fi < N(field_sets); fi++) {
                    for (size_t bi = 0; bi < N(framings); bi++) {
                        sc_buf_reset(&b);
                        sc_buf_appendf(&b, "%s %s %s\r\n%s%s\r\n%s", methods[mi], targets[ti],
                                       versions[vi], field_sets[fi], framings[bi].fields,
                                       framings[bi].body);
                        run_case("generated", b.p, b.len, &st);
                    }
                }
            }
        }
    }
    sc_buf_cleanup(&b);

    printf("corpus: %zu files (%d checked against their names), %s\n", files, name_checks,
           names_ok ? "all as named" : "MISMATCHES");
    printf("both reject: %zu, incomplete for one or both: %zu, both complete: %zu\n",
           st.both_reject, st.incomplete, st.both_complete);
    printf("only-ours-rejects: %zu heads, %zu chunked bodies http_parser completed\n",
           st.only_ours_rejects, st.body_only_ours_rejects);
    print_tally("  our reasons (head and chunked-body errors):", st.ours_reasons, 64);
    printf("only-theirs-rejects: %zu (%zu unjustified)\n", st.only_theirs_rejects, st.unjustified);
    print_tally("  classes:", st.their_classes, 16);
    printf("differential: %zu cases, %zu both-accept, %zu disagreements\n", st.total,
           st.both_accept, st.disagreements);
    return st.disagreements == 0 && st.unjustified == 0 && names_ok && st.total >= 500 ? 0 : 1;
}

// SPDX-License-Identifier: Apache-2.0
// TCP health checks (see proxy_health_tcp.h): one connection per check, made with net/transport.h's
// one-shot helper (the cluster's TLS layer stacked when it originates TLS), closed once the verdict
// is in. With no payload to expect, the check passes once connected and the send payload (if any)
// is written; otherwise the reply is collected, capped at PROXY_HC_TCP_MAX_REPLY, until every
// expected block is found in order (Envoy's "fuzzy" matching); the peer closing first, the cap or
// the deadline fail it. Invariant: the callback fires at most once, never after cancel.
#include <stddef.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "net/transport.h"
#include "roles/proxy/proxy_health_tcp.h"

/* ---- options ---- */

const struct sc_opt proxy_hc_tcp_opts[] = {
    { .name = "send",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_hc_tcp_cfg, send),
      .help = "bytes written once connected, in hex (\"50494e470d0a\"); unset: none" },
    { .name = "receive",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct proxy_hc_tcp_cfg, receive),
      .help = "blocks the reply must hold, in hex, in this order but not necessarily adjacent; "
              "empty: connecting (and writing send) is enough",
      .max = PROXY_HC_TCP_MAX_RECV },
    { 0 },
};

int proxy_hc_tcp_mark(void *field, char **err)
{
    (void)err;
    *(bool *)field = true;
    return 0;
}

static int nibble(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Decodes hex <s> into <out> (NULL: only checks). Returns the length, or -1 when <s> is not hex
 * of at most PROXY_HC_TCP_MAX_PAYLOAD bytes. */
static long unhex(const char *s, uint8_t *out)
{
    size_t n = strlen(s);
    if (n % 2 || n / 2 > PROXY_HC_TCP_MAX_PAYLOAD) {
        return -1;
    }
    for (size_t i = 0; i < n; i += 2) {
        int hi = nibble(s[i]), lo = nibble(s[i + 1]);
        if (hi < 0 || lo < 0) {
            return -1;
        }
        if (out) {
            out[i / 2] = (uint8_t)(hi << 4 | lo);
        }
    }
    return (long)(n / 2);
}

int proxy_hc_tcp_check(const struct proxy_hc_tcp_cfg *c, const char *cluster, char **err)
{
    if (c->send && unhex(c->send, NULL) < 0) {
        *err = sc_asprintf("cluster \"%s\": health_check tcp send is not hex of at most %d bytes",
                           cluster, PROXY_HC_TCP_MAX_PAYLOAD);
        return SC_ECONFIG;
    }
    for (size_t i = 0; i < c->receive.n; i++) {
        if (unhex(c->receive.v[i], NULL) <= 0) {
            *err = sc_asprintf("cluster \"%s\": health_check tcp receive[%zu] is not hex of 1 to "
                               "%d bytes",
                               cluster, i, PROXY_HC_TCP_MAX_PAYLOAD);
            return SC_ECONFIG;
        }
    }
    return 0;
}

struct proxy_hc_tcp_spec *proxy_hc_tcp_spec_new(const struct proxy_hc_tcp_cfg *c)
{
    if (!c->set) {
        return NULL;
    }
    struct proxy_hc_tcp_spec *s = SC_NEW(struct proxy_hc_tcp_spec);
    long n = c->send ? unhex(c->send, NULL) : 0;
    if (n > 0) {
        s->send = sc_malloc((size_t)n);
        s->send_len = (size_t)unhex(c->send, s->send);
    }
    for (size_t i = 0; i < c->receive.n && i < PROXY_HC_TCP_MAX_RECV; i++) {
        n = unhex(c->receive.v[i], NULL);
        if (n <= 0) {
            continue; /* refused by proxy_hc_tcp_check */
        }
        s->recv[s->nrecv] = sc_malloc((size_t)n);
        s->recv_len[s->nrecv] = (size_t)unhex(c->receive.v[i], s->recv[s->nrecv]);
        s->nrecv++;
    }
    return s;
}

void proxy_hc_tcp_spec_free(struct proxy_hc_tcp_spec *s)
{
    if (!s) {
        return;
    }
    for (size_t i = 0; i < s->nrecv; i++) {
        sc_free(s->recv[i]);
    }
    sc_free(s->send);
    sc_free(s);
}

bool proxy_hc_tcp_matches(const struct proxy_hc_tcp_spec *s, const uint8_t *reply, size_t n)
{
    size_t pos = 0;
    for (size_t i = 0; i < s->nrecv; i++) {
        const uint8_t *hit = memmem(reply + pos, n - pos, s->recv[i], s->recv_len[i]);
        if (!hit) {
            return false;
        }
        pos = (size_t)(hit - reply) + s->recv_len[i];
    }
    return true;
}

/* ---- one check ---- */

struct proxy_hc_tcp_call {
    struct sc_oneshot os; /* first: the connection, its deadline and its handles */
    const struct proxy_hc_tcp_spec *spec;
    uint8_t *send;  /* a copy of the payload: a write may outlive the spec's cluster state */
    uint8_t *reply; /* what arrived so far (PROXY_HC_TCP_MAX_REPLY) */
    size_t len;
    char rbuf[4096];
};
_Static_assert(offsetof(struct proxy_hc_tcp_call, os) == 0, "sc_oneshot_on_closed takes the owner");

static void freed(void *owner)
{
    struct proxy_hc_tcp_call *c = owner;
    sc_free(c->send);
    sc_free(c->reply);
    sc_free(c);
}

/* Reports the outcome once, then closes the connection. */
static void finish(struct proxy_hc_tcp_call *c, bool ok, const char *why)
{
    sc_oneshot_verdict(&c->os, ok, why);
}

static void on_alloc(void *owner, uv_buf_t *buf)
{
    struct proxy_hc_tcp_call *c = owner;
    *buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void on_read(void *owner, ssize_t nread)
{
    struct proxy_hc_tcp_call *c = owner;
    if (nread == 0 || c->os.done) {
        return;
    }
    if (nread < 0) {
        finish(c, false,
               nread == UV_EOF ? "connection closed before the expected reply" : "read failed");
        return;
    }
    if (c->spec->nrecv == 0) {
        return; /* nothing expected: what the peer says does not matter */
    }
    if (c->len + (size_t)nread > PROXY_HC_TCP_MAX_REPLY) {
        finish(c, false, "reply too large without the expected bytes");
        return;
    }
    if (!c->reply) {
        c->reply = sc_malloc(PROXY_HC_TCP_MAX_REPLY);
    }
    memcpy(c->reply + c->len, c->rbuf, (size_t)nread);
    c->len += (size_t)nread;
    if (proxy_hc_tcp_matches(c->spec, c->reply, c->len)) {
        finish(c, true, "expected reply");
    }
}

/* The payload is written (or there was none): pass, or wait for the reply. */
static void sent(struct proxy_hc_tcp_call *c)
{
    if (c->spec->nrecv == 0) {
        finish(c, true, "connected");
    }
}

static void on_write_done(void *owner, int status)
{
    struct proxy_hc_tcp_call *c = owner;
    if (c->os.done) {
        return;
    }
    if (status < 0) {
        finish(c, false, "write failed");
        return;
    }
    sent(c);
}

static void on_connected(void *owner, int status)
{
    struct proxy_hc_tcp_call *c = owner;
    if (c->os.done) {
        return;
    }
    if (status < 0) {
        finish(c, false, sc_oneshot_error(&c->os, status));
        return;
    }
    if (c->spec->nrecv && sc_xport_read_start(c->os.top) < 0) {
        finish(c, false, "cannot read the connection");
        return;
    }
    if (c->spec->send_len) {
        uv_buf_t b = uv_buf_init((char *)c->send, (unsigned)c->spec->send_len);
        int rc = sc_xport_write(c->os.top, &b, 1);
        if (rc < 0) {
            finish(c, false, "write failed");
        } else if (rc == 0) {
            sent(c);
        }
        return;
    }
    sent(c);
}

static const struct sc_xport_cbs call_cbs = {
    .alloc = on_alloc,
    .read = on_read,
    .write_done = on_write_done,
    .connected = on_connected,
    .closed = sc_oneshot_on_closed,
};

int proxy_hc_tcp_send(uv_loop_t *loop, const struct sockaddr *addr,
                      const struct proxy_hc_tcp_req *req, sc_oneshot_verdict_cb cb, void *arg,
                      struct proxy_hc_tcp_call **out)
{
    struct proxy_hc_tcp_call *c = SC_NEW(struct proxy_hc_tcp_call);
    c->spec = req->spec;
    if (req->spec->send_len) {
        c->send = sc_malloc(req->spec->send_len);
        memcpy(c->send, req->spec->send, req->spec->send_len);
    }
    const struct sc_oneshot_args a = {
        .cbs = &call_cbs,
        .owner = c,
        .wrap = req->wrap,
        .wrap_arg = req->wrap_arg,
        .timeout_ms = req->timeout_ms ? req->timeout_ms : 1000,
        .on_deadline = sc_oneshot_on_timeout,
        .freed = freed,
        .verdict = cb,
        .verdict_arg = arg,
    };
    int rc = sc_oneshot_start(&c->os, loop, addr, &a);
    if (rc == 0 && out) {
        *out = c;
    }
    return rc; /* failed: <c> is freed once its handles closed */
}

void proxy_hc_tcp_cancel(struct proxy_hc_tcp_call *c)
{
    if (c) {
        sc_oneshot_cancel(&c->os);
    }
}

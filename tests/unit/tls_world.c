// SPDX-License-Identifier: Apache-2.0
// The TLS unit tests' harness (see tls_world.h): the PKI, contexts from options and the world of
// two ends on one loop. Assertions fail the running cmocka test.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <uv.h>

#include "core/alloc.h"
#include "core/config.h"
#include "core/error.h"
#include "net/tls.h"
#include "tls_world.h"

#ifndef SC_CERTS_SH
#define SC_CERTS_SH "tests/certs.sh"
#endif

char pki[64]; /* the directory certs.sh filled */

char *path_of(const char *name)
{
    static char bufs[64][128];
    static int i;
    char *b = bufs[i++ % 64];
    snprintf(b, 128, "%s/%s", pki, name);
    return b;
}

void run(const char *cmd)
{
    int rc = system(cmd);
    assert_int_equal(rc, 0);
}

int group_setup(void **state)
{
    (void)state;
    snprintf(pki, sizeof(pki), "/tmp/sidecar-tls-test.XXXXXX");
    if (!mkdtemp(pki)) {
        return -1;
    }
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "sh %s %s", SC_CERTS_SH, pki);
    signal(SIGPIPE, SIG_IGN);
    return system(cmd) == 0 ? 0 : -1;
}

int group_teardown(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", pki);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- contexts from options ---------------------------------------------------------------- */

static char *strs_a[8];

struct sc_strv strv(const char *a, const char *b)
{
    static int slot;
    char **v = &strs_a[(slot++ % 4) * 2];
    size_t n = 0;
    if (a) {
        v[n++] = (char *)a;
    }
    if (b) {
        v[n++] = (char *)b;
    }
    return (struct sc_strv){ v, n };
}

struct sc_tls_server_opts server_opts(const char *cert, const char *key)
{
    struct sc_tls_server_opts o = { 0 };
    o.cert = cert ? path_of(cert) : NULL;
    o.key = key ? path_of(key) : NULL;
    o.session_cache_size = 64;
    return o;
}

struct sc_tls_client_opts client_opts(void)
{
    struct sc_tls_client_opts o = { 0 };
    o.ca = path_of("ca.pem");
    o.session_reuse = true;
    return o;
}

struct sc_tls_ctx *server_ctx(struct sc_tls_server_opts *o)
{
    char *err = NULL;
    struct sc_tls_ctx *c = sc_tls_ctx_new_server(o, NULL, &err);
    if (!c) {
        fprintf(stderr, "server ctx: %s\n", err);
    }
    assert_non_null(c);
    return c;
}

struct sc_tls_ctx *client_ctx(struct sc_tls_client_opts *o)
{
    char *err = NULL;
    struct sc_tls_ctx *c = sc_tls_ctx_new_client(o, NULL, &err);
    if (!c) {
        fprintf(stderr, "client ctx: %s\n", err);
    }
    assert_non_null(c);
    return c;
}

/* ---- the two ends on one loop ------------------------------------------------------------- */

static unsigned char pat(uint64_t i)
{
    return (unsigned char)((i * 131) % 251);
}

void end_close(struct end *e)
{
    if (e->x && e->nclosed == 0) {
        sc_xport_close(e->x);
    }
}

static void snapshot(struct end *e)
{
    struct sc_str s;
    s = sc_xport_query_str(e->x, SC_XQ_ALPN);
    snprintf(e->alpn, sizeof(e->alpn), "%.*s", SC_STR_FMT(s));
    s = sc_xport_query_str(e->x, SC_XQ_SNI);
    snprintf(e->sni, sizeof(e->sni), "%.*s", SC_STR_FMT(s));
    s = sc_xport_query_str(e->x, SC_XQ_TLS_VERSION);
    snprintf(e->version, sizeof(e->version), "%.*s", SC_STR_FMT(s));
    s = sc_xport_query_str(e->x, SC_XQ_TLS_CIPHER);
    snprintf(e->cipher, sizeof(e->cipher), "%.*s", SC_STR_FMT(s));
    s = sc_xport_query_str(e->x, SC_XQ_PEER_ID);
    snprintf(e->peer_id, sizeof(e->peer_id), "%.*s", SC_STR_FMT(s));
    sc_xport_query(e->x, SC_XQ_TLS_RESUMED, &e->resumed);
    if (sc_tls_xport_xfcc(e->x, e->xfcc, sizeof(e->xfcc)) < 0) {
        e->xfcc[0] = '\0';
    }
    if (e->server) {
        e->cert_index = sc_tls_xport_cert_index(e->x);
        e->mis_rsa = sc_tls_xport_misdirected(e->x, SC_STR("rsa.test"));
        e->mis_wild = sc_tls_xport_misdirected(e->x, SC_STR("a.wild.test:443"));
        e->mis_none = sc_tls_xport_misdirected(e->x, SC_STR("nobody.test"));
    }
    sc_xport_query(e->x, SC_XQ_TLS, &e->tls);
    void *peer = NULL;
    e->peer_cn[0] = '\0';
    if (sc_xport_query(e->x, SC_XQ_PEER_CERT, &peer) == 0 && peer) {
        X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, e->peer_cn,
                                  sizeof(e->peer_cn));
    }
}

static void record_fail(struct end *e)
{
    if (sc_tls_xport_is(e->x)) {
        e->fail = sc_tls_xport_fail(e->x);
        const char *t = NULL;
        if (sc_xport_query(e->x, SC_XQ_ERROR, &t) == 0 && t) {
            snprintf(e->fail_text, sizeof(e->fail_text), "%s", t);
        }
    }
}

static void big_send(struct end *e);

static void on_resume(uv_timer_t *t)
{
    struct end *e = t->data;
    if (e->nclosed == 0) {
        sc_xport_read_start(e->x);
    }
}

void on_alloc(void *owner, uv_buf_t *buf)
{
    struct end *e = owner;
    *buf = uv_buf_init(e->rbuf, sizeof(e->rbuf));
}

static void on_read(void *owner, ssize_t n)
{
    struct end *e = owner;
    struct world *w = e->w;
    if (n < 0) {
        e->read_err = (int)n;
        e->alive_at_eof = sc_xport_alive(e->x);
        record_fail(e);
        end_close(e);
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        if (w->big && (unsigned char)e->rbuf[i] != pat(e->rx + (uint64_t)i)) {
            e->rx_ok = false;
        }
    }
    size_t keep = (size_t)n < RX_KEEP - e->got_len ? (size_t)n : RX_KEEP - e->got_len;
    memcpy(e->got + e->got_len, e->rbuf, keep);
    e->got_len += keep;
    e->rx += (uint64_t)n;
    if (w->big) {
        if (w->pause_reads && e->rx - e->paused_at >= 1024 * 1024) {
            e->paused_at = e->rx;
            sc_xport_read_stop(e->x);
            if (!e->resume_init) {
                uv_timer_init(&w->loop, &e->resume);
                e->resume.data = e;
                e->resume_init = true;
            }
            uv_timer_start(&e->resume, on_resume, 2, 0);
        }
        if (!e->server && e->rx == w->big && e->tx_done == w->big && !e->tx_pending) {
            end_close(e);
        }
        return;
    }
    if (e->server && !e->replied && w->request && e->got_len >= strlen(w->request)) {
        e->replied = true;
        uv_buf_t b = uv_buf_init((char *)w->reply, (unsigned)strlen(w->reply));
        int rc = sc_xport_write(e->x, &b, 1);
        assert_true(rc == 0 || rc == 1);
        if (w->srv_shutdown) {
            assert_int_equal(rc, 0);
            assert_int_equal(sc_xport_shutdown(e->x), 0);
        }
    }
    if (!e->server && w->reply && e->got_len >= strlen(w->reply) && e->alive_after_reply < 0) {
        e->alive_after_reply = sc_xport_alive(e->x);
        if (!w->srv_shutdown) {
            end_close(e);
        }
    }
}

void on_write_done(void *owner, int status)
{
    struct end *e = owner;
    e->nwrite_done++;
    e->last_write_status = status;
    e->tx_pending = false;
    if (status < 0) {
        return;
    }
    if (e->server && e->w->server_first && e->nwrite_done == 1) {
        assert_int_equal(sc_xport_read_start(e->x), 0); /* now wait for the client's close */
    }
    if (e->w->big) {
        big_send(e);
    }
}

static void big_send(struct end *e)
{
    struct world *w = e->w;
    char *chunk = e->chunk; /* kept until write_done when the write is queued */
    while (e->tx_done < w->big && !e->tx_pending && e->nclosed == 0) {
        size_t n = sizeof(e->chunk);
        if (w->big - e->tx_done < n) {
            n = (size_t)(w->big - e->tx_done);
        }
        for (size_t i = 0; i < n; i++) {
            chunk[i] = (char)pat(e->tx_done + i);
        }
        /* two pieces, so the gather path is used too */
        uv_buf_t b[2] = { uv_buf_init(chunk, (unsigned)(n / 3)),
                          uv_buf_init(chunk + n / 3, (unsigned)(n - n / 3)) };
        int rc = sc_xport_write(e->x, b, 2);
        assert_true(rc == 0 || rc == 1);
        e->tx_done += n;
        if (rc == 1) {
            e->nwrite_ret1++;
            e->tx_pending = true;
        }
    }
    if (!e->server && e->rx == w->big && e->tx_done == w->big && !e->tx_pending) {
        end_close(e);
    }
}

static void start_talking(struct end *e)
{
    struct world *w = e->w;
    if (sc_tls_xport_is(e->x)) {
        snapshot(e);
    }
    assert_int_equal(sc_xport_read_start(e->x), 0);
    if (w->close_mid_write) {
        size_t n = 8 * 1024 * 1024;
        e->big_heap = sc_calloc(1, n); /* freed by the test once the loop ended */
        uv_buf_t b = uv_buf_init(e->big_heap, (unsigned)n);
        assert_int_equal(sc_xport_write(e->x, &b, 1), 1);
        assert_int_equal(sc_xport_write(e->x, &b, 1), UV_EBUSY);
        end_close(e); /* write_done(UV_ECANCELED) comes before closed */
        assert_int_equal(sc_xport_write(e->x, &b, 1), UV_EPIPE);
        return;
    }
    if (w->big) {
        big_send(e);
    } else if (!e->server && w->request) {
        /* head and body in two pieces: they go out as one record */
        size_t n = strlen(w->request);
        uv_buf_t b[2] = { uv_buf_init((char *)w->request, (unsigned)(n / 2)),
                          uv_buf_init((char *)w->request + n / 2, (unsigned)(n - n / 2)) };
        int rc = sc_xport_write(e->x, b, 2);
        assert_true(rc == 0 || rc == 1);
    }
}

void on_connected(void *owner, int status)
{
    struct end *e = owner;
    e->nconnected++;
    e->connected_rc = status;
    if (status < 0) {
        record_fail(e);
        end_close(e);
        return;
    }
    if (e->server) {
        snapshot(e);
        if (e->w->big) {
            big_send(e);
        }
        return;
    }
    start_talking(e);
}

void on_lis_closed(uv_handle_t *h)
{
    (void)h;
}

static void maybe_finish(struct world *w)
{
    if (w->cli.nclosed && (w->srv.nclosed || !w->srv.used) &&
        !uv_is_closing((uv_handle_t *)&w->lis)) {
        uv_close((uv_handle_t *)&w->lis, on_lis_closed);
    }
}

void on_timer_closed(uv_handle_t *h)
{
    (void)h;
}

void on_closed(void *owner)
{
    struct end *e = owner;
    e->nclosed++;
    if (e->resume_init) {
        uv_close((uv_handle_t *)&e->resume, on_timer_closed);
        e->resume_init = false;
    }
    maybe_finish(e->w);
}

static const struct sc_xport_cbs end_cbs = {
    .alloc = on_alloc,
    .read = on_read,
    .write_done = on_write_done,
    .connected = on_connected,
    .closed = on_closed,
};

/* PERMISSIVE: the server first reads raw bytes until the sniffer decides. */
static void on_sniff_read(void *owner, ssize_t n);

static const struct sc_xport_cbs sniff_cbs = {
    .alloc = on_alloc,
    .read = on_sniff_read,
    .write_done = on_write_done,
    .connected = on_connected,
    .closed = on_closed,
};

static void on_sniff_read(void *owner, ssize_t n)
{
    struct end *e = owner;
    struct world *w = e->w;
    if (n < 0) {
        end_close(e);
        return;
    }
    /* feed the bytes one at a time: the sniffer must cope with every split */
    size_t before = e->got_len;
    memcpy(e->got + e->got_len, e->rbuf, (size_t)n);
    e->got_len += (size_t)n;
    for (size_t i = before; i < e->got_len; i++) {
        enum sc_tls_sniff s = sc_tls_sniff(e->got, i + 1);
        if (s == SC_TLS_SNIFF_MORE) {
            continue;
        }
        w->sniffed = true;
        w->sniffed_tls = s == SC_TLS_SNIFF_TLS;
        sc_xport_read_stop(&e->tcp.base);
        if (w->sniffed_tls) {
            struct sc_tls_xport_args a = { .loop = &w->loop,
                                           .below = &e->tcp.base,
                                           .cbs = &end_cbs,
                                           .owner = e,
                                           .preread = sc_str_n(e->got, e->got_len),
                                           .handshake_cb = true };
            e->got_len = 0;
            e->x = sc_tls_xport_new(w->sctx, &a);
            assert_int_equal(sc_xport_read_start(e->x), 0);
        } else {
            e->tcp.base.cbs = &end_cbs;
            e->x = &e->tcp.base;
            e->rx = e->got_len;
            e->replied = false;
            on_read(e, 0);
            sc_xport_read_start(e->x);
        }
        return;
    }
}

static void on_accept(uv_stream_t *lis, int status)
{
    struct world *w = lis->data;
    assert_int_equal(status, 0);
    struct end *e = &w->srv;
    assert_false(e->used);
    e->used = true;
    sc_tcp_xport_init(&e->tcp, &w->loop, &end_cbs, e);
    assert_int_equal(uv_accept(lis, (uv_stream_t *)&e->tcp.tcp), 0);
    if (w->permissive) {
        e->tcp.base.cbs = &sniff_cbs;
        e->x = &e->tcp.base;
        assert_int_equal(sc_xport_read_start(e->x), 0);
        return;
    }
    struct sc_tls_xport_args a = { .loop = &w->loop,
                                   .below = &e->tcp.base,
                                   .cbs = &end_cbs,
                                   .owner = e,
                                   .handshake_cb = !w->no_hs_cb };
    e->x = sc_tls_xport_new(w->sctx, &a);
    if (w->server_first) {
        /* queued until the handshake is done */
        uv_buf_t b = uv_buf_init((char *)w->reply, (unsigned)strlen(w->reply));
        assert_int_equal(sc_xport_write(e->x, &b, 1), 1);
        assert_int_equal(sc_xport_write(e->x, &b, 1), UV_EBUSY);
        return; /* the write alone starts the handshake; reading starts once the reply is out */
    }
    assert_int_equal(sc_xport_read_start(e->x), 0);
    if (w->close_on_accept) {
        end_close(&w->cli);
    }
}

void world_init(struct world *w)
{
    memset(w, 0, sizeof(*w));
    assert_int_equal(uv_loop_init(&w->loop), 0);
    w->srv.w = w->cli.w = w;
    w->srv.server = true;
    w->srv.rx_ok = w->cli.rx_ok = true;
    w->srv.alive_after_reply = w->cli.alive_after_reply = -1;
    w->srv.alive_at_eof = w->cli.alive_at_eof = -1;
    w->request = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    w->reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    uv_tcp_init(&w->loop, &w->lis);
    w->lis.data = w;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    assert_int_equal(uv_tcp_bind(&w->lis, (struct sockaddr *)&sa, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&w->lis, 16, on_accept), 0);
    int len = sizeof(sa);
    uv_tcp_getsockname(&w->lis, (struct sockaddr *)&sa, &len);
    w->port = ntohs(sa.sin_port);
}

/* connect_null: the client's TCP layer connected on its own; the TLS layer goes on top now. */
static void on_tcp_first(void *owner, int status)
{
    struct end *e = owner;
    struct world *w = e->w;
    assert_int_equal(status, 0);
    struct sc_tls_xport_args a = {
        .loop = &w->loop, .below = &e->tcp.base, .cbs = &end_cbs, .owner = e, .sni = w->cli_sni
    };
    e->x = sc_tls_xport_new(w->cctx, &a);
    assert_int_equal(sc_xport_connect(e->x, NULL), 0);
    assert_int_equal(sc_xport_connect(e->x, NULL), UV_EALREADY);
}

static void no_alloc(void *owner, uv_buf_t *buf)
{
    (void)owner;
    *buf = uv_buf_init(NULL, 0);
}

static void no_read(void *owner, ssize_t n)
{
    (void)owner;
    (void)n;
}

static void no_write_done(void *owner, int status)
{
    (void)owner;
    (void)status;
}

static void no_closed(void *owner)
{
    (void)owner;
}

static const struct sc_xport_cbs tcp_first_cbs = {
    .alloc = no_alloc,
    .read = no_read,
    .write_done = no_write_done,
    .connected = on_tcp_first,
    .closed = no_closed,
};

/* Connects the client end (TLS over TCP unless plain_client) and runs the loop to the end. */
void world_run(struct world *w)
{
    struct end *e = &w->cli;
    e->used = true;
    sc_tcp_xport_init(&e->tcp, &w->loop, &end_cbs, e);
    if (w->connect_null) {
        e->tcp.base.cbs = &tcp_first_cbs;
        e->x = &e->tcp.base;
    } else if (w->plain_client) {
        e->x = &e->tcp.base;
    } else {
        struct sc_tls_xport_args a = { .loop = &w->loop,
                                       .below = &e->tcp.base,
                                       .cbs = &end_cbs,
                                       .owner = e,
                                       .sni = w->cli_sni,
                                       .session_key = w->sess_key,
                                       .alpn = w->cli_alpn };
        e->x = sc_tls_xport_new(w->cctx, &a);
    }
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", w->port, &sa);
    assert_int_equal(sc_xport_connect(e->x, (struct sockaddr *)&sa), 0);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    assert_int_equal(e->nclosed, 1);
    if (w->srv.used) {
        assert_int_equal(w->srv.nclosed, 1);
    }
    assert_int_equal(uv_loop_close(&w->loop), 0);
}

/* One exchange between <sctx> and <cctx>; the caller inspects <w> afterwards. */
void exchange(struct world *w, struct sc_tls_ctx *sctx, struct sc_tls_ctx *cctx, const char *sni)
{
    world_init(w);
    w->sctx = sctx;
    w->cctx = cctx;
    w->cli_sni = sni;
    world_run(w);
}

void assert_ok(struct world *w)
{
    if (w->cli.connected_rc != 0 || w->cli.fail != SC_TLS_FAIL_NONE) {
        fprintf(stderr, "client failed: %s (%s); server: %s (%s)\n", sc_tls_fail_name(w->cli.fail),
                w->cli.fail_text, sc_tls_fail_name(w->srv.fail), w->srv.fail_text);
    }
    assert_int_equal(w->cli.nconnected, 1);
    assert_int_equal(w->cli.connected_rc, 0);
    assert_int_equal(w->srv.connected_rc, 0);
    assert_string_equal(w->cli.got, w->reply);
    assert_int_equal(w->srv.got_len, strlen(w->request));
    assert_memory_equal(w->srv.got, w->request, w->srv.got_len);
    assert_int_equal(w->srv.read_err, UV_EOF);
}

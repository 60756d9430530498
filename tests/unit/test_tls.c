// SPDX-License-Identifier: Apache-2.0
// Unit tests for the TLS layer (net/tls.h): contexts, handshakes, the store; test_tls_id.c has the
// pure functions. The PKI comes from tests/certs.sh, run once into a
// temporary directory. Handshakes are real: a server TLS layer over an accepted TCP layer and a
// client TLS layer over a connecting one, both on one libuv loop on loopback; a few peers are
// independent of the layer (a blocking OpenSSL client in a thread for old protocol versions and
// close_notify, the `openssl s_server` CLI). Every test closes everything it opened and checks that
// the loop closes cleanly.
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

#ifndef SC_CERTS_SH
#define SC_CERTS_SH "tests/certs.sh"
#endif

static char pki[64]; /* the directory certs.sh filled */

static char *path_of(const char *name)
{
    static char bufs[64][128];
    static int i;
    char *b = bufs[i++ % 64];
    snprintf(b, 128, "%s/%s", pki, name);
    return b;
}

static void run(const char *cmd)
{
    int rc = system(cmd);
    assert_int_equal(rc, 0);
}

static int group_setup(void **state)
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

static int group_teardown(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", pki);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- contexts from options ---------------------------------------------------------------- */

static char *strs_a[8];

static struct sc_strv strv(const char *a, const char *b)
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

static struct sc_tls_server_opts server_opts(const char *cert, const char *key)
{
    struct sc_tls_server_opts o = { 0 };
    o.cert = cert ? path_of(cert) : NULL;
    o.key = key ? path_of(key) : NULL;
    o.session_cache_size = 64;
    return o;
}

static struct sc_tls_client_opts client_opts(void)
{
    struct sc_tls_client_opts o = { 0 };
    o.ca = path_of("ca.pem");
    o.session_reuse = true;
    return o;
}

static struct sc_tls_ctx *server_ctx(struct sc_tls_server_opts *o)
{
    char *err = NULL;
    struct sc_tls_ctx *c = sc_tls_ctx_new_server(o, NULL, &err);
    if (!c) {
        fprintf(stderr, "server ctx: %s\n", err);
    }
    assert_non_null(c);
    return c;
}

static struct sc_tls_ctx *client_ctx(struct sc_tls_client_opts *o)
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

#define RX_KEEP 8192

struct world;

struct end {
    struct sc_tcp_xport tcp;
    struct sc_xport *x; /* the top of the chain */
    struct world *w;
    bool server;
    bool used;
    char rbuf[65536];
    char got[RX_KEEP];
    size_t got_len;
    uint64_t rx;
    bool rx_ok; /* every byte matched the pattern (big mode) */
    int read_err;
    int nconnected, connected_rc;
    int nclosed;
    enum sc_tls_fail fail;
    char fail_text[160];
    /* big mode */
    uint64_t tx_done;
    bool tx_pending;
    int nwrite_ret1, nwrite_done;
    uint64_t paused_at;
    uv_timer_t resume;
    bool resume_init;
    /* what the end saw of the session once it was up */
    char alpn[32], sni[64], version[16], peer_id[128], peer_cn[64];
    bool resumed, tls;
    bool replied;
    int last_write_status;
    char *big_heap;
    int alive_after_reply; /* -1: not checked; else sc_xport_alive once the reply was in */
    int alive_at_eof;
    char chunk[256 * 1024];
};

struct world {
    uv_loop_t loop;
    uv_tcp_t lis;
    int port;
    struct sc_tls_ctx *sctx, *cctx;
    struct end srv, cli;
    const char *cli_sni;
    const char *sess_key;
    const char *request;  /* the client sends this once connected */
    const char *reply;    /* the server answers this once it has the request */
    uint64_t big;         /* big mode: each side sends this many pattern bytes */
    bool pause_reads;     /* big mode: receivers pause every 1 MiB */
    bool plain_client;    /* the client speaks no TLS */
    bool permissive;      /* the server sniffs the first bytes and serves TLS or plaintext */
    bool no_hs_cb;        /* the server layer reports a failed handshake through read */
    bool server_first;    /* the server writes <reply> at accept, before the handshake */
    bool srv_shutdown;    /* the server shuts its side down (close_notify) after replying */
    bool close_on_accept; /* the client closes as soon as the server accepted */
    bool connect_null;    /* the client's TCP connects first; the TLS layer then gets a NULL addr */
    bool close_mid_write; /* the client writes 8 MiB at once and closes while it is queued */
    bool sniffed_tls;
    bool sniffed;
};

static unsigned char pat(uint64_t i)
{
    return (unsigned char)((i * 131) % 251);
}

static void end_close(struct end *e)
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
    s = sc_xport_query_str(e->x, SC_XQ_PEER_ID);
    snprintf(e->peer_id, sizeof(e->peer_id), "%.*s", SC_STR_FMT(s));
    sc_xport_query(e->x, SC_XQ_TLS_RESUMED, &e->resumed);
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

static void on_alloc(void *owner, uv_buf_t *buf)
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

static void on_write_done(void *owner, int status)
{
    struct end *e = owner;
    e->nwrite_done++;
    e->last_write_status = status;
    e->tx_pending = false;
    if (status < 0) {
        return;
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

static void on_connected(void *owner, int status)
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

static void on_lis_closed(uv_handle_t *h)
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

static void on_timer_closed(uv_handle_t *h)
{
    (void)h;
}

static void on_closed(void *owner)
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
    }
    assert_int_equal(sc_xport_read_start(e->x), 0);
    if (w->close_on_accept) {
        end_close(&w->cli);
    }
}

static void world_init(struct world *w)
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
static void world_run(struct world *w)
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
                                       .session_key = w->sess_key };
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
static void exchange(struct world *w, struct sc_tls_ctx *sctx, struct sc_tls_ctx *cctx,
                     const char *sni)
{
    world_init(w);
    w->sctx = sctx;
    w->cctx = cctx;
    w->cli_sni = sni;
    world_run(w);
}

static void assert_ok(struct world *w)
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

/* ---- building contexts -------------------------------------------------------------------- */

static void expect_server_err(struct sc_tls_server_opts *o, const char *part1, const char *part2)
{
    char *err = NULL;
    struct sc_tls_ctx *c = sc_tls_ctx_new_server(o, NULL, &err);
    assert_null(c);
    assert_non_null(err);
    if (!strstr(err, part1) || (part2 && !strstr(err, part2))) {
        fprintf(stderr, "unexpected message: %s\n", err);
        fail();
    }
    sc_free(err);
}

static void test_ctx_errors(void **state)
{
    (void)state;
    struct sc_tls_server_opts o = server_opts("missing.pem", "server.key");
    expect_server_err(&o, path_of("missing.pem"), "No such file");
    o = server_opts("notpem.pem", "server.key");
    expect_server_err(&o, path_of("notpem.pem"), "bad PEM");
    o = server_opts("server.pem", "rsa.key");
    expect_server_err(&o, "does not match", path_of("rsa.key"));
    o = server_opts("server.pem", "notpem.pem");
    expect_server_err(&o, path_of("notpem.pem"), "key");
    o = server_opts("server.pem", NULL);
    expect_server_err(&o, "key", "missing");
    o = server_opts(NULL, NULL);
    expect_server_err(&o, "needs cert and key", NULL);
    o = server_opts("server.pem", "server.key");
    o.min_version = SC_TLS_VERSION_1_1;
    expect_server_err(&o, "TLSv1.1 is refused", NULL);
    o.min_version = SC_TLS_VERSION_1_3;
    o.max_version = SC_TLS_VERSION_1_2;
    expect_server_err(&o, "min_version is above max_version", NULL);
    o = server_opts("server.pem", "server.key");
    o.client_cert = SC_TLS_CLIENT_CERT_REQUIRE;
    expect_server_err(&o, "needs client_ca", NULL);
    o.client_ca = path_of("notpem.pem");
    expect_server_err(&o, "CA", "bad PEM");
    o = server_opts("server.pem", "server.key");
    o.alpn = strv("h2", "");
    expect_server_err(&o, "alpn", NULL);

    /* an expired certificate is a warning, not an error; every key type loads */
    const char *ok[][2] = { { "expired.pem", "expired.key" },
                            { "rsa.pem", "rsa.key" },
                            { "ed25519.pem", "ed25519.key" } };
    for (size_t i = 0; i < SC_ARRAY_LEN(ok); i++) {
        o = server_opts(ok[i][0], ok[i][1]);
        struct sc_tls_ctx *c = server_ctx(&o);
        struct sc_tls_cert_info info;
        assert_int_equal(sc_tls_ctx_certs(c, &info, 1), 1);
        assert_true(info.not_after > info.not_before);
        assert_true(strlen(info.serial) > 0);
        if (i == 0) {
            assert_int_equal(info.not_after, 1577923200); /* 2020-01-02T00:00:00Z */
        }
        sc_tls_ctx_unref(c);
    }

    struct sc_tls_client_opts co = client_opts();
    co.cert = path_of("client.pem");
    char *err = NULL;
    assert_null(sc_tls_ctx_new_client(&co, NULL, &err));
    assert_non_null(strstr(err, "key"));
    sc_free(err);
    co = client_opts();
    co.subject_alt_names = strv("spiffe://Bad/x", NULL);
    err = NULL;
    assert_null(sc_tls_ctx_new_client(&co, NULL, &err));
    assert_non_null(strstr(err, "SPIFFE"));
    sc_free(err);
}

/* ---- handshakes --------------------------------------------------------------------------- */

static void test_handshake_alpn_sni(void **state)
{
    (void)state;
    struct sc_tls_server_opts so = server_opts("server.pem", "server.key");
    so.alpn = strv("h2", "http/1.1");
    struct sc_tls_ctx *s = server_ctx(&so);
    struct sc_tls_client_opts co = client_opts();
    co.alpn = strv("http/1.1", "h2");
    struct sc_tls_ctx *c = client_ctx(&co);
    struct world w;
    exchange(&w, s, c, "server.test");
    assert_ok(&w);
    assert_string_equal(w.srv.alpn, "h2"); /* the server's preference */
    assert_string_equal(w.cli.alpn, "h2");
    assert_string_equal(w.srv.sni, "server.test");
    assert_string_equal(w.srv.version, "TLSv1.3");
    assert_true(w.srv.tls && w.cli.tls);
    assert_false(w.cli.resumed);
    assert_string_equal(w.cli.peer_id, "spiffe://cluster.local/ns/default/sa/server");
    assert_string_equal(w.srv.peer_id, ""); /* no client certificate */
    sc_tls_ctx_unref(c);

    /* no common protocol: no ALPN, not a failure */
    co.alpn = strv("http/1.0", NULL);
    c = client_ctx(&co);
    exchange(&w, s, c, "localhost");
    assert_ok(&w);
    assert_string_equal(w.srv.alpn, "");
    sc_tls_ctx_unref(c);

    /* TLS 1.2 only, RSA and Ed25519 certificates */
    const char *pairs[][3] = { { "rsa.pem", "rsa.key", "rsa.test" },
                               { "ed25519.pem", "ed25519.key", "ed.test" } };
    for (size_t i = 0; i < 2; i++) {
        struct sc_tls_server_opts o2 = server_opts(pairs[i][0], pairs[i][1]);
        struct sc_tls_ctx *s2 = server_ctx(&o2);
        co = client_opts();
        co.max_version = SC_TLS_VERSION_1_2;
        c = client_ctx(&co);
        exchange(&w, s2, c, pairs[i][2]);
        assert_ok(&w);
        assert_string_equal(w.cli.version, "TLSv1.2");
        sc_tls_ctx_unref(c);
        sc_tls_ctx_unref(s2);
    }
    sc_tls_ctx_unref(s);
}

static void test_sni_selection(void **state)
{
    (void)state;
    struct sc_tls_cert_opts more[3] = {
        { path_of("rsa.pem"), path_of("rsa.key") },
        { path_of("ed25519.pem"), path_of("ed25519.key") },
        { path_of("wild.pem"), path_of("wild.key") },
    };
    struct sc_tls_server_opts so = server_opts("server.pem", "server.key");
    so.certificates = (struct sc_vec){ more, 3 };
    struct sc_tls_ctx *s = server_ctx(&so);
    struct sc_tls_cert_info info[4];
    assert_int_equal(sc_tls_ctx_certs(s, info, 4), 4);
    assert_string_equal(info[0].name, "localhost");
    assert_string_equal(info[3].name, "*.wild.test");
    struct {
        const char *sni, *expect_san, *cn;
    } cases[] = {
        { "rsa.test", "rsa.test", "rsa" },
        { "ED.TEST", "ed.test", "ed25519" },
        { "a.wild.test", "a.wild.test", "wild" },
        { "a.b.wild.test", "server.test", "server" }, /* a wildcard covers one label */
        { "unknown.test", "server.test", "server" },  /* the default */
        { NULL, "server.test", "server" },
    };
    for (size_t i = 0; i < SC_ARRAY_LEN(cases); i++) {
        struct sc_tls_client_opts co = client_opts();
        co.subject_alt_names = strv(cases[i].expect_san, NULL);
        struct sc_tls_ctx *c = client_ctx(&co);
        struct world w;
        exchange(&w, s, c, cases[i].sni);
        assert_ok(&w);
        assert_string_equal(w.cli.peer_cn, cases[i].cn);
        sc_tls_ctx_unref(c);
    }
    sc_tls_ctx_unref(s);
}

static void test_client_cert_modes(void **state)
{
    (void)state;
    struct sc_tls_server_opts so = server_opts("server.pem", "server.key");
    so.client_ca = path_of("ca.pem"); /* auto: require */
    struct sc_tls_ctx *s = server_ctx(&so);
    struct sc_tls_client_opts co = client_opts();
    struct world w;

    /* require, no certificate: the server refuses; TLS 1.3 clients learn it on their read */
    struct sc_tls_ctx *c = client_ctx(&co);
    exchange(&w, s, c, "localhost");
    assert_int_equal(w.srv.fail, SC_TLS_FAIL_NO_CLIENT_CERT);
    assert_true(w.srv.connected_rc < 0);
    assert_int_equal(w.cli.fail, SC_TLS_FAIL_NO_CLIENT_CERT);
    assert_int_equal(w.cli.got_len, 0);
    sc_tls_ctx_unref(c);

    /* with the SPIFFE client certificate: the server sees its identity */
    co.cert = path_of("client.pem");
    co.key = path_of("client.key");
    c = client_ctx(&co);
    exchange(&w, s, c, "localhost");
    assert_ok(&w);
    assert_string_equal(w.srv.peer_id, "spiffe://cluster.local/ns/default/sa/client");
    assert_string_equal(w.srv.peer_cn, "client");
    sc_tls_ctx_unref(c);

    /* a certificate from another CA */
    co.cert = path_of("other.pem");
    co.key = path_of("other.key");
    c = client_ctx(&co);
    exchange(&w, s, c, "localhost");
    assert_int_equal(w.srv.fail, SC_TLS_FAIL_UNKNOWN_CA);
    assert_int_equal(w.cli.fail, SC_TLS_FAIL_UNKNOWN_CA);
    sc_tls_ctx_unref(c);
    sc_tls_ctx_unref(s);

    /* optional: without a certificate is fine, with one it is verified */
    so.client_cert = SC_TLS_CLIENT_CERT_OPTIONAL;
    s = server_ctx(&so);
    co = client_opts();
    c = client_ctx(&co);
    exchange(&w, s, c, "localhost");
    assert_ok(&w);
    assert_string_equal(w.srv.peer_cn, "");
    sc_tls_ctx_unref(c);
    co.cert = path_of("client2.pem");
    co.key = path_of("client2.key");
    c = client_ctx(&co);
    exchange(&w, s, c, "localhost");
    assert_ok(&w);
    assert_string_equal(w.srv.peer_id, "spiffe://cluster.local/ns/prod/sa/api");
    sc_tls_ctx_unref(s);

    /* none: the certificate is not even asked for */
    so.client_cert = SC_TLS_CLIENT_CERT_NONE;
    s = server_ctx(&so);
    exchange(&w, s, c, "localhost");
    assert_ok(&w);
    assert_string_equal(w.srv.peer_id, "");
    assert_string_equal(w.srv.peer_cn, "");
    sc_tls_ctx_unref(c);
    sc_tls_ctx_unref(s);
}

static void expect_client_fail(struct sc_tls_ctx *s, struct sc_tls_client_opts *co, const char *sni,
                               enum sc_tls_fail want)
{
    struct sc_tls_ctx *c = client_ctx(co);
    struct world w;
    exchange(&w, s, c, sni);
    if (w.cli.fail != want) {
        fprintf(stderr, "want %s, got %s (%s)\n", sc_tls_fail_name(want),
                sc_tls_fail_name(w.cli.fail), w.cli.fail_text);
    }
    assert_int_equal(w.cli.fail, want);
    assert_int_equal(w.cli.nconnected, 1);
    assert_true(w.cli.connected_rc < 0);
    assert_true(strlen(w.cli.fail_text) > 0);
    /* the server learns of it from the client's alert */
    assert_true(w.srv.connected_rc < 0);
    assert_int_equal(w.srv.got_len, 0);
    sc_tls_ctx_unref(c);
}

static void test_verify_failures(void **state)
{
    (void)state;
    struct sc_tls_server_opts so = server_opts("server.pem", "server.key");
    struct sc_tls_ctx *s = server_ctx(&so);
    struct sc_tls_client_opts co = client_opts();
    co.ca = path_of("other_ca.pem");
    expect_client_fail(s, &co, "localhost", SC_TLS_FAIL_UNKNOWN_CA);
    co = client_opts();
    expect_client_fail(s, &co, "wrong.test", SC_TLS_FAIL_BAD_SAN);
    co.subject_alt_names = strv("spiffe://cluster.local/ns/default/sa/other", NULL);
    expect_client_fail(s, &co, "localhost", SC_TLS_FAIL_BAD_SAN);
    co.subject_alt_names = strv("other.test", NULL);
    expect_client_fail(s, &co, "localhost", SC_TLS_FAIL_BAD_SAN);

    /* the right SPIFFE ID, or an IP address the certificate names */
    co.subject_alt_names = strv("nope.test", "spiffe://cluster.local/ns/default/sa/server");
    struct sc_tls_ctx *c = client_ctx(&co);
    struct world w;
    exchange(&w, s, c, "wrong.test");
    assert_ok(&w);
    sc_tls_ctx_unref(c);
    co = client_opts();
    c = client_ctx(&co);
    exchange(&w, s, c, "127.0.0.1");
    assert_ok(&w);
    assert_string_equal(w.srv.sni, ""); /* an IP address is not sent as SNI */
    sc_tls_ctx_unref(c);
    /* insecure_skip_verify accepts anything, and then reports no verified peer */
    co.ca = path_of("other_ca.pem");
    co.insecure_skip_verify = true;
    c = client_ctx(&co);
    exchange(&w, s, c, "wrong.test");
    assert_ok(&w);
    assert_string_equal(w.cli.peer_id, "");
    sc_tls_ctx_unref(c);
    sc_tls_ctx_unref(s);

    so = server_opts("expired.pem", "expired.key");
    s = server_ctx(&so);
    co = client_opts();
    expect_client_fail(s, &co, "localhost", SC_TLS_FAIL_EXPIRED);
    sc_tls_ctx_unref(s);
}

/* Connection lifecycles: a server that writes first, a client that connects below first, closes
 * during the handshake and during a queued write, shutdown seen by the client, liveness. */
static void test_lifecycle(void **state)
{
    (void)state;
    struct sc_tls_server_opts so = server_opts("server.pem", "server.key");
    struct sc_tls_ctx *s = server_ctx(&so);
    struct sc_tls_client_opts co = client_opts();
    struct sc_tls_ctx *c = client_ctx(&co);
    struct world w;

    /* the server writes before the handshake: the bytes wait for it */
    world_init(&w);
    w.sctx = s;
    w.cctx = c;
    w.cli_sni = "localhost";
    w.server_first = true;
    w.request = NULL;
    world_run(&w);
    assert_string_equal(w.cli.got, w.reply);
    assert_int_equal(w.srv.nwrite_done, 1);
    assert_int_equal(w.srv.last_write_status, 0);
    assert_int_equal(w.cli.alive_after_reply, 1); /* an idle, poolable connection */

    /* below connected first; the layer starts its handshake from connect(NULL) */
    world_init(&w);
    w.sctx = s;
    w.cctx = c;
    w.cli_sni = "localhost";
    w.connect_null = true;
    world_run(&w);
    assert_ok(&w);

    /* the server shuts down after its reply: the client reads close_notify as EOF, and the
     * connection is not alive any more */
    world_init(&w);
    w.sctx = s;
    w.cctx = c;
    w.cli_sni = "localhost";
    w.srv_shutdown = true;
    world_run(&w);
    assert_string_equal(w.cli.got, w.reply);
    assert_int_equal(w.cli.read_err, UV_EOF);
    assert_int_equal(w.cli.alive_at_eof, 0);
    assert_int_equal(w.cli.fail, SC_TLS_FAIL_NONE);

    /* closed during the handshake: connected(UV_ECANCELED) once, then closed once */
    world_init(&w);
    w.sctx = s;
    w.cctx = c;
    w.close_on_accept = true;
    world_run(&w);
    assert_int_equal(w.cli.nconnected, 1);
    assert_int_equal(w.cli.connected_rc, UV_ECANCELED);
    assert_int_equal(w.srv.fail, SC_TLS_FAIL_PEER_CLOSED);

    /* closed with a write queued: write_done(UV_ECANCELED) once, then closed */
    world_init(&w);
    w.sctx = s;
    w.cctx = c;
    w.cli_sni = "localhost";
    w.close_mid_write = true;
    w.request = NULL;
    world_run(&w);
    assert_int_equal(w.cli.nwrite_done, 1);
    assert_int_equal(w.cli.last_write_status, UV_ECANCELED);
    sc_free(w.cli.big_heap);

    /* without handshake_cb a failed handshake reaches the owner's read */
    world_init(&w);
    w.sctx = s;
    w.cctx = c;
    w.cli_sni = "wrong.test";
    w.no_hs_cb = true;
    world_run(&w);
    assert_int_equal(w.cli.fail, SC_TLS_FAIL_BAD_SAN);
    assert_int_equal(w.srv.nconnected, 0);
    assert_int_equal(w.srv.read_err, UV_EPROTO);
    assert_int_equal(w.srv.fail, SC_TLS_FAIL_BAD_CERT); /* the client's bad_certificate alert */

    sc_tls_ctx_unref(c);
    sc_tls_ctx_unref(s);
}

/* ---- a blocking OpenSSL peer in a thread -------------------------------------------------- */

struct peer {
    int port;
    int min, max;     /* protocol versions the peer allows */
    const char *send; /* sent after the handshake, then close_notify */
    bool plaintext;   /* send <send> without TLS */
    bool hs_ok;
    char got[256];
    int got_len;
    bool got_close_notify;
    pthread_t th;
};

static void *peer_main(void *arg)
{
    struct peer *p = arg;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)p->port) };
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return NULL;
    }
    if (p->plaintext) {
        (void)!write(fd, p->send, strlen(p->send));
        char b[64];
        while (read(fd, b, sizeof(b)) > 0) {
        }
        close(fd);
        return NULL;
    }
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_security_level(c, 0);
    SSL_CTX_set_cipher_list(c, "DEFAULT:@SECLEVEL=0");
    SSL_CTX_set_min_proto_version(c, p->min);
    SSL_CTX_set_max_proto_version(c, p->max);
    SSL *s = SSL_new(c);
    SSL_set_fd(s, fd);
    p->hs_ok = SSL_connect(s) == 1;
    if (p->hs_ok) {
        if (p->send) {
            SSL_write(s, p->send, (int)strlen(p->send));
        }
        int n;
        while ((n = SSL_read(s, p->got + p->got_len, (int)sizeof(p->got) - 1 - p->got_len)) > 0) {
            p->got_len += n;
        }
        p->got_close_notify = SSL_get_error(s, n) == SSL_ERROR_ZERO_RETURN;
        SSL_shutdown(s);
    }
    SSL_free(s);
    SSL_CTX_free(c);
    close(fd);
    return NULL;
}

/* Server-only world: the peer thread is the client. The server answers w->reply and shuts its
 * side down with close_notify once it has the peer's bytes. */
static void peer_run(struct world *w, struct peer *p)
{
    p->port = w->port;
    pthread_create(&p->th, NULL, peer_main, p);
    w->cli.nclosed = 1; /* no client end on the loop */
    uv_run(&w->loop, UV_RUN_DEFAULT);
    pthread_join(p->th, NULL);
    assert_int_equal(uv_loop_close(&w->loop), 0);
}

static void test_old_versions_and_plaintext(void **state)
{
    (void)state;
    struct sc_tls_server_opts so = server_opts("server.pem", "server.key");
    struct sc_tls_ctx *s = server_ctx(&so);
    int versions[] = { TLS1_VERSION, TLS1_1_VERSION };
    for (size_t i = 0; i < 2; i++) {
        struct world w;
        world_init(&w);
        w.sctx = s;
        struct peer p = { .min = versions[i], .max = versions[i] };
        peer_run(&w, &p);
        assert_false(p.hs_ok);
        assert_int_equal(w.srv.fail, SC_TLS_FAIL_PROTOCOL_VERSION);
        assert_true(w.srv.connected_rc < 0);
    }
    /* plaintext on a TLS port */
    struct world w;
    world_init(&w);
    w.sctx = s;
    struct peer p = { .plaintext = true, .send = "GET / HTTP/1.1\r\nHost: a\r\n\r\n" };
    peer_run(&w, &p);
    assert_int_equal(w.srv.fail, SC_TLS_FAIL_NOT_TLS);
    sc_tls_ctx_unref(s);
}

/* The server replies and shuts down (close_notify); the peer sees close_notify, not a bare FIN. */
static void on_srv_read_shutdown(void *owner, ssize_t n);

static const struct sc_xport_cbs shut_cbs = {
    .alloc = on_alloc,
    .read = on_srv_read_shutdown,
    .write_done = on_write_done,
    .connected = on_connected,
    .closed = on_closed,
};

static void on_srv_read_shutdown(void *owner, ssize_t n)
{
    struct end *e = owner;
    if (n < 0) {
        e->read_err = (int)n;
        end_close(e);
        return;
    }
    memcpy(e->got + e->got_len, e->rbuf, (size_t)n);
    e->got_len += (size_t)n;
    if (!e->replied && e->got_len >= 4) {
        e->replied = true;
        uv_buf_t b = uv_buf_init((char *)"bye", 3);
        assert_int_equal(sc_xport_write(e->x, &b, 1), 0);
        assert_true(sc_xport_alive(e->x));
        assert_int_equal(sc_xport_shutdown(e->x), 0);
        uv_buf_t more = uv_buf_init((char *)"x", 1);
        assert_int_equal(sc_xport_write(e->x, &more, 1), UV_EPIPE);
    }
}

static void test_close_notify(void **state)
{
    (void)state;
    struct sc_tls_server_opts so = server_opts("server.pem", "server.key");
    struct sc_tls_ctx *s = server_ctx(&so);
    for (int v = 0; v < 2; v++) {
        struct world w;
        world_init(&w);
        w.sctx = s;
        w.srv.tcp.base.cbs = NULL;
        struct peer p = { .min = v ? TLS1_3_VERSION : TLS1_2_VERSION,
                          .max = v ? TLS1_3_VERSION : TLS1_2_VERSION,
                          .send = "ping" };
        /* swap the server's callbacks after accept: on_accept uses end_cbs */
        w.request = NULL;
        w.reply = NULL;
        p.port = w.port;
        pthread_create(&p.th, NULL, peer_main, &p);
        w.cli.nclosed = 1;
        while (!w.srv.used) {
            uv_run(&w.loop, UV_RUN_ONCE);
        }
        w.srv.x->cbs = &shut_cbs;
        uv_run(&w.loop, UV_RUN_DEFAULT);
        pthread_join(p.th, NULL);
        assert_int_equal(uv_loop_close(&w.loop), 0);
        assert_true(p.hs_ok);
        assert_int_equal(p.got_len, 3);
        assert_memory_equal(p.got, "bye", 3);
        assert_true(p.got_close_notify);
        assert_memory_equal(w.srv.got, "ping", 4);
        assert_int_equal(w.srv.read_err, UV_EOF); /* the peer's close_notify */
    }
    sc_tls_ctx_unref(s);
}

/* ---- bulk data ---------------------------------------------------------------------------- */

static void test_big_transfer(void **state)
{
    (void)state;
    struct sc_tls_server_opts so = server_opts("server.pem", "server.key");
    struct sc_tls_ctx *s = server_ctx(&so);
    for (int v = 0; v < 2; v++) {
        struct sc_tls_client_opts co = client_opts();
        co.max_version = v ? SC_TLS_VERSION_1_3 : SC_TLS_VERSION_1_2;
        struct sc_tls_ctx *c = client_ctx(&co);
        struct world w;
        world_init(&w);
        w.sctx = s;
        w.cctx = c;
        w.cli_sni = "localhost";
        w.big = 8 * 1024 * 1024 + 12345;
        w.pause_reads = true;
        world_run(&w);
        assert_int_equal(w.cli.connected_rc, 0);
        assert_true(w.cli.rx == w.big && w.srv.rx == w.big);
        assert_true(w.cli.rx_ok && w.srv.rx_ok);
        assert_true(w.cli.nwrite_ret1 > 0 || w.srv.nwrite_ret1 > 0); /* backpressure happened */
        assert_int_equal(w.cli.nwrite_done, w.cli.nwrite_ret1);
        assert_int_equal(w.srv.nwrite_done, w.srv.nwrite_ret1);
        assert_string_equal(w.cli.version, v ? "TLSv1.3" : "TLSv1.2");
        sc_tls_ctx_unref(c);
    }
    sc_tls_ctx_unref(s);
}

/* ---- PERMISSIVE: TLS and plaintext on one port -------------------------------------------- */

static void test_permissive(void **state)
{
    (void)state;
    struct sc_tls_server_opts so = server_opts("server.pem", "server.key");
    struct sc_tls_ctx *s = server_ctx(&so);
    struct sc_tls_client_opts co = client_opts();
    struct sc_tls_ctx *c = client_ctx(&co);
    struct world w;
    world_init(&w);
    w.sctx = s;
    w.cctx = c;
    w.cli_sni = "localhost";
    w.permissive = true;
    world_run(&w);
    assert_true(w.sniffed && w.sniffed_tls);
    assert_ok(&w);

    world_init(&w);
    w.sctx = s;
    w.permissive = true;
    w.plain_client = true;
    world_run(&w);
    assert_true(w.sniffed && !w.sniffed_tls);
    assert_string_equal(w.cli.got, w.reply);
    sc_tls_ctx_unref(c);
    sc_tls_ctx_unref(s);
}

/* ---- the store: reloads and resumption ---------------------------------------------------- */

static void cp(const char *from, const char *to)
{
    char cmd[8192];
    snprintf(cmd, sizeof(cmd), "cp %s %s.tmp && mv -f %s.tmp %s", from, to, to, to);
    run(cmd);
}

static void test_store_reload_and_resumption(void **state)
{
    (void)state;
    /* a Kubernetes-style volume: files are symlinks through ..data to a timestamped dir */
    char vol[96], cmd[8192];
    snprintf(vol, sizeof(vol), "%s/vol", pki);
    snprintf(cmd, sizeof(cmd),
             "mkdir -p %s/..v1 && cp %s %s/..v1/tls.crt && cp %s %s/..v1/tls.key && "
             "ln -sfn ..v1 %s/..data && ln -sf ..data/tls.crt %s/tls.crt && "
             "ln -sf ..data/tls.key %s/tls.key",
             vol, path_of("server.pem"), vol, path_of("server.key"), vol, vol, vol, vol);
    run(cmd);
    char crt[128], key[128];
    snprintf(crt, sizeof(crt), "%s/tls.crt", vol);
    snprintf(key, sizeof(key), "%s/tls.key", vol);
    struct sc_tls_server_opts so = { .cert = crt, .key = key, .session_cache_size = 16 };
    char *err = NULL;
    struct sc_tls_store *st = sc_tls_store_new_server(&so, "test", &err);
    assert_non_null(st);
    assert_int_equal(sc_tls_store_generation(st), 1);
    struct sc_tls_cert_info before;
    assert_int_equal(sc_tls_store_certs(st, &before, 1), 1);
    assert_int_equal(sc_tls_store_check(st, NULL), 0); /* nothing changed */

    struct sc_tls_client_opts co = client_opts();
    co.session_reuse = true;
    struct sc_tls_store *cst = sc_tls_store_new_client(&co, "upstream", &err);
    assert_non_null(cst);

    for (int round = 0; round < 4; round++) {
        if (round == 2) {
            /* the swap: a new dir with the RSA pair, ..data renamed over atomically */
            snprintf(cmd, sizeof(cmd),
                     "mkdir -p %s/..v2 && cp %s %s/..v2/tls.crt && cp %s %s/..v2/tls.key && "
                     "ln -sfn ..v2 %s/..data.tmp && mv -T %s/..data.tmp %s/..data",
                     vol, path_of("rsa.pem"), vol, path_of("rsa.key"), vol, vol, vol, vol);
            run(cmd);
            assert_int_equal(sc_tls_store_check(st, NULL), 1);
            assert_int_equal(sc_tls_store_generation(st), 2);
            struct sc_tls_cert_info after;
            sc_tls_store_certs(st, &after, 1);
            assert_string_not_equal(after.serial, before.serial);
            assert_string_equal(after.name, "rsa.test");
        }
        struct sc_tls_ctx *s = sc_tls_store_get(st);
        struct sc_tls_ctx *c = sc_tls_store_get(cst);
        struct world w;
        world_init(&w);
        w.sctx = s;
        w.cctx = c;
        w.cli_sni = "localhost";
        w.sess_key = "127.0.0.1:443|localhost";
        world_run(&w);
        assert_ok(&w);
        /* round 0: full; 1: resumed; 2: resumed across the reload (ticket keys outlive the
         * context); 3: a fresh client context does a full handshake with the new certificate */
        assert_int_equal(w.cli.resumed, round == 1 || round == 2);
        assert_int_equal(w.srv.resumed, round == 1 || round == 2);
        if (round == 3) {
            assert_string_equal(w.cli.peer_cn, "rsa");
        }
        sc_tls_ctx_unref(s);
        sc_tls_ctx_unref(c);
        if (round == 2) {
            sc_tls_store_free(cst);
            cst = sc_tls_store_new_client(&co, "upstream", &err);
            assert_non_null(cst);
        }
    }
    sc_tls_store_free(cst);
    sc_tls_store_free(st);
}

static void on_keep(uv_timer_t *t)
{
    (void)t;
}

static void test_store_broken_reload(void **state)
{
    (void)state;
    char crt[128], key[128];
    snprintf(crt, sizeof(crt), "%s/b.crt", pki);
    snprintf(key, sizeof(key), "%s/b.key", pki);
    cp(path_of("server.pem"), crt);
    cp(path_of("server.key"), key);
    struct sc_tls_server_opts so = { .cert = crt, .key = key };
    char *err = NULL;
    struct sc_tls_store *st = sc_tls_store_new_server(&so, "broken", &err);
    assert_non_null(st);
    struct sc_tls_ctx *first = sc_tls_store_get(st);

    /* a mismatched key (cert-manager wrote one file, not yet the other) */
    cp(path_of("rsa.key"), key);
    assert_int_equal(sc_tls_store_check(st, &err), SC_ECONFIG);
    assert_non_null(strstr(err, "does not match"));
    sc_free(err);
    assert_int_equal(sc_tls_store_check(st, NULL), 0); /* not retried until a file changes */
    /* garbage, then a missing file */
    cp(path_of("notpem.pem"), crt);
    err = NULL;
    assert_int_equal(sc_tls_store_check(st, &err), SC_ECONFIG);
    assert_non_null(strstr(err, "bad PEM"));
    sc_free(err);
    unlink(crt);
    assert_int_equal(sc_tls_store_check(st, NULL), SC_ECONFIG);
    assert_int_equal(sc_tls_store_check(st, NULL), 0);
    assert_int_equal(sc_tls_store_generation(st), 1);
    struct sc_tls_ctx *still = sc_tls_store_get(st);
    assert_ptr_equal(still, first);

    /* the old context keeps serving */
    struct sc_tls_client_opts co = client_opts();
    struct sc_tls_ctx *c = client_ctx(&co);
    struct world w;
    exchange(&w, still, c, "localhost");
    assert_ok(&w);
    assert_string_equal(w.cli.peer_cn, "server");
    sc_tls_ctx_unref(still);

    /* the matching pair arrives: the watcher on a loop picks it up */
    cp(path_of("rsa.pem"), crt);
    uv_loop_t loop;
    uv_loop_init(&loop);
    assert_int_equal(sc_tls_store_watch(st, &loop, 5), 0);
    /* the store's timer does not keep a loop alive (a role's listeners do): a ref'd one does */
    uv_timer_t keep;
    uv_timer_init(&loop, &keep);
    uv_timer_start(&keep, on_keep, 2, 2);
    for (int i = 0; i < 400 && sc_tls_store_generation(st) == 1; i++) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&keep, on_timer_closed);
    assert_int_equal(sc_tls_store_generation(st), 2);
    struct sc_tls_ctx *now = sc_tls_store_get(st);
    assert_ptr_not_equal(now, first);
    exchange(&w, now, c, "localhost");
    assert_ok(&w);
    assert_string_equal(w.cli.peer_cn, "rsa");
    /* the first context lived on while referenced */
    exchange(&w, first, c, "localhost");
    assert_ok(&w);
    assert_string_equal(w.cli.peer_cn, "server");
    sc_tls_ctx_unref(first);
    sc_tls_ctx_unref(now);
    sc_tls_ctx_unref(c);
    sc_tls_store_free(st);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- interop with the openssl CLI --------------------------------------------------------- */

static void test_interop_s_server(void **state)
{
    (void)state;
    /* a free port: bind, read it back, release it for s_server */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET };
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    socklen_t sl = sizeof(sa);
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    int port = ntohs(sa.sin_port);
    close(fd);
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);
        dup2(devnull, 0);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execlp("openssl", "openssl", "s_server", "-accept", portstr, "-cert", path_of("server.pem"),
               "-key", path_of("server.key"), "-cert_chain", path_of("int.pem"), "-alpn",
               "h2,http/1.1", "-www", "-quiet", (char *)NULL);
        _exit(127);
    }
    /* wait for it to listen */
    for (int i = 0; i < 200; i++) {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        int ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        close(fd);
        if (ok) {
            break;
        }
        usleep(20000);
    }
    struct sc_tls_client_opts co = client_opts();
    co.alpn = strv("http/1.1", NULL);
    struct sc_tls_ctx *c = client_ctx(&co);
    struct world w;
    world_init(&w);
    uv_close((uv_handle_t *)&w.lis, on_lis_closed); /* s_server is the server */
    w.port = port;
    w.cctx = c;
    w.cli_sni = "localhost";
    w.request = "GET / HTTP/1.0\r\n\r\n";
    w.reply = NULL;
    world_run(&w);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    if (w.cli.connected_rc != 0) {
        fprintf(stderr, "s_server: %s (%s)\n", sc_tls_fail_name(w.cli.fail), w.cli.fail_text);
    }
    assert_int_equal(w.cli.connected_rc, 0);
    assert_string_equal(w.cli.alpn, "http/1.1");
    assert_string_equal(w.cli.peer_id, "spiffe://cluster.local/ns/default/sa/server");
    assert_true(w.cli.got_len > 20);
    assert_memory_equal(w.cli.got, "HTTP/1.0 200 ok", 15);
    assert_int_equal(w.cli.read_err, UV_EOF);
    sc_tls_ctx_unref(c);
}

struct cli_run {
    char cmd[1024];
    char out[16384];
    size_t len;
    pthread_t th;
};

static void *cli_main(void *arg)
{
    struct cli_run *r = arg;
    FILE *p = popen(r->cmd, "r");
    if (p) {
        r->len = fread(r->out, 1, sizeof(r->out) - 1, p);
        pclose(p);
    }
    r->out[r->len] = '\0';
    return NULL;
}

/* `openssl s_client` against the server layer: verification, ALPN, then resumption with
 * -sess_out/-sess_in, and close_notify ending its read. */
static void test_interop_s_client(void **state)
{
    (void)state;
    struct sc_tls_server_opts so = server_opts("server.pem", "server.key");
    so.alpn = strv("h2", "http/1.1");
    struct sc_tls_ctx *s = server_ctx(&so);
    for (int round = 0; round < 2; round++) {
        struct world w;
        world_init(&w);
        w.sctx = s;
        w.srv_shutdown = true;
        w.cli.nclosed = 1; /* no client end on the loop */
        struct cli_run r = { 0 };
        snprintf(r.cmd, sizeof(r.cmd),
                 "printf 'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n' | openssl s_client "
                 "-connect 127.0.0.1:%d -servername localhost -CAfile %s -alpn h2,http/1.1 "
                 "-%s %s/s_client.sess -ign_eof 2>&1",
                 w.port, path_of("ca.pem"), round ? "sess_in" : "sess_out", pki);
        pthread_create(&r.th, NULL, cli_main, &r);
        uv_run(&w.loop, UV_RUN_DEFAULT);
        pthread_join(r.th, NULL);
        assert_int_equal(uv_loop_close(&w.loop), 0);
        if (!strstr(r.out, "HTTP/1.1 200 OK")) {
            fprintf(stderr, "s_client said:\n%s\n", r.out);
        }
        assert_non_null(strstr(r.out, "Verify return code: 0 (ok)"));
        assert_non_null(strstr(r.out, "ALPN protocol: h2"));
        assert_non_null(strstr(r.out, round ? "Reused, TLSv1.3" : "New, TLSv1.3"));
        assert_non_null(strstr(r.out, "HTTP/1.1 200 OK"));
        assert_int_equal(w.srv.resumed, round == 1);
        assert_string_equal(w.srv.alpn, "h2");
        assert_string_equal(w.srv.sni, "localhost");
    }
    sc_tls_ctx_unref(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ctx_errors),
        cmocka_unit_test(test_handshake_alpn_sni),
        cmocka_unit_test(test_sni_selection),
        cmocka_unit_test(test_client_cert_modes),
        cmocka_unit_test(test_verify_failures),
        cmocka_unit_test(test_old_versions_and_plaintext),
        cmocka_unit_test(test_close_notify),
        cmocka_unit_test(test_lifecycle),
        cmocka_unit_test(test_big_transfer),
        cmocka_unit_test(test_permissive),
        cmocka_unit_test(test_store_reload_and_resumption),
        cmocka_unit_test(test_store_broken_reload),
        cmocka_unit_test(test_interop_s_server),
        cmocka_unit_test(test_interop_s_client),
    };
    if (getenv("TEST_FILTER")) {
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    }
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

// SPDX-License-Identifier: Apache-2.0
// Unit tests for the TLS layer (net/tls.h): contexts and their errors, handshakes between a server
// and a client layer over TCP on one loop (ALPN, SNI, client certificates, verification failures by
// reason), lifecycles, old versions and plaintext refused, close_notify against a blocking OpenSSL
// peer, bulk transfers with backpressure, PERMISSIVE sniffing. tls_world.c is the harness;
// test_tls_store.c has reloads and interop; test_tls_id.c the pure functions.
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

/* Builds a server context for <cert> with stderr captured; returns what was logged. */
static void logged_while_building(const char *cert, const char *key, char *out, size_t cap)
{
    char path[160];
    snprintf(path, sizeof(path), "%s/log.txt", pki);
    fflush(stderr);
    int saved = dup(2);
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    close(fd);
    struct sc_tls_server_opts o = server_opts(cert, key);
    struct sc_tls_ctx *c = server_ctx(&o);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    sc_tls_ctx_unref(c);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = '\0';
    fclose(f);
}

static void test_expiry_warnings(void **state)
{
    (void)state;
    char log[4096];
    logged_while_building("expiring.pem", "expiring.key", log, sizeof(log));
    assert_non_null(strstr(log, "less than 10% of its lifetime left"));
    assert_non_null(strstr(log, "expiring.pem"));
    logged_while_building("expired.pem", "expired.key", log, sizeof(log));
    assert_non_null(strstr(log, "TLS certificate expired"));
    logged_while_building("server.pem", "server.key", log, sizeof(log));
    assert_string_equal(log, "");
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
    assert_string_equal(w.cli.cipher, "TLS_AES_128_GCM_SHA256"); /* the server's first choice */
    assert_true(w.cli.tls);
    bool tls = true;
    assert_int_equal(sc_xport_query(&w.cli.tcp.base, SC_XQ_TLS, &tls), 0);
    assert_false(tls); /* the layer below knows no TLS */
    assert_true(w.srv.tls && w.cli.tls);
    assert_false(w.cli.resumed);
    assert_string_equal(w.cli.peer_id, "spiffe://cluster.local/ns/default/sa/server");
    assert_string_equal(w.srv.peer_id, ""); /* no client certificate */

    /* a connection's own list replaces the context's (the TCP relay's mesh ALPN) */
    world_init(&w);
    w.sctx = s;
    w.cctx = c;
    w.cli_sni = "server.test";
    w.cli_alpn = SC_STR("\x08http/1.1");
    world_run(&w);
    assert_ok(&w);
    assert_string_equal(w.srv.alpn, "http/1.1");
    assert_string_equal(w.cli.alpn, "http/1.1");
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
        assert_non_null(strstr(w.cli.cipher, "TLS_ECDHE_"));
        assert_non_null(strstr(w.cli.cipher, "_GCM_"));
        sc_tls_ctx_unref(c);
        sc_tls_ctx_unref(s2);
    }
    sc_tls_ctx_unref(s);
}

static void test_sni_selection(void **state)
{
    (void)state;
    struct sc_tls_cert_opts more[3] = {
        { path_of("rsa.pem"), path_of("rsa.key"), { 0 }, NULL, 0 },
        { path_of("ed25519.pem"), path_of("ed25519.key"), { 0 }, NULL, 0 },
        { path_of("wild.pem"), path_of("wild.key"), { 0 }, NULL, 0 },
    };
    struct sc_tls_server_opts so = server_opts("server.pem", "server.key");
    so.certificates = (struct sc_vec){ more, 3 };
    struct sc_tls_ctx *s = server_ctx(&so);
    struct sc_tls_cert_info info[4];
    assert_int_equal(sc_tls_ctx_certs(s, info, 4), 4);
    assert_string_equal(info[0].name, "localhost");
    assert_string_equal(info[3].name, "*.wild.test");
    /* selection by name, as SNI does it */
    assert_int_equal(sc_tls_ctx_select(s, SC_STR("RSA.TEST.")), 1);
    assert_int_equal(sc_tls_ctx_select(s, SC_STR("x.wild.test")), 3);
    assert_int_equal(sc_tls_ctx_select(s, SC_STR("localhost")), 0); /* the first that names it */
    assert_int_equal(sc_tls_ctx_select(s, SC_STR("nobody.test")), -1);
    assert_int_equal(sc_tls_ctx_select(s, SC_STR("wild.test")), -1);
    struct {
        const char *sni, *expect_san, *cn;
        int index;
        bool mis_rsa, mis_wild;
    } cases[] = {
        { "rsa.test", "rsa.test", "rsa", 1, false, true },
        { "ED.TEST", "ed.test", "ed25519", 2, true, true },
        { "a.wild.test", "a.wild.test", "wild", 3, true, false },
        { "a.b.wild.test", "server.test", "server", 0, true, true }, /* one label only */
        { "unknown.test", "server.test", "server", 0, true, true },  /* the default */
        { NULL, "server.test", "server", 0, true, true },
    };
    for (size_t i = 0; i < SC_ARRAY_LEN(cases); i++) {
        struct sc_tls_client_opts co = client_opts();
        co.subject_alt_names = strv(cases[i].expect_san, NULL);
        struct sc_tls_ctx *c = client_ctx(&co);
        struct world w;
        exchange(&w, s, c, cases[i].sni);
        assert_ok(&w);
        assert_string_equal(w.cli.peer_cn, cases[i].cn);
        assert_int_equal(w.srv.cert_index, cases[i].index);
        /* a Host another certificate names is misdirected (421); one nobody names is not */
        assert_int_equal(w.srv.mis_rsa, cases[i].mis_rsa);
        assert_int_equal(w.srv.mis_wild, cases[i].mis_wild);
        assert_false(w.srv.mis_none);
        sc_tls_ctx_unref(c);
    }
    sc_tls_ctx_unref(s);
}

/* server_names replace a certificate's own names (wildcards over any depth, the longest suffix
 * first); unmatched_sni: reject fails names nobody covers, and ClientHellos without SNI. */
static void test_sni_server_names(void **state)
{
    (void)state;
    struct sc_tls_cert_opts more[3] = {
        { path_of("rsa.pem"), path_of("rsa.key"), strv("*.example.test", "api.test"), NULL, 0 },
        { path_of("ed25519.pem"), path_of("ed25519.key"), strv("*.deep.example.test", NULL), NULL,
          0 },
        { path_of("wild.pem"), path_of("wild.key"), { 0 }, NULL, 0 },
    };
    struct sc_tls_server_opts so = server_opts("server.pem", "server.key");
    so.certificates = (struct sc_vec){ more, 3 };
    struct sc_tls_ctx *s = server_ctx(&so);
    assert_int_equal(sc_tls_ctx_select(s, SC_STR("API.test")), 1);
    assert_int_equal(sc_tls_ctx_select(s, SC_STR("a.b.c.example.test")), 1);
    assert_int_equal(sc_tls_ctx_select(s, SC_STR("x.deep.example.test")), 2); /* longer suffix */
    assert_int_equal(sc_tls_ctx_select(s, SC_STR("example.test")), -1);
    assert_int_equal(sc_tls_ctx_select(s, SC_STR("rsa.test")), -1);      /* its own name no more */
    assert_int_equal(sc_tls_ctx_select(s, SC_STR("x.wild.test")), 3);    /* by its DNS names */
    assert_int_equal(sc_tls_ctx_select(s, SC_STR("a.b.wild.test")), -1); /* one label */
    sc_tls_ctx_unref(s);
    so.unmatched_sni = SC_TLS_UNMATCHED_SNI_REJECT;
    s = server_ctx(&so);
    const char *names[] = { "x.example.test", "nobody.test", NULL }; /* NULL: no SNI */
    for (size_t i = 0; i < SC_ARRAY_LEN(names); i++) {
        struct sc_tls_client_opts co = client_opts();
        co.insecure_skip_verify = true;
        struct sc_tls_ctx *c = client_ctx(&co);
        struct world w;
        exchange(&w, s, c, names[i]);
        if (i == 0) {
            assert_ok(&w);
            assert_int_equal(w.srv.cert_index, 1);
        } else {
            assert_true(w.srv.connected_rc < 0);
            assert_true(w.cli.connected_rc < 0);
        }
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
    /* the element the app gets: By is our presented certificate's URI SAN */
    assert_true(strncmp(w.srv.xfcc, "By=spiffe://cluster.local/ns/default/sa/server;Hash=", 52) ==
                0);
    assert_non_null(strstr(w.srv.xfcc, ";Subject=\"CN=client,O=sidecar test\";"
                                       "URI=spiffe://cluster.local/ns/default/sa/client"));
    /* the same from the client's side, about the server */
    assert_true(strncmp(w.cli.xfcc, "By=spiffe://cluster.local/ns/default/sa/client;", 47) == 0);
    assert_non_null(strstr(w.cli.xfcc, "URI=spiffe://cluster.local/ns/default/sa/server"));
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

/* A plaintext server answering a ClientHello with an HTTP error: the client reports not_tls. */
struct plain_srv {
    int fd;
    pthread_t th;
};

static void *plain_main(void *arg)
{
    struct plain_srv *p = arg;
    int c = accept(p->fd, NULL, NULL);
    if (c >= 0) {
        char b[512];
        (void)!read(c, b, sizeof(b));
        const char *r = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
        (void)!write(c, r, strlen(r));
        close(c);
    }
    return NULL;
}

static void test_client_to_plaintext(void **state)
{
    (void)state;
    struct plain_srv p;
    p.fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET };
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(bind(p.fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(p.fd, 4), 0);
    socklen_t sl = sizeof(sa);
    getsockname(p.fd, (struct sockaddr *)&sa, &sl);
    pthread_create(&p.th, NULL, plain_main, &p);
    struct sc_tls_client_opts co = client_opts();
    struct sc_tls_ctx *c = client_ctx(&co);
    struct world w;
    world_init(&w);
    uv_close((uv_handle_t *)&w.lis, on_lis_closed);
    w.port = ntohs(sa.sin_port);
    w.cctx = c;
    w.cli_sni = "localhost";
    world_run(&w);
    pthread_join(p.th, NULL);
    close(p.fd);
    assert_int_equal(w.cli.nconnected, 1);
    assert_true(w.cli.connected_rc < 0);
    assert_int_equal(w.cli.fail, SC_TLS_FAIL_NOT_TLS);
    sc_tls_ctx_unref(c);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ctx_errors),
        cmocka_unit_test(test_expiry_warnings),
        cmocka_unit_test(test_handshake_alpn_sni),
        cmocka_unit_test(test_sni_selection),
        cmocka_unit_test(test_sni_server_names),
        cmocka_unit_test(test_client_cert_modes),
        cmocka_unit_test(test_verify_failures),
        cmocka_unit_test(test_old_versions_and_plaintext),
        cmocka_unit_test(test_client_to_plaintext),
        cmocka_unit_test(test_close_notify),
        cmocka_unit_test(test_lifecycle),
        cmocka_unit_test(test_big_transfer),
        cmocka_unit_test(test_permissive),
    };
    if (getenv("TEST_FILTER")) {
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    }
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

// SPDX-License-Identifier: Apache-2.0
// Unit tests for the reloadable TLS store (reloads through a Kubernetes-style ..data symlink swap,
// resumption across a reload, broken reloads keeping the old context, the watcher on a loop) and
// interop with the openssl CLI (s_server as the peer of the client layer, s_client of the server
// layer with resumption). tls_world.c is the harness.
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
#include <openssl/bio.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <uv.h>

#include "core/alloc.h"
#include "core/config.h"
#include "core/error.h"
#include "net/tls.h"
#include "tls_world.h"

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

/* ---- worker threads taking contexts while the main loop reloads ---------------------------- */

struct worker {
    struct sc_tls_store *srv, *cli;
    int done, resumed;
    pthread_t th;
};

/* A complete handshake between two SSL objects over an in-memory BIO pair. */
static bool mem_handshake(SSL *c, SSL *s)
{
    for (int i = 0; i < 100; i++) {
        int rc = SSL_do_handshake(c);
        int rs = SSL_do_handshake(s);
        if (rc == 1 && rs == 1) {
            /* the client reads the server's ticket */
            char b[16];
            (void)SSL_read(c, b, sizeof(b));
            return true;
        }
    }
    return false;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    SSL_SESSION *last = NULL;
    for (int i = 0; i < 150; i++) {
        struct sc_tls_ctx *sc = sc_tls_store_get(w->srv);
        struct sc_tls_ctx *cc = sc_tls_store_get(w->cli);
        SSL *s = SSL_new(sc_tls_ctx_ssl_ctx(sc));
        SSL *c = SSL_new(sc_tls_ctx_ssl_ctx(cc));
        BIO *bs, *bc;
        BIO_new_bio_pair(&bs, 0, &bc, 0);
        SSL_set_bio(s, bs, bs);
        SSL_set_bio(c, bc, bc);
        SSL_set_accept_state(s);
        SSL_set_connect_state(c);
        SSL_set_tlsext_host_name(c, "localhost");
        /* every other run resumes the session (ticket) of the run before */
        if (last && i % 2 == 1) {
            SSL_set_session(c, last);
        }
        if (mem_handshake(c, s)) {
            w->done++;
            w->resumed += SSL_session_reused(c);
            SSL_SESSION_free(last);
            last = SSL_get1_session(c);
        }
        /* a clean end: OpenSSL drops the session of an SSL freed without one */
        SSL_set_shutdown(c, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
        SSL_free(c);
        SSL_free(s);
        sc_tls_ctx_unref(cc);
        sc_tls_ctx_unref(sc);
    }
    SSL_SESSION_free(last);
    return NULL;
}

static void test_store_threads(void **state)
{
    (void)state;
    char crt[128], key[128];
    snprintf(crt, sizeof(crt), "%s/t.crt", pki);
    snprintf(key, sizeof(key), "%s/t.key", pki);
    cp(path_of("server.pem"), crt);
    cp(path_of("server.key"), key);
    struct sc_tls_server_opts so = { .cert = crt, .key = key, .session_cache_size = 64 };
    struct sc_tls_client_opts co = client_opts();
    co.insecure_skip_verify = true; /* the in-memory peers check nothing but the handshake */
    char *err = NULL;
    struct sc_tls_store *srv = sc_tls_store_new_server(&so, "threads", &err);
    struct sc_tls_store *cli = sc_tls_store_new_client(&co, "threads-up", &err);
    assert_non_null(srv);
    assert_non_null(cli);
    struct worker w[3];
    for (int i = 0; i < 3; i++) {
        w[i] = (struct worker){ .srv = srv, .cli = cli };
        pthread_create(&w[i].th, NULL, worker_main, &w[i]);
    }
    /* meanwhile the owning thread swaps the pair back and forth */
    for (int i = 0; i < 12; i++) {
        bool rsa = i % 2 == 0;
        cp(path_of(rsa ? "rsa.pem" : "server.pem"), crt);
        cp(path_of(rsa ? "rsa.key" : "server.key"), key);
        assert_int_equal(sc_tls_store_check(srv, NULL), 1);
    }
    int done = 0, resumed = 0;
    for (int i = 0; i < 3; i++) {
        pthread_join(w[i].th, NULL);
        done += w[i].done;
        resumed += w[i].resumed;
    }
    assert_int_equal(done, 3 * 150);
    assert_true(resumed > 0); /* tickets from one context resumed under later ones */
    assert_int_equal(sc_tls_store_generation(srv), 13);
    sc_tls_store_free(cli);
    sc_tls_store_free(srv);
}

/* One in-memory handshake of a plain OpenSSL client offering <sess> (may be NULL) with a server
 * SSL of <sc>. Returns whether it resumed; <*out> gets the client's session when not NULL. */
static bool resume_once(struct sc_tls_ctx *sc, SSL_CTX *cctx, SSL_SESSION *sess, SSL_SESSION **out)
{
    SSL *s = SSL_new(sc_tls_ctx_ssl_ctx(sc));
    SSL *c = SSL_new(cctx);
    BIO *bs, *bc;
    BIO_new_bio_pair(&bs, 0, &bc, 0);
    SSL_set_bio(s, bs, bs);
    SSL_set_bio(c, bc, bc);
    SSL_set_accept_state(s);
    SSL_set_connect_state(c);
    if (sess) {
        SSL_set_session(c, sess);
    }
    assert_true(mem_handshake(c, s));
    bool reused = SSL_session_reused(c);
    if (out) {
        *out = SSL_get1_session(c);
    }
    SSL_set_shutdown(c, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_set_shutdown(s, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(c);
    SSL_free(s);
    return reused;
}

/* Ticket keys rotate every period (lazily, when a ticket is made); the previous key still
 * decrypts for one more period, an older one does not. */
static void test_ticket_key_rotation(void **state)
{
    (void)state;
    struct sc_tls_ticket_keys *keys = sc_tls_ticket_keys_new(1000);
    struct sc_tls_server_opts so = server_opts("server.pem", "server.key");
    so.session_timeout_ms = 60000; /* sessions outlive the keys here */
    char *err = NULL;
    struct sc_tls_ctx *sc = sc_tls_ctx_new_server(&so, keys, &err);
    assert_non_null(sc);
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    SSL_SESSION *s1 = NULL;
    assert_false(resume_once(sc, cctx, NULL, &s1)); /* a ticket under key A */
    assert_true(resume_once(sc, cctx, s1, NULL));   /* A is current */
    usleep(1100 * 1000);
    assert_false(resume_once(sc, cctx, NULL, NULL)); /* a new ticket: B current, A previous */
    assert_true(resume_once(sc, cctx, s1, NULL));    /* A still decrypts */
    usleep(1100 * 1000);
    assert_false(resume_once(sc, cctx, NULL, NULL)); /* C current, B previous, A gone */
    assert_false(resume_once(sc, cctx, s1, NULL));
    SSL_SESSION_free(s1);
    SSL_CTX_free(cctx);
    sc_tls_ctx_unref(sc);
    sc_tls_ticket_keys_unref(keys);
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

/* curl (its own TLS stack use: OpenSSL through libcurl) as the client of a server layer that
 * requires a client certificate: with one the server sees its SPIFFE ID, without one curl fails
 * and the server reports no_client_cert. Python's ssl module checks the same SPIFFE ID. */
static void test_interop_curl_python(void **state)
{
    (void)state;
    struct sc_tls_server_opts so = server_opts("server.pem", "server.key");
    so.client_ca = path_of("ca.pem");
    so.alpn = strv("http/1.1", NULL);
    struct sc_tls_ctx *s = server_ctx(&so);
    for (int round = 0; round < 3; round++) {
        struct world w;
        world_init(&w);
        w.sctx = s;
        w.cli.nclosed = 1; /* no client end on the loop */
        struct cli_run r = { 0 };
        if (round == 0) {
            snprintf(r.cmd, sizeof(r.cmd),
                     "curl -sS --max-time 10 --cacert %s --cert %s --key %s "
                     "--resolve localhost:%d:127.0.0.1 https://localhost:%d/ 2>&1; echo rc=$?",
                     path_of("ca.pem"), path_of("client.pem"), path_of("client.key"), w.port,
                     w.port);
        } else if (round == 1) {
            snprintf(r.cmd, sizeof(r.cmd),
                     "curl -sS --max-time 10 --cacert %s "
                     "--resolve localhost:%d:127.0.0.1 https://localhost:%d/ 2>&1; echo rc=$?",
                     path_of("ca.pem"), w.port, w.port);
        } else {
            snprintf(r.cmd, sizeof(r.cmd),
                     "/usr/bin/python3 -c \"import socket, ssl; "
                     "c = ssl.create_default_context(cafile='%s'); "
                     "c.load_cert_chain('%s', '%s'); "
                     "s = c.wrap_socket(socket.create_connection(('127.0.0.1', %d)), "
                     "server_hostname='localhost'); "
                     "s.sendall(b'GET / HTTP/1.1\\\\r\\\\nHost: x\\\\r\\\\n\\\\r\\\\n'); "
                     "print(s.version(), s.recv(4096).decode()); s.close()\" 2>&1; echo rc=$?",
                     path_of("ca.pem"), path_of("client2.pem"), path_of("client2.key"), w.port);
        }
        pthread_create(&r.th, NULL, cli_main, &r);
        uv_run(&w.loop, UV_RUN_DEFAULT);
        pthread_join(r.th, NULL);
        assert_int_equal(uv_loop_close(&w.loop), 0);
        if (round == 1) {
            assert_null(strstr(r.out, "rc=0"));
            assert_int_equal(w.srv.fail, SC_TLS_FAIL_NO_CLIENT_CERT);
            continue;
        }
        if (!strstr(r.out, "rc=0")) {
            fprintf(stderr, "client said:\n%s\n", r.out);
        }
        assert_non_null(strstr(r.out, "rc=0"));
        assert_non_null(strstr(r.out, "ok"));
        assert_string_equal(w.srv.peer_id, round ? "spiffe://cluster.local/ns/prod/sa/api"
                                                 : "spiffe://cluster.local/ns/default/sa/client");
        if (round == 2) {
            assert_non_null(strstr(r.out, "TLSv1.3"));
        }
    }
    sc_tls_ctx_unref(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store_reload_and_resumption),
        cmocka_unit_test(test_store_broken_reload),
        cmocka_unit_test(test_store_threads),
        cmocka_unit_test(test_ticket_key_rotation),
        cmocka_unit_test(test_interop_s_server),
        cmocka_unit_test(test_interop_s_client),
        cmocka_unit_test(test_interop_curl_python),
    };
    if (getenv("TEST_FILTER")) {
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    }
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

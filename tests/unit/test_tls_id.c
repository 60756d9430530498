// SPDX-License-Identifier: Apache-2.0
// Unit tests for the TLS layer's pure functions (net/tls.h): first-bytes sniffing on every split,
// SPIFFE ID parsing, identity extraction and the XFCC element from certificates that
// tests/certs.sh generates, and the option tables through the config loader.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

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
    static char bufs[8][128];
    static int i;
    char *b = bufs[i++ % 8];
    snprintf(b, 128, "%s/%s", pki, name);
    return b;
}

static X509 *load_x509(const char *name)
{
    FILE *f = fopen(path_of(name), "r");
    assert_non_null(f);
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(x);
    return x;
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(pki, sizeof(pki), "/tmp/sidecar-tls-id-test.XXXXXX");
    if (!mkdtemp(pki)) {
        return -1;
    }
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "sh %s %s", SC_CERTS_SH, pki);
    return system(cmd) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", pki);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- sniffing ----------------------------------------------------------------------------- */

/* The first flight of a real client, from OpenSSL through a memory BIO. */
static size_t client_hello(unsigned char *out, size_t cap)
{
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    SSL *s = SSL_new(c);
    BIO *r = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    SSL_set_bio(s, r, wb);
    SSL_set_connect_state(s);
    SSL_set_tlsext_host_name(s, "example.test");
    SSL_do_handshake(s);
    int n = BIO_read(wb, out, (int)cap);
    SSL_free(s);
    SSL_CTX_free(c);
    assert_true(n > 6);
    return (size_t)n;
}

static void test_sniff(void **state)
{
    (void)state;
    unsigned char hello[4096];
    size_t hn = client_hello(hello, sizeof(hello));
    struct {
        const char *p;
        size_t n;
        enum sc_tls_sniff want;
    } cases[] = {
        { (const char *)hello, hn, SC_TLS_SNIFF_TLS },
        { "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 27, SC_TLS_SNIFF_PLAIN },
        { "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24, SC_TLS_SNIFF_PLAIN },
        { "\x16\x03\x01\x00\x00\x01", 6, SC_TLS_SNIFF_PLAIN },   /* record too short */
        { "\x16\x03\x01\x40\x01\x01", 6, SC_TLS_SNIFF_PLAIN },   /* record too long */
        { "\x16\x03\x05\x00\x10\x01", 6, SC_TLS_SNIFF_PLAIN },   /* unknown minor */
        { "\x16\x03\x03\x00\x10\x02", 6, SC_TLS_SNIFF_PLAIN },   /* ServerHello */
        { "\x16\x02\x00\x00\x10\x01", 6, SC_TLS_SNIFF_PLAIN },   /* not major 3 */
        { "\x80\x2e\x01\x03\x01\x00", 6, SC_TLS_SNIFF_PLAIN },   /* SSLv2-style hello */
        { "\x16\x03\x00\x00\x04\x01\x00", 7, SC_TLS_SNIFF_TLS }, /* minimal, SSL 3.0 record */
    };
    for (size_t c = 0; c < SC_ARRAY_LEN(cases); c++) {
        enum sc_tls_sniff decided = SC_TLS_SNIFF_MORE;
        size_t at = 0;
        for (size_t n = 0; n <= cases[c].n; n++) {
            /* each prefix flush against the end of its own block */
            char *p = sc_malloc(n ? n : 1);
            memcpy(p, cases[c].p, n);
            enum sc_tls_sniff r = sc_tls_sniff(p, n);
            sc_free(p);
            if (decided == SC_TLS_SNIFF_MORE) {
                decided = r;
                at = n;
            } else {
                assert_int_equal(r, decided);
            }
        }
        assert_int_equal(decided, cases[c].want);
        assert_true(at <= SC_TLS_SNIFF_MAX);
    }
    assert_int_equal(sc_tls_sniff("", 0), SC_TLS_SNIFF_MORE);
    assert_int_equal(sc_tls_sniff("\x16\x03", 2), SC_TLS_SNIFF_MORE);
    assert_int_equal(sc_tls_sniff("G", 1), SC_TLS_SNIFF_PLAIN);
}

/* ---- identity ----------------------------------------------------------------------------- */

static void test_spiffe_parse(void **state)
{
    (void)state;
    struct sc_spiffe_id id;
    assert_int_equal(sc_tls_spiffe_parse(SC_STR("spiffe://cluster.local/ns/default/sa/web"), &id),
                     0);
    assert_true(sc_str_eq(id.trust_domain, SC_STR("cluster.local")));
    assert_true(sc_str_eq(id.path, SC_STR("/ns/default/sa/web")));
    assert_true(sc_str_eq(id.ns, SC_STR("default")));
    assert_true(sc_str_eq(id.sa, SC_STR("web")));
    assert_true(sc_str_eq(id.principal, SC_STR("cluster.local/ns/default/sa/web")));

    assert_int_equal(sc_tls_spiffe_parse(SC_STR("spiffe://example.org"), &id), 0);
    assert_int_equal(id.path.len, 0);
    assert_int_equal(id.ns.len, 0);
    assert_int_equal(sc_tls_spiffe_parse(SC_STR("spiffe://example.org/workload/a-b_c.d"), &id), 0);
    assert_int_equal(id.ns.len, 0);
    assert_int_equal(sc_tls_spiffe_parse(SC_STR("spiffe://td/ns/a/sa/b/extra"), &id), 0);
    assert_int_equal(id.ns.len, 0); /* not the Istio shape */

    const char *bad[] = {
        "",
        "spiffe://",
        "spiffe:///ns/a",
        "SPIFFE://td/x",
        "https://td/x",
        "spiffe://Example.org/x",
        "spiffe://td:8080/x",
        "spiffe://user@td/x",
        "spiffe://td/x/",
        "spiffe://td//x",
        "spiffe://td/./x",
        "spiffe://td/../x",
        "spiffe://td/x?q=1",
        "spiffe://td/x#f",
        "spiffe://td/x%20y",
        "spiffe://td/a b",
        "spiffe://td/",
    };
    for (size_t i = 0; i < SC_ARRAY_LEN(bad); i++) {
        assert_int_equal(sc_tls_spiffe_parse(sc_str_c(bad[i]), &id), -EINVAL);
    }
    char big[SC_SPIFFE_ID_MAX + 16];
    memset(big, 'a', sizeof(big));
    memcpy(big, "spiffe://td/", 12);
    assert_int_equal(sc_tls_spiffe_parse(sc_str_n(big, SC_SPIFFE_ID_MAX), &id), 0);
    assert_int_equal(sc_tls_spiffe_parse(sc_str_n(big, SC_SPIFFE_ID_MAX + 1), &id), -EINVAL);
}

static void test_cert_identity(void **state)
{
    (void)state;
    char id[SC_SPIFFE_ID_MAX + 1];
    X509 *x = load_x509("client.pem");
    assert_int_equal(sc_tls_spiffe_id(x, id, sizeof(id)), 43);
    assert_string_equal(id, "spiffe://cluster.local/ns/default/sa/client");
    assert_int_equal(sc_tls_spiffe_id(x, id, 43), SC_ETOOBIG);
    X509_free(x);
    x = load_x509("two_uris.pem");
    assert_int_equal(sc_tls_spiffe_id(x, id, sizeof(id)), -ENOENT);
    X509_free(x);
    x = load_x509("rsa.pem");
    assert_int_equal(sc_tls_spiffe_id(x, id, sizeof(id)), -ENOENT);
    X509_free(x);
}

static void test_xfcc(void **state)
{
    (void)state;
    /* the hash as the CLI computes it */
    char cmd[1024], hash[80] = "";
    snprintf(cmd, sizeof(cmd), "openssl x509 -in %s -outform DER | openssl dgst -sha256 -r",
             path_of("server.pem"));
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    assert_non_null(fgets(hash, sizeof(hash), p));
    pclose(p);
    hash[64] = '\0';

    X509 *x = load_x509("server.pem");
    char out[1024], want[1024];
    int n = sc_tls_xfcc(x, SC_STR("spiffe://cluster.local/ns/default/sa/client"), out, sizeof(out));
    snprintf(want, sizeof(want),
             "By=spiffe://cluster.local/ns/default/sa/client;Hash=%s;"
             "Subject=\"CN=server,O=sidecar test\";"
             "URI=spiffe://cluster.local/ns/default/sa/server;DNS=localhost;DNS=server.test",
             hash);
    assert_string_equal(out, want);
    assert_int_equal(n, (int)strlen(want));
    /* no By; a value with separators and quotes is quoted and escaped */
    n = sc_tls_xfcc(x, SC_STR_NULL, out, sizeof(out));
    assert_true(n > 0 && strncmp(out, "Hash=", 5) == 0);
    n = sc_tls_xfcc(x, SC_STR("a;b=\"c\"\\"), out, sizeof(out));
    const char *quoted = "By=\"a;b=\\\"c\\\"\\\\\";Hash=";
    assert_true(strncmp(out, quoted, strlen(quoted)) == 0);
    /* a value that is not printable ASCII never reaches the header */
    n = sc_tls_xfcc(x, SC_STR("spiffe://a/b\r\nX-Evil: 1"), out, sizeof(out));
    assert_true(n > 0 && strncmp(out, "Hash=", 5) == 0);
    assert_null(strchr(out, '\r'));
    /* capped */
    assert_int_equal(sc_tls_xfcc(x, SC_STR_NULL, out, 40), SC_ETOOBIG);
    assert_string_equal(out, "");
    X509_free(x);
}

/* The option tables load through the config loader, with defaults and refusals. */
struct wrap {
    struct sc_tls_server_opts tls;
};

static const struct sc_opt wrap_table[] = {
    { .name = "tls",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct wrap, tls),
      .sub = sc_tls_server_opt_table,
      .help = "tls" },
    { 0 },
};

static void test_option_table(void **state)
{
    (void)state;
    struct wrap w = { 0 };
    char *err = NULL;
    sc_config_defaults(wrap_table, &w);
    const char *yaml = "tls:\n  cert: a.pem\n  key: a.key\n  alpn: [h2, http/1.1]\n"
                       "  certificates:\n    - {cert: b.pem, key: b.key}\n";
    assert_int_equal(sc_config_load_string(wrap_table, &w, "t.yaml", yaml, strlen(yaml), &err), 0);
    assert_string_equal(w.tls.cert, "a.pem");
    assert_int_equal(w.tls.certificates.n, 1);
    assert_int_equal(w.tls.alpn.n, 2);
    assert_int_equal(w.tls.min_version, SC_TLS_VERSION_1_2);
    assert_int_equal(w.tls.max_version, SC_TLS_VERSION_1_3);
    assert_int_equal(w.tls.client_cert, SC_TLS_CLIENT_CERT_AUTO);
    assert_int_equal(w.tls.session_timeout_ms, 3600 * 1000);
    assert_int_equal(w.tls.watch_interval_ms, 1000);
    assert_int_equal(w.tls.session_cache_size, 1024);
    sc_config_free(wrap_table, &w);

    memset(&w, 0, sizeof(w));
    sc_config_defaults(wrap_table, &w);
    yaml = "tls:\n  min_version: TLSv1.0\n";
    assert_int_equal(sc_config_load_string(wrap_table, &w, "t.yaml", yaml, strlen(yaml), &err),
                     SC_ECONFIG);
    assert_non_null(strstr(err, "t.yaml:2:"));
    assert_non_null(strstr(err, "TLSv1.0 is refused"));
    sc_free(err);
    sc_config_free(wrap_table, &w);
}

/* docs/tls.md carries the tables the option tables generate (as `make docs` does for roles). */
static void check_doc_table(const char *doc, const char *name, const struct sc_opt *table)
{
    char begin[64], end[64];
    snprintf(begin, sizeof(begin), "<!-- %s:begin -->\n", name);
    snprintf(end, sizeof(end), "<!-- %s:end -->", name);
    const char *a = strstr(doc, begin);
    const char *b = a ? strstr(a, end) : NULL;
    assert_non_null(a);
    assert_non_null(b);
    a += strlen(begin);
    char *gen = NULL;
    size_t genlen = 0;
    FILE *m = open_memstream(&gen, &genlen);
    sc_config_doc(table, m);
    fclose(m);
    if (genlen != (size_t)(b - a) || memcmp(gen, a, genlen) != 0) {
        fprintf(stderr, "docs/tls.md: the %s table is stale; it should read:\n%s", name, gen);
        fail();
    }
    free(gen);
}

static void test_option_docs(void **state)
{
    (void)state;
    char path[512];
    const char *sh = SC_CERTS_SH;
    const char *cut = strstr(sh, "tests/certs.sh");
    assert_non_null(cut);
    snprintf(path, sizeof(path), "%.*sdocs/tls.md", (int)(cut - sh), sh);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char doc[65536];
    size_t n = fread(doc, 1, sizeof(doc) - 1, f);
    fclose(f);
    doc[n] = '\0';
    check_doc_table(doc, "tls-server-options", sc_tls_server_opt_table);
    check_doc_table(doc, "tls-client-options", sc_tls_client_opt_table);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sniff),         cmocka_unit_test(test_spiffe_parse),
        cmocka_unit_test(test_cert_identity), cmocka_unit_test(test_xfcc),
        cmocka_unit_test(test_option_table),  cmocka_unit_test(test_option_docs),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

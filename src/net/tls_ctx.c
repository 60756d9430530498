// SPDX-License-Identifier: Apache-2.0
// TLS contexts (see tls.h): option tables, the building of server and client SSL_CTXs with secure
// defaults, SNI selection among certificates, ALPN, ticket keys that rotate outside any context
// and the client session table. A context is immutable once built; every file it reads is read
// once, from one open descriptor, so the content it was built from is exactly the content whose
// hash the store records.
#include "net/tls_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "net/ossl.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"

#define FILE_MAX (1024 * 1024) /* PEM bundles larger than this are refused */
#define DEFAULT_SESSION_TIMEOUT_MS (3600 * 1000ULL)
#define TLS12_CIPHERS                                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"     \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define TLS13_SUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#define GROUPS "X25519:P-256"

/* ---- option tables ------------------------------------------------------------------------ */

const char *const sc_tls_version_names[] = { "auto",    "TLSv1.0", "TLSv1.1",
                                             "TLSv1.2", "TLSv1.3", NULL };
const char *const sc_tls_client_cert_names[] = { "auto", "none", "optional", "require", NULL };
const char *const sc_tls_unmatched_sni_names[] = { "default", "reject", NULL };
const char *const sc_tls_record_layer_names[] = { "native", "openssl", NULL };

static int check_version(void *field, char **err)
{
    int v = *(int *)field;
    if (v == SC_TLS_VERSION_1_0 || v == SC_TLS_VERSION_1_1) {
        *err = sc_asprintf("%s is refused: the minimum is TLSv1.2", sc_tls_version_names[v]);
        return SC_ECONFIG;
    }
    return 0;
}

static const struct sc_opt cert_opt_table[] = {
    { .name = "cert",
      .type = SC_OPT_STR,
      .offset = offsetof(struct sc_tls_cert_opts, cert),
      .help = "certificate file (PEM; the chain may follow the leaf)",
      .flags = SC_OPT_REQUIRED },
    { .name = "key",
      .type = SC_OPT_STR,
      .offset = offsetof(struct sc_tls_cert_opts, key),
      .help = "private key file (PEM: ECDSA, RSA or Ed25519)",
      .flags = SC_OPT_REQUIRED },
    { .name = "server_names",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct sc_tls_cert_opts, server_names),
      .help = "SNI names this certificate is served for instead of its DNS names: exact, or "
              "*.suffix covering any number of labels (exact first, then the longest suffix)",
      .max = 64 },
    { .name = "client_ca",
      .type = SC_OPT_STR,
      .offset = offsetof(struct sc_tls_cert_opts, client_ca),
      .help = "CA bundle verifying the clients this certificate is chosen for (by SNI); with "
              "client_cert, their verification is this certificate's own instead of the "
              "listener's (unset here: the listener's client_ca)" },
    { .name = "client_cert",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct sc_tls_cert_opts, client_cert),
      .def = "auto",
      .help = "none, optional or require for the clients this certificate is chosen for; auto: "
              "require with a client_ca here, else the listener's client_cert",
      .enums = sc_tls_client_cert_names },
    { 0 },
};

const struct sc_opt sc_tls_server_opt_table[] = {
    { .name = "cert",
      .type = SC_OPT_STR,
      .offset = offsetof(struct sc_tls_server_opts, cert),
      .help = "default certificate file (PEM; the chain may follow the leaf)" },
    { .name = "key",
      .type = SC_OPT_STR,
      .offset = offsetof(struct sc_tls_server_opts, key),
      .help = "private key of cert (PEM: ECDSA, RSA or Ed25519)" },
    { .name = "certificates",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct sc_tls_server_opts, certificates),
      .help = "more certificates, chosen by the SNI the client sends (their DNS names, exact or "
              "*. wildcard)",
      .sub = cert_opt_table,
      .sub_size = sizeof(struct sc_tls_cert_opts),
      .max = 64 },
    { .name = "unmatched_sni",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct sc_tls_server_opts, unmatched_sni),
      .def = "default",
      .enums = sc_tls_unmatched_sni_names,
      .help = "a ClientHello whose SNI no certificate covers, or without SNI: default (serve the "
              "default certificate) or reject (fail the handshake with unrecognized_name)" },
    { .name = "client_ca",
      .type = SC_OPT_STR,
      .offset = offsetof(struct sc_tls_server_opts, client_ca),
      .help = "CA bundle (PEM) that client certificates must chain to" },
    { .name = "client_cert",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct sc_tls_server_opts, client_cert),
      .def = "auto",
      .enums = sc_tls_client_cert_names,
      .help = "client certificates: none, optional, require (auto: require with client_ca)" },
    { .name = "alpn",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct sc_tls_server_opts, alpn),
      .help = "ALPN protocols in order of preference (no overlap: no ALPN)",
      .max = 16 },
    { .name = "min_version",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct sc_tls_server_opts, min_version),
      .def = "TLSv1.2",
      .enums = sc_tls_version_names,
      .help = "lowest protocol version (below TLSv1.2 is refused)",
      .check = check_version },
    { .name = "max_version",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct sc_tls_server_opts, max_version),
      .def = "TLSv1.3",
      .enums = sc_tls_version_names,
      .help = "highest protocol version",
      .check = check_version },
    { .name = "session_cache_size",
      .type = SC_OPT_INT,
      .offset = offsetof(struct sc_tls_server_opts, session_cache_size),
      .def = "1024",
      .help = "sessions kept for clients without tickets (0: none)",
      .min = 0,
      .max = 1000000 },
    { .name = "session_timeout",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct sc_tls_server_opts, session_timeout_ms),
      .def = "1h",
      .help = "session lifetime; ticket keys rotate at this period and decrypt for two",
      .min = 1000,
      .max = 7 * 24 * 3600 * 1000LL },
    { .name = "watch_interval",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct sc_tls_server_opts, watch_interval_ms),
      .def = "1s",
      .help = "how often certificate, key and CA files are checked for changes (0: never)" },
    { .name = "record_layer",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct sc_tls_server_opts, record_layer),
      .def = "native",
      .enums = sc_tls_record_layer_names,
      .help = "who carries TLS 1.3 records after the handshake: native (the proxy, and the "
              "connection's OpenSSL state is freed: less memory and CPU per connection) or "
              "openssl (TLS 1.2 always uses openssl)" },
    { 0 },
};

const struct sc_opt sc_tls_client_opt_table[] = {
    { .name = "ca",
      .type = SC_OPT_STR,
      .offset = offsetof(struct sc_tls_client_opts, ca),
      .help = "CA bundle (PEM) the server's certificate must chain to (unset: the system store)" },
    { .name = "cert",
      .type = SC_OPT_STR,
      .offset = offsetof(struct sc_tls_client_opts, cert),
      .help = "client certificate file for mutual TLS (PEM)" },
    { .name = "key",
      .type = SC_OPT_STR,
      .offset = offsetof(struct sc_tls_client_opts, key),
      .help = "private key of cert (PEM)" },
    { .name = "sni",
      .type = SC_OPT_STR,
      .offset = offsetof(struct sc_tls_client_opts, sni),
      .help = "server name to send (unset: the endpoint's host name)" },
    { .name = "subject_alt_names",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct sc_tls_client_opts, subject_alt_names),
      .help = "DNS names or spiffe:// IDs the server must present one of (empty: the SNI name)",
      .max = 64 },
    { .name = "alpn",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct sc_tls_client_opts, alpn),
      .help = "ALPN protocols to offer, in order",
      .max = 16 },
    { .name = "min_version",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct sc_tls_client_opts, min_version),
      .def = "TLSv1.2",
      .enums = sc_tls_version_names,
      .help = "lowest protocol version (below TLSv1.2 is refused)",
      .check = check_version },
    { .name = "max_version",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct sc_tls_client_opts, max_version),
      .def = "TLSv1.3",
      .enums = sc_tls_version_names,
      .help = "highest protocol version",
      .check = check_version },
    { .name = "insecure_skip_verify",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct sc_tls_client_opts, insecure_skip_verify),
      .def = "false",
      .help = "accept any server certificate (never in production)" },
    { .name = "session_reuse",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct sc_tls_client_opts, session_reuse),
      .def = "true",
      .help = "resume the last session per destination" },
    { .name = "watch_interval",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct sc_tls_client_opts, watch_interval_ms),
      .def = "1s",
      .help = "how often certificate, key and CA files are checked for changes (0: never)" },
    { .name = "record_layer",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct sc_tls_client_opts, record_layer),
      .def = "native",
      .enums = sc_tls_record_layer_names,
      .help = "who carries TLS 1.3 records once the server's session tickets are in: native (the "
              "proxy; the connection's OpenSSL state is freed) or openssl (TLS 1.2 always uses "
              "openssl)" },
    { 0 },
};

/* ---- files -------------------------------------------------------------------------------- */

void sc__tls_files_free(struct sc__tls_files *f)
{
    for (size_t i = 0; f && i < f->n; i++) {
        sc_free(f->v[i].path);
    }
    if (f) {
        sc_free(f->v);
        f->v = NULL;
        f->n = 0;
    }
}

/* Reads <path> whole (at most FILE_MAX bytes) into a new memory BIO, recording it in <files>.
 * Returns the BIO or NULL with a new message in <*err>. */
static BIO *read_file(const char *path, const char *what, struct sc__tls_files *files, char **err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *err = sc_asprintf("%s %s: %s", what, path, strerror(errno));
        return NULL;
    }
    struct stat st;
    char *buf = NULL;
    BIO *bio = NULL;
    if (fstat(fd, &st) < 0) {
        *err = sc_asprintf("%s %s: %s", what, path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > FILE_MAX) {
        *err = sc_asprintf("%s %s: %s", what, path,
                           S_ISREG(st.st_mode) ? "larger than 1 MiB" : "not a regular file");
        goto out;
    }
    buf = sc_malloc((size_t)st.st_size + 1);
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, buf + len, (size_t)st.st_size + 1 - len);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            *err = sc_asprintf("%s %s: %s", what, path, strerror(errno));
            goto out;
        }
        if (r == 0 || (len += (size_t)r) > (size_t)st.st_size) {
            break;
        }
    }
    if (len > (size_t)st.st_size) {
        *err = sc_asprintf("%s %s: changed while read", what, path);
        goto out;
    }
    if (files) {
        files->v = sc_reallocarray(files->v, files->n + 1, sizeof(*files->v));
        struct sc__tls_file *f = &files->v[files->n++];
        memset(f, 0, sizeof(*f));
        f->path = sc_strdup(path);
        f->dev = st.st_dev;
        f->ino = st.st_ino;
        f->size = st.st_size;
        f->mtime = st.st_mtim;
        EVP_Digest(buf, len, f->sha256, NULL, EVP_sha256(), NULL);
    }
    bio = BIO_new(BIO_s_mem());
    if (!bio || BIO_write(bio, buf, (int)len) != (int)len) {
        BIO_free(bio);
        bio = NULL;
        *err = sc_asprintf("%s %s: out of memory", what, path);
    }
out:
    sc_free(buf);
    close(fd);
    return bio;
}

const char *sc__tls_err_reason(unsigned long e)
{
    sc_lazylib_ssl_err_strings();
    return ERR_reason_error_string(e);
}

/* The reason of the last OpenSSL error; its code when OpenSSL has no text for it (`openssl errstr`
 * names it); <def> when there is none. Valid until this thread's next call. Clears the queue. */
static const char *ossl_reason(const char *def)
{
    static __thread char code[48];
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? sc__tls_err_reason(e) : NULL;
    ERR_clear_error();
    if (e && !r) {
        snprintf(code, sizeof(code), "OpenSSL error %lX", e);
        r = code;
    }
    return r ? r : def;
}

/* Loads the certificates of <path>: the leaf into <*leaf>, the rest into <*chain>. */
static int load_certs(const char *path, struct sc__tls_files *files, X509 **leaf,
                      STACK_OF(X509) * *chain, char **err)
{
    BIO *bio = read_file(path, "certificate", files, err);
    if (!bio) {
        return SC_ECONFIG;
    }
    *leaf = PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL);
    if (!*leaf) {
        *err = sc_asprintf("certificate %s: bad PEM (%s)", path, ossl_reason("no certificate"));
        BIO_free(bio);
        return SC_ECONFIG;
    }
    *chain = sk_X509_new_null();
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        sk_X509_push(*chain, x);
    }
    unsigned long e = ERR_peek_last_error();
    if (e && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)) {
        *err = sc_asprintf("certificate %s: bad PEM in the chain (%s)", path, ossl_reason("?"));
        BIO_free(bio);
        return SC_ECONFIG;
    }
    ERR_clear_error();
    BIO_free(bio);
    return 0;
}

static EVP_PKEY *load_key(const char *path, struct sc__tls_files *files, char **err)
{
    BIO *bio = read_file(path, "key", files, err);
    if (!bio) {
        return NULL;
    }
    EVP_PKEY *k = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    BIO_free(bio);
    if (!k) {
        *err =
            sc_asprintf("key %s: bad PEM or not a private key (%s)", path, ossl_reason("no key"));
    }
    return k;
}

/* Loads a CA bundle into a new store (and, for servers, the names sent in CertificateRequest). */
static X509_STORE *load_ca(const char *path, struct sc__tls_files *files,
                           STACK_OF(X509_NAME) * *names, char **err)
{
    BIO *bio = read_file(path, "CA", files, err);
    if (!bio) {
        return NULL;
    }
    X509_STORE *st = X509_STORE_new();
    if (names) {
        *names = sk_X509_NAME_new_null();
    }
    int n = 0;
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        X509_STORE_add_cert(st, x);
        if (names) {
            sk_X509_NAME_push(*names, X509_NAME_dup(X509_get_subject_name(x)));
        }
        X509_free(x);
        n++;
    }
    ERR_clear_error();
    BIO_free(bio);
    if (n == 0) {
        *err = sc_asprintf("CA %s: bad PEM (no certificate found)", path);
        X509_STORE_free(st);
        if (names) {
            sk_X509_NAME_pop_free(*names, X509_NAME_free);
            *names = NULL;
        }
        return NULL;
    }
    return st;
}

/* ---- certificate information -------------------------------------------------------------- */

static int64_t asn1_time_secs(const ASN1_TIME *t)
{
    struct tm tm;
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1) {
        return 0;
    }
    return (int64_t)timegm(&tm);
}

static void copy_trunc(char *dst, size_t cap, const char *src, size_t n)
{
    if (n >= cap) {
        n = cap - 1;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Fills <c>'s info and DNS names from <x>. */
static void describe(struct sc__tls_cert *c, X509 *x, const char *path)
{
    struct sc_tls_cert_info *in = &c->info;
    copy_trunc(in->path, sizeof(in->path), path, strlen(path));
    in->not_before = asn1_time_secs(X509_get0_notBefore(x));
    in->not_after = asn1_time_secs(X509_get0_notAfter(x));
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    char *hex = bn ? BN_bn2hex(bn) : NULL;
    copy_trunc(in->serial, sizeof(in->serial), hex ? hex : "", hex ? strlen(hex) : 0);
    OPENSSL_free(hex);
    BN_free(bn);
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    const char *uri = NULL;
    int urilen = 0;
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type == GEN_DNS) {
            const char *p = (const char *)ASN1_STRING_get0_data(g->d.dNSName);
            int n = ASN1_STRING_length(g->d.dNSName);
            if (n <= 0 || n > 253 || memchr(p, '\0', (size_t)n)) {
                continue;
            }
            char *name = sc_strndup(p, (size_t)n);
            for (char *q = name; *q; q++) {
                if (*q >= 'A' && *q <= 'Z') {
                    *q = (char)(*q - 'A' + 'a');
                }
            }
            c->names = sc_reallocarray(c->names, c->nnames + 1, sizeof(char *));
            c->names[c->nnames++] = name;
        } else if (g->type == GEN_URI && !uri) {
            uri = (const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
            urilen = ASN1_STRING_length(g->d.uniformResourceIdentifier);
        }
    }
    if (c->nnames > 0) {
        copy_trunc(in->name, sizeof(in->name), c->names[0], strlen(c->names[0]));
    } else if (uri && urilen > 0) {
        copy_trunc(in->name, sizeof(in->name), uri, (size_t)urilen);
    } else {
        char cn[256] = "";
        X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));
        copy_trunc(in->name, sizeof(in->name), cn, strlen(cn));
    }
    GENERAL_NAMES_free(gens);
}

void sc__tls_ctx_warn_expiry(const struct sc_tls_ctx *c, const char *name)
{
    int64_t now = (int64_t)time(NULL);
    for (size_t i = 0; i < c->ncerts; i++) {
        const struct sc_tls_cert_info *in = &c->certs[i].info;
        int64_t life = in->not_after - in->not_before;
        if (now >= in->not_after) {
            sc_warn("TLS certificate expired", SC_LS("tls", name), SC_LS("cert", in->path),
                    SC_LS("serial", in->serial), SC_LI("not_after", in->not_after));
        } else if (now < in->not_before) {
            sc_warn("TLS certificate not yet valid", SC_LS("tls", name), SC_LS("cert", in->path),
                    SC_LS("serial", in->serial), SC_LI("not_before", in->not_before));
        } else if (life > 0 && (in->not_after - now) * 10 < life) {
            sc_warn("TLS certificate has less than 10% of its lifetime left", SC_LS("tls", name),
                    SC_LS("cert", in->path), SC_LS("serial", in->serial),
                    SC_LI("seconds_left", in->not_after - now));
        }
    }
}

/* ---- ticket keys -------------------------------------------------------------------------- */

struct tkey {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
};

struct sc_tls_ticket_keys {
    atomic_uint refs;
    pthread_mutex_t mu;
    uint64_t rotate_ms;
    uint64_t born_ms; /* when cur was made */
    struct tkey cur, prev;
    bool has_prev;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void tkey_make(struct tkey *k)
{
    if (RAND_bytes((unsigned char *)k, sizeof(*k)) != 1) {
        sc_error("TLS: no randomness for ticket keys");
        abort();
    }
}

struct sc_tls_ticket_keys *sc_tls_ticket_keys_new(uint64_t rotate_ms)
{
    struct sc_tls_ticket_keys *k = SC_NEW(struct sc_tls_ticket_keys);
    atomic_init(&k->refs, 1);
    pthread_mutex_init(&k->mu, NULL);
    k->rotate_ms = rotate_ms ? rotate_ms : DEFAULT_SESSION_TIMEOUT_MS;
    k->born_ms = mono_ms();
    tkey_make(&k->cur);
    return k;
}

void sc_tls_ticket_keys_unref(struct sc_tls_ticket_keys *k)
{
    if (k && atomic_fetch_sub(&k->refs, 1) == 1) {
        pthread_mutex_destroy(&k->mu);
        OPENSSL_cleanse(k, sizeof(*k));
        sc_free(k);
    }
}

static int set_hmac(EVP_MAC_CTX *h, const unsigned char *key)
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)key, 32),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    return EVP_MAC_CTX_set_params(h, params);
}

/* OpenSSL's ticket key callback: encrypt with the current key (rotating it when due), decrypt
 * with the current or the previous one. Decryption answers 2 (renew) either way, so a resumed
 * connection gets a fresh ticket: TLS 1.3 clients use a ticket once (RFC 8446 C.4), and OpenSSL
 * sends none on resumption otherwise. */
static int on_ticket_key(SSL *ssl, unsigned char name[16], unsigned char iv[16],
                         EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    struct sc_tls_ctx *c = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), sc__tls_ctx_index());
    if (!c || !c->keys) {
        return -1;
    }
    struct sc_tls_ticket_keys *k = c->keys;
    struct tkey key;
    int rc = 1;
    pthread_mutex_lock(&k->mu);
    if (enc) {
        uint64_t now = mono_ms();
        if (now - k->born_ms >= k->rotate_ms) {
            /* the current key becomes the previous one, unless it is too old to decrypt for a
             * second period (an idle server) */
            k->prev = k->cur;
            k->has_prev = now - k->born_ms < 2 * k->rotate_ms;
            tkey_make(&k->cur);
            k->born_ms = now;
        }
        key = k->cur;
    } else if (memcmp(name, k->cur.name, 16) == 0) {
        key = k->cur;
        rc = 2;
    } else if (k->has_prev && memcmp(name, k->prev.name, 16) == 0) {
        key = k->prev;
        rc = 2;
    } else {
        rc = 0;
    }
    pthread_mutex_unlock(&k->mu);
    if (rc == 0) {
        return 0;
    }
    if (enc) {
        memcpy(name, key.name, 16);
        if (RAND_bytes(iv, 16) != 1 ||
            EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, key.aes, iv) != 1) {
            rc = -1;
        }
    } else if (EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, key.aes, iv) != 1) {
        rc = -1;
    }
    if (rc > 0 && set_hmac(hctx, key.hmac) != 1) {
        rc = -1;
    }
    OPENSSL_cleanse(&key, sizeof(key));
    return rc;
}

/* ---- client sessions ---------------------------------------------------------------------- */

struct sess_entry {
    char *key;
    SSL_SESSION *sess;
    uint64_t used; /* the table's clock at the last put */
};

struct sc_tls_sessions {
    atomic_uint refs;
    pthread_mutex_t mu;
    struct sess_entry *v;
    size_t n, cap;
    uint64_t clock;
};

struct sc_tls_sessions *sc_tls_sessions_new(size_t cap)
{
    struct sc_tls_sessions *s = SC_NEW(struct sc_tls_sessions);
    atomic_init(&s->refs, 1);
    pthread_mutex_init(&s->mu, NULL);
    s->cap = cap ? cap : 1024;
    s->v = sc_calloc(s->cap, sizeof(*s->v));
    return s;
}

void sc_tls_sessions_flush(struct sc_tls_sessions *s)
{
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->n; i++) {
        sc_free(s->v[i].key);
        SSL_SESSION_free(s->v[i].sess);
    }
    s->n = 0;
    pthread_mutex_unlock(&s->mu);
}

size_t sc_tls_sessions_count(struct sc_tls_sessions *s)
{
    pthread_mutex_lock(&s->mu);
    size_t n = s->n;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void sc_tls_sessions_unref(struct sc_tls_sessions *s)
{
    if (s && atomic_fetch_sub(&s->refs, 1) == 1) {
        sc_tls_sessions_flush(s);
        pthread_mutex_destroy(&s->mu);
        sc_free(s->v);
        sc_free(s);
    }
}

/* A linear scan: the table is small (destinations of one cluster's TLS settings) and a put or a
 * get happens once per full handshake, not per request. */
static struct sess_entry *sess_find(struct sc_tls_sessions *s, const char *key)
{
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->v[i].key, key) == 0) {
            return &s->v[i];
        }
    }
    return NULL;
}

void sc__tls_sessions_put(struct sc_tls_sessions *s, const char *key, SSL_SESSION *sess)
{
    SSL_SESSION_up_ref(sess);
    pthread_mutex_lock(&s->mu);
    struct sess_entry *e = sess_find(s, key);
    if (!e && s->n < s->cap) {
        e = &s->v[s->n++];
        e->key = sc_strdup(key);
        e->sess = NULL;
    } else if (!e) {
        e = &s->v[0];
        for (size_t i = 1; i < s->n; i++) {
            if (s->v[i].used < e->used) {
                e = &s->v[i];
            }
        }
        sc_free(e->key);
        e->key = sc_strdup(key);
    }
    SSL_SESSION *old = e->sess;
    e->sess = sess;
    e->used = ++s->clock;
    pthread_mutex_unlock(&s->mu);
    SSL_SESSION_free(old);
}

SSL_SESSION *sc__tls_sessions_get(struct sc_tls_sessions *s, const char *key)
{
    pthread_mutex_lock(&s->mu);
    struct sess_entry *e = sess_find(s, key);
    SSL_SESSION *sess = e ? e->sess : NULL;
    if (sess) {
        SSL_SESSION_up_ref(sess);
    }
    pthread_mutex_unlock(&s->mu);
    return sess;
}

/* ---- contexts ----------------------------------------------------------------------------- */

static int ctx_index = -1;
static pthread_once_t ctx_index_once = PTHREAD_ONCE_INIT;

static void make_index(void)
{
    ctx_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

int sc__tls_ctx_index(void)
{
    pthread_once(&ctx_index_once, make_index);
    return ctx_index;
}

static int version_of(int v, int def)
{
    switch (v) {
    case SC_TLS_VERSION_1_2:
        return TLS1_2_VERSION;
    case SC_TLS_VERSION_1_3:
        return TLS1_3_VERSION;
    default:
        return def;
    }
}

static int check_versions(int min, int max, char **err)
{
    char *e = NULL;
    if (check_version(&min, &e) < 0 || check_version(&max, &e) < 0) {
        *err = sc_asprintf("min_version/max_version: %s", e);
        sc_free(e);
        return SC_ECONFIG;
    }
    if (version_of(min, TLS1_2_VERSION) > version_of(max, TLS1_3_VERSION)) {
        *err = sc_asprintf("min_version is above max_version");
        return SC_ECONFIG;
    }
    return 0;
}

/* The settings every SSL_CTX of ours shares. */
static int ctx_common(SSL_CTX *s, struct sc_tls_ctx *c, int min, int max, char **err)
{
    SSL_CTX_set_ex_data(s, sc__tls_ctx_index(), c);
    SSL_CTX_set_options(s, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_IGNORE_UNEXPECTED_EOF |
                               SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1);
    /* Release idle buffers (bounded memory per idle connection); writes may move and be partial
     * because the layer hands OpenSSL its plaintext in pieces. */
    SSL_CTX_set_mode(s, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (SSL_CTX_set_min_proto_version(s, version_of(min, TLS1_2_VERSION)) != 1 ||
        SSL_CTX_set_max_proto_version(s, version_of(max, TLS1_3_VERSION)) != 1 ||
        SSL_CTX_set_cipher_list(s, TLS12_CIPHERS) != 1 ||
        SSL_CTX_set_ciphersuites(s, TLS13_SUITES) != 1 ||
        SSL_CTX_set1_groups_list(s, GROUPS) != 1) {
        *err = sc_asprintf("TLS settings refused by OpenSSL: %s", ossl_reason("?"));
        return SC_ECONFIG;
    }
    SSL_CTX_set_verify_depth(s, 10);
    return 0;
}

/* Builds the ALPN wire list of <names>. */
static int alpn_wire(struct sc_tls_ctx *c, const struct sc_strv *names, char **err)
{
    size_t len = 0;
    for (size_t i = 0; i < names->n; i++) {
        size_t n = strlen(names->v[i]);
        if (n == 0 || n > 255) {
            *err = sc_asprintf("alpn: \"%s\": a protocol name has 1 to 255 bytes", names->v[i]);
            return SC_ECONFIG;
        }
        len += 1 + n;
    }
    if (len == 0) {
        return 0;
    }
    c->alpn = sc_malloc(len);
    for (size_t i = 0; i < names->n; i++) {
        size_t n = strlen(names->v[i]);
        c->alpn[c->alpn_len++] = (unsigned char)n;
        memcpy(c->alpn + c->alpn_len, names->v[i], n);
        c->alpn_len += n;
    }
    return 0;
}

/* Server ALPN: our order of preference wins; no overlap means no ALPN, not a failure. */
static int on_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned int inlen, void *arg)
{
    struct sc_tls_ctx *c = arg;
    for (size_t i = 0; i < c->alpn_len; i += 1 + c->alpn[i]) {
        const unsigned char *ours = c->alpn + i;
        for (unsigned j = 0; j < inlen; j += 1u + in[j]) {
            if (j + 1u + in[j] > inlen) {
                break;
            }
            if (in[j] == ours[0] && memcmp(in + j + 1, ours + 1, ours[0]) == 0) {
                *out = ours + 1;
                *outlen = ours[0];
                return SSL_TLSEXT_ERR_OK;
            }
        }
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/* Whether certificate name <pat> ("a.b" or "*.b") covers <host> (lower case): exactly, or as a
 * wildcard over one label (<any_depth>: over any number of labels, as server_names do). */
static bool name_matches(const char *pat, const char *host, bool wildcard, bool any_depth)
{
    if (!wildcard) {
        return strcmp(pat, host) == 0;
    }
    if (pat[0] != '*' || pat[1] != '.') {
        return false;
    }
    if (any_depth) {
        size_t hl = strlen(host), pl = strlen(pat + 1); /* ".b" */
        return hl > pl && strcmp(host + hl - pl, pat + 1) == 0;
    }
    const char *dot = strchr(host, '.');
    return dot && dot != host && strcmp(dot + 1, pat + 2) == 0;
}

int sc_tls_ctx_select(const struct sc_tls_ctx *c, struct sc_str name)
{
    char host[256];
    if (name.len > 0 && name.p[name.len - 1] == '.') {
        name.len--;
    }
    if (!c->server || name.len == 0 || name.len >= sizeof(host)) {
        return -1;
    }
    for (size_t i = 0; i < name.len; i++) {
        char ch = name.p[i];
        if (ch == '\0') {
            return -1;
        }
        host[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
    }
    host[name.len] = '\0';
    for (size_t i = 0; i < c->ncerts; i++) {
        for (size_t j = 0; j < c->certs[i].nnames; j++) {
            if (name_matches(c->certs[i].names[j], host, false, false)) {
                return (int)i;
            }
        }
    }
    /* Wildcards: the longest covering one (one-label wildcards that cover a name are all the
     * same string, so among them the first certificate wins). */
    int best = -1;
    size_t best_len = 0;
    for (size_t i = 0; i < c->ncerts; i++) {
        for (size_t j = 0; j < c->certs[i].nnames; j++) {
            const char *pat = c->certs[i].names[j];
            size_t n = strlen(pat);
            if (n > best_len && name_matches(pat, host, true, c->certs[i].any_depth)) {
                best = (int)i;
                best_len = n;
            }
        }
    }
    return best;
}

/* SNI: switch to the certificate whose names cover the requested one (exact before wildcard);
 * the default certificate stays otherwise, or the handshake fails when unmatched names are
 * rejected (also without SNI: OpenSSL calls this for every ClientHello). */
static int on_servername(SSL *ssl, int *alert, void *arg)
{
    struct sc_tls_ctx *c = arg;
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!sni && !c->reject_unmatched) {
        return SSL_TLSEXT_ERR_OK;
    }
    int i =
        sni && (c->ncerts > 1 || c->reject_unmatched) ? sc_tls_ctx_select(c, sc_str_c(sni)) : -1;
    if (i > 0) {
        SSL_set_SSL_CTX(ssl, c->certs[i].ssl);
        /* SSL_set_SSL_CTX keeps the verify mode the SSL was made with: take the chosen
         * certificate's (its CA store and names come with its SSL_CTX). */
        SSL_set_verify(ssl, SSL_CTX_get_verify_mode(c->certs[i].ssl), NULL);
    } else if (i < 0 && c->reject_unmatched) {
        *alert = SSL_AD_UNRECOGNIZED_NAME;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    return SSL_TLSEXT_ERR_OK;
}

static void ctx_free(struct sc_tls_ctx *c)
{
    for (size_t i = 0; i < c->ncerts; i++) {
        if (c->certs[i].ssl != c->ssl) {
            SSL_CTX_free(c->certs[i].ssl);
        }
        for (size_t j = 0; j < c->certs[i].nnames; j++) {
            sc_free(c->certs[i].names[j]);
        }
        sc_free(c->certs[i].names);
    }
    SSL_CTX_free(c->ssl);
    sc_free(c->certs);
    sc_free(c->alpn);
    for (size_t i = 0; i < c->nsans; i++) {
        sc_free(c->sans[i]);
    }
    sc_free(c->sans);
    sc_free(c->sni);
    sc_free(c->own_uri);
    sc_tls_ticket_keys_unref(c->keys);
    sc_tls_sessions_unref(c->sessions);
    sc_free(c);
}

struct sc_tls_ctx *sc_tls_ctx_ref(struct sc_tls_ctx *c)
{
    atomic_fetch_add(&c->refs, 1);
    return c;
}

void sc_tls_ctx_unref(struct sc_tls_ctx *c)
{
    if (c && atomic_fetch_sub(&c->refs, 1) == 1) {
        ctx_free(c);
    }
}

bool sc_tls_ctx_is_server(const struct sc_tls_ctx *c)
{
    return c->server;
}

struct ssl_ctx_st *sc_tls_ctx_ssl_ctx(const struct sc_tls_ctx *c)
{
    return c->ssl;
}

struct sc_str sc_tls_ctx_own_uri(const struct sc_tls_ctx *c)
{
    return sc_str_c(c->own_uri);
}

size_t sc_tls_ctx_certs(const struct sc_tls_ctx *c, struct sc_tls_cert_info *out, size_t cap)
{
    for (size_t i = 0; i < c->ncerts && i < cap; i++) {
        out[i] = c->certs[i].info;
    }
    return c->ncerts;
}

/* Loads <cert>/<key> into <s> and describes them in <slot>. */
static int use_pair(SSL_CTX *s, struct sc__tls_cert *slot, const char *cert, const char *key,
                    struct sc__tls_files *files, char **err)
{
    X509 *leaf = NULL;
    STACK_OF(X509) *chain = NULL;
    EVP_PKEY *pkey = NULL;
    int rc = load_certs(cert, files, &leaf, &chain, err);
    if (rc < 0) {
        goto out;
    }
    pkey = load_key(key, files, err);
    if (!pkey) {
        rc = SC_ECONFIG;
        goto out;
    }
    if (X509_check_private_key(leaf, pkey) != 1) {
        ERR_clear_error();
        *err = sc_asprintf("key %s does not match certificate %s", key, cert);
        rc = SC_ECONFIG;
        goto out;
    }
    if (SSL_CTX_use_certificate(s, leaf) != 1 || SSL_CTX_use_PrivateKey(s, pkey) != 1 ||
        SSL_CTX_set1_chain(s, chain) != 1) {
        *err = sc_asprintf("certificate %s: refused by OpenSSL (%s)", cert, ossl_reason("?"));
        rc = SC_ECONFIG;
        goto out;
    }
    describe(slot, leaf, cert);
    rc = 0;
out:
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    EVP_PKEY_free(pkey);
    return rc;
}

/* Replaces slot <c>'s DNS names by the configured <sn> (lower case; "*.x" wildcards cover any
 * depth). */
static int own_names(struct sc__tls_cert *c, const struct sc_strv *sn, size_t idx, char **err)
{
    for (size_t j = 0; j < c->nnames; j++) {
        sc_free(c->names[j]);
    }
    sc_free(c->names);
    c->names = sc_calloc(sn->n, sizeof(char *));
    c->nnames = 0;
    c->any_depth = true;
    for (size_t j = 0; j < sn->n; j++) {
        const char *v = sn->v[j];
        size_t n = strlen(v);
        if (n == 0 || n > 253 ||
            (strchr(v, '*') && (v[0] != '*' || v[1] != '.' || n < 3 || strchr(v + 1, '*')))) {
            *err = sc_asprintf("tls: certificates[%zu].server_names: \"%s\" is not a name or a "
                               "*.suffix wildcard",
                               idx, v);
            return SC_ECONFIG;
        }
        char *name = sc_strdup(v);
        for (char *q = name; *q; q++) {
            if (*q >= 'A' && *q <= 'Z') {
                *q = (char)(*q - 'A' + 'a');
            }
        }
        c->names[c->nnames++] = name;
    }
    return 0;
}

/* The URI SAN of a certificate slot's leaf in <s>, for the XFCC "By". */
static char *uri_of(SSL_CTX *s)
{
    X509 *x = SSL_CTX_get0_certificate(s);
    char buf[SC_SPIFFE_ID_MAX + 1];
    GENERAL_NAMES *gens = x ? X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL) : NULL;
    char *out = NULL;
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens) && !out; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type == GEN_URI) {
            int n = ASN1_STRING_length(g->d.uniformResourceIdentifier);
            if (n > 0 && (size_t)n < sizeof(buf)) {
                out = sc_strndup(
                    (const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier), (size_t)n);
            }
        }
    }
    GENERAL_NAMES_free(gens);
    return out;
}

/* A session ID context that stays the same across reloads of the same listener settings, so
 * sessions (and tickets) made under one context resume under the next. */
static void set_sid_ctx(SSL_CTX *s, int client_cert, const char *client_ca)
{
    unsigned char md[32];
    char text[64];
    snprintf(text, sizeof(text), "sidecar|%d|", client_cert);
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    EVP_DigestInit_ex(m, EVP_sha256(), NULL);
    EVP_DigestUpdate(m, text, strlen(text));
    if (client_ca) {
        EVP_DigestUpdate(m, client_ca, strlen(client_ca));
    }
    EVP_DigestFinal_ex(m, md, NULL);
    EVP_MD_CTX_free(m);
    SSL_CTX_set_session_id_context(s, md, SSL_MAX_SID_CTX_LENGTH);
}

/* Client verification of certificate <co> (entry <i>), chosen by SNI, onto its SSL_CTX <s>:
 * client_cert (auto: require with a CA, else none) with client_ca (else the listener's). */
static int own_verify(SSL_CTX *s, const struct sc_tls_cert_opts *co,
                      const struct sc_tls_server_opts *o, size_t i, struct sc__tls_files *files,
                      char **err)
{
    const char *path = co->client_ca ? co->client_ca : o->client_ca;
    int mode = co->client_cert;
    if (mode == SC_TLS_CLIENT_CERT_AUTO) {
        mode = path ? SC_TLS_CLIENT_CERT_REQUIRE : SC_TLS_CLIENT_CERT_NONE;
    }
    set_sid_ctx(s, mode, path);
    if (mode == SC_TLS_CLIENT_CERT_NONE) {
        SSL_CTX_set_verify(s, SSL_VERIFY_NONE, NULL);
        return 0;
    }
    if (!path) {
        *err = sc_asprintf("tls: certificates[%zu].client_cert: %s needs client_ca", i,
                           sc_tls_client_cert_names[mode]);
        return SC_ECONFIG;
    }
    STACK_OF(X509_NAME) *names = NULL;
    X509_STORE *store = load_ca(path, files, &names, err);
    if (!store) {
        return SC_ECONFIG;
    }
    SSL_CTX_set1_cert_store(s, store);
    X509_STORE_free(store);
    SSL_CTX_set0_CA_list(s, names);
    SSL_CTX_set_verify(
        s,
        SSL_VERIFY_PEER |
            (mode == SC_TLS_CLIENT_CERT_REQUIRE ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
        NULL);
    return 0;
}

struct sc_tls_ctx *sc__tls_ctx_server(const struct sc_tls_server_opts *o,
                                      struct sc_tls_ticket_keys *keys, struct sc__tls_files *files,
                                      char **err)
{
    if (sc_lazylib_ssl_load(err) < 0) {
        return NULL;
    }
    struct sc_tls_ctx *c = SC_NEW(struct sc_tls_ctx);
    X509_STORE *ca = NULL;
    STACK_OF(X509_NAME) *ca_names = NULL;
    atomic_init(&c->refs, 1);
    c->server = true;
    c->reject_unmatched = o->unmatched_sni == SC_TLS_UNMATCHED_SNI_REJECT;
    const struct sc_tls_cert_opts *extra = o->certificates.v;
    size_t total = (o->cert || o->key ? 1 : 0) + o->certificates.n;
    if (total == 0) {
        *err = sc_asprintf("tls: a server needs cert and key (or certificates)");
        goto fail;
    }
    if ((o->cert == NULL) != (o->key == NULL)) {
        *err =
            sc_asprintf("tls: cert and key go together (%s is missing)", o->cert ? "key" : "cert");
        goto fail;
    }
    if (check_versions(o->min_version, o->max_version, err) < 0 ||
        alpn_wire(c, &o->alpn, err) < 0) {
        goto fail;
    }
    int mode = o->client_cert;
    if (mode == SC_TLS_CLIENT_CERT_AUTO) {
        mode = o->client_ca ? SC_TLS_CLIENT_CERT_REQUIRE : SC_TLS_CLIENT_CERT_NONE;
    }
    if (mode != SC_TLS_CLIENT_CERT_NONE && !o->client_ca) {
        *err = sc_asprintf("tls: client_cert: %s needs client_ca", sc_tls_client_cert_names[mode]);
        goto fail;
    }
    if (mode != SC_TLS_CLIENT_CERT_NONE && !(ca = load_ca(o->client_ca, files, &ca_names, err))) {
        goto fail;
    }
    c->native = o->record_layer == SC_TLS_RECORD_NATIVE;
    c->keys = keys ? keys : sc_tls_ticket_keys_new(o->session_timeout_ms);
    if (keys) {
        atomic_fetch_add(&keys->refs, 1);
    }
    c->certs = sc_calloc(total, sizeof(*c->certs));
    for (size_t i = 0; i < total; i++) {
        const char *cert = o->cert ? (i == 0 ? o->cert : extra[i - 1].cert) : extra[i].cert;
        const char *key = o->cert ? (i == 0 ? o->key : extra[i - 1].key) : extra[i].key;
        if (!cert || !key) {
            *err = sc_asprintf("tls: certificates[%zu]: cert and key are both required", i);
            goto fail;
        }
        SSL_CTX *s = SSL_CTX_new(TLS_server_method());
        if (!s) {
            *err = sc_asprintf("tls: %s", ossl_reason("cannot make an SSL_CTX"));
            goto fail;
        }
        c->certs[c->ncerts++].ssl = s;
        if (i == 0) {
            c->ssl = s;
        }
        if (ctx_common(s, c, o->min_version, o->max_version, err) < 0 ||
            use_pair(s, &c->certs[i], cert, key, files, err) < 0) {
            goto fail;
        }
        const struct sc_strv *sn =
            (o->cert && i == 0) ? NULL : &extra[o->cert ? i - 1 : i].server_names;
        if (sn && sn->n && own_names(&c->certs[i], sn, i, err) < 0) {
            goto fail;
        }
        /* A certificate chosen by SNI may verify clients its own way (Envoy's filter chains each
         * have their validation context): its SSL_CTX carries it, and on_servername moves the
         * connection's verify mode to it. */
        const struct sc_tls_cert_opts *co =
            (o->cert && i == 0) ? NULL : &extra[o->cert ? i - 1 : i];
        bool own = co && (co->client_ca || co->client_cert != SC_TLS_CLIENT_CERT_AUTO);
        if (own) {
            if (own_verify(s, co, o, i, files, err) < 0) {
                goto fail;
            }
        } else {
            set_sid_ctx(s, o->client_cert, o->client_ca);
        }
        if (c->alpn_len) {
            SSL_CTX_set_alpn_select_cb(s, on_alpn_select, c);
        }
        SSL_CTX_set_tlsext_servername_callback(s, on_servername);
        SSL_CTX_set_tlsext_servername_arg(s, c);
        SSL_CTX_set_tlsext_ticket_key_evp_cb(s, on_ticket_key);
        SSL_CTX_set_num_tickets(s, 1);
        if (c->native) {
            /* hands the layer the application traffic secrets (tls_xport.c) */
            SSL_CTX_set_keylog_callback(s, sc__tls_on_keylog);
        }
        uint64_t timeout =
            o->session_timeout_ms ? o->session_timeout_ms : DEFAULT_SESSION_TIMEOUT_MS;
        SSL_CTX_set_timeout(s, (long)(timeout / 1000));
        if (o->session_cache_size > 0) {
            SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_SERVER);
            SSL_CTX_sess_set_cache_size(s, (long)o->session_cache_size);
        } else {
            SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_OFF);
        }
        if (ca && !own) {
            SSL_CTX_set1_cert_store(s, ca);
            SSL_CTX_set0_CA_list(s, SSL_dup_CA_list(ca_names));
            SSL_CTX_set_verify(
                s,
                SSL_VERIFY_PEER |
                    (mode == SC_TLS_CLIENT_CERT_REQUIRE ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                NULL);
        }
    }
    c->own_uri = uri_of(c->ssl);
    X509_STORE_free(ca);
    sk_X509_NAME_pop_free(ca_names, X509_NAME_free);
    return c;
fail:
    X509_STORE_free(ca);
    sk_X509_NAME_pop_free(ca_names, X509_NAME_free);
    ctx_free(c);
    return NULL;
}

/* Client verification, at the leaf once the chain is good: the server must present one of the
 * configured names (DNS, wildcards in its certificate allowed) or SPIFFE IDs (exact URI SAN). */
static int on_verify(int ok, X509_STORE_CTX *store)
{
    if (!ok || X509_STORE_CTX_get_error_depth(store) != 0) {
        return ok;
    }
    SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct sc_tls_ctx *c =
        ssl ? SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), sc__tls_ctx_index()) : NULL;
    if (!c || c->nsans == 0) {
        return ok;
    }
    X509 *x = X509_STORE_CTX_get_current_cert(store);
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    bool found = false;
    for (size_t i = 0; i < c->nsans && !found; i++) {
        const char *want = c->sans[i];
        if (strncmp(want, "spiffe://", 9) == 0) {
            for (int j = 0; gens && j < sk_GENERAL_NAME_num(gens) && !found; j++) {
                const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, j);
                if (g->type == GEN_URI) {
                    const ASN1_IA5STRING *u = g->d.uniformResourceIdentifier;
                    found = (size_t)ASN1_STRING_length(u) == strlen(want) &&
                            memcmp(ASN1_STRING_get0_data(u), want, strlen(want)) == 0;
                }
            }
        } else {
            found = X509_check_host(x, want, strlen(want), X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS,
                                    NULL) == 1;
        }
    }
    GENERAL_NAMES_free(gens);
    if (!found) {
        X509_STORE_CTX_set_error(store, X509_V_ERR_HOSTNAME_MISMATCH);
        return 0;
    }
    return 1;
}

/* TLS 1.3 sessions arrive after the handshake; each goes to the table under the connection's
 * destination key (set as the SSL's app data by the transport layer). */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct sc_tls_ctx *c = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), sc__tls_ctx_index());
    const char *key = SSL_get_app_data(ssl);
    if (c && c->sessions && key && SSL_SESSION_is_resumable(sess)) {
        sc__tls_sessions_put(c->sessions, key, sess);
    }
    return 0; /* the table took its own reference */
}

struct sc_tls_ctx *sc__tls_ctx_client(const struct sc_tls_client_opts *o,
                                      struct sc_tls_sessions *sessions, struct sc__tls_files *files,
                                      char **err)
{
    if (sc_lazylib_ssl_load(err) < 0) {
        return NULL;
    }
    struct sc_tls_ctx *c = SC_NEW(struct sc_tls_ctx);
    X509_STORE *ca = NULL;
    atomic_init(&c->refs, 1);
    c->verify = !o->insecure_skip_verify;
    if ((o->cert == NULL) != (o->key == NULL)) {
        *err =
            sc_asprintf("tls: cert and key go together (%s is missing)", o->cert ? "key" : "cert");
        goto fail;
    }
    if (check_versions(o->min_version, o->max_version, err) < 0 ||
        alpn_wire(c, &o->alpn, err) < 0) {
        goto fail;
    }
    for (size_t i = 0; i < o->subject_alt_names.n; i++) {
        const char *san = o->subject_alt_names.v[i];
        struct sc_spiffe_id id;
        if (strncmp(san, "spiffe://", 9) == 0 && sc_tls_spiffe_parse(sc_str_c(san), &id) < 0) {
            *err = sc_asprintf("tls: subject_alt_names: \"%s\" is not a valid SPIFFE ID", san);
            goto fail;
        }
    }
    c->ssl = SSL_CTX_new(TLS_client_method());
    if (!c->ssl) {
        *err = sc_asprintf("tls: %s", ossl_reason("cannot make an SSL_CTX"));
        goto fail;
    }
    if (ctx_common(c->ssl, c, o->min_version, o->max_version, err) < 0) {
        goto fail;
    }
    if (o->cert) {
        c->certs = SC_NEW(struct sc__tls_cert);
        c->ncerts = 1;
        if (use_pair(c->ssl, &c->certs[0], o->cert, o->key, files, err) < 0) {
            goto fail;
        }
        c->own_uri = uri_of(c->ssl);
    }
    if (o->ca) {
        if (!(ca = load_ca(o->ca, files, NULL, err))) {
            goto fail;
        }
        SSL_CTX_set1_cert_store(c->ssl, ca);
    } else if (c->verify && SSL_CTX_set_default_verify_paths(c->ssl) != 1) {
        *err = sc_asprintf("tls: cannot load the system CA store (%s)", ossl_reason("?"));
        goto fail;
    }
    SSL_CTX_set_verify(c->ssl, c->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE,
                       c->verify ? on_verify : NULL);
    if (c->alpn_len && SSL_CTX_set_alpn_protos(c->ssl, c->alpn, (unsigned)c->alpn_len) != 0) {
        *err = sc_asprintf("tls: alpn refused by OpenSSL");
        goto fail;
    }
    c->nsans = o->subject_alt_names.n;
    c->sans = sc_calloc(c->nsans ? c->nsans : 1, sizeof(char *));
    for (size_t i = 0; i < c->nsans; i++) {
        c->sans[i] = sc_strdup(o->subject_alt_names.v[i]);
    }
    c->sni = sc_strdup(o->sni);
    c->native = o->record_layer == SC_TLS_RECORD_NATIVE;
    if (c->native) {
        /* hands the layer the application traffic secrets (tls_native.c) */
        SSL_CTX_set_keylog_callback(c->ssl, sc__tls_on_keylog);
    }
    if (o->session_reuse) {
        c->sessions = sessions ? sessions : sc_tls_sessions_new(0);
        if (sessions) {
            atomic_fetch_add(&sessions->refs, 1);
        }
        SSL_CTX_set_session_cache_mode(c->ssl,
                                       SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(c->ssl, on_new_session);
    } else {
        SSL_CTX_set_session_cache_mode(c->ssl, SSL_SESS_CACHE_OFF);
    }
    X509_STORE_free(ca);
    return c;
fail:
    X509_STORE_free(ca);
    ctx_free(c);
    return NULL;
}

struct sc_tls_ctx *sc_tls_ctx_new_server(const struct sc_tls_server_opts *o,
                                         struct sc_tls_ticket_keys *keys, char **err)
{
    struct sc_tls_ctx *c = sc__tls_ctx_server(o, keys, NULL, err);
    if (c) {
        sc__tls_ctx_warn_expiry(c, "server");
    }
    return c;
}

struct sc_tls_ctx *sc_tls_ctx_new_client(const struct sc_tls_client_opts *o,
                                         struct sc_tls_sessions *sessions, char **err)
{
    struct sc_tls_ctx *c = sc__tls_ctx_client(o, sessions, NULL, err);
    if (c) {
        sc__tls_ctx_warn_expiry(c, "client");
    }
    return c;
}

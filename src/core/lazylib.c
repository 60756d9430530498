// SPDX-License-Identifier: Apache-2.0
// Lazily loaded libraries (see lazylib.h): each is loaded under pthread_once, so the first use from
// any worker thread loads it exactly once. MD5's few functions are a table filled at load;
// OpenSSL's and nghttp2's are resolved one by one by their call sites (net/ossl.h, net/nghttp2.h).
#include "core/lazylib.h"

#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include <openssl/ssl.h>

#include "core/error.h"
#include "core/log.h"
#include "core/alloc.h"

/* Resolves <n> symbols named in <names> from <soname> into <fns>. Returns false (logged) when the
 * library or a symbol is missing. */
static bool load(const char *soname, const char *const *names, void **fns, size_t n)
{
    void *lib = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        sc_error("cannot load a library", SC_LS("library", soname), SC_LS("reason", dlerror()));
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        fns[i] = dlsym(lib, names[i]);
        if (!fns[i]) {
            sc_error("library lacks a symbol", SC_LS("library", soname), SC_LS("symbol", names[i]));
            return false;
        }
    }
    return true;
}

/* libcrypto: EVP_Digest with EVP_md5. */
static struct {
    int (*digest)(const void *p, size_t n, unsigned char *md, unsigned int *len, const void *type,
                  void *engine);
    const void *(*md5)(void);
} crypto;
static bool crypto_ok;
static pthread_once_t crypto_once = PTHREAD_ONCE_INIT;

static void load_crypto(void)
{
    static const char *const names[] = { "EVP_Digest", "EVP_md5" };
    void *fns[2];
    if (load("libcrypto.so.3", names, fns, 2)) {
        *(void **)&crypto.digest = fns[0];
        *(void **)&crypto.md5 = fns[1];
        crypto_ok = true;
    }
}

int sc_lazylib_md5(const void *p, size_t n, unsigned char out[16])
{
    pthread_once(&crypto_once, load_crypto);
    unsigned int len = 0;
    if (!crypto_ok || !crypto.digest(p ? p : "", n, out, &len, crypto.md5(), NULL) || len != 16) {
        return SC_EUNSUPPORTED;
    }
    return 0;
}

/* A library loaded whole on first use whose functions a net/ header resolves one by one at their
 * call sites (net/ossl.h, net/nghttp2.h). <lib> is set once, under <once>; <why> holds the
 * loader's reason when it could not be loaded. */
struct whole_lib {
    const char *soname;
    void *lib;
    char why[256];
};

static void whole_open(struct whole_lib *l)
{
    l->lib = dlopen(l->soname, RTLD_NOW | RTLD_LOCAL);
    if (!l->lib) {
        const char *e = dlerror();
        snprintf(l->why, sizeof(l->why), "%s", e ? e : "not found");
    }
}

/* Resolves <name> from <l> (which its caller has loaded) into <*slot> and returns it; a missing
 * function is logged and ends the process, since the call site has no way to fail. */
static void *whole_resolve(struct whole_lib *l, void **slot, const char *name)
{
    void *fn = dlsym(l->lib, name);
    if (!fn) {
        sc_error("a library lacks a function", SC_LS("library", l->soname), SC_LS("symbol", name));
        abort();
    }
    __atomic_store_n(slot, fn, __ATOMIC_RELEASE);
    return fn;
}

/* OpenSSL 3 (net/ossl.h): libssl, whose handle also finds libcrypto's symbols (its dependency). */
static struct whole_lib ssl = { .soname = "libssl.so.3" };
static pthread_once_t ssl_once = PTHREAD_ONCE_INIT;

/* OpenSSL's record buffers: with SSL_MODE_RELEASE_BUFFERS (idle connections hold none) each
 * connection allocates a read buffer for every record it reads and a write buffer for every write,
 * and frees them when they empty: two 16.5 KiB malloc/free pairs per keep-alive request, which
 * glibc serves from its bins at about 1,300 instructions. Allocations of that size class are
 * rounded up to one size and up to POOL_CAP freed ones are kept per thread for the next, which
 * costs a usable-size check on each free. Installed with CRYPTO_set_mem_functions before OpenSSL
 * allocates anything (when it already has, in a test that called OpenSSL first, nothing is
 * pooled). Bounded: POOL_CAP x 17 KiB per thread, freed when the thread exits. Out of memory
 * ends the process, as everywhere else (core/alloc.h). */
enum { POOL_LOW = 16384, POOL_SIZE = 17408, POOL_CAP = 8 };

struct ssl_pool {
    void *v[POOL_CAP];
    unsigned n;
};

static __thread struct ssl_pool *pool_mine;
static pthread_key_t pool_key;
static size_t pool_usable; /* malloc_usable_size of a POOL_SIZE allocation */

static void pool_drop(void *arg)
{
    struct ssl_pool *p = arg;
    for (unsigned i = 0; i < p->n; i++) {
        sc_free(p->v[i]);
    }
    sc_free(p);
}

static void *ossl_malloc(size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    if (n < POOL_LOW || n > POOL_SIZE) {
        return sc_malloc(n);
    }
    struct ssl_pool *p = pool_mine;
    if (p && p->n > 0) {
        return p->v[--p->n];
    }
    return sc_malloc(POOL_SIZE);
}

static void *ossl_realloc(void *ptr, size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    if (n == 0) { /* as OpenSSL's own: frees */
        sc_free(ptr);
        return NULL;
    }
    return sc_realloc(ptr, n);
}

static void ossl_free(void *ptr, const char *file, int line)
{
    (void)file;
    (void)line;
    if (ptr && malloc_usable_size(ptr) == pool_usable) {
        struct ssl_pool *p = pool_mine;
        if (!p) {
            p = sc_calloc(1, sizeof(*p));
            if (pthread_setspecific(pool_key, p) != 0) {
                sc_free(p);
                p = NULL;
            }
            pool_mine = p;
        }
        if (p && p->n < POOL_CAP) {
            p->v[p->n++] = ptr;
            return;
        }
    }
    sc_free(ptr);
}

static void pool_install(void)
{
    int (*set)(void *(*)(size_t, const char *, int), void *(*)(void *, size_t, const char *, int),
               void (*)(void *, const char *, int));
    *(void **)&set = dlsym(ssl.lib, "CRYPTO_set_mem_functions");
    if (!set || pthread_key_create(&pool_key, pool_drop) != 0) {
        return;
    }
    void *probe = sc_malloc(POOL_SIZE);
    pool_usable = malloc_usable_size(probe);
    sc_free(probe);
    if (!set(ossl_malloc, ossl_realloc, ossl_free)) {
        pool_usable = 0; /* OpenSSL already allocated: its own functions stay */
    }
}

/* OpenSSL's initialisation, before anything else calls it, without its error strings: their
 * tables and hash entries, and the code that builds them, are about 60 KiB of resident memory in
 * every process with TLS, used only to describe errors. sc_lazylib_ssl_err_strings loads them
 * when an error is first described. Everything else is OpenSSL's default, the configuration file
 * included. */
static void ossl_init(void)
{
    __typeof__(&OPENSSL_init_ssl) init;
    *(void **)&init = dlsym(ssl.lib, "OPENSSL_init_ssl");
    if (init) {
        init(OPENSSL_INIT_NO_LOAD_SSL_STRINGS | OPENSSL_INIT_NO_LOAD_CRYPTO_STRINGS, NULL);
    }
}

static void load_ssl(void)
{
    whole_open(&ssl);
    if (ssl.lib) {
        pool_install();
        ossl_init();
    }
}

/* The error strings OpenSSL's initialisation skipped (ossl_init): once that skipped them, its own
 * loading is off for good, so they are loaded library by library with the loaders OpenSSL 3 still
 * exports: every library whose reasons TLS set-up and handshakes report. The few without one
 * (providers, decoders, HTTP, CMP) keep unnamed reasons; the TLS code prints their codes. */
static pthread_once_t strings_once = PTHREAD_ONCE_INIT;

static void load_err_strings(void)
{
    static const char *const names[] = {
        "ERR_load_ERR_strings",    "ERR_load_SSL_strings",    "ERR_load_CRYPTO_strings",
        "ERR_load_ASN1_strings",   "ERR_load_ASYNC_strings",  "ERR_load_BIO_strings",
        "ERR_load_BN_strings",     "ERR_load_BUF_strings",    "ERR_load_CMS_strings",
        "ERR_load_COMP_strings",   "ERR_load_CONF_strings",   "ERR_load_CT_strings",
        "ERR_load_DH_strings",     "ERR_load_DSA_strings",    "ERR_load_EC_strings",
        "ERR_load_ENGINE_strings", "ERR_load_EVP_strings",    "ERR_load_KDF_strings",
        "ERR_load_OBJ_strings",    "ERR_load_OCSP_strings",   "ERR_load_OSSL_STORE_strings",
        "ERR_load_PEM_strings",    "ERR_load_PKCS12_strings", "ERR_load_PKCS7_strings",
        "ERR_load_RAND_strings",   "ERR_load_RSA_strings",    "ERR_load_TS_strings",
        "ERR_load_UI_strings",     "ERR_load_X509V3_strings", "ERR_load_X509_strings",
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        int (*fn)(void);
        *(void **)&fn = dlsym(ssl.lib, names[i]);
        if (fn) {
            fn();
        }
    }
}

void sc_lazylib_ssl_err_strings(void)
{
    if (sc_lazylib_ssl_load(NULL) == 0) {
        pthread_once(&strings_once, load_err_strings);
    }
}

int sc_lazylib_ssl_load(char **err)
{
    pthread_once(&ssl_once, load_ssl);
    if (ssl.lib) {
        return 0;
    }
    if (err) {
        *err = sc_asprintf("TLS needs OpenSSL 3 (libssl.so.3 and libcrypto.so.3), which cannot be "
                           "loaded: %s",
                           ssl.why);
    }
    return SC_EUNSUPPORTED;
}

void *sc_lazylib_ssl_resolve(void **slot, const char *name)
{
    char *err = NULL;
    if (sc_lazylib_ssl_load(&err) < 0) {
        sc_error("cannot load OpenSSL", SC_LS("reason", err));
        abort();
    }
    return whole_resolve(&ssl, slot, name);
}

/* nghttp2 (net/nghttp2.h): HTTP/2 framing, needed from the first HTTP/2 connection on. */
static struct whole_lib nghttp2 = { .soname = "libnghttp2.so.14" };
static pthread_once_t nghttp2_once = PTHREAD_ONCE_INIT;
static bool nghttp2_logged;

static void load_nghttp2(void)
{
    whole_open(&nghttp2);
}

int sc_lazylib_nghttp2_load(char **err)
{
    pthread_once(&nghttp2_once, load_nghttp2);
    if (nghttp2.lib) {
        return 0;
    }
    if (!err && !__atomic_exchange_n(&nghttp2_logged, true, __ATOMIC_RELAXED)) {
        sc_error("HTTP/2 needs libnghttp2.so.14, which cannot be loaded: HTTP/2 connections are "
                 "refused",
                 SC_LS("reason", nghttp2.why));
    }
    if (err) {
        *err = sc_asprintf("HTTP/2 needs nghttp2 (libnghttp2.so.14), which cannot be loaded: %s",
                           nghttp2.why);
    }
    return SC_EUNSUPPORTED;
}

void *sc_lazylib_nghttp2_resolve(void **slot, const char *name)
{
    char *err = NULL;
    if (sc_lazylib_nghttp2_load(&err) < 0) {
        sc_error("cannot load nghttp2", SC_LS("reason", err));
        abort();
    }
    return whole_resolve(&nghttp2, slot, name);
}

/* PCRE2 (core/regex.h): regular expressions, needed from the first pattern compiled. */
static struct whole_lib pcre2 = { .soname = "libpcre2-8.so.0" };
static pthread_once_t pcre2_once = PTHREAD_ONCE_INIT;

static void load_pcre2(void)
{
    whole_open(&pcre2);
}

int sc_lazylib_pcre2_load(char **err)
{
    pthread_once(&pcre2_once, load_pcre2);
    if (pcre2.lib) {
        return 0;
    }
    if (err) {
        *err = sc_asprintf("regular expressions need PCRE2 (libpcre2-8.so.0), which cannot be "
                           "loaded: %s",
                           pcre2.why);
    }
    return SC_EUNSUPPORTED;
}

void *sc_lazylib_pcre2_resolve(void **slot, const char *name)
{
    char *err = NULL;
    if (sc_lazylib_pcre2_load(&err) < 0) {
        sc_error("cannot load PCRE2", SC_LS("reason", err));
        abort();
    }
    return whole_resolve(&pcre2, slot, name);
}

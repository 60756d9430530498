// SPDX-License-Identifier: Apache-2.0
// Lazily loaded libraries (see lazylib.h): each is a table of function pointers filled under
// pthread_once, so the first use from any worker thread loads it exactly once.
#include "core/lazylib.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

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

/* snappy's C API (snappy-c.h): status 0 is SNAPPY_OK. */
static struct {
    int (*compress)(const char *in, size_t n, char *out, size_t *outlen);
    size_t (*max_compressed_length)(size_t n);
} snappy;
static bool snappy_ok;
static pthread_once_t snappy_once = PTHREAD_ONCE_INIT;

static void load_snappy(void)
{
    static const char *const names[] = { "snappy_compress", "snappy_max_compressed_length" };
    void *fns[2];
    if (load("libsnappy.so.1", names, fns, 2)) {
        *(void **)&snappy.compress = fns[0];
        *(void **)&snappy.max_compressed_length = fns[1];
        snappy_ok = true;
    }
}

size_t sc_snappy_max_compressed_length(size_t n)
{
    pthread_once(&snappy_once, load_snappy);
    return snappy_ok ? snappy.max_compressed_length(n) : 0;
}

int sc_snappy_compress(const char *in, size_t n, char *out, size_t *outlen)
{
    pthread_once(&snappy_once, load_snappy);
    if (!snappy_ok) {
        return SC_EUNSUPPORTED;
    }
    return snappy.compress(in, n, out, outlen) == 0 ? 0 : -EIO;
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

/* OpenSSL 3 (net/ossl.h): libssl, whose handle also finds libcrypto's symbols (its dependency). */
static void *ssl_lib;
static char ssl_why[256];
static pthread_once_t ssl_once = PTHREAD_ONCE_INIT;

static void load_ssl(void)
{
    ssl_lib = dlopen("libssl.so.3", RTLD_NOW | RTLD_LOCAL);
    if (!ssl_lib) {
        const char *e = dlerror();
        snprintf(ssl_why, sizeof(ssl_why), "%s", e ? e : "libssl.so.3: not found");
    }
}

int sc_lazylib_ssl_load(char **err)
{
    pthread_once(&ssl_once, load_ssl);
    if (ssl_lib) {
        return 0;
    }
    if (err) {
        *err = sc_asprintf("TLS needs OpenSSL 3 (libssl.so.3 and libcrypto.so.3), which cannot be "
                           "loaded: %s",
                           ssl_why);
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
    void *fn = dlsym(ssl_lib, name);
    if (!fn) {
        sc_error("OpenSSL lacks a function", SC_LS("symbol", name));
        abort();
    }
    __atomic_store_n(slot, fn, __ATOMIC_RELEASE);
    return fn;
}

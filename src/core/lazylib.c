// SPDX-License-Identifier: Apache-2.0
// Lazily loaded libraries (see lazylib.h): each is a table of function pointers filled under
// pthread_once, so the first use from any worker thread loads it exactly once.
#include "core/lazylib.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>

#include "core/error.h"
#include "core/log.h"

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

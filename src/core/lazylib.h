// SPDX-License-Identifier: Apache-2.0
// Libraries that a few roles need and most do not, loaded with dlopen on first use: snappy (Loki
// and remote_write payloads) and OpenSSL's libcrypto (MD5 for hashmod). A role that never
// calls these does not carry them, nor what they pull in (libstdc++ for snappy), in resident
// memory. Each library is loaded once per process and stays loaded; a missing library is an
// ordinary error, logged once.
#ifndef SC_CORE_LAZYLIB_H
#define SC_CORE_LAZYLIB_H

#include <stddef.h>

/* Returns the largest size snappy may compress <n> bytes to, or 0 when snappy is unavailable. */
size_t sc_snappy_max_compressed_length(size_t n);

/* Compresses <n> bytes at <in> into <out>, whose size <*outlen> must be at least
 * sc_snappy_max_compressed_length(n); sets <*outlen> to the compressed size. Returns 0,
 * SC_EUNSUPPORTED when snappy is unavailable, or -EIO. */
int sc_snappy_compress(const char *in, size_t n, char *out, size_t *outlen);

/* Writes the MD5 digest of <n> bytes at <p> to <out>. Returns 0 or SC_EUNSUPPORTED. */
int sc_lazylib_md5(const void *p, size_t n, unsigned char out[16]);

#endif

// SPDX-License-Identifier: Apache-2.0
// Libraries that a few roles need and most do not, loaded with dlopen on first use: OpenSSL's
// libcrypto (MD5 for hashmod), OpenSSL as a whole (TLS, through net/ossl.h), nghttp2 (HTTP/2,
// through net/nghttp2.h) and PCRE2 (core/regex.h). A role that never calls these does not carry
// them, nor what they pull in, in resident memory. Each library is loaded once per process and
// stays loaded; a missing library is an ordinary error, logged once.
#ifndef SC_CORE_LAZYLIB_H
#define SC_CORE_LAZYLIB_H

#include <stddef.h>

/* Writes the MD5 digest of <n> bytes at <p> to <out>. Returns 0 or SC_EUNSUPPORTED. */
int sc_lazylib_md5(const void *p, size_t n, unsigned char out[16]);

/* Loads OpenSSL 3 (libssl.so.3 and libcrypto.so.3) once per process. Returns 0, or
 * SC_EUNSUPPORTED with a new message naming the library and the loader's reason in <*err> (when
 * <err> is not NULL). Whatever configures TLS calls this first, so that a missing library is a
 * configuration error and not a crash later. */
int sc_lazylib_ssl_load(char **err);

/* Loads OpenSSL's error strings, once per process (OpenSSL is initialised without them, to keep
 * their tables out of resident memory): whatever turns an OpenSSL error into text calls this
 * first (net/tls*.c), and so does whatever lets another library print OpenSSL's errors (libcurl,
 * net/egress.c). Loads OpenSSL if needed; does nothing if it cannot be loaded. */
void sc_lazylib_ssl_err_strings(void);

/* Resolves OpenSSL's function <name> into <*slot> and returns it (net/ossl.h's call sites). Loads
 * OpenSSL if needed; a library or function that cannot be found is logged and ends the process,
 * since the caller has no way to fail. */
void *sc_lazylib_ssl_resolve(void **slot, const char *name);

/* Loads nghttp2 (libnghttp2.so.14) once per process. Returns 0, or SC_EUNSUPPORTED with a new
 * message naming the library and the loader's reason in <*err> (when <err> is not NULL); without
 * <err> (a connection's caller) the failure is logged instead, once per process. Called where
 * HTTP/2 starts (a connection's preface or ALPN, a cluster that speaks HTTP/2), so that a missing
 * library refuses that connection or configuration instead of ending the process. */
int sc_lazylib_nghttp2_load(char **err);

/* Resolves nghttp2's function <name> into <*slot> and returns it (net/nghttp2.h's call sites).
 * Loads nghttp2 if needed; a library or function that cannot be found is logged and ends the
 * process, since the caller has no way to fail. */
void *sc_lazylib_nghttp2_resolve(void **slot, const char *name);

/* Loads PCRE2 (libpcre2-8.so.0) once per process. Returns 0, or SC_EUNSUPPORTED with a new
 * message naming the library and the loader's reason in <*err> (when <err> is not NULL). Code
 * that compiles a pattern calls it first, so that a missing library is a configuration error. */
int sc_lazylib_pcre2_load(char **err);

/* Resolves PCRE2's function <name> into <*slot> and returns it (core/regex.h's call sites); as
 * sc_lazylib_ssl_resolve, a library or function that cannot be found ends the process. */
void *sc_lazylib_pcre2_resolve(void **slot, const char *name);

#endif

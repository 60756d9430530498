// SPDX-License-Identifier: Apache-2.0
// Protocol detection on the first bytes of an intercepted connection (proxy_detect.c): an HTTP/1
// request line, the HTTP/2 cleartext preface, a TLS ClientHello (with its SNI and ALPN, read
// without terminating TLS), or anything else. A pure function of the bytes, so it is fuzzed alone
// (tests/fuzz/fuzz_proxy_detect.c); the data path (proxy_tcp.c) decides what to do with the answer
// and when to stop waiting for more bytes.
#ifndef SC_ROLES_PROXY_PROXY_DETECT_H
#define SC_ROLES_PROXY_PROXY_DETECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum proxy_proto {
    PROXY_PROTO_MORE,  /* too few bytes to tell, and every byte so far fits one of the protocols */
    PROXY_PROTO_HTTP1, /* an HTTP/1.x request line */
    PROXY_PROTO_H2C,   /* the HTTP/2 connection preface (prior knowledge, cleartext) */
    PROXY_PROTO_TLS,   /* a complete TLS ClientHello */
    PROXY_PROTO_TCP,   /* anything else: an opaque byte stream */
};

/* The longest request-line prefix (method and target) waited for before calling a connection
 * opaque, and the longest ClientHello read for its SNI and ALPN. */
#define PROXY_DETECT_MAX_LINE 8192
#define PROXY_DETECT_MAX_HELLO 16384

#define PROXY_SNI_MAX 255
#define PROXY_ALPN_MAX 8

/* What a ClientHello says, when PROXY_PROTO_TLS. Strings are NUL-terminated copies. */
struct proxy_hello {
    char sni[PROXY_SNI_MAX + 1]; /* the host_name of server_name, lowercased; empty: none */
    char alpn[PROXY_ALPN_MAX][32];
    size_t nalpn; /* ALPN protocols offered (the first PROXY_ALPN_MAX; longer names skipped) */
};

/* Tells the protocol of a connection from its first <n> bytes at <p>. Fills <*hello> (may be
 * NULL) for TLS. Never reads past <n>; answers MORE only while more bytes could change the
 * answer and the bounds above are not reached. */
enum proxy_proto proxy_detect(const uint8_t *p, size_t n, struct proxy_hello *hello);

/* The protocol's name for logs: "http/1.1", "h2c", "tls", "tcp" ("" for MORE). */
const char *proxy_proto_name(enum proxy_proto p);

/* Whether <name> (lowercase) matches server-name pattern <pat>: exact (case-insensitive), or
 * "*.suffix" matching any name ending in ".suffix" with at least one more label, or "*" alone for
 * any name present. Envoy's server_names semantics. */
bool proxy_sni_match(const char *pat, const char *name);

#endif

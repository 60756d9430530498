// SPDX-License-Identifier: Apache-2.0
// Internals shared by the TLS files (tls_ctx.c builds contexts, tls_store.c reloads them,
// tls_xport.c runs connections): the context's layout and the record of the files a build read,
// which the store compares on each poll. Nothing outside src/net/tls_*.c includes this.
#ifndef SC_NET_TLS_INT_H
#define SC_NET_TLS_INT_H

#include <stdatomic.h>
#include <sys/types.h>
#include <time.h>

#include "net/ossl.h"

#include "net/tls.h"

/* A file a build read, as it was when read: the resolved target's identity and a content hash. */
struct sc__tls_file {
    char *path;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    unsigned char sha256[32];
};

struct sc__tls_files {
    struct sc__tls_file *v;
    size_t n;
};

/* One certificate of a context: its own SSL_CTX (servers switch to it on SNI) and names. */
struct sc__tls_cert {
    SSL_CTX *ssl;
    char **names; /* DNS SANs (or configured server_names), lower case; "*.x" for wildcards */
    size_t nnames;
    bool any_depth; /* names are server_names: a wildcard covers any number of labels */
    struct sc_tls_cert_info info;
};

struct sc_tls_ctx {
    atomic_uint refs;
    bool server;
    SSL_CTX *ssl;               /* server: certs[0].ssl; client: the only one */
    struct sc__tls_cert *certs; /* server: >= 1; client: 0 or 1 (information only) */
    size_t ncerts;
    bool reject_unmatched; /* server: fail a handshake whose SNI no certificate covers */
    unsigned char *alpn;   /* wire format (length-prefixed names) */
    size_t alpn_len;
    char **sans; /* client: names or SPIFFE IDs the server must present */
    size_t nsans;
    char *sni;   /* client: default server name */
    bool verify; /* client: verification on */
    bool native; /* TLS 1.3 records carried by tls_rec.c after the handshake */
    char *own_uri;
    struct sc_tls_ticket_keys *keys;
    struct sc_tls_sessions *sessions;
};

/* The SSL_CTX ex_data index that points back at the struct sc_tls_ctx. */
int sc__tls_ctx_index(void);

/* The reason text of OpenSSL's packed error code <e>, or NULL when OpenSSL has none. OpenSSL runs
 * without its error strings until this first needs them (core/lazylib.h): every OpenSSL reason
 * the TLS code prints goes through here. */
const char *sc__tls_err_reason(unsigned long e);

/* Builds contexts as the public constructors do, recording every file read in <files> (which the
 * caller frees with sc__tls_files_free, also on failure). */
struct sc_tls_ctx *sc__tls_ctx_server(const struct sc_tls_server_opts *o,
                                      struct sc_tls_ticket_keys *keys, struct sc__tls_files *files,
                                      char **err);
struct sc_tls_ctx *sc__tls_ctx_client(const struct sc_tls_client_opts *o,
                                      struct sc_tls_sessions *sessions, struct sc__tls_files *files,
                                      char **err);
void sc__tls_files_free(struct sc__tls_files *f);

/* OpenSSL's key log callback on native contexts: keeps the connection's application
 * traffic secrets for the record layer (tls_xport.c). */
void sc__tls_on_keylog(const SSL *ssl, const char *line);

/* Logs a warning for each certificate of <c> past 90% of its lifetime (or expired). */
void sc__tls_ctx_warn_expiry(const struct sc_tls_ctx *c, const char *name);

/* Keeps <sess> (a new reference is taken) as the last session for <key>. */
void sc__tls_sessions_put(struct sc_tls_sessions *s, const char *key, SSL_SESSION *sess);
/* Returns a new reference to the session kept for <key>, or NULL. */
SSL_SESSION *sc__tls_sessions_get(struct sc_tls_sessions *s, const char *key);

#endif

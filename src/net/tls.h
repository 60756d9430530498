// SPDX-License-Identifier: Apache-2.0
// TLS for the transport chain (OpenSSL 3): immutable, refcounted contexts built from plain option
// structs (server: certificates chosen by SNI, client CA and client-certificate policy, ALPN,
// tickets with rotating keys; client: CA or the system store, an optional certificate, SNI,
// required subject alternative names or SPIFFE IDs, session reuse), a store that rebuilds a
// context when its files change and hands the current one to any thread, the transport layer
// that stacks on any struct sc_xport, and pure functions for peer identity (SPIFFE IDs, Istio
// principals, Envoy's X-Forwarded-Client-Cert element) and first-bytes protocol sniffing.
//
// Key invariants: a context never changes once built (a reload builds a new one; connections keep
// the one they started with until they close); a broken reload never replaces a working context;
// versions below TLS 1.2 are refused at configuration time; the transport layer never blocks and
// holds at most one record of ciphertext in each direction beyond what OpenSSL keeps.
#ifndef SC_NET_TLS_H
#define SC_NET_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "core/config.h"
#include "core/str.h"
#include "net/transport.h"

/* OpenSSL's types, so that includers need no OpenSSL headers. */
struct x509_st;
struct ssl_ctx_st;

/* ---- options ------------------------------------------------------------------------------ */

/* Protocol versions. SC_TLS_VERSION_AUTO (zero) means the default: TLS 1.2 as the minimum, TLS 1.3
 * as the maximum. 1.0 and 1.1 exist only to be refused with a clear message. */
enum sc_tls_version {
    SC_TLS_VERSION_AUTO,
    SC_TLS_VERSION_1_0,
    SC_TLS_VERSION_1_1,
    SC_TLS_VERSION_1_2,
    SC_TLS_VERSION_1_3,
};

/* What a server asks of clients. AUTO (zero): require when client_ca is set, none otherwise. */
enum sc_tls_client_cert {
    SC_TLS_CLIENT_CERT_AUTO,
    SC_TLS_CLIENT_CERT_NONE,
    SC_TLS_CLIENT_CERT_OPTIONAL,
    SC_TLS_CLIENT_CERT_REQUIRE,
};

/* Who carries a connection's records once a TLS 1.3 handshake is done. NATIVE (zero, the
 * default): the layer itself (net/tls_rec.h), and the connection's SSL object is freed, so an
 * idle connection keeps two cipher contexts instead of OpenSSL's ~12 KiB; OPENSSL: OpenSSL
 * throughout. A server moves at the end of the handshake; a client once the server's session
 * tickets are in (or its first data, or at once when it resumes no sessions). TLS 1.2, and any
 * connection whose record state cannot be known exactly, stays on OpenSSL either way. */
enum sc_tls_record_layer {
    SC_TLS_RECORD_NATIVE,
    SC_TLS_RECORD_OPENSSL,
};

/* One certificate and its private key (PEM file paths; the certificate file may hold the chain
 * after the leaf). */
struct sc_tls_cert_opts {
    char *cert;
    char *key;
    struct sc_strv server_names; /* names it is served for instead of its DNS SANs: exact, or
                                    "*.suffix" covering any depth (longest suffix wins) */
    char *client_ca;             /* with client_cert: how clients it is chosen for are verified */
    int client_cert;             /* enum sc_tls_client_cert; AUTO and no client_ca: the server's */
};

/* What a server does with a ClientHello whose SNI no certificate's names cover (or without SNI):
 * DEFAULT (zero) serves the default certificate; REJECT fails the handshake with an
 * unrecognized_name alert, as a listener whose filter chains all name their servers does. */
enum sc_tls_unmatched_sni {
    SC_TLS_UNMATCHED_SNI_DEFAULT,
    SC_TLS_UNMATCHED_SNI_REJECT,
};

/* A server (downstream) context. The first certificate (cert/key, else certificates[0]) is the
 * default; the others are chosen by the SNI the client sends, matched against each certificate's
 * DNS subject alternative names (exact, then a "*." wildcard covering one label). Field types
 * match sc_tls_server_opt_table so the config loader can fill the struct. */
struct sc_tls_server_opts {
    char *cert;                  /* the default certificate (PEM, chain allowed) */
    char *key;                   /* its private key (PEM: ECDSA, RSA or Ed25519) */
    struct sc_vec certificates;  /* more struct sc_tls_cert_opts, chosen by SNI */
    int unmatched_sni;           /* enum sc_tls_unmatched_sni */
    char *client_ca;             /* CA bundle that verifies client certificates */
    int client_cert;             /* enum sc_tls_client_cert */
    struct sc_strv alpn;         /* protocols in our order of preference ("h2", "http/1.1") */
    int min_version;             /* enum sc_tls_version */
    int max_version;             /* enum sc_tls_version */
    int64_t session_cache_size;  /* server session cache entries (0: no cache, tickets only) */
    uint64_t session_timeout_ms; /* lifetime of a session and of a ticket key */
    uint64_t watch_interval_ms;  /* how often the store polls the files (0: never) */
    int record_layer;            /* enum sc_tls_record_layer */
};

/* A client (upstream) context. Verification is on unless insecure_skip_verify: the chain must lead
 * to <ca> (or the system store) and the certificate must carry one of subject_alt_names (DNS names,
 * wildcards in the certificate allowed, or exact spiffe:// URIs); when that list is empty, the
 * SNI name (or IP address) of the connection is checked instead. */
struct sc_tls_client_opts {
    char *ca;                         /* CA bundle; NULL: the system's default store */
    char *cert;                       /* our certificate for mutual TLS (with key) */
    char *key;                        /* its private key */
    char *sni;                        /* the server name to send; a connection may override it */
    struct sc_strv subject_alt_names; /* names or SPIFFE IDs the server must present */
    struct sc_strv alpn;              /* protocols to offer, in order */
    int min_version;                  /* enum sc_tls_version */
    int max_version;                  /* enum sc_tls_version */
    bool insecure_skip_verify;        /* accept any server certificate (tests, debugging) */
    bool session_reuse;               /* offer the last session per destination key */
    uint64_t watch_interval_ms;       /* how often the store polls the files (0: never) */
    int record_layer;                 /* enum sc_tls_record_layer */
};

/* Option tables for the two structs (config.h): the proxy embeds them under its `tls:` keys with
 * SC_OPT_OBJ, so names, defaults and help live here once. */
extern const struct sc_opt sc_tls_server_opt_table[];
extern const struct sc_opt sc_tls_client_opt_table[];
/* The names of enum sc_tls_version and enum sc_tls_client_cert, NULL-terminated. */
extern const char *const sc_tls_version_names[];
extern const char *const sc_tls_client_cert_names[];
extern const char *const sc_tls_unmatched_sni_names[]; /* enum sc_tls_unmatched_sni */
extern const char *const sc_tls_record_layer_names[];  /* enum sc_tls_record_layer */

/* ---- contexts ----------------------------------------------------------------------------- */

struct sc_tls_ctx;
/* Ticket keys shared by the successive contexts of one store, so a reload keeps resumption. */
struct sc_tls_ticket_keys;
/* Client sessions kept per destination key, shared by the successive contexts of one store. */
struct sc_tls_sessions;

/* What a context tells about one of its certificates (metrics, logs). */
struct sc_tls_cert_info {
    char path[256];     /* the certificate file as configured (truncated) */
    char name[256];     /* the first DNS SAN, else the URI SAN, else the subject's CN */
    char serial[80];    /* the serial number in upper-case hex */
    int64_t not_before; /* seconds since the epoch */
    int64_t not_after;
};

/* Builds a server context from <o>. <keys> (borrowed, up-ref'd; NULL: the context makes its own)
 * carries ticket keys across reloads. Returns a new context (refcount 1), or NULL with a new
 * message in <*err> naming the file and the reason (unreadable, bad PEM, no key, key does not
 * match the certificate, version below 1.2, optional/require without client_ca). An expired or
 * nearly expired certificate is logged as a warning, not refused. */
struct sc_tls_ctx *sc_tls_ctx_new_server(const struct sc_tls_server_opts *o,
                                         struct sc_tls_ticket_keys *keys, char **err);

/* Builds a client context from <o>. <sessions> (borrowed, up-ref'd; NULL: the context makes its
 * own when o->session_reuse) keeps sessions across reloads. Returns a new context or NULL with a
 * new message in <*err> (as above; also a cert without key or the reverse). */
struct sc_tls_ctx *sc_tls_ctx_new_client(const struct sc_tls_client_opts *o,
                                         struct sc_tls_sessions *sessions, char **err);

/* Takes one more reference on <c> (thread-safe). Returns <c>. */
struct sc_tls_ctx *sc_tls_ctx_ref(struct sc_tls_ctx *c);

/* Drops a reference; the last one frees the context (its SSL_CTX lives on while connections hold
 * it). NULL-safe, thread-safe. */
void sc_tls_ctx_unref(struct sc_tls_ctx *c);

/* Whether <c> is a server context. */
bool sc_tls_ctx_is_server(const struct sc_tls_ctx *c);

/* Copies what <c> knows of its certificates (server: every pair in order; client: its own
 * certificate if any) into <out> (up to <cap>). Returns how many <c> has. */
size_t sc_tls_ctx_certs(const struct sc_tls_ctx *c, struct sc_tls_cert_info *out, size_t cap);

/* Returns the context's OpenSSL SSL_CTX (borrowed: the default certificate's one for servers), for
 * tests and interop code that needs OpenSSL directly. */
struct ssl_ctx_st *sc_tls_ctx_ssl_ctx(const struct sc_tls_ctx *c);

/* Returns the index (in the order of sc_tls_ctx_certs) of the server certificate whose DNS names
 * (or configured server_names) cover <name> (exact names first, then the longest "*." wildcard:
 * over one label for DNS names, any number for server_names; case-insensitive, a trailing dot
 * ignored): the one SNI <name> selects. Returns -1 when no certificate names it (SNI
 * then gets the default, index 0) or <c> is a client context. */
int sc_tls_ctx_select(const struct sc_tls_ctx *c, struct sc_str name);

/* Returns the URI SAN of the context's own (default) certificate, or an empty view: the "By" of an
 * XFCC element. Borrows from <c>. */
struct sc_str sc_tls_ctx_own_uri(const struct sc_tls_ctx *c);

/* Returns new ticket keys (random, refcount 1) that rotate every <rotate_ms> (0: one hour) when a
 * ticket is made; the previous key still decrypts (and the ticket is renewed) until the next
 * rotation. Thread-safe once made. */
struct sc_tls_ticket_keys *sc_tls_ticket_keys_new(uint64_t rotate_ms);

/* Drops a reference to <k>; the last one wipes and frees the keys. NULL-safe, thread-safe. */
void sc_tls_ticket_keys_unref(struct sc_tls_ticket_keys *k);

/* Returns a new client session table (refcount 1) of at most <cap> destinations (0: 1024); when
 * full, the destination whose session was kept longest ago is forgotten. Thread-safe. */
struct sc_tls_sessions *sc_tls_sessions_new(size_t cap);

/* Drops a reference to <s>; the last one frees it with its sessions. NULL-safe, thread-safe. */
void sc_tls_sessions_unref(struct sc_tls_sessions *s);

/* Forgets every kept session (a CA or certificate change must not resume old sessions). */
void sc_tls_sessions_flush(struct sc_tls_sessions *s);

/* Returns how many destinations have a kept session. */
size_t sc_tls_sessions_count(struct sc_tls_sessions *s);

/* ---- the reloadable store ----------------------------------------------------------------- */

struct sc_tls_store;

/* Builds a store holding a server (or client) context from <o> (copied; <name> labels logs). The
 * first build must succeed: returns NULL with a new message in <*err> otherwise. The store is not
 * watching yet (see sc_tls_store_watch); it can serve --check or tests as it is. */
struct sc_tls_store *sc_tls_store_new_server(const struct sc_tls_server_opts *o, const char *name,
                                             char **err);
struct sc_tls_store *sc_tls_store_new_client(const struct sc_tls_client_opts *o, const char *name,
                                             char **err);

/* Starts polling the store's files on <loop> (the loop that owns the store) every <interval_ms>
 * (0: the options' watch_interval, 1 s in the option table; when both are 0 nothing is watched).
 * Returns 0 or a negative libuv error. Harmless when already watching. The timer does not keep
 * the loop alive, and it logs a certificate nearing its expiry once an hour. */
int sc_tls_store_watch(struct sc_tls_store *s, uv_loop_t *loop, uint64_t interval_ms);

/* Checks the files now (resolved target's device, inode, size and mtime, then a SHA-256 of the
 * content when those changed) and rebuilds the context when any content changed. Returns 1 when a
 * new context took over, 0 when nothing changed, or a negative error when the rebuild failed:
 * the old context stays, the reason is logged and, when <err> is not NULL, returned in it. The
 * same change is not retried until a file changes again. Call on the store's loop only. */
int sc_tls_store_check(struct sc_tls_store *s, char **err);

/* Returns a new reference to the current context (thread-safe; sc_tls_ctx_unref it). */
struct sc_tls_ctx *sc_tls_store_get(struct sc_tls_store *s);

/* Returns how many contexts the store has built (1 after creation; each successful reload adds
 * one). Thread-safe. */
uint64_t sc_tls_store_generation(struct sc_tls_store *s);

/* Copies the current context's certificate information (see sc_tls_ctx_certs). Thread-safe. */
size_t sc_tls_store_certs(struct sc_tls_store *s, struct sc_tls_cert_info *out, size_t cap);

/* Stops watching and frees the store (the current context lives on while referenced). When it
 * was watching, the memory goes in the timer's close callback, so the loop must run once more
 * before uv_loop_close. NULL-safe. Call on the store's loop only. */
void sc_tls_store_free(struct sc_tls_store *s);

/* ---- the transport layer ------------------------------------------------------------------ */

/* Why a handshake (or a later read) failed; stable label names for metrics. */
enum sc_tls_fail {
    SC_TLS_FAIL_NONE,
    SC_TLS_FAIL_UNKNOWN_CA,       /* the peer's chain does not lead to a trusted CA */
    SC_TLS_FAIL_EXPIRED,          /* a certificate is expired or not yet valid */
    SC_TLS_FAIL_BAD_SAN,          /* the peer's names or SPIFFE ID are not the expected ones */
    SC_TLS_FAIL_BAD_CERT,         /* any other certificate problem */
    SC_TLS_FAIL_NO_CLIENT_CERT,   /* a required client certificate was not sent */
    SC_TLS_FAIL_PROTOCOL_VERSION, /* no common protocol version (TLS 1.0/1.1 offered) */
    SC_TLS_FAIL_NOT_TLS,          /* the peer does not speak TLS (plaintext on a TLS port) */
    SC_TLS_FAIL_PEER_CLOSED,      /* the connection closed during the handshake */
    SC_TLS_FAIL_HANDSHAKE,        /* any other handshake failure (no shared cipher, ...) */
    SC_TLS_FAIL_PROTOCOL,         /* a TLS error after the handshake (bad record, alert) */
};

/* Returns the label of <f>: "none", "unknown_ca", "expired", "bad_san", "bad_certificate",
 * "no_client_cert", "protocol_version", "not_tls", "peer_closed", "handshake_error", "protocol". */
const char *sc_tls_fail_name(enum sc_tls_fail f);

/* How a TLS layer is made. */
struct sc_tls_xport_args {
    uv_loop_t *loop;                /* the loop of <below> */
    struct sc_xport *below;         /* borrowed; the layer becomes its owner */
    const struct sc_xport_cbs *cbs; /* the owner's callbacks */
    void *owner;
    struct sc_str preread;   /* server: bytes already read from below (a sniffer's),
                                copied, fed in before anything read later */
    const char *sni;         /* client: server name for this connection (copied; NULL:
                                the context's sni). An IP address is not sent but
                                verified against the certificate's IP SANs */
    const char *session_key; /* client: the destination key for session reuse (copied;
                                NULL: no reuse), e.g. "10.0.0.7:443|sni" */
    struct sc_str alpn;      /* client: the ALPN protocols to offer on this connection, in
                                wire format (length-prefixed names; copied by OpenSSL);
                                empty: the context's */
    bool handshake_cb;       /* server: fire cbs->connected once when the handshake ends
                                (0 or an error), for timers and metrics */
};

/* Makes a TLS layer over args->below with <ctx> (a new reference is taken): a server layer for a
 * server context, a client one otherwise. The layer registers itself as below's owner. A server
 * handshakes from the owner's first read_start or write; a client from sc_xport_connect (which
 * connects below first; with a NULL address below is taken as connected already). Returns the
 * layer, whose memory the layer frees itself after reporting closed; it must be closed
 * (sc_xport_close) even when nothing else happened. */
struct sc_xport *sc_tls_xport_new(struct sc_tls_ctx *ctx, const struct sc_tls_xport_args *args);

/* Returns why the layer's handshake or last read failed (SC_TLS_FAIL_NONE when it did not).
 * <x> must be a layer made by sc_tls_xport_new. */
enum sc_tls_fail sc_tls_xport_fail(struct sc_xport *x);

/* Returns the index of the certificate the server layer <x> presented (see sc_tls_ctx_select; 0
 * before the handshake), or -1 for a client layer. */
int sc_tls_xport_cert_index(struct sc_xport *x);

/* Whether a request for <host> (a Host or :authority value, port allowed) on the server layer <x>
 * is misdirected: the listener has several certificates and <host> is named by another one than
 * the connection presented, so the client must not reuse this connection for it (HTTP 421). A
 * host no certificate names is not misdirected. */
bool sc_tls_xport_misdirected(struct sc_xport *x, struct sc_str host);

/* Writes the X-Forwarded-Client-Cert element for the verified peer of layer <x> into <out> (see
 * sc_tls_xfcc), with By the URI SAN of the certificate this side presented. Returns the length,
 * -ENOENT when the peer sent no certificate (or it was not verified), or SC_ETOOBIG. */
int sc_tls_xport_xfcc(struct sc_xport *x, char *out, size_t cap);

/* Whether <x> is a TLS layer (made by sc_tls_xport_new). */
bool sc_tls_xport_is(const struct sc_xport *x);

/* ---- identity (pure functions; untrusted input) -------------------------------------------- */

#define SC_SPIFFE_ID_MAX 2048

/* A parsed SPIFFE ID; views borrow from the parsed text. */
struct sc_spiffe_id {
    struct sc_str trust_domain; /* "cluster.local" */
    struct sc_str path;         /* "/ns/default/sa/web" (may be empty) */
    struct sc_str ns;           /* "default" when the path is /ns/<ns>/sa/<sa>, else empty */
    struct sc_str sa;           /* "web" likewise */
    struct sc_str principal;    /* Istio's principal: the ID without "spiffe://" */
};

/* Parses and validates <id> as the SPIFFE ID standard defines it: scheme "spiffe://", a trust
 * domain of lower-case letters, digits, '.', '-' and '_', a path of non-empty segments of
 * letters, digits, '.', '-' and '_' that are not "." or "..", no query, fragment, port, user
 * info or trailing slash, at most SC_SPIFFE_ID_MAX bytes. Returns 0 and fills <out>, or -EINVAL. */
int sc_tls_spiffe_parse(struct sc_str id, struct sc_spiffe_id *out);

/* Writes the SPIFFE ID of <cert> (its one URI SAN, valid per sc_tls_spiffe_parse) into <out> (<cap>
 * bytes, NUL-terminated). Returns its length, -ENOENT when the certificate has no URI SAN or
 * several (not an identity), -EINVAL when the one it has is not a valid SPIFFE ID, or SC_ETOOBIG
 * when <cap> is too small. */
int sc_tls_spiffe_id(struct x509_st *cert, char *out, size_t cap);

/* Writes an Envoy X-Forwarded-Client-Cert element for <peer> into <out> (<cap> bytes,
 * NUL-terminated): By=<by>;Hash=<hex SHA-256 of the DER>;Subject="<RFC 2253 subject>";
 * URI=<first URI SAN>;DNS=<each DNS SAN>. By is left out when <by> is empty, URI and DNS when the
 * certificate has none; a SAN (or <by>) that is not printable ASCII without spaces is left out,
 * and the Subject's control and non-ASCII bytes are escaped (RFC 2253), so the element is always
 * safe in a header. A value holding ',', ';', '=' or '"' is double-quoted with '"' and '\'
 * backslash-escaped (Subject always is). Returns the length, or SC_ETOOBIG (nothing usable). */
int sc_tls_xfcc(struct x509_st *peer, struct sc_str by, char *out, size_t cap);

/* ---- first-bytes sniffing (Istio's TLS inspector) ----------------------------------------- */

enum sc_tls_sniff {
    SC_TLS_SNIFF_MORE,  /* too few bytes to tell */
    SC_TLS_SNIFF_TLS,   /* a TLS handshake record holding a ClientHello */
    SC_TLS_SNIFF_PLAIN, /* anything else */
};

/* The most bytes sc_tls_sniff ever needs to decide. */
#define SC_TLS_SNIFF_MAX 6

/* Tells from the first <n> bytes at <p> of a connection whether the client starts a TLS
 * handshake: a handshake record (0x16), version major 3, a plausible record length and a
 * ClientHello (type 1). Answers MORE only while n < SC_TLS_SNIFF_MAX and every byte so far fits. */
enum sc_tls_sniff sc_tls_sniff(const void *p, size_t n);

#endif

// SPDX-License-Identifier: Apache-2.0
// Request authentication with JWTs, Istio's RequestAuthentication semantics: rules by issuer
// (audiences, key sets inline, from a file or fetched from a jwks_uri, token locations, what goes
// upstream), a token verified by the key its issuer publishes with the algorithm that key allows,
// exp/nbf with a bounded clock skew. A request without a token passes without an identity; one
// with an invalid token is answered 401. Verified tokens are cached per worker (bounded, in slots
// chosen by a seeded hash of the token and compared whole, until exp). Key sets fetched from a URI
// are refreshed on an interval and on an unknown kid; a failed refresh keeps the last good set.
// Config structs mirror Istio's spec key for key (snake_case) so `kind: RequestAuthentication`
// translates into them.
#ifndef SC_ROLES_PROXY_PROXY_JWT_H
#define SC_ROLES_PROXY_PROXY_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "core/config.h"
#include "core/metrics.h"
#include "core/str.h"

/* ---- configuration as loaded ---- */

struct proxy_jwt_header_cfg {
    char *name;
    char *prefix;
};

struct proxy_jwt_claim_header_cfg {
    char *header;
    char *claim;
};

struct proxy_jwt_rule_cfg {
    char *issuer;
    struct sc_strv audiences;
    char *jwks;                 /* inline JWKS JSON */
    char *jwks_file;            /* a JWKS file, read at load and reload */
    char *jwks_uri;             /* fetched, cached, refreshed */
    struct sc_vec from_headers; /* struct proxy_jwt_header_cfg */
    struct sc_strv from_params;
    struct sc_strv from_cookies;
    bool forward_original_token;
    char *output_payload_to_header;
    struct sc_vec output_claim_to_headers; /* struct proxy_jwt_claim_header_cfg */
};

/* One RequestAuthentication (metadata and spec). */
struct proxy_ra_cfg {
    char *name;
    char *ns;
    struct sc_kvv match_labels;
    struct sc_vec jwt_rules; /* struct proxy_jwt_rule_cfg */
};

struct proxy_jwt_cfg {
    struct sc_vec request_authentication; /* struct proxy_ra_cfg */
    uint64_t clock_skew_ms;
    uint64_t jwks_refresh_ms;
    int64_t cache_entries;
};

extern const struct sc_opt proxy_jwt_opts[]; /* inlined at the proxy's top level */

/* ---- the crypto (proxy_jwt_crypto.c: every OpenSSL call) ---- */

enum proxy_jwk_family { PROXY_JWK_RSA = 1, PROXY_JWK_EC256, PROXY_JWK_EC384, PROXY_JWK_ED25519 };

enum proxy_jws_alg {
    PROXY_JWS_NONE, /* anything not listed: refused */
    PROXY_JWS_RS256,
    PROXY_JWS_RS384,
    PROXY_JWS_RS512,
    PROXY_JWS_PS256,
    PROXY_JWS_PS384,
    PROXY_JWS_PS512,
    PROXY_JWS_ES256,
    PROXY_JWS_ES384,
    PROXY_JWS_EDDSA,
};

/* Public keys from their JWK members (big-endian bytes). Return a key for proxy_jwt_verify, or
 * NULL with a static reason in <*why>. An RSA modulus under 2048 bits is refused. */
void *proxy_jwt_key_rsa(const uint8_t *n, size_t nlen, const uint8_t *e, size_t elen,
                        const char **why);
void *proxy_jwt_key_ec(int fam, const uint8_t *x, size_t xlen, const uint8_t *y, size_t ylen,
                       const char **why);
void *proxy_jwt_key_ed25519(const uint8_t *x, size_t xlen, const char **why);
void proxy_jwt_key_free(void *key);

/* Verifies JWS signature <sig> over <input> with <key> and <alg> (the caller has checked that
 * the key's family allows the algorithm). Returns 0 when valid, -1 otherwise. */
int proxy_jwt_verify(const void *key, int alg, const char *input, size_t ilen, const uint8_t *sig,
                     size_t slen);

/* ---- key sets (proxy_jwks.c) ---- */

struct proxy_jwks;     /* an immutable, reference-counted set of keys */
struct proxy_jwks_src; /* where a rule's keys come from, shared by snapshots */

/* Parses JWKS JSON <text> into a new key set (refs 1). Keys of unknown types or uses are
 * skipped; returns NULL with a new message in <*err> when <text> is not a JWKS or holds no
 * usable key. */
struct proxy_jwks *proxy_jwks_parse(const char *text, size_t len, char **err);
void proxy_jwks_unref(struct proxy_jwks *ks);

/* The number of keys of <ks>. */
size_t proxy_jwks_count(const struct proxy_jwks *ks);

/* The key of <ks> for a token's <kid> (empty: none given) and <alg>: one whose kid matches
 * (when given), whose family allows <alg> and whose own "alg" (when set) is <alg>. Sets
 * <*kid_known> to whether any key has that kid. Returns the key or NULL. */
const void *proxy_jwks_find(const struct proxy_jwks *ks, struct sc_str kid, int alg,
                            bool *kid_known);

/* A source for a rule: a fixed set (inline or file; takes <ks>) or <uri> fetched every
 * <refresh_ms>. Sources of the same URI are shared (one fetch for every snapshot and rule), and
 * live until the last snapshot using them is gone and the main loop notices. Main loop only. */
struct proxy_jwks_src *proxy_jwks_src_fixed(struct proxy_jwks *ks);
struct proxy_jwks_src *proxy_jwks_src_uri(const char *uri, uint64_t refresh_ms,
                                          struct sc_metric_family *fetches);
/* Drops a reference (any thread). */
void proxy_jwks_src_release(struct proxy_jwks_src *s);

/* The current key set of <s> with a reference (any thread), or NULL before a first fetch
 * succeeded. */
struct proxy_jwks *proxy_jwks_src_get(struct proxy_jwks_src *s);

/* Asks for a refresh soon (any thread): a token named a kid the set does not have. Refreshes
 * that a kid asks for are at most one per 30 s per source. */
void proxy_jwks_src_kick(struct proxy_jwks_src *s);

/* Starts fetching every URI source not yet started, on <loop> (the main loop): at once, then
 * on each source's interval; a failed fetch keeps the last good set and retries after 5 s,
 * doubling up to the interval. Unused sources are closed. Call after each snapshot is built. */
void proxy_jwks_start(uv_loop_t *loop);

/* Stops every fetch and closes the handles (the proxy is stopping). */
void proxy_jwks_stop(void);

/* Frees the sources no snapshot uses any more (after proxy_jwks_stop and the loop ran). */
void proxy_jwks_cleanup(void);

/* Decodes base64url <s> (<n> bytes, no padding, canonical) into <out> (<cap> bytes). Returns the
 * decoded length, or -1 when <s> is not base64url or does not fit. */
long proxy_jwt_b64url(const char *s, size_t n, uint8_t *out, size_t cap);

/* The algorithm a JWS header names ("RS256", ...); PROXY_JWS_NONE for "none", HS*, anything
 * else. */
int proxy_jwt_alg(struct sc_str s);

/* ---- the evaluator (proxy_jwt.c) ---- */

struct proxy_jwt;
struct proxy_workload;
struct proxy_az_auth;
struct sc_http_msg;

/* Builds the rules of <c> that apply to workload <wl> (Istio scoping, <root_ns> mesh-wide).
 * Returns them, NULL when none applies, or NULL with a new message in <*err> (a key set that
 * does not parse, a file that cannot be read). Main loop only. */
struct proxy_jwt *proxy_jwt_new(const struct proxy_jwt_cfg *c, const struct proxy_workload *wl,
                                const char *root_ns, struct sc_metrics *reg, char **err);
void proxy_jwt_free(struct proxy_jwt *j);

/* Checks what the table cannot: an issuer and exactly one key source per rule, prefixes and
 * header names. Returns 0 or SC_ECONFIG with a new message in <*err>. */
int proxy_jwt_check(const struct proxy_jwt_cfg *c, char **err);

/* A worker's verified-token cache. */
struct proxy_jwt_cache;
struct proxy_jwt_cache *proxy_jwt_cache_new(size_t entries);
/* The entries <c> has, and those <j> wants (at least 1: one holds the request's token). */
size_t proxy_jwt_cache_size(const struct proxy_jwt_cache *c);
size_t proxy_jwt_cache_want(const struct proxy_jwt *j);
void proxy_jwt_cache_free(struct proxy_jwt_cache *c);

/* The outcome of authenticating one request: borrowed from the worker's cache until the next
 * request on that worker authenticates. */
struct proxy_jwt_result {
    const struct proxy_az_auth *auth; /* NULL: no token */
    struct sc_str strip;              /* the header line the token came in, when not forwarded */
    struct sc_str add;                /* header lines to add upstream ("Name: value\r\n"...) */
};

/* Authenticates request <m> whose query is <query> (may be empty) with <j>, caching in <cache>
 * (of proxy_jwt_cache_want(j) entries). Returns 0 (with or without a token) or -1 for an invalid
 * token with a static reason in <*why>. <now_s> is the wall clock, seconds. */
int proxy_jwt_authenticate(const struct proxy_jwt *j, struct proxy_jwt_cache *cache,
                           const struct sc_http_msg *m, struct sc_str query, int64_t now_s,
                           struct proxy_jwt_result *res, const char **why);

/* The header names the rules write upstream (lower case, <*n> of them): never taken from the
 * client. Borrowed from <j>. */
const struct sc_str *proxy_jwt_drop_names(const struct proxy_jwt *j, size_t *n);

#endif

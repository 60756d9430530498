// SPDX-License-Identifier: Apache-2.0
// OpenID Connect login in front of the app (the "OAuth proxy" sidecar): an unauthenticated
// browser request is sent to the provider's authorization endpoint (authorization code flow,
// PKCE S256, state and nonce sealed in a short-lived pre-login cookie); the callback exchanges the
// code at the token endpoint, verifies the ID token with the provider's JWKS and sets a session
// cookie sealed with AES-256-GCM (one cookie, bounded, removed before the request goes upstream).
// Requests with a session carry the user's identity upstream in oauth2-proxy's headers (any
// client-sent copy is dropped); requests without one get a 302 (browsers) or a 401 (API calls).
// The provider's discovery document is fetched on the main loop, refreshed, and the last good one
// kept; its JWKS through proxy_jwks.c.
#ifndef SC_ROLES_PROXY_PROXY_OIDC_H
#define SC_ROLES_PROXY_PROXY_OIDC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "core/config.h"
#include "core/metrics.h"
#include "core/str.h"

struct proxy_oidc_cfg {
    bool enabled;
    char *issuer;
    char *client_id;
    char *client_secret;
    char *client_secret_file;
    int token_auth_method; /* 0: client_secret_basic, 1: client_secret_post */
    char *scopes;
    char *redirect_path;
    char *redirect_url;
    char *cookie_name;
    char *cookie_domain;
    bool cookie_secure;
    char *cookie_secret_file;
    char *cookie_secret_previous_file;
    uint64_t session_ttl_ms;
    uint64_t login_timeout_ms;
    uint64_t discovery_refresh_ms;
    struct sc_strv allowed_emails;
    struct sc_strv allowed_domains;
    struct sc_strv allowed_groups;
    char *groups_claim;
    struct sc_strv skip;
    bool pass_authorization_header;
    bool use_refresh_token;
    uint64_t refresh_before_ms;
    bool end_provider_session;
    char *post_logout_redirect_url;
};

/* The proxy's `oidc:` block (issuer unset: no login). */
extern const struct sc_opt proxy_oidc_opts[];

struct proxy_oidc; /* compiled, immutable, owned by a snapshot */

/* Checks what the table cannot (client secret given once, paths, cookie name). Returns 0 or
 * SC_ECONFIG with a new message in <*err>. */
int proxy_oidc_check(const struct proxy_oidc_cfg *c, char **err);

/* Checks the proxy's logins: the top-level one and every listener's (each as proxy_oidc_check,
 * none beside request_authentication, distinct cookie names for distinct providers). */
struct proxy_cfg;
int proxy_oidc_check_all(const struct proxy_cfg *c, char **err);

/* Compiles listener <l>'s own login from its config <lc> (none: the top-level one applies;
 * enabled false: none). Returns 0 or SC_ECONFIG with a new message in <*err>. */
struct proxy_listener;
struct proxy_listener_cfg;
int proxy_oidc_listener_init(struct proxy_listener *l, const struct proxy_listener_cfg *lc,
                             struct sc_metrics *reg, char **err);

/* Compiles <c> (reads the secret and cookie key files). NULL with no error when no issuer is
 * set; NULL with a new message in <*err> otherwise. Main loop only. */
struct proxy_oidc *proxy_oidc_new(const struct proxy_oidc_cfg *c, struct sc_metrics *reg,
                                  char **err);
void proxy_oidc_free(struct proxy_oidc *o);

/* Starts fetching the discovery documents not yet started, on the main loop <loop> (after each
 * snapshot is built); stops every fetch (the proxy is stopping); frees the documents (after the
 * workers are gone). A provider's source lives as long as the process. */
void proxy_oidc_start(uv_loop_t *loop);
void proxy_oidc_stop(void);
void proxy_oidc_cleanup(void);

/* Sessions active (sidecar_oidc_sessions_active): a session made (<d> 1) or ended (<d> -1) that
 * lasts until <expires> (unix seconds), at <now>. Any thread. proxy_oidc_collect sets the gauge
 * (the metrics render). */
void proxy_oidc_live(int64_t expires, int64_t now, int d);
void proxy_oidc_collect(void);

/* ---- the crypto (proxy_oidc_crypto.c: every OpenSSL call of the login) ---- */

#define PROXY_OIDC_KEY_LEN 32
#define PROXY_OIDC_SEAL_OVERHEAD (12 + 16)

/* Fills <p> with <n> random bytes. Returns 0 or -1. */
int proxy_oidc_random(uint8_t *p, size_t n);
/* SHA-256 of <p>. */
void proxy_oidc_sha256(const void *p, size_t n, uint8_t out[32]);
/* AES-256-GCM with a random 96-bit nonce: <out> gets nonce || ciphertext || tag (n + overhead
 * bytes); <aad> is authenticated. Returns 0 or -1. */
int proxy_oidc_seal(const uint8_t key[PROXY_OIDC_KEY_LEN], const uint8_t *in, size_t n,
                    struct sc_str aad, uint8_t *out);
/* Opens what proxy_oidc_seal made: <out> gets n - overhead bytes. Returns their count or -1
 * (too short, tampered, another key). */
long proxy_oidc_open(const uint8_t key[PROXY_OIDC_KEY_LEN], const uint8_t *in, size_t n,
                     struct sc_str aad, uint8_t *out);

/* The same keeping each key's schedule in <*a> (made on first use; one per thread, freed with
 * proxy_oidc_aead_free): what every request with a session pays. */
struct proxy_oidc_aead;
long proxy_oidc_open_cached(struct proxy_oidc_aead **a, const uint8_t key[PROXY_OIDC_KEY_LEN],
                            const uint8_t *in, size_t n, struct sc_str aad, uint8_t *out);
void proxy_oidc_aead_free(struct proxy_oidc_aead *a);

/* A worker's cache of opened session cookies (proxy_oidc_flow.c). */
struct proxy_oidc_cache;
void proxy_oidc_cache_free(struct proxy_oidc_cache *c);

/* ---- pieces exposed for tests and fuzzing ---- */

/* Whether <rd> is a redirect target of this origin: one path starting with a single '/', no
 * backslash, no control character, no scheme or authority. */
bool proxy_oidc_local_target(struct sc_str rd);

/* Finds parameter <name> in query <q> (no leading '?') and percent-decodes its value into <out>
 * (<cap> bytes). Returns the decoded length, -1 when absent, -2 when malformed or too long or
 * given twice. */
long proxy_oidc_query_param(struct sc_str q, const char *name, char *out, size_t cap);

/* A session as the cookie holds it. */
struct proxy_oidc_session {
    int64_t expires;   /* unix seconds: the session ends */
    int64_t token_exp; /* unix seconds: the provider's tokens expire (0: unknown) */
    struct sc_str iss, sub, email, user, groups, id_token;
    struct sc_str refresh_token; /* empty: none was granted */
};

/* Encodes <s> sealed under <key> as a cookie value (base64url) into <out> (<cap> bytes). Returns
 * its length or -1 when it does not fit. */
long proxy_oidc_session_encode(const uint8_t key[PROXY_OIDC_KEY_LEN], struct sc_str aad,
                               const struct proxy_oidc_session *s, char *out, size_t cap);
/* Decodes cookie value <v> with <key> into <s> (views into <buf>, <cap> bytes), with the
 * contexts of <*a> when <a> is not NULL. Returns 0, or -1 when it is malformed, tampered, or of
 * another key. */
int proxy_oidc_session_decode(const uint8_t key[PROXY_OIDC_KEY_LEN], struct sc_str aad,
                              struct sc_str v, struct proxy_oidc_session *s, uint8_t *buf,
                              size_t cap, struct proxy_oidc_aead **a);

#endif

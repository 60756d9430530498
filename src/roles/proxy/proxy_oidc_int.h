// SPDX-License-Identifier: Apache-2.0
// What proxy_oidc.c (options, discovery, cookie codecs) and proxy_oidc_flow.c (the login flow on
// the exchange) share: the compiled login and its provider's discovery document.
#ifndef SC_ROLES_PROXY_PROXY_OIDC_INT_H
#define SC_ROLES_PROXY_PROXY_OIDC_INT_H

#include <stdatomic.h>

#include "roles/proxy/proxy_jwt.h"
#include "roles/proxy/proxy_oidc.h"

#define OIDC_NDROP 6

/* One fetched discovery document (immutable, reference-counted). */
struct proxy_oidc_doc {
    atomic_int refs;
    char *authorization_endpoint;
    char *token_endpoint;
    char *end_session_endpoint; /* may be NULL */
    struct proxy_jwks_src *jwks;
};

struct proxy_oidc_disc; /* a provider's discovery source, shared by snapshots */

struct proxy_oidc {
    uint64_t id; /* unique per compiled login: the session cache's owner */
    struct proxy_oidc_disc *disc;
    char *issuer;
    char *client_id;
    char *client_secret;
    char *basic_id, *basic_secret; /* form-urlencoded for Basic auth (RFC 6749 2.3.1) */
    int auth_method;
    char *scopes; /* percent-encoded for the authorization request */
    char *redirect_path;
    char *redirect_url; /* NULL: from the request's Host and the listener's scheme */
    char *cookie_name;
    char *csrf_name;
    char *cookie_domain;
    struct sc_str name_s, csrf_s, rpath_s, iss_s; /* the strings above, measured once */
    bool secure;
    uint8_t key[PROXY_OIDC_KEY_LEN];
    uint8_t prev_key[PROXY_OIDC_KEY_LEN];
    bool has_prev;
    int64_t ttl_s;
    int64_t login_s;
    struct sc_strv emails, domains, groups;
    char *groups_claim;
    struct sc_strv skip;
    bool pass_auth;
    bool refresh;          /* keep and use the provider's refresh token */
    int64_t refresh_early; /* seconds before the tokens' expiry a request refreshes them */
    bool end_session;      /* sign-out also ends the provider's session */
    char *post_logout_url; /* NULL: the request's scheme and Host with the local rd */
    /* Client headers never forwarded: the identity names (ndrop), then "cookie" (dropped when
     * several Cookie fields are joined into one rewritten field). */
    struct sc_str drop[OIDC_NDROP];
    size_t ndrop;
    struct sc_metric *m_login_ok, *m_login_state, *m_login_token, *m_login_idtoken, *m_login_denied,
        *m_login_provider;
    struct sc_metric *m_sess_ok, *m_sess_invalid, *m_sess_expired, *m_sess_none;
    struct sc_metric *m_refresh_ok, *m_refresh_failed, *m_refresh_error;
};

/* The current discovery document of <o> with a reference, or NULL before a first fetch. */
struct proxy_oidc_doc *proxy_oidc_doc_get(const struct proxy_oidc *o);
void proxy_oidc_doc_unref(struct proxy_oidc_doc *d);

/* base64url without padding of <n> bytes into <out> (room for 4 * ceil(n / 3)). Returns the
 * length written. */
size_t proxy_oidc_b64url(const uint8_t *p, size_t n, char *out);

#endif

// SPDX-License-Identifier: Apache-2.0
// CORS (cross-origin resource sharing) on a route, as Envoy's cors filter applies a route's or
// virtual host's CorsPolicy: a preflight (OPTIONS with Origin and Access-Control-Request-Method)
// is answered by the proxy with 200 and the Access-Control-Allow-* headers, or forwarded when its
// origin is not allowed and forward_not_matching_preflights holds; an actual request from an
// allowed origin gets Access-Control-Allow-Origin (the origin), -Allow-Credentials and
// -Expose-Headers on its response, upstream's or the proxy's own. Every response of a route whose
// policy is enforced carries `Vary: Origin` (unless upstream's Vary names Origin or is `*`), so a
// cache never serves one origin's answer to another.
//
// A listener's `cors` applies to its routes that have none (a virtual host's policy); a route's
// replaces it whole. The compiled policy hangs off the route's traffic policy (NULL without one),
// so a route without CORS pays nothing more than before.
#ifndef SC_ROLES_PROXY_PROXY_CORS_H
#define SC_ROLES_PROXY_PROXY_CORS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/str.h"
#include "net/http1.h"

struct proxy_exch;
struct proxy_hsink;
struct proxy_metrics;
struct proxy_route;

/* One allowed origin: exactly one of exact, prefix, suffix, contains, regex (Envoy's
 * StringMatcher; a matcher that matches "*" allows every origin, as in Envoy). */
struct proxy_cors_origin_cfg {
    char *exact;
    char *prefix;
    char *suffix;
    char *contains;
    char *regex; /* the whole origin must match */
    bool ignore_case;
};

struct proxy_cors_cfg {
    bool set;                    /* the block is present */
    struct sc_vec allow_origins; /* struct proxy_cors_origin_cfg */
    char *allow_methods;         /* Access-Control-Allow-Methods ("*": the requested method) */
    char *allow_headers;         /* Access-Control-Allow-Headers ("*": the requested headers) */
    char *expose_headers;        /* Access-Control-Expose-Headers */
    char *max_age;               /* a duration, sent in seconds; NULL: no Access-Control-Max-Age */
    bool allow_credentials;
    bool allow_private_network_access;
    bool forward_not_matching_preflights;
    double filter_enabled; /* percent of requests the policy is enforced on */
    double shadow_enabled; /* percent of the others whose origin is only checked and counted */
};

/* The `cors` block of a policy, and the listener's and route's entries holding it (their check
 * marks the block present and runs proxy_cors_check, so errors carry its position). */
extern const struct sc_opt proxy_cors_opts[];
extern const struct sc_opt proxy_cors_listener_opts[];
extern const struct sc_opt proxy_cors_route_opts[];

/* Checks policy <c>: origins with exactly one matcher, regexes that compile, header lists that
 * are field values, max_age a duration. Returns 0 or SC_ECONFIG with a new message in <*err>. */
int proxy_cors_check(const struct proxy_cors_cfg *c, char **err);

/* The compiled policy. */
struct proxy_cors;

/* What a request keeps of its policy for its response (the exchange's pol.cors): made when a
 * policy is enforced on it, one allocation with its header lines, freed by proxy_cors_release. */
struct proxy_cors_req {
    const struct proxy_cors *policy; /* enforced: Vary: Origin; NULL: not (any more) */
    const struct proxy_route *pre;   /* a preflight let past authentication for its policy */
    bool allowed;                    /* the origin is allowed: upstream's headers replaced */
    bool vary_seen;                  /* upstream's Vary names Origin or is "*" */
    char buf[];                      /* the exchange's resp_add with the CORS headers */
};

/* Compiles <c> (checked) for route <rname> of listener <lname>, its counters from <pm>. Returns
 * a new policy, or NULL when <c> is not set. */
struct proxy_cors *proxy_cors_new(const struct proxy_cors_cfg *c, const char *lname,
                                  const char *rname, struct proxy_metrics *pm);

/* True when policy <c> (NULL: none) matches an origin by regex (the worker's match data). */
bool proxy_cors_regex(const struct proxy_cors *c);

/* Frees <c> (NULL-safe). */
void proxy_cors_free(struct proxy_cors *c);

/* Registers sidecar_cors_origin_total and sidecar_cors_preflight_total. */
void proxy_cors_metrics_init(struct proxy_metrics *pm);

/* Applies policy <c> of exchange <r>'s route to request <m>: returns 0 to go on (the response
 * headers to add kept in the exchange), or 1 when the proxy answered the preflight itself. */
int proxy_cors_request(struct proxy_exch *r, const struct sc_http_msg *m,
                       const struct proxy_cors *c);

/* Whether preflight <m> (normalised <path>) on exchange <r>'s listener is one the route's policy
 * answers itself: then it goes past the login, JWT and authorization steps, which a browser's
 * preflight (never credentialed) could not pass, as with Envoy's cors filter before them. */
bool proxy_cors_preflight_first(struct proxy_exch *r, const struct sc_http_msg *m,
                                struct sc_str path);

/* True when upstream's response header <h> is one the policy sets instead (Access-Control-Allow-
 * Origin, -Credentials, -Expose-Headers); notes a Vary that names Origin or is "*". */
bool proxy_cors_skip_resp_header(struct proxy_exch *r, const struct sc_http_header *h);

/* Adds `Vary: Origin` to <s> when the request's policy wants it and the response has none that
 * covers it. Returns 0 or SC_ETOOBIG. */
int proxy_cors_vary(const struct proxy_exch *r, struct proxy_hsink *s);

/* Frees what the exchange's CORS state holds (called when the exchange ends). */
void proxy_cors_release(struct proxy_exch *r);

#endif

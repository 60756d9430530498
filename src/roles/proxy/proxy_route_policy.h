// SPDX-License-Identifier: Apache-2.0
// Route traffic policy of the proxy: local rate limiting (token buckets), weighted destinations
// and endpoint subsets, cookie matches, header transforms and path/host rewrites, fault injection
// and request mirroring. Configuration structs and option tables live here (proxy_config.c embeds
// them); the compiled form hangs off a route as one pointer that is NULL for a route with none of
// it, so a plain route pays one test per request.
//
// Rate-limit buckets live outside the runtime snapshot: a registry keyed by the limiter's name
// (listener/route) and its parameters hands the same limiter to every snapshot that asks for it,
// reference counted, so a reload keeps the bucket state of routes whose limit did not change.
#ifndef SC_ROLES_PROXY_PROXY_ROUTE_POLICY_H
#define SC_ROLES_PROXY_PROXY_ROUTE_POLICY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/list.h"
#include "core/metrics.h"
#include "core/str.h"
#include "net/http1.h"
#include "roles/proxy/proxy_hash.h"
#include "roles/proxy/proxy_hsink.h"
#include "roles/proxy/proxy_route_query.h"

struct proxy_cluster;
struct proxy_route;
struct proxy_listener;
struct proxy_rt;
struct proxy_exch;
struct proxy_worker;
struct proxy_metrics;
struct proxy_cfg;
struct proxy_cluster_cfg;
struct proxy_route_cfg;
struct proxy_listener_cfg;
struct proxy_cors;
struct proxy_cors_req;

/* ---- configuration as loaded ---- */

enum { PROXY_RL_SECOND, PROXY_RL_MINUTE, PROXY_RL_HOUR };
enum { PROXY_RL_KEY_GLOBAL, PROXY_RL_KEY_CLIENT_IP, PROXY_RL_KEY_HEADER };

struct proxy_rl_cfg {
    int64_t requests_per_unit; /* 0: no rate limit */
    int unit;
    int64_t burst; /* 0: requests_per_unit */
    int key;
    char *header;
    int64_t max_keys;
    bool headers;
};

struct proxy_weighted_cfg {
    char *cluster;
    char *subset;
    int64_t weight;
};

struct proxy_hdr_ops_cfg {
    struct sc_kvv set;
    struct sc_kvv add;
    struct sc_strv remove;
};

struct proxy_headers_cfg {
    struct proxy_hdr_ops_cfg request;
    struct proxy_hdr_ops_cfg response;
};

struct proxy_fault_delay_cfg {
    uint64_t fixed_delay_ms;
    double percentage;
};

struct proxy_fault_abort_cfg {
    int64_t http_status;
    double percentage;
};

struct proxy_fault_cfg {
    struct proxy_fault_delay_cfg delay;
    struct proxy_fault_abort_cfg abort;
};

/* A route answered by the proxy itself (proxy_route_action.c). */
struct proxy_direct_cfg {
    int64_t status; /* 0: not set */
    char *body;
    char *content_type;
};

/* A route that answers health checks (proxy_route_health.c, Envoy's health_check filter). */
struct proxy_health_ep_cfg {
    bool set;                  /* the block is present */
    bool pass_through;         /* forward to the next matching route unless draining */
    struct sc_vec min_healthy; /* struct proxy_min_healthy_cfg */
};

struct proxy_min_healthy_cfg {
    char *cluster;
    double percent;
};

struct proxy_redirect_cfg {
    char *scheme;
    bool https_redirect;
    char *host;
    int64_t port; /* 0: the request's (dropped when the scheme changes) */
    char *path;
    char *prefix_rewrite;
    bool strip_query;
    int64_t response_code; /* 0: 301 */
};

#define PROXY_DIRECT_BODY_MAX 4096

struct proxy_mirror_cfg {
    char *cluster;
    double percentage;
};

struct proxy_subset_cfg {
    char *name;
    struct sc_kvv labels;
};

struct proxy_labeled_ep_cfg {
    char *address;
    struct sc_kvv labels;
};

/* Option tables (proxy_policy.c), referenced from the route, listener and cluster tables. */
extern const struct sc_opt proxy_rl_opts[];
extern const struct sc_opt proxy_weighted_opts[];
extern const struct sc_opt proxy_headers_opts[];
extern const struct sc_opt proxy_fault_opts[];
extern const struct sc_opt proxy_mirror_opts[];
extern const struct sc_opt proxy_subset_opts[];
extern const struct sc_opt proxy_labeled_ep_opts[];
extern const struct sc_opt proxy_direct_opts[];    /* proxy_route_action.c */
extern const struct sc_opt proxy_redirect_opts[];  /* proxy_route_action.c */
extern const struct sc_opt proxy_health_ep_opts[]; /* proxy_route_health.c */

/* The check callback of a route's `health_endpoint`: marks the block present. */
int proxy_health_ep_mark(void *field, char **err);

/* Checks route <rc>'s health_endpoint against the clusters of <c> (<where> names the route).
 * Returns 0 or SC_ECONFIG with a new message in <*err>. */
struct proxy_cfg;
int proxy_health_ep_check(const struct proxy_cfg *c, const struct proxy_route_cfg *rc,
                          const char *where, char **err);

/* The status a health_endpoint answers for exchange <r>: 503 while the worker drains or when a
 * min_healthy cluster has fewer healthy endpoints (neither failing active checks nor ejected)
 * than its percent of all, 200 otherwise. */
struct proxy_exch;
int proxy_health_ep_status(const struct proxy_exch *r, const struct sc_vec *min_healthy);

/* True when route <rc> has a redirect or a direct_response. */
bool proxy_route_action_set(const struct proxy_route_cfg *rc);

/* Checks route <rc>'s redirect and direct_response (<where> names the route). Returns 0 or
 * SC_ECONFIG with a new message in <*err>. */
int proxy_route_action_check(const struct proxy_route_cfg *rc, const char *where, char **err);

/* Parses a --rate-limit value "N/s", "N/m" or "N/h" (also /second, /minute, /hour) into <out>
 * (keyed by client IP, burst N). Returns 0 or -EINVAL. */
int proxy_rl_parse_flag(const char *s, struct proxy_rl_cfg *out);

/* The option check of a --rate-limit value (a string field, NULL: unset). */
int proxy_rl_flag_check(void *field, char **err);

/* Checks the policy options of route <ri> of listener <l> against the clusters of <c>, and the
 * route's timeouts. Returns 0, or SC_ECONFIG with a new message in <*err>. */
int proxy_route_policy_check_route(const struct proxy_cfg *c, const struct proxy_listener_cfg *l,
                                   size_t ri, char **err);

/* Checks a cluster's subsets and labeled endpoints. Returns 0 or SC_ECONFIG with <*err>. */
int proxy_route_policy_check_cluster(const struct proxy_cluster_cfg *cc, char **err);

/* Checks a rate-limit block (<where> names it in messages). Returns 0 or SC_ECONFIG. */
int proxy_rl_check(const struct proxy_rl_cfg *rl, const char *where, char **err);

/* ---- token buckets (proxy_ratelimit.c) ---- */

/* One bucket: <tokens> in millionths of a token, refilled lazily from <last_ns>. */
struct proxy_tb {
    uint64_t tokens;
    uint64_t last_ns;
};

struct proxy_rl_params {
    uint64_t capacity; /* burst, whole tokens */
    uint64_t per_unit; /* tokens added per unit */
    uint64_t unit_ns;  /* the unit */
    uint64_t max_keys; /* keyed limiters: the table's bound */
    int key;           /* PROXY_RL_KEY_* */
    char header[64];   /* PROXY_RL_KEY_HEADER: lower-case name */
};

/* The outcome of one take, for the x-ratelimit-* headers. */
struct proxy_rl_result {
    bool allowed;
    uint32_t limit;       /* the burst */
    uint32_t remaining;   /* whole tokens left after this request */
    uint32_t reset_s;     /* seconds until the bucket is full again (rounded up) */
    uint32_t retry_after; /* when refused: seconds until one token is there (at least 1) */
};

/* Initialises <b> full at <now_ns>. */
void proxy_tb_init(struct proxy_tb *b, const struct proxy_rl_params *p, uint64_t now_ns);

/* Refills <b> for the time since its last use and takes one token when there is one. Fills
 * <res>. Pure: the caller serialises calls on one bucket. */
void proxy_tb_take(struct proxy_tb *b, const struct proxy_rl_params *p, uint64_t now_ns,
                   struct proxy_rl_result *res);

/* True when <b> is full at <now_ns> (an evicted full bucket loses nothing). */
bool proxy_tb_full(const struct proxy_tb *b, const struct proxy_rl_params *p, uint64_t now_ns);

struct proxy_rl;

/* Returns a limiter named <name> with <p>: the registry's existing one when one with that name and
 * the same parameters exists (its buckets kept), else a new one. The caller owns one reference.
 * <m_limited> counts refused requests (borrowed; may be NULL). Thread-safe. */
struct proxy_rl *proxy_rl_acquire(const char *name, const struct proxy_rl_params *p,
                                  struct sc_metric *m_limited);

/* Drops a reference; the last one frees the limiter and its table. NULL-safe. Thread-safe. */
void proxy_rl_release(struct proxy_rl *rl);

/* Takes one token from the bucket of <key> (ignored for a global limiter) at <now_ns>; a key
 * seen for the first time gets a full bucket, evicting the least recently used key when the
 * table holds max_keys. Counts refusals. Fills all of <res> when <info> or refused; an allowed
 * take without <info> leaves remaining and reset_s 0 (the headers are not wanted: spares two
 * divisions). Thread-safe (one short mutex per limiter). */
void proxy_rl_take(struct proxy_rl *rl, struct sc_str key, uint64_t now_ns, bool info,
                   struct proxy_rl_result *res);

/* The limiter's parameters (borrowed). */
const struct proxy_rl_params *proxy_rl_params_of(const struct proxy_rl *rl);

/* Number of keys the limiter holds (tests). */
size_t proxy_rl_nkeys(struct proxy_rl *rl);

/* Picks an index from cumulative weights <cum>[0..n) (strictly increasing, cum[n-1] > 0) for a
 * uniform random <r>. */
size_t proxy_weighted_pick(const uint32_t *cum, size_t n, uint64_t r);

/* ---- compiled policy (the snapshot's) ---- */

struct proxy_subset {
    char *name;
    uint32_t *idx; /* endpoints of the cluster in the subset */
    size_t n;
    atomic_uint rr;
};

struct proxy_dest {
    struct proxy_cluster *cluster;
    struct proxy_subset *subset; /* NULL: every endpoint */
    /* sidecar_requests_total series by status code, cached as the route's are */
    _Atomic(struct sc_metric *) codes[500];
};

/* A header value: literal text with %VARIABLE% substitutions, compiled. */
struct proxy_tmpl;

struct proxy_hdr_op {
    struct sc_str name;
    struct proxy_tmpl *value;
};

struct proxy_hdr_ops {
    struct proxy_hdr_op *set, *add;
    size_t nset, nadd;
    struct sc_str *remove;
    size_t nremove;
};

struct proxy_route_policy {
    struct proxy_dest *dests; /* weighted destinations, or the route's one with a subset */
    uint32_t *cum;            /* cumulative weights */
    size_t ndests;
    struct sc_str *cookie_names, *cookie_values; /* match.cookies; value p NULL: present */
    bool *cookie_present;
    size_t ncookies;
    struct proxy_rl *rl;
    bool rl_headers;
    uint64_t delay_ms;
    uint32_t delay_ppm; /* per million */
    int abort_status;
    uint32_t abort_ppm;
    struct proxy_cluster *mirror;
    uint32_t mirror_ppm;
    struct sc_metric *m_mirror;         /* mirrored requests sent */
    struct sc_metric *m_mirror_dropped; /* mirrors dropped (bound, body, failure) */
    struct proxy_hdr_ops req, resp;
    char *prefix_rewrite;
    size_t match_prefix_len; /* the route's match.prefix that prefix_rewrite replaces */
    struct proxy_regex_rewrite *regex_rewrite;
    struct proxy_query_match *query; /* match.query_parameters */
    size_t nquery;
    bool query_regex; /* a query parameter is matched by regex (the worker's match data) */
    struct proxy_hash_policy *hash; /* hash_policy */
    size_t nhash;
    char *host_rewrite;
    struct proxy_route_action *act; /* redirect or direct_response; NULL: upstream */
    struct proxy_cors *cors;        /* the route's CORS policy (proxy_cors.c); NULL: none */
};

struct proxy_route_action;

/* Compiles route <rc>'s action (NULL when it has none). */
struct proxy_route_action *proxy_route_action_new(const struct proxy_route_cfg *rc);

/* Frees <a> (NULL-safe). */
void proxy_route_action_free(struct proxy_route_action *a);

/* The local answer of exchange <r>'s route action for request <m> (origin-form target
 * <origin>): returns the status and sets <*body> (borrowed from the route), <*ctype> (NULL:
 * text/plain), the response <*flags>, and a redirect's Location header line in <hdrs>. */
int proxy_route_action_answer(const struct proxy_exch *r, const struct sc_http_msg *m,
                              struct sc_str origin, struct sc_buf *hdrs, struct sc_str *body,
                              const char **ctype, unsigned *flags);

/* Per-request policy state, in struct proxy_exch (zeroed per request). */
struct proxy_req_pol {
    struct proxy_rl_result rl;
    bool has_rl;                 /* rl filled and its headers wanted */
    struct proxy_cors_req *cors; /* CORS state (proxy_cors.c), made when a policy applies */
    bool mirror;                 /* mirror once the body is complete */
    uint64_t delay_ms;           /* fault delay before the first try */
};

/* Builds the policy of route <r> from <rc> of listener <lc> (whose cors applies to a route
 * without its own) (the snapshot <rt> has its clusters already; <lname>
 * names the limiter). Sets r->pol, NULL when the route has no policy. Returns 0 or SC_ECONFIG
 * with <*err>. */
int proxy_route_policy_route_init(struct proxy_route *r, const struct proxy_route_cfg *rc,
                                  const struct proxy_listener_cfg *lc, struct proxy_rt *rt,
                                  const char *lname, struct proxy_metrics *pm, char **err);

/* Frees route <r>'s policy. */
void proxy_route_policy_route_free(struct proxy_route *r);

/* Builds cluster <c>'s subsets from <cc> (labels of endpoints listed after the plain ones). */
void proxy_route_policy_cluster_init(struct proxy_cluster *c, const struct proxy_cluster_cfg *cc);

/* Frees cluster <c>'s subsets. */
void proxy_route_policy_cluster_free(struct proxy_cluster *c);

/* Finds subset <name> of <c>, or NULL. */
struct proxy_subset *proxy_cluster_subset(struct proxy_cluster *c, const char *name);

/* Builds the listener-level limiter of <l> (config, or the --rate-limit flag). */
void proxy_route_policy_listener_init(struct proxy_listener *l, const struct proxy_rl_cfg *rc,
                                      struct proxy_metrics *pm);

/* The value of cookie <name> in <m>'s Cookie headers ("" when empty), or p == NULL. */
struct sc_str proxy_route_cookie_value(const struct sc_http_msg *m, struct sc_str name);

/* True when route <pol>'s cookie matches hold for <m> (NULL pol: true). */
bool proxy_route_policy_match(const struct proxy_route_policy *pol, const struct sc_http_msg *m,
                              pcre2_match_data *md);

enum {
    PROXY_ROUTE_POL_GO = 0,
    PROXY_ROUTE_POL_REPLY = 1,
    PROXY_ROUTE_POL_ACTION = 2,
    PROXY_ROUTE_POL_DONE = 3 /* answered already (a CORS preflight) */
};

/* Runs the policy of exchange <r>'s route for request <m> once routed: CORS (a preflight answered
 * here: PROXY_ROUTE_POL_DONE), rate limits (listener, then route), fault abort and delay
 * decisions, the destination (r->cluster, r->subset, r->codes) and the mirror decision. Returns
 * PROXY_ROUTE_POL_GO, or PROXY_ROUTE_POL_REPLY with the local answer's <*status>, <*reason> and
 * response <*flags> set. */
int proxy_route_policy_request(struct proxy_exch *r, const struct sc_http_msg *m, int *status,
                               const char **reason, unsigned *flags);

/* True when request header <name> is replaced or removed by the route's transforms. */
bool proxy_route_policy_skip_req_header(const struct proxy_route_policy *pol, struct sc_str name);

/* Adds the route's request headers (host rewrite, set, add) for <m> to sink <s>. Returns 0 or
 * SC_ETOOBIG. */
int proxy_route_policy_req_headers(struct proxy_exch *r, const struct sc_http_msg *m,
                                   struct proxy_hsink *s);

/* Starts request head <s> with the route's prefix rewrite applied to <origin> (<pol> may be
 * NULL). */
int proxy_route_policy_request_line(const struct proxy_route_policy *pol, struct proxy_hsink *s,
                                    struct sc_str method, struct sc_str origin);

/* True when response header <h> of exchange <r> is replaced or removed by the route's transforms
 * or its CORS policy. */
bool proxy_route_policy_skip_resp_header(struct proxy_exch *r, const struct proxy_route_policy *pol,
                                         const struct sc_http_header *h);

/* Adds the route's response headers and the rate-limit headers to sink <s>. Returns 0 or
 * SC_ETOOBIG. */
int proxy_route_policy_resp_headers(struct proxy_exch *r, struct proxy_hsink *s);

/* Adds the request's rate-limit headers (x-ratelimit-*, Retry-After when refused) to <s>: for
 * the local replies of any codec. Returns 0 or SC_ETOOBIG. */
int proxy_route_policy_rl_headers(const struct proxy_exch *r, struct proxy_hsink *s);

/* Writes a local reply like sc_http1_write_simple, with the rate-limit headers of the request
 * (Retry-After on 429). */
int proxy_route_policy_write_local(struct proxy_exch *r, struct sc_buf *b, int status,
                                   const char *content_type, struct sc_str body, bool close);

/* ---- mirroring (proxy_mirror.c) ---- */

/* Sends a copy of exchange <r> (head and the retained body) to the route's mirror cluster, fire and
 * forget: the Host gets "-shadow" appended, the answer is read and dropped. Bounded per worker;
 * a mirror beyond the bound, or that fails, is counted and dropped. */
void proxy_mirror_start(struct proxy_exch *r);

/* The request's body outgrew the retry buffer: its mirror is dropped and counted. */
void proxy_mirror_drop(struct proxy_exch *r);

/* Closes every mirror of worker <w> (drain and stop). */
void proxy_mirror_stop_all(struct proxy_worker *w);

#endif

// SPDX-License-Identifier: Apache-2.0
// CORS on a route (see proxy_cors.h): the `cors` option table, its check, the compiled policy,
// and the per-request work. What the proxy writes back is either configuration (checked to be
// field values at load) or a value the client sent in a parsed header (the origin, the requested
// method and headers), so no response line can be split. The state a request keeps for its
// response is one owned buffer in the exchange, freed when the exchange ends.
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/regex.h"
#include "core/value.h"
#include "roles/proxy/proxy_conn.h"
#include "roles/proxy/proxy_cors.h"
#include "roles/proxy/proxy_hsink.h"

static const struct sc_opt origin_opts[] = {
    { .name = "exact",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_cors_origin_cfg, exact),
      .help = "the origin, as the browser sends it (scheme://host[:port]); \"*\": any origin" },
    { .name = "prefix",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_cors_origin_cfg, prefix),
      .help = "origins that start with this" },
    { .name = "suffix",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_cors_origin_cfg, suffix),
      .help = "origins that end with this (\".example.com\")" },
    { .name = "contains",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_cors_origin_cfg, contains),
      .help = "origins that contain this" },
    { .name = "regex",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_cors_origin_cfg, regex),
      .help = "origins the regular expression matches whole (PCRE2)" },
    { .name = "ignore_case",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct proxy_cors_origin_cfg, ignore_case),
      .def = "false",
      .help = "exact, prefix, suffix and contains compare ASCII letters case-insensitively" },
    { 0 },
};

const struct sc_opt proxy_cors_opts[] = {
    { .name = "allow_origins",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct proxy_cors_cfg, allow_origins),
      .help = "origins allowed (one of exact, prefix, suffix, contains, regex each); a matcher "
              "that matches \"*\" allows every origin; none: no origin is allowed",
      .sub = origin_opts,
      .sub_size = sizeof(struct proxy_cors_origin_cfg),
      .max = 256 },
    { .name = "allow_methods",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_cors_cfg, allow_methods),
      .help = "Access-Control-Allow-Methods of preflight answers (\"GET, POST\"); \"*\": the "
              "method the preflight asks for; unset: none" },
    { .name = "allow_headers",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_cors_cfg, allow_headers),
      .help = "Access-Control-Allow-Headers of preflight answers; \"*\": the headers the "
              "preflight asks for; unset: none" },
    { .name = "expose_headers",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_cors_cfg, expose_headers),
      .help = "Access-Control-Expose-Headers of responses to allowed origins; unset: none" },
    { .name = "max_age",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_cors_cfg, max_age),
      .help = "how long a browser may cache a preflight answer (a duration, sent in seconds as "
              "Access-Control-Max-Age); unset: not sent" },
    { .name = "allow_credentials",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct proxy_cors_cfg, allow_credentials),
      .def = "false",
      .help = "send Access-Control-Allow-Credentials: true (cookies and authorization headers "
              "allowed on cross-origin requests)" },
    { .name = "allow_private_network_access",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct proxy_cors_cfg, allow_private_network_access),
      .def = "false",
      .help = "answer a preflight's Access-Control-Request-Private-Network: true with "
              "Access-Control-Allow-Private-Network: true" },
    { .name = "forward_not_matching_preflights",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct proxy_cors_cfg, forward_not_matching_preflights),
      .def = "true",
      .help = "a preflight from an origin not allowed goes upstream; false: the proxy answers it "
              "200 without Access-Control-Allow-Origin" },
    { .name = "filter_enabled",
      .type = SC_OPT_DOUBLE,
      .offset = offsetof(struct proxy_cors_cfg, filter_enabled),
      .def = "100",
      .help = "percent of requests the policy is enforced on",
      .min = 0,
      .max = 100 },
    { .name = "shadow_enabled",
      .type = SC_OPT_DOUBLE,
      .offset = offsetof(struct proxy_cors_cfg, shadow_enabled),
      .def = "0",
      .help = "percent of the requests not enforced whose origin is checked and counted only "
              "(shadow mode)",
      .min = 0,
      .max = 100 },
    { 0 },
};

/* The check of a `cors` block, run once it is loaded (errors at its position): marks it present
 * and checks it. */
static int cors_loaded(void *field, char **err)
{
    struct proxy_cors_cfg *c = field;
    c->set = true;
    return proxy_cors_check(c, err);
}

const struct sc_opt proxy_cors_listener_opts[] = {
    { .name = "cors",
      .type = SC_OPT_OBJ,
      .help = "CORS policy of the routes without one of their own (a virtual host's; "
              "docs/cors.md)",
      .sub = proxy_cors_opts,
      .check = cors_loaded },
    { 0 },
};

const struct sc_opt proxy_cors_route_opts[] = {
    { .name = "cors",
      .type = SC_OPT_OBJ,
      .help = "CORS policy of the route (docs/cors.md), instead of the listener's",
      .sub = proxy_cors_opts,
      .check = cors_loaded },
    { 0 },
};

enum { O_EXACT, O_PREFIX, O_SUFFIX, O_CONTAINS, O_REGEX };

struct origin {
    int kind;
    bool icase;
    struct sc_str s; /* owned */
    pcre2_code *re;
};

struct proxy_cors {
    struct origin *origins;
    size_t norigins;
    bool any; /* a matcher matches "*": every origin is allowed (Envoy's rule) */
    char *allow_methods, *allow_headers, *expose_headers;
    size_t expose_len;
    char max_age[24]; /* seconds; "": not sent */
    bool credentials, private_network, forward;
    uint32_t enabled_ppm, shadow_ppm;
    struct sc_metric *m_valid, *m_invalid, *m_answered, *m_forwarded;
};

int proxy_cors_check(const struct proxy_cors_cfg *c, char **err)
{
    const struct proxy_cors_origin_cfg *o = c->allow_origins.v;
    for (size_t i = 0; i < c->allow_origins.n; i++) {
        int n = !!o[i].exact + !!o[i].prefix + !!o[i].suffix + !!o[i].contains + !!o[i].regex;
        if (n != 1) {
            *err = sc_asprintf("allow_origins[%zu]: use one of exact, prefix, suffix, contains "
                               "and regex",
                               i);
            return SC_ECONFIG;
        }
        if (o[i].regex && o[i].ignore_case) {
            *err = sc_asprintf("allow_origins[%zu]: ignore_case does not apply to regex (write "
                               "(?i) in the pattern)",
                               i);
            return SC_ECONFIG;
        }
        char *why = NULL;
        if (o[i].regex && proxy_route_regex_check(o[i].regex, NULL, &why) < 0) {
            *err = sc_asprintf("allow_origins[%zu]: %s", i, why);
            sc_free(why);
            return SC_ECONFIG;
        }
    }
    const char *names[] = { "allow_methods", "allow_headers", "expose_headers" };
    const char *vals[] = { c->allow_methods, c->allow_headers, c->expose_headers };
    for (size_t i = 0; i < 3; i++) {
        if (vals[i] && !sc_http1_is_field_value(sc_str_c(vals[i]))) {
            *err = sc_asprintf("%s holds a control character", names[i]);
            return SC_ECONFIG;
        }
    }
    uint64_t ms = 0;
    if (c->max_age && sc_value_parse_duration(c->max_age, &ms) < 0) {
        *err = sc_asprintf("max_age \"%s\" is not a duration (\"86400s\", \"24h\")", c->max_age);
        return SC_ECONFIG;
    }
    return 0;
}

static uint32_t ppm_of(double pc)
{
    return (uint32_t)(pc * 10000.0 + 0.5);
}

static bool origin_match(const struct origin *o, struct sc_str v, pcre2_match_data *md)
{
    struct sc_str s = o->s;
    switch (o->kind) {
    case O_EXACT:
        return v.len == s.len &&
               (o->icase ? strncasecmp(v.p, s.p, s.len) == 0 : memcmp(v.p, s.p, s.len) == 0);
    case O_PREFIX:
        return v.len >= s.len &&
               (o->icase ? strncasecmp(v.p, s.p, s.len) == 0 : memcmp(v.p, s.p, s.len) == 0);
    case O_SUFFIX: {
        const char *t = v.p + v.len - s.len;
        return v.len >= s.len &&
               (o->icase ? strncasecmp(t, s.p, s.len) == 0 : memcmp(t, s.p, s.len) == 0);
    }
    case O_CONTAINS:
        for (size_t i = 0; i + s.len <= v.len; i++) {
            if (o->icase ? strncasecmp(v.p + i, s.p, s.len) == 0
                         : memcmp(v.p + i, s.p, s.len) == 0) {
                return true;
            }
        }
        return false;
    default:
        return o->re && md &&
               pcre2_match(o->re, (PCRE2_SPTR)(v.len ? v.p : ""), v.len, 0, 0, md, NULL) >= 0;
    }
}

struct proxy_cors *proxy_cors_new(const struct proxy_cors_cfg *c, const char *lname,
                                  const char *rname, struct proxy_metrics *pm)
{
    if (!c->set) {
        return NULL;
    }
    struct proxy_cors *p = SC_NEW(struct proxy_cors);
    const struct proxy_cors_origin_cfg *o = c->allow_origins.v;
    p->norigins = c->allow_origins.n;
    p->origins = sc_calloc(p->norigins ? p->norigins : 1, sizeof(*p->origins));
    pcre2_match_data *md = NULL;
    for (size_t i = 0; i < p->norigins; i++) {
        struct origin *x = &p->origins[i];
        const char *s = o[i].exact      ? o[i].exact
                        : o[i].prefix   ? o[i].prefix
                        : o[i].suffix   ? o[i].suffix
                        : o[i].contains ? o[i].contains
                                        : o[i].regex;
        x->kind = o[i].exact      ? O_EXACT
                  : o[i].prefix   ? O_PREFIX
                  : o[i].suffix   ? O_SUFFIX
                  : o[i].contains ? O_CONTAINS
                                  : O_REGEX;
        x->icase = o[i].ignore_case;
        x->s = sc_str_c(sc_strdup(s));
        if (x->kind == O_REGEX) {
            x->re = proxy_route_regex_compile(s);
            if (!md && x->re) {
                md = pcre2_match_data_create_from_pattern(x->re, NULL);
            }
        }
        p->any = p->any || origin_match(x, SC_STR("*"), md);
    }
    sc_regex_match_data_free(md);
    p->allow_methods = sc_strdup(c->allow_methods);
    p->allow_headers = sc_strdup(c->allow_headers);
    p->expose_headers = sc_strdup(c->expose_headers);
    p->expose_len = c->expose_headers ? strlen(c->expose_headers) : 0;
    uint64_t ms = 0;
    if (c->max_age && sc_value_parse_duration(c->max_age, &ms) == 0) {
        snprintf(p->max_age, sizeof(p->max_age), "%llu", (unsigned long long)(ms / 1000));
    }
    p->credentials = c->allow_credentials;
    p->private_network = c->allow_private_network_access;
    p->forward = c->forward_not_matching_preflights;
    p->enabled_ppm = ppm_of(c->filter_enabled);
    p->shadow_ppm = ppm_of(c->shadow_enabled);
    const char *lv[] = { lname, rname, "valid" };
    p->m_valid = sc_metrics_get(pm->cors_origin, lv);
    lv[2] = "invalid";
    p->m_invalid = sc_metrics_get(pm->cors_origin, lv);
    lv[2] = "answered";
    p->m_answered = sc_metrics_get(pm->cors_preflight, lv);
    lv[2] = "forwarded";
    p->m_forwarded = sc_metrics_get(pm->cors_preflight, lv);
    return p;
}

bool proxy_cors_regex(const struct proxy_cors *c)
{
    for (size_t i = 0; c && i < c->norigins; i++) {
        if (c->origins[i].re) {
            return true;
        }
    }
    return false;
}

void proxy_cors_free(struct proxy_cors *c)
{
    if (!c) {
        return;
    }
    for (size_t i = 0; i < c->norigins; i++) {
        sc_free((char *)c->origins[i].s.p);
        sc_regex_code_free(c->origins[i].re);
    }
    sc_free(c->origins);
    sc_free(c->allow_methods);
    sc_free(c->allow_headers);
    sc_free(c->expose_headers);
    sc_free(c);
}

void proxy_cors_metrics_init(struct proxy_metrics *pm)
{
    static const char *const labels[] = { "listener", "route", "result", NULL };
    pm->cors_origin = sc_metrics_family(
        pm->reg, SC_METRIC_COUNTER, "sidecar_cors_origin_total",
        "Requests with an Origin header on a route with a CORS policy, by whether the policy "
        "allows the origin (result valid or invalid; shadow-mode requests included).",
        labels, NULL, 0);
    pm->cors_preflight = sc_metrics_family(
        pm->reg, SC_METRIC_COUNTER, "sidecar_cors_preflight_total",
        "CORS preflights answered by the proxy (result answered) or passed upstream because "
        "their origin is not allowed (result forwarded).",
        labels, NULL, 0);
}

static bool chance(struct proxy_worker *w, uint32_t per_million)
{
    return per_million >= 1000000 || (per_million && proxy_rand(w) % 1000000 < per_million);
}

static bool allowed(const struct proxy_cors *c, struct sc_str origin, pcre2_match_data *md)
{
    if (c->any) {
        return true;
    }
    for (size_t i = 0; i < c->norigins; i++) {
        if (origin_match(&c->origins[i], origin, md)) {
            return true;
        }
    }
    return false;
}

static struct sc_str header(const struct sc_http_msg *m, const char *name)
{
    const struct sc_http_header *h = sc_http1_find(m, sc_str_c(name), NULL);
    return h ? h->value : SC_STR_NULL;
}

static bool is_preflight(const struct sc_http_msg *m)
{
    return sc_str_eq(m->method, SC_STR("OPTIONS")) &&
           header(m, "access-control-request-method").len > 0;
}

static int line(struct sc_buf *b, const char *name, struct sc_str v)
{
    int rc = sc_buf_append_cstr(b, name);
    rc |= sc_buf_append(b, ": ", 2);
    rc |= sc_buf_append_str(b, v);
    rc |= sc_buf_append(b, "\r\n", 2);
    return rc;
}

/* The request's CORS state, made on first use with room for <extra> bytes of header lines. */
static struct proxy_cors_req *state(struct proxy_exch *r, size_t extra)
{
    if (!r->pol.cors) {
        r->pol.cors = sc_calloc(1, sizeof(struct proxy_cors_req) + extra);
    }
    return r->pol.cors;
}

/* Answers preflight <m> (<ok>: its origin is allowed) with 200 and the policy's headers. */
static void answer_preflight(struct proxy_exch *r, const struct sc_http_msg *m,
                             const struct proxy_cors *c, struct sc_str origin, bool ok)
{
    struct sc_buf b;
    sc_buf_init(&b, 16384);
    int rc = 0;
    if (ok) {
        rc |= line(&b, "Access-Control-Allow-Origin", origin);
    }
    if (c->credentials) {
        rc |= line(&b, "Access-Control-Allow-Credentials", SC_STR("true"));
    }
    bool echo_m = c->allow_methods && strcmp(c->allow_methods, "*") == 0;
    bool echo_h = c->allow_headers && strcmp(c->allow_headers, "*") == 0;
    if (c->allow_methods) {
        rc |=
            line(&b, "Access-Control-Allow-Methods",
                 echo_m ? header(m, "access-control-request-method") : sc_str_c(c->allow_methods));
    }
    struct sc_str rqh = header(m, "access-control-request-headers");
    if (c->allow_headers && (!echo_h || rqh.len)) {
        rc |= line(&b, "Access-Control-Allow-Headers", echo_h ? rqh : sc_str_c(c->allow_headers));
    }
    if (c->max_age[0]) {
        rc |= line(&b, "Access-Control-Max-Age", sc_str_c(c->max_age));
    }
    if (c->private_network &&
        sc_str_eq(header(m, "access-control-request-private-network"), SC_STR("true"))) {
        rc |= line(&b, "Access-Control-Allow-Private-Network", SC_STR("true"));
    }
    /* The answer depends on the origin, and on what was asked when it is echoed. */
    rc |= line(&b, "Vary",
               echo_m && echo_h ? SC_STR("Origin, Access-Control-Request-Method, "
                                         "Access-Control-Request-Headers")
               : echo_m         ? SC_STR("Origin, Access-Control-Request-Method")
               : echo_h         ? SC_STR("Origin, Access-Control-Request-Headers")
                                : SC_STR("Origin"));
    sc_metrics_counter_inc(c->m_answered);
    state(r, 0)->policy = NULL; /* its Vary is above */
    r->close_after = r->body != B_NONE;
    r->body_done = r->body == B_NONE;
    if (rc < 0) {
        sc_buf_cleanup(&b);
        proxy_local_reply(r, 431, "CORS preflight answer too large", F_DPE);
        return;
    }
    r->reply_headers = sc_buf_str(&b);
    proxy_local_reply_body(r, 200, SC_STR(""), F_CORS);
    r->reply_headers = SC_STR_NULL;
    sc_buf_cleanup(&b);
}

/* Copies <n> bytes of <s> to <p>; returns the end. */
static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

#define ACAO "Access-Control-Allow-Origin: "
#define ACAC "Access-Control-Allow-Credentials: true\r\n"
#define ACEH "Access-Control-Expose-Headers: "

/* Enforces policy <c> on the response (Vary: Origin) and, for an allowed <origin> (p NULL: none
 * or not allowed), keeps its headers after the exchange's resp_add lines, in the state's own
 * room: one allocation per request. */
static void keep_headers(struct proxy_exch *r, const struct proxy_cors *c, struct sc_str origin)
{
    size_t n = 0;
    if (origin.p && !r->pol.cors) {
        n = r->resp_add.len + sizeof(ACAO) + 1 + origin.len;
        n += c->credentials ? sizeof(ACAC) - 1 : 0;
        n += c->expose_len ? sizeof(ACEH) + 1 + c->expose_len : 0;
        n = n > 16384 ? 0 : n; /* an origin past the cap gets no headers: the browser refuses */
    }
    struct proxy_cors_req *st = state(r, n);
    st->policy = c;
    if (!n) {
        return;
    }
    char *p = put(st->buf, r->resp_add.p ? r->resp_add.p : "", r->resp_add.len);
    p = put(p, ACAO, sizeof(ACAO) - 1);
    p = put(p, origin.p, origin.len);
    p = put(p, "\r\n", 2);
    if (c->credentials) {
        p = put(p, ACAC, sizeof(ACAC) - 1);
    }
    if (c->expose_len) {
        p = put(p, ACEH, sizeof(ACEH) - 1);
        p = put(p, c->expose_headers, c->expose_len);
        p = put(p, "\r\n", 2);
    }
    st->allowed = true;
    r->resp_add = sc_str_n(st->buf, (size_t)(p - st->buf));
}

int proxy_cors_request(struct proxy_exch *r, const struct sc_http_msg *m,
                       const struct proxy_cors *c)
{
    const struct proxy_route *pre = r->pol.cors ? r->pol.cors->pre : NULL;
    bool pre_first = pre != NULL;
    if (pre_first && pre != r->route) {
        /* Let past authentication for another route's policy: fail closed. */
        r->close_after = r->body != B_NONE;
        proxy_local_reply(r, 403, "CORS preflight not answered by its route", F_CORS);
        return 1;
    }
    bool enforce = pre_first || chance(r->w, c->enabled_ppm);
    if (!enforce && !chance(r->w, c->shadow_ppm)) {
        return 0;
    }
    struct sc_str origin = header(m, "origin");
    bool ok = origin.len && allowed(c, origin, r->w->md);
    if (origin.len) {
        sc_metrics_counter_inc(ok ? c->m_valid : c->m_invalid);
    }
    if (!enforce) {
        return 0; /* shadow mode: counted only */
    }
    if (origin.len && is_preflight(m)) {
        state(r, 0)->policy = c; /* Vary: Origin on a forwarded one */
        if (!ok && c->forward && pre_first) {
            r->close_after = r->body != B_NONE; /* not authenticated: never forwarded */
            proxy_local_reply(r, 403, "CORS preflight not answered by its route", F_CORS);
            return 1;
        }
        if (!ok && c->forward) {
            sc_metrics_counter_inc(c->m_forwarded);
            return 0;
        }
        answer_preflight(r, m, c, origin, ok);
        return 1;
    }
    keep_headers(r, c, ok ? origin : SC_STR_NULL);
    return 0;
}

bool proxy_cors_preflight_first(struct proxy_exch *r, const struct sc_http_msg *m,
                                struct sc_str path)
{
    struct sc_str origin = header(m, "origin");
    if (!origin.len || !is_preflight(m)) {
        return false;
    }
    struct proxy_route *rt = proxy_route_find(r->dc, m, path);
    const struct proxy_cors *c = rt && rt->pol ? rt->pol->cors : NULL;
    if (!c || !chance(r->w, c->enabled_ppm) || (!allowed(c, origin, r->w->md) && c->forward)) {
        return false;
    }
    state(r, 0)->pre = rt;
    return true;
}

bool proxy_cors_skip_resp_header(struct proxy_exch *r, const struct sc_http_header *h)
{
    struct proxy_cors_req *st = r->pol.cors;
    if (!st->policy) {
        return false;
    }
    if (h->name.len == 4 && sc_str_caseeq(h->name, SC_STR("vary"))) {
        st->vary_seen = st->vary_seen || sc_http1_has_token(h->value, SC_STR("*")) ||
                        sc_http1_has_token(h->value, SC_STR("origin"));
        return false;
    }
    if (!st->allowed || h->name.len < 27 || strncasecmp(h->name.p, "access-control-", 15) != 0) {
        return false;
    }
    const struct proxy_cors *c = st->policy;
    return sc_str_caseeq(h->name, SC_STR("access-control-allow-origin")) ||
           (c->credentials && sc_str_caseeq(h->name, SC_STR("access-control-allow-credentials"))) ||
           (c->expose_len && sc_str_caseeq(h->name, SC_STR("access-control-expose-headers")));
}

int proxy_cors_vary(const struct proxy_exch *r, struct proxy_hsink *s)
{
    const struct proxy_cors_req *st = r->pol.cors;
    if (!st || !st->policy || st->vary_seen) {
        return 0;
    }
    return proxy_hsink_header(s, SC_STR("Vary"), SC_STR("Origin"));
}

void proxy_cors_release(struct proxy_exch *r)
{
    sc_free(r->pol.cors); /* its lines with it */
    r->pol.cors = NULL;
}

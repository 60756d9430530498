// SPDX-License-Identifier: Apache-2.0
// Route traffic policy (contracts in proxy_policy.h): the option tables of rate limits, weighted
// destinations, subsets, header transforms, faults and mirrors; their checks; their compiled form
// in the snapshot; and the per-request decisions the data path asks for at a few hook points
// (after routing, while writing the upstream head, while writing the response head, for local
// replies). Nothing here blocks: a rate-limit decision takes one short mutex, the rest reads the
// immutable snapshot and the worker's random state.
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/alloc.h"
#include "core/error.h"
#include "net/addr.h"
#include "roles/proxy/proxy_conn.h"

/* ---- option tables ---- */

static const char *const rl_units[] = { "second", "minute", "hour", NULL };
static const char *const rl_keys[] = { "global", "client_ip", "header", NULL };

const struct sc_opt proxy_rl_opts[] = {
    { .name = "requests_per_unit",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_rl_cfg, requests_per_unit),
      .def = "0",
      .help = "tokens added per unit (0: no rate limit)",
      .min = 0,
      .max = 1000000000 },
    { .name = "unit",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct proxy_rl_cfg, unit),
      .def = "second",
      .help = "the refill unit",
      .enums = rl_units },
    { .name = "burst",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_rl_cfg, burst),
      .def = "0",
      .help = "bucket size: requests allowed at once from a full bucket (0: requests_per_unit)",
      .min = 0,
      .max = 1000000000 },
    { .name = "key",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct proxy_rl_cfg, key),
      .def = "global",
      .help = "one bucket for all requests, one per client IP, or one per value of `header`",
      .enums = rl_keys },
    { .name = "header",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_rl_cfg, header),
      .help = "with key: header, the request header whose value picks the bucket (requests "
              "without it share one bucket)" },
    { .name = "max_keys",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_rl_cfg, max_keys),
      .def = "10000",
      .help = "buckets kept for client_ip or header keys; a new key beyond it evicts the least "
              "recently used one",
      .min = 1,
      .max = 1000000 },
    { .name = "headers",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct proxy_rl_cfg, headers),
      .def = "false",
      .help = "send x-ratelimit-limit, x-ratelimit-remaining and x-ratelimit-reset on allowed "
              "responses too (429s always carry them and Retry-After)" },
    { 0 },
};

const struct sc_opt proxy_weighted_opts[] = {
    { .name = "cluster",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_weighted_cfg, cluster),
      .help = "destination cluster",
      .flags = SC_OPT_REQUIRED },
    { .name = "subset",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_weighted_cfg, subset),
      .help = "subset of the cluster (all its endpoints when unset)" },
    { .name = "weight",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_weighted_cfg, weight),
      .def = "1",
      .help = "share of the route's requests, relative to the other destinations' weights",
      .min = 0,
      .max = 1000000 },
    { 0 },
};

static const struct sc_opt hdr_ops_opts[] = {
    { .name = "set",
      .type = SC_OPT_STRMAP,
      .offset = offsetof(struct proxy_hdr_ops_cfg, set),
      .help = "headers to set, replacing any of the same name; values may use %VARIABLE%" },
    { .name = "add",
      .type = SC_OPT_STRMAP,
      .offset = offsetof(struct proxy_hdr_ops_cfg, add),
      .help = "headers to append, keeping those already there; values may use %VARIABLE%" },
    { .name = "remove",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct proxy_hdr_ops_cfg, remove),
      .help = "header names to remove" },
    { 0 },
};

const struct sc_opt proxy_headers_opts[] = {
    { .name = "request",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_headers_cfg, request),
      .help = "changes to the request sent upstream",
      .sub = hdr_ops_opts },
    { .name = "response",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_headers_cfg, response),
      .help = "changes to the response sent to the client",
      .sub = hdr_ops_opts },
    { 0 },
};

static const struct sc_opt fault_delay_opts[] = {
    { .name = "fixed_delay",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_fault_delay_cfg, fixed_delay_ms),
      .help = "how long to hold a delayed request before it goes upstream",
      .max = 3600000 },
    { .name = "percentage",
      .type = SC_OPT_DOUBLE,
      .offset = offsetof(struct proxy_fault_delay_cfg, percentage),
      .def = "0",
      .help = "share of requests delayed, 0 to 100",
      .min = 0,
      .max = 100 },
    { 0 },
};

static const struct sc_opt fault_abort_opts[] = {
    { .name = "http_status",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_fault_abort_cfg, http_status),
      .def = "0",
      .help = "status answered to aborted requests (200 to 599)",
      .min = 0,
      .max = 599 },
    { .name = "percentage",
      .type = SC_OPT_DOUBLE,
      .offset = offsetof(struct proxy_fault_abort_cfg, percentage),
      .def = "0",
      .help = "share of requests aborted, 0 to 100",
      .min = 0,
      .max = 100 },
    { 0 },
};

const struct sc_opt proxy_fault_opts[] = {
    { .name = "delay",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_fault_cfg, delay),
      .help = "delay a share of requests (access-log flag DI)",
      .sub = fault_delay_opts },
    { .name = "abort",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_fault_cfg, abort),
      .help = "answer a share of requests with a status, without going upstream (flag FI)",
      .sub = fault_abort_opts },
    { 0 },
};

const struct sc_opt proxy_mirror_opts[] = {
    { .name = "cluster",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_mirror_cfg, cluster),
      .help = "shadow cluster that gets a copy of the requests (Host gets \"-shadow\" appended)" },
    { .name = "percentage",
      .type = SC_OPT_DOUBLE,
      .offset = offsetof(struct proxy_mirror_cfg, percentage),
      .def = "100",
      .help = "share of requests mirrored, 0 to 100",
      .min = 0,
      .max = 100 },
    { 0 },
};

const struct sc_opt proxy_subset_opts[] = {
    { .name = "name",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_subset_cfg, name),
      .help = "subset name, used by routes",
      .flags = SC_OPT_REQUIRED },
    { .name = "labels",
      .type = SC_OPT_STRMAP,
      .offset = offsetof(struct proxy_subset_cfg, labels),
      .help = "labels an endpoint must all have to be in the subset" },
    { 0 },
};

#define NAME_MAX_LEN 128

static bool name_char(unsigned char c, const char *extra)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr(extra, c));
}

#define EP_CHARS "-._:[]%"

bool proxy_endpoint_chars_ok(struct sc_str s)
{
    for (size_t i = 0; i < s.len; i++) {
        if (!name_char((unsigned char)s.p[i], EP_CHARS)) {
            return false;
        }
    }
    return true;
}

static int check_chars(const char *s, const char *what, const char *extra, char **err)
{
    size_t n = strlen(s);
    if (n == 0 || n > NAME_MAX_LEN) {
        *err = sc_asprintf("%s must be 1 to %d bytes long", what, NAME_MAX_LEN);
        return SC_ECONFIG;
    }
    for (size_t i = 0; i < n; i++) {
        if (!name_char((unsigned char)s[i], extra)) {
            *err = sc_asprintf("%s \"%s\": character %zu is not a letter, a digit or one of \"%s\"",
                               what, s, i + 1, extra);
            return SC_ECONFIG;
        }
    }
    return 0;
}

int proxy_name_check(void *field, char **err)
{
    const char *s = *(char **)field;
    return s ? check_chars(s, "name", "-._:/", err) : 0;
}

int proxy_endpoint_check(void *field, char **err)
{
    const char *s = *(char **)field;
    return s ? check_chars(s, "endpoint", EP_CHARS, err) : 0;
}

int proxy_endpoints_check(void *field, char **err)
{
    const struct sc_strv *v = field;
    for (size_t i = 0; i < v->n; i++) {
        int rc = proxy_endpoint_check(&v->v[i], err);
        if (rc < 0) {
            return rc;
        }
    }
    return 0;
}

const struct sc_opt proxy_labeled_ep_opts[] = {
    { .name = "address",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_labeled_ep_cfg, address),
      .help = "\"ip:port\" or \"name:port\", as in endpoints",
      .flags = SC_OPT_REQUIRED,
      .check = proxy_endpoint_check },
    { .name = "labels",
      .type = SC_OPT_STRMAP,
      .offset = offsetof(struct proxy_labeled_ep_cfg, labels),
      .help = "labels (e.g. version: v2) that subsets select on" },
    { 0 },
};

/* ---- header value templates ---- */

enum {
    V_LIT,
    V_REMOTE,     /* %DOWNSTREAM_REMOTE_ADDRESS% */
    V_REMOTE_IP,  /* %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% */
    V_REQ,        /* %REQ(name)% */
    V_UPSTREAM,   /* %UPSTREAM_HOST% */
    V_START_TIME, /* %START_TIME% */
    V_PROTOCOL,   /* %PROTOCOL% */
    V_RESP_CODE,  /* %RESPONSE_CODE% */
};

struct tmpl_part {
    int kind;
    struct sc_str s; /* V_LIT: the text; V_REQ: the header name */
};

struct proxy_tmpl {
    struct tmpl_part *parts;
    size_t n;
    char *text; /* owns the bytes the parts point into */
};

static void tmpl_free(struct proxy_tmpl *t)
{
    if (t) {
        sc_free(t->parts);
        sc_free(t->text);
        sc_free(t);
    }
}

/* Compiles <s>. <response>: the template is for a response header (UPSTREAM_HOST and
 * RESPONSE_CODE allowed, REQ not: the request head is gone by then). Returns NULL with <*err>. */
static struct proxy_tmpl *tmpl_compile(const char *s, bool response, char **err)
{
    static const struct {
        const char *name;
        int kind;
        int where; /* 0 both, 1 request only, 2 response only */
    } vars[] = {
        { "DOWNSTREAM_REMOTE_ADDRESS", V_REMOTE, 0 },
        { "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", V_REMOTE_IP, 0 },
        { "UPSTREAM_HOST", V_UPSTREAM, 2 },
        { "START_TIME", V_START_TIME, 0 },
        { "PROTOCOL", V_PROTOCOL, 0 },
        { "RESPONSE_CODE", V_RESP_CODE, 2 },
    };
    struct proxy_tmpl *t = SC_NEW(struct proxy_tmpl);
    size_t len = strlen(s);
    t->text = sc_malloc(len + 1);
    t->parts = sc_calloc(len + 1, sizeof(*t->parts));
    size_t o = 0; /* output position in t->text */
    size_t lit = 0;
    bool in_lit = false;
    for (size_t i = 0; i < len;) {
        if (s[i] != '%') {
            if (!in_lit) {
                lit = o;
                in_lit = true;
            }
            t->text[o++] = s[i++];
            continue;
        }
        if (s[i + 1] == '%') {
            if (!in_lit) {
                lit = o;
                in_lit = true;
            }
            t->text[o++] = '%';
            i += 2;
            continue;
        }
        const char *end = strchr(s + i + 1, '%');
        if (!end) {
            *err = sc_asprintf("header value \"%s\": unterminated %%VARIABLE%% (a literal %% is "
                               "written %%%%)",
                               s);
            tmpl_free(t);
            return NULL;
        }
        if (in_lit) {
            t->parts[t->n++] = (struct tmpl_part){ V_LIT, sc_str_n(t->text + lit, o - lit) };
            in_lit = false;
        }
        struct sc_str name = sc_str_n(s + i + 1, (size_t)(end - (s + i + 1)));
        int kind = -1;
        if (name.len > 5 && memcmp(name.p, "REQ(", 4) == 0 && name.p[name.len - 1] == ')') {
            if (response) {
                *err = sc_asprintf("header value \"%s\": %%REQ()%% is for request headers", s);
                tmpl_free(t);
                return NULL;
            }
            size_t hl = name.len - 5;
            memcpy(t->text + o, name.p + 4, hl);
            t->parts[t->n++] = (struct tmpl_part){ V_REQ, sc_str_n(t->text + o, hl) };
            o += hl;
            i = (size_t)(end - s) + 1;
            continue;
        }
        for (size_t k = 0; k < SC_ARRAY_LEN(vars); k++) {
            if (sc_str_eq(name, sc_str_c(vars[k].name))) {
                if ((vars[k].where == 2 && !response) || (vars[k].where == 1 && response)) {
                    *err = sc_asprintf("header value \"%s\": %%%s%% is for %s headers", s,
                                       vars[k].name, response ? "request" : "response");
                    tmpl_free(t);
                    return NULL;
                }
                kind = vars[k].kind;
            }
        }
        if (kind < 0) {
            *err = sc_asprintf("header value \"%s\": unknown variable %%%.*s%% (known: "
                               "DOWNSTREAM_REMOTE_ADDRESS, DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT, "
                               "REQ(name), UPSTREAM_HOST, START_TIME, PROTOCOL, RESPONSE_CODE)",
                               s, (int)name.len, name.p);
            tmpl_free(t);
            return NULL;
        }
        t->parts[t->n++] = (struct tmpl_part){ kind, SC_STR_NULL };
        i = (size_t)(end - s) + 1;
    }
    if (in_lit) {
        t->parts[t->n++] = (struct tmpl_part){ V_LIT, sc_str_n(t->text + lit, o - lit) };
    }
    t->text[o] = '\0';
    return t;
}

/* Renders <t> for exchange <r> into <out>. <m>: the request head (NULL for responses). */
static int tmpl_render(const struct proxy_tmpl *t, struct proxy_exch *r,
                       const struct sc_http_msg *m, struct sc_buf *out)
{
    int rc = 0;
    for (size_t i = 0; i < t->n; i++) {
        const struct tmpl_part *p = &t->parts[i];
        switch (p->kind) {
        case V_LIT:
            rc |= sc_buf_append_str(out, p->s);
            break;
        case V_REMOTE: {
            char a[64] = "";
            if (r->cl->addr.ss_family != AF_UNSPEC) {
                sc_addr_format((struct sockaddr *)&r->cl->addr, a, sizeof(a));
            }
            rc |= sc_buf_append_cstr(out, a);
            break;
        }
        case V_REMOTE_IP:
            rc |= sc_buf_append_cstr(out, r->cl->ip);
            break;
        case V_REQ: {
            const struct sc_http_header *h = m ? sc_http1_find(m, p->s, NULL) : NULL;
            if (h) {
                rc |= sc_buf_append_str(out, h->value);
            }
            break;
        }
        case V_UPSTREAM:
            rc |= sc_buf_append_cstr(out, r->ep && r->ep->name ? r->ep->name : "");
            break;
        case V_START_TIME: {
            /* Wall-clock time of the request's start: now minus the monotonic time since. */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            uint64_t since = uv_hrtime() - r->start_ns;
            uint64_t wall = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec - since;
            time_t sec = (time_t)(wall / 1000000000ULL);
            struct tm tm;
            gmtime_r(&sec, &tm);
            char tb[40];
            size_t n = strftime(tb, sizeof(tb), "%Y-%m-%dT%H:%M:%S", &tm);
            rc |= sc_buf_append(out, tb, n);
            rc |= sc_buf_appendf(out, ".%03uZ", (unsigned)(wall / 1000000ULL % 1000));
            break;
        }
        case V_PROTOCOL:
            rc |= r->down_h2 ? sc_buf_append_cstr(out, "HTTP/2")
                             : sc_buf_appendf(out, "HTTP/1.%d", r->minor);
            break;
        case V_RESP_CODE:
            rc |= sc_buf_appendf(out, "%d", r->status);
            break;
        default:
            break;
        }
    }
    return rc ? SC_ETOOBIG : 0;
}

/* ---- checks ---- */

int proxy_rl_parse_flag(const char *s, struct proxy_rl_cfg *out)
{
    const char *slash = s ? strchr(s, '/') : NULL;
    if (!slash) {
        return -EINVAL;
    }
    uint64_t n;
    if (sc_str_to_u64(sc_str_n(s, (size_t)(slash - s)), 1000000000, &n) < 0 || n == 0) {
        return -EINVAL;
    }
    static const struct {
        const char *name;
        int unit;
    } units[] = { { "s", PROXY_RL_SECOND }, { "second", PROXY_RL_SECOND },
                  { "m", PROXY_RL_MINUTE }, { "minute", PROXY_RL_MINUTE },
                  { "h", PROXY_RL_HOUR },   { "hour", PROXY_RL_HOUR } };
    for (size_t i = 0; i < SC_ARRAY_LEN(units); i++) {
        if (strcmp(slash + 1, units[i].name) == 0) {
            memset(out, 0, sizeof(*out));
            out->requests_per_unit = (int64_t)n;
            out->unit = units[i].unit;
            out->burst = (int64_t)n;
            out->key = PROXY_RL_KEY_CLIENT_IP;
            out->max_keys = 10000;
            out->headers = false;
            return 0;
        }
    }
    return -EINVAL;
}

int proxy_rl_flag_check(void *field, char **err)
{
    struct proxy_rl_cfg rl;
    const char *s = *(char **)field;
    if (s && proxy_rl_parse_flag(s, &rl) < 0) {
        *err = sc_asprintf("rate limit \"%s\" is not N/s, N/m or N/h", s);
        return SC_ECONFIG;
    }
    return 0;
}

int proxy_rl_check(const struct proxy_rl_cfg *rl, const char *where, char **err)
{
    if (rl->requests_per_unit == 0) {
        return 0;
    }
    if (rl->key == PROXY_RL_KEY_HEADER && (!rl->header || !rl->header[0])) {
        *err = sc_asprintf("%s: rate_limit key: header needs `header`", where);
        return SC_ECONFIG;
    }
    if (rl->key != PROXY_RL_KEY_HEADER && rl->header) {
        *err = sc_asprintf("%s: rate_limit `header` is used only with key: header", where);
        return SC_ECONFIG;
    }
    if (rl->header && strlen(rl->header) >= sizeof(((struct proxy_rl_params *)0)->header)) {
        *err = sc_asprintf("%s: rate_limit header name too long", where);
        return SC_ECONFIG;
    }
    return 0;
}

static const struct proxy_cluster_cfg *find_cluster_cfg(const struct proxy_cfg *c, const char *name)
{
    const struct proxy_cluster_cfg *cl = c->clusters.v;
    for (size_t i = 0; i < c->clusters.n; i++) {
        if (strcmp(cl[i].name, name) == 0) {
            return &cl[i];
        }
    }
    return NULL;
}

static bool has_subset(const struct proxy_cluster_cfg *cc, const char *name)
{
    const struct proxy_subset_cfg *s = cc->subsets.v;
    for (size_t i = 0; i < cc->subsets.n; i++) {
        if (strcmp(s[i].name, name) == 0) {
            return true;
        }
    }
    return false;
}

static int check_dest(const struct proxy_cfg *c, const char *where, const char *cluster,
                      const char *subset, char **err)
{
    const struct proxy_cluster_cfg *cc = find_cluster_cfg(c, cluster);
    if (!cc) {
        *err = sc_asprintf("%s: unknown cluster \"%s\"", where, cluster);
        return SC_ECONFIG;
    }
    if (subset && !has_subset(cc, subset)) {
        *err = sc_asprintf("%s: cluster \"%s\" has no subset \"%s\"", where, cluster, subset);
        return SC_ECONFIG;
    }
    return 0;
}

static bool is_token(const char *s)
{
    if (!*s) {
        return false;
    }
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("!#$%&'*+-.^_`|~", c))) {
            return false;
        }
    }
    return true;
}

/* True when <s> holds only field-value bytes (visible, space, tab, obs-text). */
static bool is_field_value(const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            return false;
        }
    }
    return true;
}

/* Headers the proxy owns: they frame the message or the connection, so a transform that set or
 * removed them would desynchronise one side or the other. */
static bool framing_header(const char *name)
{
    static const char *const t[] = { "content-length",   "transfer-encoding",
                                     "connection",       "keep-alive",
                                     "proxy-connection", "te",
                                     "trailer",          "upgrade" };
    for (size_t i = 0; i < SC_ARRAY_LEN(t); i++) {
        if (strcasecmp(name, t[i]) == 0) {
            return true;
        }
    }
    return false;
}

static int check_ops(const struct proxy_hdr_ops_cfg *o, bool response, const char *where,
                     char **err)
{
    for (size_t i = 0; i < o->remove.n; i++) {
        if (!is_token(o->remove.v[i]) || framing_header(o->remove.v[i])) {
            *err = sc_asprintf("%s: cannot remove \"%s\" (not a header name, or a header the "
                               "proxy owns)",
                               where, o->remove.v[i]);
            return SC_ECONFIG;
        }
    }
    const struct sc_kvv *lists[] = { &o->set, &o->add };
    for (size_t k = 0; k < 2; k++) {
        for (size_t i = 0; i < lists[k]->n; i++) {
            const struct sc_kv *kv = &lists[k]->v[i];
            if (!is_token(kv->key) || framing_header(kv->key)) {
                *err = sc_asprintf("%s: cannot set \"%s\" (not a header name, or a header the "
                                   "proxy owns)",
                                   where, kv->key);
                return SC_ECONFIG;
            }
            char *e = NULL;
            struct proxy_tmpl *t = tmpl_compile(kv->value, response, &e);
            if (!t) {
                *err = sc_asprintf("%s: %s", where, e);
                sc_free(e);
                return SC_ECONFIG;
            }
            tmpl_free(t);
            if (!is_field_value(kv->value)) {
                *err = sc_asprintf("%s: header \"%s\": a value cannot hold control characters",
                                   where, kv->key);
                return SC_ECONFIG;
            }
        }
    }
    return 0;
}

/* Checks an optional duration option <v> named <what>. */
static int check_duration(const char *v, const char *what, const char *where, char **err)
{
    uint64_t ms;
    if (v && sc_value_parse_duration(v, &ms) < 0) {
        *err = sc_asprintf("%s: %s \"%s\" is not a duration (e.g. 250ms, 30s, 0s)", where, what, v);
        return SC_ECONFIG;
    }
    return 0;
}

int proxy_route_policy_check_route(const struct proxy_cfg *c, const struct proxy_listener_cfg *l,
                                   size_t ri, char **err)
{
    const struct proxy_route_cfg *routes = l->routes.v;
    const struct proxy_route_cfg *r = &routes[ri];
    char where[256];
    snprintf(where, sizeof(where), "listener \"%s\" route %zu (%s)", l->name, ri + 1,
             r->name ? r->name : "(unnamed)");
    int rc;
    /* Buckets are kept across reloads by listener and route name: the name must be unique. */
    for (size_t i = 0; r->rate_limit.requests_per_unit > 0 && r->name && i < l->routes.n; i++) {
        if (i != ri && routes[i].name && strcmp(routes[i].name, r->name) == 0) {
            *err = sc_asprintf("%s: a route with a rate_limit needs a name of its own in its "
                               "listener (its buckets are kept by name across reloads)",
                               where);
            return SC_ECONFIG;
        }
    }
    bool answers = proxy_route_action_set(r);
    if (answers && (rc = proxy_route_action_check(r, where, err)) < 0) {
        return rc; /* it refuses a destination, so the checks below find none */
    }
    if (r->health_endpoint.set && (rc = proxy_health_ep_check(c, r, where, err)) < 0) {
        return rc;
    }
    if (!answers && !r->cluster && r->weighted_clusters.n == 0) {
        *err =
            sc_asprintf("%s: needs cluster, weighted_clusters, redirect or direct_response", where);
        return SC_ECONFIG;
    }
    if (r->cluster && r->weighted_clusters.n) {
        *err = sc_asprintf("%s: use one of cluster and weighted_clusters", where);
        return SC_ECONFIG;
    }
    if (r->cluster && (rc = check_dest(c, where, r->cluster, r->subset, err)) < 0) {
        return rc;
    }
    if (r->subset && !r->cluster) {
        *err =
            sc_asprintf("%s: subset goes with cluster (weighted_clusters name their own)", where);
        return SC_ECONFIG;
    }
    const struct proxy_weighted_cfg *wc = r->weighted_clusters.v;
    int64_t total = 0;
    for (size_t i = 0; i < r->weighted_clusters.n; i++) {
        if ((rc = check_dest(c, where, wc[i].cluster, wc[i].subset, err)) < 0) {
            return rc;
        }
        const struct proxy_cluster_cfg *cc = find_cluster_cfg(c, wc[i].cluster);
        if (cc->type == PROXY_CLUSTER_ORIGINAL_DST) {
            *err =
                sc_asprintf("%s: an original_dst cluster cannot be a weighted destination", where);
            return SC_ECONFIG;
        }
        total += wc[i].weight;
    }
    if (r->weighted_clusters.n && total <= 0) {
        *err = sc_asprintf("%s: weighted_clusters weights add up to 0", where);
        return SC_ECONFIG;
    }
    if (r->weighted_clusters.n > 64) {
        *err = sc_asprintf("%s: at most 64 weighted_clusters", where);
        return SC_ECONFIG;
    }
    if ((rc = check_duration(r->timeout, "timeout", where, err)) < 0 ||
        (rc = check_duration(r->retry_policy.per_try_timeout, "per_try_timeout", where, err)) < 0) {
        return rc;
    }
    if ((rc = proxy_rl_check(&r->rate_limit, where, err)) < 0) {
        return rc;
    }
    const struct proxy_fault_cfg *f = &r->fault;
    if (f->abort.percentage > 0 && (f->abort.http_status < 200 || f->abort.http_status > 599)) {
        *err = sc_asprintf("%s: fault abort needs an http_status from 200 to 599", where);
        return SC_ECONFIG;
    }
    if (f->delay.percentage > 0 && f->delay.fixed_delay_ms == 0) {
        *err = sc_asprintf("%s: fault delay needs a fixed_delay", where);
        return SC_ECONFIG;
    }
    if (r->mirror.cluster) {
        const struct proxy_cluster_cfg *mc = find_cluster_cfg(c, r->mirror.cluster);
        if (!mc) {
            *err = sc_asprintf("%s: unknown mirror cluster \"%s\"", where, r->mirror.cluster);
            return SC_ECONFIG;
        }
        if (mc->type == PROXY_CLUSTER_ORIGINAL_DST) {
            *err = sc_asprintf("%s: the mirror cluster cannot be original_dst", where);
            return SC_ECONFIG;
        }
    }
    if ((rc = check_ops(&r->headers.request, false, where, err)) < 0 ||
        (rc = check_ops(&r->headers.response, true, where, err)) < 0) {
        return rc;
    }
    if (r->prefix_rewrite && (!r->match.prefix || r->prefix_rewrite[0] != '/')) {
        *err = sc_asprintf("%s: prefix_rewrite needs a match prefix and must start with /", where);
        return SC_ECONFIG;
    }
    if ((rc = proxy_route_query_check(&r->match.query_parameters, &r->regex_rewrite,
                                      r->prefix_rewrite != NULL, where, err)) < 0 ||
        (rc = proxy_hash_check(&r->hash_policy, where, err)) < 0) {
        return rc;
    }
    if (r->host_rewrite && (!r->host_rewrite[0] || strpbrk(r->host_rewrite, " \t/") ||
                            !is_field_value(r->host_rewrite))) {
        *err = sc_asprintf("%s: host_rewrite \"%s\" is not a host", where, r->host_rewrite);
        return SC_ECONFIG;
    }
    const struct proxy_header_match_cfg *ck = r->match.cookies.v;
    for (size_t i = 0; i < r->match.cookies.n; i++) {
        if (!is_token(ck[i].name)) {
            *err = sc_asprintf("%s: \"%s\" is not a cookie name", where, ck[i].name);
            return SC_ECONFIG;
        }
    }
    return 0;
}

int proxy_route_policy_check_cluster(const struct proxy_cluster_cfg *cc, char **err)
{
    const struct proxy_subset_cfg *s = cc->subsets.v;
    for (size_t i = 0; i < cc->subsets.n; i++) {
        for (size_t j = 0; j < i; j++) {
            if (strcmp(s[i].name, s[j].name) == 0) {
                *err = sc_asprintf("cluster \"%s\": subset \"%s\" is defined twice", cc->name,
                                   s[i].name);
                return SC_ECONFIG;
            }
        }
    }
    if (cc->type == PROXY_CLUSTER_ORIGINAL_DST && (cc->subsets.n || cc->labeled_endpoints.n)) {
        *err = sc_asprintf("cluster \"%s\": an original_dst cluster has no endpoints or subsets",
                           cc->name);
        return SC_ECONFIG;
    }
    if (cc->endpoints.n + cc->labeled_endpoints.n > 256) {
        *err = sc_asprintf("cluster \"%s\": at most 256 endpoints", cc->name);
        return SC_ECONFIG;
    }
    if (cc->hash_policy.n && cc->lb_policy != PROXY_LB_RING_HASH &&
        cc->lb_policy != PROXY_LB_MAGLEV) {
        *err = sc_asprintf("cluster \"%s\": hash_policy needs lb_policy ring_hash or maglev",
                           cc->name);
        return SC_ECONFIG;
    }
    char where[160];
    snprintf(where, sizeof(where), "cluster \"%.128s\"", cc->name);
    return proxy_hash_check(&cc->hash_policy, where, err);
}

/* ---- compiled form ---- */

static void ops_init(struct proxy_hdr_ops *o, const struct proxy_hdr_ops_cfg *c, bool response)
{
    char *e = NULL;
    o->nset = c->set.n;
    o->set = sc_calloc(o->nset ? o->nset : 1, sizeof(*o->set));
    for (size_t i = 0; i < o->nset; i++) {
        o->set[i].name = sc_str_c(sc_strdup(c->set.v[i].key));
        o->set[i].value = tmpl_compile(c->set.v[i].value, response, &e);
    }
    o->nadd = c->add.n;
    o->add = sc_calloc(o->nadd ? o->nadd : 1, sizeof(*o->add));
    for (size_t i = 0; i < o->nadd; i++) {
        o->add[i].name = sc_str_c(sc_strdup(c->add.v[i].key));
        o->add[i].value = tmpl_compile(c->add.v[i].value, response, &e);
    }
    o->nremove = c->remove.n;
    o->remove = sc_calloc(o->nremove ? o->nremove : 1, sizeof(*o->remove));
    for (size_t i = 0; i < o->nremove; i++) {
        o->remove[i] = sc_str_c(sc_strdup(c->remove.v[i]));
    }
    sc_free(e); /* checked already: compiles cannot fail here */
}

static void ops_free(struct proxy_hdr_ops *o)
{
    for (size_t i = 0; i < o->nset; i++) {
        sc_free((char *)o->set[i].name.p);
        tmpl_free(o->set[i].value);
    }
    for (size_t i = 0; i < o->nadd; i++) {
        sc_free((char *)o->add[i].name.p);
        tmpl_free(o->add[i].value);
    }
    for (size_t i = 0; i < o->nremove; i++) {
        sc_free((char *)o->remove[i].p);
    }
    sc_free(o->set);
    sc_free(o->add);
    sc_free(o->remove);
}

static uint32_t ppm(double percent)
{
    return (uint32_t)(percent * 10000.0 + 0.5);
}

static uint64_t unit_ns(int unit)
{
    return unit == PROXY_RL_HOUR     ? 3600000000000ULL
           : unit == PROXY_RL_MINUTE ? 60000000000ULL
                                     : 1000000000ULL;
}

static struct proxy_rl *rl_new(const struct proxy_rl_cfg *c, const char *name, struct sc_metric *m)
{
    struct proxy_rl_params p;
    memset(&p, 0, sizeof(p));
    p.per_unit = (uint64_t)c->requests_per_unit;
    p.capacity = c->burst > 0 ? (uint64_t)c->burst : p.per_unit;
    p.unit_ns = unit_ns(c->unit);
    p.key = c->key;
    p.max_keys = c->max_keys > 0 ? (uint64_t)c->max_keys : 10000;
    if (c->header) {
        for (size_t i = 0; c->header[i] && i < sizeof(p.header) - 1; i++) {
            char ch = c->header[i];
            p.header[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
        }
    }
    return proxy_rl_acquire(name, &p, m);
}

/* proxy_rt_cluster, repeated so this file links without the snapshot builder (unit tests). */
static struct proxy_cluster *find_cluster(struct proxy_rt *rt, const char *name)
{
    for (size_t i = 0; i < rt->nclusters; i++) {
        if (strcmp(rt->clusters[i].name, name) == 0) {
            return &rt->clusters[i];
        }
    }
    return NULL;
}

static bool policy_wanted(const struct proxy_route_cfg *rc)
{
    const struct proxy_hdr_ops_cfg *q = &rc->headers.request, *s = &rc->headers.response;
    return rc->subset || rc->weighted_clusters.n || rc->rate_limit.requests_per_unit > 0 ||
           rc->fault.delay.percentage > 0 || rc->fault.abort.percentage > 0 ||
           (rc->mirror.cluster && rc->mirror.percentage > 0) || q->set.n || q->add.n ||
           q->remove.n || s->set.n || s->add.n || s->remove.n || rc->prefix_rewrite ||
           rc->host_rewrite || rc->match.cookies.n || rc->match.query_parameters.n ||
           rc->regex_rewrite.pattern || rc->hash_policy.n || proxy_route_action_set(rc);
}

int proxy_route_policy_route_init(struct proxy_route *r, const struct proxy_route_cfg *rc,
                                  const struct proxy_listener_cfg *lc, struct proxy_rt *rt,
                                  const char *lname, struct proxy_metrics *pm, char **err)
{
    r->pol = NULL;
    const struct proxy_cors_cfg *cors = rc->cors.set ? &rc->cors : &lc->cors;
    if (!policy_wanted(rc) && !cors->set) {
        return 0;
    }
    struct proxy_route_policy *p = SC_NEW(struct proxy_route_policy);
    r->pol = p;
    if (rc->weighted_clusters.n) {
        const struct proxy_weighted_cfg *wc = rc->weighted_clusters.v;
        p->ndests = rc->weighted_clusters.n;
        p->dests = sc_calloc(p->ndests, sizeof(*p->dests));
        p->cum = sc_calloc(p->ndests, sizeof(*p->cum));
        uint32_t sum = 0;
        for (size_t i = 0; i < p->ndests; i++) {
            p->dests[i].cluster = find_cluster(rt, wc[i].cluster);
            if (!p->dests[i].cluster) {
                *err = sc_asprintf("listener \"%s\": unknown cluster \"%s\"", lname, wc[i].cluster);
                return SC_ECONFIG;
            }
            if (wc[i].subset) {
                p->dests[i].subset = proxy_cluster_subset(p->dests[i].cluster, wc[i].subset);
            }
            sum += (uint32_t)wc[i].weight;
            p->cum[i] = sum;
        }
        /* The route's own cluster (for labels of requests that never reach a destination). */
        r->cluster = p->dests[0].cluster;
    } else if (rc->subset && r->cluster) {
        p->ndests = 1;
        p->dests = sc_calloc(1, sizeof(*p->dests));
        p->cum = sc_calloc(1, sizeof(*p->cum));
        p->dests[0].cluster = r->cluster;
        p->dests[0].subset = proxy_cluster_subset(r->cluster, rc->subset);
        p->cum[0] = 1;
    }
    const struct proxy_header_match_cfg *ck = rc->match.cookies.v;
    p->ncookies = rc->match.cookies.n;
    p->cookie_names = sc_calloc(p->ncookies ? p->ncookies : 1, sizeof(*p->cookie_names));
    p->cookie_values = sc_calloc(p->ncookies ? p->ncookies : 1, sizeof(*p->cookie_values));
    p->cookie_present = sc_calloc(p->ncookies ? p->ncookies : 1, sizeof(*p->cookie_present));
    for (size_t i = 0; i < p->ncookies; i++) {
        p->cookie_names[i] = sc_str_c(sc_strdup(ck[i].name));
        p->cookie_values[i] = ck[i].value ? sc_str_c(sc_strdup(ck[i].value)) : SC_STR_NULL;
        p->cookie_present[i] = ck[i].present;
    }
    if (rc->rate_limit.requests_per_unit > 0) {
        char *name = sc_asprintf("route:%s/%s", lname, r->name);
        const char *lv[] = { lname, r->name };
        p->rl = rl_new(&rc->rate_limit, name, sc_metrics_get(pm->rate_limited, lv));
        p->rl_headers = rc->rate_limit.headers;
        sc_free(name);
    }
    if (rc->fault.delay.percentage > 0) {
        p->delay_ms = rc->fault.delay.fixed_delay_ms;
        p->delay_ppm = ppm(rc->fault.delay.percentage);
    }
    if (rc->fault.abort.percentage > 0) {
        p->abort_status = (int)rc->fault.abort.http_status;
        p->abort_ppm = ppm(rc->fault.abort.percentage);
    }
    if (rc->mirror.cluster && rc->mirror.percentage > 0) {
        p->mirror = find_cluster(rt, rc->mirror.cluster);
        p->mirror_ppm = ppm(rc->mirror.percentage);
        if (p->mirror) {
            const char *lv[] = { p->mirror->name };
            p->m_mirror = sc_metrics_get(pm->mirror, lv);
            p->m_mirror_dropped = sc_metrics_get(pm->mirror_dropped, lv);
        }
    }
    ops_init(&p->req, &rc->headers.request, false);
    ops_init(&p->resp, &rc->headers.response, true);
    p->prefix_rewrite = sc_strdup(rc->prefix_rewrite);
    p->match_prefix_len = rc->match.prefix ? strlen(rc->match.prefix) : 0;
    p->regex_rewrite = proxy_regex_rewrite_new(&rc->regex_rewrite);
    p->query = proxy_query_new(&rc->match.query_parameters);
    p->nquery = rc->match.query_parameters.n;
    const struct proxy_query_match_cfg *qm = rc->match.query_parameters.v;
    for (size_t i = 0; i < p->nquery; i++) {
        p->query_regex = p->query_regex || qm[i].regex;
    }
    p->hash = proxy_hash_new(&rc->hash_policy);
    p->nhash = rc->hash_policy.n;
    p->host_rewrite = sc_strdup(rc->host_rewrite);
    p->act = proxy_route_action_new(rc);
    /* Envoy's cors filter is bypassed on redirect and direct_response routes. */
    p->cors = p->act ? NULL : proxy_cors_new(cors, lname, r->name, pm);
    return 0;
}

void proxy_route_policy_route_free(struct proxy_route *r)
{
    struct proxy_route_policy *p = r->pol;
    if (!p) {
        return;
    }
    sc_free(p->dests);
    sc_free(p->cum);
    for (size_t i = 0; i < p->ncookies; i++) {
        sc_free((char *)p->cookie_names[i].p);
        sc_free((char *)p->cookie_values[i].p);
    }
    sc_free(p->cookie_names);
    sc_free(p->cookie_values);
    sc_free(p->cookie_present);
    proxy_rl_release(p->rl);
    ops_free(&p->req);
    ops_free(&p->resp);
    sc_free(p->prefix_rewrite);
    proxy_regex_rewrite_free(p->regex_rewrite);
    proxy_query_free(p->query, p->nquery);
    proxy_hash_free(p->hash, p->nhash);
    sc_free(p->host_rewrite);
    proxy_route_action_free(p->act);
    proxy_cors_free(p->cors);
    sc_free(p);
    r->pol = NULL;
}

static bool labels_match(const struct sc_kvv *want, const struct sc_kvv *have)
{
    for (size_t i = 0; i < want->n; i++) {
        bool ok = false;
        for (size_t j = 0; j < have->n && !ok; j++) {
            ok = strcmp(want->v[i].key, have->v[j].key) == 0 &&
                 strcmp(want->v[i].value, have->v[j].value) == 0;
        }
        if (!ok) {
            return false;
        }
    }
    return true;
}

void proxy_route_policy_cluster_init(struct proxy_cluster *c, const struct proxy_cluster_cfg *cc)
{
    c->hash = proxy_hash_new(&cc->hash_policy);
    c->nhash = cc->hash_policy.n;
    for (size_t i = 0; i < c->neps; i++) {
        c->eps[i].hkey = proxy_hash_bytes(c->eps[i].name, strlen(c->eps[i].name));
    }
    c->nsubsets = cc->subsets.n;
    c->subsets = sc_calloc(c->nsubsets ? c->nsubsets : 1, sizeof(*c->subsets));
    const struct proxy_subset_cfg *s = cc->subsets.v;
    const struct proxy_labeled_ep_cfg *le = cc->labeled_endpoints.v;
    size_t plain = cc->endpoints.n;
    for (size_t i = 0; i < c->nsubsets; i++) {
        struct proxy_subset *ss = &c->subsets[i];
        ss->name = sc_strdup(s[i].name);
        ss->idx = sc_calloc(cc->labeled_endpoints.n + plain + 1, sizeof(*ss->idx));
        /* Plain endpoints carry no labels: they belong only to a subset that asks for none. */
        for (size_t e = 0; e < plain && s[i].labels.n == 0 && e < c->neps; e++) {
            ss->idx[ss->n++] = (uint32_t)e;
        }
        for (size_t e = 0; e < cc->labeled_endpoints.n && plain + e < c->neps; e++) {
            if (labels_match(&s[i].labels, &le[e].labels)) {
                ss->idx[ss->n++] = (uint32_t)(plain + e);
            }
        }
    }
}

void proxy_route_policy_cluster_free(struct proxy_cluster *c)
{
    proxy_hash_free(c->hash, c->nhash);
    c->hash = NULL;
    c->nhash = 0;
    for (size_t i = 0; i < c->nsubsets; i++) {
        sc_free(c->subsets[i].name);
        sc_free(c->subsets[i].idx);
    }
    sc_free(c->subsets);
    c->subsets = NULL;
    c->nsubsets = 0;
}

struct proxy_subset *proxy_cluster_subset(struct proxy_cluster *c, const char *name)
{
    for (size_t i = 0; i < c->nsubsets; i++) {
        if (strcmp(c->subsets[i].name, name) == 0) {
            return &c->subsets[i];
        }
    }
    return NULL;
}

void proxy_route_policy_listener_init(struct proxy_listener *l, const struct proxy_rl_cfg *rc,
                                      struct proxy_metrics *pm)
{
    if (!rc || rc->requests_per_unit <= 0) {
        return;
    }
    char *name = sc_asprintf("listener:%s", l->name);
    const char *lv[] = { l->name, "" };
    l->rl = rl_new(rc, name, sc_metrics_get(pm->rate_limited, lv));
    l->rl_headers = rc->headers;
    sc_free(name);
}

/* ---- per request ---- */

struct sc_str proxy_route_cookie_value(const struct sc_http_msg *m, struct sc_str name)
{
    size_t from = 0;
    const struct sc_http_header *h;
    while ((h = sc_http1_find(m, SC_STR("cookie"), &from)) != NULL) {
        struct sc_str rest = h->value;
        while (rest.len) {
            struct sc_str pair = sc_str_trim(sc_str_split(&rest, ';'));
            const char *eq = memchr(pair.p, '=', pair.len);
            if (!eq) {
                continue;
            }
            struct sc_str k = sc_str_trim(sc_str_n(pair.p, (size_t)(eq - pair.p)));
            if (sc_str_eq(k, name)) {
                struct sc_str v =
                    sc_str_trim(sc_str_n(eq + 1, (size_t)(pair.p + pair.len - eq - 1)));
                if (v.len >= 2 && v.p[0] == '"' && v.p[v.len - 1] == '"') {
                    v = sc_str_n(v.p + 1, v.len - 2);
                }
                return v.p ? v : SC_STR("");
            }
        }
    }
    return SC_STR_NULL;
}

bool proxy_route_policy_match(const struct proxy_route_policy *pol, const struct sc_http_msg *m,
                              pcre2_match_data *md)
{
    if (!pol) {
        return true;
    }
    if (pol->nquery && !proxy_query_matches(pol->query, pol->nquery, m->target, md)) {
        return false;
    }
    for (size_t i = 0; i < pol->ncookies; i++) {
        struct sc_str v = proxy_route_cookie_value(m, pol->cookie_names[i]);
        if (!pol->cookie_present[i]) {
            if (v.p) {
                return false;
            }
            continue;
        }
        if (!v.p || (pol->cookie_values[i].p && !sc_str_eq(v, pol->cookie_values[i]))) {
            return false;
        }
    }
    return true;
}

static struct sc_str rl_key(struct proxy_exch *r, const struct proxy_rl *rl,
                            const struct sc_http_msg *m)
{
    const struct proxy_rl_params *p = proxy_rl_params_of(rl);
    if (p->key == PROXY_RL_KEY_CLIENT_IP) {
        return sc_str_c(r->cl->ip);
    }
    if (p->key == PROXY_RL_KEY_HEADER) {
        const struct sc_http_header *h = sc_http1_find(m, sc_str_c(p->header), NULL);
        return h ? h->value : SC_STR("");
    }
    return SC_STR("");
}

static bool chance(struct proxy_worker *w, uint32_t per_million)
{
    return per_million >= 1000000 || (per_million && proxy_rand(w) % 1000000 < per_million);
}

int proxy_route_policy_request(struct proxy_exch *r, const struct sc_http_msg *m, int *status,
                               const char **reason, unsigned *flags)
{
    struct proxy_listener *l = r->lsn;
    const struct proxy_route_policy *pol = r->route->pol;
    uint64_t now = r->start_ns; /* taken when the request started, just before */
    if (pol && pol->cors && proxy_cors_request(r, m, pol->cors)) {
        return PROXY_ROUTE_POL_DONE;
    }
    if (l->rl) {
        proxy_rl_take(l->rl, rl_key(r, l->rl, m), now, l->rl_headers, &r->pol.rl);
        r->pol.has_rl = l->rl_headers || !r->pol.rl.allowed;
        if (!r->pol.rl.allowed) {
            r->pol.has_rl = true;
            *status = 429;
            *reason = "local rate limit exceeded";
            *flags = F_RL;
            return PROXY_ROUTE_POL_REPLY;
        }
    }
    if (!pol) {
        return PROXY_ROUTE_POL_GO;
    }
    if (pol->rl) {
        struct proxy_rl_result res;
        proxy_rl_take(pol->rl, rl_key(r, pol->rl, m), now, pol->rl_headers, &res);
        if (!res.allowed || pol->rl_headers) {
            r->pol.rl = res; /* the route's limit is the more specific one */
            r->pol.has_rl = true;
        }
        if (!res.allowed) {
            *status = 429;
            *reason = "local rate limit exceeded";
            *flags = F_RL;
            return PROXY_ROUTE_POL_REPLY;
        }
    }
    if (pol->abort_ppm && chance(r->w, pol->abort_ppm)) {
        *status = pol->abort_status;
        *reason = "fault filter abort";
        *flags = F_FI;
        return PROXY_ROUTE_POL_REPLY;
    }
    if (pol->act) {
        return PROXY_ROUTE_POL_ACTION;
    }
    if (pol->delay_ppm && chance(r->w, pol->delay_ppm)) {
        r->pol.delay_ms = pol->delay_ms;
        r->flags |= F_DI;
    }
    if (pol->ndests) {
        size_t i =
            pol->ndests > 1 ? proxy_weighted_pick(pol->cum, pol->ndests, proxy_rand(r->w)) : 0;
        struct proxy_dest *d = &pol->dests[i];
        r->cluster = d->cluster;
        r->subset = d->subset;
        if (pol->ndests > 1) {
            r->codes = d->codes;
        }
        if (d->subset && d->subset->n == 0) {
            *status = 503;
            *reason = "no healthy upstream";
            *flags = F_UH;
            return PROXY_ROUTE_POL_REPLY;
        }
    }
    if (pol->mirror && !r->upgrade && !r->is_connect && chance(r->w, pol->mirror_ppm)) {
        r->pol.mirror = true;
    }
    return PROXY_ROUTE_POL_GO;
}

static bool in_ops(const struct proxy_hdr_ops *o, struct sc_str name)
{
    for (size_t i = 0; i < o->nremove; i++) {
        if (sc_str_caseeq(o->remove[i], name)) {
            return true;
        }
    }
    for (size_t i = 0; i < o->nset; i++) {
        if (sc_str_caseeq(o->set[i].name, name)) {
            return true;
        }
    }
    return false;
}

bool proxy_route_policy_skip_req_header(const struct proxy_route_policy *pol, struct sc_str name)
{
    if (pol->host_rewrite && sc_str_caseeq(name, SC_STR("host"))) {
        return true;
    }
    return in_ops(&pol->req, name);
}

bool proxy_route_policy_skip_resp_header(struct proxy_exch *r, const struct proxy_route_policy *pol,
                                         const struct sc_http_header *h)
{
    return in_ops(&pol->resp, h->name) || (r->pol.cors && proxy_cors_skip_resp_header(r, h));
}

/* Renders and adds headers <ops> (count <n>) to <s>: names were checked at load, literal text
 * holds no control characters, and substituted values come from parsed (valid) fields or from
 * the proxy itself. */
static int write_ops(struct proxy_exch *r, const struct sc_http_msg *m,
                     const struct proxy_hdr_op *ops, size_t n, struct proxy_hsink *s)
{
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        struct sc_buf *vb = proxy_hsink_open(s, ops[i].name);
        if (!vb) {
            return SC_ETOOBIG;
        }
        rc |= tmpl_render(ops[i].value, r, m, vb);
        rc |= proxy_hsink_close(s);
    }
    return rc;
}

int proxy_route_policy_req_headers(struct proxy_exch *r, const struct sc_http_msg *m,
                                   struct proxy_hsink *s)
{
    const struct proxy_route_policy *pol = r->route->pol;
    int rc = 0;
    if (pol->host_rewrite) {
        rc |= proxy_hsink_header(s, SC_STR("Host"), sc_str_c(pol->host_rewrite));
    }
    rc |= write_ops(r, m, pol->req.set, pol->req.nset, s);
    rc |= write_ops(r, m, pol->req.add, pol->req.nadd, s);
    return rc ? SC_ETOOBIG : 0;
}

int proxy_route_policy_request_line(const struct proxy_route_policy *pol, struct proxy_hsink *s,
                                    struct sc_str method, struct sc_str origin)
{
    if (pol && pol->regex_rewrite && origin.len && origin.p[0] == '/') {
        char *t = sc_malloc(PROXY_REWRITE_MAX);
        long n = proxy_regex_rewrite_apply(pol->regex_rewrite, origin, t, PROXY_REWRITE_MAX);
        int rc = n < 0 ? SC_ETOOBIG : s->ops->request(s, method, sc_str_n(t, (size_t)n));
        sc_free(t);
        return rc;
    }
    if (!pol || !pol->prefix_rewrite || origin.len < pol->match_prefix_len || origin.p[0] != '/') {
        return s->ops->request(s, method, origin);
    }
    /* The matched prefix of the origin-form target is replaced; the rest (query too) stays. */
    size_t keep = origin.len - pol->match_prefix_len;
    size_t plen = strlen(pol->prefix_rewrite);
    char stack[2048];
    char *t = plen + keep <= sizeof(stack) ? stack : sc_malloc(plen + keep);
    memcpy(t, pol->prefix_rewrite, plen);
    memcpy(t + plen, origin.p + pol->match_prefix_len, keep);
    struct sc_str nt = sc_str_n(t, plen + keep);
    /* "/api/" rewritten to "/" with target "/api/x" gives "/x"; "//x" is folded to "/x". */
    if (nt.len >= 2 && nt.p[0] == '/' && nt.p[1] == '/') {
        nt = sc_str_n(nt.p + 1, nt.len - 1);
    }
    int rc = s->ops->request(s, method, nt);
    if (t != stack) {
        sc_free(t);
    }
    return rc;
}

/* Adds header <name> with decimal value <v> to <s>, formatted on the stack. */
static int num_header(struct proxy_hsink *s, struct sc_str name, uint32_t v)
{
    char num[12];
    size_t n = 0;
    do {
        num[sizeof(num) - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return proxy_hsink_header(s, name, sc_str_n(num + sizeof(num) - n, n));
}

int proxy_route_policy_rl_headers(const struct proxy_exch *r, struct proxy_hsink *s)
{
    if (!r->pol.has_rl) {
        return r->pol.cors ? proxy_cors_vary(r, s) : 0;
    }
    const struct proxy_rl_result *x = &r->pol.rl;
    int rc = num_header(s, SC_STR("x-ratelimit-limit"), x->limit);
    rc |= num_header(s, SC_STR("x-ratelimit-remaining"), x->remaining);
    rc |= num_header(s, SC_STR("x-ratelimit-reset"), x->reset_s);
    if (!x->allowed) {
        rc |= num_header(s, SC_STR("Retry-After"), x->retry_after);
    }
    rc |= proxy_cors_vary(r, s);
    return rc ? SC_ETOOBIG : 0;
}

int proxy_route_policy_resp_headers(struct proxy_exch *r, struct proxy_hsink *s)
{
    const struct proxy_route_policy *pol = r->route->pol;
    int rc = proxy_route_policy_rl_headers(r, s);
    if (pol) {
        rc |= write_ops(r, NULL, pol->resp.set, pol->resp.nset, s);
        rc |= write_ops(r, NULL, pol->resp.add, pol->resp.nadd, s);
    }
    return rc ? SC_ETOOBIG : 0;
}

int proxy_route_policy_write_local(struct proxy_exch *r, struct sc_buf *b, int status,
                                   const char *content_type, struct sc_str body, bool close)
{
    if (!r->pol.has_rl && !r->www_authenticate && !r->reply_headers.len && !r->resp_add.len &&
        !r->pol.cors) {
        return sc_http1_write_simple(b, status, content_type, body, close);
    }
    struct proxy_hsink s = proxy_h1_hsink(b);
    s.close = close;
    int rc = s.ops->status(&s, status, SC_STR_NULL);
    if (r->www_authenticate) {
        /* RFC 6750 3: an invalid token (proxy_jwt.c); the realm is the proxy's. */
        rc |= proxy_hsink_header(&s, SC_STR("WWW-Authenticate"),
                                 SC_STR("Bearer realm=\"sidecar\", error=\"invalid_token\""));
    }
    if (r->reply_headers.len) {
        rc |= proxy_hsink_lines(&s, r->reply_headers,
                                NULL); /* an external authorizer's (ext_authz) */
    }
    if (r->resp_add.len) {
        rc |= proxy_hsink_lines(&s, r->resp_add, NULL);
    }
    rc |= proxy_hsink_header(&s, SC_STR("Content-Type"), sc_str_c(content_type));
    rc |= num_header(&s, SC_STR("Content-Length"), (uint32_t)body.len);
    rc |= proxy_route_policy_rl_headers(r, &s);
    rc |= s.ops->end(&s);
    rc |= sc_buf_append_str(b, body);
    return rc ? SC_ETOOBIG : 0;
}

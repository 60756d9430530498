// SPDX-License-Identifier: Apache-2.0
// RequestAuthentication (see proxy_jwt.h): the option tables, rules compiled for the workload,
// token extraction from headers, query parameters and cookies, the JWS parse (base64url, JSON
// with duplicate members refused), issuer, audience and time checks, signature verification
// through proxy_jwt_crypto.c with the key the issuer's set holds for the token's kid and
// algorithm, and the per-worker cache of verified tokens (direct-mapped, bounded, by a seeded hash
// of the token, a hit compared whole).
#include "roles/proxy/proxy_jwt.h"

#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "core/file.h"
#include "core/tlbuf.h"
#include "net/http1.h"
#include "roles/proxy/proxy.h"
#include "roles/proxy/proxy_authz.h"
#include "roles/proxy/proxy_peerauth.h"

#define MAX_TOKEN 16384
#define MAX_RULES 64

/* ---- option tables ---- */

static const struct sc_opt header_opts[] = {
    { .name = "name",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_jwt_header_cfg, name),
      .help = "the header that carries the token",
      .flags = SC_OPT_REQUIRED },
    { .name = "prefix",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_jwt_header_cfg, prefix),
      .help = "text before the token (\"Bearer \"; compared without case)" },
    { 0 },
};

static const struct sc_opt claim_header_opts[] = {
    { .name = "header",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_jwt_claim_header_cfg, header),
      .help = "the header to set upstream",
      .flags = SC_OPT_REQUIRED },
    { .name = "claim",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_jwt_claim_header_cfg, claim),
      .help = "the claim (nested: a.b) whose string, number or boolean value it gets",
      .flags = SC_OPT_REQUIRED },
    { 0 },
};

static const struct sc_opt rule_opts[] = {
    { .name = "issuer",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_jwt_rule_cfg, issuer),
      .help = "the token's iss",
      .flags = SC_OPT_REQUIRED },
    { .name = "audiences",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct proxy_jwt_rule_cfg, audiences),
      .help = "accepted aud values, one of which the token must have (empty: any)",
      .max = 64 },
    { .name = "jwks",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_jwt_rule_cfg, jwks),
      .help = "the issuer's public keys, JWKS JSON inline" },
    { .name = "jwks_file",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_jwt_rule_cfg, jwks_file),
      .help = "a JWKS file, read at start and at each reload" },
    { .name = "jwks_uri",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_jwt_rule_cfg, jwks_uri),
      .help = "a JWKS URL (http or https), fetched at start, every jwks_refresh_interval and on "
              "an unknown kid; a failed fetch keeps the last good keys" },
    { .name = "from_headers",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct proxy_jwt_rule_cfg, from_headers),
      .help = "headers the token may come in (default, with no from_* at all: Authorization "
              "with prefix \"Bearer \", and the access_token parameter)",
      .sub = header_opts,
      .sub_size = sizeof(struct proxy_jwt_header_cfg),
      .max = 16 },
    { .name = "from_params",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct proxy_jwt_rule_cfg, from_params),
      .help = "query parameters the token may come in",
      .max = 16 },
    { .name = "from_cookies",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct proxy_jwt_rule_cfg, from_cookies),
      .help = "cookies the token may come in",
      .max = 16 },
    { .name = "forward_original_token",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct proxy_jwt_rule_cfg, forward_original_token),
      .def = "false",
      .help = "keep the header that carried the token in the request sent upstream" },
    { .name = "output_payload_to_header",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_jwt_rule_cfg, output_payload_to_header),
      .help = "a header set upstream to the verified payload (base64url)" },
    { .name = "output_claim_to_headers",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct proxy_jwt_rule_cfg, output_claim_to_headers),
      .help = "headers set upstream to claim values",
      .sub = claim_header_opts,
      .sub_size = sizeof(struct proxy_jwt_claim_header_cfg),
      .max = 16 },
    { 0 },
};

static const struct sc_opt ra_opts[] = {
    { .name = "name",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_ra_cfg, name),
      .help = "the policy's name",
      .flags = SC_OPT_REQUIRED,
      .check = proxy_name_check },
    { .name = "namespace",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_ra_cfg, ns),
      .help = "the policy's namespace: the root namespace makes it mesh-wide (default: the "
              "workload's)" },
    { .name = "match_labels",
      .type = SC_OPT_STRMAP,
      .offset = offsetof(struct proxy_ra_cfg, match_labels),
      .help = "selector: the labels a workload must all have (empty: every workload in scope)" },
    { .name = "jwt_rules",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct proxy_ra_cfg, jwt_rules),
      .help = "the issuers whose tokens are accepted",
      .sub = rule_opts,
      .sub_size = sizeof(struct proxy_jwt_rule_cfg),
      .max = MAX_RULES },
    { 0 },
};

const struct sc_opt proxy_jwt_opts[] = {
    { .name = "request_authentication",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct proxy_jwt_cfg, request_authentication),
      .help = "RequestAuthentication policies: JWT rules with Istio's semantics "
              "(docs/authorization.md)",
      .sub = ra_opts,
      .sub_size = sizeof(struct proxy_ra_cfg),
      .max = 256 },
    { .name = "jwt_clock_skew",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_jwt_cfg, clock_skew_ms),
      .def = "60s",
      .help = "tolerance for exp and nbf",
      .max = 600000 },
    { .name = "jwks_refresh_interval",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_jwt_cfg, jwks_refresh_ms),
      .def = "20m",
      .help = "how often jwks_uri key sets are fetched again",
      .min = 1000,
      .max = 86400000 },
    { .name = "jwt_cache_entries",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_jwt_cfg, cache_entries),
      .def = "1024",
      .help = "verified tokens remembered per worker (0: none)",
      .min = 0,
      .max = 65536 },
    { 0 },
};

/* ---- compiled rules ---- */

enum { LOC_HEADER, LOC_PARAM, LOC_COOKIE };

struct loc {
    int kind;
    struct sc_str name;
    struct sc_str prefix;
    bool owned; /* name and prefix are copies (the defaults are literals) */
};

struct rule {
    char *issuer;
    struct sc_strv audiences; /* owned copies */
    struct loc *locs;
    size_t nlocs;
    bool forward;
    char *payload_header;
    struct proxy_jwt_claim_header_cfg *claim_headers; /* owned copies */
    size_t nclaim_headers;
    struct proxy_jwks_src *src;
};

struct proxy_jwt {
    uint64_t id; /* tells cache entries of other snapshots apart */
    struct rule *rules;
    size_t nrules;
    int64_t skew_s;
    size_t cache_entries;
    struct sc_str *drop; /* output header names: never taken from the client */
    size_t ndrop;
    struct sc_metric *m_valid, *m_invalid, *m_missing, *m_cached;
};

static atomic_uint_fast64_t next_id = 1;

static bool applies(const struct proxy_ra_cfg *p, const struct proxy_workload *wl,
                    const char *root_ns)
{
    const char *ns = p->ns ? p->ns : wl->ns;
    if (strcmp(ns, wl->ns) != 0 && strcmp(ns, root_ns) != 0) {
        return false;
    }
    return proxy_workload_selected(wl, &p->match_labels);
}

static char *dup_lower(const char *s)
{
    char *d = sc_strdup(s);
    for (char *p = d; *p; p++) {
        if (*p >= 'A' && *p <= 'Z') {
            *p = (char)(*p | 0x20);
        }
    }
    return d;
}

static bool header_name_ok(const char *s)
{
    return sc_http1_is_token(sc_str_c(s));
}

int proxy_jwt_check(const struct proxy_jwt_cfg *c, char **err)
{
    const struct proxy_ra_cfg *ras = c->request_authentication.v;
    for (size_t i = 0; i < c->request_authentication.n; i++) {
        const struct proxy_jwt_rule_cfg *rs = ras[i].jwt_rules.v;
        for (size_t r = 0; r < ras[i].jwt_rules.n; r++) {
            const struct proxy_jwt_rule_cfg *rc = &rs[r];
            int nsrc = (rc->jwks != NULL) + (rc->jwks_file != NULL) + (rc->jwks_uri != NULL);
            const char *why = NULL;
            if (nsrc != 1) {
                why = "needs exactly one of jwks, jwks_file and jwks_uri";
            } else if (rc->jwks_uri && strncmp(rc->jwks_uri, "http://", 7) != 0 &&
                       strncmp(rc->jwks_uri, "https://", 8) != 0) {
                why = "jwks_uri must be an http:// or https:// URL";
            } else if (rc->output_payload_to_header &&
                       !header_name_ok(rc->output_payload_to_header)) {
                why = "output_payload_to_header is not a header name";
            }
            const struct proxy_jwt_header_cfg *hs = rc->from_headers.v;
            for (size_t h = 0; !why && h < rc->from_headers.n; h++) {
                if (!header_name_ok(hs[h].name)) {
                    why = "from_headers: not a header name";
                }
            }
            const struct proxy_jwt_claim_header_cfg *ch = rc->output_claim_to_headers.v;
            for (size_t h = 0; !why && h < rc->output_claim_to_headers.n; h++) {
                if (!header_name_ok(ch[h].header) || !ch[h].claim[0]) {
                    why = "output_claim_to_headers: not a header name or no claim";
                }
            }
            char *perr = NULL;
            struct proxy_jwks *ks =
                !why && rc->jwks ? proxy_jwks_parse(rc->jwks, strlen(rc->jwks), &perr) : NULL;
            proxy_jwks_unref(ks);
            if (why || perr) {
                *err = sc_asprintf("request_authentication \"%s\" rule %zu (%s): %s", ras[i].name,
                                   r + 1, rc->issuer, why ? why : perr);
                sc_free(perr);
                return SC_ECONFIG;
            }
        }
    }
    return 0;
}

static void add_drop(struct proxy_jwt *j, const char *name)
{
    for (size_t i = 0; i < j->ndrop; i++) {
        if (sc_str_caseeq(j->drop[i], sc_str_c(name))) {
            return;
        }
    }
    j->drop = sc_realloc(j->drop, (j->ndrop + 1) * sizeof(*j->drop));
    char *d = dup_lower(name);
    j->drop[j->ndrop++] = sc_str_c(d);
}

static int compile_rule(struct proxy_jwt *j, const struct proxy_jwt_rule_cfg *rc, struct rule *r,
                        uint64_t refresh_ms, struct sc_metric_family *fetches, char **err)
{
    r->issuer = sc_strdup(rc->issuer);
    r->audiences.v = rc->audiences.n ? sc_calloc(rc->audiences.n, sizeof(char *)) : NULL;
    for (size_t i = 0; i < rc->audiences.n; i++) {
        r->audiences.v[r->audiences.n++] = sc_strdup(rc->audiences.v[i]);
    }
    size_t n = rc->from_headers.n + rc->from_params.n + rc->from_cookies.n;
    bool dflt = n == 0;
    r->locs = sc_calloc(dflt ? 2 : n, sizeof(*r->locs));
    if (dflt) {
        r->locs[0] = (struct loc){ LOC_HEADER, SC_STR("authorization"), SC_STR("Bearer "), false };
        r->locs[1] = (struct loc){ LOC_PARAM, SC_STR("access_token"), SC_STR_NULL, false };
        r->nlocs = 2;
    }
    const struct proxy_jwt_header_cfg *hs = rc->from_headers.v;
    for (size_t i = 0; i < rc->from_headers.n; i++) {
        r->locs[r->nlocs++] =
            (struct loc){ LOC_HEADER, sc_str_c(hs[i].name), sc_str_c(hs[i].prefix), false };
    }
    for (size_t i = 0; i < rc->from_params.n; i++) {
        r->locs[r->nlocs++] =
            (struct loc){ LOC_PARAM, sc_str_c(rc->from_params.v[i]), SC_STR_NULL, false };
    }
    for (size_t i = 0; i < rc->from_cookies.n; i++) {
        r->locs[r->nlocs++] =
            (struct loc){ LOC_COOKIE, sc_str_c(rc->from_cookies.v[i]), SC_STR_NULL, false };
    }
    /* The location names point into the config: copy them so the snapshot owns them. */
    for (size_t i = dflt ? 2 : 0; i < r->nlocs; i++) {
        r->locs[i].owned = true;
        r->locs[i].name = sc_str_c(sc_strdup(r->locs[i].name.p));
        r->locs[i].prefix =
            r->locs[i].prefix.p ? sc_str_c(sc_strdup(r->locs[i].prefix.p)) : SC_STR_NULL;
    }
    r->forward = rc->forward_original_token;
    if (rc->output_payload_to_header) {
        r->payload_header = sc_strdup(rc->output_payload_to_header);
        add_drop(j, rc->output_payload_to_header);
    }
    const struct proxy_jwt_claim_header_cfg *ch = rc->output_claim_to_headers.v;
    r->claim_headers = rc->output_claim_to_headers.n
                           ? sc_calloc(rc->output_claim_to_headers.n, sizeof(*r->claim_headers))
                           : NULL;
    for (size_t i = 0; i < rc->output_claim_to_headers.n; i++) {
        r->claim_headers[i].header = sc_strdup(ch[i].header);
        r->claim_headers[i].claim = sc_strdup(ch[i].claim);
        r->nclaim_headers++;
        add_drop(j, ch[i].header);
    }
    if (rc->jwks_uri) {
        r->src = proxy_jwks_src_uri(rc->jwks_uri, refresh_ms, fetches);
        return 0;
    }
    const char *text = rc->jwks;
    size_t len = text ? strlen(text) : 0;
    struct sc_buf file;
    sc_buf_init(&file, 1024 * 1024);
    if (rc->jwks_file) {
        int frc = sc_file_read(rc->jwks_file, &file);
        if (frc < 0) {
            *err = sc_asprintf("jwks_file %s: %s", rc->jwks_file, sc_strerror(frc));
            sc_buf_cleanup(&file);
            return SC_ECONFIG;
        }
        text = file.p ? file.p : "";
        len = file.len;
    }
    char *why = NULL;
    struct proxy_jwks *ks = proxy_jwks_parse(text, len, &why);
    sc_buf_cleanup(&file);
    if (!ks) {
        *err = sc_asprintf("issuer %s: %s", rc->issuer, why);
        sc_free(why);
        return SC_ECONFIG;
    }
    r->src = proxy_jwks_src_fixed(ks);
    return 0;
}

static void free_rule(struct rule *r)
{
    sc_free(r->issuer);
    for (size_t i = 0; i < r->audiences.n; i++) {
        sc_free(r->audiences.v[i]);
    }
    sc_free(r->audiences.v);
    for (size_t i = 0; i < r->nlocs; i++) {
        if (r->locs[i].owned) {
            sc_free((char *)r->locs[i].name.p);
            sc_free((char *)r->locs[i].prefix.p);
        }
    }
    sc_free(r->locs);
    sc_free(r->payload_header);
    for (size_t i = 0; i < r->nclaim_headers; i++) {
        sc_free(r->claim_headers[i].header);
        sc_free(r->claim_headers[i].claim);
    }
    sc_free(r->claim_headers);
    proxy_jwks_src_release(r->src);
}

struct proxy_jwt *proxy_jwt_new(const struct proxy_jwt_cfg *c, const struct proxy_workload *wl,
                                const char *root_ns, struct sc_metrics *reg, char **err)
{
    const struct proxy_ra_cfg *ras = c->request_authentication.v;
    size_t n = 0;
    for (size_t i = 0; i < c->request_authentication.n; i++) {
        if (applies(&ras[i], wl, root_ns)) {
            n += ras[i].jwt_rules.n;
        }
    }
    if (n == 0) {
        return NULL;
    }
    static const char *const res_labels[] = { "result", NULL };
    static const char *const fetch_labels[] = { "uri", "result", NULL };
    struct sc_metric_family *fam =
        reg ? sc_metrics_family(reg, SC_METRIC_COUNTER, "sidecar_jwt_authn_total",
                                "Requests by JWT authentication outcome: valid (verified), "
                                "cached (verified earlier), invalid (401), missing (no token).",
                                res_labels, NULL, 0)
            : NULL;
    struct sc_metric_family *fetches =
        reg ? sc_metrics_family(reg, SC_METRIC_COUNTER, "sidecar_jwks_fetches_total",
                                "JWKS fetches from jwks_uri by result; a failure keeps the last "
                                "good key set.",
                                fetch_labels, NULL, 0)
            : NULL;
    struct proxy_jwt *j = SC_NEW(struct proxy_jwt);
    j->id = atomic_fetch_add(&next_id, 1);
    j->rules = sc_calloc(n, sizeof(*j->rules));
    j->skew_s = (int64_t)(c->clock_skew_ms / 1000);
    j->cache_entries = (size_t)c->cache_entries;
    if (fam) {
        const char *v[][1] = { { "valid" }, { "invalid" }, { "missing" }, { "cached" } };
        j->m_valid = sc_metrics_get(fam, v[0]);
        j->m_invalid = sc_metrics_get(fam, v[1]);
        j->m_missing = sc_metrics_get(fam, v[2]);
        j->m_cached = sc_metrics_get(fam, v[3]);
    }
    for (size_t i = 0; i < c->request_authentication.n; i++) {
        if (!applies(&ras[i], wl, root_ns)) {
            continue;
        }
        const struct proxy_jwt_rule_cfg *rs = ras[i].jwt_rules.v;
        for (size_t r = 0; r < ras[i].jwt_rules.n; r++) {
            int rc =
                compile_rule(j, &rs[r], &j->rules[j->nrules], c->jwks_refresh_ms, fetches, err);
            j->nrules++;
            if (rc < 0) {
                char *e = *err;
                *err = sc_asprintf("request_authentication \"%s\": %s", ras[i].name, e);
                sc_free(e);
                proxy_jwt_free(j);
                return NULL;
            }
        }
    }
    return j;
}

void proxy_jwt_free(struct proxy_jwt *j)
{
    if (!j) {
        return;
    }
    for (size_t i = 0; i < j->nrules; i++) {
        free_rule(&j->rules[i]);
    }
    sc_free(j->rules);
    for (size_t i = 0; i < j->ndrop; i++) {
        sc_free((char *)j->drop[i].p);
    }
    sc_free(j->drop);
    sc_free(j);
}

const struct sc_str *proxy_jwt_drop_names(const struct proxy_jwt *j, size_t *n)
{
    *n = j->ndrop;
    return j->drop;
}

/* ---- the cache ---- */

#define CACHE_MAX_TOKEN 4096 /* longer tokens are verified each time: entries stay small */

/* A seeded 64-bit hash of <t>'s length and last 32 bytes, eight bytes a step: a token ends in
 * its signature, which differs between any two tokens, and a hit compares the whole token, so
 * hashing the rest would only cost (a token is hashed on every request). */
static uint64_t token_hash(struct sc_str t, uint64_t seed)
{
    uint64_t h = seed ^ (t.len * 0x9e3779b97f4a7c15ull);
    if (t.len > 32) {
        t = sc_str_n(t.p + t.len - 32, 32);
    }
    size_t i = 0;
    for (; i + 8 <= t.len; i += 8) {
        uint64_t w;
        memcpy(&w, t.p + i, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
    }
    uint64_t w = 0;
    memcpy(&w, t.p + i, t.len - i);
    h = (h ^ w) * 0x94d049bb133111ebull;
    return h ^ (h >> 29);
}

struct entry {
    char *token; /* the verified token itself: a hit compares it whole */
    size_t token_len;
    uint64_t owner; /* the proxy_jwt id; 0: empty */
    int64_t exp;    /* INT64_MAX: none */
    json_t *payload;
    char *principal;
    char *presenter;
    char *add;
    size_t add_len;
    bool strip; /* the rule does not forward the token */
    struct proxy_az_auth auth;
};

struct proxy_jwt_cache {
    uint64_t seed; /* random: slots cannot be aimed at from outside */
    size_t n;
    struct entry *e;
};

size_t proxy_jwt_cache_size(const struct proxy_jwt_cache *c)
{
    return c ? c->n : 0;
}

size_t proxy_jwt_cache_want(const struct proxy_jwt *j)
{
    return j->cache_entries ? j->cache_entries : 1;
}

struct proxy_jwt_cache *proxy_jwt_cache_new(size_t entries)
{
    struct proxy_jwt_cache *c = SC_NEW(struct proxy_jwt_cache);
    c->n = entries ? entries : 1;
    if (getrandom(&c->seed, sizeof(c->seed), 0) != sizeof(c->seed)) {
        c->seed = uv_hrtime() ^ (uint64_t)(uintptr_t)c;
    }
    c->e = sc_calloc(c->n, sizeof(*c->e));
    return c;
}

static void entry_clear(struct entry *e)
{
    sc_free(e->token);
    json_decref(e->payload);
    sc_free(e->principal);
    sc_free(e->presenter);
    sc_free(e->add);
    memset(e, 0, sizeof(*e));
}

void proxy_jwt_cache_free(struct proxy_jwt_cache *c)
{
    if (!c) {
        return;
    }
    for (size_t i = 0; i < c->n; i++) {
        entry_clear(&c->e[i]);
    }
    sc_free(c->e);
    sc_free(c);
}

/* ---- claims for `when` ---- */

static json_t *claim_at(json_t *payload, const struct sc_str *path, size_t n)
{
    json_t *v = payload;
    for (size_t i = 0; i < n && v; i++) {
        v = json_is_object(v) ? json_object_getn(v, path[i].p, path[i].len) : NULL;
    }
    return v;
}

static int claim_cb(const void *ctx, const struct sc_str *path, size_t n,
                    bool (*cb)(void *arg, struct sc_str v), void *arg)
{
    json_t *v = claim_at((json_t *)ctx, path, n);
    if (json_is_string(v)) {
        cb(arg, sc_str_n(json_string_value(v), json_string_length(v)));
        return 0;
    }
    if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x)
        {
            if (json_is_string(x) &&
                !cb(arg, sc_str_n(json_string_value(x), json_string_length(x)))) {
                break;
            }
        }
        return 0;
    }
    return -1;
}

/* ---- extraction ---- */

/* The token of location <l> in <m>/<query>, and the header it came in (for stripping). */
static struct sc_str find_token(const struct loc *l, const struct sc_http_msg *m,
                                struct sc_str query, struct sc_str *line)
{
    *line = SC_STR_NULL;
    if (l->kind == LOC_HEADER) {
        for (size_t i = 0; i < m->nheaders; i++) {
            const struct sc_http_header *h = &m->headers[i];
            if (!sc_str_caseeq(h->name, l->name)) {
                continue;
            }
            struct sc_str v = h->value;
            if (l->prefix.len) {
                if (v.len < l->prefix.len ||
                    !sc_str_caseeq(sc_str_n(v.p, l->prefix.len), l->prefix)) {
                    continue;
                }
                v.p += l->prefix.len;
                v.len -= l->prefix.len;
            }
            *line = h->value;
            return sc_str_trim(v);
        }
        return SC_STR_NULL;
    }
    if (l->kind == LOC_PARAM) {
        struct sc_str q = query;
        while (q.len) {
            struct sc_str kv = sc_str_split(&q, '&');
            struct sc_str k = sc_str_split(&kv, '=');
            if (sc_str_eq(k, l->name)) {
                return kv;
            }
        }
        return SC_STR_NULL;
    }
    for (size_t i = 0; i < m->nheaders; i++) {
        const struct sc_http_header *h = &m->headers[i];
        if (!sc_str_caseeq(h->name, SC_STR("cookie"))) {
            continue;
        }
        struct sc_str c = h->value;
        while (c.len) {
            struct sc_str kv = sc_str_trim(sc_str_split(&c, ';'));
            struct sc_str k = sc_str_trim(sc_str_split(&kv, '='));
            if (sc_str_eq(k, l->name)) {
                return sc_str_trim(kv);
            }
        }
    }
    return SC_STR_NULL;
}

/* ---- verification ---- */

static bool aud_ok(const struct rule *r, json_t *payload)
{
    if (r->audiences.n == 0) {
        return true;
    }
    json_t *aud = json_object_get(payload, "aud");
    for (size_t i = 0; i < r->audiences.n; i++) {
        const char *want = r->audiences.v[i];
        if (json_is_string(aud) && strcmp(json_string_value(aud), want) == 0) {
            return true;
        }
        size_t k;
        json_t *x;
        json_array_foreach(aud, k, x)
        {
            if (json_is_string(x) && strcmp(json_string_value(x), want) == 0) {
                return true;
            }
        }
    }
    return false;
}

/* A NumericDate member: 0 with <*out> set, 1 when absent, -1 when not a number. */
static int numeric_date(json_t *payload, const char *name, int64_t *out)
{
    json_t *v = json_object_get(payload, name);
    if (!v) {
        return 1;
    }
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 0;
    }
    if (json_is_real(v) && json_real_value(v) > -9e15 && json_real_value(v) < 9e15) {
        *out = (int64_t)json_real_value(v);
        return 0;
    }
    return -1;
}

/* Appends "name: value\r\n" when <value> is a header value (visible ASCII and spaces). */
static void add_header(struct sc_buf *b, const char *name, const char *value, size_t vl)
{
    for (size_t i = 0; i < vl; i++) {
        unsigned char c = (unsigned char)value[i];
        if (c < 0x20 || c == 0x7f) {
            return;
        }
    }
    sc_buf_append_cstr(b, name);
    sc_buf_append(b, ": ", 2);
    sc_buf_append(b, value, vl);
    sc_buf_append(b, "\r\n", 2);
}

/* Verifies <tok>; on success fills <e> (owner, payload, principal, headers). Returns NULL or a
 * static reason. */
static const char *verify(const struct proxy_jwt *j, struct sc_str tok, int64_t now,
                          struct entry *e)
{
    const char *d1 = memchr(tok.p, '.', tok.len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', (size_t)(tok.p + tok.len - d1 - 1)) : NULL;
    if (!d1 || !d2 || memchr(d2 + 1, '.', (size_t)(tok.p + tok.len - d2 - 1))) {
        return "Jwt is not in the form of Header.Payload.Signature";
    }
    size_t hl = (size_t)(d1 - tok.p), pl = (size_t)(d2 - d1 - 1),
           sl = (size_t)(tok.p + tok.len - d2 - 1);
    static _Thread_local void *tbuf; /* MAX_TOKEN bytes (core/tlbuf.h) */
    uint8_t *buf = sc_tlbuf_get(&tbuf, MAX_TOKEN);
    long n = proxy_jwt_b64url(tok.p, hl, buf, MAX_TOKEN);
    json_t *hdr =
        n > 0 ? json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, NULL) : NULL;
    if (!json_is_object(hdr)) {
        json_decref(hdr);
        return "Jwt header is an invalid JSON";
    }
    json_t *algv = json_object_get(hdr, "alg"), *kidv = json_object_get(hdr, "kid");
    int alg = json_is_string(algv)
                  ? proxy_jwt_alg(sc_str_n(json_string_value(algv), json_string_length(algv)))
                  : PROXY_JWS_NONE;
    const char *why = NULL;
    char kid[128] = "";
    if (alg == PROXY_JWS_NONE) {
        why = "Jwt algorithm is not supported"; /* none, HS*, unknown */
    } else if (json_object_get(hdr, "crit")) {
        why = "Jwt header has crit extensions";
    } else if (kidv && (!json_is_string(kidv) || json_string_length(kidv) >= sizeof(kid))) {
        why = "Jwt kid is invalid";
    } else if (kidv) {
        memcpy(kid, json_string_value(kidv), json_string_length(kidv) + 1);
    }
    json_decref(hdr);
    if (why) {
        return why;
    }
    n = proxy_jwt_b64url(d1 + 1, pl, buf, MAX_TOKEN);
    json_t *payload =
        n > 0 ? json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, NULL) : NULL;
    if (!json_is_object(payload)) {
        json_decref(payload);
        return "Jwt payload is an invalid JSON";
    }
    const char *iss = json_string_value(json_object_get(payload, "iss"));
    const struct rule *r = NULL;
    for (size_t i = 0; iss && i < j->nrules && !r; i++) {
        if (strcmp(j->rules[i].issuer, iss) == 0) {
            r = &j->rules[i];
        }
    }
    int64_t exp = INT64_MAX, nbf = 0;
    int erc = numeric_date(payload, "exp", &exp), nrc = numeric_date(payload, "nbf", &nbf);
    json_t *subv = json_object_get(payload, "sub");
    if (!r) {
        why = "Jwt issuer is not configured";
    } else if (erc < 0 || nrc < 0 || (subv && !json_is_string(subv))) {
        why = "Jwt has a malformed claim";
    } else if (erc == 0 && exp <= now - j->skew_s) {
        why = "Jwt is expired";
    } else if (nrc == 0 && nbf > now + j->skew_s) {
        why = "Jwt not yet valid";
    } else if (!aud_ok(r, payload)) {
        why = "Audiences in Jwt are not allowed";
    }
    if (why) {
        json_decref(payload);
        return why;
    }
    struct proxy_jwks *ks = proxy_jwks_src_get(r->src);
    bool kid_known = false;
    const void *key = proxy_jwks_find(ks, sc_str_c(kid), alg, &kid_known);
    long sn = key ? proxy_jwt_b64url(d2 + 1, sl, buf, MAX_TOKEN) : -1;
    if (!key) {
        why = "Jwks doesn't have key to match kid or alg from Jwt";
        if (kid[0] && !kid_known) {
            proxy_jwks_src_kick(r->src);
        }
    } else if (sn <= 0 || proxy_jwt_verify(key, alg, tok.p, hl + 1 + pl, buf, (size_t)sn) < 0) {
        why = "Jwt verification fails";
    }
    proxy_jwks_unref(ks);
    if (why) {
        json_decref(payload);
        return why;
    }
    /* Verified: remember what requests need. */
    const char *sub = json_string_value(subv);
    e->payload = payload;
    e->exp = exp;
    e->principal = sc_asprintf("%s/%s", iss, sub ? sub : "");
    const char *azp = json_string_value(json_object_get(payload, "azp"));
    e->presenter = azp ? sc_strdup(azp) : NULL;
    e->strip = !r->forward;
    struct sc_buf b;
    sc_buf_init(&b, 64 * 1024);
    if (r->payload_header) {
        add_header(&b, r->payload_header, d1 + 1, pl);
    }
    for (size_t i = 0; i < r->nclaim_headers; i++) {
        struct sc_str path[8];
        size_t np = 0;
        struct sc_str rest = sc_str_c(r->claim_headers[i].claim);
        while (rest.len && np < 8) {
            path[np++] = sc_str_split(&rest, '.');
        }
        json_t *v = claim_at(payload, path, np);
        char num[64];
        if (json_is_string(v)) {
            add_header(&b, r->claim_headers[i].header, json_string_value(v), json_string_length(v));
        } else if (json_is_integer(v) || json_is_boolean(v)) {
            int nl = json_is_integer(v)
                         ? snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(v))
                         : snprintf(num, sizeof(num), "%s", json_is_true(v) ? "true" : "false");
            add_header(&b, r->claim_headers[i].header, num, (size_t)nl);
        }
    }
    e->add_len = b.len;
    e->add = b.len ? sc_strndup(b.p, b.len) : NULL;
    sc_buf_cleanup(&b);
    e->owner = j->id;
    return NULL;
}

static void fill(const struct entry *e, struct proxy_jwt_result *res, struct sc_str line)
{
    res->auth = &e->auth;
    res->strip = e->strip ? line : SC_STR_NULL;
    res->add = sc_str_n(e->add, e->add_len);
}

int proxy_jwt_authenticate(const struct proxy_jwt *j, struct proxy_jwt_cache *cache,
                           const struct sc_http_msg *m, struct sc_str query, int64_t now_s,
                           struct proxy_jwt_result *res, const char **why)
{
    memset(res, 0, sizeof(*res));
    struct sc_str tok = SC_STR_NULL, line = SC_STR_NULL;
    for (size_t r = 0; r < j->nrules && !tok.len; r++) {
        for (size_t l = 0; l < j->rules[r].nlocs && !tok.len; l++) {
            tok = find_token(&j->rules[r].locs[l], m, query, &line);
        }
    }
    if (!tok.len) {
        sc_metrics_counter_inc(j->m_missing);
        return 0; /* no token: no identity, the policies decide */
    }
    if (tok.len > MAX_TOKEN) {
        sc_metrics_counter_inc(j->m_invalid);
        *why = "Jwt is too large";
        return -1;
    }
    /* The token's slot (by a seeded hash) holds what requests need once it is verified; a hit
     * compares the whole token, so a collision only evicts. With caching off, or a token over
     * CACHE_MAX_TOKEN, slot 0 holds it for this request only. */
    bool cached = j->cache_entries > 0 && tok.len <= CACHE_MAX_TOKEN;
    struct entry *e = &cache->e[0];
    if (cached) {
        e = &cache->e[token_hash(tok, cache->seed) % cache->n];
        if (e->owner == j->id && e->token_len == tok.len && memcmp(e->token, tok.p, tok.len) == 0 &&
            e->exp > now_s - j->skew_s) {
            sc_metrics_counter_inc(j->m_cached);
            fill(e, res, line);
            return 0;
        }
    }
    entry_clear(e);
    *why = verify(j, tok, now_s, e);
    if (*why) {
        sc_metrics_counter_inc(j->m_invalid);
        return -1;
    }
    if (cached) {
        e->token = sc_strndup(tok.p, tok.len);
        e->token_len = tok.len;
    } else {
        e->owner = 0; /* never found by a lookup */
    }
    e->auth.principal = sc_str_c(e->principal);
    e->auth.presenter = sc_str_c(e->presenter);
    e->auth.claim = claim_cb;
    e->auth.ctx = e->payload;
    sc_metrics_counter_inc(j->m_valid);
    fill(e, res, line);
    return 0;
}

// SPDX-License-Identifier: Apache-2.0
// The AuthorizationPolicy index: at compile time every rule of every list is numbered in
// evaluation order, and for the attributes most rules key on (the request method, the first
// segment of the path, and what the connection fixes: source address, peer principal and
// namespace, SNI, destination) a bitset says which rules a request with that attribute can still
// match. Evaluation ANDs the bitsets of the request's attributes and matches only the rules left,
// in order, in full. Key invariant: a bit is cleared only for a rule that cannot match (each
// bitset is a necessary condition of the rule), so the decision, the policy named, AUDIT and dry
// run marks and every counter are exactly those of the linear evaluator (proxy_authz_eval_linear,
// which the unit test and the fuzz target compare against on random policies and requests).
#include <string.h>

#include "core/alloc.h"
#include "core/metrics.h"
#include "roles/proxy/proxy_authz_int.h"

/* Lists in evaluation order (dry runs first: they only mark). */
static const int order[L_COUNT] = { L_DRY, L_CUSTOM, L_DENY, L_AUDIT, L_ALLOW };

int proxy_az_method_class(struct sc_str m)
{
    static const struct {
        const char *s;
        size_t n;
    } names[AZ_MC_OTHER] = {
        [AZ_MC_GET] = { "GET", 3 },         [AZ_MC_HEAD] = { "HEAD", 4 },
        [AZ_MC_POST] = { "POST", 4 },       [AZ_MC_PUT] = { "PUT", 3 },
        [AZ_MC_DELETE] = { "DELETE", 6 },   [AZ_MC_PATCH] = { "PATCH", 5 },
        [AZ_MC_OPTIONS] = { "OPTIONS", 7 }, [AZ_MC_CONNECT] = { "CONNECT", 7 },
        [AZ_MC_TRACE] = { "TRACE", 5 },
    };
    if (m.len == 3 && m.p[0] == 'G' && m.p[1] == 'E' && m.p[2] == 'T') {
        return AZ_MC_GET; /* the common case without a loop */
    }
    for (int i = 0; i < AZ_MC_OTHER; i++) {
        if (m.len == names[i].n && memcmp(m.p, names[i].s, m.len) == 0) {
            return i;
        }
    }
    return AZ_MC_OTHER;
}

/* The first segment of a path: what lies between its leading '/' and the next '/' (or the end).
 * Returns false when <p> does not start with '/'. */
static bool first_seg(struct sc_str p, struct sc_str *seg)
{
    if (p.len == 0 || p.p[0] != '/') {
        return false;
    }
    const char *e = memchr(p.p + 1, '/', p.len - 1);
    *seg = sc_str_n(p.p + 1, e ? (size_t)(e - p.p - 1) : p.len - 1);
    return true;
}

/* The first segment every path matching pattern <m> has; false when there is no single one
 * ("*.php", "/api*", "/{*}/x", a pattern not starting with '/'). */
static bool pattern_seg(const struct az_str *m, struct sc_str *seg)
{
    size_t lit = m->len;
    if (m->kind == M_TEMPLATE) {
        lit = (size_t)((const char *)memchr(m->s, '{', m->len) - m->s);
    } else if (m->kind != M_EXACT && m->kind != M_PREFIX) {
        return false;
    }
    struct sc_str s = sc_str_n(m->s, lit);
    if (!first_seg(s, seg)) {
        return false;
    }
    /* A prefix or template literal must close the segment with its '/': "/api" as a prefix
     * also matches "/apis/x". An exact pattern's last segment ends where the path does. */
    return m->kind == M_EXACT || seg->len + 1 < s.len;
}

static uint64_t seg_hash(struct sc_str s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < s.len; i++) {
        h = (h ^ (unsigned char)s.p[i]) * 0x100000001b3ull;
    }
    return h;
}

/* The method classes rule <r> may match (a bit each), or all when it does not name its methods
 * exactly in every operation. */
static unsigned rule_methods(const struct az_rule *r)
{
    const unsigned all = (1u << AZ_MC_COUNT) - 1;
    unsigned m = 0;
    if (r->nto == 0) {
        return all;
    }
    for (size_t i = 0; i < r->nto; i++) {
        const struct az_strs *ms = &r->to[i].methods;
        if (ms->n == 0) {
            return all;
        }
        for (size_t k = 0; k < ms->n; k++) {
            if (ms->v[k].kind != M_EXACT) {
                return all;
            }
            m |= 1u << proxy_az_method_class(sc_str_n(ms->v[k].s, ms->v[k].len));
        }
    }
    return m;
}

/* Whether every operation of <r> names its paths, each with a first segment: then a path is
 * matched only when its first segment is one of those. */
static bool rule_keyed(const struct az_rule *r)
{
    if (r->nto == 0) {
        return false;
    }
    for (size_t i = 0; i < r->nto; i++) {
        const struct az_strs *ps = &r->to[i].paths;
        if (ps->n == 0) {
            return false;
        }
        for (size_t k = 0; k < ps->n; k++) {
            struct sc_str seg;
            if (!pattern_seg(&ps->v[k], &seg)) {
                return false;
            }
        }
    }
    return true;
}

static struct az_seg *seg_slot(const struct az_index *ix, struct sc_str s, uint64_t h)
{
    size_t mask = ix->nseg_slots - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        struct az_seg *g = &ix->seg[i];
        if (!g->s || (g->hash == h && g->len == s.len && memcmp(g->s, s.p, s.len) == 0)) {
            return g;
        }
    }
}

static void set_bit(uint64_t *b, size_t i)
{
    b[i / 64] |= 1ull << (i % 64);
}

void proxy_az_index_build(struct proxy_authz *az)
{
    struct az_index *ix = &az->ix;
    size_t n = 0, npaths = 0;
    for (int o = 0; o < L_COUNT; o++) {
        int l = order[o];
        ix->start[o] = n;
        for (size_t i = 0; i < az->nlist[l]; i++) {
            const struct az_policy *p = az->list[l][i];
            n += p->nrules;
            for (size_t r = 0; r < p->nrules; r++) {
                for (size_t t = 0; t < p->rules[r].nto; t++) {
                    npaths += p->rules[r].to[t].paths.n;
                }
            }
        }
    }
    ix->start[L_COUNT] = n;
    ix->nrules = n;
    ix->words = (n + 63) / 64;
    ix->rule = sc_calloc(n ? n : 1, sizeof(*ix->rule));
    ix->pol = sc_calloc(n ? n : 1, sizeof(*ix->pol));
    ix->nseg_slots = 4;
    while (ix->nseg_slots < 2 * npaths) {
        ix->nseg_slots *= 2;
    }
    ix->seg = sc_calloc(ix->nseg_slots, sizeof(*ix->seg));
    size_t w = ix->words;
    /* Bitsets: one per method class, the unkeyed paths, then one per distinct segment. */
    ix->store = sc_calloc((AZ_MC_COUNT + 1 + npaths) * w + 1, sizeof(uint64_t));
    for (int c = 0; c < AZ_MC_COUNT; c++) {
        ix->method[c] = ix->store + (size_t)c * w;
    }
    ix->path_any = ix->store + (size_t)AZ_MC_COUNT * w;
    uint64_t *next = ix->path_any + w;
    size_t k = 0;
    for (int o = 0; o < L_COUNT; o++) {
        int l = order[o];
        for (size_t i = 0; i < az->nlist[l]; i++) {
            const struct az_policy *p = az->list[l][i];
            for (size_t r = 0; r < p->nrules; r++, k++) {
                const struct az_rule *ru = &p->rules[r];
                ix->rule[k] = ru;
                ix->pol[k] = p;
                ix->conn |= proxy_az_rule_has_conn(ru);
                unsigned ms = rule_methods(ru);
                for (int c = 0; c < AZ_MC_COUNT; c++) {
                    if (ms & (1u << c)) {
                        set_bit(ix->method[c], k);
                    }
                }
                if (!rule_keyed(ru)) {
                    set_bit(ix->path_any, k);
                    continue;
                }
                for (size_t t = 0; t < ru->nto; t++) {
                    const struct az_strs *ps = &ru->to[t].paths;
                    for (size_t q = 0; q < ps->n; q++) {
                        struct sc_str s;
                        pattern_seg(&ps->v[q], &s);
                        uint64_t h = seg_hash(s);
                        struct az_seg *g = seg_slot(ix, s, h);
                        if (!g->s) {
                            g->s = s.p;
                            g->len = s.len;
                            g->hash = h;
                            g->bits = next;
                            next += w;
                        }
                        set_bit(g->bits, k);
                    }
                }
            }
        }
    }
    /* A keyed segment's rules also include every unkeyed one. */
    for (size_t i = 0; i < ix->nseg_slots; i++) {
        for (size_t q = 0; ix->seg[i].s && q < w; q++) {
            ix->seg[i].bits[q] |= ix->path_any[q];
        }
    }
}

void proxy_az_index_free(struct az_index *ix)
{
    sc_free(ix->rule);
    sc_free(ix->pol);
    sc_free(ix->seg);
    sc_free(ix->store);
    memset(ix, 0, sizeof(*ix));
}

/* Fills <c> for <az>: the rules whose connection attributes match <rq>'s. */
static void conn_fill(const struct proxy_authz *az, const struct proxy_az_req *rq,
                      struct proxy_az_conn *c)
{
    const struct az_index *ix = &az->ix;
    memset(c->may, 0xff, sizeof(c->may));
    size_t n = ix->nrules < PROXY_AZ_CONN_WORDS * 64 ? ix->nrules : PROXY_AZ_CONN_WORDS * 64;
    for (size_t k = 0; k < n; k++) {
        if (!proxy_az_rule_match(ix->rule[k], rq, AZ_MATCH_CONN)) {
            c->may[k / 64] &= ~(1ull << (k % 64));
        }
    }
    c->gen = az->gen;
}

/* The bitsets a request's attributes select: a rule may match when its bit is set in all. */
struct cands {
    const uint64_t *method, *path, *conn;
};

/* The first policy of list position <o> with a matching rule, from rule <*k> on (<*k> is left
 * past that policy's rules, or at the list's end), or NULL. */
__attribute__((always_inline)) static inline const struct az_policy *
first_match(const struct az_index *ix, const struct cands *cs, int o, size_t *k,
            const struct proxy_az_req *rq)
{
    size_t end = ix->start[o + 1];
    while (*k < end) {
        size_t wi = *k / 64;
        uint64_t b = cs->method[wi] & cs->path[wi] & (~0ull << (*k % 64));
        if (cs->conn && wi < PROXY_AZ_CONN_WORDS) {
            b &= cs->conn[wi];
        }
        if (!b) {
            *k = (wi + 1) * 64;
            continue;
        }
        size_t r = wi * 64 + (size_t)__builtin_ctzll(b);
        if (r >= end) {
            break;
        }
        *k = r + 1;
        if (proxy_az_rule_match(ix->rule[r], rq, AZ_MATCH_ALL)) {
            const struct az_policy *p = ix->pol[r];
            while (*k < end && ix->pol[*k] == p) {
                (*k)++;
            }
            return p;
        }
    }
    *k = end;
    return NULL;
}

/* Whether list position <o> has rules. */
static bool has_rules(const struct az_index *ix, int o)
{
    return ix->start[o] != ix->start[o + 1];
}

void proxy_authz_eval(const struct proxy_authz *az, const struct proxy_az_req *rq,
                      struct proxy_az_decision *d)
{
    if (rq->tcp) {
        proxy_authz_eval_linear(az, rq, d); /* TCP rules ignore the HTTP fields keyed on */
        return;
    }
    const struct az_index *ix = &az->ix;
    struct cands cs = { ix->method[proxy_az_method_class(rq->method)], ix->path_any, NULL };
    struct sc_str seg;
    if (first_seg(rq->path, &seg)) {
        uint64_t h = seg_hash(seg);
        const struct az_seg *g = seg_slot(ix, seg, h);
        if (g->s) {
            cs.path = g->bits;
        }
    }
    if (rq->conn && ix->conn) {
        if (rq->conn->gen != az->gen) {
            conn_fill(az, rq, rq->conn);
        }
        cs.conn = rq->conn->may;
    }
    memset(d, 0, sizeof(*d));
    d->result = PROXY_AZ_RES_ALLOW;
    /* As proxy_authz_eval_linear: dry runs mark and count, CUSTOM names the authorizer, a DENY
     * denies, AUDIT marks, then ALLOW policies decide. */
    size_t k = ix->start[0];
    bool dry_allow_hit = false;
    const struct az_policy *p;
    while (has_rules(ix, 0) && (p = first_match(ix, &cs, 0, &k, rq)) != NULL) {
        proxy_az_dry_mark(d, p, &dry_allow_hit);
    }
    proxy_az_dry_end(az, d, dry_allow_hit);
    k = ix->start[1];
    if (has_rules(ix, 1) && (p = first_match(ix, &cs, 1, &k, rq)) != NULL) {
        d->custom = p->name;
        d->ext = az->ext[p->provider];
    }
    k = ix->start[2];
    if (has_rules(ix, 2) && (p = first_match(ix, &cs, 2, &k, rq)) != NULL) {
        d->result = PROXY_AZ_RES_DENY;
        d->policy = p->name;
        sc_metrics_counter_inc(p->m[R_DENIED]);
        return;
    }
    k = ix->start[3];
    if (has_rules(ix, 3) && (p = first_match(ix, &cs, 3, &k, rq)) != NULL) {
        d->audit = p->name;
        sc_metrics_counter_inc(p->m[R_AUDITED]);
    }
    if (az->nlist[L_ALLOW] == 0) {
        sc_metrics_counter_inc(az->m_default[R_ALLOWED]);
        return;
    }
    k = ix->start[4];
    if (has_rules(ix, 4) && (p = first_match(ix, &cs, 4, &k, rq)) != NULL) {
        d->policy = p->name;
        sc_metrics_counter_inc(p->m[R_ALLOWED]);
        return;
    }
    d->result = PROXY_AZ_RES_DENY;
    sc_metrics_counter_inc(az->m_default[R_DENIED]);
}

// SPDX-License-Identifier: Apache-2.0
// Local rate limiting: token buckets, the keyed table that holds one bucket per client IP or header
// value, and the registry that keeps limiters alive across reloads. A bucket holds up to `burst`
// tokens and gains `requests_per_unit` per unit, continuously (in millionths of a token, so a
// limit of 1/hour refills exactly); a request takes one or is refused.
//
// Invariants: a keyed table never holds more than max_keys buckets (a new key evicts the least
// recently used one; a key idle long enough to be full again loses nothing by eviction); every
// bucket of a limiter is touched under that limiter's one lock (a spin lock), held for a hash
// lookup and a few arithmetic operations, so all workers share the same buckets.
#include <stdatomic.h>
#include <string.h>

#include <uv.h>

#include "core/alloc.h"
#include "core/spin.h"
#include "roles/proxy/proxy_route_policy.h"

#define MICRO 1000000ULL
#define KEY_MAX 64

void proxy_tb_init(struct proxy_tb *b, const struct proxy_rl_params *p, uint64_t now_ns)
{
    b->tokens = p->capacity * MICRO;
    b->last_ns = now_ns;
}

/* Millionths of a token gained in <dt> nanoseconds, capped at <cap> (no overflow for any dt). */
static uint64_t gained(const struct proxy_rl_params *p, uint64_t dt, uint64_t cap)
{
    if (p->per_unit == 0 || p->unit_ns == 0) {
        return 0;
    }
    /* Time to gain <cap> from empty; anything longer fills the bucket. */
    uint64_t full_ns = (uint64_t)((double)cap / (double)(p->per_unit * MICRO) * (double)p->unit_ns);
    if (dt >= full_ns + 1) {
        return cap;
    }
    /* dt < full_ns <= capacity * unit / per_unit: dt * per_unit * MICRO fits in 128 bits. */
    unsigned __int128 v = (unsigned __int128)dt * p->per_unit * MICRO / p->unit_ns;
    return v > cap ? cap : (uint64_t)v;
}

static void refill(struct proxy_tb *b, const struct proxy_rl_params *p, uint64_t now_ns)
{
    uint64_t cap = p->capacity * MICRO;
    if (now_ns <= b->last_ns) {
        return;
    }
    uint64_t dt = now_ns - b->last_ns;
    uint64_t add = gained(p, dt, cap);
    if (b->tokens + add >= cap) {
        b->tokens = cap;
        b->last_ns = now_ns;
        return;
    }
    if (add == 0) {
        return; /* keep last_ns: the fraction accrues until it is worth a millionth */
    }
    b->tokens += add;
    /* Advance by exactly the time <add> is worth, so rounding never loses time. */
    uint64_t used = (uint64_t)((unsigned __int128)add * p->unit_ns / (p->per_unit * MICRO));
    b->last_ns += used ? used : dt;
}

/* Nanoseconds from <now_ns> until <b> holds <want> millionths of a token (refilled at now). The
 * bucket's clock may lag <now_ns> by less than a millionth of a token's worth of time. */
static uint64_t ns_until(const struct proxy_tb *b, const struct proxy_rl_params *p, uint64_t want,
                         uint64_t now_ns)
{
    if (b->tokens >= want) {
        return 0;
    }
    if (p->per_unit == 0) {
        return UINT64_MAX;
    }
    uint64_t need = want - b->tokens;
    unsigned __int128 ns =
        ((unsigned __int128)need * p->unit_ns + p->per_unit * MICRO - 1) / (p->per_unit * MICRO);
    uint64_t lag = now_ns > b->last_ns ? now_ns - b->last_ns : 0;
    if (ns > UINT64_MAX) {
        return UINT64_MAX;
    }
    return (uint64_t)ns > lag ? (uint64_t)ns - lag : 0;
}

static uint32_t ceil_s(uint64_t ns)
{
    uint64_t s = (ns + 999999999ULL) / 1000000000ULL;
    return s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
}

/* True when the time from the bucket's last use to <now_ns> is worth at least what it misses: it is
 * full again. Two multiplications, none of gained()'s divisions. */
static inline bool refills_to_full(const struct proxy_tb *b, const struct proxy_rl_params *p,
                                   uint64_t cap, uint64_t now_ns)
{
    return b->tokens >= cap ||
           (now_ns > b->last_ns && (unsigned __int128)(now_ns - b->last_ns) * p->per_unit * MICRO >=
                                       (unsigned __int128)(cap - b->tokens) * p->unit_ns);
}

/* proxy_tb_take; the header figures (remaining, reset) only when <info> or refused. */
static inline void tb_take(struct proxy_tb *b, const struct proxy_rl_params *p, uint64_t now_ns,
                           bool info, struct proxy_rl_result *res)
{
    uint64_t cap = p->capacity * MICRO;
    if (!info && refills_to_full(b, p, cap, now_ns)) {
        /* The common case of a limit not hit: full again, one token taken (capacity >= 1). */
        b->tokens = cap - MICRO;
        if (now_ns > b->last_ns) {
            b->last_ns = now_ns;
        }
        res->allowed = true;
        res->limit = p->capacity > UINT32_MAX ? UINT32_MAX : (uint32_t)p->capacity;
        res->remaining = 0;
        res->reset_s = 0;
        res->retry_after = 0;
        return;
    }
    refill(b, p, now_ns);
    res->allowed = b->tokens >= MICRO;
    if (res->allowed) {
        b->tokens -= MICRO;
    }
    res->limit = p->capacity > UINT32_MAX ? UINT32_MAX : (uint32_t)p->capacity;
    res->retry_after = 0;
    if (!info && res->allowed) {
        res->remaining = 0;
        res->reset_s = 0;
        return;
    }
    res->remaining = (uint32_t)(b->tokens / MICRO);
    res->reset_s = ceil_s(ns_until(b, p, p->capacity * MICRO, now_ns));
    if (!res->allowed) {
        uint32_t s = ceil_s(ns_until(b, p, MICRO, now_ns));
        res->retry_after = s ? s : 1;
    }
}

void proxy_tb_take(struct proxy_tb *b, const struct proxy_rl_params *p, uint64_t now_ns,
                   struct proxy_rl_result *res)
{
    tb_take(b, p, now_ns, true, res);
}

bool proxy_tb_full(const struct proxy_tb *b, const struct proxy_rl_params *p, uint64_t now_ns)
{
    struct proxy_tb t = *b;
    refill(&t, p, now_ns);
    return t.tokens >= p->capacity * MICRO;
}

size_t proxy_weighted_pick(const uint32_t *cum, size_t n, uint64_t r)
{
    uint32_t x = (uint32_t)(r % cum[n - 1]);
    size_t lo = 0, hi = n - 1;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (x < cum[mid]) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return lo;
}

/* ---- the keyed table ---- */

struct rl_entry {
    struct rl_entry *hnext; /* hash chain */
    struct sc_list lru;     /* most recently used first */
    uint64_t hash;
    struct proxy_tb tb;
    uint8_t klen;
    char key[KEY_MAX];
};

struct proxy_rl {
    struct proxy_rl *next; /* the registry */
    int refs;              /* under the registry's mutex */
    char *name;
    struct proxy_rl_params p;
    struct sc_metric *m_limited;
    atomic_bool locked; /* rl_lock: held for a lookup and a few arithmetic operations */
    struct proxy_tb global;
    struct rl_entry **slots;
    size_t nslots; /* a power of two */
    size_t n;
    struct sc_list lru;
};

/* The limiter's lock (core/spin.h): held for a lookup and a few arithmetic operations. */
static inline void rl_lock(struct proxy_rl *rl)
{
    sc_spin_lock(&rl->locked);
}

static inline void rl_unlock(struct proxy_rl *rl)
{
    sc_spin_unlock(&rl->locked);
}

static inline uint64_t mix(uint64_t h, uint64_t w)
{
    h = (h ^ w) * 0xff51afd7ed558ccdULL;
    return h ^ (h >> 32);
}

/* The key's hash, eight bytes at a time (FNV-1a's byte loop cost more than the rest of a take). */
static uint64_t hash_key(struct sc_str k)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ k.len;
    size_t i = 0;
    for (; i + 8 <= k.len; i += 8) {
        uint64_t w;
        memcpy(&w, k.p + i, 8);
        h = mix(h, w);
    }
    if (i < k.len) {
        uint64_t w = 0;
        for (size_t j = 0; i + j < k.len; j++) {
            w |= (uint64_t)(unsigned char)k.p[i + j] << (8 * j);
        }
        h = mix(h, w);
    }
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    return h ^ (h >> 32);
}

static void table_remove(struct proxy_rl *rl, struct rl_entry *e)
{
    struct rl_entry **pp = &rl->slots[e->hash & (rl->nslots - 1)];
    while (*pp && *pp != e) {
        pp = &(*pp)->hnext;
    }
    if (*pp) {
        *pp = e->hnext;
    }
    sc_list_remove(&e->lru);
    rl->n--;
}

/* Finds or makes the bucket of <key>. Keys longer than KEY_MAX are told apart by their first
 * KEY_MAX bytes and their 64-bit hash. */
static struct rl_entry *table_get(struct proxy_rl *rl, struct sc_str key, uint64_t now_ns)
{
    uint64_t h = hash_key(key);
    size_t kl = key.len < KEY_MAX ? key.len : KEY_MAX;
    for (struct rl_entry *e = rl->slots[h & (rl->nslots - 1)]; e; e = e->hnext) {
        if (e->hash == h && e->klen == kl && memcmp(e->key, key.p, kl) == 0) {
            if (rl->lru.next != &e->lru) {
                sc_list_remove(&e->lru);
                sc_list_prepend(&rl->lru, &e->lru);
            }
            return e;
        }
    }
    struct rl_entry *e;
    if (rl->n >= rl->p.max_keys) {
        e = sc_list_entry(rl->lru.prev, struct rl_entry, lru);
        table_remove(rl, e);
    } else {
        e = sc_malloc(sizeof(*e));
    }
    memset(e, 0, sizeof(*e));
    e->hash = h;
    e->klen = (uint8_t)kl;
    if (kl) {
        memcpy(e->key, key.p, kl);
    }
    proxy_tb_init(&e->tb, &rl->p, now_ns);
    size_t s = h & (rl->nslots - 1);
    e->hnext = rl->slots[s];
    rl->slots[s] = e;
    sc_list_prepend(&rl->lru, &e->lru);
    rl->n++;
    return e;
}

void proxy_rl_take(struct proxy_rl *rl, struct sc_str key, uint64_t now_ns, bool info,
                   struct proxy_rl_result *res)
{
    rl_lock(rl);
    struct proxy_tb *b =
        rl->p.key == PROXY_RL_KEY_GLOBAL ? &rl->global : &table_get(rl, key, now_ns)->tb;
    tb_take(b, &rl->p, now_ns, info, res);
    rl_unlock(rl);
    if (!res->allowed) {
        sc_metrics_counter_inc(rl->m_limited);
    }
}

size_t proxy_rl_nkeys(struct proxy_rl *rl)
{
    rl_lock(rl);
    size_t n = rl->n;
    rl_unlock(rl);
    return n;
}

const struct proxy_rl_params *proxy_rl_params_of(const struct proxy_rl *rl)
{
    return &rl->p;
}

/* ---- the registry: limiters outlive snapshots ---- */

static uv_once_t reg_once = UV_ONCE_INIT;
static uv_mutex_t reg_mu;
static struct proxy_rl *reg_head;

static void reg_init(void)
{
    uv_mutex_init(&reg_mu);
}

static bool same_params(const struct proxy_rl_params *a, const struct proxy_rl_params *b)
{
    return a->capacity == b->capacity && a->per_unit == b->per_unit && a->unit_ns == b->unit_ns &&
           a->max_keys == b->max_keys && a->key == b->key && strcmp(a->header, b->header) == 0;
}

struct proxy_rl *proxy_rl_acquire(const char *name, const struct proxy_rl_params *p,
                                  struct sc_metric *m_limited)
{
    uv_once(&reg_once, reg_init);
    uv_mutex_lock(&reg_mu);
    for (struct proxy_rl *rl = reg_head; rl; rl = rl->next) {
        if (strcmp(rl->name, name) == 0 && same_params(&rl->p, p)) {
            rl->refs++;
            uv_mutex_unlock(&reg_mu);
            return rl;
        }
    }
    struct proxy_rl *rl = SC_NEW(struct proxy_rl);
    rl->refs = 1;
    rl->name = sc_strdup(name);
    rl->p = *p;
    if (rl->p.max_keys == 0) {
        rl->p.max_keys = 1;
    }
    rl->m_limited = m_limited;
    atomic_init(&rl->locked, false);
    proxy_tb_init(&rl->global, &rl->p, uv_hrtime());
    sc_list_init(&rl->lru);
    rl->nslots = 16;
    while (rl->nslots < rl->p.max_keys && rl->nslots < (1u << 20)) {
        rl->nslots <<= 1;
    }
    rl->slots = sc_calloc(rl->nslots, sizeof(*rl->slots));
    rl->next = reg_head;
    reg_head = rl;
    uv_mutex_unlock(&reg_mu);
    return rl;
}

void proxy_rl_release(struct proxy_rl *rl)
{
    if (!rl) {
        return;
    }
    uv_mutex_lock(&reg_mu);
    if (--rl->refs > 0) {
        uv_mutex_unlock(&reg_mu);
        return;
    }
    for (struct proxy_rl **pp = &reg_head; *pp; pp = &(*pp)->next) {
        if (*pp == rl) {
            *pp = rl->next;
            break;
        }
    }
    uv_mutex_unlock(&reg_mu);
    while (!sc_list_empty(&rl->lru)) {
        struct rl_entry *e = sc_list_entry(rl->lru.next, struct rl_entry, lru);
        sc_list_remove(&e->lru);
        sc_free(e);
    }
    sc_free(rl->slots);
    sc_free(rl->name);
    sc_free(rl);
}

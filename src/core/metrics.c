// SPDX-License-Identifier: Apache-2.0
// Metrics registry and Prometheus text exposition (format 0.0.4). The invariant that shapes the
// file: the memory of a series, once created, lives until the registry is freed, so a worker
// thread may keep a raw pointer to it and update it with nothing but atomics while a render runs,
// and a late update after a removal never touches freed memory. A removed series is revived when
// its label values come back, or its memory serves the next new series of the family, so churn
// costs what the live series need, not every series there ever was. Locks guard only structure: the
// registry mutex the list of families and callbacks (both append-only, published with release
// stores so a render walks them unlocked), and each family's mutex its hash table and its list of
// live series. Label values are stored raw and sanitised at render time (escapes, invalid UTF-8
// replaced), because they may come from peers and one bad byte must not make the whole scrape
// unparsable.
#include "core/metrics.h"

#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/list.h"
#include "core/log.h"
#include "core/prom.h"
#include "core/str.h"

/* Past this many live series a family refuses new ones: a label a peer controls must not grow
 * memory (and scrape size) without bound. */
#define MAX_SERIES 10000

#define DROPPED_NAME "sidecar_metrics_series_dropped_total"
#define DROPPED_HELP "Series not created because their family had reached its cap of series."

/* Latency buckets in seconds. The proxy adds tens of microseconds, so the low end starts at
 * 100us where the usual client-library defaults (5ms and up) would put every request in one
 * bucket; the high end still covers slow upstreams. */
static const double default_buckets[] = { 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                          0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                          1,      2.5,     5,      10 };

struct sc_metric {
    struct sc_list link;     /* in family->live (creation order), or once removed in
                                family->removed (removal order) */
    struct sc_metric *hnext; /* hash chain; removed series stay chained, to be revived */
    bool removed;
    struct sc_metric_family *fam;
    uint64_t hash;
    char **values; /* fam->nlabels copies, raw as given */
    /* Counter: the count (or, for float counters, a double's bits). Gauge: a double's bits.
     * Histogram: the number of observations. */
    _Atomic uint64_t v;
    _Atomic uint64_t sum;       /* histogram: a double's bits */
    _Atomic uint64_t buckets[]; /* histogram: per-bound counts, not cumulative */
};

struct sc_metric_family {
    struct sc_metric_family *_Atomic next; /* registration order; set under the registry lock */
    enum sc_metric_type type;
    /* A counter whose value is a double (process_cpu_seconds_total): clients expose fractional
     * CPU seconds, which a uint64 counter cannot hold. */
    bool float_counter;
    struct sc_metrics *reg;
    char *name;
    char *help;
    char **labels;
    size_t nlabels;
    double *bounds; /* histogram upper bounds, increasing, without +Inf */
    char **le;      /* the bounds as label values, formatted once */
    size_t nbounds;

    pthread_mutex_t lock; /* guards everything below */
    struct sc_list live;  /* series that render, in creation order */
    size_t nlive;
    struct sc_list removed; /* removed series, oldest first: revived or reused by new series */
    size_t nremoved;
    struct sc_metric **table; /* every series, live or removed */
    size_t tsize;             /* a power of two */
    size_t tcount;
    bool warned; /* the cap was reported in the log once */
};

struct collector {
    struct collector *_Atomic next;
    sc_metrics_collect_cb cb;
    void *arg;
};

/* Families behind the standard process_* metrics; series are fetched at each collect so that a
 * value /proc could not provide is absent rather than rendered as a misleading zero. */
struct proc_metrics {
    struct sc_metric_family *cpu;
    struct sc_metric_family *rss;
    struct sc_metric_family *vsz;
    struct sc_metric_family *open_fds;
    struct sc_metric_family *max_fds;
    struct sc_metric_family *start;
    double ticks;     /* clock ticks per second */
    double page_size; /* bytes */
};

struct sc_metrics {
    pthread_mutex_t lock; /* guards registration and the tails below */
    struct sc_metric_family *_Atomic first;
    struct sc_metric_family *last;
    struct collector *_Atomic first_cb;
    struct collector *last_cb;
    uint64_t seed; /* hash seed, so a peer cannot precompute colliding label values */
    struct sc_metric_family *dropped;
    struct proc_metrics *proc;
};

static void fatal(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* Misuse of the registry (bad names, clashing registrations) is a bug in our code, found the
 * first time the code path runs; failing loudly beats exposing a scrape Prometheus rejects. */
static void fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("sidecar: metrics: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

static uint64_t dbits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    return u;
}

static double bitsd(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof(d));
    return d;
}

/* Adds <delta> to the double stored in <a>. There is no atomic fetch-add for doubles, so retry
 * until no other thread changed the bits between our load and our store. */
static void atomic_add_double(_Atomic uint64_t *a, double delta)
{
    uint64_t old = atomic_load_explicit(a, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(a, &old, dbits(bitsd(old) + delta),
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

/* ---- names -------------------------------------------------------------------------------- */

static bool valid_metric_name(const char *s)
{
    if (!s || !*s) {
        return false;
    }
    for (size_t i = 0; s[i]; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                  (i > 0 && c >= '0' && c <= '9');
        if (!ok) {
            return false;
        }
    }
    return true;
}

static bool valid_label_name(const char *s)
{
    if (!s || !*s || (s[0] == '_' && s[1] == '_')) {
        return false; /* names starting with "__" are reserved for Prometheus itself */
    }
    for (size_t i = 0; s[i]; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (i > 0 && c >= '0' && c <= '9');
        if (!ok) {
            return false;
        }
    }
    return true;
}

/* ---- series lookup ------------------------------------------------------------------------ */

/* FNV-1a over the values, each followed by a NUL so ("ab","c") and ("a","bc") differ; seeded
 * per registry. */
static uint64_t hash_values(uint64_t seed, const char *const *values, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ seed;
    for (size_t i = 0; i < n; i++) {
        const unsigned char *p = (const unsigned char *)(values[i] ? values[i] : "");
        do {
            h ^= *p;
            h *= 0x100000001b3ULL;
        } while (*p++);
    }
    return h;
}

static bool same_values(const struct sc_metric *m, const char *const *values, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(m->values[i], values[i] ? values[i] : "") != 0) {
            return false;
        }
    }
    return true;
}

/* Called with f->lock held. */
static struct sc_metric *find(struct sc_metric_family *f, const char *const *values, uint64_t h)
{
    for (struct sc_metric *m = f->table[h & (f->tsize - 1)]; m; m = m->hnext) {
        if (m->hash == h && same_values(m, values, f->nlabels)) {
            return m;
        }
    }
    return NULL;
}

/* Doubles the table when it holds as many series as buckets, keeping chains short. Called with
 * f->lock held. */
static void maybe_grow(struct sc_metric_family *f)
{
    if (f->tcount < f->tsize) {
        return;
    }
    size_t nsize = f->tsize * 2;
    struct sc_metric **nt = sc_calloc(nsize, sizeof(*nt));
    for (size_t i = 0; i < f->tsize; i++) {
        struct sc_metric *m = f->table[i];
        while (m) {
            struct sc_metric *next = m->hnext;
            size_t j = m->hash & (nsize - 1);
            m->hnext = nt[j];
            nt[j] = m;
            m = next;
        }
    }
    sc_free(f->table);
    f->table = nt;
    f->tsize = nsize;
}

/* Zero bits are 0 as an integer and 0.0 as a double, whatever the series type. */
static void reset_values(struct sc_metric *m)
{
    atomic_store_explicit(&m->v, 0, memory_order_relaxed);
    atomic_store_explicit(&m->sum, 0, memory_order_relaxed);
    for (size_t i = 0; i < m->fam->nbounds; i++) {
        atomic_store_explicit(&m->buckets[i], 0, memory_order_relaxed);
    }
}

/* Takes <m> out of its hash chain. Called with f->lock held. */
static void unchain(struct sc_metric_family *f, struct sc_metric *m)
{
    struct sc_metric **pp = &f->table[m->hash & (f->tsize - 1)];
    while (*pp != m) {
        pp = &(*pp)->hnext;
    }
    *pp = m->hnext;
    m->hnext = NULL;
}

static void chain(struct sc_metric_family *f, struct sc_metric *m)
{
    size_t j = m->hash & (f->tsize - 1);
    m->hnext = f->table[j];
    f->table[j] = m;
}

/* Returns the series, creating it, reviving a removed one with the same values, or reusing the
 * memory of the series removed longest ago; NULL at the cap. Called with f->lock held. */
static struct sc_metric *get_locked(struct sc_metric_family *f, const char *const *values)
{
    uint64_t h = hash_values(f->reg->seed, values, f->nlabels);
    struct sc_metric *m = find(f, values, h);
    if (m && !m->removed) {
        return m;
    }
    if (f->nlive >= MAX_SERIES) {
        return NULL;
    }
    if (m) {
        /* A removed series comes back as new, at zero; reusing it keeps churn over the same
         * label values from allocating again. */
        sc_list_remove(&m->link);
        f->nremoved--;
    } else if (!sc_list_empty(&f->removed)) {
        /* Churn over ever new label values (endpoints that come and go) reuses what was removed,
         * so memory follows the live series, not every series there ever was. */
        m = sc_list_entry(f->removed.next, struct sc_metric, link);
        sc_list_remove(&m->link);
        f->nremoved--;
        unchain(f, m);
        for (size_t i = 0; i < f->nlabels; i++) {
            sc_free(m->values[i]);
            m->values[i] = sc_strdup(values[i] ? values[i] : "");
        }
        m->hash = h;
        chain(f, m);
    } else {
        size_t nb = f->type == SC_METRIC_HISTOGRAM ? f->nbounds : 0;
        m = sc_calloc(1, sizeof(*m) + nb * sizeof(m->buckets[0]));
        m->fam = f;
        m->hash = h;
        m->values = sc_calloc(f->nlabels ? f->nlabels : 1, sizeof(char *));
        for (size_t i = 0; i < f->nlabels; i++) {
            m->values[i] = sc_strdup(values[i] ? values[i] : "");
        }
        maybe_grow(f);
        chain(f, m);
        f->tcount++;
    }
    reset_values(m);
    m->removed = false;
    sc_list_append(&f->live, &m->link);
    f->nlive++;
    return m;
}

/* ---- registry ----------------------------------------------------------------------------- */

static void family_free(struct sc_metric_family *f)
{
    for (size_t i = 0; i < f->tsize; i++) {
        struct sc_metric *m = f->table[i];
        while (m) {
            struct sc_metric *next = m->hnext;
            for (size_t k = 0; k < f->nlabels; k++) {
                sc_free(m->values[k]);
            }
            sc_free(m->values);
            sc_free(m);
            m = next;
        }
    }
    sc_free(f->table);
    for (size_t k = 0; k < f->nlabels; k++) {
        sc_free(f->labels[k]);
    }
    sc_free(f->labels);
    for (size_t k = 0; k < f->nbounds; k++) {
        sc_free(f->le[k]);
    }
    sc_free(f->le);
    sc_free(f->bounds);
    sc_free(f->name);
    sc_free(f->help);
    pthread_mutex_destroy(&f->lock);
    sc_free(f);
}

static const char *type_name(enum sc_metric_type t)
{
    switch (t) {
    case SC_METRIC_COUNTER:
        return "counter";
    case SC_METRIC_GAUGE:
        return "gauge";
    case SC_METRIC_HISTOGRAM:
        return "histogram";
    }
    return "?";
}

/* Checks the names and buckets of a registration and returns how many labels and bounds it has
 * (a trailing +Inf bound is implied and dropped). Aborts on any misuse. */
static void check_registration(enum sc_metric_type type, const char *name,
                               const char *const *labels, const double *buckets, size_t *nlabels,
                               size_t *nbounds)
{
    if (type != SC_METRIC_COUNTER && type != SC_METRIC_GAUGE && type != SC_METRIC_HISTOGRAM) {
        fatal("family \"%s\": unknown type %d", name ? name : "(null)", (int)type);
    }
    if (!valid_metric_name(name)) {
        fatal("invalid metric name \"%s\" (want [a-zA-Z_:][a-zA-Z0-9_:]*)", name ? name : "(null)");
    }
    size_t n = 0;
    for (; labels && labels[n]; n++) {
        if (!valid_label_name(labels[n])) {
            fatal("%s: invalid label name \"%s\" (want [a-zA-Z_][a-zA-Z0-9_]*, not \"__...\")",
                  name, labels[n]);
        }
        if (type == SC_METRIC_HISTOGRAM && strcmp(labels[n], "le") == 0) {
            fatal("%s: label \"le\" is reserved for histogram buckets", name);
        }
        for (size_t k = 0; k < n; k++) {
            if (strcmp(labels[k], labels[n]) == 0) {
                fatal("%s: duplicate label name \"%s\"", name, labels[n]);
            }
        }
    }
    *nlabels = n;
    if (type != SC_METRIC_HISTOGRAM) {
        *nbounds = 0;
        return;
    }
    size_t nb = *nbounds;
    if (nb > 0 && isinf(buckets[nb - 1]) && buckets[nb - 1] > 0) {
        nb--;
    }
    for (size_t i = 0; i < nb; i++) {
        if (!isfinite(buckets[i]) || (i > 0 && !(buckets[i] > buckets[i - 1]))) {
            fatal("%s: histogram buckets must be finite and strictly increasing", name);
        }
    }
    *nbounds = nb;
}

/* Returns whether <f> was registered with exactly this shape. */
static bool same_shape(const struct sc_metric_family *f, enum sc_metric_type type,
                       bool float_counter, const char *const *labels, size_t nlabels,
                       const double *bounds, size_t nbounds)
{
    if (f->type != type || f->float_counter != float_counter || f->nlabels != nlabels ||
        f->nbounds != nbounds) {
        return false;
    }
    for (size_t i = 0; i < nlabels; i++) {
        if (strcmp(f->labels[i], labels[i]) != 0) {
            return false;
        }
    }
    for (size_t i = 0; i < nbounds; i++) {
        if (f->bounds[i] != bounds[i]) {
            return false;
        }
    }
    return true;
}

static struct sc_metric_family *family(struct sc_metrics *r, enum sc_metric_type type,
                                       bool float_counter, const char *name, const char *help,
                                       const char *const *labels, const double *buckets,
                                       size_t nbuckets)
{
    if (type == SC_METRIC_HISTOGRAM && !buckets) {
        buckets = default_buckets;
        nbuckets = SC_ARRAY_LEN(default_buckets);
    }
    size_t nlabels, nbounds = nbuckets;
    check_registration(type, name, labels, buckets, &nlabels, &nbounds);
    if (!r) {
        return NULL;
    }

    pthread_mutex_lock(&r->lock);
    for (struct sc_metric_family *f = atomic_load_explicit(&r->first, memory_order_relaxed); f;
         f = atomic_load_explicit(&f->next, memory_order_relaxed)) {
        if (strcmp(f->name, name) != 0) {
            continue;
        }
        if (!same_shape(f, type, float_counter, labels, nlabels, buckets, nbounds)) {
            fatal("%s: registered again as a %s with different labels or buckets (first: %s with "
                  "%zu labels)",
                  name, type_name(type), type_name(f->type), f->nlabels);
        }
        pthread_mutex_unlock(&r->lock);
        return f;
    }

    struct sc_metric_family *f = SC_NEW(struct sc_metric_family);
    f->type = type;
    f->float_counter = float_counter;
    f->reg = r;
    f->name = sc_strdup(name);
    f->help = sc_strdup(help ? help : "");
    f->nlabels = nlabels;
    f->labels = sc_calloc(nlabels ? nlabels : 1, sizeof(char *));
    for (size_t i = 0; i < nlabels; i++) {
        f->labels[i] = sc_strdup(labels[i]);
    }
    f->nbounds = nbounds;
    f->bounds = sc_calloc(nbounds ? nbounds : 1, sizeof(double));
    f->le = sc_calloc(nbounds ? nbounds : 1, sizeof(char *));
    for (size_t i = 0; i < nbounds; i++) {
        char tmp[40];
        f->bounds[i] = buckets[i];
        sc_prom_le(tmp, sizeof(tmp), buckets[i]);
        f->le[i] = sc_strdup(tmp);
    }
    pthread_mutex_init(&f->lock, NULL);
    sc_list_init(&f->live);
    sc_list_init(&f->removed);
    f->tsize = 8;
    f->table = sc_calloc(f->tsize, sizeof(*f->table));

    /* Release: a render that loads this pointer without the lock sees the family complete. */
    if (r->last) {
        atomic_store_explicit(&r->last->next, f, memory_order_release);
    } else {
        atomic_store_explicit(&r->first, f, memory_order_release);
    }
    r->last = f;
    pthread_mutex_unlock(&r->lock);
    return f;
}

struct sc_metrics *sc_metrics_new(void)
{
    struct sc_metrics *r = SC_NEW(struct sc_metrics);
    pthread_mutex_init(&r->lock, NULL);
    if (getrandom(&r->seed, sizeof(r->seed), GRND_NONBLOCK) != (ssize_t)sizeof(r->seed)) {
        r->seed = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)r;
    }
    /* Registered up front so a drop never registers a family while holding a family lock; its
     * series appears with the first drop. */
    r->dropped = family(r, SC_METRIC_COUNTER, false, DROPPED_NAME, DROPPED_HELP, NULL, NULL, 0);
    return r;
}

void sc_metrics_free(struct sc_metrics *r)
{
    if (!r) {
        return;
    }
    struct sc_metric_family *f = atomic_load_explicit(&r->first, memory_order_relaxed);
    while (f) {
        struct sc_metric_family *next = atomic_load_explicit(&f->next, memory_order_relaxed);
        family_free(f);
        f = next;
    }
    struct collector *c = atomic_load_explicit(&r->first_cb, memory_order_relaxed);
    while (c) {
        struct collector *next = atomic_load_explicit(&c->next, memory_order_relaxed);
        sc_free(c);
        c = next;
    }
    sc_free(r->proc);
    pthread_mutex_destroy(&r->lock);
    sc_free(r);
}

struct sc_metric_family *sc_metrics_family(struct sc_metrics *r, enum sc_metric_type type,
                                           const char *name, const char *help,
                                           const char *const *labels, const double *buckets,
                                           size_t nbuckets)
{
    return family(r, type, false, name, help, labels, buckets, nbuckets);
}

/* A NULL entry in <values> stands for "" (to Prometheus an empty label value is an absent
 * label). Refused creations are counted, one per call. */
struct sc_metric *sc_metrics_get(struct sc_metric_family *f, const char *const *values)
{
    if (!f) {
        return NULL;
    }
    if (f->nlabels > 0 && !values) {
        fatal("%s: sc_metrics_get without values for %zu labels", f->name, f->nlabels);
    }
    pthread_mutex_lock(&f->lock);
    struct sc_metric *m = get_locked(f, values);
    bool warn = !m && !f->warned;
    if (warn) {
        f->warned = true;
    }
    pthread_mutex_unlock(&f->lock);
    if (!m) {
        /* Outside f->lock: the drop counter's family has a lock of its own. */
        sc_metrics_counter_inc(sc_metrics_get(f->reg->dropped, NULL));
        if (warn) {
            sc_warn("metrics: family reached its series cap; new series are dropped",
                    SC_LS("family", f->name), SC_LU("cap", MAX_SERIES));
        }
    }
    return m;
}

void sc_metrics_remove(struct sc_metric_family *f, const char *const *values)
{
    if (!f || (f->nlabels > 0 && !values)) {
        return;
    }
    pthread_mutex_lock(&f->lock);
    struct sc_metric *m = find(f, values, hash_values(f->reg->seed, values, f->nlabels));
    if (m && !m->removed) {
        sc_list_remove(&m->link);
        f->nlive--;
        m->removed = true;
        sc_list_append(&f->removed, &m->link);
        f->nremoved++;
    }
    pthread_mutex_unlock(&f->lock);
}

struct sc_metric *sc_metrics_counter(struct sc_metrics *r, const char *name, const char *help)
{
    return sc_metrics_get(sc_metrics_family(r, SC_METRIC_COUNTER, name, help, NULL, NULL, 0), NULL);
}

struct sc_metric *sc_metrics_gauge(struct sc_metrics *r, const char *name, const char *help)
{
    return sc_metrics_get(sc_metrics_family(r, SC_METRIC_GAUGE, name, help, NULL, NULL, 0), NULL);
}

/* ---- updates ------------------------------------------------------------------------------ */

/* Updates of the wrong type are ignored rather than fatal: they sit on hot paths, and a metric
 * bug must not take traffic down. */
void sc_metrics_counter_add(struct sc_metric *m, uint64_t n)
{
    if (!m || m->fam->type != SC_METRIC_COUNTER) {
        return;
    }
    if (m->fam->float_counter) {
        atomic_add_double(&m->v, (double)n);
    } else {
        atomic_fetch_add_explicit(&m->v, n, memory_order_relaxed);
    }
}

void sc_metrics_gauge_set(struct sc_metric *m, double v)
{
    if (m && m->fam->type == SC_METRIC_GAUGE) {
        atomic_store_explicit(&m->v, dbits(v), memory_order_relaxed);
    }
}

void sc_metrics_gauge_add(struct sc_metric *m, double delta)
{
    if (m && m->fam->type == SC_METRIC_GAUGE) {
        atomic_add_double(&m->v, delta);
    }
}

/* The count is bumped before the bucket (with release), and render reads buckets (acquire)
 * before the count, so a scrape racing observations never shows a bucket above le="+Inf". */
void sc_metrics_histogram_observe(struct sc_metric *m, double v)
{
    if (!m || m->fam->type != SC_METRIC_HISTOGRAM) {
        return;
    }
    const double *b = m->fam->bounds;
    size_t lo = 0, hi = m->fam->nbounds;
    while (lo < hi) { /* first bound >= v; NaN finds none and counts in +Inf only */
        size_t mid = lo + (hi - lo) / 2;
        if (b[mid] >= v) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    atomic_fetch_add_explicit(&m->v, 1, memory_order_relaxed);
    if (lo < m->fam->nbounds) {
        atomic_fetch_add_explicit(&m->buckets[lo], 1, memory_order_release);
    }
    atomic_add_double(&m->sum, v);
}

/* Histograms read as their number of observations. */
double sc_metrics_value(const struct sc_metric *m)
{
    if (!m) {
        return 0;
    }
    uint64_t v = atomic_load_explicit(&m->v, memory_order_relaxed);
    if (m->fam->type == SC_METRIC_GAUGE || m->fam->float_counter) {
        return bitsd(v);
    }
    return (double)v;
}

/* ---- collect callbacks and process metrics ------------------------------------------------ */

void sc_metrics_on_collect(struct sc_metrics *r, sc_metrics_collect_cb cb, void *arg)
{
    if (!r || !cb) {
        return;
    }
    struct collector *c = SC_NEW(struct collector);
    c->cb = cb;
    c->arg = arg;
    pthread_mutex_lock(&r->lock);
    if (r->last_cb) {
        atomic_store_explicit(&r->last_cb->next, c, memory_order_release);
    } else {
        atomic_store_explicit(&r->first_cb, c, memory_order_release);
    }
    r->last_cb = c;
    pthread_mutex_unlock(&r->lock);
}

/* Reads <path> into <buf> (NUL-terminated), up to <cap> - 1 bytes; returns the length or a
 * negative errno. A stack buffer and plain read(2): this runs at every scrape. */
static ssize_t read_small(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    size_t len = 0;
    while (len < cap - 1) {
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    return (ssize_t)len;
}

/* Fields of /proc/self/stat we use, numbered as in proc(5). */
struct proc_stat {
    uint64_t utime;     /* 14, ticks */
    uint64_t stime;     /* 15, ticks */
    uint64_t starttime; /* 22, ticks after boot */
    uint64_t vsize;     /* 23, bytes */
    uint64_t rss;       /* 24, pages */
};

/* Returns 0, or SC_EINVAL when /proc/self/stat cannot be read or parsed. */
static int read_proc_stat(struct proc_stat *st)
{
    char buf[2048];
    if (read_small("/proc/self/stat", buf, sizeof(buf)) <= 0) {
        return SC_EINVAL;
    }
    /* The command name (field 2) is in parentheses and may itself hold spaces and ')'. */
    const char *p = strrchr(buf, ')');
    if (!p) {
        return SC_EINVAL;
    }
    struct sc_str rest = sc_str_c(p + 1);
    rest = sc_str_trim(rest);
    uint64_t *want[25] = { 0 };
    want[14] = &st->utime;
    want[15] = &st->stime;
    want[22] = &st->starttime;
    want[23] = &st->vsize;
    want[24] = &st->rss;
    for (int field = 3; field <= 24; field++) {
        struct sc_str tok = sc_str_split(&rest, ' ');
        if (want[field] && sc_str_to_u64(tok, UINT64_MAX, want[field]) < 0) {
            return SC_EINVAL;
        }
    }
    return 0;
}

/* Returns the number of open descriptors, not counting the one used to count them, or a negative
 * errno. */
static long count_fds(void)
{
    int fd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    long n = 0;
    char buf[4096] __attribute__((aligned(8)));
    for (;;) {
        ssize_t got = getdents64(fd, buf, sizeof(buf));
        if (got <= 0) {
            break;
        }
        for (ssize_t off = 0; off < got;) {
            struct dirent64 *d = (struct dirent64 *)(void *)(buf + off);
            if (d->d_name[0] != '.') {
                n++;
            }
            off += d->d_reclen;
        }
    }
    close(fd);
    return n - 1;
}

/* Returns the boot time in seconds since the epoch from /proc/stat, or -1. The file lists every
 * CPU and interrupt before btime and can be tens of KiB, hence a heap buffer; it is read once. */
static double boot_time(void)
{
    size_t cap = 1 << 20;
    char *buf = sc_malloc(cap);
    double bt = -1;
    if (read_small("/proc/stat", buf, cap) > 0) {
        const char *p = strstr(buf, "\nbtime ");
        if (p) {
            struct sc_str rest = sc_str_c(p + 7);
            struct sc_str tok = sc_str_split(&rest, '\n');
            uint64_t v;
            if (sc_str_to_u64(sc_str_trim(tok), UINT64_MAX, &v) == 0) {
                bt = (double)v;
            }
        }
    }
    sc_free(buf);
    return bt;
}

static void on_collect_process(struct sc_metrics *r, void *arg)
{
    struct proc_metrics *pm = arg;
    struct proc_stat st;
    if (read_proc_stat(&st) == 0) {
        struct sc_metric *cpu = sc_metrics_get(pm->cpu, NULL);
        if (cpu) {
            /* A float counter: set, not added, since the kernel keeps the running total. */
            atomic_store_explicit(&cpu->v, dbits((double)(st.utime + st.stime) / pm->ticks),
                                  memory_order_relaxed);
        }
        sc_metrics_gauge_set(sc_metrics_get(pm->vsz, NULL), (double)st.vsize);
        sc_metrics_gauge_set(sc_metrics_get(pm->rss, NULL), (double)st.rss * pm->page_size);
    }
    long fds = count_fds();
    if (fds >= 0) {
        sc_metrics_gauge_set(sc_metrics_get(pm->open_fds, NULL), (double)fds);
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        sc_metrics_gauge_set(sc_metrics_get(pm->max_fds, NULL), (double)rl.rlim_cur);
    }
}

/* Names and help texts are those of the Prometheus client libraries, so dashboards built for
 * them work unchanged. */
void sc_metrics_add_process(struct sc_metrics *r)
{
    if (!r) {
        return;
    }
    pthread_mutex_lock(&r->lock);
    bool done = r->proc != NULL;
    if (!done) {
        r->proc = SC_NEW(struct proc_metrics);
    }
    pthread_mutex_unlock(&r->lock);
    if (done) {
        return;
    }
    struct proc_metrics *pm = r->proc;
    long ticks = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    pm->ticks = ticks > 0 ? (double)ticks : 100;
    pm->page_size = page > 0 ? (double)page : 4096;
    pm->cpu = family(r, SC_METRIC_COUNTER, true, "process_cpu_seconds_total",
                     "Total user and system CPU time spent in seconds.", NULL, NULL, 0);
    pm->open_fds = sc_metrics_family(r, SC_METRIC_GAUGE, "process_open_fds",
                                     "Number of open file descriptors.", NULL, NULL, 0);
    pm->max_fds = sc_metrics_family(r, SC_METRIC_GAUGE, "process_max_fds",
                                    "Maximum number of open file descriptors.", NULL, NULL, 0);
    pm->vsz = sc_metrics_family(r, SC_METRIC_GAUGE, "process_virtual_memory_bytes",
                                "Virtual memory size in bytes.", NULL, NULL, 0);
    pm->rss = sc_metrics_family(r, SC_METRIC_GAUGE, "process_resident_memory_bytes",
                                "Resident memory size in bytes.", NULL, NULL, 0);
    pm->start =
        sc_metrics_family(r, SC_METRIC_GAUGE, "process_start_time_seconds",
                          "Start time of the process since unix epoch in seconds.", NULL, NULL, 0);
    /* The start time never changes: computed once, here. */
    struct proc_stat st;
    double bt = boot_time();
    if (bt >= 0 && read_proc_stat(&st) == 0) {
        sc_metrics_gauge_set(sc_metrics_get(pm->start, NULL),
                             bt + (double)st.starttime / pm->ticks);
    }
    sc_metrics_on_collect(r, on_collect_process, pm);
}

/* ---- render ------------------------------------------------------------------------------- */

/* Appends "{l1="v1",...,extra="xv"}" (nothing when there are no labels at all). */
static int render_labels(struct sc_buf *b, const struct sc_metric *m, const char *extra,
                         const char *extra_value)
{
    const struct sc_metric_family *f = m->fam;
    if (f->nlabels == 0 && !extra) {
        return 0;
    }
    int rc = sc_buf_append(b, "{", 1);
    for (size_t i = 0; rc == 0 && i < f->nlabels; i++) {
        if ((rc = sc_buf_appendf(b, "%s%s=\"", i ? "," : "", f->labels[i])) == 0 &&
            (rc = sc_prom_escape(b, m->values[i], strlen(m->values[i]),
                                 SC_PROM_ESC_QUOTE | SC_PROM_ESC_UTF8)) == 0) {
            rc = sc_buf_append(b, "\"", 1);
        }
    }
    if (rc == 0 && extra) {
        rc = sc_buf_appendf(b, "%s%s=\"%s\"", f->nlabels ? "," : "", extra, extra_value);
    }
    return rc ? rc : sc_buf_append(b, "}", 1);
}

/* Appends one sample line: name, suffix, labels, value. */
static int render_line(struct sc_buf *b, const struct sc_metric *m, const char *suffix,
                       const char *extra, const char *extra_value, const char *value)
{
    int rc;
    if ((rc = sc_buf_append_cstr(b, m->fam->name)) < 0 ||
        (rc = sc_buf_append_cstr(b, suffix)) < 0 ||
        (rc = render_labels(b, m, extra, extra_value)) < 0) {
        return rc;
    }
    return sc_buf_appendf(b, " %s\n", value);
}

static int render_series(struct sc_buf *b, const struct sc_metric *m)
{
    const struct sc_metric_family *f = m->fam;
    char num[SC_PROM_VALUE_MAX + 1];
    if (f->type != SC_METRIC_HISTOGRAM) {
        uint64_t v = atomic_load_explicit(&m->v, memory_order_relaxed);
        if (f->type == SC_METRIC_GAUGE || f->float_counter) {
            num[sc_prom_value_to(num, bitsd(v))] = 0;
        } else {
            snprintf(num, sizeof(num), "%llu", (unsigned long long)v);
        }
        return render_line(b, m, "", NULL, NULL, num);
    }
    uint64_t cum = 0;
    int rc;
    for (size_t i = 0; i < f->nbounds; i++) {
        cum += atomic_load_explicit(&m->buckets[i], memory_order_acquire);
        snprintf(num, sizeof(num), "%llu", (unsigned long long)cum);
        if ((rc = render_line(b, m, "_bucket", "le", f->le[i], num)) < 0) {
            return rc;
        }
    }
    uint64_t count = atomic_load_explicit(&m->v, memory_order_relaxed);
    snprintf(num, sizeof(num), "%llu", (unsigned long long)count);
    if ((rc = render_line(b, m, "_bucket", "le", "+Inf", num)) < 0) {
        return rc;
    }
    char sum[SC_PROM_VALUE_MAX + 1];
    sum[sc_prom_value_to(sum, bitsd(atomic_load_explicit(&m->sum, memory_order_relaxed)))] = 0;
    if ((rc = render_line(b, m, "_sum", NULL, NULL, sum)) < 0) {
        return rc;
    }
    return render_line(b, m, "_count", NULL, NULL, num);
}

static int render_family(struct sc_buf *b, struct sc_metric_family *f)
{
    int rc = 0;
    pthread_mutex_lock(&f->lock);
    if (sc_list_empty(&f->live)) {
        goto out;
    }
    if ((rc = sc_buf_appendf(b, "# HELP %s ", f->name)) < 0 ||
        (rc = sc_prom_escape(b, f->help, strlen(f->help), SC_PROM_ESC_UTF8)) < 0 ||
        (rc = sc_buf_appendf(b, "\n# TYPE %s %s\n", f->name, type_name(f->type))) < 0) {
        goto out;
    }
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &f->live)
    {
        if ((rc = render_series(b, sc_list_entry(pos, struct sc_metric, link))) < 0) {
            goto out;
        }
    }
out:
    pthread_mutex_unlock(&f->lock);
    return rc;
}

/* Runs the collect callbacks, then walks the families without the registry lock (the list only
 * grows, and each link is published with release). On SC_ETOOBIG <out> holds a partial render. */
int sc_metrics_render(struct sc_metrics *r, struct sc_buf *out)
{
    if (!r) {
        return 0;
    }
    for (struct collector *c = atomic_load_explicit(&r->first_cb, memory_order_acquire); c;
         c = atomic_load_explicit(&c->next, memory_order_acquire)) {
        c->cb(r, c->arg);
    }
    for (struct sc_metric_family *f = atomic_load_explicit(&r->first, memory_order_acquire); f;
         f = atomic_load_explicit(&f->next, memory_order_acquire)) {
        int rc = render_family(out, f);
        if (rc < 0) {
            return rc;
        }
    }
    return 0;
}

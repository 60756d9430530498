// SPDX-License-Identifier: Apache-2.0
// The StatsD UDP listener: counters (|c, with @rate), gauges (|g, "+n"/"-n" relative), timers
// (|ms, observed in seconds) and histograms/distributions (|h, |d) into histograms with the
// configured buckets, and sets (|s, distinct values seen), with DogStatsD tags (|#k:v,...) as
// labels. Names are sanitized to Prometheus names ('.' and other characters become '_'); counters
// get the _total suffix. Every series lives in one open-addressing table keyed by name and sorted
// labels, capped at max_series (the overflow and malformed lines are counted, never stored), so a
// noisy client cannot grow memory. Collections turn the table into one source.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/prom.h"
#include "core/utf8.h"
#include "net/addr.h"
#include "roles/metrics/metrics.h"

#define SET_CAP 4096 /* distinct values remembered per set */

enum sd_type {
    SD_COUNTER = METRICS_STATSD_COUNTER,
    SD_GAUGE = METRICS_STATSD_GAUGE,
    SD_HISTOGRAM = METRICS_STATSD_HISTOGRAM,
    SD_SET = METRICS_STATSD_SET,
};

struct sd_series {
    char *key; /* name '\0' k '\0' v '\0' ... (sorted by k); names only: "\1name" */
    size_t keylen;
    uint64_t hash;
    bool name_only; /* registers the family's type */
    enum sd_type type;
    char *name; /* points into key */
    struct metrics_prom_label *labels;
    uint32_t nlabels;
    double value;
    uint64_t count;
    double sum;
    uint64_t *buckets;
    uint64_t *set; /* hashes of the distinct values, open addressing, 0 = empty */
    size_t setn;
};

struct metrics_statsd {
    struct metrics_role *m;
    uv_udp_t udp;
    struct sd_series **tab;
    size_t cap, n, nseries;
    size_t max_series;
    double *bounds;
    size_t nbounds;
    bool closing;
    struct sc_metric *m_lines, *m_bad, *m_dropped;
    char rbuf[65536];
};

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ull;
    }
    return h ? h : 1;
}

static struct sd_series **slot(struct metrics_statsd *s, const char *key, size_t len, uint64_t h)
{
    size_t mask = s->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        struct sd_series *e = s->tab[i];
        if (!e || (e->hash == h && e->keylen == len && memcmp(e->key, key, len) == 0)) {
            return &s->tab[i];
        }
    }
}

static void grow(struct metrics_statsd *s)
{
    size_t cap = s->cap ? s->cap * 2 : 256;
    struct sd_series **old = s->tab;
    size_t oldcap = s->cap;
    s->tab = sc_calloc(cap, sizeof(*s->tab));
    s->cap = cap;
    for (size_t i = 0; i < oldcap; i++) {
        if (old[i]) {
            *slot(s, old[i]->key, old[i]->keylen, old[i]->hash) = old[i];
        }
    }
    sc_free(old);
}

/* The NUL-terminated field of a series key at <*p> (before <end>); moves <*p> past it. */
static struct sc_str key_field(const char **p, const char *end)
{
    const char *z = memchr(*p, '\0', (size_t)(end - *p));
    struct sc_str f = sc_str_n(*p, z ? (size_t)(z - *p) : (size_t)(end - *p));
    *p += f.len + 1;
    return f;
}

static struct sd_series *insert(struct metrics_statsd *s, const char *key, size_t len)
{
    if ((s->n + 1) * 2 > s->cap) {
        grow(s);
    }
    uint64_t h = hash_bytes(key, len);
    struct sd_series **sl = slot(s, key, len, h);
    if (*sl) {
        return *sl;
    }
    struct sd_series *e = SC_NEW(struct sd_series);
    e->key = sc_malloc(len + 1);
    memcpy(e->key, key, len);
    e->key[len] = '\0';
    e->keylen = len;
    e->hash = h;
    *sl = e;
    s->n++;
    return e;
}

static struct sd_series *lookup(struct metrics_statsd *s, const char *key, size_t len)
{
    if (!s->cap) {
        return NULL;
    }
    return *slot(s, key, len, hash_bytes(key, len));
}

/* Appends <p>[0..n) sanitized as a metric or label name to <b>. */
static void sanitize(struct sc_buf *b, const char *p, size_t n, bool label)
{
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (!label && c == ':') || (c >= '0' && c <= '9' && b->len > 0);
        if (c >= '0' && c <= '9' && i == 0) {
            sc_buf_append(b, "_", 1);
            ok = true;
        }
        sc_buf_append(b, ok ? &c : "_", 1);
    }
}

struct tag {
    struct sc_str k, v;
};

static int cmp_tag(const void *a, const void *b)
{
    const struct tag *x = a, *y = b;
    size_t n = x->k.len < y->k.len ? x->k.len : y->k.len;
    int c = memcmp(x->k.p, y->k.p, n);
    return c ? c : (x->k.len > y->k.len) - (x->k.len < y->k.len);
}

static bool parse_double(struct sc_str t, double *out)
{
    if (t.len == 0 || t.len > 63) {
        return false;
    }
    char buf[64];
    memcpy(buf, t.p, t.len);
    buf[t.len] = '\0';
    char *end;
    *out = strtod(buf, &end);
    return *end == '\0' && isfinite(*out) && strchr(buf, 'x') == NULL && strchr(buf, 'X') == NULL;
}

/* Handles one line "name:value|type[|@rate][|#tags]". Returns false when malformed. */
bool metrics_statsd_parse(struct sc_str line, struct metrics_statsd_line *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < line.len; i++) {
        unsigned char c = (unsigned char)line.p[i];
        if (c < 0x20 || c == 0x7f) {
            return false;
        }
    }
    if (!sc_utf8_valid(line.p, line.len)) {
        return false;
    }
    struct sc_str rest = line;
    struct sc_str name = sc_str_split(&rest, ':');
    if (name.len == 0 || name.len == line.len) {
        return false;
    }
    out->name = name;
    out->value = sc_str_split(&rest, '|');
    struct sc_str type = sc_str_split(&rest, '|');
    out->rate = 1.0;
    out->scale = 1.0;
    while (rest.len) {
        struct sc_str part = sc_str_split(&rest, '|');
        if (part.len > 1 && part.p[0] == '@') {
            if (!parse_double(sc_str_n(part.p + 1, part.len - 1), &out->rate) || out->rate <= 0 ||
                out->rate > 1) {
                return false;
            }
        } else if (part.len > 1 && part.p[0] == '#') {
            struct sc_str tl = sc_str_n(part.p + 1, part.len - 1);
            while (tl.len) {
                struct sc_str t = sc_str_split(&tl, ',');
                struct sc_str tv = t;
                struct sc_str tk = sc_str_split(&tv, ':');
                if (tk.len == 0 || out->ntags == METRICS_STATSD_MAX_TAGS) {
                    return false;
                }
                out->tags[out->ntags].k = tk;
                out->tags[out->ntags].v = t.len > tk.len ? tv : SC_STR("");
                out->ntags++;
            }
        } else {
            /* other DogStatsD fields (|c:container, |T timestamp) are ignored */
        }
    }
    if (sc_str_eq(type, SC_STR("c"))) {
        out->type = METRICS_STATSD_COUNTER;
    } else if (sc_str_eq(type, SC_STR("g"))) {
        out->type = METRICS_STATSD_GAUGE;
    } else if (sc_str_eq(type, SC_STR("ms"))) {
        out->type = METRICS_STATSD_HISTOGRAM;
        out->scale = 0.001;
    } else if (sc_str_eq(type, SC_STR("h")) || sc_str_eq(type, SC_STR("d"))) {
        out->type = METRICS_STATSD_HISTOGRAM;
    } else if (sc_str_eq(type, SC_STR("s"))) {
        out->type = METRICS_STATSD_SET;
    } else {
        return false;
    }
    if (out->type != METRICS_STATSD_SET) {
        if (!parse_double(out->value, &out->v)) {
            return false;
        }
        out->relative =
            out->type == METRICS_STATSD_GAUGE && (out->value.p[0] == '+' || out->value.p[0] == '-');
    } else if (out->value.len == 0) {
        return false;
    }
    return true;
}

static bool handle_line(struct metrics_statsd *s, struct sc_str line)
{
    struct metrics_statsd_line ln;
    if (!metrics_statsd_parse(line, &ln)) {
        return false;
    }
    struct tag tags[METRICS_STATSD_MAX_TAGS];
    size_t ntags = ln.ntags;
    for (size_t i = 0; i < ntags; i++) {
        tags[i].k = ln.tags[i].k;
        tags[i].v = ln.tags[i].v;
    }
    struct sc_str name = ln.name;
    enum sd_type st = (enum sd_type)ln.type;
    double v = ln.v, rate = ln.rate, scale = ln.scale;
    bool relative = ln.relative;
    struct sc_str value = ln.value;
    if (ntags > 1) {
        qsort(tags, ntags, sizeof(tags[0]), cmp_tag);
    }
    /* The family name, then the canonical series key. */
    char kb[2048];
    struct sc_buf key = { .p = kb, .len = 0, .cap = sizeof(kb), .max = sizeof(kb) - 1 };
    sc_buf_append(&key, "\1", 1);
    sanitize(&key, name.p, name.len, false);
    if (st == SD_COUNTER && !(key.len > 7 && memcmp(key.p + key.len - 6, "_total", 6) == 0)) {
        sc_buf_append(&key, "_total", 6);
    }
    if (key.len >= key.max - 1) {
        return false;
    }
    size_t namelen = key.len - 1;
    struct sd_series *fam = lookup(s, key.p, key.len);
    if (fam && fam->type != st) {
        sc_metrics_counter_inc(s->m_dropped);
        return true; /* a type clash is not malformed input, but it is not stored */
    }
    if (!fam) {
        if (s->nseries >= s->max_series) {
            sc_metrics_counter_inc(s->m_dropped);
            return true;
        }
        fam = insert(s, key.p, key.len);
        fam->name_only = true;
        fam->type = st;
    }
    sc_buf_append(&key, "\0", 1);
    for (size_t i = 0; i < ntags; i++) {
        sanitize(&key, tags[i].k.p, tags[i].k.len, true);
        sc_buf_append(&key, "\0", 1);
        if (sc_buf_append(&key, tags[i].v.p, tags[i].v.len) || sc_buf_append(&key, "\0", 1)) {
            return false;
        }
    }
    if (key.len >= key.max) {
        return false;
    }
    struct sd_series *e = lookup(s, key.p + 1, key.len - 1);
    if (!e) {
        if (s->nseries >= s->max_series) {
            sc_metrics_counter_inc(s->m_dropped);
            return true;
        }
        e = insert(s, key.p + 1, key.len - 1);
        s->nseries++;
        e->type = st;
        e->name = e->key;
        e->nlabels = (uint32_t)ntags;
        e->labels = sc_calloc(ntags ? ntags : 1, sizeof(*e->labels));
        const char *p = e->key + namelen + 1, *end = e->key + e->keylen;
        for (size_t i = 0; i < ntags; i++) {
            e->labels[i].name = key_field(&p, end);
            e->labels[i].value = key_field(&p, end);
        }
        if (st == SD_HISTOGRAM) {
            e->buckets = sc_calloc(s->nbounds + 1, sizeof(*e->buckets));
        }
    }
    switch (st) {
    case SD_COUNTER:
        e->value += v / rate;
        break;
    case SD_GAUGE:
        e->value = relative ? e->value + v : v;
        break;
    case SD_HISTOGRAM: {
        double x = v * scale;
        size_t b = 0;
        while (b < s->nbounds && x > s->bounds[b]) {
            b++;
        }
        e->buckets[b]++;
        e->count++;
        e->sum += x;
        break;
    }
    case SD_SET: {
        if (!e->set) {
            e->set = sc_calloc(SET_CAP * 2, sizeof(*e->set));
        }
        uint64_t h = hash_bytes(value.p, value.len);
        size_t mask = SET_CAP * 2 - 1;
        for (size_t i = h & mask;; i = (i + 1) & mask) {
            if (e->set[i] == h) {
                break;
            }
            if (e->set[i] == 0) {
                if (e->setn < SET_CAP) {
                    e->set[i] = h;
                    e->setn++;
                }
                break;
            }
        }
        e->value = (double)e->setn;
        break;
    }
    }
    return true;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct metrics_statsd *s = h->data;
    (void)suggested;
    *buf = uv_buf_init(s->rbuf, sizeof(s->rbuf));
}

static void on_recv(uv_udp_t *u, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *addr,
                    unsigned flags)
{
    struct metrics_statsd *s = u->data;
    (void)addr;
    (void)flags;
    if (nread <= 0) {
        return;
    }
    struct sc_str rest = sc_str_n(buf->base, (size_t)nread);
    while (rest.len) {
        struct sc_str line = sc_str_split(&rest, '\n');
        if (line.len && line.p[line.len - 1] == '\r') {
            line.len--;
        }
        if (line.len == 0) {
            continue;
        }
        sc_metrics_counter_inc(s->m_lines);
        if (!handle_line(s, line)) {
            sc_metrics_counter_inc(s->m_bad);
            sc_debug("statsd line malformed",
                     SC_LSN("line", line.p, line.len > 256 ? 256 : line.len));
        }
    }
}

static double *parse_bounds(const struct metrics_statsd_cfg *c)
{
    double *b = sc_calloc(c->buckets.n ? c->buckets.n : 1, sizeof(double));
    for (size_t i = 0; i < c->buckets.n; i++) {
        b[i] = strtod(c->buckets.v[i], NULL); /* checked when the config was loaded */
    }
    return b;
}

void metrics_statsd_reconfigure(struct metrics_statsd *s, const struct metrics_conf *conf)
{
    const struct metrics_statsd_cfg *c = &conf->cfg.statsd;
    s->max_series = (size_t)c->max_series;
    double *nb = parse_bounds(c);
    bool same = c->buckets.n == s->nbounds;
    for (size_t i = 0; same && i < s->nbounds; i++) {
        same = nb[i] == s->bounds[i];
    }
    if (same) {
        sc_free(nb);
        return;
    }
    sc_free(s->bounds);
    s->bounds = nb;
    s->nbounds = c->buckets.n;
    /* Counts in the old buckets cannot be split into the new ones: the histograms restart, which
     * Prometheus reads as a counter reset. */
    for (size_t i = 0; i < s->cap; i++) {
        struct sd_series *e = s->tab[i];
        if (e && !e->name_only && e->type == SD_HISTOGRAM) {
            sc_free(e->buckets);
            e->buckets = sc_calloc(s->nbounds + 1, sizeof(*e->buckets));
            e->count = 0;
            e->sum = 0;
        }
    }
}

int metrics_statsd_start(struct metrics_role *m, const struct metrics_conf *conf,
                         struct metrics_statsd **out, char **err)
{
    const struct metrics_statsd_cfg *c = &conf->cfg.statsd;
    const char *addr = conf->statsd_addr;
    struct sockaddr_storage ss;
    int rc = sc_addr_parse(addr, &ss, err);
    if (rc) {
        return rc;
    }
    struct metrics_statsd *s = SC_NEW(struct metrics_statsd);
    s->m = m;
    s->max_series = (size_t)c->max_series;
    s->nbounds = c->buckets.n;
    s->bounds = parse_bounds(c);
    struct sc_metrics *r = sc_app_metrics(m->app);
    s->m_lines = sc_metrics_counter(r, "sidecar_statsd_lines_total", "StatsD lines received.");
    s->m_bad = sc_metrics_counter(r, "sidecar_statsd_malformed_total",
                                  "StatsD lines that could not be parsed.");
    s->m_dropped = sc_metrics_counter(r, "sidecar_statsd_dropped_total",
                                      "StatsD samples dropped by the series cap or a type clash.");
    uv_udp_init(m->loop, &s->udp);
    s->udp.data = s;
    rc = uv_udp_bind(&s->udp, (const struct sockaddr *)&ss, 0);
    if (rc == 0) {
        rc = uv_udp_recv_start(&s->udp, on_alloc, on_recv);
    }
    if (rc) {
        *err = sc_asprintf("statsd.listen %s: %s", addr, uv_strerror(rc));
        metrics_statsd_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

static void on_closed(uv_handle_t *h)
{
    struct metrics_statsd *s = h->data;
    for (size_t i = 0; i < s->cap; i++) {
        struct sd_series *e = s->tab[i];
        if (e) {
            sc_free(e->key);
            sc_free(e->labels);
            sc_free(e->buckets);
            sc_free(e->set);
            sc_free(e);
        }
    }
    sc_free(s->tab);
    sc_free(s->bounds);
    sc_free(s);
}

void metrics_statsd_close(struct metrics_statsd *s)
{
    if (!s || s->closing) {
        return;
    }
    s->closing = true;
    uv_close((uv_handle_t *)&s->udp, on_closed);
}

static void add_sample(struct metrics_prom_set *out, struct metrics_prom_family *f,
                       struct sc_str name, const struct sd_series *e, const char *le, double v)
{
    struct metrics_prom_sample *sm = metrics_prom_sample_add(out, f);
    sm->name = name;
    sm->value = v;
    sm->nlabels = e->nlabels + (le ? 1 : 0);
    sm->labels = metrics_prom_alloc(out, (sm->nlabels ? sm->nlabels : 1) * sizeof(*sm->labels));
    for (uint32_t i = 0; i < e->nlabels; i++) {
        sm->labels[i].name = metrics_prom_strdup(out, e->labels[i].name);
        sm->labels[i].value = metrics_prom_strdup(out, e->labels[i].value);
    }
    if (le) {
        sm->labels[e->nlabels].name = SC_STR("le");
        sm->labels[e->nlabels].value = metrics_prom_strdup(out, sc_str_c(le));
    }
}

static const char *with_suffix(struct sc_buf *b, const char *name, const char *suffix)
{
    sc_buf_reset(b);
    sc_buf_append_cstr(b, name);
    sc_buf_append_cstr(b, suffix);
    return sc_buf_cstr(b);
}

void metrics_statsd_collect(struct metrics_statsd *s, struct metrics_prom_set *out)
{
    static const enum metrics_prom_type types[] = { METRICS_PROM_COUNTER, METRICS_PROM_GAUGE,
                                                    METRICS_PROM_HISTOGRAM, METRICS_PROM_GAUGE };
    struct sc_buf tmp;
    sc_buf_init(&tmp, 4096);
    for (size_t i = 0; i < s->cap; i++) {
        const struct sd_series *e = s->tab[i];
        if (!e || e->name_only) {
            continue;
        }
        struct sc_str name = metrics_prom_strdup(out, sc_str_c(e->name));
        struct metrics_prom_family *f = metrics_prom_family_get(out, name, types[e->type]);
        f->has_type = true;
        if (e->type != SD_HISTOGRAM) {
            add_sample(out, f, name, e, NULL, e->value);
            continue;
        }
        uint64_t cum = 0;
        struct sc_str bn =
            metrics_prom_strdup(out, sc_str_c(with_suffix(&tmp, e->name, "_bucket")));
        for (size_t b = 0; b <= s->nbounds; b++) {
            cum += e->buckets[b];
            sc_buf_reset(&tmp);
            if (b < s->nbounds) {
                sc_prom_value(&tmp, s->bounds[b]);
            } else {
                sc_buf_append_cstr(&tmp, "+Inf");
            }
            add_sample(out, f, bn, e, sc_buf_cstr(&tmp), (double)cum);
        }
        struct sc_str sn = metrics_prom_strdup(out, sc_str_c(with_suffix(&tmp, e->name, "_sum")));
        add_sample(out, f, sn, e, NULL, e->sum);
        struct sc_str cn = metrics_prom_strdup(out, sc_str_c(with_suffix(&tmp, e->name, "_count")));
        add_sample(out, f, cn, e, NULL, (double)e->count);
    }
    sc_buf_cleanup(&tmp);
}

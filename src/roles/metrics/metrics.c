// SPDX-License-Identifier: Apache-2.0
// `sidecar metrics`: the role's entry point and its options table. It scrapes the app's /metrics,
// reads the textfile directory and its own registry when its endpoint is scraped, relabels and
// merges them, and serves the result on its own port (0.0.0.0:9090 by default, separate from the
// admin port); where nothing scrapes, it pushes to a Pushgateway and/or remote_write. A drain
// stops accepting scrapes, makes the final pushes, and only then reports stopped.
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "net/addr.h"
#include "roles/metrics/metrics.h"

static const char *const relabel_actions[] = { "replace",   "keep",     "drop",    "labeldrop",
                                               "labelkeep", "labelmap", "hashmod", NULL };

static const struct sc_opt relabel_opts[] = {
    { .name = "action",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct metrics_relabel_cfg, action),
      .def = "replace",
      .enums = relabel_actions,
      .help = "what the rule does, as in Prometheus relabel_configs" },
    { .name = "source_labels",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct metrics_relabel_cfg, source_labels),
      .help = "labels whose values, joined by separator, are matched (__name__ is the metric "
              "name)" },
    { .name = "separator",
      .type = SC_OPT_STR,
      .offset = offsetof(struct metrics_relabel_cfg, separator),
      .def = ";",
      .help = "joins the source label values" },
    { .name = "regex",
      .type = SC_OPT_STR,
      .offset = offsetof(struct metrics_relabel_cfg, regex),
      .def = "(.*)",
      .help = "PCRE2 regex, anchored at both ends like Prometheus's" },
    { .name = "target_label",
      .type = SC_OPT_STR,
      .offset = offsetof(struct metrics_relabel_cfg, target_label),
      .help = "label written by replace and hashmod ($1 / ${1} groups allowed in replace)" },
    { .name = "replacement",
      .type = SC_OPT_STR,
      .offset = offsetof(struct metrics_relabel_cfg, replacement),
      .def = "$1",
      .help = "value for replace, new name for labelmap; $1, ${1}, ${name} refer to groups" },
    { .name = "modulus",
      .type = SC_OPT_INT,
      .offset = offsetof(struct metrics_relabel_cfg, modulus),
      .def = "0",
      .help = "hashmod: the modulus",
      .min = 0,
      .max = INT64_MAX },
    { 0 },
};

static const struct sc_opt target_opts[] = {
    { .name = "url",
      .type = SC_OPT_STR,
      .offset = offsetof(struct metrics_target_cfg, url),
      .help = "the target's metrics URL (http:// or https://)",
      .flags = SC_OPT_REQUIRED },
    { .name = "name",
      .type = SC_OPT_STR,
      .offset = offsetof(struct metrics_target_cfg, name),
      .help = "the value of the source label in sidecar_scrape_* (default: the URL)" },
    { .name = "timeout",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct metrics_target_cfg, timeout_ms),
      .def = "5s",
      .help = "deadline for the whole scrape of this target",
      .min = 1,
      .max = 3600000 },
    { .name = "honor_labels",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct metrics_target_cfg, honor_labels),
      .def = "false",
      .help = "keep the target's labels when they clash with our static labels (else they are "
              "renamed exported_<name>)" },
    { .name = "bearer_token",
      .type = SC_OPT_STR,
      .offset = offsetof(struct metrics_target_cfg, bearer_token),
      .help = "Authorization: Bearer token",
      .flags = SC_OPT_SECRET },
    { .name = "basic_user",
      .type = SC_OPT_STR,
      .offset = offsetof(struct metrics_target_cfg, basic_user),
      .help = "basic auth user" },
    { .name = "basic_password",
      .type = SC_OPT_STR,
      .offset = offsetof(struct metrics_target_cfg, basic_password),
      .help = "basic auth password",
      .flags = SC_OPT_SECRET },
    { .name = "ca_file",
      .type = SC_OPT_STR,
      .offset = offsetof(struct metrics_target_cfg, ca_file),
      .help = "PEM bundle to verify an https target (default: the system store)" },
    { .name = "cert_file",
      .type = SC_OPT_STR,
      .offset = offsetof(struct metrics_target_cfg, cert_file),
      .help = "client certificate for mTLS, PEM" },
    { .name = "key_file",
      .type = SC_OPT_STR,
      .offset = offsetof(struct metrics_target_cfg, key_file),
      .help = "client key for mTLS, PEM" },
    { .name = "insecure_skip_verify",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct metrics_target_cfg, insecure_skip_verify),
      .def = "false",
      .help = "do not verify the target's certificate" },
    { .name = "relabel_configs",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct metrics_target_cfg, relabel_configs),
      .sub = relabel_opts,
      .sub_size = sizeof(struct metrics_relabel_cfg),
      .help = "target relabeling, as Prometheus's: applied once to __address__, __scheme__, "
              "__metrics_path__ and the static labels; keep/drop can drop the target, and the "
              "labels without a __ prefix are what its samples get instead of the static labels",
      .max = 1000 },
    { .name = "metric_relabel_configs",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct metrics_target_cfg, metric_relabel_configs),
      .sub = relabel_opts,
      .sub_size = sizeof(struct metrics_relabel_cfg),
      .help = "rules applied to each sample of this target (after its labels are attached), "
              "before the global relabel_configs",
      .max = 1000 },
    { 0 },
};

static const char *const push_methods[] = { "PUT", "POST", NULL };

static const struct sc_opt push_opts[] = {
    { .name = "url",
      .type = SC_OPT_STR,
      .offset = offsetof(struct metrics_push_cfg, url),
      .help = "Pushgateway base URL, e.g. http://pushgateway:9091 (unset: no pushing)" },
    { .name = "job",
      .type = SC_OPT_STR,
      .offset = offsetof(struct metrics_push_cfg, job),
      .def = "sidecar",
      .help = "the job label of the grouping key" },
    { .name = "instance",
      .type = SC_OPT_STR,
      .offset = offsetof(struct metrics_push_cfg, instance),
      .help = "the instance label of the grouping key (unset: none)" },
    { .name = "interval",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct metrics_push_cfg, interval_ms),
      .def = "15s",
      .help = "time between pushes; one more push is made at shutdown",
      .min = 100,
      .max = 86400000 },
    { .name = "timeout",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct metrics_push_cfg, timeout_ms),
      .def = "10s",
      .help = "deadline for one push",
      .min = 1,
      .max = 3600000 },
    { .name = "method",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct metrics_push_cfg, method),
      .def = "PUT",
      .enums = push_methods,
      .help = "PUT replaces the whole group, POST replaces only the pushed families" },
    { 0 },
};

static const struct sc_opt rw_opts[] = {
    { .name = "url",
      .type = SC_OPT_STR,
      .offset = offsetof(struct metrics_rw_cfg, url),
      .help = "remote_write endpoint, e.g. http://prometheus:9090/api/v1/write (unset: off)" },
    { .name = "interval",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct metrics_rw_cfg, interval_ms),
      .def = "15s",
      .help = "time between collections sent; one more is sent at shutdown",
      .min = 100,
      .max = 86400000 },
    { .name = "timeout",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct metrics_rw_cfg, timeout_ms),
      .def = "10s",
      .help = "deadline for one request",
      .min = 1,
      .max = 3600000 },
    { .name = "queue",
      .type = SC_OPT_INT,
      .offset = offsetof(struct metrics_rw_cfg, queue),
      .def = "16",
      .help = "batches kept while the receiver is unavailable; the oldest goes first",
      .min = 1,
      .max = 10000 },
    { .name = "max_retries",
      .type = SC_OPT_INT,
      .offset = offsetof(struct metrics_rw_cfg, max_retries),
      .def = "5",
      .help = "retries of a batch after 5xx, 429 or a network error (4xx are not retried)",
      .min = 0,
      .max = 1000 },
    { .name = "min_backoff",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct metrics_rw_cfg, min_backoff_ms),
      .def = "500ms",
      .help = "first retry delay; doubled on each retry",
      .min = 1,
      .max = 3600000 },
    { .name = "max_backoff",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct metrics_rw_cfg, max_backoff_ms),
      .def = "30s",
      .help = "longest retry delay",
      .min = 1,
      .max = 3600000 },
    { .name = "bearer_token",
      .type = SC_OPT_STR,
      .offset = offsetof(struct metrics_rw_cfg, bearer_token),
      .help = "Authorization: Bearer token",
      .flags = SC_OPT_SECRET },
    { .name = "basic_user",
      .type = SC_OPT_STR,
      .offset = offsetof(struct metrics_rw_cfg, basic_user),
      .help = "basic auth user" },
    { .name = "basic_password",
      .type = SC_OPT_STR,
      .offset = offsetof(struct metrics_rw_cfg, basic_password),
      .help = "basic auth password",
      .flags = SC_OPT_SECRET },
    { 0 },
};

static const struct sc_opt statsd_opts[] = {
    { .name = "listen",
      .type = SC_OPT_STR,
      .offset = offsetof(struct metrics_statsd_cfg, listen),
      .help = "UDP address of the StatsD listener, e.g. 127.0.0.1:9125 (unset: off)",
      .check = sc_addr_check },
    { .name = "buckets",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct metrics_statsd_cfg, buckets),
      .def = "0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5,10",
      .help = "histogram bucket bounds for timers (in seconds) and histograms, increasing",
      .max = 100 },
    { .name = "max_series",
      .type = SC_OPT_INT,
      .offset = offsetof(struct metrics_statsd_cfg, max_series),
      .def = "10000",
      .help = "cap on StatsD series; past it new series are dropped and counted",
      .min = 1,
      .max = 10000000 },
    { 0 },
};

static const struct sc_opt metrics_opts[] = {
    { .name = "listen",
      .type = SC_OPT_STR,
      .offset = offsetof(struct metrics_cfg, listen),
      .def = "0.0.0.0:9090",
      .help = "address of the exposition endpoint Prometheus scrapes",
      .flags = SC_OPT_FLAG | SC_OPT_RESTART,
      .check = sc_addr_check },
    { .name = "path",
      .type = SC_OPT_STR,
      .offset = offsetof(struct metrics_cfg, path),
      .def = "/metrics",
      .help = "path of the exposition endpoint" },
    { .name = "scrape",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct metrics_cfg, scrape),
      .help = "target URLs scraped with the defaults (repeat the flag for several)",
      .flags = SC_OPT_FLAG,
      .max = 1000 },
    { .name = "scrape_timeout",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct metrics_cfg, scrape_timeout_ms),
      .def = "5s",
      .help = "deadline for the targets given with scrape",
      .flags = SC_OPT_FLAG,
      .min = 1,
      .max = 3600000 },
    { .name = "honor_labels",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct metrics_cfg, honor_labels),
      .def = "false",
      .help = "honor_labels for the scrape targets, the textfiles and our own metrics",
      .flags = SC_OPT_FLAG },
    { .name = "targets",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct metrics_cfg, targets),
      .sub = target_opts,
      .sub_size = sizeof(struct metrics_target_cfg),
      .help = "scrape targets with their own settings",
      .max = 1000 },
    { .name = "textfile_dir",
      .type = SC_OPT_STR,
      .offset = offsetof(struct metrics_cfg, textfile_dir),
      .help = "directory of *.prom files read at each scrape (write them under another name and "
              "rename)",
      .flags = SC_OPT_FLAG },
    { .name = "labels",
      .type = SC_OPT_STRMAP,
      .offset = offsetof(struct metrics_cfg, labels),
      .help = "static labels added to every sample, e.g. pod: ${POD_NAME}" },
    { .name = "label",
      .type = SC_OPT_STRMAP,
      .offset = offsetof(struct metrics_cfg, flag_labels),
      .help = "a static label as name=value (repeatable)",
      .flags = SC_OPT_FLAG_ONLY },
    { .name = "relabel_configs",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct metrics_cfg, relabel_configs),
      .sub = relabel_opts,
      .sub_size = sizeof(struct metrics_relabel_cfg),
      .help = "Prometheus-style rules applied to every sample of every source, after the static "
              "labels and a target's own metric_relabel_configs",
      .max = 1000 },
    { .name = "cache",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct metrics_cfg, cache_ms),
      .def = "1s",
      .help = "how long a collection answers further scrapes (scrapes during a collection always "
              "share it)",
      .flags = SC_OPT_FLAG,
      .max = 3600000 },
    { .name = "self_metrics",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct metrics_cfg, self_metrics),
      .def = "true",
      .help = "include the sidecar's own metrics (those of its admin /metrics)" },
    { .name = "max_series",
      .type = SC_OPT_INT,
      .offset = offsetof(struct metrics_cfg, max_series),
      .def = "1000000",
      .help = "cap on the samples of one source and of the merged output",
      .min = 1,
      .max = 100000000 },
    { .name = "max_scrape_bytes",
      .type = SC_OPT_SIZE,
      .offset = offsetof(struct metrics_cfg, max_scrape_bytes),
      .def = "64MiB",
      .help = "cap on one target's response (as received, and once decompressed) or one "
              "textfile",
      .min = 1024,
      .max = (int64_t)4 << 30 },
    { .name = "max_response_bytes",
      .type = SC_OPT_SIZE,
      .offset = offsetof(struct metrics_cfg, max_response_bytes),
      .def = "256MiB",
      .help = "cap on one push (a Pushgateway body, a remote_write batch before compression)",
      .min = 1024,
      .max = (int64_t)4 << 30 },
    { .name = "pushgateway",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct metrics_cfg, pushgateway),
      .sub = push_opts,
      .help = "push to a Pushgateway" },
    { .name = "pushgateway_url",
      .type = SC_OPT_STR,
      .offset = offsetof(struct metrics_cfg, pushgateway_url),
      .help = "shorthand for pushgateway.url",
      .flags = SC_OPT_FLAG_ONLY },
    { .name = "remote_write",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct metrics_cfg, remote_write),
      .sub = rw_opts,
      .help = "send to a Prometheus remote_write 1.0 receiver" },
    { .name = "remote_write_url",
      .type = SC_OPT_STR,
      .offset = offsetof(struct metrics_cfg, remote_write_url),
      .help = "shorthand for remote_write.url",
      .flags = SC_OPT_FLAG_ONLY },
    { .name = "statsd",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct metrics_cfg, statsd),
      .sub = statsd_opts,
      .help = "a StatsD (and DogStatsD) UDP listener whose series join the output" },
    { .name = "statsd_listen",
      .type = SC_OPT_STR,
      .offset = offsetof(struct metrics_cfg, statsd_listen),
      .help = "shorthand for statsd.listen",
      .flags = SC_OPT_FLAG_ONLY,
      .check = sc_addr_check },
    { 0 },
};

static bool http_url(const char *u)
{
    return u && (strncmp(u, "http://", 7) == 0 || strncmp(u, "https://", 8) == 0);
}

static int metrics_check(const void *cfgp, char **err)
{
    const struct metrics_cfg *cfg = cfgp;
    for (size_t i = 0; i < cfg->scrape.n; i++) {
        if (!http_url(cfg->scrape.v[i])) {
            *err = sc_asprintf("scrape: %s: not an http:// or https:// URL", cfg->scrape.v[i]);
            return SC_ECONFIG;
        }
    }
    const struct metrics_target_cfg *t = cfg->targets.v;
    for (size_t i = 0; i < cfg->targets.n; i++) {
        if (!http_url(t[i].url)) {
            *err = sc_asprintf("targets[%zu].url: not an http:// or https:// URL", i);
            return SC_ECONFIG;
        }
    }
    if (!cfg->path || cfg->path[0] != '/') {
        *err = sc_asprintf("path: must start with '/'");
        return SC_ECONFIG;
    }
    const char *pu = cfg->pushgateway_url ? cfg->pushgateway_url : cfg->pushgateway.url;
    const char *ru = cfg->remote_write_url ? cfg->remote_write_url : cfg->remote_write.url;
    if (pu && !http_url(pu)) {
        *err = sc_asprintf("pushgateway.url: not an http:// or https:// URL");
        return SC_ECONFIG;
    }
    if (ru && !http_url(ru)) {
        *err = sc_asprintf("remote_write.url: not an http:// or https:// URL");
        return SC_ECONFIG;
    }
    for (size_t i = 0; i < cfg->labels.n + cfg->flag_labels.n; i++) {
        const char *k =
            i < cfg->labels.n ? cfg->labels.v[i].key : cfg->flag_labels.v[i - cfg->labels.n].key;
        if (!metrics_prom_valid_name(sc_str_c(k), true) || strncmp(k, "__", 2) == 0) {
            *err = sc_asprintf("labels: %s: not a valid label name", k);
            return SC_ECONFIG;
        }
    }
    double prev = -INFINITY;
    for (size_t i = 0; i < cfg->statsd.buckets.n; i++) {
        char *end = NULL;
        double b = strtod(cfg->statsd.buckets.v[i], &end);
        if (!end || *end || end == cfg->statsd.buckets.v[i] || !isfinite(b) || b <= prev) {
            *err = sc_asprintf("statsd.buckets: %s: not a number greater than the one before",
                               cfg->statsd.buckets.v[i]);
            return SC_ECONFIG;
        }
        prev = b;
    }
    struct metrics_conf *conf = metrics_conf_new(cfg, err);
    if (!conf) {
        return SC_ECONFIG;
    }
    metrics_conf_unref(conf);
    return 0;
}

/* ---- the effective configuration ---- */

/* Deep-copies the fields <table> describes from <src> into <dst>, which holds a bitwise copy of
 * <src> already: every owned pointer is replaced by a copy, so sc_config_free() frees <dst>. */
static void copy_rec(const struct sc_opt *table, void *dst, const void *src)
{
    for (const struct sc_opt *o = table; o->type != SC_OPT_END; o++) {
        void *d = (char *)dst + o->offset;
        const void *sp = (const char *)src + o->offset;
        switch (o->type) {
        case SC_OPT_STR: {
            const char *v = *(char *const *)sp;
            *(char **)d = v ? sc_strdup(v) : NULL;
            break;
        }
        case SC_OPT_STRLIST: {
            const struct sc_strv *sv = sp;
            struct sc_strv *dv = d;
            dv->v = sv->n ? sc_calloc(sv->n, sizeof(char *)) : NULL;
            for (size_t i = 0; i < sv->n; i++) {
                dv->v[i] = sc_strdup(sv->v[i]);
            }
            break;
        }
        case SC_OPT_STRMAP: {
            const struct sc_kvv *sv = sp;
            struct sc_kvv *dv = d;
            dv->v = sv->n ? sc_calloc(sv->n, sizeof(*dv->v)) : NULL;
            for (size_t i = 0; i < sv->n; i++) {
                dv->v[i].key = sc_strdup(sv->v[i].key);
                dv->v[i].value = sv->v[i].value ? sc_strdup(sv->v[i].value) : NULL;
            }
            break;
        }
        case SC_OPT_OBJ:
        case SC_OPT_INLINE:
            copy_rec(o->sub, d, sp);
            break;
        case SC_OPT_OBJLIST: {
            const struct sc_vec *sv = sp;
            struct sc_vec *dv = d;
            dv->v = sv->n ? sc_calloc(sv->n, o->sub_size) : NULL;
            for (size_t i = 0; i < sv->n; i++) {
                void *de = (char *)dv->v + i * o->sub_size;
                const void *se = (const char *)sv->v + i * o->sub_size;
                memcpy(de, se, o->sub_size);
                copy_rec(o->sub, de, se);
            }
            break;
        }
        default:
            break; /* scalars came with the bitwise copy */
        }
    }
}

static struct sc_str str_dup(struct metrics_conf *c, struct sc_str v)
{
    return metrics_prom_strdup(&c->arena, v);
}

/* Runs target relabeling for <t> (Prometheus's relabel_configs of a scrape config): the input is
 * __address__, __scheme__ and __metrics_path__ from its URL plus the static labels; the output
 * decides whether it is scraped, the URL (rebuilt when one of the three changed) and its labels.
 * Returns 0 or SC_ECONFIG with a new message in <*err>. */
static int target_relabel(struct metrics_conf *c, struct metrics_target *t, size_t idx, char **err)
{
    const struct metrics_target_cfg *tc = t->cfg;
    t->url = tc->url;
    t->lbls = c->lbls;
    t->nlbls = c->nlbls;
    if (tc->relabel_configs.n == 0) {
        return 0;
    }
    struct metrics_relabel *r = NULL;
    int rc = metrics_relabel_compile(tc->relabel_configs.v, tc->relabel_configs.n, &r, err);
    if (rc) {
        char *e = sc_asprintf("targets[%zu].%s", idx, *err);
        sc_free(*err);
        *err = e;
        return rc;
    }
    /* scheme://[userinfo@]address/path[?query]: the userinfo and query are kept as they are. */
    const char *u = tc->url;
    const char *auth = strstr(u, "://") + 3;
    size_t alen = strcspn(auth, "/?#");
    const char *at = memchr(auth, '@', alen);
    const char *addr = at ? at + 1 : auth;
    const char *path = auth + alen;
    size_t plen = strcspn(path, "?#");
    struct sc_str scheme = sc_str_n(u, (size_t)(auth - 3 - u));
    struct sc_str address = sc_str_n(addr, (size_t)(auth + alen - addr));
    struct sc_str mpath = plen ? sc_str_n(path, plen) : SC_STR("/");
    struct metrics_lbls l = { .arena_set = &c->arena };
    metrics_lbls_set(&l, SC_STR("__address__"), address);
    metrics_lbls_set(&l, SC_STR("__scheme__"), scheme);
    metrics_lbls_set(&l, SC_STR("__metrics_path__"), mpath);
    for (size_t i = 0; i < c->nlbls; i++) {
        metrics_lbls_set(&l, c->lbls[i].name, c->lbls[i].value);
    }
    bool keep = metrics_relabel_apply(r, &l);
    if (!keep) {
        t->dropped = true;
        goto out;
    }
    struct sc_str ns = metrics_lbls_get(&l, SC_STR("__scheme__"));
    struct sc_str na = metrics_lbls_get(&l, SC_STR("__address__"));
    struct sc_str np = metrics_lbls_get(&l, SC_STR("__metrics_path__"));
    if (!sc_str_eq(ns, scheme) || !sc_str_eq(na, address) || !sc_str_eq(np, mpath)) {
        if (!na.len || !(sc_str_eq(ns, SC_STR("http")) || sc_str_eq(ns, SC_STR("https")))) {
            *err = sc_asprintf("targets[%zu].relabel_configs: the target's __scheme__ must be "
                               "http or https and its __address__ not empty",
                               idx);
            rc = SC_ECONFIG;
            goto out;
        }
        char *nu = sc_asprintf("%.*s://%.*s%.*s%s%.*s", SC_STR_FMT(ns), (int)(addr - auth), auth,
                               SC_STR_FMT(na), np.len && np.p[0] == '/' ? "" : "/", SC_STR_FMT(np));
        char *full = sc_asprintf("%s%s", nu, path + plen);
        t->url = str_dup(c, sc_str_c(full)).p;
        sc_free(nu);
        sc_free(full);
    }
    t->lbls = metrics_prom_alloc(&c->arena, (l.n ? l.n : 1) * sizeof(*t->lbls));
    t->nlbls = 0;
    for (size_t i = 0; i < l.n; i++) {
        if (l.v[i].name.len >= 2 && l.v[i].name.p[0] == '_' && l.v[i].name.p[1] == '_') {
            continue; /* meta labels go after relabeling, as in Prometheus */
        }
        t->lbls[t->nlbls].name = str_dup(c, l.v[i].name);
        t->lbls[t->nlbls].value = str_dup(c, l.v[i].value);
        t->nlbls++;
    }
out:
    sc_free(l.v);
    metrics_relabel_free(r);
    return rc;
}

struct metrics_conf *metrics_conf_new(const struct metrics_cfg *cfg, char **err)
{
    struct metrics_conf *c = SC_NEW(struct metrics_conf);
    c->refs = 1;
    metrics_prom_set_init(&c->arena);
    memcpy(&c->cfg, cfg, sizeof(c->cfg));
    copy_rec(metrics_opts, &c->cfg, cfg);
    cfg = &c->cfg;
    int rc =
        metrics_relabel_compile(cfg->relabel_configs.v, cfg->relabel_configs.n, &c->relabel, err);
    if (rc) {
        goto fail;
    }
    if (cfg->relabel_configs.n == 0) {
        metrics_relabel_free(c->relabel);
        c->relabel = NULL;
    }
    /* Flag values are expanded here (the file's were when it was loaded), so that
     * `--label pod=${POD_NAME}` works where no shell runs, as in a container's args. */
    size_t nl = cfg->labels.n + cfg->flag_labels.n;
    c->lbls = metrics_prom_alloc(&c->arena, (nl ? nl : 1) * sizeof(*c->lbls));
    for (size_t i = 0; i < cfg->labels.n; i++) {
        c->lbls[c->nlbls].name = sc_str_c(cfg->labels.v[i].key);
        c->lbls[c->nlbls].value = sc_str_c(cfg->labels.v[i].value ? cfg->labels.v[i].value : "");
        c->nlbls++;
    }
    for (size_t i = 0; i < cfg->flag_labels.n; i++) {
        char *e = NULL;
        size_t pos = 0;
        char *v = sc_value_env_expand(cfg->flag_labels.v[i].value, &e, &pos);
        if (!v) {
            *err = sc_asprintf("--label %s: %s", cfg->flag_labels.v[i].key, e ? e : "invalid");
            sc_free(e);
            goto fail;
        }
        c->lbls[c->nlbls].name = sc_str_c(cfg->flag_labels.v[i].key);
        c->lbls[c->nlbls].value = str_dup(c, sc_str_c(v));
        c->nlbls++;
        sc_free(v);
    }

    c->nflag_targets = cfg->scrape.n;
    c->flag_targets = sc_calloc(cfg->scrape.n ? cfg->scrape.n : 1, sizeof(*c->flag_targets));
    for (size_t i = 0; i < cfg->scrape.n; i++) {
        c->flag_targets[i].url = cfg->scrape.v[i];
        c->flag_targets[i].timeout_ms = cfg->scrape_timeout_ms;
        c->flag_targets[i].honor_labels = cfg->honor_labels;
    }
    c->ntargets = cfg->scrape.n + cfg->targets.n;
    c->targets = sc_calloc(c->ntargets ? c->ntargets : 1, sizeof(*c->targets));
    const struct metrics_target_cfg *tc = cfg->targets.v;
    for (size_t i = 0; i < c->ntargets; i++) {
        struct metrics_target *t = &c->targets[i];
        t->cfg = i < cfg->scrape.n ? &c->flag_targets[i] : &tc[i - cfg->scrape.n];
        t->source = t->cfg->name ? t->cfg->name : t->cfg->url;
        t->tls.ca_file = t->cfg->ca_file;
        t->tls.cert_file = t->cfg->cert_file;
        t->tls.key_file = t->cfg->key_file;
        t->tls.insecure_skip_verify = t->cfg->insecure_skip_verify;
        size_t ci = i - cfg->scrape.n;
        if (i >= cfg->scrape.n) {
            rc = target_relabel(c, t, ci, err);
            if (rc) {
                goto fail;
            }
            const struct sc_vec *mr = &t->cfg->metric_relabel_configs;
            if (mr->n) {
                rc = metrics_relabel_compile(mr->v, mr->n, &t->metric_relabel, err);
                if (rc) {
                    char *e = sc_asprintf("targets[%zu].metric_%s", ci, *err);
                    sc_free(*err);
                    *err = e;
                    goto fail;
                }
            }
        } else {
            t->url = t->cfg->url;
            t->lbls = c->lbls;
            t->nlbls = c->nlbls;
        }
    }
    /* The flag shorthands win over the file's URLs. */
    c->push_url = cfg->pushgateway_url ? cfg->pushgateway_url : cfg->pushgateway.url;
    c->rw_url = cfg->remote_write_url ? cfg->remote_write_url : cfg->remote_write.url;
    c->statsd_addr = cfg->statsd_listen ? cfg->statsd_listen : cfg->statsd.listen;
    return c;
fail:
    metrics_conf_unref(c);
    return NULL;
}

void metrics_conf_ref(struct metrics_conf *c)
{
    c->refs++;
}

void metrics_conf_unref(struct metrics_conf *c)
{
    if (!c || --c->refs > 0) {
        return;
    }
    for (size_t i = 0; i < c->ntargets; i++) {
        metrics_relabel_free(c->targets[i].metric_relabel);
    }
    sc_free(c->targets);
    sc_free(c->flag_targets); /* their URLs belong to cfg.scrape */
    metrics_relabel_free(c->relabel);
    metrics_prom_set_cleanup(&c->arena);
    sc_config_free(metrics_opts, &c->cfg);
    sc_free(c);
}

/* ---- the role ---- */

static void role_free(struct metrics_role *m)
{
    if (!m) {
        return;
    }
    metrics_snapshot_unref(m->last);
    metrics_push_free(m->push);
    metrics_rw_free(m->rw);
    metrics_conf_unref(m->conf);
    sc_free(m);
}

static int metrics_start(struct sc_app *app, const void *cfgp, void **state, char **err)
{
    struct metrics_role *m = SC_NEW(struct metrics_role);
    m->app = app;
    m->loop = sc_app_loop(app);
    sc_list_init(&m->h1_scrapes);
    int rc = 0;
    m->conf = metrics_conf_new(cfgp, err);
    if (!m->conf) {
        rc = SC_ECONFIG;
        goto fail;
    }
    m->cfg = &m->conf->cfg;
    const struct metrics_conf *conf = m->conf;

    struct sc_metrics *reg = sc_app_metrics(app);
    m->m_collections = sc_metrics_counter(reg, "sidecar_metrics_collections_total",
                                          "Collections of every source (cache misses).");
    m->m_conflicts =
        sc_metrics_counter(reg, "sidecar_metrics_family_conflicts_total",
                           "Metric families dropped because an earlier source had the same name "
                           "with another type.");
    m->m_dropped_series = sc_metrics_counter(reg, "sidecar_metrics_series_cap_dropped_total",
                                             "Samples dropped by the max_series cap.");
    m->m_requests = sc_metrics_counter(reg, "sidecar_metrics_exposition_requests_total",
                                       "Requests to the exposition endpoint.");

    rc = metrics_http_start(m, &m->http, err);
    if (rc) {
        goto fail;
    }
    char addr[64] = "";
    metrics_http_address(m->http, addr, sizeof(addr));
    if (conf->statsd_addr) {
        rc = metrics_statsd_start(m, conf, &m->statsd, err);
        if (rc) {
            goto fail;
        }
    }
    if (conf->push_url) {
        rc = metrics_push_start(m, &m->push, err);
        if (rc) {
            goto fail;
        }
    }
    if (conf->rw_url) {
        metrics_rw_start(m, &m->rw); /* cannot fail: started last so nothing needs undoing */
    }
    sc_info("metrics exposition listening", SC_LS("addr", addr), SC_LS("path", m->cfg->path),
            SC_LU("targets", conf->ntargets),
            SC_LS("textfile_dir", m->cfg->textfile_dir ? m->cfg->textfile_dir : ""),
            SC_LB("pushgateway", m->push != NULL), SC_LB("remote_write", m->rw != NULL));
    metrics_collect_start(m); /* last: nothing after it can fail */
    sc_app_set_ready(app, true);
    *state = m;
    return 0;
fail:
    /* Nothing may stay running: only the server, the listener and the client can exist here. */
    metrics_statsd_close(m->statsd);
    m->statsd = NULL;
    metrics_http_close(m->http);
    sc_egress_close(m->egress);
    role_free(m);
    return rc;
}

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool same_push(const struct metrics_conf *a, const struct metrics_conf *b)
{
    const struct metrics_push_cfg *x = &a->cfg.pushgateway, *y = &b->cfg.pushgateway;
    return same_str(a->push_url, b->push_url) && same_str(x->job, y->job) &&
           same_str(x->instance, y->instance) && x->interval_ms == y->interval_ms &&
           x->timeout_ms == y->timeout_ms && x->method == y->method &&
           a->cfg.max_response_bytes == b->cfg.max_response_bytes;
}

/* Applies a new config: everything but the exposition address takes effect. A collection under
 * way finishes on the configuration it started with (it and its snapshot hold that one), and the
 * next request starts a collection on the new one. A StatsD listener whose address changes is
 * replaced (its series start again from zero), otherwise it keeps its series and takes the new
 * cap and buckets; the Pushgateway pusher is replaced when its settings change; remote_write keeps
 * its queue. Anything that can fail is done before anything changes. */
static int metrics_reload(struct sc_app *app, void *state, const void *cfgp, char **err)
{
    struct metrics_role *m = state;
    const struct metrics_cfg *cfg = cfgp;
    (void)app; /* listen is SC_OPT_RESTART: the app checked it */
    if (m->stopping) {
        return 0;
    }
    struct metrics_conf *conf = metrics_conf_new(cfg, err);
    if (!conf) {
        return SC_ECONFIG;
    }
    struct metrics_conf *old = m->conf;
    struct metrics_statsd *nsd = NULL;
    bool statsd_moved = !same_str(old->statsd_addr, conf->statsd_addr);
    if (statsd_moved && conf->statsd_addr) {
        int rc = metrics_statsd_start(m, conf, &nsd, err);
        if (rc) {
            metrics_conf_unref(conf);
            return rc;
        }
    }
    struct metrics_push *npush = NULL;
    bool push_changed = !same_push(old, conf);
    m->conf = conf;
    m->cfg = &conf->cfg;
    if (push_changed && conf->push_url) {
        int rc = metrics_push_start(m, &npush, err);
        if (rc) {
            m->conf = old;
            m->cfg = &old->cfg;
            metrics_statsd_close(nsd);
            metrics_conf_unref(conf);
            return rc;
        }
    }
    /* Nothing can fail from here on. */
    if (statsd_moved) {
        metrics_statsd_close(m->statsd);
        m->statsd = nsd;
    } else if (m->statsd) {
        metrics_statsd_reconfigure(m->statsd, conf);
    }
    if (push_changed) {
        metrics_push_retire(m->push);
        m->push = npush;
    }
    if (!same_str(old->rw_url, conf->rw_url) && !conf->rw_url) {
        metrics_rw_retire(m->rw);
        m->rw = NULL;
    } else if (m->rw) {
        metrics_rw_reconfigure(m->rw, conf);
    } else if (conf->rw_url) {
        metrics_rw_start(m, &m->rw);
    }
    metrics_collect_forget(m);
    metrics_conf_unref(old);
    sc_info("metrics configuration reloaded", SC_LU("targets", conf->ntargets),
            SC_LS("textfile_dir", conf->cfg.textfile_dir ? conf->cfg.textfile_dir : ""),
            SC_LB("pushgateway", m->push != NULL), SC_LB("remote_write", m->rw != NULL),
            SC_LB("statsd", m->statsd != NULL));
    return 0;
}

struct sc_egress *metrics_egress(struct metrics_role *m)
{
    if (!m->egress && !m->finished) {
        m->egress = sc_egress_new(m->loop);
    }
    return m->egress;
}

static void finish_stop(struct metrics_role *m)
{
    m->finished = true;
    metrics_collect_stop(m);
    sc_egress_close(m->egress);
    m->egress = NULL;
    sc_app_stopped(m->app, 0);
}

void metrics_role_push_done(struct metrics_role *m)
{
    if (--m->pending_stops == 0) {
        finish_stop(m);
    }
}

static void metrics_stop(struct sc_app *app, void *state, bool now)
{
    struct metrics_role *m = state;
    (void)app;
    if (m->stopping && !now) {
        return;
    }
    if (!m->stopping) {
        m->stopping = true;
        sc_app_set_ready(app, false);
        metrics_http_close(m->http);
        m->http = NULL;
        metrics_statsd_close(m->statsd);
        m->statsd = NULL;
        m->pending_stops = (m->push ? 1 : 0) + (m->rw ? 1 : 0);
        if (m->pending_stops == 0) {
            finish_stop(m);
            return;
        }
    }
    if (m->finished) {
        return;
    }
    metrics_push_stop(m->push, now);
    metrics_rw_stop(m->rw, now);
}

static void metrics_cleanup(void *state)
{
    role_free(state);
}

static const char metrics_usage[] =
    "Quick start: sidecar metrics --listen 0.0.0.0:9090 --scrape http://127.0.0.1:8080/metrics \\\n"
    "                 --textfile-dir /shared/metrics --label pod=${POD_NAME}\n"
    "Prometheus scrapes --listen; each scrape of it scrapes the targets (shared by concurrent\n"
    "scrapes and cached for --cache). sidecar_scrape_up{source=...} reports each source.";

const struct sc_role sc_role_metrics = {
    .name = "metrics",
    .summary = "metrics sidecar: scrape, textfiles, relabel, expose; push to Pushgateway and "
               "remote_write",
    .usage = metrics_usage,
    .opts = metrics_opts,
    .cfg_size = sizeof(struct metrics_cfg),
    .admin_default = "127.0.0.1:15021",
    .check = metrics_check,
    .start = metrics_start,
    .stop = metrics_stop,
    .reload = metrics_reload,
    .cleanup = metrics_cleanup,
};

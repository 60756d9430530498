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
    { 0 },
};

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
      .flags = SC_OPT_FLAG,
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
      .help = "Prometheus-style rules applied to every sample after the static labels",
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
      .help = "cap on one target's response or one textfile",
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
        if (!prom_valid_name(sc_str_c(k), true) || strncmp(k, "__", 2) == 0) {
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
    struct metrics_relabel *r = NULL;
    int rc = metrics_relabel_compile(cfg->relabel_configs.v, cfg->relabel_configs.n, &r, err);
    metrics_relabel_free(r);
    return rc;
}

static void role_free(struct metrics_role *m)
{
    if (!m) {
        return;
    }
    metrics_snapshot_unref(m->last);
    metrics_relabel_free(m->relabel);
    metrics_push_free(m->push);
    metrics_rw_free(m->rw);
    for (size_t i = 0; i < m->nflag_targets; i++) {
        sc_free(m->flag_targets[i].url);
    }
    sc_free(m->flag_targets);
    sc_free(m->targets);
    sc_free(m->labels.v);
    for (size_t i = 0; i < m->nlabel_values; i++) {
        sc_free(m->label_values[i]);
    }
    sc_free(m->label_values);
    sc_free(m);
}

static int metrics_start(struct sc_app *app, const void *cfgp, void **state, char **err)
{
    const struct metrics_cfg *cfg = cfgp;
    struct metrics_role *m = SC_NEW(struct metrics_role);
    m->app = app;
    m->loop = sc_app_loop(app);
    m->cfg = cfg;
    sc_list_init(&m->waiters);
    int rc =
        metrics_relabel_compile(cfg->relabel_configs.v, cfg->relabel_configs.n, &m->relabel, err);
    if (rc) {
        goto fail;
    }
    if (cfg->relabel_configs.n == 0) {
        metrics_relabel_free(m->relabel);
        m->relabel = NULL;
    }
    m->labels.n = cfg->labels.n + cfg->flag_labels.n;
    m->labels.v = sc_calloc(m->labels.n ? m->labels.n : 1, sizeof(*m->labels.v));
    for (size_t i = 0; i < cfg->labels.n; i++) {
        m->labels.v[i] = cfg->labels.v[i];
    }
    /* Flag values are expanded here (the file's were when it was loaded), so that
     * `--label pod=${POD_NAME}` works where no shell runs, as in a container's args. */
    m->label_values = sc_calloc(cfg->flag_labels.n ? cfg->flag_labels.n : 1, sizeof(char *));
    for (size_t i = 0; i < cfg->flag_labels.n; i++) {
        char *e = NULL;
        size_t pos = 0;
        m->label_values[i] = sc_env_expand(cfg->flag_labels.v[i].value, &e, &pos);
        m->nlabel_values = i + 1;
        if (!m->label_values[i]) {
            *err = sc_asprintf("--label %s: %s", cfg->flag_labels.v[i].key, e ? e : "invalid");
            sc_free(e);
            rc = SC_ECONFIG;
            goto fail;
        }
        m->labels.v[cfg->labels.n + i].key = cfg->flag_labels.v[i].key;
        m->labels.v[cfg->labels.n + i].value = m->label_values[i];
    }

    m->nflag_targets = cfg->scrape.n;
    m->flag_targets = sc_calloc(cfg->scrape.n ? cfg->scrape.n : 1, sizeof(*m->flag_targets));
    for (size_t i = 0; i < cfg->scrape.n; i++) {
        m->flag_targets[i].url = sc_strdup(cfg->scrape.v[i]);
        m->flag_targets[i].timeout_ms = cfg->scrape_timeout_ms;
        m->flag_targets[i].honor_labels = cfg->honor_labels;
    }
    m->ntargets = cfg->scrape.n + cfg->targets.n;
    m->targets = sc_calloc(m->ntargets ? m->ntargets : 1, sizeof(*m->targets));
    const struct metrics_target_cfg *tc = cfg->targets.v;
    for (size_t i = 0; i < m->ntargets; i++) {
        struct metrics_target *t = &m->targets[i];
        t->cfg = i < cfg->scrape.n ? &m->flag_targets[i] : &tc[i - cfg->scrape.n];
        t->source = t->cfg->name ? t->cfg->name : t->cfg->url;
        t->tls.ca_file = t->cfg->ca_file;
        t->tls.cert_file = t->cfg->cert_file;
        t->tls.key_file = t->cfg->key_file;
        t->tls.insecure_skip_verify = t->cfg->insecure_skip_verify;
    }

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

    m->egress = sc_egress_new(m->loop);
    rc = metrics_http_start(m, &m->http, err);
    if (rc) {
        goto fail;
    }
    char addr[64] = "";
    metrics_http_address(m->http, addr, sizeof(addr));
    /* The flag shorthands win over the file's URLs. */
    m->push_url = cfg->pushgateway_url ? cfg->pushgateway_url : cfg->pushgateway.url;
    m->rw_url = cfg->remote_write_url ? cfg->remote_write_url : cfg->remote_write.url;
    m->statsd_addr = cfg->statsd_listen ? cfg->statsd_listen : cfg->statsd.listen;
    if (m->statsd_addr) {
        rc = metrics_statsd_start(m, &m->statsd, err);
        if (rc) {
            goto fail;
        }
    }
    if (m->push_url) {
        rc = metrics_push_start(m, &m->push, err);
        if (rc) {
            goto fail;
        }
    }
    if (m->rw_url) {
        metrics_rw_start(m, &m->rw); /* cannot fail: started last so nothing needs undoing */
    }
    sc_info("metrics exposition listening", SC_LS("addr", addr), SC_LS("path", cfg->path),
            SC_LU("targets", m->ntargets),
            SC_LS("textfile_dir", cfg->textfile_dir ? cfg->textfile_dir : ""),
            SC_LB("pushgateway", m->push != NULL), SC_LB("remote_write", m->rw != NULL));
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

static void finish_stop(struct metrics_role *m)
{
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
    if (m->egress == NULL) {
        return; /* already finished */
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
    .reload = NULL,
    .cleanup = metrics_cleanup,
};

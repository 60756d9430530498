// SPDX-License-Identifier: Apache-2.0
// `sidecar metrics`, internal interfaces between the role's files: the config structs (one table
// in metrics.c), relabeling (metrics_relabel.c), collection of all sources into one merged,
// reference-counted snapshot (metrics_collect.c), the exposition server (metrics_http.c) and the
// pushers (metrics_push.c). A snapshot is immutable once built, so every scrape of our endpoint
// and every push reads it without copying; it is freed when its last reader lets go.
#ifndef SC_ROLES_METRICS_METRICS_H
#define SC_ROLES_METRICS_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "app.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/list.h"
#include "core/metrics.h"
#include "net/egress.h"
#include "roles/metrics/prom.h"

/* ---- configuration ---- */

struct metrics_target_cfg {
    char *name; /* the source label; default: the URL */
    char *url;
    uint64_t timeout_ms;
    bool honor_labels;
    char *bearer_token;
    char *basic_user;
    char *basic_password;
    char *ca_file;
    char *cert_file;
    char *key_file;
    bool insecure_skip_verify;
    struct sc_vec relabel_configs;        /* struct metrics_relabel_cfg: target relabeling */
    struct sc_vec metric_relabel_configs; /* struct metrics_relabel_cfg: per sample */
};

enum metrics_relabel_action {
    RELABEL_REPLACE,
    RELABEL_KEEP,
    RELABEL_DROP,
    RELABEL_LABELDROP,
    RELABEL_LABELKEEP,
    RELABEL_LABELMAP,
    RELABEL_HASHMOD,
};

struct metrics_relabel_cfg {
    struct sc_strv source_labels;
    char *separator;
    char *regex;
    int64_t modulus;
    char *target_label;
    char *replacement;
    int action;
};

struct metrics_push_cfg {
    char *url; /* NULL: no pushing */
    char *job;
    char *instance;
    uint64_t interval_ms;
    uint64_t timeout_ms;
    int method; /* 0: PUT, 1: POST */
};

struct metrics_rw_cfg {
    char *url; /* NULL: no remote_write */
    uint64_t interval_ms;
    uint64_t timeout_ms;
    int64_t queue;       /* batches kept while the receiver is down */
    int64_t max_retries; /* per batch, on 5xx / 429 / network errors */
    uint64_t min_backoff_ms;
    uint64_t max_backoff_ms;
    char *bearer_token;
    char *basic_user;
    char *basic_password;
};

struct metrics_statsd_cfg {
    char *listen; /* NULL: no StatsD listener */
    struct sc_strv buckets;
    int64_t max_series;
};

struct metrics_cfg {
    char *listen;
    char *path;
    struct sc_strv scrape;
    uint64_t scrape_timeout_ms;
    bool honor_labels;
    struct sc_vec targets; /* struct metrics_target_cfg */
    char *textfile_dir;
    struct sc_kvv labels;
    struct sc_kvv flag_labels;     /* --label k=v, added to <labels> */
    struct sc_vec relabel_configs; /* struct metrics_relabel_cfg */
    uint64_t cache_ms;
    bool self_metrics;
    int64_t max_series;
    uint64_t max_scrape_bytes;
    uint64_t max_response_bytes;
    struct metrics_push_cfg pushgateway;
    struct metrics_rw_cfg remote_write;
    struct metrics_statsd_cfg statsd;
    char *pushgateway_url; /* flag shorthands */
    char *remote_write_url;
    char *statsd_listen;
};

/* ---- relabeling ---- */

struct metrics_relabel;

/* Compiles <n> rules (borrowed for the call: the rule set keeps its own copies). Returns 0 and a
 * new rule set in <*out>, or SC_ECONFIG with a new message in <*err> naming the rule (a bad regex,
 * a missing modulus, a target_label absent where the action needs one). */
int metrics_relabel_compile(const struct metrics_relabel_cfg *rules, size_t n,
                            struct metrics_relabel **out, char **err);

/* Frees a compiled rule set. NULL-safe. */
void metrics_relabel_free(struct metrics_relabel *r);

/* A growable label vector, __name__ included, used while a sample is relabeled. Strings are
 * views; new ones are allocated in <arena_set>'s arena. */
struct metrics_lbls {
    struct metrics_prom_label *v;
    size_t n, cap;
    struct metrics_prom_set *arena_set;
};

/* Applies the rules in order to <l>. Returns false when the sample is to be dropped. */
bool metrics_relabel_apply(const struct metrics_relabel *r, struct metrics_lbls *l);

/* Returns the value of label <name> in <l>, or an empty view with .p NULL when absent. */
struct sc_str metrics_lbls_get(const struct metrics_lbls *l, struct sc_str name);

/* Sets label <name> to <value> (both borrowed for the set's life); an empty value removes it. */
void metrics_lbls_set(struct metrics_lbls *l, struct sc_str name, struct sc_str value);

/* ---- collection ---- */

struct metrics_role;
struct metrics_conf;

/* An immutable, reference-counted result of one collection: the merged families. Readers render
 * it piece by piece (metrics_prom_render_some), so no full rendering is ever held in memory. */
struct metrics_snapshot {
    int refs;
    struct metrics_prom_set *sets; /* per source, owning the strings the output points into */
    size_t nsets;
    struct metrics_prom_set out; /* merged output */
    uint64_t done_ms;            /* loop time when it was built */
    int64_t wall_ms;             /* wall clock time when it was built, for pushed timestamps */
    struct metrics_conf *conf;   /* the configuration it was built with, whose labels it borrows */
};

/* Called when a collection has finished, with a snapshot borrowed for the call (take a reference
 * to keep it). */
typedef void (*metrics_snapshot_cb)(void *arg, struct metrics_snapshot *snap);

struct metrics_waiter {
    struct sc_list link;
    metrics_snapshot_cb cb;
    void *arg;
};

/* Asks for a snapshot no older than the cache allows; <w> (owned by the caller, stays linked
 * until the callback) is called back once, possibly before this returns when the cache is fresh. */
void metrics_collect(struct metrics_role *m, struct metrics_waiter *w, metrics_snapshot_cb cb,
                     void *arg);

/* Unlinks a waiting <w>; its callback is not called. */
void metrics_collect_cancel(struct metrics_waiter *w);

/* Starts and stops the timer that releases the cached snapshot once it is stale (started at the
 * end of the role's start, closed when its drain is over); stop also ends the scrapes still in
 * flight through net/h1client, as closing the egress client ends its own. */
void metrics_collect_start(struct metrics_role *m);
void metrics_collect_stop(struct metrics_role *m);

/* After a reload: drops the cached snapshot, and lets a running collection finish for those
 * already waiting on it without caching its result, so later requests see the new config. */
void metrics_collect_forget(struct metrics_role *m);

void metrics_snapshot_ref(struct metrics_snapshot *snap);
void metrics_snapshot_unref(struct metrics_snapshot *snap);

/* ---- the role ---- */

struct metrics_target {
    const struct metrics_target_cfg *cfg;
    const char *source; /* the source label value */
    const char *url;    /* after target relabeling (__scheme__, __address__, __metrics_path__) */
    bool dropped;       /* target relabeling dropped it: never scraped */
    struct metrics_prom_label
        *lbls; /* its target labels: the static ones after target relabeling */
    size_t nlbls;
    struct metrics_relabel *metric_relabel; /* its metric_relabel_configs, NULL when none */
    struct sc_egress_tls tls;
};

/* The effective configuration, built at start and at each reload from the loaded config: a deep
 * copy of it plus everything derived (targets, compiled rules, static labels, effective URLs).
 * It is reference counted: a collection, the snapshot it builds and a push in flight each hold the
 * one they started with, so a reload (after which the loader frees the old config) never frees
 * a string they borrow, and in-flight work finishes on the old configuration. */
struct metrics_conf {
    int refs;
    struct metrics_cfg cfg; /* owned copy */
    struct metrics_target *targets;
    size_t ntargets;
    struct metrics_target_cfg *flag_targets; /* built from --scrape */
    size_t nflag_targets;
    struct metrics_relabel *relabel; /* the global rules, NULL when none */
    struct metrics_prom_label *lbls; /* the static labels: the file's, then the flags' */
    size_t nlbls;
    const char *push_url; /* effective URLs (flag over file), into cfg */
    const char *rw_url;
    const char *statsd_addr;
    struct metrics_prom_set arena; /* the strings of lbls and of the targets' labels and URLs */
};

/* Builds a conf from <cfg> (borrowed for the call: everything is copied). Returns it with one
 * reference, or NULL with a new message in <*err> (a bad rule, a bad ${ENV} in a --label). */
struct metrics_conf *metrics_conf_new(const struct metrics_cfg *cfg, char **err);
void metrics_conf_ref(struct metrics_conf *c);
void metrics_conf_unref(struct metrics_conf *c); /* NULL-safe */

struct metrics_collection;

struct metrics_role {
    struct sc_app *app;
    uv_loop_t *loop;
    struct metrics_conf *conf;     /* the current configuration (one reference) */
    const struct metrics_cfg *cfg; /* &conf->cfg, for what reads it synchronously */
    struct sc_egress *egress;      /* created on first use: libcurl is loaded only when needed */
    struct sc_list h1_scrapes;     /* scrapes in flight through net/h1client (metrics_collect.c) */
    struct metrics_statsd *statsd;
    struct metrics_snapshot *last; /* the cached snapshot, released when the cache expires */
    uv_timer_t cache_timer;
    bool cache_timer_on;
    struct metrics_collection *running;
    struct metrics_http *http;
    struct metrics_push *push;
    struct metrics_rw *rw;
    bool stopping;
    bool finished;     /* the drain is over */
    int pending_stops; /* pushers still doing their final work */
    /* admin registry */
    struct sc_metric *m_collections;
    struct sc_metric *m_conflicts;
    struct sc_metric *m_dropped_series;
    struct sc_metric *m_requests;
};

/* The exposition server. */
struct metrics_http;

/* Starts serving <m>'s snapshots at cfg->path on cfg->listen. Returns 0 or an error with a new
 * message in <*err>. */
int metrics_http_start(struct metrics_role *m, struct metrics_http **out, char **err);

/* Writes the bound address ("ip:port") into <buf>. */
int metrics_http_address(struct metrics_http *h, char *buf, size_t len);

/* Stops listening, closes connections and frees the server once its handles have closed. */
void metrics_http_close(struct metrics_http *h);

/* Pushgateway (to m->push_url) and remote_write (to m->rw_url). start: 0 or an error in <*err>.
 * stop: pushes once more, then calls metrics_role_push_done(); with <now>, cancels at once and
 * calls it once the timers have closed. */
struct metrics_push;
struct metrics_rw;
int metrics_push_start(struct metrics_role *m, struct metrics_push **out, char **err);
void metrics_push_stop(struct metrics_push *p, bool now);
void metrics_rw_start(struct metrics_role *m, struct metrics_rw **out);
void metrics_rw_stop(struct metrics_rw *w, bool now);

/* At a reload: retire stops a pusher at once (its push in flight is cancelled) and frees it once
 * its timers have closed, without calling metrics_role_push_done(); reconfigure makes a running
 * remote_write use <conf>'s settings (its queue is kept; the request in flight finishes with the
 * old ones). NULL-safe. */
void metrics_push_retire(struct metrics_push *p);
void metrics_rw_retire(struct metrics_rw *w);
void metrics_rw_reconfigure(struct metrics_rw *w, struct metrics_conf *conf);

/* Free a pusher after metrics_role_push_done() was called for it. NULL-safe. */
void metrics_push_free(struct metrics_push *p);
void metrics_rw_free(struct metrics_rw *w);

/* The StatsD listener on conf->statsd_addr. start: 0 or an error with a new message in <*err>.
 * reconfigure: takes <conf>'s cap and buckets (histograms restart when the buckets change).
 * collect: adds every series, as Prometheus families, to <out> (strings copied into its arena).
 * close: stops receiving and frees the listener once its handle has closed. NULL-safe. */
struct metrics_statsd;
int metrics_statsd_start(struct metrics_role *m, const struct metrics_conf *conf,
                         struct metrics_statsd **out, char **err);
void metrics_statsd_reconfigure(struct metrics_statsd *s, const struct metrics_conf *conf);
void metrics_statsd_collect(struct metrics_statsd *s, struct metrics_prom_set *out);
void metrics_statsd_close(struct metrics_statsd *s);

#define METRICS_STATSD_MAX_TAGS 32

enum {
    METRICS_STATSD_COUNTER,
    METRICS_STATSD_GAUGE,
    METRICS_STATSD_HISTOGRAM,
    METRICS_STATSD_SET,
};

/* One StatsD / DogStatsD line, as views into the line. */
struct metrics_statsd_line {
    struct sc_str name;
    struct sc_str value; /* the raw value (a set's member) */
    int type;            /* METRICS_STATSD_* */
    double v;            /* the value, for all but sets */
    double rate;         /* (0, 1], from |@rate */
    double scale;        /* 0.001 for timers (ms -> s), else 1 */
    bool relative;       /* a gauge given as +n / -n */
    struct {
        struct sc_str k, v;
    } tags[METRICS_STATSD_MAX_TAGS];
    size_t ntags;
};

/* Parses one line "name:value|type[|@rate][|#k:v,...]" (borrowed; the views point into it).
 * Rejects control characters, invalid UTF-8, unknown types, non-finite or malformed values,
 * rates outside (0, 1], empty tag names and more than METRICS_STATSD_MAX_TAGS tags. Returns true
 * when the line is well-formed. */
bool metrics_statsd_parse(struct sc_str line, struct metrics_statsd_line *out);

/* Returns the role's egress client, creating it (and loading libcurl) on first use; NULL when
 * libcurl cannot be loaded (logged) or the drain is over. */
struct sc_egress *metrics_egress(struct metrics_role *m);

/* A pusher's request in flight (metrics_call.c). */
struct metrics_call;

/* Sends <req> (borrowed until the callback, as sc_egress_send borrows it) through net/h1client
 * when its URL is plain http:// without a proxy in the environment, else through the egress client
 * (libcurl, loaded then). <cb> fires once with the outcome as an sc_egress_resp (no response
 * headers), never after metrics_call_cancel. Returns 0 and the call in <*out> (set before the
 * callback can fire), or a negative error and then no callback. */
int metrics_call_send(struct metrics_role *m, const struct sc_egress_req *req, sc_egress_cb cb,
                      void *arg, struct metrics_call **out);

/* Abandons a call whose callback has not fired; it never fires. NULL-safe. */
void metrics_call_cancel(struct metrics_call *call);

/* Appends the value of an Authorization header to <out>: "Bearer <bearer>" when <bearer> is set,
 * else "Basic <base64(user:password)>" when <user> is, else nothing. Make <out> sensitive.
 * Returns 0 or SC_ETOOBIG. */
int metrics_auth_header(struct sc_buf *out, const char *bearer, const char *user,
                        const char *password);

/* Called by a pusher when its final push is over and its handles are closed. */
void metrics_role_push_done(struct metrics_role *m);

/* Appends "/<key>/<value>" to a Pushgateway URL in <b>, with <value> percent-encoded, or as
 * "/<key>@base64/<base64url>" when it is empty or holds a '/'. Returns 0 or SC_ETOOBIG. */
int metrics_push_group(struct sc_buf *b, const char *key, const char *value);

/* Encodes the samples of <out> as a remote_write WriteRequest (protobuf) into <buf>, stamping
 * samples without a timestamp with <now_ms>, followed by one MetricMetadata (type, family name,
 * HELP, UNIT) per family with samples. Returns 0 or SC_ETOOBIG. Exposed for tests. */
int metrics_rw_encode(const struct metrics_prom_set *out, int64_t now_ms, struct sc_buf *buf);

#endif

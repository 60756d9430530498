// SPDX-License-Identifier: Apache-2.0
// What the files of the config role share: its configuration and run-time state, and the calls
// between the role (config.c: options, results, writes, scheduling, start, reload, stop) and its
// sources, one file each (config_http.c, config_files.c, config_etcd.c). A source's fetch reports
// back exactly once per fetch, through config_deliver, config_not_modified or
// config_fetch_failed; everything runs on the role's one loop.
#ifndef SC_ROLES_CONFIG_CONFIG_H
#define SC_ROLES_CONFIG_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "app.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/metrics.h"
#include "core/template.h"
#include "net/dest.h"
#include "net/egress.h"
#include "net/h1client.h"

#define CONFIG_MAX_BODY (16u << 20)
#define CONFIG_MAX_DIR_KEYS 1024

struct config_source_cfg {
    char *name;
    char *url;
    char *dest;
    char *template;
    char *template_file;
    bool required;
    bool watch;
    uint64_t interval_ms;
    char *mode;
    char *owner;
    struct sc_strv validate;
    struct sc_kvv headers;
    char *bearer_token;
    char *basic_user;
    char *basic_password;
    char *ca_file;
    bool insecure_skip_verify;
    struct sc_dest_reload_cfg reload;
};

struct config_cfg {
    struct sc_vec sources;
    struct sc_strv source;
    struct sc_strv dest;
    char *template_file;
    bool once;
    uint64_t interval_ms;
    double jitter;
    int64_t retries;
    uint64_t retry_backoff_ms;
    uint64_t max_backoff_ms;
    uint64_t timeout_ms;
    char *mode;
    char *owner;
    struct sc_strv validate;
    uint64_t validate_timeout_ms;
    char *ca_file;
    struct sc_dest_reload_cfg reload;
};

enum src_kind { SRC_HTTP, SRC_FILE, SRC_DIR, SRC_ETCD };

struct config;

/* Sources replaced by a reload: freed once their handles have closed and their writes ended. */
struct config_retired {
    struct config_source *src;
    size_t nsrc;
    struct config_source_cfg *flag_cfgs;
    size_t nflag;
    int pending;
};

struct config_source {
    struct config *cf;
    struct config_retired *ret; /* set once a reload replaced this source */
    const struct config_source_cfg *cfg;
    char *name;
    enum src_kind kind;
    char *path;     /* file / dir path; etcd key */
    char *base_url; /* etcd: http(s)://host:port */
    bool prefix;    /* etcd */
    char *url;      /* http */
    struct sc_egress_tls tls;
    struct sc_template *tmpl;
    struct sc_dest_spec spec;
    uint64_t interval_ms;
    struct sc_dest_reloader
        *reloader; /* the source's own reload action, or NULL: the top-level one */
    uv_timer_t timer;
    uv_timer_t fs_timer;
    uv_fs_event_t fs_event;
    bool fs_watching;
    struct sc_egress_xfer *xfer;
    struct sc_h1cli_named *h1; /* a plain http:// fetch in flight (config_http.c) */
    struct sc_egress_xfer *watch_xfer;
    uv_timer_t watch_timer;
    struct sc_buf watch_buf;
    char *watch_body;
    int64_t etcd_revision;
    int watch_failures;
    struct sc_kv *hdrs;
    size_t nhdrs;
    char *req_body;
    char *etag;
    char *last_modified;
    uint64_t last_hash; /* watch-only sources: the content seen last */
    bool have_hash;
    bool fetching;
    bool refetch;  /* a change arrived during a fetch */
    int writes;    /* dest writes in flight */
    bool wrote_ok; /* first successful write done */
    bool gave_up;  /* --once: failed after its retries */
    bool done_once;
    int failures;
    char *last_error;
    struct sc_metric *m_ok, *m_nm, *m_err, *m_invalid, *m_last;
};

struct config {
    struct sc_app *app;
    uv_loop_t *loop;
    const struct config_cfg *cfg;
    struct sc_egress *egress; /* made by config_egress when first needed */
    struct sc_dest_reloader *reloader;
    struct config_source *src;
    size_t nsrc;
    struct config_source_cfg *flag_cfgs; /* sources from --source/--dest */
    bool stopping;
    bool stopped;
    uint64_t rng;
    struct sc_metric_family *f_fetch, *f_last;
};

/* The role's HTTP client, made on first use: file and directory sources without an HTTP reload
 * never load libcurl (and the OpenSSL it links), so such a config role idles as small as the
 * others. */
struct sc_egress *config_egress(struct config *cf);

/* ---- results (config.c), called by the sources ---- */

/* The fetched content: renders it when there is a template and writes it. <data> is the value
 * the template sees as .Data (borrowed; NULL: <body> parsed as JSON, else YAML, else a string). */
void config_deliver(struct config_source *s, const char *body, size_t len, json_t *data);

/* The source answered that nothing changed since the last fetch (304, same content). */
void config_not_modified(struct config_source *s);

/* A fetch failed with <why> (borrowed): counted, kept as the last error, and retried with
 * backoff, or, with --once past the retries, the source gives up. */
void config_fetch_failed(struct config_source *s, const char *why);

/* A fetch succeeded; <counter> is success or not_modified. */
void config_fetch_ok(struct config_source *s, struct sc_metric *counter);

/* Writes <data> (<len> bytes, borrowed) atomically to <path> with the source's mode and owner;
 * config_on_written runs when the write ends. */
void config_write_dest(struct config_source *s, const char *path, const char *data, size_t len);

/* sc_dest_write callback of a source's write (<arg> is the source): triggers the reload action
 * after a change, and finishes --once when the last write ends. */
void config_on_written(void *arg, enum sc_dest_result r);

/* Fetches <s> again in <ms> (nothing once the role is stopping). */
void config_source_schedule(struct config_source *s, uint64_t ms);

/* ---- sources ---- */

/* Fetches an http(s) source, with If-None-Match / If-Modified-Since from the last response. */
void config_http_fetch(struct config_source *s);

/* Abandons the source's plain-HTTP fetch in flight, if any: its callback never runs. */
void config_http_cancel(struct config_source *s);

/* Reads a file source. */
void config_files_fetch_file(struct config_source *s);

/* Reads a directory source (a mounted ConfigMap): one key per regular file. */
void config_files_fetch_dir(struct config_source *s);

/* Starts watching a file or directory source with inotify (changes settle before a fetch). */
void config_files_watch(struct config_source *s);

/* Reads an etcd key or prefix through the v3 JSON gateway, then keeps a watch stream open. */
void config_etcd_fetch(struct config_source *s);

#endif

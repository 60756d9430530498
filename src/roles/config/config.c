// SPDX-License-Identifier: Apache-2.0
// `sidecar config`: fetches configuration from http(s) URLs (ETag / Last-Modified, so an unchanged
// config costs a 304), files and mounted ConfigMap directories (inotify on the directory, so the
// `..data` symlink swap is seen, plus polling), and etcd keys or prefixes (v3 JSON gateway, with
// a watch stream), optionally renders it through a template, and writes it atomically to its
// destination, then runs the debounced reload action. With --once it fetches everything once
// and exits (non-zero when a required source failed after its retries). Invariants: a source
// that fails keeps the last good file; a destination is only ever replaced by rename. This file
// holds the options, what becomes of a fetch, scheduling and the role's life cycle; each source
// has its file (config_http.c, config_files.c, config_etcd.c).
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>

#include "app.h"
#include "core/alloc.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "core/template.h"
#include "net/dest.h"
#include "net/egress.h"

#include "roles/config/config.h"

static const struct sc_opt source_opts[] = {
    { .name = "name",
      .type = SC_OPT_STR,
      .offset = offsetof(struct config_source_cfg, name),
      .help = "source name in metrics and logs (default: the destination's file name)" },
    { .name = "url",
      .type = SC_OPT_STR,
      .offset = offsetof(struct config_source_cfg, url),
      .help = "http(s)://..., file:///path (a file or a ConfigMap directory), "
              "etcd://host:port/key (add ?prefix for every key under it; etcds:// for TLS)",
      .flags = SC_OPT_REQUIRED },
    { .name = "dest",
      .type = SC_OPT_STR,
      .offset = offsetof(struct config_source_cfg, dest),
      .help = "destination file (a directory for an untemplated ConfigMap directory source; "
              "unset: only watch and run the reload action on change)" },
    { .name = "template",
      .type = SC_OPT_STR,
      .offset = offsetof(struct config_source_cfg, template),
      .help = "inline template rendered over {.Data: the fetched value} (see Templates)" },
    { .name = "template_file",
      .type = SC_OPT_STR,
      .offset = offsetof(struct config_source_cfg, template_file),
      .help = "template read from this file at start" },
    { .name = "required",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct config_source_cfg, required),
      .def = "true",
      .help = "/ready and --once wait for this source's first successful write" },
    { .name = "watch",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct config_source_cfg, watch),
      .def = "true",
      .help = "watch for changes (inotify for files, the watch stream for etcd) besides polling" },
    { .name = "interval",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct config_source_cfg, interval_ms),
      .def = "0",
      .help = "poll interval (0: the top-level interval)" },
    { .name = "mode",
      .type = SC_OPT_STR,
      .offset = offsetof(struct config_source_cfg, mode),
      .help = "file mode, octal (default: the top-level mode)" },
    { .name = "owner",
      .type = SC_OPT_STR,
      .offset = offsetof(struct config_source_cfg, owner),
      .help = "file owner, user[:group] or uid[:gid] (default: the top-level owner)" },
    { .name = "validate",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct config_source_cfg, validate),
      .help = "check before the swap: [json], [yaml], or a command with {{file}}, e.g. "
              "[nginx, -t, -c, \"{{file}}\"] (default: the top-level validate)" },
    { .name = "headers",
      .type = SC_OPT_STRMAP,
      .offset = offsetof(struct config_source_cfg, headers),
      .help = "extra HTTP request headers" },
    { .name = "bearer_token",
      .type = SC_OPT_STR,
      .offset = offsetof(struct config_source_cfg, bearer_token),
      .help = "HTTP Authorization: Bearer token",
      .flags = SC_OPT_SECRET },
    { .name = "basic_user",
      .type = SC_OPT_STR,
      .offset = offsetof(struct config_source_cfg, basic_user),
      .help = "HTTP basic auth user" },
    { .name = "basic_password",
      .type = SC_OPT_STR,
      .offset = offsetof(struct config_source_cfg, basic_password),
      .help = "HTTP basic auth password",
      .flags = SC_OPT_SECRET },
    { .name = "ca_file",
      .type = SC_OPT_STR,
      .offset = offsetof(struct config_source_cfg, ca_file),
      .help = "PEM bundle to verify an https or etcds server (default: the top-level ca_file)" },
    { .name = "insecure_skip_verify",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct config_source_cfg, insecure_skip_verify),
      .help = "do not verify the server certificate" },
    { .name = "reload",
      .type = SC_OPT_INLINE,
      .offset = offsetof(struct config_source_cfg, reload),
      .sub = sc_dest_reload_item_opts },
    { 0 },
};

static const struct sc_opt config_opts[] = {
    { .name = "sources",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct config_cfg, sources),
      .help = "sources, each to its own destination",
      .sub = source_opts,
      .sub_size = sizeof(struct config_source_cfg),
      .max = 256 },
    { .name = "source",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct config_cfg, source),
      .help = "a source URL (repeatable; pairs with --dest in order)",
      .flags = SC_OPT_FLAG_ONLY },
    { .name = "dest",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct config_cfg, dest),
      .help = "the destination of the --source at the same position",
      .flags = SC_OPT_FLAG_ONLY },
    { .name = "template_file",
      .type = SC_OPT_STR,
      .offset = offsetof(struct config_cfg, template_file),
      .help = "template for the --source sources",
      .flags = SC_OPT_FLAG_ONLY },
    { .name = "once",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct config_cfg, once),
      .help = "fetch and write every source once, then exit (init containers); exit 1 when a "
              "required source failed after its retries",
      .flags = SC_OPT_FLAG },
    { .name = "interval",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct config_cfg, interval_ms),
      .def = "30s",
      .help = "poll interval of every source",
      .flags = SC_OPT_FLAG,
      .min = 10,
      .max = 86400000 },
    { .name = "jitter",
      .type = SC_OPT_DOUBLE,
      .offset = offsetof(struct config_cfg, jitter),
      .def = "0.1",
      .help = "random spread of each poll, as a fraction of the interval",
      .min = 0,
      .max = 1 },
    { .name = "retries",
      .type = SC_OPT_INT,
      .offset = offsetof(struct config_cfg, retries),
      .def = "3",
      .help = "--once: retries of a failing source before giving up",
      .flags = SC_OPT_FLAG,
      .min = 0,
      .max = 100 },
    { .name = "retry_backoff",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct config_cfg, retry_backoff_ms),
      .def = "1s",
      .help = "first retry delay after a failure; doubles up to max_backoff",
      .flags = SC_OPT_FLAG },
    { .name = "max_backoff",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct config_cfg, max_backoff_ms),
      .def = "30s",
      .help = "longest retry delay",
      .flags = SC_OPT_FLAG },
    { .name = "timeout",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct config_cfg, timeout_ms),
      .def = "10s",
      .help = "deadline of one fetch",
      .flags = SC_OPT_FLAG },
    { .name = "mode",
      .type = SC_OPT_STR,
      .offset = offsetof(struct config_cfg, mode),
      .def = "0644",
      .help = "file mode of the destinations, octal",
      .flags = SC_OPT_FLAG },
    { .name = "owner",
      .type = SC_OPT_STR,
      .offset = offsetof(struct config_cfg, owner),
      .help = "owner of the destinations, user[:group] or uid[:gid]",
      .flags = SC_OPT_FLAG },
    { .name = "validate",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct config_cfg, validate),
      .help = "check before each swap: json, yaml, or a command with {{file}}",
      .flags = SC_OPT_FLAG },
    { .name = "validate_timeout",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct config_cfg, validate_timeout_ms),
      .def = "30s",
      .help = "a validation command running longer is killed and the candidate rejected" },
    { .name = "ca_file",
      .type = SC_OPT_STR,
      .offset = offsetof(struct config_cfg, ca_file),
      .help = "PEM bundle that verifies https and etcds servers (default: the system store)",
      .flags = SC_OPT_FLAG },
    { .name = "reload",
      .type = SC_OPT_INLINE,
      .offset = offsetof(struct config_cfg, reload),
      .sub = sc_dest_reload_opts },
    { 0 },
};

static void source_fetch(struct config_source *s);

/* The source's own reload action when it names one, else the top-level one (each debounces on
 * its own, so a burst of writes gives one run of each action concerned). */
static struct sc_dest_reloader *source_reloader(const struct config_source *s)
{
    return s->reloader ? s->reloader : s->cf->reloader;
}

/* The running source that writes <dest>, or NULL. */
static struct config_source *source_by_dest(struct config *cf, const char *dest)
{
    for (size_t i = 0; dest && i < cf->nsrc; i++) {
        if (cf->src[i].cfg->dest && strcmp(cf->src[i].cfg->dest, dest) == 0) {
            return &cf->src[i];
        }
    }
    return NULL;
}

static uint64_t rnd(struct config *cf)
{
    cf->rng ^= cf->rng << 13;
    cf->rng ^= cf->rng >> 7;
    cf->rng ^= cf->rng << 17;
    return cf->rng;
}

static uint64_t fnv(const void *p, size_t n, uint64_t h)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ c[i]) * 0x100000001b3ULL;
    }
    return h;
}

/* ---- lifetime ---- */

static void sources_free(struct config_source *src, size_t n, struct config_source_cfg *fc,
                         size_t nflag)
{
    for (size_t i = 0; i < n; i++) {
        struct config_source *s = &src[i];
        sc_free(s->name);
        sc_free(s->path);
        sc_free(s->base_url);
        sc_free(s->url);
        sc_template_free(s->tmpl);
        sc_buf_cleanup(&s->watch_buf);
        sc_free(s->hdrs);
        sc_free(s->req_body);
        sc_free(s->watch_body);
        sc_free(s->etag);
        sc_free(s->last_modified);
        sc_free(s->last_error);
    }
    sc_free(src);
    for (size_t i = 0; fc && i < nflag; i++) {
        sc_config_free(source_opts, &fc[i]);
    }
    sc_free(fc);
}

static void retired_unref(struct config_retired *r)
{
    if (--r->pending == 0) {
        sources_free(r->src, r->nsrc, r->flag_cfgs, r->nflag);
        sc_free(r);
    }
}

static void on_retired_closed(uv_handle_t *h)
{
    struct config_source *s = h->data;
    retired_unref(s->ret);
}

static void on_noop_closed(uv_handle_t *h)
{
    (void)h;
}

/* Closes <h> unless it was never initialised or is closing; when retiring (<r>), its close is
 * counted in <r>. */
static void close_handle(struct config_retired *r, uv_handle_t *h)
{
    if (h->loop && !uv_is_closing(h)) {
        if (r) {
            r->pending++;
        }
        uv_close(h, r ? on_retired_closed : on_noop_closed);
    }
}

/* Stops source <s>: cancels its transfers, closes its reloader and its handles (counted in <r>
 * when retiring it; NULL at exit). */
static void source_stop(struct config_source *s, struct config_retired *r)
{
    if (s->xfer) {
        sc_egress_cancel(s->xfer);
        s->xfer = NULL;
    }
    config_http_cancel(s);
    if (s->watch_xfer) {
        sc_egress_cancel(s->watch_xfer);
        s->watch_xfer = NULL;
    }
    sc_dest_reloader_close(s->reloader);
    s->reloader = NULL;
    close_handle(r, (uv_handle_t *)&s->timer);
    close_handle(r, (uv_handle_t *)&s->fs_timer);
    close_handle(r, (uv_handle_t *)&s->watch_timer);
    if (s->fs_watching) {
        close_handle(r, (uv_handle_t *)&s->fs_event);
    }
}

/* Stops <src> for good (a reload replaced them or failed to build them): cancels transfers,
 * closes handles, and frees the sources once the last handle closed and the last write ended. */
static void retire_sources(struct config_source *src, size_t n, struct config_source_cfg *fc,
                           size_t nflag)
{
    struct config_retired *r = SC_NEW(struct config_retired);
    r->src = src;
    r->nsrc = n;
    r->flag_cfgs = fc;
    r->nflag = nflag;
    r->pending = 1;
    for (size_t i = 0; i < n; i++) {
        struct config_source *s = &src[i];
        s->ret = r;
        source_stop(s, r);
        r->pending += s->writes;
    }
    retired_unref(r);
}

/* ---- finishing ---- */

static bool all_done(struct config *cf)
{
    for (size_t i = 0; i < cf->nsrc; i++) {
        struct config_source *s = &cf->src[i];
        if (!s->done_once || s->writes > 0 || s->fetching) {
            return false;
        }
    }
    return true;
}

/* Closes everything and reports the exit code once no write is in flight. */
static void maybe_finish(struct config *cf, int code)
{
    if (cf->stopped) {
        return;
    }
    for (size_t i = 0; i < cf->nsrc; i++) {
        if (cf->src[i].writes > 0) {
            return;
        }
    }
    cf->stopped = true;
    for (size_t i = 0; i < cf->nsrc; i++) {
        source_stop(&cf->src[i], NULL);
    }
    sc_dest_reloader_close(cf->reloader);
    cf->reloader = NULL;
    sc_egress_close(cf->egress);
    cf->egress = NULL;
    sc_app_stopped(cf->app, code);
}

static void update_ready(struct config *cf)
{
    for (size_t i = 0; i < cf->nsrc; i++) {
        if (cf->src[i].cfg->required && !cf->src[i].wrote_ok) {
            return;
        }
    }
    sc_app_set_ready(cf->app, true);
}

static void once_check(struct config *cf)
{
    if (!cf->cfg->once || !all_done(cf) || cf->stopped) {
        return;
    }
    int code = 0;
    for (size_t i = 0; i < cf->nsrc; i++) {
        struct config_source *s = &cf->src[i];
        if (s->cfg->required && !s->wrote_ok) {
            sc_error("required source failed; the init step fails", SC_LS("source", s->name),
                     SC_LS("url", s->cfg->url), SC_LI("attempts", s->failures),
                     SC_LS("reason", s->last_error ? s->last_error : "validation failed"));
            code = 1;
        }
    }
    if (code == 0) {
        sc_info("all sources written", SC_LU("sources", cf->nsrc));
    }
    maybe_finish(cf, code);
}

/* ---- results ---- */

void config_fetch_failed(struct config_source *s, const char *why)
{
    struct config *cf = s->cf;
    s->fetching = false;
    sc_metrics_counter_inc(s->m_err);
    s->failures++;
    sc_free(s->last_error);
    s->last_error = sc_strdup(why);
    if (cf->stopping) {
        return;
    }
    if (cf->cfg->once && s->failures > cf->cfg->retries) {
        s->gave_up = true;
        s->done_once = true;
        once_check(cf);
        return;
    }
    uint64_t b = cf->cfg->retry_backoff_ms;
    for (int i = 1; i < s->failures && b < cf->cfg->max_backoff_ms; i++) {
        b *= 2;
    }
    if (b > cf->cfg->max_backoff_ms) {
        b = cf->cfg->max_backoff_ms;
    }
    sc_warn("source fetch failed; the last good file stays", SC_LS("source", s->name),
            SC_LS("reason", why), SC_LI("failures", s->failures), SC_LU("retry_in_ms", b));
    config_source_schedule(s, b);
}

static void next_poll(struct config_source *s)
{
    struct config *cf = s->cf;
    if (cf->stopping || cf->cfg->once) {
        return;
    }
    if (s->refetch) {
        s->refetch = false;
        config_source_schedule(s, 0);
        return;
    }
    uint64_t iv = s->interval_ms;
    uint64_t spread = (uint64_t)((double)iv * cf->cfg->jitter);
    if (spread > 0) {
        iv = iv - spread / 2 + rnd(cf) % (spread + 1);
    }
    config_source_schedule(s, iv);
}

/* A fetch succeeded; <counter> is success or not_modified. */
void config_fetch_ok(struct config_source *s, struct sc_metric *counter)
{
    s->fetching = false;
    s->failures = 0;
    sc_metrics_counter_inc(counter);
    sc_metrics_gauge_set(s->m_last, (double)time(NULL));
}

void config_on_written(void *arg, enum sc_dest_result r)
{
    struct config_source *s = arg;
    struct config *cf = s->cf;
    s->writes--;
    if (s->ret) {
        /* A reload replaced the source during this write: the app is still owed a reload, by
         * the action of whatever writes that file now. */
        if (r == SC_DEST_WRITTEN && !cf->stopping && !cf->cfg->once) {
            struct config_source *now = source_by_dest(cf, s->cfg->dest);
            sc_dest_reloader_trigger(now ? source_reloader(now) : cf->reloader);
        }
        retired_unref(s->ret);
        return;
    }
    if (r == SC_DEST_WRITTEN && !cf->cfg->once) {
        sc_dest_reloader_trigger(source_reloader(s));
    }
    if (r == SC_DEST_FAILED) {
        /* The destination does not hold what the validators describe: fetch in full again. */
        sc_free(s->etag);
        sc_free(s->last_modified);
        s->etag = NULL;
        s->last_modified = NULL;
    }
    if (r == SC_DEST_INVALID) {
        sc_metrics_counter_inc(s->m_invalid);
        sc_free(s->last_error);
        s->last_error = sc_strdup("validation failed");
    }
    if (s->writes == 0) {
        if (r >= 0 && !s->gave_up) {
            s->wrote_ok = true;
        }
        if (r == SC_DEST_FAILED && !cf->stopping) {
            config_fetch_failed(s, "cannot write the destination");
            if (!cf->cfg->once) {
                return;
            }
        }
        s->done_once = s->done_once || r != SC_DEST_FAILED || s->gave_up;
        if (r == SC_DEST_INVALID && cf->cfg->once) {
            s->done_once = true;
        }
        update_ready(cf);
        if (cf->stopping) {
            maybe_finish(cf, 0);
            return;
        }
        once_check(cf);
        if (r != SC_DEST_FAILED) {
            next_poll(s);
        }
    }
}

void config_write_dest(struct config_source *s, const char *path, const char *data, size_t len)
{
    struct sc_dest_spec spec = s->spec;
    spec.path = path;
    s->writes++;
    sc_dest_write(s->cf->loop, &spec, data, len, config_on_written, s);
}

/* The fetched content: renders it when there is a template and writes it. <data> is the value
 * the template sees as .Data (borrowed; NULL: <body> parsed as JSON, else YAML, else a string). */
void config_deliver(struct config_source *s, const char *body, size_t len, json_t *data)
{
    config_fetch_ok(s, s->m_ok);
    if (!s->spec.path) {
        /* Watch-only: a change of content triggers the reload. */
        uint64_t h = fnv(body, len, 0xcbf29ce484222325ULL);
        if (s->have_hash && h != s->last_hash && !s->cf->cfg->once) {
            sc_info("source changed", SC_LS("source", s->name));
            sc_dest_reloader_trigger(source_reloader(s));
        }
        s->have_hash = true;
        s->last_hash = h;
        s->wrote_ok = true;
        s->done_once = true;
        update_ready(s->cf);
        once_check(s->cf);
        next_poll(s);
        return;
    }
    if (!s->tmpl) {
        config_write_dest(s, s->spec.path, body, len);
        return;
    }
    json_t *own = NULL;
    if (!data) {
        own = sc_template_data_parse(body, len);
        data = own;
    }
    json_t *root = json_object();
    json_object_set(root, "Data", data);
    json_object_set_new(root, "Source", json_string(s->name));
    struct sc_buf out;
    sc_buf_init(&out, CONFIG_MAX_BODY);
    char *err = NULL;
    int rc = sc_template_render(s->tmpl, root, NULL, NULL, &out, &err);
    json_decref(root);
    if (own) {
        json_decref(own);
    }
    if (rc < 0) {
        sc_error("template failed; the last good file stays", SC_LS("source", s->name),
                 SC_LS("reason", err));
        sc_metrics_counter_inc(s->m_invalid);
        sc_free(s->last_error);
        s->last_error = err;
        if (s->cf->cfg->once) {
            s->done_once = true;
            once_check(s->cf);
        } else {
            next_poll(s);
        }
    } else {
        config_write_dest(s, s->spec.path, out.p ? out.p : "", out.len);
    }
    sc_buf_cleanup(&out);
}

void config_not_modified(struct config_source *s)
{
    config_fetch_ok(s, s->m_nm);
    s->done_once = true;
    update_ready(s->cf);
    once_check(s->cf);
    next_poll(s);
}

/* ---- scheduling ---- */

static void on_timer(uv_timer_t *t)
{
    struct config_source *s = t->data;
    if (s->cf->stopping) {
        return;
    }
    source_fetch(s);
}

void config_source_schedule(struct config_source *s, uint64_t ms)
{
    if (s->cf->stopping) {
        return;
    }
    uv_timer_start(&s->timer, on_timer, ms, 0);
}

static void source_fetch(struct config_source *s)
{
    if (s->fetching || s->writes > 0) {
        s->refetch = true;
        return;
    }
    s->fetching = true;
    switch (s->kind) {
    case SRC_HTTP:
        config_http_fetch(s);
        break;
    case SRC_FILE:
        config_files_fetch_file(s);
        break;
    case SRC_DIR:
        config_files_fetch_dir(s);
        break;
    case SRC_ETCD:
        config_etcd_fetch(s);
        break;
    }
}

/* ---- setup ---- */

static int parse_url(struct config_source *s, const char *url, char **err)
{
    if (strncmp(url, "http://", 7) == 0 || strncmp(url, "https://", 8) == 0) {
        s->kind = SRC_HTTP;
        s->url = sc_strdup(url);
        return 0;
    }
    if (strncmp(url, "file://", 7) == 0) {
        s->path = sc_strdup(url + 7);
        struct stat st;
        s->kind = stat(s->path, &st) == 0 && S_ISDIR(st.st_mode) ? SRC_DIR : SRC_FILE;
        if (s->path[0] != '/') {
            *err = sc_asprintf("source %s: file:// URLs need an absolute path", url);
            return SC_ECONFIG;
        }
        return 0;
    }
    bool tls = strncmp(url, "etcds://", 8) == 0;
    if (tls || strncmp(url, "etcd://", 7) == 0) {
        const char *hp = url + (tls ? 8 : 7);
        const char *slash = strchr(hp, '/');
        if (!slash || slash == hp) {
            *err = sc_asprintf("source %s: want etcd://host:port/key", url);
            return SC_ECONFIG;
        }
        s->kind = SRC_ETCD;
        s->base_url = sc_asprintf("%s://%.*s", tls ? "https" : "http", (int)(slash - hp), hp);
        const char *q = strchr(slash, '?');
        s->path = q ? sc_strndup(slash, (size_t)(q - slash)) : sc_strdup(slash);
        if (q) {
            if (strcmp(q, "?prefix") == 0 || strcmp(q, "?prefix=true") == 0) {
                s->prefix = true;
            } else {
                *err = sc_asprintf("source %s: unknown query (only ?prefix)", url);
                return SC_ECONFIG;
            }
        }
        return 0;
    }
    *err = sc_asprintf("source %s: unsupported scheme (http, https, file, etcd, etcds)", url);
    return SC_ECONFIG;
}

static int load_template(const char *name, const char *inline_text, const char *file,
                         struct sc_template **out, char **err)
{
    if (inline_text) {
        *out = sc_template_parse(name, inline_text, strlen(inline_text), NULL, err);
        return *out ? 0 : SC_ECONFIG;
    }
    if (!file) {
        return 0;
    }
    struct sc_buf b;
    sc_buf_init(&b, 1u << 20);
    int rc = sc_file_read(file, &b);
    if (rc < 0) {
        sc_buf_cleanup(&b);
        *err = sc_asprintf("%s: cannot read the template: %s", file, sc_strerror(rc));
        return SC_ECONFIG;
    }
    *out = sc_template_parse(file, b.p ? b.p : "", b.len, NULL, err);
    sc_buf_cleanup(&b);
    return *out ? 0 : SC_ECONFIG;
}

struct sc_egress *config_egress(struct config *cf)
{
    if (!cf->egress) {
        cf->egress = sc_egress_new(cf->loop);
    }
    return cf->egress;
}

/* The client a reload action needs: only an HTTP reload (a url) uses one. */
static struct sc_egress *reload_egress(struct config *cf, const struct sc_dest_reload_cfg *r)
{
    return r->url ? config_egress(cf) : NULL;
}

static int source_init(struct config *cf, struct config_source *s,
                       const struct config_source_cfg *c, size_t idx, char **err)
{
    s->cf = cf;
    s->cfg = c;
    const char *base = c->dest ? strrchr(c->dest, '/') : NULL;
    s->name = c->name   ? sc_strdup(c->name)
              : c->dest ? sc_strdup(base ? base + 1 : c->dest)
                        : sc_asprintf("source%zu", idx);
    sc_buf_init(&s->watch_buf, 4u << 20);
    int rc = parse_url(s, c->url, err);
    if (rc < 0) {
        return rc;
    }
    char *tname = sc_asprintf("%s.template", s->name);
    rc = load_template(tname, c->template,
                       c->template_file
                           ? c->template_file
                           : (idx >= cf->cfg->sources.n ? cf->cfg->template_file : NULL),
                       &s->tmpl, err);
    sc_free(tname);
    if (rc < 0) {
        return rc;
    }
    const char *mode = c->mode ? c->mode : cf->cfg->mode;
    if (sc_file_parse_mode(mode ? mode : "0644", &s->spec.mode) < 0) {
        *err = sc_asprintf("source %s: mode \"%s\" is not an octal file mode", s->name, mode);
        return SC_ECONFIG;
    }
    const char *owner = c->owner ? c->owner : cf->cfg->owner;
    if (sc_file_parse_owner(owner, &s->spec.uid, &s->spec.gid) < 0) {
        *err = sc_asprintf("source %s: unknown owner \"%s\"", s->name, owner);
        return SC_ECONFIG;
    }
    s->spec.path = c->dest;
    s->spec.validate = c->validate.n ? &c->validate : &cf->cfg->validate;
    s->spec.validate_timeout_ms = cf->cfg->validate_timeout_ms;
    s->interval_ms = c->interval_ms ? c->interval_ms : cf->cfg->interval_ms;
    s->tls.ca_file = c->ca_file ? c->ca_file : cf->cfg->ca_file;
    s->tls.insecure_skip_verify = c->insecure_skip_verify;

    const char *lv[3] = { s->name, "success", NULL };
    s->m_ok = sc_metrics_get(cf->f_fetch, lv);
    lv[1] = "not_modified";
    s->m_nm = sc_metrics_get(cf->f_fetch, lv);
    lv[1] = "error";
    s->m_err = sc_metrics_get(cf->f_fetch, lv);
    lv[1] = "invalid";
    s->m_invalid = sc_metrics_get(cf->f_fetch, lv);
    s->m_last = sc_metrics_get(cf->f_last, (const char *[]){ s->name });

    s->reloader = sc_dest_reloader_new(cf->loop, reload_egress(cf, &c->reload), &c->reload,
                                       sc_app_metrics(cf->app), "sidecar_config_reload_total");
    uv_timer_init(cf->loop, &s->timer);
    s->timer.data = s;
    uv_timer_init(cf->loop, &s->fs_timer);
    s->fs_timer.data = s;
    uv_timer_init(cf->loop, &s->watch_timer);
    s->watch_timer.data = s;
    return 0;
}

static int config_check(const void *vcfg, char **err)
{
    const struct config_cfg *c = vcfg;
    if (c->source.n != c->dest.n && c->dest.n != 0) {
        *err = sc_asprintf("--source and --dest come in pairs: %zu sources, %zu destinations",
                           c->source.n, c->dest.n);
        return SC_ECONFIG;
    }
    if (c->sources.n + c->source.n == 0) {
        *err = sc_strdup("no sources: give sources: in the config or --source URL --dest FILE");
        return SC_ECONFIG;
    }
    const struct config_source_cfg *srcs = c->sources.v;
    for (size_t i = 0; i < c->sources.n; i++) {
        if (srcs[i].template && srcs[i].template_file) {
            *err = sc_asprintf("sources[%zu]: template and template_file are exclusive", i);
            return SC_ECONFIG;
        }
        if (srcs[i].template) {
            struct sc_template *t = sc_template_parse("template", srcs[i].template,
                                                      strlen(srcs[i].template), NULL, err);
            if (!t) {
                char *m = sc_asprintf("sources[%zu].%s", i, *err);
                sc_free(*err);
                *err = m;
                return SC_ECONFIG;
            }
            sc_template_free(t);
        }
        if (sc_dest_reload_check(&srcs[i].reload, err) < 0) {
            char *m = sc_asprintf("sources[%zu]: %s", i, *err);
            sc_free(*err);
            *err = m;
            return SC_ECONFIG;
        }
    }
    return sc_dest_reload_check(&c->reload, err);
}

static void config_free(struct config *cf)
{
    sources_free(cf->src, cf->nsrc, cf->flag_cfgs, cf->cfg->source.n);
    sc_free(cf);
}

static void config_cleanup(void *state)
{
    config_free(state);
}

/* Builds cf->src from <c> (cf->cfg must be <c>). On error cf->src holds what was built. */
static int build_sources(struct config *cf, const struct config_cfg *c, char **err)
{
    cf->nsrc = c->sources.n + c->source.n;
    cf->src = sc_calloc(cf->nsrc ? cf->nsrc : 1, sizeof(struct config_source));
    cf->flag_cfgs = c->source.n ? sc_calloc(c->source.n, sizeof(struct config_source_cfg)) : NULL;
    const struct config_source_cfg *srcs = c->sources.v;
    int rc = 0;
    size_t i = 0;
    for (; i < c->sources.n && rc == 0; i++) {
        rc = source_init(cf, &cf->src[i], &srcs[i], i, err);
    }
    for (size_t k = 0; k < c->source.n && rc == 0; k++, i++) {
        struct config_source_cfg *fc = &cf->flag_cfgs[k];
        sc_config_defaults(source_opts, fc);
        fc->url = sc_strdup(c->source.v[k]);
        fc->dest = c->dest.n > k ? sc_strdup(c->dest.v[k]) : NULL;
        rc = source_init(cf, &cf->src[i], fc, i, err);
    }
    return rc;
}

static void start_sources(struct config *cf)
{
    for (size_t i = 0; i < cf->nsrc; i++) {
        struct config_source *s = &cf->src[i];
        if ((s->kind == SRC_FILE || s->kind == SRC_DIR) && s->cfg->watch && !cf->cfg->once) {
            config_files_watch(s);
        }
        sc_info("source", SC_LS("name", s->name), SC_LS("url", s->cfg->url),
                SC_LS("dest", s->cfg->dest));
        config_source_schedule(s, 0);
    }
}

static int config_start(struct sc_app *app, const void *vcfg, void **state, char **err)
{
    const struct config_cfg *c = vcfg;
    struct config *cf = SC_NEW(struct config);
    cf->app = app;
    cf->loop = sc_app_loop(app);
    cf->cfg = c;
    cf->rng = uv_hrtime() | 1;
    struct sc_metrics *m = sc_app_metrics(app);
    static const char *const fetch_labels[] = { "source", "result", NULL };
    static const char *const src_labels[] = { "source", NULL };
    cf->f_fetch = sc_metrics_family(m, SC_METRIC_COUNTER, "sidecar_config_fetch_total",
                                    "Source fetches by result: success, not_modified (HTTP 304), "
                                    "error, invalid (template or validation rejected it).",
                                    fetch_labels, NULL, 0);
    cf->f_last =
        sc_metrics_family(m, SC_METRIC_GAUGE, "sidecar_config_last_success_timestamp_seconds",
                          "Unix time of the source's last successful fetch.", src_labels, NULL, 0);
    cf->reloader = sc_dest_reloader_new(cf->loop, reload_egress(cf, &c->reload), &c->reload, m,
                                        "sidecar_config_reload_total");
    int rc = build_sources(cf, c, err);
    if (rc < 0) {
        /* Close what was initialised; the state is freed by cleanup once the loop has run. */
        cf->stopping = true;
        for (size_t k = 0; k < cf->nsrc; k++) {
            source_stop(&cf->src[k], NULL);
        }
        sc_dest_reloader_close(cf->reloader);
        sc_egress_close(cf->egress);
        cf->reloader = NULL;
        cf->egress = NULL;
        *state = cf;
        return rc;
    }
    start_sources(cf);
    *state = cf;
    return 0;
}

/* SIGHUP / POST /reload: builds the new sources first (the old ones keep running when that
 * fails), then retires the old ones (their writes in flight finish) and starts the new ones. */
static int config_reload(struct sc_app *app, void *state, const void *vcfg, char **err)
{
    struct config *cf = state;
    const struct config_cfg *c = vcfg;
    if (cf->stopping || cf->cfg->once || c->once) {
        *err = sc_strdup("cannot reload while stopping or in --once mode");
        return SC_EUNSUPPORTED;
    }
    struct config_source *old = cf->src;
    size_t nold = cf->nsrc;
    struct config_source_cfg *oldfc = cf->flag_cfgs;
    const struct config_cfg *oldcfg = cf->cfg;
    cf->cfg = c;
    int rc = build_sources(cf, c, err);
    if (rc < 0) {
        retire_sources(cf->src, cf->nsrc, cf->flag_cfgs, c->source.n);
        cf->src = old;
        cf->nsrc = nold;
        cf->flag_cfgs = oldfc;
        cf->cfg = oldcfg;
        return rc;
    }
    /* A reload action waiting for its debounce (or running) is owed to the app: the new action
     * for the same file runs instead. */
    bool top_owed = sc_dest_reloader_busy(cf->reloader);
    bool *owed = sc_calloc(cf->nsrc ? cf->nsrc : 1, sizeof(bool));
    for (size_t i = 0; i < cf->nsrc; i++) {
        for (size_t k = 0; k < nold && cf->src[i].cfg->dest; k++) {
            if (old[k].cfg->dest && strcmp(old[k].cfg->dest, cf->src[i].cfg->dest) == 0 &&
                sc_dest_reloader_busy(source_reloader(&old[k]))) {
                owed[i] = true;
            }
        }
    }
    retire_sources(old, nold, oldfc, oldcfg->source.n);
    sc_dest_reloader_close(cf->reloader);
    cf->reloader = sc_dest_reloader_new(cf->loop, reload_egress(cf, &c->reload), &c->reload,
                                        sc_app_metrics(app), "sidecar_config_reload_total");
    if (top_owed) {
        sc_dest_reloader_trigger(cf->reloader);
    }
    for (size_t i = 0; i < cf->nsrc; i++) {
        if (owed[i]) {
            sc_dest_reloader_trigger(source_reloader(&cf->src[i]));
        }
    }
    sc_free(owed);
    start_sources(cf);
    return 0;
}

static void config_stop(struct sc_app *app, void *state, bool now)
{
    struct config *cf = state;
    (void)app;
    cf->stopping = true;
    for (size_t i = 0; i < cf->nsrc; i++) {
        uv_timer_stop(&cf->src[i].timer);
    }
    if (now) {
        for (size_t i = 0; i < cf->nsrc; i++) {
            cf->src[i].writes = 0;
        }
    }
    maybe_finish(cf, 0);
}

static const char config_usage[] =
    "Fetches configuration (http(s) with ETag, files and ConfigMap directories, etcd keys and\n"
    "prefixes), renders an optional template, writes each destination atomically and reloads\n"
    "the app. Example:\n"
    "  sidecar config --source http://config-service/config/my-app --dest /config/app.json \\\n"
    "      --reload-url http://127.0.0.1:8080/reload --interval 60s\n";

const struct sc_role sc_role_config = {
    .name = "config",
    .summary = "fetch config (http, file, ConfigMap dir, etcd), render, write atomically, reload",
    .usage = config_usage,
    .opts = config_opts,
    .cfg_size = sizeof(struct config_cfg),
    .admin_default = "127.0.0.1:15022",
    .check = config_check,
    .start = config_start,
    .stop = config_stop,
    .reload = config_reload,
    .cleanup = config_cleanup,
};

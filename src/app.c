// SPDX-License-Identifier: Apache-2.0
// The role runtime (see app.h). The effective configuration is one block: the common options
// (admin address, logging, drain timeout) followed by the role's struct, described by a two-entry
// table that inlines both option tables, so one loader, one dump and one help cover them.
// A reload builds a complete new block from the same file and flags and swaps it in only when the
// role accepts it; on any error the old block keeps running.
#include "app.h"

#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/signals.h"
#include "net/addr.h"
#include "version.h"

struct sc_common {
    char *admin;
    int log_format;
    int log_level;
    uint64_t drain_timeout_ms;
};

/* The role's struct starts at a fixed, generously aligned offset after the common options. */
#define ROLE_OFF ((sizeof(struct sc_common) + 63) & ~(size_t)63)

static const char *const log_formats[] = { "text", "json", NULL };
static const char *const log_levels[] = { "debug", "info", "warn", "error", "off", NULL };

static const struct sc_opt common_opts[] = {
    { .name = "admin",
      .type = SC_OPT_STR,
      .offset = offsetof(struct sc_common, admin),
      .help = "admin server address: /healthz, /ready, /metrics, /config, POST /quitquitquit, "
              "POST /reload",
      .flags = SC_OPT_FLAG | SC_OPT_RESTART,
      .check = sc_addr_check },
    { .name = "log_format",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct sc_common, log_format),
      .def = "text",
      .help = "log line format on stderr",
      .flags = SC_OPT_FLAG,
      .enums = log_formats },
    { .name = "log_level",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct sc_common, log_level),
      .def = "info",
      .help = "lowest level logged",
      .flags = SC_OPT_FLAG,
      .enums = log_levels },
    { .name = "drain_timeout",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct sc_common, drain_timeout_ms),
      .def = "25s",
      .help = "how long a graceful drain may take before remaining work is cut off",
      .flags = SC_OPT_FLAG },
    { 0 },
};

struct flag {
    char *name;
    char *value; /* NULL for a boolean given without a value */
};

struct sc_app {
    const struct sc_role *role;
    uv_loop_t loop;
    struct sc_opt common_tab[SC_ARRAY_LEN(common_opts)];
    struct sc_opt top[3];
    void *cfg;                 /* common + role block */
    char *config_path;         /* the -c arguments as messages name them, joined by "," */
    const char **config_paths; /* each -c argument, in order */
    size_t nconfig;
    struct flag *flags;
    size_t nflags;
    struct sc_strv notes; /* what the last load_file translation could not use (logged) */
    char *derived;        /* the native configuration it derived (--print) */

    struct sc_metrics *metrics;
    struct sc_metric *reloads_ok;
    struct sc_metric *reloads_failed;
    struct sc_admin *admin;
    struct sc_signals signals;
    uv_timer_t drain_timer;
    void *state;
    bool started;
    bool ready;
    bool draining;
    bool stopped;
    int exit_code;
};

static struct sc_common *common_of(void *blob)
{
    return blob;
}

static void *role_cfg_of(void *blob)
{
    return (char *)blob + ROLE_OFF;
}

static void build_tables(struct sc_app *app)
{
    memcpy(app->common_tab, common_opts, sizeof(common_opts));
    /* Entries 0 and 3 of common_opts are admin and drain_timeout. */
    app->common_tab[0].def = app->role->admin_default;
    if (app->role->drain_default) {
        app->common_tab[3].def = app->role->drain_default;
    }
    app->top[0] = (struct sc_opt){ .type = SC_OPT_INLINE, .offset = 0, .sub = app->common_tab };
    app->top[1] =
        (struct sc_opt){ .type = SC_OPT_INLINE, .offset = ROLE_OFF, .sub = app->role->opts };
    app->top[2] = (struct sc_opt){ 0 };
}

/* Builds a configuration block: defaults, then the file, then the flags, then the checks.
 * Returns the block, or NULL with a new message in <*err>. */
static void *load_config(struct sc_app *app, char **err)
{
    void *blob = sc_calloc(1, ROLE_OFF + app->role->cfg_size);
    sc_config_defaults(app->top, blob);
    const char *name = app->config_path ? app->config_path : "flags";
    if (app->config_path && app->role->load_file) {
        for (size_t i = 0; i < app->notes.n; i++) {
            sc_free(app->notes.v[i]);
        }
        app->notes.n = 0;
        sc_free(app->derived);
        app->derived = NULL;
        if (app->role->load_file(app->top, blob, app->config_paths, app->nconfig, &app->notes,
                                 &app->derived, err) < 0) {
            goto fail;
        }
    } else if (app->config_path &&
               sc_config_load_file(app->top, blob, app->config_paths[0], err) < 0) {
        goto fail;
    }
    for (size_t i = 0; i < app->nflags; i++) {
        if (sc_config_set_flag(app->top, blob, app->flags[i].name, app->flags[i].value, err) < 0) {
            goto fail;
        }
    }
    if (sc_config_check_required(app->top, blob, name, err) < 0) {
        goto fail;
    }
    if (app->role->check && app->role->check(role_cfg_of(blob), err) < 0) {
        goto fail;
    }
    return blob;
fail:
    sc_config_free(app->top, blob);
    sc_free(blob);
    return NULL;
}

static void free_config(struct sc_app *app, void *blob)
{
    if (blob) {
        sc_config_free(app->top, blob);
        sc_free(blob);
    }
}

static void print_help(struct sc_app *app, FILE *out)
{
    const struct sc_role *r = app->role;
    fprintf(out, "Usage: sidecar %s [-c FILE] [--check] [options]\n\n%s\n", r->name, r->summary);
    if (r->usage) {
        fprintf(out, "\n%s\n", r->usage);
    }
    fprintf(out, "\nCommon options:\n"
                 "  -c, --config FILE      YAML config file; flags given too override its values\n"
                 "                         (the proxy joins several -c files and directories)\n"
                 "      --check            validate the configuration and exit (0 valid, 1 not)\n"
                 "      --print            with --check, print the configuration derived from a "
                 "translated file\n"
                 "  -h, --help             show this help\n\n");
    sc_config_help(app->top, out);
}

void sc_app_doc(const struct sc_role *role, FILE *out)
{
    struct sc_app *app = SC_NEW(struct sc_app);
    app->role = role;
    build_tables(app);
    sc_config_doc(app->top, out);
    sc_free(app);
}

/* Returns the <n>th option (0-based) marked SC_OPT_POSITIONAL in the app's tables, or NULL. */
static const struct sc_opt *positional(const struct sc_app *app, size_t n)
{
    for (const struct sc_opt *t = app->top; t->type != SC_OPT_END; t++) {
        for (const struct sc_opt *o = t->sub; o && o->type != SC_OPT_END; o++) {
            if ((o->flags & SC_OPT_POSITIONAL) && n-- == 0) {
                return o;
            }
        }
    }
    return NULL;
}

/* Records one -c argument (borrowed from argv). */
static void add_config(struct sc_app *app, const char *path)
{
    app->config_paths = sc_reallocarray(app->config_paths, app->nconfig + 1, sizeof(char *));
    app->config_paths[app->nconfig++] = path;
    char *name = app->config_path ? sc_asprintf("%s,%s", app->config_path, path) : sc_strdup(path);
    sc_free(app->config_path);
    app->config_path = name;
}

/* Collects the flags; bare words set the positional options in order. Returns -1 to continue, or
 * an exit code. */
static int parse_args(struct sc_app *app, int argc, char **argv, bool *check, bool *print)
{
    size_t npos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            print_help(app, stdout);
            return 0;
        }
        if (strcmp(a, "--check") == 0) {
            *check = true;
            continue;
        }
        if (strcmp(a, "--print") == 0) {
            *print = true;
            continue;
        }
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "sidecar %s: %s needs a file name\n", app->role->name, a);
                return 2;
            }
            add_config(app, argv[++i]);
            continue;
        }
        if (strncmp(a, "--config=", 9) == 0) {
            add_config(app, a + 9);
            continue;
        }
        const struct sc_opt *pos = a[0] != '-' ? positional(app, npos) : NULL;
        if (pos) {
            npos++;
            app->flags = sc_reallocarray(app->flags, app->nflags + 1, sizeof(*app->flags));
            app->flags[app->nflags++] = (struct flag){ sc_strdup(pos->name), sc_strdup(a) };
            continue;
        }
        /* A one-letter alias (-f FILE) stands for its option's flag. */
        const struct sc_opt *alias = a[0] == '-' && a[1] && a[1] != '-' && !a[2]
                                         ? sc_config_find_flag(app->top, a + 1)
                                         : NULL;
        if (alias && alias->flag_alias) {
            if (alias->type != SC_OPT_BOOL && i + 1 >= argc) {
                fprintf(stderr, "sidecar %s: %s needs a value\n", app->role->name, a);
                return 2;
            }
            app->flags = sc_reallocarray(app->flags, app->nflags + 1, sizeof(*app->flags));
            app->flags[app->nflags++] =
                (struct flag){ sc_strdup(alias->name),
                               alias->type == SC_OPT_BOOL ? NULL : sc_strdup(argv[++i]) };
            continue;
        }
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            fprintf(stderr, "sidecar %s: unexpected argument \"%s\" (see sidecar %s --help)\n",
                    app->role->name, a, app->role->name);
            return 2;
        }
        const char *eq = strchr(a + 2, '=');
        char *name = eq ? sc_strndup(a + 2, (size_t)(eq - a - 2)) : sc_strdup(a + 2);
        const struct sc_opt *opt = sc_config_find_flag(app->top, name);
        if (!opt) {
            char *err = NULL;
            sc_config_set_flag(app->top, NULL, name, NULL, &err);
            fprintf(stderr, "sidecar %s: %s\n", app->role->name, err ? err : "unknown option");
            sc_free(err);
            sc_free(name);
            return 2;
        }
        const char *value = eq ? eq + 1 : NULL;
        if (!eq && opt->type != SC_OPT_BOOL) {
            if (i + 1 >= argc) {
                fprintf(stderr, "sidecar %s: --%s needs a value\n", app->role->name, name);
                sc_free(name);
                return 2;
            }
            value = argv[++i];
        }
        app->flags = sc_reallocarray(app->flags, app->nflags + 1, sizeof(*app->flags));
        app->flags[app->nflags++] = (struct flag){ name, sc_strdup(value) };
    }
    if (app->nconfig > 1 && !app->role->load_file) {
        fprintf(stderr, "sidecar %s: one -c file only (the proxy joins several)\n",
                app->role->name);
        return 2;
    }
    return -1;
}

uv_loop_t *sc_app_loop(struct sc_app *app)
{
    return &app->loop;
}

struct sc_metrics *sc_app_metrics(struct sc_app *app)
{
    return app->metrics;
}

struct sc_admin *sc_app_admin(struct sc_app *app)
{
    return app->admin;
}

void sc_app_set_ready(struct sc_app *app, bool ready)
{
    if (ready != app->ready) {
        sc_info(ready ? "ready" : "not ready");
    }
    app->ready = ready;
}

bool sc_app_draining(const struct sc_app *app)
{
    return app->draining;
}

static void on_closed_noop(uv_handle_t *h)
{
    (void)h;
}

void sc_app_stopped(struct sc_app *app, int code)
{
    if (app->stopped) {
        return;
    }
    app->stopped = true;
    app->exit_code = code;
    sc_info("stopped", SC_LI("exit_code", code));
    if (!uv_is_closing((uv_handle_t *)&app->drain_timer)) {
        uv_close((uv_handle_t *)&app->drain_timer, on_closed_noop);
    }
    sc_signals_close(&app->signals);
    sc_admin_close(app->admin);
    app->admin = NULL;
}

static void on_drain_timeout(uv_timer_t *t)
{
    struct sc_app *app = t->data;
    sc_warn("drain timed out: closing what is left",
            SC_LU("drain_timeout_ms", common_of(app->cfg)->drain_timeout_ms));
    if (app->role->stop && app->started) {
        app->role->stop(app, app->state, true);
    } else {
        sc_app_stopped(app, 0);
    }
}

void sc_app_drain(struct sc_app *app)
{
    if (app->draining) {
        return;
    }
    app->draining = true;
    sc_info("draining", SC_LU("timeout_ms", common_of(app->cfg)->drain_timeout_ms));
    uv_timer_start(&app->drain_timer, on_drain_timeout, common_of(app->cfg)->drain_timeout_ms, 0);
    if (app->role->stop && app->started) {
        app->role->stop(app, app->state, false);
    } else {
        sc_app_stopped(app, 0);
    }
}

static void on_stop_signal(void *arg, bool now)
{
    struct sc_app *app = arg;
    if (!app->draining) {
        sc_app_drain(app);
    } else if (now && !app->stopped) {
        on_drain_timeout(&app->drain_timer);
    }
}

/* Reloads the config file and flags. Returns 0 or an error with a new message in <*err>. */
static int reload(struct sc_app *app, char **err)
{
    if (!app->role->reload) {
        *err = sc_asprintf("the %s role does not reload its configuration; restart it instead",
                           app->role->name);
        sc_metrics_counter_inc(app->reloads_failed);
        return SC_EUNSUPPORTED;
    }
    void *blob = load_config(app, err);
    if (!blob) {
        sc_metrics_counter_inc(app->reloads_failed);
        return SC_ECONFIG;
    }
    /* What may not change at a reload is in the option tables (SC_OPT_RESTART). */
    int rc = sc_config_check_reload(common_opts, app->cfg, blob, err);
    if (rc == 0) {
        rc = sc_config_check_reload(app->role->opts, role_cfg_of(app->cfg), role_cfg_of(blob), err);
    }
    if (rc == 0) {
        rc = app->role->reload(app, app->state, role_cfg_of(blob), err);
    }
    if (rc < 0) {
        free_config(app, blob);
        sc_metrics_counter_inc(app->reloads_failed);
        return rc;
    }
    struct sc_common *newc = common_of(blob);
    sc_log_setup((enum sc_log_level)newc->log_level, (enum sc_log_format)newc->log_format,
                 app->role->name);
    free_config(app, app->cfg);
    app->cfg = blob;
    sc_metrics_counter_inc(app->reloads_ok);
    sc_info("configuration reloaded");
    return 0;
}

static void on_reload_signal(void *arg)
{
    struct sc_app *app = arg;
    char *err = NULL;
    if (reload(app, &err) < 0) {
        sc_error("reload rejected; the previous configuration keeps running", SC_LS("reason", err));
    }
    sc_free(err);
}

static void h_healthz(void *arg, const struct sc_admin_req *req, struct sc_admin_resp *resp)
{
    (void)arg;
    (void)req;
    sc_buf_append_cstr(&resp->body, "ok\n");
}

static void h_ready(void *arg, const struct sc_admin_req *req, struct sc_admin_resp *resp)
{
    struct sc_app *app = arg;
    (void)req;
    if (app->draining) {
        resp->status = 503;
        sc_buf_append_cstr(&resp->body, "draining\n");
    } else if (!app->ready) {
        resp->status = 503;
        sc_buf_append_cstr(&resp->body, "not ready\n");
    } else {
        sc_buf_append_cstr(&resp->body, "ready\n");
    }
}

void sc_app_serve_health(struct sc_app *app, struct sc_admin *a)
{
    sc_admin_handle(a, "GET", "/healthz", h_healthz, app);
    sc_admin_handle(a, "GET", "/ready", h_ready, app);
}

static void h_metrics(void *arg, const struct sc_admin_req *req, struct sc_admin_resp *resp)
{
    struct sc_app *app = arg;
    (void)req;
    resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
    if (sc_metrics_render(app->metrics, &resp->body) < 0) {
        resp->status = 500;
        sc_buf_reset(&resp->body);
        sc_buf_append_cstr(&resp->body, "metrics exposition too large\n");
    }
}

static void h_config(void *arg, const struct sc_admin_req *req, struct sc_admin_resp *resp)
{
    struct sc_app *app = arg;
    (void)req;
    json_t *j = sc_config_dump(app->top, app->cfg);
    if (app->role->dump) {
        app->role->dump(role_cfg_of(app->cfg), j);
    }
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(j);
    resp->content_type = "application/json";
    if (s) {
        sc_buf_append_cstr(&resp->body, s);
        sc_buf_append(&resp->body, "\n", 1);
        sc_free(s);
    }
}

static void after_quit(void *arg)
{
    sc_app_drain(arg);
}

static void h_quit(void *arg, const struct sc_admin_req *req, struct sc_admin_resp *resp)
{
    struct sc_app *app = arg;
    (void)req;
    sc_info("drain requested", SC_LS("via", "/quitquitquit"));
    sc_buf_append_cstr(&resp->body, "draining\n");
    sc_admin_after_response(app->admin, after_quit, app);
}

static void h_reload(void *arg, const struct sc_admin_req *req, struct sc_admin_resp *resp)
{
    struct sc_app *app = arg;
    (void)req;
    char *err = NULL;
    int rc = reload(app, &err);
    if (rc < 0) {
        sc_error("reload rejected; the previous configuration keeps running", SC_LS("reason", err));
        resp->status = rc == SC_EUNSUPPORTED ? 501 : 400;
        sc_buf_appendf(&resp->body,
                       "reload rejected; the previous configuration keeps running: %s\n",
                       err ? err : "error");
    } else {
        sc_buf_append_cstr(&resp->body, "reloaded\n");
    }
    sc_free(err);
}

static int start(struct sc_app *app)
{
    struct sc_common *c = common_of(app->cfg);
    char *err = NULL;

    app->metrics = sc_metrics_new();
    sc_metrics_add_process(app->metrics);
    static const char *const build_labels[] = { "version", "revision", "role", NULL };
    struct sc_metric_family *f =
        sc_metrics_family(app->metrics, SC_METRIC_GAUGE, "sidecar_build_info",
                          "Build information; the value is always 1.", build_labels, NULL, 0);
    const char *values[] = { SC_VERSION, SC_VERSION_GIT, app->role->name };
    sc_metrics_gauge_set(sc_metrics_get(f, values), 1);
    static const char *const result_label[] = { "result", NULL };
    f = sc_metrics_family(
        app->metrics, SC_METRIC_COUNTER, "sidecar_reloads_total",
        "Reloads of this sidecar's own configuration (SIGHUP, POST /reload), by result.",
        result_label, NULL, 0);
    app->reloads_ok = sc_metrics_get(f, (const char *[]){ "success" });
    app->reloads_failed = sc_metrics_get(f, (const char *[]){ "failure" });

    uv_timer_init(&app->loop, &app->drain_timer);
    app->drain_timer.data = app;

    app->admin = sc_admin_new(&app->loop);
    sc_app_serve_health(app, app->admin);
    sc_admin_handle(app->admin, "GET", "/metrics", h_metrics, app);
    sc_admin_handle(app->admin, "GET", "/config", h_config, app);
    sc_admin_handle(app->admin, "POST", "/quitquitquit", h_quit, app);
    sc_admin_handle(app->admin, "POST", "/reload", h_reload, app);
    if (sc_admin_listen(app->admin, c->admin, &err) < 0) {
        sc_error("cannot start", SC_LS("reason", err));
        goto fail;
    }
    char bound[80];
    if (sc_admin_address(app->admin, bound, sizeof(bound)) == 0) {
        sc_info("admin listening", SC_LS("address", bound));
    }
    int rc = sc_signals_start(&app->signals, &app->loop, on_stop_signal, on_reload_signal, app);
    if (rc < 0) {
        sc_error("cannot watch signals", SC_LERR(rc));
        goto fail;
    }
    if (app->role->start(app, role_cfg_of(app->cfg), &app->state, &err) < 0) {
        sc_error("cannot start", SC_LS("reason", err));
        goto fail;
    }
    app->started = true;
    sc_free(err);
    return 0;
fail:
    sc_free(err);
    sc_app_stopped(app, 1);
    return -1;
}

int sc_app_main(const struct sc_role *role, int argc, char **argv)
{
    struct sc_app *app = SC_NEW(struct sc_app);
    app->role = role;
    build_tables(app);
    bool check = false, print = false;
    int code = parse_args(app, argc, argv, &check, &print);
    if (code >= 0) {
        goto out;
    }

    char *err = NULL;
    app->cfg = load_config(app, &err);
    if (!app->cfg) {
        fprintf(stderr, "sidecar %s: %s\n", role->name, err);
        sc_free(err);
        code = 1;
        goto out;
    }
    for (size_t i = 0; check && i < app->notes.n; i++) {
        fprintf(stderr, "sidecar %s: note: %s\n", role->name, app->notes.v[i]);
    }
    if (check && print && app->derived) {
        fputs(app->derived, stdout);
    }
    if (check) {
        printf("%s: configuration is valid\n", app->config_path ? app->config_path : role->name);
        code = 0;
        goto out;
    }

    if (role->command && (code = role->command(role_cfg_of(app->cfg))) >= 0) {
        goto out;
    }

    struct sc_common *c = common_of(app->cfg);
    sc_log_setup((enum sc_log_level)c->log_level, (enum sc_log_format)c->log_format, role->name);
    uv_loop_init(&app->loop);
    sc_info("starting", SC_LS("version", SC_VERSION), SC_LS("revision", SC_VERSION_GIT),
            SC_LS("config", app->config_path));
    for (size_t i = 0; i < app->notes.n; i++) {
        sc_warn("config note", SC_LS("note", app->notes.v[i]));
    }
    start(app);
    uv_run(&app->loop, UV_RUN_DEFAULT);
    code = app->exit_code;
    if (app->state && role->cleanup) {
        role->cleanup(app->state);
    }
    /* Close whatever a failed start left open, then let the close callbacks run. */
    uv_run(&app->loop, UV_RUN_NOWAIT);
    if (uv_loop_close(&app->loop) == UV_EBUSY) {
        sc_warn("handles still open at exit");
    }
    sc_metrics_free(app->metrics);

out:
    free_config(app, app->cfg);
    for (size_t i = 0; i < app->nflags; i++) {
        sc_free(app->flags[i].name);
        sc_free(app->flags[i].value);
    }
    sc_free(app->flags);
    for (size_t i = 0; i < app->notes.n; i++) {
        sc_free(app->notes.v[i]);
    }
    sc_free(app->notes.v);
    sc_free(app->derived);
    sc_free(app->config_path);
    sc_free(app->config_paths);
    sc_free(app);
    return code;
}

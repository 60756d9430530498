// SPDX-License-Identifier: Apache-2.0
// Destination writes and reload actions for the config and secrets roles. A write with a
// validation command first puts the candidate in a private temporary file next to the
// destination, runs the command on it (killed after its timeout), and only on exit 0 replaces the
// destination atomically. The reloader coalesces triggers with a debounce timer and runs one
// action at a time; a trigger during a running action schedules exactly one more.
#include "net/dest.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"

/* The reload keys, with or without their command-line flags. */
// clang-format off
#define RELOAD_OPTS(FLAGS)                                                                         \
    { .name = "reload_url",                                                                        \
      .type = SC_OPT_STR,                                                                          \
      .offset = offsetof(struct sc_dest_reload_cfg, url),                                               \
      .help = "reload action: send an HTTP request to this URL after a file changed",              \
      .flags = (FLAGS) },                                                                          \
    { .name = "reload_method",                                                                     \
      .type = SC_OPT_STR,                                                                          \
      .offset = offsetof(struct sc_dest_reload_cfg, method),                                            \
      .def = "POST",                                                                               \
      .help = "HTTP method of the reload request",                                                 \
      .flags = (FLAGS) },                                                                          \
    { .name = "reload_expect_status",                                                              \
      .type = SC_OPT_INT,                                                                          \
      .offset = offsetof(struct sc_dest_reload_cfg, expect_status),                                     \
      .def = "0",                                                                                  \
      .help = "status the reload request must answer (0: any 2xx)",                                \
      .flags = (FLAGS),                                                                            \
      .min = 0,                                                                                    \
      .max = 599 },                                                                                \
    { .name = "reload_retries",                                                                    \
      .type = SC_OPT_INT,                                                                          \
      .offset = offsetof(struct sc_dest_reload_cfg, retries),                                           \
      .def = "3",                                                                                  \
      .help =                                                                                      \
      "extra attempts of a failed reload request or command (backoff 0.5 s, doubling)",            \
      .flags = (FLAGS),                                                                            \
      .min = 0,                                                                                    \
      .max = 20 },                                                                                 \
    { .name = "reload_signal",                                                                     \
      .type = SC_OPT_STR,                                                                          \
      .offset = offsetof(struct sc_dest_reload_cfg, signal),                                            \
      .def = "SIGHUP",                                                                             \
      .help = "signal sent by the pid-file and process reload actions",                            \
      .flags = (FLAGS) },                                                                          \
    { .name = "reload_pid_file",                                                                   \
      .type = SC_OPT_STR,                                                                          \
      .offset = offsetof(struct sc_dest_reload_cfg, pid_file),                                          \
      .help = "reload action: signal the process whose pid this file holds",                       \
      .flags = (FLAGS) },                                                                          \
    { .name = "reload_process",                                                                    \
      .type = SC_OPT_STR,                                                                          \
      .offset = offsetof(struct sc_dest_reload_cfg, process),                                           \
      .help = "reload action: signal every process with this name (shared PID namespace)",         \
      .flags = (FLAGS) },                                                                          \
    { .name = "reload_command",                                                                    \
      .type = SC_OPT_STRLIST,                                                                      \
      .offset = offsetof(struct sc_dest_reload_cfg, command),                                           \
      .help = (FLAGS) ? "reload action: run this command (argv list; as flags, one "               \
                        "--reload-command per argument); exit 0 is success"                        \
                      : "reload action: run this command (argv list); exit 0 is success",          \
      .flags = (FLAGS) },                                                                          \
    { .name = "reload_debounce",                                                                   \
      .type = SC_OPT_DURATION,                                                                     \
      .offset = offsetof(struct sc_dest_reload_cfg, debounce_ms),                                       \
      .def = "500ms",                                                                              \
      .help = "a burst of changes within this window gives one reload",                            \
      .flags = (FLAGS) },

const struct sc_opt sc_dest_reload_opts[] = {
    RELOAD_OPTS(SC_OPT_FLAG)
    { 0 },
};

const struct sc_opt sc_dest_reload_item_opts[] = {
    RELOAD_OPTS(0)
    { 0 },
};
// clang-format on

static const struct {
    const char *name;
    int sig;
} signames[] = {
    { "HUP", SIGHUP },   { "INT", SIGINT },   { "QUIT", SIGQUIT },   { "TERM", SIGTERM },
    { "USR1", SIGUSR1 }, { "USR2", SIGUSR2 }, { "WINCH", SIGWINCH }, { "KILL", SIGKILL },
};

int sc_dest_signal_parse(const char *s)
{
    if (!s || !*s) {
        return -EINVAL;
    }
    uint64_t n;
    if (sc_str_to_u64(sc_str_c(s), 64, &n) == 0) {
        return n > 0 ? (int)n : -EINVAL;
    }
    if (strncasecmp(s, "SIG", 3) == 0) {
        s += 3;
    }
    for (size_t i = 0; i < SC_ARRAY_LEN(signames); i++) {
        if (strcasecmp(s, signames[i].name) == 0) {
            return signames[i].sig;
        }
    }
    return -EINVAL;
}

int sc_dest_reload_check(const struct sc_dest_reload_cfg *cfg, char **err)
{
    if (cfg->signal && sc_dest_signal_parse(cfg->signal) < 0) {
        *err = sc_asprintf("reload_signal: unknown signal \"%s\"", cfg->signal);
        return SC_ECONFIG;
    }
    if (cfg->url && strncmp(cfg->url, "http://", 7) != 0 && strncmp(cfg->url, "https://", 8) != 0) {
        *err = sc_asprintf("reload_url: \"%s\" is not an http:// or https:// URL", cfg->url);
        return SC_ECONFIG;
    }
    return 0;
}

/* ---- commands ---- */

struct cmd_run {
    uv_process_t proc;
    uv_timer_t timer;
    int closing;
    int64_t status; /* exit status, or -1 when killed by a signal or timed out */
    void (*done)(void *arg, int64_t status);
    void *arg;
};

static void on_cmd_closed(uv_handle_t *h)
{
    struct cmd_run *c = h->data;
    if (--c->closing == 0) {
        c->done(c->arg, c->status);
        sc_free(c);
    }
}

static void on_cmd_exit(uv_process_t *p, int64_t status, int term_signal)
{
    struct cmd_run *c = p->data;
    c->status = term_signal ? -1 : status;
    uv_close((uv_handle_t *)&c->proc, on_cmd_closed);
    uv_close((uv_handle_t *)&c->timer, on_cmd_closed);
}

static void on_cmd_timeout(uv_timer_t *t)
{
    struct cmd_run *c = t->data;
    sc_warn("command timed out; killing it", SC_LI("pid", c->proc.pid));
    uv_process_kill(&c->proc, SIGKILL);
}

static void on_spawn_failed_closed(uv_handle_t *h)
{
    sc_free(h->data);
}

/* Runs <argv> with stdin closed and stdout/stderr inherited; calls <done> once with its exit
 * status (-1 for a signal or a timeout). Returns 0 or a negative libuv error (<done> not called).
 */
static int run_command(uv_loop_t *loop, char **argv, uint64_t timeout_ms,
                       void (*done)(void *, int64_t), void *arg)
{
    struct cmd_run *c = SC_NEW(struct cmd_run);
    c->done = done;
    c->arg = arg;
    uv_stdio_container_t stdio[3] = {
        { .flags = UV_IGNORE },
        { .flags = UV_INHERIT_FD, .data.fd = 1 },
        { .flags = UV_INHERIT_FD, .data.fd = 2 },
    };
    uv_process_options_t o = {
        .exit_cb = on_cmd_exit,
        .file = argv[0],
        .args = argv,
        .stdio_count = 3,
        .stdio = stdio,
    };
    c->proc.data = c;
    int rc = uv_spawn(loop, &c->proc, &o);
    if (rc < 0) {
        /* uv_spawn initialised the handle: it must still be closed. */
        uv_close((uv_handle_t *)&c->proc, on_spawn_failed_closed);
        return rc;
    }
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    c->closing = 2;
    uv_timer_start(&c->timer, on_cmd_timeout, timeout_ms ? timeout_ms : 30000, 0);
    return 0;
}

/* ---- destination writes ---- */

struct dest_op {
    uv_timer_t timer;
    char *path;
    mode_t mode;
    uid_t uid;
    gid_t gid;
    char **argv; /* validation command with {{file}} substituted, NULL-terminated */
    size_t argc;
    char *builtin; /* "json" / "yaml" */
    char *candidate;
    char *data;
    size_t len;
    uint64_t timeout_ms;
    enum sc_dest_result result;
    sc_dest_cb cb;
    void *arg;
};

static void op_free(struct dest_op *op)
{
    for (size_t i = 0; i < op->argc; i++) {
        sc_free(op->argv[i]);
    }
    sc_free(op->argv);
    if (op->candidate) {
        unlink(op->candidate);
        sc_free(op->candidate);
    }
    sc_free(op->builtin);
    /* Rendered secrets pass through here: zero them. */
    sc_free_secret(op->data, op->len + 1);
    sc_free(op->path);
    sc_free(op);
}

static void on_op_closed(uv_handle_t *h)
{
    struct dest_op *op = h->data;
    op->cb(op->arg, op->result);
    op_free(op);
}

static void op_finish(struct dest_op *op, enum sc_dest_result r)
{
    op->result = r;
    uv_close((uv_handle_t *)&op->timer, on_op_closed);
}

static void op_swap(struct dest_op *op)
{
    char *err = NULL;
    if (sc_file_write_atomic(op->path, op->data, op->len, op->mode, op->uid, op->gid, &err) < 0) {
        sc_error("cannot write the destination; the old file stays", SC_LS("path", op->path),
                 SC_LS("reason", err));
        sc_free(err);
        op_finish(op, SC_DEST_FAILED);
        return;
    }
    sc_info("file written", SC_LS("path", op->path), SC_LU("bytes", op->len));
    op_finish(op, SC_DEST_WRITTEN);
}

static void on_validated(void *arg, int64_t status)
{
    struct dest_op *op = arg;
    if (status != 0) {
        sc_error("validation failed; the old file stays", SC_LS("path", op->path),
                 SC_LS("command", op->argv[0]), SC_LI("exit_status", status));
        op_finish(op, SC_DEST_INVALID);
        return;
    }
    op_swap(op);
}

static void on_op_start(uv_timer_t *t)
{
    struct dest_op *op = t->data;
    if (sc_file_same(op->path, op->data, op->len)) {
        op_finish(op, SC_DEST_UNCHANGED);
        return;
    }
    if (op->builtin) {
        char *err = NULL;
        if (sc_file_check_syntax(op->builtin, op->data, op->len, &err) < 0) {
            sc_error("validation failed; the old file stays", SC_LS("path", op->path),
                     SC_LS("check", op->builtin), SC_LS("reason", err));
            sc_free(err);
            op_finish(op, SC_DEST_INVALID);
            return;
        }
        op_swap(op);
        return;
    }
    if (!op->argv) {
        op_swap(op);
        return;
    }
    /* The candidate lives next to the destination so relative includes resolve the same way. */
    char *err = NULL;
    const char *slash = strrchr(op->path, '/');
    char *dir = slash ? sc_strndup(op->path, (size_t)(slash - op->path + 1)) : sc_strdup("");
    op->candidate = sc_asprintf("%s.%s.candidate", dir, slash ? slash + 1 : op->path);
    sc_free(dir);
    if (sc_file_write_atomic(op->candidate, op->data, op->len, 0600, (uid_t)-1, (gid_t)-1, &err) <
        0) {
        sc_error("cannot write the candidate for validation", SC_LS("path", op->path),
                 SC_LS("reason", err));
        sc_free(err);
        sc_free(op->candidate);
        op->candidate = NULL;
        op_finish(op, SC_DEST_FAILED);
        return;
    }
    for (size_t i = 0; i < op->argc; i++) {
        char *at = strstr(op->argv[i], "{{file}}");
        if (at) {
            char *s = sc_asprintf("%.*s%s%s", (int)(at - op->argv[i]), op->argv[i], op->candidate,
                                  at + 8);
            sc_free(op->argv[i]);
            op->argv[i] = s;
        }
    }
    int rc = run_command(t->loop, op->argv, op->timeout_ms, on_validated, op);
    if (rc < 0) {
        sc_error("cannot run the validation command; the old file stays", SC_LS("path", op->path),
                 SC_LS("command", op->argv[0]), SC_LERR(rc));
        op_finish(op, SC_DEST_INVALID);
    }
}

int sc_dest_write(uv_loop_t *loop, const struct sc_dest_spec *spec, const void *data, size_t len,
                  sc_dest_cb cb, void *arg)
{
    struct dest_op *op = SC_NEW(struct dest_op);
    op->path = sc_strdup(spec->path);
    op->mode = spec->mode;
    op->uid = spec->uid;
    op->gid = spec->gid;
    op->timeout_ms = spec->validate_timeout_ms;
    op->data = sc_malloc(len + 1);
    memcpy(op->data, data, len);
    op->len = len;
    op->cb = cb;
    op->arg = arg;
    const struct sc_strv *v = spec->validate;
    if (v && v->n == 1 && (strcmp(v->v[0], "json") == 0 || strcmp(v->v[0], "yaml") == 0)) {
        op->builtin = sc_strdup(v->v[0]);
    } else if (v && v->n > 0) {
        op->argv = sc_calloc(v->n + 1, sizeof(char *));
        for (size_t i = 0; i < v->n; i++) {
            op->argv[i] = sc_strdup(v->v[i]);
        }
        op->argc = v->n;
    }
    uv_timer_init(loop, &op->timer);
    op->timer.data = op;
    uv_timer_start(&op->timer, on_op_start, 0, 0);
    return 0;
}

/* ---- reloader ---- */

struct sc_dest_reloader {
    uv_loop_t *loop;
    uv_timer_t timer; /* debounce, then retry backoff */
    struct sc_egress *egress;
    struct sc_egress_xfer *xfer;
    const struct sc_dest_reload_cfg *cfg;
    struct sc_metric *ok;
    struct sc_metric *failed;
    bool pending; /* triggered; waiting for the debounce window */
    bool running; /* an action is in flight */
    bool again;   /* triggered while running */
    bool closing;
    bool timer_closed;
    int attempt;
    int cmd_outstanding;
};

struct sc_dest_reloader *sc_dest_reloader_new(uv_loop_t *loop, struct sc_egress *egress,
                                              const struct sc_dest_reload_cfg *cfg,
                                              struct sc_metrics *metrics, const char *metric)
{
    if (!cfg->url && !cfg->pid_file && !cfg->process && cfg->command.n == 0) {
        return NULL;
    }
    struct sc_dest_reloader *r = SC_NEW(struct sc_dest_reloader);
    r->loop = loop;
    r->egress = egress;
    r->cfg = cfg;
    static const char *const labels[] = { "result", NULL };
    struct sc_metric_family *f = sc_metrics_family(
        metrics, SC_METRIC_COUNTER, metric, "Reload actions run, by result.", labels, NULL, 0);
    r->ok = sc_metrics_get(f, (const char *[]){ "success" });
    r->failed = sc_metrics_get(f, (const char *[]){ "failure" });
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    return r;
}

static void on_debounced(uv_timer_t *t);

/* The log fields that say which reload action this is (a role may have one per file). */
#define ACTION_FIELDS(c)                                                                           \
    SC_LS("url", (c)->url), SC_LS("pid_file", (c)->pid_file), SC_LS("process", (c)->process),      \
        SC_LS("command", (c)->command.n ? (c)->command.v[0] : NULL)

static void reload_done(struct sc_dest_reloader *r, bool ok, const char *why)
{
    if (!ok && r->attempt < r->cfg->retries && !r->closing) {
        uint64_t backoff = 500u << (r->attempt < 6 ? r->attempt : 6);
        r->attempt++;
        sc_warn("reload failed; retrying", ACTION_FIELDS(r->cfg), SC_LS("reason", why),
                SC_LI("attempt", r->attempt), SC_LU("backoff_ms", backoff));
        r->running = false;
        r->pending = true;
        uv_timer_start(&r->timer, on_debounced, backoff, 0);
        return;
    }
    r->running = false;
    r->attempt = 0;
    if (ok) {
        sc_metrics_counter_inc(r->ok);
        sc_info("reload done", ACTION_FIELDS(r->cfg));
    } else {
        sc_metrics_counter_inc(r->failed);
        sc_error("reload failed", ACTION_FIELDS(r->cfg), SC_LS("reason", why));
    }
    if (r->again && !r->closing) {
        r->again = false;
        sc_dest_reloader_trigger(r);
    }
}

static void on_reload_resp(void *arg, const struct sc_egress_resp *resp)
{
    struct sc_dest_reloader *r = arg;
    r->xfer = NULL;
    if (resp->error) {
        reload_done(r, false, resp->error_msg ? resp->error_msg : sc_strerror(resp->error));
        return;
    }
    bool ok = r->cfg->expect_status ? resp->status == r->cfg->expect_status
                                    : resp->status >= 200 && resp->status < 300;
    char why[64];
    snprintf(why, sizeof(why), "unexpected status %d", resp->status);
    reload_done(r, ok, why);
}

static void on_reload_cmd(void *arg, int64_t status)
{
    struct sc_dest_reloader *r = arg;
    r->cmd_outstanding--;
    if (r->closing) {
        if (r->cmd_outstanding == 0 && r->timer_closed) {
            sc_free(r);
        }
        return;
    }
    if (!r->cfg->url) {
        reload_done(r, status == 0, "the reload command failed");
    }
}

static bool proc_name_matches(const char *pid, const char *name)
{
    char path[300], buf[256];
    snprintf(path, sizeof(path), "/proc/%s/comm", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n > 0) {
            buf[n] = '\0';
            buf[strcspn(buf, "\n")] = '\0';
            if (strcmp(buf, name) == 0) {
                return true;
            }
        }
    }
    snprintf(path, sizeof(path), "/proc/%s/cmdline", pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return false;
    }
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0) {
        return false;
    }
    buf[n] = '\0';
    const char *base = strrchr(buf, '/');
    base = base ? base + 1 : buf;
    /* nginx rewrites argv[0] as "nginx: master process ...". */
    size_t nl = strlen(name);
    return strcmp(base, name) == 0 ||
           (strncmp(base, name, nl) == 0 && base[nl] == ':' && strstr(base, "master"));
}

static int signal_processes(const struct sc_dest_reload_cfg *cfg, const char **why)
{
    int sig = sc_dest_signal_parse(cfg->signal ? cfg->signal : "SIGHUP");
    if (sig < 0) {
        sig = SIGHUP;
    }
    int sent = 0;
    if (cfg->pid_file) {
        struct sc_buf b;
        sc_buf_init(&b, 64);
        int rc = sc_file_read(cfg->pid_file, &b);
        uint64_t pid = 0;
        if (rc == 0) {
            rc = sc_str_to_u64(sc_str_trim(sc_str_split(&(struct sc_str){ b.p, b.len }, '\n')),
                               0x7fffffff, &pid);
        }
        sc_buf_cleanup(&b);
        if (rc < 0 || pid == 0) {
            *why = "cannot read a pid from the pid file";
            return rc < 0 ? rc : SC_EINVAL;
        }
        if (kill((pid_t)pid, sig) < 0) {
            *why = "kill failed for the pid in the pid file";
            return -errno;
        }
        sent++;
    }
    if (cfg->process) {
        DIR *d = opendir("/proc");
        struct dirent *de;
        while (d && (de = readdir(d)) != NULL) {
            if (!isdigit((unsigned char)de->d_name[0])) {
                continue;
            }
            long pid = strtol(de->d_name, NULL, 10);
            if (pid == getpid() || !proc_name_matches(de->d_name, cfg->process)) {
                continue;
            }
            if (kill((pid_t)pid, sig) == 0) {
                sent++;
            }
        }
        if (d) {
            closedir(d);
        }
        if (sent == 0) {
            *why = "no process with that name";
            return -ESRCH;
        }
    }
    return sent;
}

static void on_debounced(uv_timer_t *t)
{
    struct sc_dest_reloader *r = t->data;
    r->pending = false;
    r->running = true;
    const struct sc_dest_reload_cfg *cfg = r->cfg;
    sc_info("reloading the app", ACTION_FIELDS(cfg));
    const char *why = NULL;
    if ((cfg->pid_file || cfg->process) && signal_processes(cfg, &why) < 0) {
        reload_done(r, false, why);
        return;
    }
    if (cfg->command.n > 0) {
        char **argv = sc_calloc(cfg->command.n + 1, sizeof(char *));
        for (size_t i = 0; i < cfg->command.n; i++) {
            argv[i] = cfg->command.v[i];
        }
        int rc = run_command(r->loop, argv, 60000, on_reload_cmd, r);
        sc_free(argv);
        if (rc < 0) {
            reload_done(r, false, sc_strerror(rc));
            return;
        }
        r->cmd_outstanding++;
        if (!cfg->url) {
            return; /* the command's exit finishes the reload */
        }
    }
    if (cfg->url && r->egress) {
        struct sc_egress_req req = {
            .method = cfg->method ? cfg->method : "POST",
            .url = cfg->url,
            .timeout_ms = 10000,
        };
        int rc = sc_egress_send(r->egress, &req, on_reload_resp, r, &r->xfer);
        if (rc < 0) {
            reload_done(r, false, sc_strerror(rc));
        }
        return;
    }
    if (cfg->command.n == 0) {
        reload_done(r, true, NULL);
    }
}

void sc_dest_reloader_trigger(struct sc_dest_reloader *r)
{
    if (!r || r->closing) {
        return;
    }
    if (r->running) {
        r->again = true;
        return;
    }
    if (r->pending && r->attempt > 0) {
        return; /* a retry is already due and will reload the latest files */
    }
    r->pending = true;
    uv_timer_start(&r->timer, on_debounced, r->cfg->debounce_ms, 0);
}

bool sc_dest_reloader_busy(const struct sc_dest_reloader *r)
{
    return r && (r->pending || r->running);
}

static void on_reloader_closed(uv_handle_t *h)
{
    struct sc_dest_reloader *r = h->data;
    r->timer_closed = true;
    if (r->cmd_outstanding == 0) {
        sc_free(r);
    }
}

void sc_dest_reloader_close(struct sc_dest_reloader *r)
{
    if (!r || r->closing) {
        return;
    }
    r->closing = true;
    if (r->xfer) {
        sc_egress_cancel(r->xfer);
        r->xfer = NULL;
    }
    uv_close((uv_handle_t *)&r->timer, on_reloader_closed);
}

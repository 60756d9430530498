// SPDX-License-Identifier: Apache-2.0
// `sidecar pod`: runs a Pod manifest as local processes with Kubernetes' lifecycle rules (see
// docs/pod.md and native-sidecars.md): init containers one at a time, native sidecars started and
// started-probed before the next entry, app containers together, probes, restarts with backoff,
// Job completion, and the ordered shutdown (preStop, SIGTERM, one shared grace period, SIGKILL;
// apps first, then sidecars in reverse order). Every container is its own process group
// (setsid), and every signal goes to the group, so a shell's children die with it. The key
// invariant: the pod reports stopped only after every container process has exited and every
// handle it used has closed; no process outlives the runner.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "app.h"
#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "roles/pod/pod.h"

#define LINE_MAX_BYTES                                                                             \
    (16 * 1024)          /* a longer line is written in parts marked P, as the kubelet             \
                          */
#define MIN_KILL_MS 2000 /* after the grace period, what a late container still gets */

enum ctr_kind { CTR_INIT, CTR_SIDECAR, CTR_APP };
enum ctr_state { ST_WAITING, ST_RUNNING, ST_TERMINATED };
enum probe_kind { PROBE_STARTUP, PROBE_READINESS, PROBE_LIVENESS };
enum phase { PH_STARTING, PH_RUNNING, PH_STOP_APPS, PH_STOP_SIDECARS, PH_DONE };

struct pod;
struct pod_ctr;
struct pod_proc;

struct pod_stream {
    struct pod_proc *pp;
    uv_pipe_t pipe;
    const char *name; /* "stdout" / "stderr" */
    struct sc_buf line;
    char rbuf[16384];
};

/* One spawned container process and its output pipes; frees itself when all three handles have
 * closed, which may be after the container has been restarted. */
struct pod_proc {
    struct pod *pod;
    struct pod_ctr *c; /* NULL once the process has exited */
    uv_process_t proc;
    struct pod_stream out, err;
    int open;
    int log_fd;
    char *prefix; /* terminal prefix, with colour */
    struct pod_proc *next;
};

typedef void (*check_cb)(void *arg, bool ok, const char *why);

/* One probe or hook run: exec, httpGet, tcpSocket or sleep. Calls <cb> once unless cancelled,
 * and frees itself when its handles have closed. */
struct pod_check {
    struct pod *pod;
    check_cb cb;
    void *arg;
    bool finished;
    int open;
    uv_timer_t timer;
    bool has_proc, proc_alive;
    uv_process_t proc;
    bool has_tcp;
    uv_tcp_t tcp;
    uv_connect_t conn;
    uv_write_t wr;
    char *req;
    char resp[256];
    size_t rlen;
    char why[160];
    struct pod_check *next;
};

struct pod_prober {
    struct pod_ctr *c;
    enum probe_kind kind;
    const struct pod_probe_spec *spec;
    uv_timer_t timer;
    bool active;
    int64_t succ, fail;
    struct pod_check *chk;
};

struct pod_mnt {
    char *src;
    char *dst;
    bool ro;
};

struct pod_ctr {
    struct pod *pod;
    const struct pod_container *spec;
    enum ctr_kind kind;
    size_t order;
    char **argv;
    char **envp;
    char *cwd;
    struct pod_mnt *mnts;
    size_t nmnts;
    struct pod_proc *pp;
    int pid;
    enum ctr_state state;
    int exit_code;
    bool ever_started; /* spawned at least once */
    bool started;      /* startup probe passed (or none) and postStart done */
    bool was_started;  /* <started> was true at least once: the start sequence moves on */
    bool ready;
    bool done; /* finished for good (a completed init container, a finished Job container) */
    bool stopping;
    bool liveness_kill;
    unsigned restarts;
    unsigned backoff_n;
    uint64_t run_start_ms;
    struct pod_prober probes[3];
    struct pod_check *hook;
    uv_timer_t restart_timer;
    uv_timer_t kill_timer;
    struct sc_metric *m_restarts, *m_ready, *m_running;
    char *cgroup;
};

struct pod {
    struct sc_app *app;
    uv_loop_t *loop;
    const struct pod_cfg *cfg;
    struct pod_manifest *m;
    char *dir;
    char *config_dir;
    char hostname[256];
    struct pod_ctr *ctrs;
    size_t nctrs;
    size_t ninit; /* ctrs[0..ninit) are spec.initContainers, in order */
    enum phase phase;
    bool apps_started;
    bool grace_expired;
    bool finished;
    uint64_t deadline_ms;
    int exit_code;
    struct pod_proc *procs;
    struct pod_check *checks;
    uv_pipe_t ctl;
    bool ctl_open;
    bool color;
    size_t name_width; /* the longest container name, for the terminal prefixes */
    uv_timer_t grace_timer;
};

static uint64_t now_ms(struct pod *pod)
{
    uv_update_time(pod->loop);
    return uv_now(pod->loop);
}

static const char *kind_name(enum ctr_kind k)
{
    return k == CTR_INIT ? "init" : k == CTR_SIDECAR ? "sidecar" : "app";
}

static const char *state_name(enum ctr_state s)
{
    return s == ST_WAITING ? "waiting" : s == ST_RUNNING ? "running" : "terminated";
}

static void pod_advance(struct pod *pod);
static void shutdown_step(struct pod *pod);
static void begin_shutdown(struct pod *pod, int code, const char *why);
static void update_ready(struct pod *pod);
static void ctr_start(struct pod_ctr *c);
static void maybe_finish(struct pod *pod);

/* ---- log output ---- */

static void emit(struct pod_stream *s, const char *p, size_t n, bool partial)
{
    struct pod_proc *pp = s->pp;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct sc_buf b;
    sc_buf_init(&b, LINE_MAX_BYTES * 2 + 256);
    if (pp->log_fd >= 0 && pod_cri_line(&b, ts.tv_sec, ts.tv_nsec, s->name, partial, p, n) == 0) {
        ssize_t w = write(pp->log_fd, b.p, b.len);
        (void)w;
    }
    sc_buf_reset(&b);
    sc_buf_appendf(&b, "%s", pp->prefix);
    sc_buf_append(&b, p, n);
    sc_buf_append(&b, "\n", 1);
    ssize_t w = write(STDOUT_FILENO, b.p, b.len);
    (void)w;
    sc_buf_cleanup(&b);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    struct pod_stream *s = h->data;
    *buf = uv_buf_init(s->rbuf, sizeof(s->rbuf));
}

static void proc_release(struct pod_proc *pp);

static void on_stream_closed(uv_handle_t *h)
{
    struct pod_stream *s = h->data;
    proc_release(s->pp);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct pod_stream *s = st->data;
    if (nread < 0) {
        if (s->line.len > 0) {
            emit(s, s->line.p, s->line.len, false);
            sc_buf_reset(&s->line);
        }
        uv_close((uv_handle_t *)st, on_stream_closed);
        return;
    }
    const char *p = buf->base, *end = buf->base + nread;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        size_t room = LINE_MAX_BYTES - s->line.len;
        size_t take = n < room ? n : room;
        sc_buf_append(&s->line, p, take);
        p += take;
        if (s->line.len == LINE_MAX_BYTES && (p < end && *p != '\n')) {
            emit(s, s->line.p, s->line.len, true);
            sc_buf_reset(&s->line);
            continue;
        }
        if (p < end && *p == '\n') {
            emit(s, s->line.p ? s->line.p : "", s->line.len, false);
            sc_buf_reset(&s->line);
            p++;
        }
    }
}

static void proc_release(struct pod_proc *pp)
{
    if (--pp->open > 0) {
        return;
    }
    struct pod *pod = pp->pod;
    for (struct pod_proc **q = &pod->procs; *q; q = &(*q)->next) {
        if (*q == pp) {
            *q = pp->next;
            break;
        }
    }
    if (pp->log_fd >= 0) {
        close(pp->log_fd);
    }
    sc_buf_cleanup(&pp->out.line);
    sc_buf_cleanup(&pp->err.line);
    sc_free(pp->prefix);
    sc_free(pp);
    maybe_finish(pod);
}

static void on_proc_closed(uv_handle_t *h)
{
    proc_release(h->data);
}

/* ---- checks: probes and hooks ---- */

static void on_check_closed(uv_handle_t *h)
{
    struct pod_check *k = h->data;
    if (--k->open > 0) {
        return;
    }
    struct pod *pod = k->pod;
    for (struct pod_check **q = &pod->checks; *q; q = &(*q)->next) {
        if (*q == k) {
            *q = k->next;
            break;
        }
    }
    sc_free(k->req);
    sc_free(k);
    maybe_finish(pod);
}

/* Closes what can be closed now; a live exec process is closed from its exit callback. */
static void check_close(struct pod_check *k)
{
    if (!uv_is_closing((uv_handle_t *)&k->timer)) {
        uv_close((uv_handle_t *)&k->timer, on_check_closed);
    }
    if (k->has_tcp && !uv_is_closing((uv_handle_t *)&k->tcp)) {
        uv_close((uv_handle_t *)&k->tcp, on_check_closed);
    }
    if (k->has_proc && !k->proc_alive && !uv_is_closing((uv_handle_t *)&k->proc)) {
        uv_close((uv_handle_t *)&k->proc, on_check_closed);
    }
}

static void check_done(struct pod_check *k, bool ok, const char *why)
{
    if (k->finished) {
        return;
    }
    k->finished = true;
    if (k->has_proc && k->proc_alive) {
        kill(-k->proc.pid, SIGKILL);
    }
    check_close(k);
    if (k->cb) {
        k->cb(k->arg, ok, why);
    }
}

/* Stops <k> without calling its callback. NULL-safe. */
static void check_cancel(struct pod_check *k)
{
    if (k) {
        k->cb = NULL;
        check_done(k, false, "cancelled");
    }
}

static void on_check_timeout(uv_timer_t *t)
{
    check_done(t->data, false, "timed out");
}

static void on_check_exit(uv_process_t *p, int64_t status, int sig)
{
    struct pod_check *k = p->data;
    k->proc_alive = false;
    kill(-p->pid, SIGKILL);
    char why[64];
    snprintf(why, sizeof(why), sig ? "killed by signal %d" : "exit code %d",
             sig ? sig : (int)status);
    check_done(k, !sig && status == 0, why);
    if (!uv_is_closing((uv_handle_t *)p)) {
        uv_close((uv_handle_t *)p, on_check_closed);
    }
}

static void on_check_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct pod_check *k = st->data;
    if (nread > 0) {
        k->rlen += (size_t)nread;
    }
    /* "HTTP/1.1 200" is all a probe needs */
    const char *r = k->resp;
    if (k->rlen >= 12 || nread < 0) {
        if (k->rlen >= 12 && strncmp(r, "HTTP/1.", 7) == 0 && r[8] == ' ' && r[9] >= '1' &&
            r[9] <= '5' && r[10] >= '0' && r[10] <= '9' && r[11] >= '0' && r[11] <= '9') {
            int code = (r[9] - '0') * 100 + (r[10] - '0') * 10 + (r[11] - '0');
            snprintf(k->why, sizeof(k->why), "HTTP status %d", code);
            check_done(k, code >= 200 && code < 400, k->why);
        } else {
            check_done(k, false,
                       nread < 0 ? "connection closed without a response"
                                 : "malformed HTTP response");
        }
    }
    (void)buf;
}

static void on_check_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    struct pod_check *k = h->data;
    *buf = uv_buf_init(k->resp + k->rlen, (unsigned)(sizeof(k->resp) - k->rlen));
}

static void on_check_written(uv_write_t *w, int status)
{
    struct pod_check *k = w->data;
    if (status < 0 && !k->finished) {
        snprintf(k->why, sizeof(k->why), "write: %s", uv_strerror(status));
        check_done(k, false, k->why);
    }
}

static void on_check_connect(uv_connect_t *cr, int status)
{
    struct pod_check *k = cr->data;
    if (k->finished) {
        return;
    }
    if (status < 0) {
        snprintf(k->why, sizeof(k->why), "connect: %s", uv_strerror(status));
        check_done(k, false, k->why);
        return;
    }
    if (!k->req) {
        check_done(k, true, "connected");
        return;
    }
    uv_buf_t b = uv_buf_init(k->req, (unsigned)strlen(k->req));
    k->wr.data = k;
    uv_write(&k->wr, (uv_stream_t *)&k->tcp, &b, 1, on_check_written);
    uv_read_start((uv_stream_t *)&k->tcp, on_check_alloc, on_check_read);
}

static void on_sleep_done(uv_timer_t *t)
{
    check_done(t->data, true, "slept");
}

static int resolve_port(const struct pod_container *c, const char *port)
{
    uint64_t v;
    if (sc_str_to_u64(sc_str_c(port), 65535, &v) == 0) {
        return (int)v;
    }
    for (size_t i = 0; i < c->ports.n; i++) {
        const struct pod_port *p = (const struct pod_port *)c->ports.v + i;
        if (p->name && strcmp(p->name, port) == 0) {
            return (int)p->container_port;
        }
    }
    return -1;
}

static char **exec_argv(struct pod_ctr *c, const struct sc_strv *cmd);
static void free_strv(char **v);

/* Starts a check for container <c>; <cb> is called once with the result (not when cancelled).
 * Returns the check, which the caller may cancel until the callback has run. */
static struct pod_check *check_start(struct pod_ctr *c, const struct pod_exec_action *ex,
                                     const struct pod_http_get *hg, const struct pod_tcp_socket *ts,
                                     const struct pod_sleep_action *sl, uint64_t timeout_ms,
                                     check_cb cb, void *arg)
{
    struct pod *pod = c->pod;
    struct pod_check *k = SC_NEW(struct pod_check);
    k->pod = pod;
    k->cb = cb;
    k->arg = arg;
    k->next = pod->checks;
    pod->checks = k;
    uv_timer_init(pod->loop, &k->timer);
    k->timer.data = k;
    k->open = 1;
    if (sl && sl->set) {
        uv_timer_start(&k->timer, on_sleep_done, (uint64_t)sl->seconds * 1000, 0);
        return k;
    }
    uv_timer_start(&k->timer, on_check_timeout, timeout_ms, 0);
    if (ex && ex->set) {
        char **argv = exec_argv(c, &ex->command);
        uv_process_options_t o = { 0 };
        uv_stdio_container_t stdio[3] = { { .flags = UV_IGNORE },
                                          { .flags = UV_IGNORE },
                                          { .flags = UV_IGNORE } };
        o.file = argv[0];
        o.args = argv;
        o.env = c->envp;
        o.cwd = c->cwd;
        o.flags = UV_PROCESS_DETACHED;
        o.stdio = stdio;
        o.stdio_count = 3;
        o.exit_cb = on_check_exit;
        k->proc.data = k;
        int rc = uv_spawn(pod->loop, &k->proc, &o);
        free_strv(argv);
        k->has_proc = true;
        k->open++;
        if (rc < 0) {
            snprintf(k->why, sizeof(k->why), "exec: %s", uv_strerror(rc));
            check_done(k, false, k->why);
        } else {
            k->proc_alive = true;
        }
        return k;
    }
    const char *host = "127.0.0.1";
    int port = -1;
    if (hg && hg->set) {
        host = hg->host ? hg->host : host;
        port = resolve_port(c->spec, hg->port);
        struct sc_buf b;
        sc_buf_init(&b, 65536);
        sc_buf_appendf(&b, "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: sidecar-pod-probe\r\n",
                       hg->path ? hg->path : "/", host, port);
        for (size_t i = 0; i < hg->headers.n; i++) {
            const struct pod_kv_pair *h = (const struct pod_kv_pair *)hg->headers.v + i;
            sc_buf_appendf(&b, "%s: %s\r\n", h->name ? h->name : "", h->value ? h->value : "");
        }
        sc_buf_append_cstr(&b, "Connection: close\r\n\r\n");
        k->req = sc_strdup(sc_buf_cstr(&b));
        sc_buf_cleanup(&b);
    } else if (ts && ts->set) {
        host = ts->host ? ts->host : host;
        port = resolve_port(c->spec, ts->port);
    }
    struct sockaddr_storage sa;
    int rc = port > 0 ? uv_ip4_addr(host, port, (struct sockaddr_in *)&sa) : UV_EINVAL;
    if (rc < 0 && port > 0) {
        rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&sa);
    }
    uv_tcp_init(pod->loop, &k->tcp);
    k->tcp.data = k;
    k->has_tcp = true;
    k->open++;
    if (rc == 0) {
        k->conn.data = k;
        rc = uv_tcp_connect(&k->conn, &k->tcp, (struct sockaddr *)&sa, on_check_connect);
    }
    if (rc < 0) {
        snprintf(k->why, sizeof(k->why), "cannot connect to %s:%d: %s", host, port,
                 uv_strerror(rc));
        check_done(k, false, k->why);
    }
    return k;
}

/* ---- probes ---- */

static const char *probe_name(enum probe_kind k)
{
    return k == PROBE_STARTUP ? "startup" : k == PROBE_READINESS ? "readiness" : "liveness";
}

static void prober_stop(struct pod_prober *pr)
{
    if (!pr->active) {
        return;
    }
    pr->active = false;
    uv_timer_stop(&pr->timer);
    check_cancel(pr->chk);
    pr->chk = NULL;
}

static void on_probe_tick(uv_timer_t *t);
static void ctr_kill_for_restart(struct pod_ctr *c, const char *why);

static void on_probe_result(void *arg, bool ok, const char *why)
{
    struct pod_prober *pr = arg;
    struct pod_ctr *c = pr->c;
    pr->chk = NULL;
    if (!pr->active) {
        return;
    }
    if (ok) {
        pr->succ++;
        pr->fail = 0;
    } else {
        pr->fail++;
        pr->succ = 0;
        sc_debug("probe failed", SC_LS("container", c->spec->name),
                 SC_LS("probe", probe_name(pr->kind)), SC_LS("reason", why));
    }
    switch (pr->kind) {
    case PROBE_STARTUP:
        if (ok) {
            prober_stop(pr);
            sc_info("startup probe succeeded", SC_LS("container", c->spec->name));
            c->started = c->was_started = true;
            for (int i = PROBE_READINESS; i <= PROBE_LIVENESS; i++) {
                if (c->probes[i].spec->set) {
                    c->probes[i].active = true;
                    uv_timer_start(&c->probes[i].timer, on_probe_tick,
                                   (uint64_t)(c->probes[i].spec->initial_delay_s * 1000), 0);
                }
            }
            c->ready = !c->spec->readiness_probe.set;
            update_ready(c->pod);
            pod_advance(c->pod);
        } else if (pr->fail >= pr->spec->failure_threshold) {
            sc_error("startup probe failed: restarting the container",
                     SC_LS("container", c->spec->name), SC_LS("reason", why),
                     SC_LI("failures", pr->fail));
            prober_stop(pr);
            ctr_kill_for_restart(c, "startup probe failed");
        }
        break;
    case PROBE_READINESS:
        if (ok && !c->ready && pr->succ >= pr->spec->success_threshold) {
            c->ready = true;
            sc_info("container ready", SC_LS("container", c->spec->name));
            update_ready(c->pod);
        } else if (!ok && c->ready && pr->fail >= pr->spec->failure_threshold) {
            c->ready = false;
            sc_warn("container not ready", SC_LS("container", c->spec->name), SC_LS("reason", why));
            update_ready(c->pod);
        }
        break;
    case PROBE_LIVENESS:
        if (!ok && pr->fail >= pr->spec->failure_threshold) {
            sc_warn("liveness probe failed: restarting the container",
                    SC_LS("container", c->spec->name), SC_LS("reason", why),
                    SC_LI("failures", pr->fail));
            prober_stop(pr);
            ctr_kill_for_restart(c, "liveness probe failed");
        }
        break;
    }
    if (pr->active) {
        uv_timer_start(&pr->timer, on_probe_tick, (uint64_t)(pr->spec->period_s * 1000), 0);
    }
}

static void on_probe_tick(uv_timer_t *t)
{
    struct pod_prober *pr = t->data;
    struct pod_ctr *c = pr->c;
    if (!pr->active || pr->chk || c->state != ST_RUNNING) {
        return;
    }
    const struct pod_probe_spec *s = pr->spec;
    pr->chk = check_start(c, &s->exec, &s->http_get, &s->tcp_socket, NULL,
                          (uint64_t)(s->timeout_s * 1000), on_probe_result, pr);
}

/* ---- containers ---- */

static void free_strv(char **v)
{
    for (size_t i = 0; v && v[i]; i++) {
        sc_free(v[i]);
    }
    sc_free(v);
}

static const char *unshare_bin(void)
{
    return access("/usr/bin/unshare", X_OK) == 0 ? "/usr/bin/unshare" : "/bin/unshare";
}

/* The wrapper that gives a container its private mount namespace with its volumes bound at their
 * mountPath: unshare(1) then sh, which binds and execs the command (same PID, same group). */
static const char mount_script[] =
    "while [ \"$1\" != -- ]; do mkdir -p \"$2\" && mount --bind \"$1\" \"$2\" || exit 126; "
    "if [ \"$3\" = ro ]; then mount -o remount,bind,ro \"$2\" || exit 126; fi; shift 3; done; "
    "shift; exec \"$@\"";

/* Returns a new argv running <cmd> (the container's expanded words) in <c>'s mounts. */
static char **wrap_argv(struct pod_ctr *c, char **cmd, size_t ncmd)
{
    size_t n = 0, cap = ncmd + 3 * c->nmnts + 12;
    char **v = sc_calloc(cap, sizeof(char *));
    if (c->nmnts > 0) {
        v[n++] = sc_strdup(unshare_bin());
        v[n++] = sc_strdup("--mount");
        v[n++] = sc_strdup("--propagation");
        v[n++] = sc_strdup("private");
        v[n++] = sc_strdup("/bin/sh");
        v[n++] = sc_strdup("-c");
        v[n++] = sc_strdup(mount_script);
        v[n++] = sc_strdup("sidecar-mount");
        for (size_t i = 0; i < c->nmnts; i++) {
            v[n++] = sc_strdup(c->mnts[i].src);
            v[n++] = sc_strdup(c->mnts[i].dst);
            v[n++] = sc_strdup(c->mnts[i].ro ? "ro" : "rw");
        }
        v[n++] = sc_strdup("--");
    }
    for (size_t i = 0; i < ncmd; i++) {
        v[n++] = sc_strdup(cmd[i]);
    }
    return v;
}

static const char *env_lookup(void *arg, const char *name, size_t len)
{
    char **envp = arg;
    for (size_t i = 0; envp && envp[i]; i++) {
        if (strncmp(envp[i], name, len) == 0 && envp[i][len] == '=') {
            return envp[i] + len + 1;
        }
    }
    return NULL;
}

static char **exec_argv(struct pod_ctr *c, const struct sc_strv *cmd)
{
    char **words = sc_calloc(cmd->n + 1, sizeof(char *));
    for (size_t i = 0; i < cmd->n; i++) {
        words[i] = sc_strdup(cmd->v[i]);
    }
    char **v = wrap_argv(c, words, cmd->n);
    free_strv(words);
    return v;
}

static void on_kill_timer(uv_timer_t *t)
{
    struct pod_ctr *c = t->data;
    if (c->state == ST_RUNNING) {
        sc_warn("grace period expired: sending SIGKILL", SC_LS("container", c->spec->name),
                SC_LI("pid", c->pid));
        kill(-c->pid, SIGKILL);
    }
}

static uint64_t remaining_ms(struct pod *pod)
{
    uint64_t now = now_ms(pod);
    return pod->deadline_ms > now ? pod->deadline_ms - now : 0;
}

/* Sends SIGTERM to <c>'s group and SIGKILL when <after_ms> has passed. */
static void ctr_term(struct pod_ctr *c, uint64_t after_ms)
{
    if (c->state != ST_RUNNING) {
        return;
    }
    sc_info("sending SIGTERM", SC_LS("container", c->spec->name), SC_LI("pid", c->pid),
            SC_LU("kill_after_ms", after_ms));
    kill(-c->pid, SIGTERM);
    uv_timer_start(&c->kill_timer, on_kill_timer, after_ms, 0);
}

static void ctr_kill_for_restart(struct pod_ctr *c, const char *why)
{
    if (c->state != ST_RUNNING || c->stopping) {
        return;
    }
    c->liveness_kill = true;
    check_cancel(c->hook);
    c->hook = NULL;
    sc_info("killing the container", SC_LS("container", c->spec->name), SC_LS("reason", why));
    ctr_term(c, (uint64_t)(c->pod->m->spec->grace_s * 1000));
}

static void on_restart_timer(uv_timer_t *t)
{
    struct pod_ctr *c = t->data;
    if (c->pod->phase >= PH_STOP_APPS) {
        return;
    }
    ctr_start(c);
}

static void schedule_restart(struct pod_ctr *c)
{
    struct pod *pod = c->pod;
    uint64_t ran = now_ms(pod) - c->run_start_ms;
    if (ran >= pod->cfg->backoff_reset_ms) {
        c->backoff_n = 0;
    }
    uint64_t delay =
        pod_backoff_ms(pod->cfg->backoff_base_ms, pod->cfg->backoff_max_ms, c->backoff_n);
    c->backoff_n++;
    sc_info("restarting after back-off", SC_LS("container", c->spec->name),
            SC_LU("delay_ms", delay), SC_LU("restarts", c->restarts + 1));
    uv_timer_start(&c->restart_timer, on_restart_timer, delay, 0);
}

static bool all_apps_done(struct pod *pod)
{
    for (size_t i = pod->ninit; i < pod->nctrs; i++) {
        if (!pod->ctrs[i].done) {
            return false;
        }
    }
    return true;
}

static void on_ctr_exit(uv_process_t *p, int64_t status, int sig)
{
    struct pod_proc *pp = p->data;
    struct pod_ctr *c = pp->c;
    struct pod *pod = pp->pod;
    pp->c = NULL;
    /* the container's other processes go with its main one, as in a PID namespace */
    kill(-p->pid, SIGKILL);
    uv_close((uv_handle_t *)p, on_proc_closed);
    if (!c) {
        return;
    }
    uv_timer_stop(&c->kill_timer);
    for (int i = 0; i < 3; i++) {
        prober_stop(&c->probes[i]);
    }
    if (c->hook && !c->stopping) {
        check_cancel(c->hook);
        c->hook = NULL;
    }
    c->pp = NULL;
    c->state = ST_TERMINATED;
    c->exit_code = sig ? 128 + sig : (int)status;
    c->started = false;
    c->ready = false;
    sc_gauge_set(c->m_running, 0);
    sc_gauge_set(c->m_ready, 0);
    if (sig) {
        sc_info("container exited", SC_LS("container", c->spec->name), SC_LI("signal", sig),
                SC_LI("exit_code", c->exit_code));
    } else {
        sc_info("container exited", SC_LS("container", c->spec->name),
                SC_LI("exit_code", c->exit_code));
    }
    update_ready(pod);
    if (pod->phase >= PH_STOP_APPS) {
        shutdown_step(pod);
        return;
    }
    bool failed = c->exit_code != 0 || c->liveness_kill;
    c->liveness_kill = false;
    int policy = pod->m->spec->restart_policy;
    switch (c->kind) {
    case CTR_INIT:
        if (!failed) {
            c->done = true;
            pod_advance(pod);
        } else if (policy == POD_RESTART_NEVER) {
            sc_error("init container failed and restartPolicy is Never: the pod failed",
                     SC_LS("container", c->spec->name), SC_LI("exit_code", c->exit_code));
            begin_shutdown(pod, c->exit_code ? c->exit_code : 1, "init container failed");
        } else {
            schedule_restart(c);
        }
        break;
    case CTR_SIDECAR:
        schedule_restart(c);
        break;
    case CTR_APP:
        if (policy == POD_RESTART_ALWAYS || (policy == POD_RESTART_ONFAILURE && failed)) {
            schedule_restart(c);
            break;
        }
        c->done = true;
        if (all_apps_done(pod)) {
            int code = 0;
            for (size_t i = pod->ninit; i < pod->nctrs; i++) {
                if (pod->ctrs[i].exit_code != 0 && code == 0) {
                    code = pod->ctrs[i].exit_code;
                }
            }
            sc_info("every app container has finished: stopping the sidecars",
                    SC_LI("exit_code", code));
            begin_shutdown(pod, code, "completed");
        }
        break;
    }
}

static void start_probes_after_post_start(struct pod_ctr *c)
{
    if (c->spec->startup_probe.set) {
        struct pod_prober *pr = &c->probes[PROBE_STARTUP];
        pr->active = true;
        pr->succ = pr->fail = 0;
        uv_timer_start(&pr->timer, on_probe_tick, (uint64_t)(pr->spec->initial_delay_s * 1000), 0);
        return;
    }
    c->started = c->was_started = true;
    for (int i = PROBE_READINESS; i <= PROBE_LIVENESS; i++) {
        struct pod_prober *pr = &c->probes[i];
        if (pr->spec->set) {
            pr->active = true;
            pr->succ = pr->fail = 0;
            uv_timer_start(&pr->timer, on_probe_tick, (uint64_t)(pr->spec->initial_delay_s * 1000),
                           0);
        }
    }
    c->ready = !c->spec->readiness_probe.set;
    if (c->ready) {
        sc_gauge_set(c->m_ready, 1);
    }
    update_ready(c->pod);
    pod_advance(c->pod);
}

static void on_post_start(void *arg, bool ok, const char *why)
{
    struct pod_ctr *c = arg;
    c->hook = NULL;
    if (!ok) {
        sc_error("postStart hook failed: killing the container", SC_LS("container", c->spec->name),
                 SC_LS("reason", why));
        c->liveness_kill = true;
        kill(-c->pid, SIGKILL);
        return;
    }
    start_probes_after_post_start(c);
}

static int open_log(struct pod_ctr *c)
{
    char *dir = sc_asprintf("%s/logs/%s", c->pod->dir, c->spec->name);
    mkdir(dir, 0755);
    char *path = sc_asprintf("%s/%u.log", dir, c->restarts);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        sc_warn("cannot open the container log", SC_LS("path", path), SC_LERR(-errno));
    }
    sc_free(path);
    sc_free(dir);
    return fd;
}

static void cgroup_add(struct pod_ctr *c)
{
    if (!c->cgroup) {
        return;
    }
    char *p = sc_asprintf("%s/cgroup.procs", c->cgroup);
    int fd = open(p, O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        char pid[32];
        int n = snprintf(pid, sizeof(pid), "%d\n", c->pid);
        if (write(fd, pid, (size_t)n) < 0) {
            sc_warn("cannot move the container into its cgroup", SC_LS("cgroup", c->cgroup),
                    SC_LERR(-errno));
        }
        close(fd);
    }
    sc_free(p);
}

static void ctr_start(struct pod_ctr *c)
{
    struct pod *pod = c->pod;
    if (c->ever_started) {
        c->restarts++;
        sc_counter_inc(c->m_restarts);
    }
    c->ever_started = true;
    c->stopping = false;
    c->run_start_ms = now_ms(pod);
    struct pod_proc *pp = SC_NEW(struct pod_proc);
    pp->pod = pod;
    pp->c = c;
    pp->log_fd = open_log(c);
    static const char *const colors[] = { "36", "33", "32", "35", "34", "31" };
    int w = (int)pod->name_width;
    pp->prefix = pod->color ? sc_asprintf("\033[%sm%-*s |\033[0m ",
                                          colors[c->order % SC_ARRAY_LEN(colors)], w, c->spec->name)
                            : sc_asprintf("%-*s | ", w, c->spec->name);
    pp->out = (struct pod_stream){ .pp = pp, .name = "stdout" };
    pp->err = (struct pod_stream){ .pp = pp, .name = "stderr" };
    sc_buf_init(&pp->out.line, LINE_MAX_BYTES);
    sc_buf_init(&pp->err.line, LINE_MAX_BYTES);
    uv_pipe_init(pod->loop, &pp->out.pipe, 0);
    uv_pipe_init(pod->loop, &pp->err.pipe, 0);
    pp->out.pipe.data = &pp->out;
    pp->err.pipe.data = &pp->err;
    pp->proc.data = pp;
    pp->open = 2;
    pp->next = pod->procs;
    pod->procs = pp;

    uv_stdio_container_t stdio[3] = {
        { .flags = UV_IGNORE },
        { .flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&pp->out.pipe },
        { .flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&pp->err.pipe },
    };
    uv_process_options_t o = { 0 };
    o.file = c->argv[0];
    o.args = c->argv;
    o.env = c->envp;
    o.cwd = c->cwd;
    o.flags = UV_PROCESS_DETACHED;
    o.stdio = stdio;
    o.stdio_count = 3;
    o.exit_cb = on_ctr_exit;
    int rc = uv_spawn(pod->loop, &pp->proc, &o);
    if (rc < 0) {
        sc_error("cannot start the container", SC_LS("container", c->spec->name),
                 SC_LS("command", c->argv[0]), SC_LS("error", uv_strerror(rc)));
        pp->c = NULL;
        pp->open++;
        uv_close((uv_handle_t *)&pp->proc, on_proc_closed);
        uv_close((uv_handle_t *)&pp->out.pipe, on_stream_closed);
        uv_close((uv_handle_t *)&pp->err.pipe, on_stream_closed);
        c->state = ST_TERMINATED;
        c->exit_code = 128;
        if (c->kind == CTR_INIT && pod->m->spec->restart_policy == POD_RESTART_NEVER) {
            begin_shutdown(pod, 1, "init container failed to start");
        } else if (c->kind == CTR_APP && pod->m->spec->restart_policy == POD_RESTART_NEVER) {
            c->done = true;
            if (all_apps_done(pod)) {
                begin_shutdown(pod, 128, "container failed to start");
            }
        } else {
            schedule_restart(c);
        }
        return;
    }
    pp->open++;
    uv_read_start((uv_stream_t *)&pp->out.pipe, on_alloc, on_read);
    uv_read_start((uv_stream_t *)&pp->err.pipe, on_alloc, on_read);
    c->pp = pp;
    c->pid = pp->proc.pid;
    c->state = ST_RUNNING;
    sc_gauge_set(c->m_running, 1);
    cgroup_add(c);
    sc_info("container started", SC_LS("container", c->spec->name),
            SC_LS("type", kind_name(c->kind)), SC_LI("pid", c->pid),
            SC_LU("restarts", c->restarts));
    const struct pod_handler *h = &c->spec->lifecycle.post_start;
    if (h->set) {
        c->hook = check_start(c, &h->exec, &h->http_get, &h->tcp_socket, &h->sleep,
                              (uint64_t)(pod->m->spec->grace_s * 1000) + 60000, on_post_start, c);
        return;
    }
    start_probes_after_post_start(c);
}

/* ---- the pod ---- */

static void update_ready(struct pod *pod)
{
    bool ready = pod->apps_started && pod->phase == PH_RUNNING;
    for (size_t i = 0; i < pod->nctrs; i++) {
        struct pod_ctr *c = &pod->ctrs[i];
        sc_gauge_set(c->m_ready, c->ready ? 1 : 0);
        if (c->kind != CTR_INIT && !c->ready) {
            ready = false;
        }
    }
    sc_app_set_ready(pod->app, ready);
}

static void pod_advance(struct pod *pod)
{
    if (pod->phase != PH_STARTING) {
        return;
    }
    for (size_t i = 0; i < pod->ninit; i++) {
        struct pod_ctr *c = &pod->ctrs[i];
        if (!c->ever_started) {
            ctr_start(c);
            return;
        }
        if (c->kind == CTR_INIT && !c->done) {
            return;
        }
        if (c->kind == CTR_SIDECAR && !c->was_started) {
            return;
        }
    }
    pod->phase = PH_RUNNING;
    pod->apps_started = true;
    sc_info("starting the app containers", SC_LU("count", pod->nctrs - pod->ninit));
    for (size_t i = pod->ninit; i < pod->nctrs && pod->phase == PH_RUNNING; i++) {
        ctr_start(&pod->ctrs[i]);
    }
    update_ready(pod);
}

static void on_pre_stop(void *arg, bool ok, const char *why)
{
    struct pod_ctr *c = arg;
    c->hook = NULL;
    if (!ok) {
        sc_warn("preStop hook failed", SC_LS("container", c->spec->name), SC_LS("reason", why));
    }
    uint64_t rem = remaining_ms(c->pod);
    ctr_term(c, rem > 0 ? rem : MIN_KILL_MS);
}

/* Runs <c>'s preStop hook, then SIGTERM, then SIGKILL at the end of the grace period. */
static void ctr_stop(struct pod_ctr *c)
{
    if (c->state != ST_RUNNING || c->stopping) {
        return;
    }
    c->stopping = true;
    check_cancel(c->hook); /* a postStart still running */
    c->hook = NULL;
    for (int i = 0; i < 3; i++) {
        prober_stop(&c->probes[i]);
    }
    uint64_t rem = remaining_ms(c->pod);
    const struct pod_handler *h = &c->spec->lifecycle.pre_stop;
    if (h->set && rem > 0 && !c->pod->grace_expired) {
        sc_info("running the preStop hook", SC_LS("container", c->spec->name));
        c->hook =
            check_start(c, &h->exec, &h->http_get, &h->tcp_socket, &h->sleep, rem, on_pre_stop, c);
        return;
    }
    ctr_term(c, rem > 0 ? rem : MIN_KILL_MS);
}

static void on_grace_timer(uv_timer_t *t)
{
    struct pod *pod = t->data;
    pod->grace_expired = true;
}

static void ctl_close(struct pod *pod);

static void on_closed_noop(uv_handle_t *h)
{
    (void)h;
}

static void close_ctr_handles(struct pod_ctr *c)
{
    uv_close((uv_handle_t *)&c->restart_timer, on_closed_noop);
    uv_close((uv_handle_t *)&c->kill_timer, on_closed_noop);
    for (int i = 0; i < 3; i++) {
        uv_close((uv_handle_t *)&c->probes[i].timer, on_closed_noop);
    }
}

/* Once every container has stopped: closes the pod's handles and reports the drain done. */
static void maybe_finish(struct pod *pod)
{
    if (pod->phase != PH_DONE || pod->finished) {
        return;
    }
    for (size_t i = 0; i < pod->nctrs; i++) {
        if (pod->ctrs[i].state == ST_RUNNING || pod->ctrs[i].hook) {
            return;
        }
    }
    pod->finished = true;
    for (size_t i = 0; i < pod->nctrs; i++) {
        close_ctr_handles(&pod->ctrs[i]);
    }
    uv_close((uv_handle_t *)&pod->grace_timer, on_closed_noop);
    ctl_close(pod);
    /* output a detached grandchild still holds open is cut: the pod is over */
    for (struct pod_proc *pp = pod->procs; pp; pp = pp->next) {
        if (!uv_is_closing((uv_handle_t *)&pp->out.pipe)) {
            uv_close((uv_handle_t *)&pp->out.pipe, on_stream_closed);
        }
        if (!uv_is_closing((uv_handle_t *)&pp->err.pipe)) {
            uv_close((uv_handle_t *)&pp->err.pipe, on_stream_closed);
        }
    }
    for (struct pod_check *k = pod->checks; k; k = k->next) {
        check_cancel(k);
    }
    sc_info("pod stopped", SC_LS("pod", pod->m->name), SC_LI("exit_code", pod->exit_code));
    sc_app_stopped(pod->app, pod->exit_code);
}

static void shutdown_step(struct pod *pod)
{
    if (pod->phase == PH_STOP_APPS) {
        for (size_t i = 0; i < pod->nctrs; i++) {
            struct pod_ctr *c = &pod->ctrs[i];
            if (c->kind != CTR_SIDECAR && c->state == ST_RUNNING) {
                return;
            }
        }
        pod->phase = PH_STOP_SIDECARS;
    }
    if (pod->phase == PH_STOP_SIDECARS) {
        for (size_t i = pod->ninit; i-- > 0;) {
            struct pod_ctr *c = &pod->ctrs[i];
            if (c->kind == CTR_SIDECAR && c->state == ST_RUNNING) {
                ctr_stop(c);
                return; /* one at a time, in reverse order */
            }
        }
        pod->phase = PH_DONE;
    }
    maybe_finish(pod);
}

static void begin_shutdown(struct pod *pod, int code, const char *why)
{
    if (pod->phase >= PH_STOP_APPS) {
        return;
    }
    pod->phase = PH_STOP_APPS;
    pod->exit_code = code;
    uint64_t grace = (uint64_t)(pod->m->spec->grace_s * 1000);
    pod->deadline_ms = now_ms(pod) + grace;
    uv_timer_start(&pod->grace_timer, on_grace_timer, grace, 0);
    sc_info("stopping the pod", SC_LS("reason", why), SC_LU("grace_ms", grace));
    sc_app_set_ready(pod->app, false);
    for (size_t i = 0; i < pod->nctrs; i++) {
        struct pod_ctr *c = &pod->ctrs[i];
        uv_timer_stop(&c->restart_timer);
        for (int k = 0; k < 3; k++) {
            prober_stop(&c->probes[k]);
        }
        if (c->kind != CTR_SIDECAR) {
            ctr_stop(c);
        }
    }
    if (!sc_app_draining(pod->app)) {
        sc_app_drain(pod->app); /* calls pod_stop, which finds the pod already stopping */
    }
    shutdown_step(pod);
}

/* ---- set-up: volumes, environment, commands ---- */

static int mkdirs(const char *path, mode_t mode)
{
    char *p = sc_strdup(path);
    int rc = 0;
    for (char *s = p + 1; *s; s++) {
        if (*s == '/') {
            *s = '\0';
            if (mkdir(p, mode) < 0 && errno != EEXIST) {
                rc = -errno;
            }
            *s = '/';
        }
    }
    if (rc == 0 && mkdir(p, mode) < 0 && errno != EEXIST) {
        rc = -errno;
    }
    sc_free(p);
    return rc;
}

static char *read_file(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return NULL;
    }
    struct sc_buf b;
    sc_buf_init(&b, 1 << 20);
    char tmp[4096];
    ssize_t n;
    while ((n = read(fd, tmp, sizeof(tmp))) > 0) {
        if (sc_buf_append(&b, tmp, (size_t)n) < 0) {
            break;
        }
    }
    close(fd);
    char *s = sc_strndup(b.p ? b.p : "", b.len);
    sc_buf_cleanup(&b);
    return s;
}

/* Copies the regular files of <from> into <to> with <mode>. */
static int copy_dir(const char *from, const char *to, int mode, char **err)
{
    DIR *d = opendir(from);
    if (!d) {
        *err = sc_asprintf("cannot open %s: %s", from, strerror(errno));
        return SC_ECONFIG;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') {
            continue;
        }
        char *src = sc_asprintf("%s/%s", from, e->d_name);
        char *dst = sc_asprintf("%s/%s", to, e->d_name);
        struct stat st;
        if (stat(src, &st) == 0 && S_ISREG(st.st_mode)) {
            char *data = read_file(src);
            int fd = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
            if (fd >= 0 && data) {
                ssize_t w = write(fd, data, strlen(data));
                (void)w;
                fchmod(fd, (mode_t)mode);
            }
            if (fd >= 0) {
                close(fd);
            }
            sc_free(data);
        }
        sc_free(src);
        sc_free(dst);
    }
    closedir(d);
    return 0;
}

static const char *volume_dir(struct pod *pod, const char *name, char **owned)
{
    const struct pod_spec *s = pod->m->spec;
    for (size_t i = 0; i < s->volumes.n; i++) {
        const struct pod_volume *v = (const struct pod_volume *)s->volumes.v + i;
        if (strcmp(v->name, name) == 0) {
            if (v->host_path.set) {
                *owned = NULL;
                return v->host_path.path;
            }
        }
    }
    *owned = sc_asprintf("%s/volumes/%s", pod->dir, name);
    return *owned;
}

static int setup_volumes(struct pod *pod, char **err)
{
    const struct pod_spec *s = pod->m->spec;
    for (size_t i = 0; i < s->volumes.n; i++) {
        const struct pod_volume *v = (const struct pod_volume *)s->volumes.v + i;
        if (v->host_path.set) {
            const char *t = v->host_path.type ? v->host_path.type : "";
            if (strcmp(t, "DirectoryOrCreate") == 0) {
                mkdirs(v->host_path.path, 0755);
            } else if (access(v->host_path.path, F_OK) < 0 && *t) {
                *err = sc_asprintf("volume %s: hostPath %s does not exist (type %s)", v->name,
                                   v->host_path.path, t);
                return SC_ECONFIG;
            }
            continue;
        }
        char *dir = sc_asprintf("%s/volumes/%s", pod->dir, v->name);
        mkdirs(dir, 0777);
        chmod(dir, 0777); /* emptyDir is world-writable, as the kubelet makes it */
        if (v->empty_dir.set && v->empty_dir.medium && strcmp(v->empty_dir.medium, "Memory") == 0) {
            uint64_t size = 0;
            if (v->empty_dir.size_limit) {
                pod_parse_memory(v->empty_dir.size_limit, &size);
            }
            char opts[64];
            snprintf(opts, sizeof(opts), size ? "mode=1777,size=%llu" : "mode=1777",
                     (unsigned long long)size);
            if (geteuid() != 0 || mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0) {
                sc_warn("emptyDir medium Memory: cannot mount a tmpfs here; using a directory",
                        SC_LS("volume", v->name));
            }
        }
        if (v->config_map.set || v->secret.set) {
            const struct pod_config_volume *cv = v->config_map.set ? &v->config_map : &v->secret;
            const char *name = v->config_map.set ? cv->name : cv->secret_name;
            char *src = sc_asprintf("%s/%s", pod->config_dir, name);
            char *e = NULL;
            if (copy_dir(src, dir, (int)cv->default_mode, &e) < 0 && !cv->optional) {
                *err =
                    sc_asprintf("volume %s: %s %s is read from the directory %s (set "
                                "--config-dir): %s",
                                v->name, v->config_map.set ? "configMap" : "secret", name, src, e);
                sc_free(e);
                sc_free(src);
                sc_free(dir);
                return SC_ECONFIG;
            }
            sc_free(e);
            sc_free(src);
        }
        sc_free(dir);
    }
    return 0;
}

struct envl {
    char **v; /* "K=V", NULL-terminated */
    size_t n;
};

static void env_set(struct envl *e, const char *k, const char *val)
{
    size_t kl = strlen(k);
    char *kv = sc_asprintf("%s=%s", k, val);
    for (size_t i = 0; i < e->n; i++) {
        if (strncmp(e->v[i], k, kl) == 0 && e->v[i][kl] == '=') {
            sc_free(e->v[i]);
            e->v[i] = kv;
            return;
        }
    }
    e->v = sc_reallocarray(e->v, e->n + 2, sizeof(char *));
    e->v[e->n++] = kv;
    e->v[e->n] = NULL;
}

static const char *kv_get(const struct sc_kvv *kv, const char *k, size_t len)
{
    for (size_t i = 0; i < kv->n; i++) {
        if (strlen(kv->v[i].key) == len && strncmp(kv->v[i].key, k, len) == 0) {
            return kv->v[i].value;
        }
    }
    return NULL;
}

static const char *field_value(struct pod *pod, const char *fp)
{
    const struct pod_meta *m = pod->m->meta;
    if (strcmp(fp, "metadata.name") == 0) {
        return pod->m->name;
    }
    if (strcmp(fp, "metadata.namespace") == 0) {
        return m->namespace_ ? m->namespace_ : "default";
    }
    if (strcmp(fp, "metadata.uid") == 0) {
        return pod->dir;
    }
    if (strcmp(fp, "spec.nodeName") == 0) {
        return pod->hostname;
    }
    if (strcmp(fp, "spec.serviceAccountName") == 0) {
        return pod->m->spec->service_account_name ? pod->m->spec->service_account_name : "default";
    }
    if (strncmp(fp, "status.", 7) == 0) {
        return "127.0.0.1";
    }
    bool labels = strncmp(fp, "metadata.labels['", 17) == 0;
    const char *k = fp + (labels ? 17 : 22);
    const char *end = strstr(k, "']");
    if (!end) {
        return "";
    }
    const char *v = kv_get(labels ? &m->labels : &m->annotations, k, (size_t)(end - k));
    return v ? v : "";
}

static bool path_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
}

/* Without root, rewrites every mountPath in <s> (a whole path component: "/data" matches
 * "/data/x" but not "/database") into its volume's directory. Returns a new string. */
static char *rewrite(struct pod_ctr *c, const char *s)
{
    if (geteuid() == 0 || c->spec->mounts.n == 0) {
        return sc_strdup(s);
    }
    struct sc_buf b;
    sc_buf_init(&b, SIZE_MAX / 2);
    for (size_t i = 0; s[i];) {
        const struct pod_mount *best = NULL;
        size_t blen = 0;
        for (size_t k = 0; k < c->spec->mounts.n; k++) {
            const struct pod_mount *m = (const struct pod_mount *)c->spec->mounts.v + k;
            size_t n = strlen(m->mount_path);
            while (n > 1 && m->mount_path[n - 1] == '/') {
                n--;
            }
            if (n > blen && strncmp(s + i, m->mount_path, n) == 0 && !path_char(s[i + n]) &&
                (i == 0 || !path_char(s[i - 1]))) {
                best = m;
                blen = n;
            }
        }
        if (!best) {
            sc_buf_append(&b, s + i, 1);
            i++;
            continue;
        }
        char *own = NULL;
        const char *dir = volume_dir(c->pod, best->name, &own);
        sc_buf_append_cstr(&b, dir);
        if (best->sub_path) {
            sc_buf_appendf(&b, "/%s", best->sub_path);
        }
        sc_free(own);
        i += blen;
    }
    char *out = sc_strndup(b.p ? b.p : "", b.len);
    sc_buf_cleanup(&b);
    return out;
}

static int setup_ctr(struct pod *pod, struct pod_ctr *c, char **err)
{
    const struct pod_container *s = c->spec;
    struct envl e = { 0 };
    e.v = sc_calloc(1, sizeof(char *));
    const char *inherit[] = { "PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "TERM", NULL };
    for (size_t i = 0; inherit[i]; i++) {
        const char *v = getenv(inherit[i]);
        if (v) {
            env_set(&e, inherit[i], v);
        }
    }
    if (!getenv("PATH")) {
        env_set(&e, "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    }
    env_set(&e, "HOSTNAME", pod->m->spec->hostname ? pod->m->spec->hostname : pod->m->name);
    env_set(&e, "SIDECAR_POD_DIR", pod->dir);
    int rc = 0;
    for (size_t i = 0; i < s->env_from.n && rc == 0; i++) {
        const struct pod_env_from *f = (const struct pod_env_from *)s->env_from.v + i;
        const struct pod_name_ref *r = f->config_map_ref.set ? &f->config_map_ref : &f->secret_ref;
        char *dir = sc_asprintf("%s/%s", pod->config_dir, r->name);
        DIR *d = opendir(dir);
        if (!d && !r->optional) {
            *err = sc_asprintf("container %s: envFrom %s is read from the directory %s (set "
                               "--config-dir): %s",
                               s->name, r->name, dir, strerror(errno));
            rc = SC_ECONFIG;
        }
        struct dirent *de;
        while (d && (de = readdir(d))) {
            if (de->d_name[0] == '.') {
                continue;
            }
            char *p = sc_asprintf("%s/%s", dir, de->d_name);
            char *val = read_file(p);
            char *k = sc_asprintf("%s%s", f->prefix ? f->prefix : "", de->d_name);
            if (val) {
                env_set(&e, k, val);
            }
            sc_free(k);
            sc_free(val);
            sc_free(p);
        }
        if (d) {
            closedir(d);
        }
        sc_free(dir);
    }
    for (size_t i = 0; i < s->env.n && rc == 0; i++) {
        const struct pod_env *v = (const struct pod_env *)s->env.v + i;
        const struct pod_env_source *vf = &v->value_from;
        if (vf->field_ref.set) {
            env_set(&e, v->name, field_value(pod, vf->field_ref.field_path));
        } else if (vf->config_map_key_ref.set || vf->secret_key_ref.set) {
            const struct pod_key_ref *kr =
                vf->config_map_key_ref.set ? &vf->config_map_key_ref : &vf->secret_key_ref;
            char *p = sc_asprintf("%s/%s/%s", pod->config_dir, kr->name, kr->key);
            char *val = read_file(p);
            if (val) {
                env_set(&e, v->name, val);
            } else if (!kr->optional) {
                *err = sc_asprintf("container %s: env %s: cannot read %s (set --config-dir)",
                                   s->name, v->name, p);
                rc = SC_ECONFIG;
            }
            sc_free(val);
            sc_free(p);
        } else {
            char *x = pod_expand(v->value ? v->value : "", env_lookup, e.v);
            char *y = rewrite(c, x);
            env_set(&e, v->name, y);
            sc_free(x);
            sc_free(y);
        }
    }
    /* volumes: bind mounts as root, else rewritten paths */
    bool root = geteuid() == 0;
    for (size_t i = 0; i < s->mounts.n && rc == 0; i++) {
        const struct pod_mount *m = (const struct pod_mount *)s->mounts.v + i;
        char *own = NULL;
        const char *dir = volume_dir(pod, m->name, &own);
        char *src = m->sub_path ? sc_asprintf("%s/%s", dir, m->sub_path) : sc_strdup(dir);
        if (m->sub_path) {
            mkdirs(src, 0777);
        }
        sc_free(own);
        if (root) {
            c->mnts = sc_reallocarray(c->mnts, c->nmnts + 1, sizeof(*c->mnts));
            c->mnts[c->nmnts++] = (struct pod_mnt){ src, sc_strdup(m->mount_path), m->read_only };
        } else {
            char name[128] = "SIDECAR_MOUNT_";
            size_t n = strlen(name);
            for (const char *p = m->mount_path + 1; *p && n + 1 < sizeof(name); p++) {
                name[n++] = (*p >= 'a' && *p <= 'z') ? (char)(*p - 32)
                            : ((*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')) ? *p
                                                                                     : '_';
            }
            name[n] = '\0';
            env_set(&e, name, src);
            sc_warn("not root: mountPath is rewritten into the pod directory",
                    SC_LS("container", s->name), SC_LS("mountPath", m->mount_path),
                    SC_LS("path", src), SC_LS("env", name));
            sc_free(src);
        }
    }
    c->envp = e.v;
    if (rc < 0) {
        return rc;
    }
    /* command and args, expanded against the container's environment */
    size_t n = s->command.n + s->args.n;
    char **words = sc_calloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        const char *w = i < s->command.n ? s->command.v[i] : s->args.v[i - s->command.n];
        char *x = pod_expand(w, env_lookup, c->envp);
        words[i] = rewrite(c, x);
        sc_free(x);
    }
    c->argv = wrap_argv(c, words, n);
    free_strv(words);
    if (s->working_dir) {
        c->cwd = rewrite(c, s->working_dir);
        if (root && c->nmnts == 0) {
            mkdirs(c->cwd, 0755);
        } else if (!root) {
            mkdirs(c->cwd, 0755);
        }
    }
    if (s->image) {
        sc_info("image is not pulled: the command runs on the host", SC_LS("container", s->name),
                SC_LS("image", s->image));
    }
    /* resources.limits through cgroup v2 */
    if (s->resources.set && s->resources.limits.n > 0) {
        if (access("/sys/fs/cgroup/cgroup.controllers", F_OK) < 0 ||
            access("/sys/fs/cgroup", W_OK) < 0) {
            sc_warn("resources.limits not enforced: cgroup v2 is not available or not writable "
                    "here",
                    SC_LS("container", s->name));
        } else {
            char *cg = sc_asprintf("/sys/fs/cgroup/sidecar-pod-%d-%s", (int)getpid(), s->name);
            if (mkdir(cg, 0755) < 0 && errno != EEXIST) {
                sc_warn("resources.limits not enforced: cannot create a cgroup",
                        SC_LS("cgroup", cg), SC_LERR(-errno));
                sc_free(cg);
            } else {
                c->cgroup = cg;
                for (size_t i = 0; i < s->resources.limits.n; i++) {
                    const struct sc_kv *q = &s->resources.limits.v[i];
                    uint64_t v = 0;
                    char val[64];
                    const char *file;
                    if (strcmp(q->key, "cpu") == 0 && pod_parse_cpu(q->value, &v) == 0) {
                        snprintf(val, sizeof(val), "%llu 100000", (unsigned long long)(v * 100));
                        file = "cpu.max";
                    } else if (pod_parse_memory(q->value, &v) == 0) {
                        snprintf(val, sizeof(val), "%llu", (unsigned long long)v);
                        file = "memory.max";
                    } else {
                        continue;
                    }
                    char *p = sc_asprintf("%s/%s", cg, file);
                    int fd = open(p, O_WRONLY | O_CLOEXEC);
                    if (fd < 0 || write(fd, val, strlen(val)) < 0) {
                        sc_warn("resources.limits: cannot set", SC_LS("file", p), SC_LERR(-errno));
                    }
                    if (fd >= 0) {
                        close(fd);
                    }
                    sc_free(p);
                }
            }
        }
    }
    return 0;
}

/* ---- status: admin JSON, control socket, metrics ---- */

static json_t *status_json(struct pod *pod)
{
    const char *phase = pod->phase == PH_STARTING  ? "Pending"
                        : pod->phase == PH_RUNNING ? "Running"
                                                   : "Terminating";
    json_t *cs = json_array();
    for (size_t i = 0; i < pod->nctrs; i++) {
        struct pod_ctr *c = &pod->ctrs[i];
        json_t *o = json_object();
        json_object_set_new(o, "name", json_string(c->spec->name));
        json_object_set_new(o, "type", json_string(kind_name(c->kind)));
        json_object_set_new(o, "state", json_string(state_name(c->state)));
        json_object_set_new(o, "ready", json_boolean(c->ready));
        json_object_set_new(o, "started", json_boolean(c->started));
        json_object_set_new(o, "restarts", json_integer(c->restarts));
        json_object_set_new(o, "pid", c->state == ST_RUNNING ? json_integer(c->pid) : json_null());
        json_object_set_new(o, "exit_code",
                            c->state == ST_TERMINATED ? json_integer(c->exit_code) : json_null());
        json_array_append_new(cs, o);
    }
    json_t *j = json_object();
    json_object_set_new(j, "name", json_string(pod->m->name));
    json_object_set_new(j, "dir", json_string(pod->dir));
    json_object_set_new(j, "phase", json_string(phase));
    json_object_set_new(j, "containers", cs);
    return j;
}

static char *status_text(struct pod *pod)
{
    json_t *j = status_json(pod);
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(j);
    return s;
}

static void h_pod(void *arg, const struct sc_admin_req *req, struct sc_admin_resp *resp)
{
    (void)req;
    char *s = status_text(arg);
    resp->content_type = "application/json";
    if (s) {
        sc_buf_append_cstr(&resp->body, s);
        sc_buf_append(&resp->body, "\n", 1);
    }
    sc_free(s);
}

struct ctl_client {
    uv_pipe_t pipe;
    uv_write_t wr;
    char *data;
};

static void on_ctl_client_closed(uv_handle_t *h)
{
    struct ctl_client *cc = h->data;
    sc_free(cc->data);
    sc_free(cc);
}

static void on_ctl_written(uv_write_t *w, int status)
{
    (void)status;
    struct ctl_client *cc = w->data;
    uv_close((uv_handle_t *)&cc->pipe, on_ctl_client_closed);
}

static void on_ctl_conn(uv_stream_t *server, int status)
{
    struct pod *pod = server->data;
    if (status < 0) {
        return;
    }
    struct ctl_client *cc = SC_NEW(struct ctl_client);
    uv_pipe_init(pod->loop, &cc->pipe, 0);
    cc->pipe.data = cc;
    if (uv_accept(server, (uv_stream_t *)&cc->pipe) < 0) {
        uv_close((uv_handle_t *)&cc->pipe, on_ctl_client_closed);
        return;
    }
    char *s = status_text(pod);
    cc->data = sc_asprintf("%s\n", s ? s : "{}");
    sc_free(s);
    cc->wr.data = cc;
    uv_buf_t b = uv_buf_init(cc->data, (unsigned)strlen(cc->data));
    if (uv_write(&cc->wr, (uv_stream_t *)&cc->pipe, &b, 1, on_ctl_written) < 0) {
        uv_close((uv_handle_t *)&cc->pipe, on_ctl_client_closed);
    }
}

static void ctl_close(struct pod *pod)
{
    if (pod->ctl_open) {
        pod->ctl_open = false;
        uv_close((uv_handle_t *)&pod->ctl, on_closed_noop);
        char *p = sc_asprintf("%s/control.sock", pod->dir);
        unlink(p);
        sc_free(p);
    }
}

static void ctl_open(struct pod *pod)
{
    char *p = sc_asprintf("%s/control.sock", pod->dir);
    uv_pipe_init(pod->loop, &pod->ctl, 0);
    pod->ctl.data = pod;
    pod->ctl_open = true;
    int rc = strlen(p) < sizeof(((struct sockaddr_un *)0)->sun_path) ? uv_pipe_bind(&pod->ctl, p)
                                                                     : UV_ENAMETOOLONG;
    if (rc == 0) {
        rc = uv_listen((uv_stream_t *)&pod->ctl, 8, on_ctl_conn);
    }
    if (rc < 0) {
        sc_warn("no control socket: `sidecar pod status` will not see this pod", SC_LS("path", p),
                SC_LS("error", uv_strerror(rc)));
        ctl_close(pod);
    }
    sc_free(p);
}

/* ---- the role ---- */

static int pod_check_cfg(const void *cfgp, char **err)
{
    const struct pod_cfg *cfg = cfgp;
    if (cfg->action == POD_STATUS) {
        return 0;
    }
    if (!cfg->manifest) {
        *err = sc_strdup("a manifest is required: sidecar pod run FILE (or --manifest FILE)");
        return SC_ECONFIG;
    }
    struct pod_manifest *m = pod_manifest_load(cfg->manifest, err);
    if (!m) {
        return SC_ECONFIG;
    }
    pod_manifest_free(m);
    return 0;
}

static void on_collect(struct sc_metrics *r, void *arg)
{
    (void)r;
    struct pod *pod = arg;
    for (size_t i = 0; i < pod->nctrs; i++) {
        struct pod_ctr *c = &pod->ctrs[i];
        sc_gauge_set(c->m_running, c->state == ST_RUNNING);
        sc_gauge_set(c->m_ready, c->ready);
    }
}

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? sc_strndup(path, (size_t)(slash - path + (slash == path))) : sc_strdup(".");
}

static void pod_free(struct pod *pod);

static void on_kick(uv_timer_t *t)
{
    pod_advance(t->data);
}

static int pod_start(struct sc_app *app, const void *cfgp, void **state, char **err)
{
    const struct pod_cfg *cfg = cfgp;
    struct pod *pod = SC_NEW(struct pod);
    pod->app = app;
    pod->loop = sc_app_loop(app);
    pod->cfg = cfg;
    pod->m = pod_manifest_load(cfg->manifest, err);
    if (!pod->m) {
        goto fail;
    }
    if (gethostname(pod->hostname, sizeof(pod->hostname) - 1) < 0) {
        snprintf(pod->hostname, sizeof(pod->hostname), "localhost");
    }
    pod->color = !cfg->no_color && (cfg->color || isatty(STDOUT_FILENO));
    if (cfg->pod_dir) {
        pod->dir = sc_strdup(cfg->pod_dir);
        if (mkdirs(pod->dir, 0755) < 0) {
            *err = sc_asprintf("cannot create the pod directory %s: %s", pod->dir, strerror(errno));
            goto fail;
        }
    } else {
        char *tmpl = sc_asprintf("/tmp/sidecar-pod-%s.XXXXXX", pod->m->name);
        if (!mkdtemp(tmpl)) {
            *err = sc_asprintf("cannot create a pod directory under /tmp: %s", strerror(errno));
            sc_free(tmpl);
            goto fail;
        }
        pod->dir = tmpl;
    }
    char *logs = sc_asprintf("%s/logs", pod->dir);
    mkdir(logs, 0755);
    sc_free(logs);
    pod->config_dir = cfg->config_dir ? sc_strdup(cfg->config_dir) : dir_of(cfg->manifest);
    if (setup_volumes(pod, err) < 0) {
        goto fail;
    }
    const struct pod_spec *s = pod->m->spec;
    pod->ninit = s->init_containers.n;
    pod->nctrs = s->init_containers.n + s->containers.n;
    pod->ctrs = sc_calloc(pod->nctrs, sizeof(struct pod_ctr));
    struct sc_metrics *mr = sc_app_metrics(app);
    static const char *const lbl[] = { "container", "type", NULL };
    struct sc_metric_family *f_restarts =
        sc_metrics_family(mr, SC_METRIC_COUNTER, "sidecar_pod_container_restarts_total",
                          "Restarts of each container of the pod.", lbl, NULL, 0);
    struct sc_metric_family *f_ready =
        sc_metrics_family(mr, SC_METRIC_GAUGE, "sidecar_pod_container_ready",
                          "1 when the container is ready.", lbl, NULL, 0);
    struct sc_metric_family *f_running =
        sc_metrics_family(mr, SC_METRIC_GAUGE, "sidecar_pod_container_running",
                          "1 while the container's process runs.", lbl, NULL, 0);
    for (size_t i = 0; i < pod->nctrs; i++) {
        struct pod_ctr *c = &pod->ctrs[i];
        c->pod = pod;
        c->order = i;
        c->spec = i < pod->ninit ? (const struct pod_container *)s->init_containers.v + i
                                 : (const struct pod_container *)s->containers.v + (i - pod->ninit);
        c->kind = i >= pod->ninit ? CTR_APP : c->spec->restart_policy ? CTR_SIDECAR : CTR_INIT;
        size_t nl = strlen(c->spec->name);
        pod->name_width = nl > pod->name_width ? (nl < 32 ? nl : 32) : pod->name_width;
        const char *values[] = { c->spec->name, kind_name(c->kind) };
        c->m_restarts = sc_metric_get(f_restarts, values);
        c->m_ready = sc_metric_get(f_ready, values);
        c->m_running = sc_metric_get(f_running, values);
        if (setup_ctr(pod, c, err) < 0) {
            goto fail;
        }
    }
    /* from here on nothing fails: handles are created */
    uv_timer_init(pod->loop, &pod->grace_timer);
    pod->grace_timer.data = pod;
    for (size_t i = 0; i < pod->nctrs; i++) {
        struct pod_ctr *c = &pod->ctrs[i];
        uv_timer_init(pod->loop, &c->restart_timer);
        uv_timer_init(pod->loop, &c->kill_timer);
        c->restart_timer.data = c->kill_timer.data = c;
        const struct pod_probe_spec *ps[] = { &c->spec->startup_probe, &c->spec->readiness_probe,
                                              &c->spec->liveness_probe };
        for (int k = 0; k < 3; k++) {
            c->probes[k] = (struct pod_prober){ .c = c, .kind = (enum probe_kind)k, .spec = ps[k] };
            uv_timer_init(pod->loop, &c->probes[k].timer);
            c->probes[k].timer.data = &c->probes[k];
        }
    }
    sc_metrics_on_collect(mr, on_collect, pod);
    sc_admin_handle(sc_app_admin(app), "GET", "/pod", h_pod, pod);
    ctl_open(pod);
    fprintf(stderr, "sidecar pod: running %s (%zu init, %zu app containers); pod directory %s\n",
            pod->m->name, pod->ninit, pod->nctrs - pod->ninit, pod->dir);
    sc_info("pod starting", SC_LS("pod", pod->m->name), SC_LS("dir", pod->dir),
            SC_LS("config_dir", pod->config_dir));
    *state = pod;
    /* the first start runs from the loop, after the app has marked the role started */
    uv_timer_start(&pod->grace_timer, on_kick, 0, 0);
    return 0;
fail:
    pod_free(pod);
    return SC_ECONFIG;
}

static void pod_stop(struct sc_app *app, void *state, bool now)
{
    (void)app;
    struct pod *pod = state;
    if (pod->phase < PH_STOP_APPS) {
        begin_shutdown(pod, 0, "signal");
    }
    if (now && !pod->finished) {
        sc_warn("stopping now: SIGKILL to every container");
        pod->grace_expired = true;
        pod->phase = PH_DONE;
        for (size_t i = 0; i < pod->nctrs; i++) {
            struct pod_ctr *c = &pod->ctrs[i];
            check_cancel(c->hook);
            c->hook = NULL;
            if (c->state == ST_RUNNING) {
                kill(-c->pid, SIGKILL);
            }
        }
        maybe_finish(pod);
    }
}

static void pod_free(struct pod *pod)
{
    if (!pod) {
        return;
    }
    for (size_t i = 0; pod->ctrs && i < pod->nctrs; i++) {
        struct pod_ctr *c = &pod->ctrs[i];
        free_strv(c->argv);
        free_strv(c->envp);
        sc_free(c->cwd);
        for (size_t k = 0; k < c->nmnts; k++) {
            sc_free(c->mnts[k].src);
            sc_free(c->mnts[k].dst);
        }
        sc_free(c->mnts);
        if (c->cgroup) {
            rmdir(c->cgroup);
            sc_free(c->cgroup);
        }
    }
    sc_free(pod->ctrs);
    pod_manifest_free(pod->m);
    sc_free(pod->dir);
    sc_free(pod->config_dir);
    sc_free(pod);
}

static void pod_cleanup(void *state)
{
    pod_free(state);
}

/* `sidecar pod status`: asks the control socket of each running pod. */
static int print_status(const char *dir)
{
    char *p = sc_asprintf("%s/control.sock", dir);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd = -1, rc = 1;
    if (strlen(p) >= sizeof(sa.sun_path)) {
        goto out;
    }
    memcpy(sa.sun_path, p, strlen(p) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        goto out;
    }
    struct sc_buf b;
    sc_buf_init(&b, 1 << 20);
    char tmp[4096];
    ssize_t n;
    while ((n = read(fd, tmp, sizeof(tmp))) > 0 && sc_buf_append(&b, tmp, (size_t)n) == 0) {
    }
    json_t *j = json_loads(sc_buf_cstr(&b), 0, NULL);
    sc_buf_cleanup(&b);
    if (!j) {
        goto out;
    }
    printf("pod %s  %s  (%s)\n", json_string_value(json_object_get(j, "name")),
           json_string_value(json_object_get(j, "phase")),
           json_string_value(json_object_get(j, "dir")));
    printf("  %-20s %-8s %-11s %-6s %-9s %s\n", "CONTAINER", "TYPE", "STATE", "READY", "RESTARTS",
           "PID");
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(j, "containers"), i, c)
    {
        json_t *pid = json_object_get(c, "pid");
        json_t *code = json_object_get(c, "exit_code");
        char extra[32] = "-";
        if (json_is_integer(pid)) {
            snprintf(extra, sizeof(extra), "%lld", (long long)json_integer_value(pid));
        } else if (json_is_integer(code)) {
            snprintf(extra, sizeof(extra), "- (exit %lld)", (long long)json_integer_value(code));
        }
        printf("  %-20s %-8s %-11s %-6s %-9lld %s\n", json_string_value(json_object_get(c, "name")),
               json_string_value(json_object_get(c, "type")),
               json_string_value(json_object_get(c, "state")),
               json_is_true(json_object_get(c, "ready")) ? "true" : "false",
               (long long)json_integer_value(json_object_get(c, "restarts")), extra);
    }
    json_decref(j);
    rc = 0;
out:
    if (fd >= 0) {
        close(fd);
    }
    sc_free(p);
    return rc;
}

static int pod_command(const void *cfgp)
{
    const struct pod_cfg *cfg = cfgp;
    if (cfg->action == POD_CHECK) {
        char *err = NULL;
        struct pod_manifest *m = pod_manifest_load(cfg->manifest, &err);
        if (!m) {
            fprintf(stderr, "sidecar pod: %s\n", err);
            sc_free(err);
            return 1;
        }
        printf("%s: valid pod \"%s\" (%zu init containers, %zu containers)\n", cfg->manifest,
               m->name, m->spec->init_containers.n, m->spec->containers.n);
        pod_manifest_free(m);
        return 0;
    }
    if (cfg->action != POD_STATUS) {
        return -1;
    }
    if (cfg->pod_dir) {
        if (print_status(cfg->pod_dir) != 0) {
            fprintf(stderr, "sidecar pod status: no running pod answers in %s\n", cfg->pod_dir);
            return 1;
        }
        return 0;
    }
    DIR *d = opendir("/tmp");
    int found = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (strncmp(e->d_name, "sidecar-pod-", 12) == 0) {
            char *dir = sc_asprintf("/tmp/%s", e->d_name);
            found += print_status(dir) == 0;
            sc_free(dir);
        }
    }
    if (d) {
        closedir(d);
    }
    if (!found) {
        fprintf(stderr, "sidecar pod status: no running pod found under /tmp (use --pod-dir)\n");
        return 1;
    }
    return 0;
}

static const char *const actions[] = { "run", "check", "status", NULL };

static const struct sc_opt pod_opts[] = {
    { .name = "action",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct pod_cfg, action),
      .def = "run",
      .help = "what to do (the first word): run the manifest, check it, or print the status of "
              "running pods",
      .flags = SC_OPT_FLAG | SC_OPT_POSITIONAL,
      .enums = actions },
    { .name = "manifest",
      .type = SC_OPT_STR,
      .offset = offsetof(struct pod_cfg, manifest),
      .help = "the Pod manifest (the second word): a v1 Pod, or a Deployment/Job/... whose "
              "spec.template is run",
      .flags = SC_OPT_FLAG | SC_OPT_POSITIONAL },
    { .name = "pod_dir",
      .type = SC_OPT_STR,
      .offset = offsetof(struct pod_cfg, pod_dir),
      .help = "the pod directory (volumes, logs, control socket); default a new "
              "/tmp/sidecar-pod-NAME.XXXXXX",
      .flags = SC_OPT_FLAG },
    { .name = "config_dir",
      .type = SC_OPT_STR,
      .offset = offsetof(struct pod_cfg, config_dir),
      .help = "where configMap and secret NAMEs are read from: the directory <config_dir>/NAME, "
              "one file per key (default: the manifest's directory)",
      .flags = SC_OPT_FLAG },
    { .name = "restart_backoff_base",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct pod_cfg, backoff_base_ms),
      .def = "10s",
      .help = "first restart delay; doubled per restart",
      .flags = SC_OPT_FLAG,
      .min = 1,
      .max = 3600000 },
    { .name = "restart_backoff_max",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct pod_cfg, backoff_max_ms),
      .def = "5m",
      .help = "the cap of the restart delay",
      .flags = SC_OPT_FLAG },
    { .name = "restart_backoff_reset",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct pod_cfg, backoff_reset_ms),
      .def = "10m",
      .help = "a container that ran this long restarts with the first delay again",
      .flags = SC_OPT_FLAG },
    { .name = "color",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct pod_cfg, color),
      .help = "colour the container prefixes even when stdout is not a terminal",
      .flags = SC_OPT_FLAG },
    { .name = "no_color",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct pod_cfg, no_color),
      .help = "never colour the container prefixes",
      .flags = SC_OPT_FLAG },
    { 0 },
};

static const char pod_usage[] =
    "Commands:\n"
    "  sidecar pod run FILE     run the Pod manifest FILE until SIGTERM/SIGINT, or until its app\n"
    "                           containers finish (restartPolicy Never/OnFailure); exits with\n"
    "                           the app's exit code\n"
    "  sidecar pod check FILE   validate FILE and exit (0 valid, 1 not)\n"
    "  sidecar pod status       print the containers of the running pods (--pod-dir DIR for one)\n"
    "Set --drain-timeout above the manifest's terminationGracePeriodSeconds: when it expires,\n"
    "every container still running is killed.";

const struct sc_role sc_role_pod = {
    .name = "pod",
    .summary = "runs a Pod manifest as local processes with Kubernetes' lifecycle rules",
    .usage = pod_usage,
    .opts = pod_opts,
    .cfg_size = sizeof(struct pod_cfg),
    .admin_default = "127.0.0.1:15030",
    .check = pod_check_cfg,
    .start = pod_start,
    .stop = pod_stop,
    .cleanup = pod_cleanup,
    .command = pod_command,
};

// SPDX-License-Identifier: Apache-2.0
// The supervisor (see pod_run.h): each container is a uv_spawn'ed process in its own session,
// whose stdout and stderr are split into lines written to <pod-dir>/logs/<name>/<restart>.log in
// the CRI format and to the terminal. It runs the start sequence (init containers one by one,
// sidecars until started, then the apps), the probes, restarts with back-off, and the shutdown:
// apps first (preStop, SIGTERM, SIGKILL at the end of the one grace period), then sidecars one at
// a time in reverse order. Signals always go to the container's whole process group.
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "roles/pod/pod_run.h"

uint64_t pod_now_ms(struct pod *pod)
{
    uv_update_time(pod->loop);
    return uv_now(pod->loop);
}

const char *pod_kind_name(enum ctr_kind k)
{
    return k == CTR_INIT ? "init" : k == CTR_SIDECAR ? "sidecar" : "app";
}

const char *pod_state_name(enum ctr_state s)
{
    return s == ST_WAITING ? "waiting" : s == ST_RUNNING ? "running" : "terminated";
}

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
    pod_maybe_finish(pod);
}

static void on_proc_closed(uv_handle_t *h)
{
    proc_release(h->data);
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
    pod_check_cancel(pr->chk);
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
            pod_update_ready(c->pod);
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
            pod_update_ready(c->pod);
        } else if (!ok && c->ready && pr->fail >= pr->spec->failure_threshold) {
            c->ready = false;
            sc_warn("container not ready", SC_LS("container", c->spec->name), SC_LS("reason", why));
            pod_update_ready(c->pod);
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
    pr->chk = pod_check_start(c, &s->exec, &s->http_get, &s->tcp_socket, NULL,
                              (uint64_t)(s->timeout_s * 1000), on_probe_result, pr);
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
    uint64_t now = pod_now_ms(pod);
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
    pod_check_cancel(c->hook);
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
    pod_ctr_start(c);
}

static void schedule_restart(struct pod_ctr *c)
{
    struct pod *pod = c->pod;
    uint64_t ran = pod_now_ms(pod) - c->run_start_ms;
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
        pod_check_cancel(c->hook);
        c->hook = NULL;
    }
    c->pp = NULL;
    c->state = ST_TERMINATED;
    c->exit_code = sig ? 128 + sig : (int)status;
    c->started = false;
    c->ready = false;
    sc_metrics_gauge_set(c->m_running, 0);
    sc_metrics_gauge_set(c->m_ready, 0);
    if (sig) {
        sc_info("container exited", SC_LS("container", c->spec->name), SC_LI("signal", sig),
                SC_LI("exit_code", c->exit_code));
    } else {
        sc_info("container exited", SC_LS("container", c->spec->name),
                SC_LI("exit_code", c->exit_code));
    }
    pod_update_ready(pod);
    if (pod->phase >= PH_STOP_APPS) {
        pod_shutdown_step(pod);
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
            pod_begin_shutdown(pod, c->exit_code ? c->exit_code : 1, "init container failed");
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
            pod_begin_shutdown(pod, code, "completed");
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
        sc_metrics_gauge_set(c->m_ready, 1);
    }
    pod_update_ready(c->pod);
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

void pod_ctr_start(struct pod_ctr *c)
{
    struct pod *pod = c->pod;
    if (c->ever_started) {
        c->restarts++;
        sc_metrics_counter_inc(c->m_restarts);
    }
    c->ever_started = true;
    c->stopping = false;
    c->run_start_ms = pod_now_ms(pod);
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
            pod_begin_shutdown(pod, 1, "init container failed to start");
        } else if (c->kind == CTR_APP && pod->m->spec->restart_policy == POD_RESTART_NEVER) {
            c->done = true;
            if (all_apps_done(pod)) {
                pod_begin_shutdown(pod, 128, "container failed to start");
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
    sc_metrics_gauge_set(c->m_running, 1);
    pod_cgroup_add(c);
    sc_info("container started", SC_LS("container", c->spec->name),
            SC_LS("type", pod_kind_name(c->kind)), SC_LI("pid", c->pid),
            SC_LU("restarts", c->restarts));
    const struct pod_handler *h = &c->spec->lifecycle.post_start;
    if (h->set) {
        c->hook =
            pod_check_start(c, &h->exec, &h->http_get, &h->tcp_socket, &h->sleep,
                            (uint64_t)(pod->m->spec->grace_s * 1000) + 60000, on_post_start, c);
        return;
    }
    start_probes_after_post_start(c);
}

/* ---- the pod ---- */

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
void pod_ctr_stop(struct pod_ctr *c)
{
    if (c->state != ST_RUNNING || c->stopping) {
        return;
    }
    c->stopping = true;
    pod_check_cancel(c->hook); /* a postStart still running */
    c->hook = NULL;
    for (int i = 0; i < 3; i++) {
        prober_stop(&c->probes[i]);
    }
    uint64_t rem = remaining_ms(c->pod);
    const struct pod_handler *h = &c->spec->lifecycle.pre_stop;
    if (h->set && rem > 0 && !c->pod->grace_expired) {
        sc_info("running the preStop hook", SC_LS("container", c->spec->name));
        c->hook = pod_check_start(c, &h->exec, &h->http_get, &h->tcp_socket, &h->sleep, rem,
                                  on_pre_stop, c);
        return;
    }
    ctr_term(c, rem > 0 ? rem : MIN_KILL_MS);
}

static void on_closed_noop(uv_handle_t *h)
{
    (void)h;
}

void pod_ctr_close(struct pod_ctr *c)
{
    uv_close((uv_handle_t *)&c->restart_timer, on_closed_noop);
    uv_close((uv_handle_t *)&c->kill_timer, on_closed_noop);
    for (int i = 0; i < 3; i++) {
        uv_close((uv_handle_t *)&c->probes[i].timer, on_closed_noop);
    }
}

void pod_ctr_quiesce(struct pod_ctr *c)
{
    uv_timer_stop(&c->restart_timer);
    for (int k = 0; k < 3; k++) {
        prober_stop(&c->probes[k]);
    }
}

void pod_procs_cut(struct pod *pod)
{
    for (struct pod_proc *pp = pod->procs; pp; pp = pp->next) {
        if (!uv_is_closing((uv_handle_t *)&pp->out.pipe)) {
            uv_close((uv_handle_t *)&pp->out.pipe, on_stream_closed);
        }
        if (!uv_is_closing((uv_handle_t *)&pp->err.pipe)) {
            uv_close((uv_handle_t *)&pp->err.pipe, on_stream_closed);
        }
    }
}

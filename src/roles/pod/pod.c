// SPDX-License-Identifier: Apache-2.0
// `sidecar pod`: runs a Pod manifest as local processes with Kubernetes' lifecycle rules (see
// docs/pod.md and native-sidecars.md). This file is the role: it loads the manifest, prepares the
// pod (pod_setup.c), runs the pod-wide state machine (the start sequence, readiness, the ordered
// shutdown) over the containers the supervisor (pod_ctr.c) starts and stops, serves the status
// (admin GET /pod, metrics, the control socket <pod-dir>/control.sock behind `sidecar pod status`),
// and implements the one-shot `check` and `status` commands. The key invariant: the role reports
// stopped only after every container process has exited and every handle it used has closed.
#include <dirent.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "roles/pod/pod_run.h"

static void on_closed_noop(uv_handle_t *h)
{
    (void)h;
}

/* ---- the pod-wide state machine: start sequence, readiness, ordered shutdown ---- */

void pod_update_ready(struct pod *pod)
{
    bool ready = pod->apps_started && pod->phase == PH_RUNNING;
    for (size_t i = 0; i < pod->nctrs; i++) {
        struct pod_ctr *c = &pod->ctrs[i];
        sc_metrics_gauge_set(c->m_ready, c->ready ? 1 : 0);
        if (c->kind != CTR_INIT && !c->ready) {
            ready = false;
        }
    }
    sc_app_set_ready(pod->app, ready);
}

void pod_advance(struct pod *pod)
{
    if (pod->phase != PH_STARTING) {
        return;
    }
    for (size_t i = 0; i < pod->ninit; i++) {
        struct pod_ctr *c = &pod->ctrs[i];
        if (!c->ever_started) {
            pod_ctr_start(c);
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
        pod_ctr_start(&pod->ctrs[i]);
    }
    pod_update_ready(pod);
}

static void on_grace_timer(uv_timer_t *t)
{
    struct pod *pod = t->data;
    pod->grace_expired = true;
}

void pod_maybe_finish(struct pod *pod)
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
        pod_ctr_close(&pod->ctrs[i]);
    }
    uv_close((uv_handle_t *)&pod->grace_timer, on_closed_noop);
    pod_ctl_close(pod);
    /* output a detached grandchild still holds open is cut: the pod is over */
    pod_procs_cut(pod);
    for (struct pod_check *k = pod->checks; k; k = k->next) {
        pod_check_cancel(k);
    }
    sc_info("pod stopped", SC_LS("pod", pod->m->name), SC_LI("exit_code", pod->exit_code));
    sc_app_stopped(pod->app, pod->exit_code);
}

void pod_shutdown_step(struct pod *pod)
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
                pod_ctr_stop(c);
                return; /* one at a time, in reverse order */
            }
        }
        pod->phase = PH_DONE;
    }
    pod_maybe_finish(pod);
}

void pod_begin_shutdown(struct pod *pod, int code, const char *why)
{
    if (pod->phase >= PH_STOP_APPS) {
        return;
    }
    pod->phase = PH_STOP_APPS;
    pod->exit_code = code;
    uint64_t grace = (uint64_t)(pod->m->spec->grace_s * 1000);
    pod->deadline_ms = pod_now_ms(pod) + grace;
    uv_timer_start(&pod->grace_timer, on_grace_timer, grace, 0);
    sc_info("stopping the pod", SC_LS("reason", why), SC_LU("grace_ms", grace));
    sc_app_set_ready(pod->app, false);
    for (size_t i = 0; i < pod->nctrs; i++) {
        struct pod_ctr *c = &pod->ctrs[i];
        pod_ctr_quiesce(c);
        if (c->kind != CTR_SIDECAR) {
            pod_ctr_stop(c);
        }
    }
    if (!sc_app_draining(pod->app)) {
        sc_app_drain(pod->app); /* calls pod_stop, which finds the pod already stopping */
    }
    pod_shutdown_step(pod);
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
        json_object_set_new(o, "type", json_string(pod_kind_name(c->kind)));
        json_object_set_new(o, "state", json_string(pod_state_name(c->state)));
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
    json_object_set_new(j, "network", json_string(pod->net ? "pod" : "host"));
    json_object_set_new(j, "podIP", json_string(pod_net_pod_ip(pod)));
    json_t *ips = json_array();
    json_array_append_new(ips, json_string(pod_net_pod_ip(pod)));
    if (pod->net && pod->pod_addr6[0]) {
        json_array_append_new(ips, json_string(pod->pod_addr6));
    }
    json_object_set_new(j, "podIPs", ips);
    json_object_set_new(j, "netns", pod->net ? json_string(pod->netns) : json_null());
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

void pod_ctl_close(struct pod *pod)
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
        pod_ctl_close(pod);
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
        sc_metrics_gauge_set(c->m_running, c->state == ST_RUNNING);
        sc_metrics_gauge_set(c->m_ready, c->ready);
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
    /* first: a pod network that cannot be made is the clearest error */
    if (pod_net_setup(pod, err) < 0) {
        goto fail;
    }
    if (cfg->pod_dir) {
        pod->dir = sc_strdup(cfg->pod_dir);
        if (pod_mkdirs(pod->dir, 0755) < 0) {
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
    if (pod_setup_volumes(pod, err) < 0) {
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
        const char *values[] = { c->spec->name, pod_kind_name(c->kind) };
        c->m_restarts = sc_metrics_get(f_restarts, values);
        c->m_ready = sc_metrics_get(f_ready, values);
        c->m_running = sc_metrics_get(f_running, values);
        if (pod_setup_ctr(pod, c, err) < 0) {
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
        pod_begin_shutdown(pod, 0, "signal");
    }
    if (now && !pod->finished) {
        sc_warn("stopping now: SIGKILL to every container");
        pod->grace_expired = true;
        pod->phase = PH_DONE;
        for (size_t i = 0; i < pod->nctrs; i++) {
            struct pod_ctr *c = &pod->ctrs[i];
            pod_check_cancel(c->hook);
            c->hook = NULL;
            if (c->state == ST_RUNNING) {
                kill(-c->pid, SIGKILL);
            }
        }
        pod_maybe_finish(pod);
    }
}

static void pod_free(struct pod *pod)
{
    if (!pod) {
        return;
    }
    for (size_t i = 0; pod->ctrs && i < pod->nctrs; i++) {
        struct pod_ctr *c = &pod->ctrs[i];
        pod_strv_free(c->argv);
        pod_strv_free(c->envp);
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
    for (size_t i = 0; i < pod->ntmpfs; i++) {
        if (umount2(pod->tmpfs[i], MNT_DETACH) < 0) {
            sc_warn("cannot unmount an emptyDir tmpfs", SC_LS("path", pod->tmpfs[i]),
                    SC_LERR(-errno));
        }
        sc_free(pod->tmpfs[i]);
    }
    sc_free(pod->tmpfs);
    pod_net_teardown(pod);
    sc_free(pod->netns);
    sc_free(pod->ip_bin);
    sc_free(pod->setpriv_bin);
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
    const char *netns = json_string_value(json_object_get(j, "netns"));
    if (netns) {
        printf("  network: pod %s (ip netns exec %s ...)\n",
               json_string_value(json_object_get(j, "podIP")), netns);
    }
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
    { .name = "pod_network",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct pod_cfg, pod_network),
      .help = "run the pod in its own network namespace (loopback and a veth pair to this "
              "machine) unless it says spec.hostNetwork: true; spec.hostNetwork: false does the "
              "same without the flag. Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and ip",
      .flags = SC_OPT_FLAG },
    { .name = "pod_ip",
      .type = SC_OPT_STR,
      .offset = offsetof(struct pod_cfg, pod_ip),
      .def = "10.215.0.2/30",
      .help = "pod network: the pod's address with its prefix length (eth0 in the namespace; "
              "status.podIP, what probes connect to)",
      .flags = SC_OPT_FLAG },
    { .name = "host_ip",
      .type = SC_OPT_STR,
      .offset = offsetof(struct pod_cfg, host_ip),
      .def = "10.215.0.1",
      .help = "pod network: the address of the runner's end of the veth pair, in pod_ip's "
              "network: the pod's default gateway and status.hostIP",
      .flags = SC_OPT_FLAG },
    { .name = "pod_ip6",
      .type = SC_OPT_STR,
      .offset = offsetof(struct pod_cfg, pod_ip6),
      .help = "pod network: also an IPv6 address with its prefix length for the pod "
              "(fd00:215::2/64; with host_ip6), in status.podIPs after the IPv4 one; none by "
              "default",
      .flags = SC_OPT_FLAG },
    { .name = "host_ip6",
      .type = SC_OPT_STR,
      .offset = offsetof(struct pod_cfg, host_ip6),
      .help = "pod network: the IPv6 address of the runner's end, in pod_ip6's network (the "
              "pod's IPv6 default gateway)",
      .flags = SC_OPT_FLAG },
    { .name = "netns",
      .type = SC_OPT_STR,
      .offset = offsetof(struct pod_cfg, netns),
      .help = "pod network: the namespace's name (ip netns exec NAME ...); default "
              "sidecar-<pod name>",
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
    /* A safety net only: the manifest's terminationGracePeriodSeconds bounds the shutdown. */
    .drain_default = "10m",
    .check = pod_check_cfg,
    .start = pod_start,
    .stop = pod_stop,
    .cleanup = pod_cleanup,
    .command = pod_command,
};

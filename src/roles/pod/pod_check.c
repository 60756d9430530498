// SPDX-License-Identifier: Apache-2.0
// One run of a probe or lifecycle hook (see pod_run.h): exec (the command in the container's
// mounts and environment, its own process group, killed on timeout), httpGet (a GET by the HTTP/1
// client of net/h1client.h: 200-399 is a success), tcpSocket (a connection is a success) or
// sleep. The callback fires at most once, and never after a cancel; the run frees itself when
// its last handle has closed (an exec run waits for its process to be reaped first).
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "net/h1client.h"
#include "roles/pod/pod_run.h"

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
    sc_free(k);
    pod_maybe_finish(pod);
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
    sc_h1cli_cancel(k->cli);
    k->cli = NULL;
    if (k->has_proc && k->proc_alive) {
        kill(-k->proc.pid, SIGKILL);
    }
    check_close(k);
    if (k->cb) {
        k->cb(k->arg, ok, why);
    }
}

/* Stops <k> without calling its callback. NULL-safe. */
void pod_check_cancel(struct pod_check *k)
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

static void on_http_done(void *arg, const struct sc_h1cli_resp *r)
{
    struct pod_check *k = arg;
    k->cli = NULL;
    if (r->error) {
        snprintf(k->why, sizeof(k->why), "HTTP probe: %s", r->reason);
        check_done(k, false, k->why);
        return;
    }
    snprintf(k->why, sizeof(k->why), "HTTP status %d", r->status);
    check_done(k, r->status >= 200 && r->status < 400, k->why);
}

/* Sends the httpGet of <hg> to <sa>. Headers named in the probe replace the default Host and
 * User-Agent, as the kubelet does. Returns 0 or a negative error (then no callback). */
static int http_start(struct pod_check *k, const struct pod_http_get *hg, const char *host,
                      int port, const struct sockaddr *sa, uint64_t timeout_ms)
{
    char hostport[300];
    snprintf(hostport, sizeof(hostport), "%s:%d", host, port);
    struct sc_http_header *hdrs = sc_reallocarray(NULL, hg->headers.n + 2, sizeof(*hdrs));
    size_t n = 0;
    bool has_host = false, has_ua = false;
    for (size_t i = 0; i < hg->headers.n; i++) {
        const struct pod_kv_pair *h = (const struct pod_kv_pair *)hg->headers.v + i;
        struct sc_str name = sc_str_c(h->name ? h->name : "");
        has_host = has_host || sc_str_caseeq(name, SC_STR("Host"));
        has_ua = has_ua || sc_str_caseeq(name, SC_STR("User-Agent"));
    }
    if (!has_host) {
        hdrs[n++] = (struct sc_http_header){ SC_STR("Host"), sc_str_c(hostport) };
    }
    if (!has_ua) {
        hdrs[n++] = (struct sc_http_header){ SC_STR("User-Agent"), SC_STR("sidecar-pod-probe") };
    }
    for (size_t i = 0; i < hg->headers.n; i++) {
        const struct pod_kv_pair *h = (const struct pod_kv_pair *)hg->headers.v + i;
        hdrs[n++] = (struct sc_http_header){ sc_str_c(h->name ? h->name : ""),
                                             sc_str_c(h->value ? h->value : "") };
    }
    const struct sc_h1cli_req req = {
        .method = SC_STR("GET"),
        .target = sc_str_c(hg->path ? hg->path : "/"),
        .headers = hdrs,
        .nheaders = n,
        .timeout_ms = timeout_ms + 1000, /* the check's own timer decides first */
        .head_only = true,
    };
    int rc = sc_h1cli_send(k->pod->loop, sa, &req, on_http_done, k, &k->cli);
    sc_free(hdrs);
    return rc;
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
    check_done(k, true, "connected");
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

char **pod_exec_argv(struct pod_ctr *c, const struct sc_strv *cmd);
void pod_strv_free(char **v);

/* Starts a check for container <c>; <cb> is called once with the result (not when cancelled).
 * Returns the check, which the caller may cancel until the callback has run. */
struct pod_check *pod_check_start(struct pod_ctr *c, const struct pod_exec_action *ex,
                                  const struct pod_http_get *hg, const struct pod_tcp_socket *ts,
                                  const struct pod_sleep_action *sl, uint64_t timeout_ms,
                                  pod_check_cb cb, void *arg)
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
        uint64_t ms = (uint64_t)sl->seconds * 1000;
        /* a preStop sleep ends with the grace period too */
        uv_timer_start(&k->timer, on_sleep_done, ms < timeout_ms ? ms : timeout_ms, 0);
        return k;
    }
    uv_timer_start(&k->timer, on_check_timeout, timeout_ms, 0);
    if (ex && ex->set) {
        char **argv = pod_exec_argv(c, &ex->command);
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
        pod_strv_free(argv);
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
    /* the kubelet probes the pod's address */
    const char *host = pod_net_pod_ip(pod);
    int port = -1;
    if (hg && hg->set) {
        host = hg->host ? hg->host : host;
        port = resolve_port(c->spec, hg->port);
    } else if (ts && ts->set) {
        host = ts->host ? ts->host : host;
        port = resolve_port(c->spec, ts->port);
    }
    struct sockaddr_storage sa;
    int rc = port > 0 ? uv_ip4_addr(host, port, (struct sockaddr_in *)&sa) : UV_EINVAL;
    if (rc < 0 && port > 0) {
        rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&sa);
    }
    if (rc == 0 && hg && hg->set) {
        rc = http_start(k, hg, host, port, (struct sockaddr *)&sa, timeout_ms);
    } else {
        uv_tcp_init(pod->loop, &k->tcp);
        k->tcp.data = k;
        k->has_tcp = true;
        k->open++;
        if (rc == 0) {
            k->conn.data = k;
            rc = uv_tcp_connect(&k->conn, &k->tcp, (struct sockaddr *)&sa, on_check_connect);
        }
    }
    if (rc < 0) {
        snprintf(k->why, sizeof(k->why), "cannot connect to %s:%d: %s", host, port,
                 sc_strerror(rc));
        check_done(k, false, k->why);
    }
    return k;
}

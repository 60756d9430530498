// SPDX-License-Identifier: Apache-2.0
// The pod runner's runtime state, shared by its files: pod.c (the role: start, stop, status),
// pod_ctr.c (the supervisor: container processes, logs, probes, restarts, start order and
// shutdown), pod_check.c (one probe or hook run: exec, httpGet, tcpSocket, sleep) and pod_setup.c
// (volumes, environment, commands, cgroups, prepared once at start). Everything runs on the app's
// one loop; a struct holding a libuv handle is freed only after the handle's close callback.
#ifndef SC_ROLES_POD_RUN_H
#define SC_ROLES_POD_RUN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <uv.h>

#include "app.h"
#include "core/buf.h"
#include "core/metrics.h"
#include "net/h1client.h"
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

typedef void (*pod_check_cb)(void *arg, bool ok, const char *why);

/* One probe or hook run: exec, httpGet, tcpSocket or sleep. Calls <cb> once unless cancelled,
 * and frees itself when its handles have closed. */
struct pod_check {
    struct pod *pod;
    pod_check_cb cb;
    void *arg;
    bool finished;
    int open;
    uv_timer_t timer;
    bool has_proc, proc_alive;
    uv_process_t proc;
    bool has_tcp; /* a tcpSocket check */
    uv_tcp_t tcp;
    uv_connect_t conn;
    struct sc_h1cli *cli; /* an httpGet check in flight */
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
    char **tmpfs;      /* emptyDir medium Memory mounts, unmounted at the end */
    size_t ntmpfs;
    uv_timer_t grace_timer;
    /* the pod network (pod_net.c): set when the pod runs in its own network namespace */
    bool net;
    bool net_made;      /* the namespace exists: pod_net_teardown removes it */
    char *netns;        /* its name, /run/netns/<netns> */
    char *ip_bin;       /* the ip command, absolute */
    char *setpriv_bin;  /* setpriv, for securityContext users and capabilities */
    char veth[16];      /* the runner's end of the veth pair */
    char pod_addr[64];  /* the pod's address (no prefix), status.podIP */
    char host_addr[64]; /* the runner's end, status.hostIP and the pod's gateway */
    unsigned prefix;
    char pod_addr6[64]; /* the IPv6 pair, when given ("" otherwise) */
    char host_addr6[64];
    unsigned prefix6;
    char pod_ips[132]; /* status.podIPs: "v4" or "v4,v6" */
};

/* ---- pod_ctr.c: one container at a time ---- */

/* Spawns <c>'s process, then runs its postStart hook and starts its probes. A process that cannot
 * be spawned is restarted with back-off, or stops the pod when its restart policy says so. */
void pod_ctr_start(struct pod_ctr *c);

/* Runs <c>'s preStop hook, then SIGTERM, then SIGKILL at the end of the pod's grace period. No-op
 * when <c> does not run or is already stopping. */
void pod_ctr_stop(struct pod_ctr *c);

/* Stops <c>'s restart timer and probes (the pod is shutting down). */
void pod_ctr_quiesce(struct pod_ctr *c);

/* Closes <c>'s timers (restart, kill, probes); the pod frees them after the loop ran. */
void pod_ctr_close(struct pod_ctr *c);

/* Closes the output pipes every process still holds (a detached grandchild's included). */
void pod_procs_cut(struct pod *pod);

/* The loop's time in milliseconds, updated first. */
uint64_t pod_now_ms(struct pod *pod);

/* Returns static names for status output. */
const char *pod_kind_name(enum ctr_kind k);
const char *pod_state_name(enum ctr_state s);

/* ---- pod_check.c ---- */

/* Starts one run of a probe or hook handler for container <c>: exactly one of <ex>, <hg>, <ts>,
 * <sl> (sl may be NULL) is set. <cb> is called once with the result, unless the run is cancelled
 * first; an exec run that outlives <timeout_ms> is killed (its whole process group). Returns the
 * run, which frees itself once its handles have closed. */
struct pod_check *pod_check_start(struct pod_ctr *c, const struct pod_exec_action *ex,
                                  const struct pod_http_get *hg, const struct pod_tcp_socket *ts,
                                  const struct pod_sleep_action *sl, uint64_t timeout_ms,
                                  pod_check_cb cb, void *arg);

/* Stops <k> without calling its callback. NULL-safe; <k> must not be used afterwards. */
void pod_check_cancel(struct pod_check *k);

/* ---- pod_setup.c ---- */

/* Creates the volume directories under the pod directory (copies configMap/secret directories,
 * mounts Memory emptyDirs as root). Returns 0 or SC_ECONFIG with a new message in <*err>. */
int pod_setup_volumes(struct pod *pod, char **err);

/* Prepares container <c>: environment, command line (wrapped in a private mount namespace with
 * its bind mounts as root; mountPaths rewritten without root), working directory and cgroup.
 * Returns 0 or SC_ECONFIG with a new message in <*err>; what was set is freed with the pod. */
int pod_setup_ctr(struct pod *pod, struct pod_ctr *c, char **err);

/* Moves the running container <c> into its cgroup, if it has one. */
void pod_cgroup_add(struct pod_ctr *c);

/* Returns a new NULL-terminated argv that runs <cmd> inside <c>'s mounts (exec probes, hooks). */
char **pod_exec_argv(struct pod_ctr *c, const struct sc_strv *cmd);

/* Frees a NULL-terminated vector of strings. NULL-safe. */
void pod_strv_free(char **v);

/* mkdir -p. Returns 0 or a negative errno. */
int pod_mkdirs(const char *path, mode_t mode);

/* ---- pod_net.c: the pod's network namespace and its containers' identity ---- */

/* Decides the pod's network (spec.hostNetwork, else --pod-network) and, for a pod network,
 * checks the privileges and tools it needs, then creates the namespace with loopback up and a veth
 * pair to the runner's namespace (addresses, default route). Also refuses a `sidecar iptables`
 * container on the host network. Returns 0 or SC_ECONFIG with a new message in <*err>; what was
 * made before a failure is removed by pod_net_teardown. */
int pod_net_setup(struct pod *pod, char **err);

/* Kills what still runs in the pod's namespace, deletes the veth pair and the namespace (its
 * rules go with it). Idempotent; no-op on the host network. */
void pod_net_teardown(struct pod *pod);

/* The address probes and status.podIP use: the pod's address, or 127.0.0.1 on the host network. */
const char *pod_net_pod_ip(const struct pod *pod);
const char *pod_net_pod_ips(const struct pod *pod); /* status.podIPs: comma-separated */
const char *pod_net_host_ip(const struct pod *pod);

/* Checks <c>'s effective securityContext against the runner (runAsNonRoot, runAsUser without
 * root) and appends to <v> (at <*n>) the words that run its command in the pod's namespace and as
 * its user with its capabilities: "ip netns exec NAME" first when <netns>, or the setpriv part
 * when not. Returns 0 or SC_ECONFIG with a new message in <*err>. */
int pod_sec_check(struct pod *pod, const struct pod_container *c, char **err);
size_t pod_net_words(struct pod *pod, const struct pod_container *c, bool netns, char **v);

/* ---- pod.c: the pod-wide state machine, the only writer of pod->phase ---- */

/* Moves the start sequence on: starts the next init container or sidecar once the previous one
 * completed or started, then every app container. Does nothing once the pod runs or stops. */
void pod_advance(struct pod *pod);

/* Begins the ordered shutdown (preStop, SIGTERM, grace period, SIGKILL; apps, then sidecars in
 * reverse order) and records <code> as the exit code. Idempotent; also starts the app's drain. */
void pod_begin_shutdown(struct pod *pod, int code, const char *why);

/* Moves the shutdown on after a container exited: from the apps to the sidecars, one sidecar at a
 * time in reverse order, then finishes. */
void pod_shutdown_step(struct pod *pod);

/* When the shutdown is over and no container runs any more: closes the pod's handles and calls
 * sc_app_stopped(). Safe to call at any time. */
void pod_maybe_finish(struct pod *pod);

/* Publishes readiness: the pod is ready when it runs, its apps started and every non-init
 * container is ready; also sets each container's ready gauge. */
void pod_update_ready(struct pod *pod);

/* Closes the control socket and removes its file. Idempotent. */
void pod_ctl_close(struct pod *pod);

#endif

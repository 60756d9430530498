// SPDX-License-Identifier: Apache-2.0
// The pod's network and its containers' identity (see pod_run.h). With spec.hostNetwork: false
// (or --pod-network and no hostNetwork), the pod gets what a Kubernetes pod sandbox has: its own
// network namespace (`ip netns`, named so users debug it with `ip netns exec`), loopback up, and a
// veth pair to the runner's namespace with an address pair and a default route through the
// runner's end. Every container, exec probe and hook runs inside it (`ip netns exec`), so an init
// container running `sidecar iptables` and a proxy running as uid 1337 (securityContext.runAsUser,
// applied with setpriv) intercept the app's traffic as in a cluster. At the end whatever still runs
// in the namespace is killed and the veth pair and namespace are deleted (the rules live in the
// namespace and go with it). The tools are run with argument arrays, never a shell.
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/str.h"
#include "roles/iptables/iptables.h"
#include "roles/pod/pod_run.h"

#define IP_TIMEOUT_MS 10000
#define CAP_NET_ADMIN_BIT 12
#define CAP_SYS_ADMIN_BIT 21

/* Returns the absolute path of <name> in PATH, new, or NULL. */
static char *which(const char *name)
{
    const char *path = getenv("PATH");
    if (!path || !*path) {
        path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    }
    while (*path) {
        const char *end = strchr(path, ':');
        size_t n = end ? (size_t)(end - path) : strlen(path);
        if (n > 0) {
            char *p = sc_asprintf("%.*s/%s", (int)n, path, name);
            if (access(p, X_OK) == 0) {
                return p;
            }
            sc_free(p);
        }
        path += n + (end ? 1 : 0);
    }
    return NULL;
}

/* Returns true when the runner's effective capabilities include <bit>. */
static bool have_cap(int bit)
{
    FILE *f = fopen("/proc/self/status", "re");
    if (!f) {
        return geteuid() == 0;
    }
    char line[256];
    unsigned long long eff = 0;
    bool found = false;
    while (!found && fgets(line, sizeof(line), f)) {
        found = sscanf(line, "CapEff: %llx", &eff) == 1;
    }
    fclose(f);
    return found && (eff >> bit) & 1;
}

/* Runs `ip ARGS...`; on failure sets <*err> to "<what>: <ip's stderr>". Returns 0 or SC_ECONFIG. */
static int ip_run(struct pod *pod, const char *const *args, const char *what, char **err)
{
    const char *argv[16] = { pod->ip_bin };
    size_t n = 1;
    for (; args[n - 1] && n < 15; n++) {
        argv[n] = args[n - 1];
    }
    argv[n] = NULL;
    struct sc_buf eb;
    sc_buf_init(&eb, 4096);
    int rc = iptables_exec(argv, NULL, 0, NULL, &eb, IP_TIMEOUT_MS);
    if (rc != 0 && err) {
        while (eb.len > 0 && (eb.p[eb.len - 1] == '\n' || eb.p[eb.len - 1] == '\r')) {
            eb.len--;
        }
        *err = sc_asprintf("pod network: %s failed (ip exited %d): %s", what, rc,
                           eb.len ? sc_buf_cstr(&eb) : "no message");
    }
    sc_buf_cleanup(&eb);
    return rc == 0 ? 0 : SC_ECONFIG;
}

/* Counts the processes whose network namespace is the one at <path>, sending <sig> to each when
 * <sig> is not 0. Returns -1 when <path> is not there. */
static int ns_procs(const char *path, int sig)
{
    struct stat ns;
    if (stat(path, &ns) < 0) {
        return -1;
    }
    DIR *d = opendir("/proc");
    if (!d) {
        return 0;
    }
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9') {
            continue;
        }
        char p[300];
        snprintf(p, sizeof(p), "/proc/%s/ns/net", e->d_name);
        struct stat st;
        if (stat(p, &st) == 0 && st.st_ino == ns.st_ino && st.st_dev == ns.st_dev) {
            n++;
            uint64_t pid = 0;
            if (sig && sc_str_to_u64(sc_str_c(e->d_name), INT32_MAX, &pid) == 0) {
                kill((pid_t)pid, sig);
            }
        }
    }
    closedir(d);
    return n;
}

static char *ns_path(const char *name)
{
    return sc_asprintf("/run/netns/%s", name);
}

/* Namespaces the runner made carry a marker file here, so that only those are ever deleted as
 * stale: a namespace of the same name made by someone else is left alone. */
#define MARK_DIR "/run/sidecar-pod"

static char *mark_path(const char *name)
{
    return sc_asprintf(MARK_DIR "/netns-%s", name);
}

static void mark_set(const char *name, bool on)
{
    char *p = mark_path(name);
    if (on) {
        (void)pod_mkdirs(MARK_DIR, 0755);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0) {
            char pid[32];
            int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
            ssize_t w = write(fd, pid, (size_t)n);
            (void)w;
            close(fd);
        } else {
            sc_warn("cannot write the pod network's marker: a stale namespace will need ip netns "
                    "del",
                    SC_LS("path", p), SC_LERR(-errno));
        }
    } else {
        unlink(p);
    }
    sc_free(p);
}

/* Parses "A.B.C.D" or "A.B.C.D/P" into <out> (the address text) and <*prefix> (32 when absent). */
static bool parse_v4(const char *s, char out[64], unsigned *prefix, struct in_addr *a)
{
    if (!s) {
        return false;
    }
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    if (n == 0 || n >= 64) {
        return false;
    }
    memcpy(out, s, n);
    out[n] = '\0';
    *prefix = 32;
    if (slash) {
        char *end = NULL;
        unsigned long p = strtoul(slash + 1, &end, 10);
        if (!end || *end || end == slash + 1 || p < 1 || p > 30) {
            return false;
        }
        *prefix = (unsigned)p;
    }
    return inet_pton(AF_INET, out, a) == 1;
}

/* Parses "ADDR/P" (IPv6, <need_prefix>) or a bare "ADDR" into its canonical text <out> and
 * <*prefix> (128 when bare). */
static bool parse_v6(const char *s, bool need_prefix, char out[64], unsigned *prefix,
                     struct in6_addr *a)
{
    if (!s) {
        return false;
    }
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    char tmp[64];
    if (n == 0 || n >= sizeof(tmp) || (need_prefix && !slash)) {
        return false;
    }
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    *prefix = 128;
    if (slash) {
        char *end = NULL;
        unsigned long p = strtoul(slash + 1, &end, 10);
        if (!end || *end || end == slash + 1 || p < 1 || p > 126) {
            return false;
        }
        *prefix = (unsigned)p;
    }
    return inet_pton(AF_INET6, tmp, a) == 1 && inet_ntop(AF_INET6, a, out, 64) != NULL;
}

static bool same_net6(const struct in6_addr *a, const struct in6_addr *b, unsigned prefix)
{
    for (unsigned i = 0; i < prefix; i++) {
        unsigned bit = 7 - (i % 8);
        if (((a->s6_addr[i / 8] >> bit) & 1) != ((b->s6_addr[i / 8] >> bit) & 1)) {
            return false;
        }
    }
    return true;
}

/* Returns true when <addr> is already an address of an interface of the runner's namespace. */
static bool addr_in_use(struct pod *pod, const char *addr)
{
    bool v6 = strchr(addr, ':') != NULL;
    const char *argv[] = { pod->ip_bin, "-o", v6 ? "-6" : "-4", "addr", "show", NULL };
    struct sc_buf out;
    sc_buf_init(&out, 1 << 20);
    bool used = false;
    if (iptables_exec(argv, NULL, 0, &out, NULL, IP_TIMEOUT_MS) == 0) {
        char *needle = sc_asprintf(" inet%s %s/", v6 ? "6" : "", addr);
        used = strstr(sc_buf_cstr(&out), needle) != NULL;
        sc_free(needle);
    }
    sc_buf_cleanup(&out);
    return used;
}

/* Deletes the namespace a killed runner left (nothing runs in it), with its veth: the runner's
 * end, named after the pid its marker holds, is deleted here, since the kernel tears a dead
 * namespace down asynchronously and the old pair would hold the addresses for a while. Then waits
 * (bounded) until the host address is free. */
static int stale_remove(struct pod *pod, char **err)
{
    char *mark = mark_path(pod->netns), buf[32] = "";
    FILE *f = fopen(mark, "re");
    sc_free(mark);
    if (f) {
        if (!fgets(buf, sizeof(buf), f)) {
            buf[0] = 0;
        }
        fclose(f);
    }
    const char *del[] = { "netns", "del", pod->netns, NULL };
    if (ip_run(pod, del, "deleting the stale namespace", err) < 0) {
        return SC_ECONFIG;
    }
    size_t n = strcspn(buf, "\n");
    uint64_t old = 0;
    if (sc_str_to_u64(sc_str_n(buf, n), INT32_MAX, &old) == 0 && old > 0) {
        char veth[32];
        snprintf(veth, sizeof(veth), "scp%d", (int)(old % 10000000));
        const char *ldel[] = { "link", "del", veth, NULL };
        (void)ip_run(pod, ldel, "deleting the stale veth pair", NULL); /* gone with the ns */
    }
    for (int i = 0; i < 100 && addr_in_use(pod, pod->host_addr); i++) {
        struct timespec ts = { 0, 50 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* Returns true when container <c> runs `sidecar iptables` (not --dry-run), which on the host
 * network would rewrite the host's own rules. */
static bool runs_iptables(const struct pod_container *c)
{
    const char *cmd0 = c->command.v[0];
    const char *base = strrchr(cmd0, '/');
    base = base ? base + 1 : cmd0;
    if (strcmp(base, "sidecar") != 0) {
        return false;
    }
    const char *first = c->command.n > 1 ? c->command.v[1] : c->args.n > 0 ? c->args.v[0] : NULL;
    if (!first || strcmp(first, "iptables") != 0) {
        return false;
    }
    const struct sc_strv *lists[] = { &c->command, &c->args };
    for (size_t l = 0; l < 2; l++) {
        for (size_t i = 0; i < lists[l]->n; i++) {
            if (strcmp(lists[l]->v[i], "--dry-run") == 0) {
                return false;
            }
        }
    }
    return true;
}

static int host_network_check(struct pod *pod, char **err)
{
    const struct pod_spec *s = pod->m->spec;
    const struct sc_vec *lists[] = { &s->init_containers, &s->containers };
    for (size_t l = 0; l < 2; l++) {
        for (size_t i = 0; i < lists[l]->n; i++) {
            const struct pod_container *c = (const struct pod_container *)lists[l]->v + i;
            if (runs_iptables(c)) {
                *err = sc_asprintf(
                    "container %s runs `sidecar iptables`, but the pod uses the host's network: "
                    "it would rewrite this machine's own rules. Set spec.hostNetwork: false (or "
                    "--pod-network) to run the pod in its own network namespace",
                    c->name);
                return SC_ECONFIG;
            }
        }
    }
    return 0;
}

const char *pod_net_pod_ip(const struct pod *pod)
{
    return pod->net ? pod->pod_addr : "127.0.0.1";
}

const char *pod_net_pod_ips(const struct pod *pod)
{
    return pod->net ? pod->pod_ips : "127.0.0.1";
}

const char *pod_net_host_ip(const struct pod *pod)
{
    return pod->net ? pod->host_addr : "127.0.0.1";
}

int pod_net_setup(struct pod *pod, char **err)
{
    const struct pod_cfg *cfg = pod->cfg;
    const char *hn = pod->m->spec->host_network;
    pod->net = pod_is_false(hn) || (!hn && cfg->pod_network);
    pod->setpriv_bin = which("setpriv");
    if (!pod->net) {
        return host_network_check(pod, err);
    }
    const char *why = pod_is_false(hn) ? "spec.hostNetwork: false" : "--pod-network";
    if (!have_cap(CAP_NET_ADMIN_BIT) || !have_cap(CAP_SYS_ADMIN_BIT)) {
        *err = sc_asprintf("%s: the pod's own network namespace needs root (CAP_NET_ADMIN and "
                           "CAP_SYS_ADMIN), which this runner does not have; run it as root, or "
                           "use the host's network (spec.hostNetwork: true, no --pod-network)",
                           why);
        return SC_ECONFIG;
    }
    pod->ip_bin = which("ip");
    if (!pod->ip_bin) {
        *err = sc_asprintf("%s: the pod network needs the ip command (iproute2), not found in "
                           "PATH",
                           why);
        return SC_ECONFIG;
    }
    struct in_addr pa, ha;
    unsigned pp = 0, hp = 0;
    if (!parse_v4(cfg->pod_ip, pod->pod_addr, &pp, &pa) || !strchr(cfg->pod_ip, '/')) {
        *err = sc_asprintf("--pod-ip %s: an IPv4 address with its prefix length (/1../30), "
                           "such as 10.215.0.2/30",
                           cfg->pod_ip ? cfg->pod_ip : "");
        return SC_ECONFIG;
    }
    if (!parse_v4(cfg->host_ip, pod->host_addr, &hp, &ha) ||
        (strchr(cfg->host_ip, '/') && hp != pp)) {
        *err = sc_asprintf("--host-ip %s: an IPv4 address in --pod-ip's network", cfg->host_ip);
        return SC_ECONFIG;
    }
    uint32_t mask = pp ? htonl(~0u << (32 - pp)) : 0;
    if ((pa.s_addr & mask) != (ha.s_addr & mask) || pa.s_addr == ha.s_addr) {
        *err = sc_asprintf("--pod-ip %s and --host-ip %s must be two different addresses of one "
                           "network",
                           cfg->pod_ip, cfg->host_ip);
        return SC_ECONFIG;
    }
    pod->prefix = pp;
    snprintf(pod->pod_ips, sizeof(pod->pod_ips), "%s", pod->pod_addr);
    if (cfg->pod_ip6 || cfg->host_ip6) {
        struct in6_addr p6, h6;
        unsigned hp6 = 0;
        if (!parse_v6(cfg->pod_ip6, true, pod->pod_addr6, &pod->prefix6, &p6) ||
            !parse_v6(cfg->host_ip6, false, pod->host_addr6, &hp6, &h6) ||
            (hp6 != 128 && hp6 != pod->prefix6) || !same_net6(&p6, &h6, pod->prefix6) ||
            memcmp(&p6, &h6, sizeof(p6)) == 0) {
            *err = sc_asprintf("--pod-ip6 %s and --host-ip6 %s: two different IPv6 addresses of "
                               "one network, the pod's with its prefix length (fd00:215::2/64)",
                               cfg->pod_ip6 ? cfg->pod_ip6 : "(none)",
                               cfg->host_ip6 ? cfg->host_ip6 : "(none)");
            return SC_ECONFIG;
        }
        snprintf(pod->pod_ips, sizeof(pod->pod_ips), "%s,%s", pod->pod_addr, pod->pod_addr6);
    }
    if (cfg->netns) {
        pod->netns = sc_strdup(cfg->netns);
    } else {
        char name[64];
        int n = snprintf(name, sizeof(name), "sidecar-%.48s", pod->m->name);
        for (int i = 0; i < n; i++) {
            name[i] = (name[i] == '/' || name[i] == '.') ? '-' : name[i];
        }
        pod->netns = sc_strdup(name);
    }
    if (!*pod->netns || strchr(pod->netns, '/') || strlen(pod->netns) > 200 ||
        strcmp(pod->netns, ".") == 0 || strcmp(pod->netns, "..") == 0) {
        *err = sc_asprintf("--netns \"%s\" is not a valid namespace name", pod->netns);
        return SC_ECONFIG;
    }
    char *path = ns_path(pod->netns);
    int in_use = ns_procs(path, 0);
    sc_free(path);
    if (in_use > 0) {
        *err = sc_asprintf("the network namespace %s exists and %d processes run in it (another "
                           "runner of this pod, or not ours?); stop them, or choose another "
                           "--netns",
                           pod->netns, in_use);
        return SC_ECONFIG;
    }
    char *mark = mark_path(pod->netns);
    bool ours = access(mark, F_OK) == 0;
    sc_free(mark);
    if (in_use == 0 && !ours) {
        *err = sc_asprintf("the network namespace %s exists and was not made by sidecar pod run: "
                           "it is left alone; choose another --netns",
                           pod->netns);
        return SC_ECONFIG;
    }
    if (in_use == 0) {
        /* a runner killed with SIGKILL left it: nothing runs in it any more */
        sc_warn("removing a stale network namespace of this pod", SC_LS("netns", pod->netns));
        if (stale_remove(pod, err) < 0) {
            return SC_ECONFIG;
        }
    }
    if (addr_in_use(pod, pod->host_addr) || addr_in_use(pod, pod->pod_addr) ||
        (pod->pod_addr6[0] &&
         (addr_in_use(pod, pod->host_addr6) || addr_in_use(pod, pod->pod_addr6)))) {
        *err = sc_asprintf("pod network: %s or %s is already an address here (another pod?); "
                           "choose --pod-ip and --host-ip",
                           pod->host_addr, pod->pod_addr);
        return SC_ECONFIG;
    }
    snprintf(pod->veth, sizeof(pod->veth), "scp%d", (int)getpid() % 10000000);
    char host_cidr[80], pod_cidr[80];
    snprintf(host_cidr, sizeof(host_cidr), "%s/%u", pod->host_addr, pp);
    snprintf(pod_cidr, sizeof(pod_cidr), "%s/%u", pod->pod_addr, pp);
    const char *ns = pod->netns;
    const char *add[] = { "netns", "add", ns, NULL };
    if (ip_run(pod, add, "creating the network namespace", err) < 0) {
        return SC_ECONFIG;
    }
    pod->net_made = true;
    mark_set(ns, true);
    const char *lo[] = { "-n", ns, "link", "set", "lo", "up", NULL };
    const char *veth[] = { "link", "add",  pod->veth, "type", "veth", "peer",
                           "name", "eth0", "netns",   ns,     NULL };
    const char *haddr[] = { "addr", "add", host_cidr, "dev", pod->veth, NULL };
    const char *hup[] = { "link", "set", pod->veth, "up", NULL };
    const char *paddr[] = { "-n", ns, "addr", "add", pod_cidr, "dev", "eth0", NULL };
    const char *pup[] = { "-n", ns, "link", "set", "eth0", "up", NULL };
    const char *route[] = { "-n", ns, "route", "add", "default", "via", pod->host_addr, NULL };
    if (ip_run(pod, lo, "bringing loopback up", err) < 0 ||
        ip_run(pod, veth, "creating the veth pair", err) < 0 ||
        ip_run(pod, haddr, "addressing the runner's end", err) < 0 ||
        ip_run(pod, hup, "bringing the runner's end up", err) < 0 ||
        ip_run(pod, paddr, "addressing the pod's end", err) < 0 ||
        ip_run(pod, pup, "bringing the pod's end up", err) < 0 ||
        ip_run(pod, route, "adding the default route", err) < 0) {
        return SC_ECONFIG;
    }
    if (pod->pod_addr6[0]) {
        /* nodad: the pair is ours alone, and an address in duplicate detection cannot be used */
        char h6[80], p6[80];
        snprintf(h6, sizeof(h6), "%s/%u", pod->host_addr6, pod->prefix6);
        snprintf(p6, sizeof(p6), "%s/%u", pod->pod_addr6, pod->prefix6);
        const char *ha6[] = { "-6", "addr", "add", h6, "dev", pod->veth, "nodad", NULL };
        const char *pa6[] = { "-n", ns, "-6", "addr", "add", p6, "dev", "eth0", "nodad", NULL };
        const char *rt6[] = { "-n",  ns,        "-6",  "route",
                              "add", "default", "via", pod->host_addr6,
                              "dev", "eth0",    NULL };
        if (ip_run(pod, ha6, "addressing the runner's end (IPv6)", err) < 0 ||
            ip_run(pod, pa6, "addressing the pod's end (IPv6)", err) < 0 ||
            ip_run(pod, rt6, "adding the IPv6 default route", err) < 0) {
            return SC_ECONFIG;
        }
    }
    sc_info("pod network ready", SC_LS("netns", ns), SC_LS("pod_ip", pod_cidr),
            SC_LS("pod_ip6", pod->pod_addr6), SC_LS("host_ip", pod->host_addr),
            SC_LS("veth", pod->veth), SC_LS("reason", why));
    return 0;
}

void pod_net_teardown(struct pod *pod)
{
    if (!pod->net_made) {
        return;
    }
    pod->net_made = false;
    char *path = ns_path(pod->netns);
    /* what outlived its container (a daemonised grandchild) holds the namespace and its veth */
    int left = 0;
    for (int i = 0; i < 100; i++) {
        int n = ns_procs(path, SIGKILL);
        if (i == 0) {
            left = n;
        }
        if (n <= 0) {
            break;
        }
        struct timespec ts = { 0, 20 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    if (left > 0) {
        sc_warn("killed processes left in the pod's network namespace", SC_LS("netns", pod->netns),
                SC_LI("count", left));
    }
    char *err = NULL;
    const char *ldel[] = { "link", "del", pod->veth, NULL };
    if (pod->veth[0] && ip_run(pod, ldel, "deleting the veth pair", &err) < 0) {
        sc_free(err); /* gone already when it was never made */
        err = NULL;
    }
    const char *del[] = { "netns", "del", pod->netns, NULL };
    if (ip_run(pod, del, "deleting the network namespace", &err) < 0) {
        sc_error("cannot remove the pod's network namespace", SC_LS("netns", pod->netns),
                 SC_LS("error", err));
        sc_free(err);
    } else {
        mark_set(pod->netns, false);
        sc_info("pod network removed", SC_LS("netns", pod->netns), SC_LS("veth", pod->veth));
    }
    sc_free(path);
}

/* ---- securityContext: user, group, capabilities ---- */

static int64_t eff_id(const struct pod *pod, const struct pod_container *c, bool group)
{
    int64_t own = group ? c->security.run_as_group : c->security.run_as_user;
    const struct pod_security *ps = &pod->m->spec->security;
    int64_t def = ps->set ? (group ? ps->run_as_group : ps->run_as_user) : -1;
    return c->security.set && own >= 0 ? own : def;
}

static bool eff_non_root(const struct pod *pod, const struct pod_container *c)
{
    const char *v = c->security.set ? c->security.run_as_non_root : NULL;
    if (!v && pod->m->spec->security.set) {
        v = pod->m->spec->security.run_as_non_root;
    }
    return pod_is_true(v);
}

static bool drops_all(const struct pod_capabilities *k)
{
    for (size_t i = 0; i < k->drop.n; i++) {
        if (strcasecmp(k->drop.v[i], "ALL") == 0) {
            return true;
        }
    }
    return false;
}

int pod_sec_check(struct pod *pod, const struct pod_container *c, char **err)
{
    int64_t uid = eff_id(pod, c, false), gid = eff_id(pod, c, true);
    bool root = geteuid() == 0;
    if (eff_non_root(pod, c) && (uid == 0 || (uid < 0 && root))) {
        *err = sc_asprintf("container %s: runAsNonRoot is true but it would run as root (set "
                           "securityContext.runAsUser)",
                           c->name);
        return SC_ECONFIG;
    }
    if (!root &&
        ((uid >= 0 && uid != (int64_t)geteuid()) || (gid >= 0 && gid != (int64_t)getegid()))) {
        *err = sc_asprintf("container %s: securityContext.runAsUser/runAsGroup need the runner "
                           "to run as root",
                           c->name);
        return SC_ECONFIG;
    }
    const struct pod_capabilities *k = &c->security.capabilities;
    if (!root && k->add.n > 0) {
        *err = sc_asprintf("container %s: securityContext.capabilities.add needs the runner to "
                           "run as root",
                           c->name);
        return SC_ECONFIG;
    }
    bool nnp = c->security.set && pod_is_false(c->security.allow_privilege_escalation);
    bool need = (root && (uid >= 0 || gid >= 0 || k->drop.n > 0)) || nnp;
    if (need && !pod->setpriv_bin) {
        *err = sc_asprintf("container %s: securityContext needs setpriv (util-linux), not found "
                           "in PATH",
                           c->name);
        return SC_ECONFIG;
    }
    return 0;
}

size_t pod_net_words(struct pod *pod, const struct pod_container *c, bool netns, char **v)
{
    size_t n = 0;
    if (netns) {
        if (pod->net) {
            v[n++] = sc_strdup(pod->ip_bin);
            v[n++] = sc_strdup("netns");
            v[n++] = sc_strdup("exec");
            v[n++] = sc_strdup(pod->netns);
        }
        return n;
    }
    int64_t uid = eff_id(pod, c, false), gid = eff_id(pod, c, true);
    bool root = geteuid() == 0;
    const struct pod_capabilities *k = &c->security.capabilities;
    bool nnp = c->security.set && pod_is_false(c->security.allow_privilege_escalation);
    bool ids = root && (uid >= 0 || gid >= 0);
    bool caps = root && k->drop.n > 0;
    if (!pod->setpriv_bin || (!ids && !caps && !nnp)) {
        return 0;
    }
    v[n++] = sc_strdup(pod->setpriv_bin);
    if (ids) {
        if (uid >= 0) {
            v[n++] = sc_asprintf("--reuid=%lld", (long long)uid);
        }
        if (gid >= 0) {
            v[n++] = sc_asprintf("--regid=%lld", (long long)gid);
        }
        v[n++] = sc_strdup("--clear-groups");
    }
    if (caps) {
        /* the bounding set: what a root process gets after exec, what a non-root one never
         * exceeds; drop ALL keeps only the added ones */
        struct sc_buf b;
        sc_buf_init(&b, 4096);
        sc_buf_append_cstr(&b, "--bounding-set=");
        if (drops_all(k)) {
            sc_buf_append_cstr(&b, "-all");
            for (size_t i = 0; i < k->add.n; i++) {
                sc_buf_appendf(&b, ",+%s", pod_cap_name(pod_cap_number(k->add.v[i])));
            }
        } else {
            for (size_t i = 0; i < k->drop.n; i++) {
                sc_buf_appendf(&b, "%s-%s", i ? "," : "",
                               pod_cap_name(pod_cap_number(k->drop.v[i])));
            }
        }
        v[n++] = sc_strdup(sc_buf_cstr(&b));
        sc_buf_cleanup(&b);
        v[n++] = sc_strdup("--inh-caps=-all");
    }
    if (nnp) {
        v[n++] = sc_strdup("--no-new-privs");
    }
    v[n++] = sc_strdup("--");
    return n;
}

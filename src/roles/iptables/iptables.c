// SPDX-License-Identifier: Apache-2.0
// `sidecar iptables`: sets up transparent interception for a pod, once, as an init container
// does (istio-init, linkerd's proxy-init): inbound TCP to the proxy's inbound port, outbound TCP
// to its outbound port, except the proxy's own traffic, with iptables-restore/ip6tables-restore
// (one atomic input per family) or nft (one table, one transaction). It applies, then reads the
// rules back and compares them with what it meant to write: any difference or failure exits
// non-zero, so a pod never starts with its traffic silently not intercepted. --cleanup removes
// exactly what it added; --dry-run prints the rules. Running it twice changes nothing.
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "app.h"
#include "core/alloc.h"
#include "core/error.h"
#include "roles/iptables/iptables.h"

/* How long one tool may run (iptables waits up to 5 s for the xtables lock). */
#define TOOL_TIMEOUT_MS 30000

static const char *const backends[] = { "auto", "iptables", "nft", NULL };
static const char *const ipv6_modes[] = { "auto", "true", "false", NULL };

/* ---- running the tools ---- */

/* Runs <argv> with <input>; on success leaves its stdout in <out> (when not NULL). On failure
 * prints what went wrong and the tool's stderr. Returns 0 or -1. */
static int run(const char *const argv[], const char *input, size_t inlen, struct sc_buf *out)
{
    struct sc_buf err;
    sc_buf_init(&err, 64 * 1024);
    if (out) {
        sc_buf_reset(out);
    }
    int rc = iptables_exec(argv, input, inlen, out, &err, TOOL_TIMEOUT_MS);
    if (rc != 0) {
        const char *what = rc == -ENOENT        ? "not found in PATH"
                           : rc == SC_ETIMEDOUT ? "timed out"
                           : rc == SC_ETOOBIG   ? "output too large"
                           : rc < 0             ? strerror(-rc)
                                                : "failed";
        fprintf(stderr, "sidecar iptables: %s: %s", argv[0], what);
        if (rc > 0) {
            fprintf(stderr, " (exit status %d)", rc);
        }
        struct sc_str e = sc_str_trim(sc_buf_str(&err));
        while (e.len && e.p[e.len - 1] == '\n') {
            e.len--;
        }
        if (e.len) {
            fprintf(stderr, ": %.*s", SC_STR_FMT(e));
        }
        fputc('\n', stderr);
    }
    sc_buf_cleanup(&err);
    return rc == 0 ? 0 : -1;
}

static const char *fam_name(int family)
{
    return family == AF_INET ? "IPv4" : "IPv6";
}

static const char *save_tool(int family)
{
    return family == AF_INET ? "iptables-save" : "ip6tables-save";
}

static const char *restore_tool(int family)
{
    return family == AF_INET ? "iptables-restore" : "ip6tables-restore";
}

static int ipt_save(int family, struct sc_buf *out)
{
    const char *argv[] = { save_tool(family), "-t", "nat", NULL };
    return run(argv, NULL, 0, out);
}

static int ipt_restore(int family, struct sc_buf *in)
{
    const char *argv[] = { restore_tool(family), "--noflush", "-w", "5", NULL };
    return run(argv, in->p, in->len, NULL);
}

/* ---- iptables backend ---- */

static int ipt_apply(const struct iptables_plan *p, int family)
{
    struct sc_buf save, in, why;
    sc_buf_init(&save, IPTABLES_TEXT_MAX);
    sc_buf_init(&in, IPTABLES_TEXT_MAX);
    sc_buf_init(&why, 4096);
    int rc = -1;
    if (ipt_save(family, &save) < 0) {
        goto out;
    }
    if (iptables_ipt_restore(p, family, sc_buf_cstr(&save), &in) < 0) {
        fprintf(stderr, "sidecar iptables: the rules are too large\n");
        goto out;
    }
    if (ipt_restore(family, &in) < 0 || ipt_save(family, &save) < 0) {
        goto out;
    }
    if (iptables_ipt_verify(p, family, sc_buf_cstr(&save), &why) < 0) {
        fprintf(stderr, "sidecar iptables: verification failed (%s, %s): %s\n", fam_name(family),
                restore_tool(family), sc_buf_cstr(&why));
        goto out;
    }
    rc = 0;
out:
    sc_buf_cleanup(&save);
    sc_buf_cleanup(&in);
    sc_buf_cleanup(&why);
    return rc;
}

/* Removes the role's chains and jumps of <family>; with <dry>, prints what it would run. */
static int ipt_cleanup(int family, bool dry)
{
    struct sc_buf save, in;
    sc_buf_init(&save, IPTABLES_TEXT_MAX);
    sc_buf_init(&in, IPTABLES_TEXT_MAX);
    int rc = -1;
    if (ipt_save(family, &save) < 0) {
        goto out;
    }
    int n = iptables_ipt_cleanup(sc_buf_cstr(&save), &in);
    if (n < 0) {
        goto out;
    }
    if (dry) {
        printf("# %s --noflush (%s)\n%s", restore_tool(family), fam_name(family),
               n ? sc_buf_cstr(&in) : "# nothing to remove\n");
        rc = 0;
        goto out;
    }
    if (n > 0 && (ipt_restore(family, &in) < 0 || ipt_save(family, &save) < 0)) {
        goto out;
    }
    if (iptables_ipt_present(sc_buf_cstr(&save))) {
        fprintf(stderr, "sidecar iptables: %s rules remain after cleanup\n", fam_name(family));
        goto out;
    }
    rc = 0;
out:
    sc_buf_cleanup(&save);
    sc_buf_cleanup(&in);
    return rc;
}

/* ---- nft backend ---- */

static int nft_apply(const struct iptables_plan *p)
{
    struct sc_buf in, listing, why;
    sc_buf_init(&in, IPTABLES_TEXT_MAX);
    sc_buf_init(&listing, IPTABLES_TEXT_MAX);
    sc_buf_init(&why, 4096);
    int rc = -1;
    const char *apply[] = { "nft", "-f", "-", NULL };
    const char *list[] = { "nft", "list", "table", "inet", IPTABLES_NFT_TABLE, NULL };
    if (iptables_nft_apply(p, &in) < 0) {
        fprintf(stderr, "sidecar iptables: the rules are too large\n");
        goto out;
    }
    if (run(apply, in.p, in.len, NULL) < 0 || run(list, NULL, 0, &listing) < 0) {
        goto out;
    }
    if (iptables_nft_verify(p, sc_buf_cstr(&listing), &why) < 0) {
        fprintf(stderr, "sidecar iptables: verification failed (nft table inet %s): %s\n",
                IPTABLES_NFT_TABLE, sc_buf_cstr(&why));
        goto out;
    }
    rc = 0;
out:
    sc_buf_cleanup(&in);
    sc_buf_cleanup(&listing);
    sc_buf_cleanup(&why);
    return rc;
}

static bool nft_table_listed(struct sc_buf *tables)
{
    struct sc_str rest = sc_buf_str(tables);
    while (rest.len) {
        struct sc_str l = sc_str_trim(sc_str_split(&rest, '\n'));
        if (sc_str_eq(l, SC_STR("table inet " IPTABLES_NFT_TABLE))) {
            return true;
        }
    }
    return false;
}

static int nft_cleanup(bool dry)
{
    struct sc_buf in, tables;
    sc_buf_init(&in, 4096);
    sc_buf_init(&tables, IPTABLES_TEXT_MAX);
    int rc = -1;
    const char *apply[] = { "nft", "-f", "-", NULL };
    const char *list[] = { "nft", "list", "tables", NULL };
    iptables_nft_cleanup(&in);
    if (dry) {
        printf("# nft -f -\n%s", sc_buf_cstr(&in));
        rc = 0;
        goto out;
    }
    if (run(apply, in.p, in.len, NULL) < 0 || run(list, NULL, 0, &tables) < 0) {
        goto out;
    }
    if (nft_table_listed(&tables)) {
        fprintf(stderr, "sidecar iptables: table inet %s remains after cleanup\n",
                IPTABLES_NFT_TABLE);
        goto out;
    }
    rc = 0;
out:
    sc_buf_cleanup(&in);
    sc_buf_cleanup(&tables);
    return rc;
}

/* ---- ::6 on lo: the IPv6 inbound passthrough's source address ---- */

/* The kernel's struct in6_ifreq (linux/ipv6.h, which clashes with netinet/in.h). */
struct lo6_ifreq {
    struct in6_addr addr;
    uint32_t prefixlen;
    int ifindex;
};

/* Returns true when /proc/net/if_inet6 lists ::6 on lo. */
static bool lo6_present(void)
{
    FILE *f = fopen("/proc/net/if_inet6", "re");
    if (!f) {
        return false;
    }
    char line[256];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f)) {
        char addr[33], dev[IF_NAMESIZE + 1];
        unsigned idx, plen, scope, flags;
        found =
            sscanf(line, "%32s %x %x %x %x %16s", addr, &idx, &plen, &scope, &flags, dev) == 6 &&
            strcmp(addr, "00000000000000000000000000000006") == 0 && plen == 128 &&
            strcmp(dev, "lo") == 0;
    }
    fclose(f);
    return found;
}

/* Adds (<add>) or removes ::6/128 on lo with SIOCSIFADDR / SIOCDIFADDR, as `ip -6 addr add ::6/128
 * dev lo` does, without needing iproute2 in the image. Returns 0 or a negative errno; adding an
 * address that is there, or removing one that is not, is 0. */
static int lo6_set(bool add)
{
    unsigned idx = if_nametoindex("lo");
    if (idx == 0) {
        return -errno;
    }
    int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    struct lo6_ifreq r = { .prefixlen = 128, .ifindex = (int)idx };
    r.addr.s6_addr[15] = 6;
    int rc = ioctl(fd, add ? SIOCSIFADDR : SIOCDIFADDR, &r) < 0 ? -errno : 0;
    close(fd);
    if ((add && rc == -EEXIST) || (!add && (rc == -EADDRNOTAVAIL || rc == -ENOENT))) {
        rc = 0;
    }
    return rc;
}

/* ---- the command ---- */

static bool have_iptables(bool v6)
{
    return iptables_have_tool("iptables-restore") && iptables_have_tool("iptables-save") &&
           (!v6 ||
            (iptables_have_tool("ip6tables-restore") && iptables_have_tool("ip6tables-save")));
}

/* The backend "auto" stands for: iptables when its tools are installed (what users inspect with
 * iptables-save), else nft. Returns IPTABLES_BACKEND_IPTABLES or _NFT, or -1 when neither is. */
static int pick_backend(int backend, bool v6)
{
    if (backend != IPTABLES_BACKEND_AUTO) {
        return backend;
    }
    if (have_iptables(v6)) {
        return IPTABLES_BACKEND_IPTABLES;
    }
    return iptables_have_tool("nft") ? IPTABLES_BACKEND_NFT : -1;
}

static int print_rules(const struct iptables_plan *p, int backend)
{
    struct sc_buf b;
    sc_buf_init(&b, IPTABLES_TEXT_MAX);
    int rc = 0;
    if (backend == IPTABLES_BACKEND_NFT) {
        sc_buf_append_cstr(&b, "# nft -f -\n");
        rc = iptables_nft_apply(p, &b);
    } else {
        for (int f = 0; f < (p->ipv6 ? 2 : 1) && rc == 0; f++) {
            int family = f ? AF_INET6 : AF_INET;
            sc_buf_appendf(&b, "# %s --noflush (%s)\n", restore_tool(family), fam_name(family));
            rc = iptables_ipt_restore(p, family, NULL, &b);
        }
    }
    if (rc == 0) {
        fwrite(b.p, 1, b.len, stdout);
    }
    sc_buf_cleanup(&b);
    return rc == 0 ? 0 : 1;
}

static int cleanup(int backend, bool v6, bool dry)
{
    bool ipt = backend == IPTABLES_BACKEND_IPTABLES ||
               (backend == IPTABLES_BACKEND_AUTO && have_iptables(false));
    bool nft = backend == IPTABLES_BACKEND_NFT ||
               (backend == IPTABLES_BACKEND_AUTO && iptables_have_tool("nft"));
    /* IPv6 rules are removed whenever the kernel has IPv6 and ip6tables is there: they may
     * predate an --ipv6 false. */
    bool ipt6 = ipt && (v6 || access("/proc/net/if_inet6", F_OK) == 0) &&
                iptables_have_tool("ip6tables-save") && iptables_have_tool("ip6tables-restore");
    if (!ipt && !nft) {
        fprintf(stderr, "sidecar iptables: neither iptables nor nft is installed\n");
        return 1;
    }
    int failed = 0;
    if (ipt) {
        failed |= ipt_cleanup(AF_INET, dry) < 0;
    }
    if (ipt6) {
        failed |= ipt_cleanup(AF_INET6, dry) < 0;
    }
    if (nft) {
        failed |= nft_cleanup(dry) < 0;
    }
    if (lo6_present()) {
        int rc = dry ? 0 : lo6_set(false);
        if (dry) {
            fprintf(stderr, "sidecar iptables: would remove ::6/128 from lo\n");
        } else if (rc < 0) {
            fprintf(stderr, "sidecar iptables: cannot remove ::6/128 from lo: %s\n", strerror(-rc));
            failed = 1;
        }
    }
    if (!failed && !dry) {
        fprintf(stderr, "sidecar iptables: cleanup done (%s%s%s)\n", ipt ? "iptables" : "",
                ipt && nft ? ", " : "", nft ? "nft" : "");
    }
    return failed ? 1 : 0;
}

static int iptables_command(const void *cfgv)
{
    const struct iptables_cfg *cfg = cfgv;
    bool v6 = cfg->ipv6 == IPTABLES_V6_ON ||
              (cfg->ipv6 == IPTABLES_V6_AUTO && access("/proc/net/if_inet6", F_OK) == 0);
    if (cfg->cleanup) {
        return cleanup(cfg->backend, v6, cfg->dry_run);
    }
    struct iptables_plan *p = SC_NEW(struct iptables_plan);
    char *err = NULL;
    int code = 1;
    if (iptables_plan_build(cfg, v6, p, &err) < 0) {
        fprintf(stderr, "sidecar iptables: %s\n", err);
        goto out;
    }
    int backend = pick_backend(cfg->backend, v6);
    if (cfg->dry_run) {
        code = print_rules(p, backend < 0 ? IPTABLES_BACKEND_IPTABLES : backend);
        if (v6 && code == 0) {
            fprintf(stderr, "sidecar iptables: would add ::6/128 to lo (the IPv6 inbound "
                            "passthrough source)\n");
        }
        goto out;
    }
    if (backend < 0) {
        fprintf(stderr, "sidecar iptables: neither iptables%s nor nft is installed\n",
                v6 ? "/ip6tables" : "");
        goto out;
    }
    if (backend == IPTABLES_BACKEND_NFT) {
        if (nft_apply(p) < 0) {
            goto out;
        }
    } else if (ipt_apply(p, AF_INET) < 0 || (v6 && ipt_apply(p, AF_INET6) < 0)) {
        goto out;
    }
    /* The proxy's IPv6 inbound passthrough connects from ::6 (Istio's), which the rules let
     * through: the app's answers come back only when ::6 is an address of lo. */
    if (v6) {
        int rc = lo6_set(true);
        if (rc < 0 || !lo6_present()) {
            fprintf(stderr,
                    "sidecar iptables: cannot add ::6/128 to lo (IPv6 inbound passthrough): %s; "
                    "run with --ipv6 false if the pod has no IPv6\n",
                    rc < 0 ? strerror(-rc) : "not listed in /proc/net/if_inet6 afterwards");
            goto out;
        }
    }
    fprintf(stderr,
            "sidecar iptables: interception in place and verified (%s, %s): inbound -> :%u, "
            "outbound -> :%u, proxy uid %u gid %u\n",
            backend == IPTABLES_BACKEND_NFT ? "nft" : "iptables",
            v6 ? "IPv4 and IPv6, ::6/128 on lo" : "IPv4", p->inbound_port, p->outbound_port, p->uid,
            p->gid);
    code = 0;
out:
    sc_free(err);
    sc_free(p);
    return code;
}

static int check_cfg(const void *cfgv, char **err)
{
    const struct iptables_cfg *cfg = cfgv;
    if (cfg->inbound_port == cfg->outbound_port) {
        *err = sc_asprintf("inbound_port and outbound_port must differ (both %lld)",
                           (long long)cfg->inbound_port);
        return SC_ECONFIG;
    }
    return 0;
}

/* The ports of the sidecar's own servers a kubelet or Prometheus may reach from outside: admin
 * servers of every role (proxy 15000, logs 15020, metrics 15021, config 15022, secrets 15023, pod
 * runner 15030, webhook 15040), the proxy's status port (15024, the kubelet's probes), its
 * outbound and inbound ports, and 15090, where Envoy users' scrape configs look for proxy
 * metrics. */
#define DEFAULT_EXCLUDED_INBOUND "15000,15001,15006,15020,15021,15022,15023,15024,15030,15040,15090"

static const struct sc_opt iptables_opts[] = {
    { .name = "backend",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct iptables_cfg, backend),
      .def = "auto",
      .help = "iptables (iptables-restore/ip6tables-restore, legacy or nf_tables), nft (one "
              "native nftables table, inet sidecar), or auto: iptables when installed, else nft",
      .flags = SC_OPT_FLAG,
      .enums = backends },
    { .name = "dry_run",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct iptables_cfg, dry_run),
      .help = "print the rules (iptables-restore or nft -f input) instead of applying them; with "
              "--cleanup, print what would be removed",
      .flags = SC_OPT_FLAG },
    { .name = "cleanup",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct iptables_cfg, cleanup),
      .help = "remove the chains, jumps and table this command adds, and nothing else (with "
              "backend auto: of both backends)",
      .flags = SC_OPT_FLAG },
    { .name = "proxy_uid",
      .type = SC_OPT_INT,
      .offset = offsetof(struct iptables_cfg, proxy_uid),
      .def = "1337",
      .help = "user id the proxy runs as: its connections are never redirected",
      .flags = SC_OPT_FLAG,
      .min = 0,
      .max = 4294967294 },
    { .name = "proxy_gid",
      .type = SC_OPT_INT,
      .offset = offsetof(struct iptables_cfg, proxy_gid),
      .def = "1337",
      .help = "group id the proxy runs as: its connections are never redirected",
      .flags = SC_OPT_FLAG,
      .min = 0,
      .max = 4294967294 },
    { .name = "inbound_port",
      .type = SC_OPT_INT,
      .offset = offsetof(struct iptables_cfg, inbound_port),
      .def = "15006",
      .help = "the proxy's inbound port: captured inbound connections are redirected here",
      .flags = SC_OPT_FLAG,
      .min = 1,
      .max = 65535 },
    { .name = "outbound_port",
      .type = SC_OPT_INT,
      .offset = offsetof(struct iptables_cfg, outbound_port),
      .def = "15001",
      .help = "the proxy's outbound port: captured outbound connections are redirected here",
      .flags = SC_OPT_FLAG,
      .min = 1,
      .max = 65535 },
    { .name = "include_inbound_ports",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct iptables_cfg, include_inbound_ports),
      .help = "capture only these inbound TCP ports (then exclude_inbound_ports is not used); "
              "empty or \"*\": every port; \"none\": no inbound capture",
      .flags = SC_OPT_FLAG,
      .min = 0,
      .max = IPTABLES_MAX_LIST,
      .check = iptables_check_include_ports },
    { .name = "exclude_inbound_ports",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct iptables_cfg, exclude_inbound_ports),
      .def = DEFAULT_EXCLUDED_INBOUND,
      .help = "inbound TCP ports never captured: the sidecar's own servers (a flag adds to "
              "these; a config file key replaces them)",
      .flags = SC_OPT_FLAG,
      .min = 0,
      .max = IPTABLES_MAX_LIST,
      .check = iptables_check_ports },
    { .name = "exclude_outbound_ports",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct iptables_cfg, exclude_outbound_ports),
      .help = "outbound TCP destination ports never captured",
      .flags = SC_OPT_FLAG,
      .min = 0,
      .max = IPTABLES_MAX_LIST,
      .check = iptables_check_ports },
    { .name = "include_outbound_cidrs",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct iptables_cfg, include_outbound_cidrs),
      .help = "capture outbound TCP only to these IPv4/IPv6 CIDRs; empty or \"*\": every "
              "destination (a family with no CIDR listed is not captured)",
      .flags = SC_OPT_FLAG,
      .min = 0,
      .max = IPTABLES_MAX_LIST,
      .check = iptables_check_include_cidrs },
    { .name = "exclude_outbound_cidrs",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct iptables_cfg, exclude_outbound_cidrs),
      .help = "outbound destinations (IPv4/IPv6 CIDRs) never captured; checked before "
              "include_outbound_cidrs",
      .flags = SC_OPT_FLAG,
      .min = 0,
      .max = IPTABLES_MAX_LIST,
      .check = iptables_check_cidrs },
    { .name = "ipv6",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct iptables_cfg, ipv6),
      .def = "auto",
      .help = "also capture IPv6 (ip6tables, or ip6 rules in the nft table); auto: when the "
              "kernel has IPv6 (/proc/net/if_inet6 exists)",
      .flags = SC_OPT_FLAG,
      .enums = ipv6_modes },
    { 0 },
};

static const char iptables_usage[] =
    "Runs once, as root in the pod's network namespace (an init container with NET_ADMIN and\n"
    "NET_RAW): applies the rules, reads them back, and exits 0 only when every rule is in\n"
    "place. Exit status 1 when anything failed: the pod must not start uncaptured.\n"
    "  sidecar iptables                      apply (idempotent: a second run changes nothing)\n"
    "  sidecar iptables --dry-run            print the rules instead\n"
    "  sidecar iptables --cleanup            remove what it added, and nothing else\n"
    "Inspect: iptables-save -t nat (and ip6tables-save -t nat), or nft list table inet sidecar.";

const struct sc_role sc_role_iptables = {
    .name = "iptables",
    .summary = "sets up transparent interception of a pod's TCP traffic to the proxy (iptables or "
               "nftables)",
    .usage = iptables_usage,
    .opts = iptables_opts,
    .cfg_size = sizeof(struct iptables_cfg),
    .check = check_cfg,
    .command = iptables_command,
};

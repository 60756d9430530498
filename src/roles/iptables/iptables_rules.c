// SPDX-License-Identifier: Apache-2.0
// The interception rules as text: pure functions from options to iptables-restore input or an
// nftables table, and from iptables-save / nft list output back to "is everything in place".
// The rules follow istio-iptables' REDIRECT mode, chain for chain (inbound: every TCP port but the
// excluded ones to the inbound port; output, in order: excluded ports, 127.0.0.6 on lo, the
// proxy's user and group, 127.0.0.1, excluded CIDRs, then the redirect to the outbound port), so
// what users know from Istio holds here. Rules are written in the exact form iptables-save and nft
// list print them, so --dry-run shows what the kernel will show and verification is a comparison.
#include "roles/iptables/iptables.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/str.h"

static const char *const our_chains[] = {
    IPTABLES_CHAIN_INBOUND,
    IPTABLES_CHAIN_IN_REDIRECT,
    IPTABLES_CHAIN_OUTPUT,
    IPTABLES_CHAIN_REDIRECT,
};
#define N_CHAINS (sizeof(our_chains) / sizeof(our_chains[0]))

/* ---- option values ---- */

static int parse_port(struct sc_str s, uint16_t *port)
{
    uint64_t v;
    if (sc_str_to_u64(s, 65535, &v) < 0 || v == 0) {
        return -EINVAL;
    }
    *port = (uint16_t)v;
    return 0;
}

static int check_ports(const struct sc_strv *v, bool words, char **err)
{
    for (size_t i = 0; i < v->n; i++) {
        uint16_t port;
        const char *s = v->v[i];
        if (words && (strcmp(s, "*") == 0 || strcmp(s, "none") == 0)) {
            if (v->n > 1) {
                *err = sc_asprintf("\"%s\" cannot be combined with ports", s);
                return SC_ECONFIG;
            }
            continue;
        }
        if (parse_port(sc_str_c(s), &port) < 0) {
            *err = sc_asprintf("invalid port \"%s\" (expected 1..65535%s)", s,
                               words ? ", \"*\" or \"none\"" : "");
            return SC_ECONFIG;
        }
    }
    return 0;
}

int iptables_check_ports(void *field, char **err)
{
    return check_ports(field, false, err);
}

int iptables_check_include_ports(void *field, char **err)
{
    return check_ports(field, true, err);
}

int iptables_parse_cidr(const char *s, struct iptables_cidr *out)
{
    char host[INET6_ADDRSTRLEN];
    const char *slash = strchr(s, '/');
    size_t hlen = slash ? (size_t)(slash - s) : strlen(s);
    if (hlen == 0 || hlen >= sizeof(host)) {
        return -EINVAL;
    }
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    memset(out, 0, sizeof(*out));
    unsigned max;
    if (inet_pton(AF_INET, host, out->addr) == 1) {
        out->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, host, out->addr) == 1) {
        out->family = AF_INET6;
        max = 128;
    } else {
        return -EINVAL;
    }
    out->prefix = max;
    if (slash) {
        uint64_t v;
        if (sc_str_to_u64(sc_str_c(slash + 1), max, &v) < 0) {
            return -EINVAL;
        }
        out->prefix = (unsigned)v;
    }
    /* Clear host bits: the kernel stores the network, and iptables-save prints it so. */
    for (unsigned bit = out->prefix; bit < max; bit++) {
        out->addr[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
    }
    return 0;
}

static int check_cidrs(const struct sc_strv *v, bool star, char **err)
{
    for (size_t i = 0; i < v->n; i++) {
        struct iptables_cidr c;
        if (star && strcmp(v->v[i], "*") == 0) {
            if (v->n > 1) {
                *err = sc_asprintf("\"*\" cannot be combined with CIDRs");
                return SC_ECONFIG;
            }
            continue;
        }
        if (iptables_parse_cidr(v->v[i], &c) < 0) {
            *err =
                sc_asprintf("invalid CIDR \"%s\" (expected e.g. 10.0.0.0/8 or fd00::/8)", v->v[i]);
            return SC_ECONFIG;
        }
    }
    return 0;
}

int iptables_check_cidrs(void *field, char **err)
{
    return check_cidrs(field, false, err);
}

int iptables_check_include_cidrs(void *field, char **err)
{
    return check_cidrs(field, true, err);
}

/* Adds the ports of <v> to <out> (skipping duplicates); "*" and "none" are handled by callers. */
static int plan_ports(const struct sc_strv *v, uint16_t *out, size_t *n, const char *what,
                      char **err)
{
    for (size_t i = 0; i < v->n; i++) {
        uint16_t port;
        if (parse_port(sc_str_c(v->v[i]), &port) < 0) {
            *err = sc_asprintf("%s: invalid port \"%s\"", what, v->v[i]);
            return SC_ECONFIG;
        }
        bool dup = false;
        for (size_t j = 0; j < *n; j++) {
            dup = dup || out[j] == port;
        }
        if (dup) {
            continue;
        }
        if (*n == IPTABLES_MAX_LIST) {
            *err = sc_asprintf("%s: more than %d ports", what, IPTABLES_MAX_LIST);
            return SC_ECONFIG;
        }
        out[(*n)++] = port;
    }
    return 0;
}

static int plan_cidrs(const struct sc_strv *v, struct iptables_cidr *out, size_t *n,
                      const char *what, char **err)
{
    for (size_t i = 0; i < v->n; i++) {
        struct iptables_cidr c;
        if (iptables_parse_cidr(v->v[i], &c) < 0) {
            *err = sc_asprintf("%s: invalid CIDR \"%s\"", what, v->v[i]);
            return SC_ECONFIG;
        }
        if (*n == IPTABLES_MAX_LIST) {
            *err = sc_asprintf("%s: more than %d CIDRs", what, IPTABLES_MAX_LIST);
            return SC_ECONFIG;
        }
        out[(*n)++] = c;
    }
    return 0;
}

static bool is_word(const struct sc_strv *v, const char *w)
{
    return v->n == 1 && strcmp(v->v[0], w) == 0;
}

int iptables_plan_build(const struct iptables_cfg *cfg, bool ipv6, struct iptables_plan *p,
                        char **err)
{
    memset(p, 0, sizeof(*p));
    p->uid = (uint32_t)cfg->proxy_uid;
    p->gid = (uint32_t)cfg->proxy_gid;
    p->inbound_port = (uint16_t)cfg->inbound_port;
    p->outbound_port = (uint16_t)cfg->outbound_port;
    p->ipv6 = ipv6;

    const struct sc_strv *inc = &cfg->include_inbound_ports;
    p->inbound_none = is_word(inc, "none");
    p->inbound_all = inc->n == 0 || is_word(inc, "*");
    if (!p->inbound_all && !p->inbound_none &&
        plan_ports(inc, p->in_incl, &p->n_in_incl, "include_inbound_ports", err) < 0) {
        return SC_ECONFIG;
    }
    if (plan_ports(&cfg->exclude_inbound_ports, p->in_excl, &p->n_in_excl, "exclude_inbound_ports",
                   err) < 0 ||
        plan_ports(&cfg->exclude_outbound_ports, p->out_excl, &p->n_out_excl,
                   "exclude_outbound_ports", err) < 0) {
        return SC_ECONFIG;
    }
    const struct sc_strv *oc = &cfg->include_outbound_cidrs;
    p->outbound_all = oc->n == 0 || is_word(oc, "*");
    if (!p->outbound_all &&
        plan_cidrs(oc, p->out_incl, &p->n_out_incl, "include_outbound_cidrs", err) < 0) {
        return SC_ECONFIG;
    }
    if (plan_cidrs(&cfg->exclude_outbound_cidrs, p->out_cidr_excl, &p->n_out_cidr_excl,
                   "exclude_outbound_cidrs", err) < 0) {
        return SC_ECONFIG;
    }
    return 0;
}

/* ---- text helpers ---- */

/* Writes <c> as iptables-save prints it (always with a prefix) or, with <nft>, as nft list does
 * (no prefix for a single host). */
static void cidr_text(const struct iptables_cidr *c, bool nft, char *out, size_t outlen)
{
    char a[INET6_ADDRSTRLEN];
    inet_ntop(c->family, c->addr, a, sizeof(a));
    unsigned max = c->family == AF_INET ? 32 : 128;
    if (nft && c->prefix == max) {
        snprintf(out, outlen, "%s", a);
    } else {
        snprintf(out, outlen, "%s/%u", a, c->prefix);
    }
}

/* Calls sc_buf_appendf and remembers a failure in <*rc>. */
#define OUT(rc, b, ...)                                                                            \
    do {                                                                                           \
        if (sc_buf_appendf((b), __VA_ARGS__) < 0) {                                                \
            (rc) = SC_ETOOBIG;                                                                     \
        }                                                                                          \
    } while (0)

/* Returns the next line of <*rest> (without its '\n') and advances past it. */
static struct sc_str next_line(struct sc_str *rest)
{
    return sc_str_split(rest, '\n');
}

/* ---- iptables ---- */

int iptables_ipt_rules(const struct iptables_plan *p, int family, struct sc_buf *b)
{
    int rc = 0;
    bool v4 = family == AF_INET;
    const char *lo = v4 ? "127.0.0.1/32" : "::1/128";
    const char *six = v4 ? "127.0.0.6/32" : "::6/128";
    char cidr[INET6_ADDRSTRLEN + 8];

    for (size_t i = 0; i < N_CHAINS; i++) {
        OUT(rc, b, ":%s - [0:0]\n", our_chains[i]);
    }
    if (p->inbound_all) {
        for (size_t i = 0; i < p->n_in_excl; i++) {
            OUT(rc, b, "-A %s -p tcp -m tcp --dport %u -j RETURN\n", IPTABLES_CHAIN_INBOUND,
                p->in_excl[i]);
        }
        OUT(rc, b, "-A %s -p tcp -j %s\n", IPTABLES_CHAIN_INBOUND, IPTABLES_CHAIN_IN_REDIRECT);
    } else if (!p->inbound_none) {
        for (size_t i = 0; i < p->n_in_incl; i++) {
            OUT(rc, b, "-A %s -p tcp -m tcp --dport %u -j %s\n", IPTABLES_CHAIN_INBOUND,
                p->in_incl[i], IPTABLES_CHAIN_IN_REDIRECT);
        }
    }
    OUT(rc, b, "-A %s -p tcp -j REDIRECT --to-ports %u\n", IPTABLES_CHAIN_IN_REDIRECT,
        p->inbound_port);

    const char *out = IPTABLES_CHAIN_OUTPUT;
    for (size_t i = 0; i < p->n_out_excl; i++) {
        OUT(rc, b, "-A %s -p tcp -m tcp --dport %u -j RETURN\n", out, p->out_excl[i]);
    }
    /* The inbound side's connections to the app, sent from 127.0.0.6, are never captured. */
    OUT(rc, b, "-A %s -s %s -o lo -j RETURN\n", out, six);
    const char *owner[] = { "uid-owner", "gid-owner" };
    uint32_t id[] = { p->uid, p->gid };
    for (size_t k = 0; k < 2; k++) {
        /* The proxy calling the pod's own address (not localhost) goes through inbound. */
        if (!p->inbound_none) {
            OUT(rc, b, "-A %s ! -d %s -o lo -m owner --%s %u -j %s\n", out, lo, owner[k], id[k],
                IPTABLES_CHAIN_IN_REDIRECT);
        }
        /* Anyone else on loopback talks to the pod itself: not captured. */
        OUT(rc, b, "-A %s -o lo -m owner ! --%s %u -j RETURN\n", out, owner[k], id[k]);
        /* The proxy's own upstream connections are never captured again. */
        OUT(rc, b, "-A %s -m owner --%s %u -j RETURN\n", out, owner[k], id[k]);
    }
    OUT(rc, b, "-A %s -d %s -j RETURN\n", out, lo);
    for (size_t i = 0; i < p->n_out_cidr_excl; i++) {
        if (p->out_cidr_excl[i].family == family) {
            cidr_text(&p->out_cidr_excl[i], false, cidr, sizeof(cidr));
            OUT(rc, b, "-A %s -d %s -j RETURN\n", out, cidr);
        }
    }
    if (p->outbound_all) {
        OUT(rc, b, "-A %s -j %s\n", out, IPTABLES_CHAIN_REDIRECT);
    } else {
        for (size_t i = 0; i < p->n_out_incl; i++) {
            if (p->out_incl[i].family == family) {
                cidr_text(&p->out_incl[i], false, cidr, sizeof(cidr));
                OUT(rc, b, "-A %s -d %s -j %s\n", out, cidr, IPTABLES_CHAIN_REDIRECT);
            }
        }
    }
    OUT(rc, b, "-A %s -p tcp -j REDIRECT --to-ports %u\n", IPTABLES_CHAIN_REDIRECT,
        p->outbound_port);
    return rc;
}

/* The jumps into the role's chains, as iptables-save prints them. */
static const struct {
    const char *from, *to;
} jumps[] = {
    { "PREROUTING", IPTABLES_CHAIN_INBOUND },
    { "OUTPUT", IPTABLES_CHAIN_OUTPUT },
};

/* Calls <fn> for each line of the *nat section of <save>. */
static void each_nat_line(const char *save, void (*fn)(struct sc_str line, void *arg), void *arg)
{
    struct sc_str rest = sc_str_c(save);
    bool nat = false;
    while (rest.len) {
        struct sc_str l = next_line(&rest);
        if (l.len && l.p[l.len - 1] == '\r') {
            l.len--;
        }
        if (sc_str_eq(l, SC_STR("*nat"))) {
            nat = true;
        } else if (l.len && l.p[0] == '*') {
            nat = false;
        } else if (nat) {
            fn(l, arg);
        }
    }
}

/* Returns the chain a "-A CHAIN ..." line appends to, or an empty view. */
static struct sc_str rule_chain(struct sc_str l)
{
    if (!sc_str_startswith(l, SC_STR("-A "))) {
        return SC_STR_NULL;
    }
    struct sc_str rest = sc_str_n(l.p + 3, l.len - 3);
    return sc_str_split(&rest, ' ');
}

static bool is_our_chain(struct sc_str name)
{
    for (size_t i = 0; i < N_CHAINS; i++) {
        if (sc_str_eq(name, sc_str_c(our_chains[i]))) {
            return true;
        }
    }
    return false;
}

/* Returns the target of a rule's " -j TARGET" when it ends the line. */
static struct sc_str rule_target(struct sc_str l)
{
    for (size_t i = l.len; i >= 4; i--) {
        if (memcmp(l.p + i - 4, " -j ", 4) == 0) {
            return sc_str_n(l.p + i, l.len - i);
        }
    }
    return SC_STR_NULL;
}

/* What a save text holds of the role: chains declared and jumps from other chains into ours. */
struct ipt_state {
    bool chain[N_CHAINS];
    size_t njumps[2];       /* per jumps[] */
    struct sc_str jump[64]; /* every "-A X ... -j SIDECAR_*" line from a chain not ours */
    size_t njump;
    struct sc_str rules[512]; /* lines of our chains, in order */
    size_t nrules;
    bool overflow;
};

static void scan_line(struct sc_str l, void *arg)
{
    struct ipt_state *st = arg;
    if (l.len > 1 && l.p[0] == ':') {
        struct sc_str rest = sc_str_n(l.p + 1, l.len - 1);
        struct sc_str name = sc_str_split(&rest, ' ');
        for (size_t i = 0; i < N_CHAINS; i++) {
            if (sc_str_eq(name, sc_str_c(our_chains[i]))) {
                st->chain[i] = true;
            }
        }
        return;
    }
    struct sc_str chain = rule_chain(l);
    if (!chain.len) {
        return;
    }
    if (is_our_chain(chain)) {
        if (st->nrules == SC_ARRAY_LEN(st->rules)) {
            st->overflow = true;
            return;
        }
        st->rules[st->nrules++] = l;
        return;
    }
    struct sc_str target = rule_target(l);
    if (!is_our_chain(target)) {
        return;
    }
    for (size_t j = 0; j < SC_ARRAY_LEN(jumps); j++) {
        if (sc_str_eq(chain, sc_str_c(jumps[j].from)) && sc_str_eq(target, sc_str_c(jumps[j].to))) {
            st->njumps[j]++;
        }
    }
    if (st->njump == SC_ARRAY_LEN(st->jump)) {
        st->overflow = true;
        return;
    }
    st->jump[st->njump++] = l;
}

static void scan(const char *save, struct ipt_state *st)
{
    memset(st, 0, sizeof(*st));
    if (save) {
        each_nat_line(save, scan_line, st);
    }
}

int iptables_ipt_restore(const struct iptables_plan *p, int family, const char *save,
                         struct sc_buf *b)
{
    struct ipt_state *st = SC_NEW(struct ipt_state);
    scan(save, st);
    int rc = 0;
    OUT(rc, b, "*nat\n");
    if (iptables_ipt_rules(p, family, b) < 0) {
        rc = SC_ETOOBIG;
    }
    for (size_t j = 0; j < SC_ARRAY_LEN(jumps); j++) {
        if (st->njumps[j] == 0) {
            OUT(rc, b, "-A %s -p tcp -j %s\n", jumps[j].from, jumps[j].to);
            continue;
        }
        /* A jump added twice (by hand, or by an older run) would be harmless but not ours to
         * leave: keep the first, delete the rest. */
        size_t seen = 0;
        for (size_t i = 0; i < st->njump; i++) {
            struct sc_str l = st->jump[i];
            if (sc_str_eq(rule_chain(l), sc_str_c(jumps[j].from)) &&
                sc_str_eq(rule_target(l), sc_str_c(jumps[j].to)) && seen++ > 0) {
                OUT(rc, b, "-D%.*s\n", (int)l.len - 2, l.p + 2);
            }
        }
    }
    OUT(rc, b, "COMMIT\n");
    sc_free(st);
    return rc;
}

int iptables_ipt_cleanup(const char *save, struct sc_buf *b)
{
    struct ipt_state *st = SC_NEW(struct ipt_state);
    scan(save, st);
    int rc = 0, n = 0;
    for (size_t i = 0; i < N_CHAINS; i++) {
        n += st->chain[i];
    }
    n += (int)st->njump;
    if (n == 0) {
        sc_free(st);
        return 0;
    }
    OUT(rc, b, "*nat\n");
    for (size_t i = 0; i < st->njump; i++) {
        struct sc_str l = st->jump[i];
        OUT(rc, b, "-D%.*s\n", (int)l.len - 2, l.p + 2);
    }
    /* Flush every chain before deleting any: our chains jump to each other. */
    for (size_t i = 0; i < N_CHAINS; i++) {
        if (st->chain[i]) {
            OUT(rc, b, "-F %s\n", our_chains[i]);
        }
    }
    for (size_t i = 0; i < N_CHAINS; i++) {
        if (st->chain[i]) {
            OUT(rc, b, "-X %s\n", our_chains[i]);
        }
    }
    OUT(rc, b, "COMMIT\n");
    sc_free(st);
    return rc < 0 ? rc : n;
}

bool iptables_ipt_present(const char *save)
{
    struct ipt_state *st = SC_NEW(struct ipt_state);
    scan(save, st);
    bool any = st->njump > 0 || st->nrules > 0;
    for (size_t i = 0; i < N_CHAINS; i++) {
        any = any || st->chain[i];
    }
    sc_free(st);
    return any;
}

int iptables_ipt_verify(const struct iptables_plan *p, int family, const char *save,
                        struct sc_buf *why)
{
    struct ipt_state *st = SC_NEW(struct ipt_state);
    struct sc_buf want;
    sc_buf_init(&want, IPTABLES_TEXT_MAX);
    int rc = -ENOENT;
    scan(save, st);
    if (st->overflow) {
        sc_buf_appendf(why, "more rules in the role's chains than any plan writes");
        goto out;
    }
    for (size_t i = 0; i < N_CHAINS; i++) {
        if (!st->chain[i]) {
            sc_buf_appendf(why, "chain %s is missing", our_chains[i]);
            goto out;
        }
    }
    for (size_t j = 0; j < SC_ARRAY_LEN(jumps); j++) {
        if (st->njumps[j] != 1) {
            sc_buf_appendf(why, "%zu jumps from %s to %s (expected 1)", st->njumps[j],
                           jumps[j].from, jumps[j].to);
            goto out;
        }
    }
    if (iptables_ipt_rules(p, family, &want) < 0) {
        sc_buf_appendf(why, "rules too large");
        goto out;
    }
    /* Compare chain by chain: the order of rules within a chain is what matters, and
     * iptables-save lists chains in an order of its own. */
    for (size_t c = 0; c < N_CHAINS; c++) {
        struct sc_str name = sc_str_c(our_chains[c]);
        struct sc_str rest = sc_buf_str(&want);
        size_t k = 0;
        while (rest.len) {
            struct sc_str l = next_line(&rest);
            if (!sc_str_eq(rule_chain(l), name)) {
                continue;
            }
            while (k < st->nrules && !sc_str_eq(rule_chain(st->rules[k]), name)) {
                k++;
            }
            if (k == st->nrules) {
                sc_buf_appendf(why, "rule missing: %.*s", SC_STR_FMT(l));
                goto out;
            }
            if (!sc_str_eq(st->rules[k], l)) {
                sc_buf_appendf(why, "expected \"%.*s\", found \"%.*s\"", SC_STR_FMT(l),
                               SC_STR_FMT(st->rules[k]));
                goto out;
            }
            k++;
        }
        while (k < st->nrules && !sc_str_eq(rule_chain(st->rules[k]), name)) {
            k++;
        }
        if (k < st->nrules) {
            sc_buf_appendf(why, "unexpected rule: %.*s", SC_STR_FMT(st->rules[k]));
            goto out;
        }
    }
    rc = 0;
out:
    sc_buf_cleanup(&want);
    sc_free(st);
    return rc;
}

/* ---- nftables ---- */

int iptables_nft_table(const struct iptables_plan *p, struct sc_buf *b)
{
    int rc = 0;
    char cidr[INET6_ADDRSTRLEN + 8];
    /* Without IPv6 the base chains take IPv4 only; the inet table holds both families. */
    const char *only4 = p->ipv6 ? "" : "meta nfproto ipv4 ";
    const int fams[] = { AF_INET, AF_INET6 };
    size_t nfam = p->ipv6 ? 2 : 1;

    OUT(rc, b, "table inet %s {\n", IPTABLES_NFT_TABLE);
    OUT(rc, b,
        "\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy "
        "accept;\n");
    OUT(rc, b, "\t\t%smeta l4proto tcp jump inbound\n\t}\n\n", only4);
    OUT(rc, b, "\tchain output {\n\t\ttype nat hook output priority -100; policy accept;\n");
    OUT(rc, b, "\t\t%smeta l4proto tcp jump outbound\n\t}\n\n", only4);

    OUT(rc, b, "\tchain inbound {\n");
    if (p->inbound_all) {
        for (size_t i = 0; i < p->n_in_excl; i++) {
            OUT(rc, b, "\t\ttcp dport %u return\n", p->in_excl[i]);
        }
        OUT(rc, b, "\t\tmeta l4proto tcp jump in_redirect\n");
    } else if (!p->inbound_none) {
        for (size_t i = 0; i < p->n_in_incl; i++) {
            OUT(rc, b, "\t\ttcp dport %u jump in_redirect\n", p->in_incl[i]);
        }
    }
    OUT(rc, b, "\t}\n\n");
    OUT(rc, b, "\tchain in_redirect {\n\t\tmeta l4proto tcp redirect to :%u\n\t}\n\n",
        p->inbound_port);

    OUT(rc, b, "\tchain outbound {\n");
    for (size_t i = 0; i < p->n_out_excl; i++) {
        OUT(rc, b, "\t\ttcp dport %u return\n", p->out_excl[i]);
    }
    for (size_t f = 0; f < nfam; f++) {
        OUT(rc, b, "\t\toifname \"lo\" %s saddr %s return\n", f ? "ip6" : "ip",
            f ? "::6" : "127.0.0.6");
    }
    const char *owner[] = { "skuid", "skgid" };
    uint32_t id[] = { p->uid, p->gid };
    for (size_t k = 0; k < 2; k++) {
        for (size_t f = 0; f < nfam && !p->inbound_none; f++) {
            OUT(rc, b, "\t\toifname \"lo\" %s daddr != %s meta %s %u jump in_redirect\n",
                f ? "ip6" : "ip", f ? "::1" : "127.0.0.1", owner[k], id[k]);
        }
        OUT(rc, b, "\t\toifname \"lo\" meta %s != %u return\n", owner[k], id[k]);
        OUT(rc, b, "\t\tmeta %s %u return\n", owner[k], id[k]);
    }
    for (size_t f = 0; f < nfam; f++) {
        OUT(rc, b, "\t\t%s daddr %s return\n", f ? "ip6" : "ip", f ? "::1" : "127.0.0.1");
    }
    for (size_t f = 0; f < nfam; f++) {
        for (size_t i = 0; i < p->n_out_cidr_excl; i++) {
            if (p->out_cidr_excl[i].family == fams[f]) {
                cidr_text(&p->out_cidr_excl[i], true, cidr, sizeof(cidr));
                OUT(rc, b, "\t\t%s daddr %s return\n", f ? "ip6" : "ip", cidr);
            }
        }
    }
    if (p->outbound_all) {
        OUT(rc, b, "\t\tjump out_redirect\n");
    } else {
        for (size_t f = 0; f < nfam; f++) {
            for (size_t i = 0; i < p->n_out_incl; i++) {
                if (p->out_incl[i].family == fams[f]) {
                    cidr_text(&p->out_incl[i], true, cidr, sizeof(cidr));
                    OUT(rc, b, "\t\t%s daddr %s jump out_redirect\n", f ? "ip6" : "ip", cidr);
                }
            }
        }
    }
    OUT(rc, b, "\t}\n\n");
    OUT(rc, b, "\tchain out_redirect {\n\t\tmeta l4proto tcp redirect to :%u\n\t}\n}\n",
        p->outbound_port);
    return rc;
}

int iptables_nft_apply(const struct iptables_plan *p, struct sc_buf *b)
{
    int rc = 0;
    /* "table" creates it when missing, so the delete that follows never fails; the new table is
     * added in the same transaction, so there is no moment without rules. */
    OUT(rc, b, "table inet %s\ndelete table inet %s\n", IPTABLES_NFT_TABLE, IPTABLES_NFT_TABLE);
    if (iptables_nft_table(p, b) < 0) {
        rc = SC_ETOOBIG;
    }
    return rc;
}

int iptables_nft_cleanup(struct sc_buf *b)
{
    int rc = 0;
    OUT(rc, b, "table inet %s\ndelete table inet %s\n", IPTABLES_NFT_TABLE, IPTABLES_NFT_TABLE);
    return rc;
}

/* Returns the next non-blank line of <*rest>, trimmed of spaces and tabs. */
static struct sc_str next_content(struct sc_str *rest)
{
    while (rest->len) {
        struct sc_str l = sc_str_trim(next_line(rest));
        while (l.len && l.p[l.len - 1] == '\r') {
            l.len--;
        }
        if (l.len) {
            return l;
        }
    }
    return SC_STR_NULL;
}

int iptables_nft_verify(const struct iptables_plan *p, const char *listing, struct sc_buf *why)
{
    struct sc_buf want;
    sc_buf_init(&want, IPTABLES_TEXT_MAX);
    int rc = -ENOENT;
    if (iptables_nft_table(p, &want) < 0) {
        sc_buf_appendf(why, "rules too large");
        goto out;
    }
    struct sc_str w = sc_buf_str(&want);
    struct sc_str h = sc_str_c(listing);
    for (;;) {
        struct sc_str a = next_content(&w);
        struct sc_str b = next_content(&h);
        if (!a.len && !b.len) {
            break;
        }
        if (!b.len) {
            sc_buf_appendf(why, "missing: %.*s", SC_STR_FMT(a));
            goto out;
        }
        if (!a.len) {
            sc_buf_appendf(why, "unexpected: %.*s", SC_STR_FMT(b));
            goto out;
        }
        if (!sc_str_eq(a, b)) {
            sc_buf_appendf(why, "expected \"%.*s\", found \"%.*s\"", SC_STR_FMT(a), SC_STR_FMT(b));
            goto out;
        }
    }
    rc = 0;
out:
    sc_buf_cleanup(&want);
    return rc;
}

// SPDX-License-Identifier: Apache-2.0
// `sidecar iptables` inside the role: the options, the rule plan built from them, and the pure
// functions that turn a plan into iptables-restore input or an nftables table and check what the
// kernel holds against it. Nothing here touches the system except iptables_exec (iptables_exec.c).
// The key invariant: every rule this role writes lives in chains (iptables) or one table (nftables)
// of its own, so cleanup removes exactly those and the two jumps into them, and nothing else.
#ifndef SC_ROLES_IPTABLES_H
#define SC_ROLES_IPTABLES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/config.h"

enum { IPTABLES_BACKEND_AUTO, IPTABLES_BACKEND_IPTABLES, IPTABLES_BACKEND_NFT };
enum { IPTABLES_V6_AUTO, IPTABLES_V6_ON, IPTABLES_V6_OFF };

/* Per list of ports or CIDRs; the option tables bound the lists to this. */
#define IPTABLES_MAX_LIST 64

/* Cap on the output of iptables-save / nft list and on generated rule text. */
#define IPTABLES_TEXT_MAX (4u << 20)

/* iptables chains, in the nat table of each family. */
#define IPTABLES_CHAIN_INBOUND "SIDECAR_INBOUND"
#define IPTABLES_CHAIN_IN_REDIRECT "SIDECAR_IN_REDIRECT"
#define IPTABLES_CHAIN_OUTPUT "SIDECAR_OUTPUT"
#define IPTABLES_CHAIN_REDIRECT "SIDECAR_REDIRECT"
/* The nftables table (family inet: IPv4 and IPv6 in one table). */
#define IPTABLES_NFT_TABLE "sidecar"

struct iptables_cfg {
    int backend;
    bool dry_run;
    bool cleanup;
    int64_t proxy_uid;
    int64_t proxy_gid;
    int64_t inbound_port;
    int64_t outbound_port;
    struct sc_strv include_inbound_ports;
    struct sc_strv exclude_inbound_ports;
    struct sc_strv exclude_outbound_ports;
    struct sc_strv include_outbound_cidrs;
    struct sc_strv exclude_outbound_cidrs;
    int ipv6;
};

struct iptables_cidr {
    int family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    unsigned prefix;
};

/* What the rules do, with every list parsed and normalised. */
struct iptables_plan {
    uint32_t uid, gid;
    uint16_t inbound_port, outbound_port;
    bool ipv6;
    bool inbound_all;  /* capture every inbound port except in_excl */
    bool inbound_none; /* capture no inbound port */
    uint16_t in_incl[IPTABLES_MAX_LIST];
    size_t n_in_incl;
    uint16_t in_excl[IPTABLES_MAX_LIST];
    size_t n_in_excl;
    uint16_t out_excl[IPTABLES_MAX_LIST];
    size_t n_out_excl;
    bool outbound_all; /* every destination, except out_cidr_excl */
    struct iptables_cidr out_incl[IPTABLES_MAX_LIST];
    size_t n_out_incl;
    struct iptables_cidr out_cidr_excl[IPTABLES_MAX_LIST];
    size_t n_out_cidr_excl;
};

/* Option checks (sc_opt_check_cb) for a struct sc_strv of TCP ports, each 1..65535; the include
 * variant also takes "*" (every port) or "none" alone. Return 0, or SC_ECONFIG with a new message
 * in <*err>. */
int iptables_check_ports(void *field, char **err);
int iptables_check_include_ports(void *field, char **err);

/* Option check for lists of CIDRs ("10.0.0.0/8", "fd00::/8", a bare address is a host); the
 * include list also takes "*". Returns 0, or SC_ECONFIG with a new message in <*err>. */
int iptables_check_cidrs(void *field, char **err);
int iptables_check_include_cidrs(void *field, char **err);

/* Parses <s> as an IPv4 or IPv6 CIDR or bare address into <*out>, clearing host bits. Returns 0 or
 * -EINVAL. */
int iptables_parse_cidr(const char *s, struct iptables_cidr *out);

/* Builds the plan from <cfg>, with IPv6 rules when <ipv6>. Returns 0, or SC_ECONFIG with a new
 * message in <*err> (an entry the option checks would have refused, or an empty include list). */
int iptables_plan_build(const struct iptables_cfg *cfg, bool ipv6, struct iptables_plan *p,
                        char **err);

/* Appends the nat-table rules for <family> (AF_INET or AF_INET6) in iptables-save form: the chain
 * declarations, then every rule of the role's chains, without the jumps from PREROUTING and
 * OUTPUT. Returns 0 or SC_ETOOBIG when <out> is full. */
int iptables_ipt_rules(const struct iptables_plan *p, int family, struct sc_buf *out);

/* Appends iptables-restore --noflush input that installs the plan for <family>. <save> is the
 * current `iptables-save -t nat` output (borrowed; NULL for an empty table, as --dry-run shows):
 * the jumps are added only when missing and duplicates are deleted, so applying twice changes
 * nothing; declaring the chains flushes them, so their rules are replaced in one transaction.
 * Returns 0 or SC_ETOOBIG. */
int iptables_ipt_restore(const struct iptables_plan *p, int family, const char *save,
                         struct sc_buf *out);

/* Appends iptables-restore --noflush input that removes the role's jumps and chains found in
 * <save> (borrowed), and nothing else. Appends nothing when none are there. Returns the number of
 * chains and jumps to remove, or SC_ETOOBIG. */
int iptables_ipt_cleanup(const char *save, struct sc_buf *out);

/* Checks <save> (borrowed) against the plan for <family>: every chain present with exactly the
 * planned rules in order, one jump each from PREROUTING and OUTPUT. Returns 0, or -ENOENT with
 * the first difference appended to <why>. */
int iptables_ipt_verify(const struct iptables_plan *p, int family, const char *save,
                        struct sc_buf *why);

/* Returns true when <save> (borrowed) holds any of the role's chains or jumps. */
bool iptables_ipt_present(const char *save);

/* Appends the nftables table in the form `nft list table inet sidecar` prints it. Returns 0 or
 * SC_ETOOBIG. */
int iptables_nft_table(const struct iptables_plan *p, struct sc_buf *out);

/* Appends `nft -f` input that replaces the table atomically (created if missing, deleted and
 * recreated in the same transaction). Returns 0 or SC_ETOOBIG. */
int iptables_nft_apply(const struct iptables_plan *p, struct sc_buf *out);

/* Appends `nft -f` input that deletes the table if it exists and is a no-op otherwise. */
int iptables_nft_cleanup(struct sc_buf *out);

/* Checks the output of `nft list table inet sidecar` (<listing>, borrowed) against the plan,
 * line by line ignoring indentation and blank lines. Returns 0, or -ENOENT with the first
 * difference appended to <why>. */
int iptables_nft_verify(const struct iptables_plan *p, const char *listing, struct sc_buf *why);

/* Runs <argv> (argv[0] looked up in PATH; no shell) with <input> (<inlen> bytes, may be NULL) on
 * its stdin, collecting stdout into <out> and stderr into <errout> (both capped, may be NULL to
 * discard). Gives up after <timeout_ms>, killing the child. Returns its exit status (0..255,
 * 128+signal), or a negative errno when it could not be started (-ENOENT: not found), or
 * SC_ETIMEDOUT, or SC_ETOOBIG when an output passed its cap. */
int iptables_exec(const char *const argv[], const char *input, size_t inlen, struct sc_buf *out,
                  struct sc_buf *errout, int timeout_ms);

/* Returns true when <name> is an executable file in one of PATH's directories. */
bool iptables_have_tool(const char *name);

#endif

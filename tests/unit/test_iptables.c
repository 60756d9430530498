// SPDX-License-Identifier: Apache-2.0
// Unit tests for `sidecar iptables`' rule generation: options to iptables-restore input and to the
// nftables table (whole texts pinned for the defaults, so a change of order shows), idempotent
// restore input from an existing iptables-save, cleanup that touches only the role's chains,
// verification that notices a missing, extra, changed or duplicated rule, CIDR parsing, and the
// tool runner (posix_spawn with pipes, caps and exit statuses).
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>

#include "core/alloc.h"
#include "core/error.h"
#include "roles/iptables/iptables.h"

static char *excl_in[] = { "15000", "15001", "15006", "15020", "15021", "15022",
                           "15023", "15024", "15030", "15040", "15090" };

/* The defaults of the option table. */
static void defaults(struct iptables_cfg *c)
{
    memset(c, 0, sizeof(*c));
    c->proxy_uid = 1337;
    c->proxy_gid = 1337;
    c->inbound_port = 15006;
    c->outbound_port = 15001;
    c->exclude_inbound_ports = (struct sc_strv){ excl_in, SC_ARRAY_LEN(excl_in) };
}

static void plan(const struct iptables_cfg *c, bool v6, struct iptables_plan *p)
{
    char *err = NULL;
    assert_int_equal(iptables_plan_build(c, v6, p, &err), 0);
    assert_null(err);
}

static char *ipt_text(const struct iptables_plan *p, int family)
{
    struct sc_buf b;
    sc_buf_init(&b, IPTABLES_TEXT_MAX);
    assert_int_equal(iptables_ipt_rules(p, family, &b), 0);
    char *s = sc_strdup(sc_buf_cstr(&b));
    sc_buf_cleanup(&b);
    return s;
}

static const char default_v4[] =
    ":SIDECAR_INBOUND - [0:0]\n"
    ":SIDECAR_IN_REDIRECT - [0:0]\n"
    ":SIDECAR_OUTPUT - [0:0]\n"
    ":SIDECAR_REDIRECT - [0:0]\n"
    "-A SIDECAR_INBOUND -p tcp -m tcp --dport 15000 -j RETURN\n"
    "-A SIDECAR_INBOUND -p tcp -m tcp --dport 15001 -j RETURN\n"
    "-A SIDECAR_INBOUND -p tcp -m tcp --dport 15006 -j RETURN\n"
    "-A SIDECAR_INBOUND -p tcp -m tcp --dport 15020 -j RETURN\n"
    "-A SIDECAR_INBOUND -p tcp -m tcp --dport 15021 -j RETURN\n"
    "-A SIDECAR_INBOUND -p tcp -m tcp --dport 15022 -j RETURN\n"
    "-A SIDECAR_INBOUND -p tcp -m tcp --dport 15023 -j RETURN\n"
    "-A SIDECAR_INBOUND -p tcp -m tcp --dport 15024 -j RETURN\n"
    "-A SIDECAR_INBOUND -p tcp -m tcp --dport 15030 -j RETURN\n"
    "-A SIDECAR_INBOUND -p tcp -m tcp --dport 15040 -j RETURN\n"
    "-A SIDECAR_INBOUND -p tcp -m tcp --dport 15090 -j RETURN\n"
    "-A SIDECAR_INBOUND -p tcp -j SIDECAR_IN_REDIRECT\n"
    "-A SIDECAR_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006\n"
    "-A SIDECAR_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN\n"
    "-A SIDECAR_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --uid-owner 1337 -j SIDECAR_IN_REDIRECT\n"
    "-A SIDECAR_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN\n"
    "-A SIDECAR_OUTPUT -m owner --uid-owner 1337 -j RETURN\n"
    "-A SIDECAR_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --gid-owner 1337 -j SIDECAR_IN_REDIRECT\n"
    "-A SIDECAR_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN\n"
    "-A SIDECAR_OUTPUT -m owner --gid-owner 1337 -j RETURN\n"
    "-A SIDECAR_OUTPUT -d 127.0.0.1/32 -j RETURN\n"
    "-A SIDECAR_OUTPUT -j SIDECAR_REDIRECT\n"
    "-A SIDECAR_REDIRECT -p tcp -j REDIRECT --to-ports 15001\n";

static void test_ipt_defaults_v4(void **state)
{
    (void)state;
    struct iptables_cfg c;
    struct iptables_plan p;
    defaults(&c);
    plan(&c, true, &p);
    char *s = ipt_text(&p, AF_INET);
    assert_string_equal(s, default_v4);
    sc_free(s);
}

static void test_ipt_v6_addresses(void **state)
{
    (void)state;
    struct iptables_cfg c;
    struct iptables_plan p;
    defaults(&c);
    char *ex[] = { "10.9.0.0/16", "fd00:9::/32" };
    c.exclude_outbound_cidrs = (struct sc_strv){ ex, 2 };
    plan(&c, true, &p);
    char *s6 = ipt_text(&p, AF_INET6);
    char *s4 = ipt_text(&p, AF_INET);
    assert_non_null(strstr(s6, "-A SIDECAR_OUTPUT -s ::6/128 -o lo -j RETURN\n"));
    assert_non_null(strstr(s6, "-A SIDECAR_OUTPUT ! -d ::1/128 -o lo -m owner --uid-owner 1337 "
                               "-j SIDECAR_IN_REDIRECT\n"));
    assert_non_null(strstr(s6, "-A SIDECAR_OUTPUT -d ::1/128 -j RETURN\n"));
    /* Each family gets only its own CIDRs, after localhost and before the redirect. */
    assert_non_null(strstr(s6, "-A SIDECAR_OUTPUT -d fd00:9::/32 -j RETURN\n"
                               "-A SIDECAR_OUTPUT -j SIDECAR_REDIRECT\n"));
    assert_null(strstr(s6, "10.9.0.0"));
    assert_non_null(strstr(s4, "-A SIDECAR_OUTPUT -d 127.0.0.1/32 -j RETURN\n"
                               "-A SIDECAR_OUTPUT -d 10.9.0.0/16 -j RETURN\n"));
    assert_null(strstr(s4, "fd00"));
    sc_free(s6);
    sc_free(s4);
}

static void test_ipt_include_lists(void **state)
{
    (void)state;
    struct iptables_cfg c;
    struct iptables_plan p;
    defaults(&c);
    char *inc[] = { "8080", "9090", "8080" };
    char *cidrs[] = { "10.96.0.0/12" };
    char *out_ex[] = { "5432" };
    c.include_inbound_ports = (struct sc_strv){ inc, 3 };
    c.include_outbound_cidrs = (struct sc_strv){ cidrs, 1 };
    c.exclude_outbound_ports = (struct sc_strv){ out_ex, 1 };
    c.proxy_uid = 101;
    c.inbound_port = 16006;
    plan(&c, true, &p);
    char *s = ipt_text(&p, AF_INET);
    /* Only the listed inbound ports (once each); the exclusions do not apply then. */
    assert_non_null(strstr(s, "-A SIDECAR_INBOUND -p tcp -m tcp --dport 8080 -j "
                              "SIDECAR_IN_REDIRECT\n-A SIDECAR_INBOUND -p tcp -m tcp --dport 9090 "
                              "-j SIDECAR_IN_REDIRECT\n-A SIDECAR_IN_REDIRECT"));
    assert_null(strstr(s, "--dport 15000"));
    assert_non_null(strstr(s, "--to-ports 16006\n"));
    /* Excluded outbound ports come first in the output chain. */
    assert_non_null(strstr(s, ":SIDECAR_REDIRECT - [0:0]\n"));
    assert_non_null(strstr(s, "-A SIDECAR_OUTPUT -p tcp -m tcp --dport 5432 -j RETURN\n"
                              "-A SIDECAR_OUTPUT -s 127.0.0.6/32"));
    assert_non_null(strstr(s, "--uid-owner 101 -j RETURN\n"));
    assert_non_null(strstr(s, "-A SIDECAR_OUTPUT -d 10.96.0.0/12 -j SIDECAR_REDIRECT\n"));
    assert_null(strstr(s, "-A SIDECAR_OUTPUT -j SIDECAR_REDIRECT"));
    sc_free(s);
    /* IPv6 has no CIDR in the include list: nothing of it is captured outbound. */
    s = ipt_text(&p, AF_INET6);
    assert_null(strstr(s, "SIDECAR_OUTPUT -j SIDECAR_REDIRECT"));
    assert_null(strstr(s, "-j SIDECAR_REDIRECT\n"));
    sc_free(s);

    char *none[] = { "none" };
    c.include_inbound_ports = (struct sc_strv){ none, 1 };
    plan(&c, false, &p);
    s = ipt_text(&p, AF_INET);
    assert_null(strstr(s, "-A SIDECAR_INBOUND"));
    assert_null(strstr(s, "-j SIDECAR_IN_REDIRECT"));
    sc_free(s);
}

static void test_plan_rejects(void **state)
{
    (void)state;
    struct iptables_cfg c;
    struct iptables_plan p;
    char *err = NULL;
    defaults(&c);
    char *bad[] = { "10.0.0.0/33" };
    c.exclude_outbound_cidrs = (struct sc_strv){ bad, 1 };
    assert_int_equal(iptables_plan_build(&c, true, &p, &err), SC_ECONFIG);
    assert_non_null(strstr(err, "exclude_outbound_cidrs"));
    sc_free(err);
    err = NULL;

    struct sc_strv v;
    char *ports[] = { "80", "0" };
    v = (struct sc_strv){ ports, 2 };
    assert_int_equal(iptables_check_ports(&v, &err), SC_ECONFIG);
    assert_non_null(strstr(err, "\"0\""));
    sc_free(err);
    err = NULL;
    char *big[] = { "65536" };
    v = (struct sc_strv){ big, 1 };
    assert_int_equal(iptables_check_ports(&v, &err), SC_ECONFIG);
    sc_free(err);
    err = NULL;
    char *star[] = { "*", "80" };
    v = (struct sc_strv){ star, 2 };
    assert_int_equal(iptables_check_include_ports(&v, &err), SC_ECONFIG);
    sc_free(err);
    err = NULL;
    v.n = 1;
    assert_int_equal(iptables_check_include_ports(&v, &err), 0);
    assert_int_equal(iptables_check_ports(&v, &err), SC_ECONFIG); /* no words there */
    sc_free(err);
    err = NULL;
    char *cidrs[] = { "*" };
    v = (struct sc_strv){ cidrs, 1 };
    assert_int_equal(iptables_check_include_cidrs(&v, &err), 0);
    assert_int_equal(iptables_check_cidrs(&v, &err), SC_ECONFIG);
    sc_free(err);
}

static void test_parse_cidr(void **state)
{
    (void)state;
    struct iptables_cidr c;
    assert_int_equal(iptables_parse_cidr("10.1.2.3/8", &c), 0);
    assert_int_equal(c.family, AF_INET);
    assert_int_equal(c.prefix, 8);
    assert_memory_equal(c.addr, "\x0a\x00\x00\x00", 4);
    assert_int_equal(iptables_parse_cidr("192.0.2.7", &c), 0);
    assert_int_equal(c.prefix, 32);
    assert_memory_equal(c.addr, "\xc0\x00\x02\x07", 4);
    assert_int_equal(iptables_parse_cidr("fd00:1:2::9/33", &c), 0);
    assert_int_equal(c.family, AF_INET6);
    assert_int_equal(c.prefix, 33);
    assert_memory_equal(c.addr, "\xfd\x00\x00\x01\x00\x00", 6);
    assert_int_equal(iptables_parse_cidr("::/0", &c), 0);
    assert_int_equal(c.prefix, 0);
    const char *bad[] = { "",         "/8",         "10.0.0.0/",   "10.0.0.0/33",  "10.0.0.0/-1",
                          "10.0.0/8", "fd00::/129", "fe80::1%lo0", "10.0.0.0/8/8", "x",
                          "10.0.0.0 " };
    for (size_t i = 0; i < SC_ARRAY_LEN(bad); i++) {
        assert_int_equal(iptables_parse_cidr(bad[i], &c), -EINVAL);
    }
}

/* An iptables-save of a nat table that holds someone else's rules and, when <ours>, the plan's
 * chains and rules with <njumps> copies of each jump. */
static char *fake_save(const struct iptables_plan *p, bool ours, int njumps)
{
    struct sc_buf b;
    sc_buf_init(&b, IPTABLES_TEXT_MAX);
    sc_buf_append_cstr(&b, "# Generated by iptables-save v1.8.9 (nf_tables)\n*filter\n"
                           ":INPUT ACCEPT [0:0]\n-A INPUT -j SIDECAR_INBOUND_NOT\nCOMMIT\n"
                           "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n"
                           ":OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:CNI_CHAIN - [0:0]\n"
                           "-A PREROUTING -d 192.0.2.1/32 -j CNI_CHAIN\n");
    for (int i = 0; i < njumps; i++) {
        sc_buf_append_cstr(&b, "-A PREROUTING -p tcp -j SIDECAR_INBOUND\n");
        sc_buf_append_cstr(&b, "-A OUTPUT -p tcp -j SIDECAR_OUTPUT\n");
    }
    sc_buf_append_cstr(&b, "-A OUTPUT -d 192.0.2.2/32 -j RETURN\n");
    if (ours) {
        assert_int_equal(iptables_ipt_rules(p, AF_INET, &b), 0);
    }
    sc_buf_append_cstr(&b, "-A CNI_CHAIN -j RETURN\nCOMMIT\n# Completed\n");
    char *s = sc_strdup(sc_buf_cstr(&b));
    sc_buf_cleanup(&b);
    return s;
}

static char *restore_text(const struct iptables_plan *p, const char *save)
{
    struct sc_buf b;
    sc_buf_init(&b, IPTABLES_TEXT_MAX);
    assert_int_equal(iptables_ipt_restore(p, AF_INET, save, &b), 0);
    char *s = sc_strdup(sc_buf_cstr(&b));
    sc_buf_cleanup(&b);
    return s;
}

static void test_ipt_restore_idempotent(void **state)
{
    (void)state;
    struct iptables_cfg c;
    struct iptables_plan p;
    defaults(&c);
    plan(&c, true, &p);
    /* Fresh: the rules, then both jumps, in one transaction. */
    char *save = fake_save(&p, false, 0);
    char *s = restore_text(&p, save);
    assert_true(strncmp(s, "*nat\n:SIDECAR_INBOUND - [0:0]\n", 30) == 0);
    assert_non_null(strstr(s, "-A SIDECAR_REDIRECT -p tcp -j REDIRECT --to-ports 15001\n"
                              "-A PREROUTING -p tcp -j SIDECAR_INBOUND\n"
                              "-A OUTPUT -p tcp -j SIDECAR_OUTPUT\nCOMMIT\n"));
    assert_null(strstr(s, "CNI_CHAIN"));
    sc_free(s);
    sc_free(save);
    /* Already applied: the chains are redeclared (flushed and refilled), no jump added. */
    save = fake_save(&p, true, 1);
    s = restore_text(&p, save);
    assert_null(strstr(s, "-A PREROUTING"));
    assert_null(strstr(s, "-A OUTPUT"));
    assert_null(strstr(s, "-D "));
    assert_non_null(strstr(s, "-A SIDECAR_INBOUND -p tcp -j SIDECAR_IN_REDIRECT\n"));
    sc_free(s);
    sc_free(save);
    /* Jumps duplicated by an earlier hand: all but one go. */
    save = fake_save(&p, true, 3);
    s = restore_text(&p, save);
    const char *d = "-D PREROUTING -p tcp -j SIDECAR_INBOUND\n";
    char *first = strstr(s, d);
    assert_non_null(first);
    assert_non_null(strstr(first + 1, d));
    assert_null(strstr(strstr(first + 1, d) + 1, d));
    assert_non_null(strstr(s, "-D OUTPUT -p tcp -j SIDECAR_OUTPUT\n"));
    sc_free(s);
    sc_free(save);
}

static void test_ipt_cleanup_only_ours(void **state)
{
    (void)state;
    struct iptables_cfg c;
    struct iptables_plan p;
    defaults(&c);
    plan(&c, true, &p);
    char *save = fake_save(&p, true, 2);
    struct sc_buf b;
    sc_buf_init(&b, IPTABLES_TEXT_MAX);
    assert_int_equal(iptables_ipt_cleanup(save, &b), 4 + 4);
    assert_string_equal(sc_buf_cstr(&b), "*nat\n"
                                         "-D PREROUTING -p tcp -j SIDECAR_INBOUND\n"
                                         "-D OUTPUT -p tcp -j SIDECAR_OUTPUT\n"
                                         "-D PREROUTING -p tcp -j SIDECAR_INBOUND\n"
                                         "-D OUTPUT -p tcp -j SIDECAR_OUTPUT\n"
                                         "-F SIDECAR_INBOUND\n"
                                         "-F SIDECAR_IN_REDIRECT\n"
                                         "-F SIDECAR_OUTPUT\n"
                                         "-F SIDECAR_REDIRECT\n"
                                         "-X SIDECAR_INBOUND\n"
                                         "-X SIDECAR_IN_REDIRECT\n"
                                         "-X SIDECAR_OUTPUT\n"
                                         "-X SIDECAR_REDIRECT\n"
                                         "COMMIT\n");
    assert_true(iptables_ipt_present(save));
    sc_free(save);
    sc_buf_reset(&b);
    /* Nothing of ours: nothing to run, even with a chain whose name merely starts like ours. */
    save = fake_save(&p, false, 0);
    assert_int_equal(iptables_ipt_cleanup(save, &b), 0);
    assert_int_equal(b.len, 0);
    assert_false(iptables_ipt_present(save));
    assert_int_equal(iptables_ipt_cleanup("", &b), 0);
    sc_free(save);
    sc_buf_cleanup(&b);
}

/* Verifies <save> against <p>; returns the result and leaves the reason in <why>. */
static int verify(const struct iptables_plan *p, const char *save, struct sc_buf *why)
{
    sc_buf_reset(why);
    return iptables_ipt_verify(p, AF_INET, save, why);
}

static char *replace(const char *s, const char *from, const char *to)
{
    const char *at = strstr(s, from);
    assert_non_null(at);
    return sc_asprintf("%.*s%s%s", (int)(at - s), s, to, at + strlen(from));
}

static void test_ipt_verify(void **state)
{
    (void)state;
    struct iptables_cfg c;
    struct iptables_plan p;
    struct sc_buf why;
    sc_buf_init(&why, 4096);
    defaults(&c);
    plan(&c, true, &p);
    char *good = fake_save(&p, true, 1);
    assert_int_equal(verify(&p, good, &why), 0);

    char *missing = replace(good, "-A SIDECAR_OUTPUT -m owner --uid-owner 1337 -j RETURN\n", "");
    assert_int_equal(verify(&p, missing, &why), -ENOENT);
    assert_non_null(strstr(sc_buf_cstr(&why), "--uid-owner 1337 -j RETURN"));
    char *changed = replace(good, "--to-ports 15001", "--to-ports 15002");
    assert_int_equal(verify(&p, changed, &why), -ENOENT);
    assert_non_null(strstr(sc_buf_cstr(&why), "15002"));
    char *extra = replace(good, "-A SIDECAR_REDIRECT",
                          "-A SIDECAR_INBOUND -j RETURN\n"
                          "-A SIDECAR_REDIRECT");
    assert_int_equal(verify(&p, extra, &why), -ENOENT);
    assert_non_null(strstr(sc_buf_cstr(&why), "unexpected"));
    char *nojump = replace(good, "-A OUTPUT -p tcp -j SIDECAR_OUTPUT\n", "");
    assert_int_equal(verify(&p, nojump, &why), -ENOENT);
    assert_non_null(strstr(sc_buf_cstr(&why), "0 jumps from OUTPUT"));
    char *nochain = replace(good, ":SIDECAR_REDIRECT - [0:0]\n", "");
    assert_int_equal(verify(&p, nochain, &why), -ENOENT);
    assert_non_null(strstr(sc_buf_cstr(&why), "SIDECAR_REDIRECT is missing"));
    char *twojumps = fake_save(&p, true, 2);
    assert_int_equal(verify(&p, twojumps, &why), -ENOENT);
    assert_int_equal(verify(&p, "", &why), -ENOENT);
    /* Rules of another plan (a different exclusion) do not pass for this one. */
    struct iptables_plan other;
    char *ex[] = { "10.0.0.0/8" };
    c.exclude_outbound_cidrs = (struct sc_strv){ ex, 1 };
    plan(&c, true, &other);
    assert_int_equal(verify(&other, good, &why), -ENOENT);
    assert_non_null(strstr(sc_buf_cstr(&why), "10.0.0.0/8"));

    sc_free(good);
    sc_free(missing);
    sc_free(changed);
    sc_free(extra);
    sc_free(nojump);
    sc_free(nochain);
    sc_free(twojumps);
    sc_buf_cleanup(&why);
}

static const char default_nft[] = "table inet sidecar {\n"
                                  "\tchain prerouting {\n"
                                  "\t\ttype nat hook prerouting priority dstnat; policy accept;\n"
                                  "\t\tmeta l4proto tcp jump inbound\n"
                                  "\t}\n"
                                  "\n"
                                  "\tchain output {\n"
                                  "\t\ttype nat hook output priority -100; policy accept;\n"
                                  "\t\tmeta l4proto tcp jump outbound\n"
                                  "\t}\n"
                                  "\n"
                                  "\tchain inbound {\n"
                                  "\t\ttcp dport 15000 return\n"
                                  "\t\ttcp dport 15001 return\n"
                                  "\t\ttcp dport 15006 return\n"
                                  "\t\ttcp dport 15020 return\n"
                                  "\t\ttcp dport 15021 return\n"
                                  "\t\ttcp dport 15022 return\n"
                                  "\t\ttcp dport 15023 return\n"
                                  "\t\ttcp dport 15024 return\n"
                                  "\t\ttcp dport 15030 return\n"
                                  "\t\ttcp dport 15040 return\n"
                                  "\t\ttcp dport 15090 return\n"
                                  "\t\tmeta l4proto tcp jump in_redirect\n"
                                  "\t}\n"
                                  "\n"
                                  "\tchain in_redirect {\n"
                                  "\t\tmeta l4proto tcp redirect to :15006\n"
                                  "\t}\n"
                                  "\n"
                                  "\tchain outbound {\n"
                                  "\t\toifname \"lo\" ip saddr 127.0.0.6 return\n"
                                  "\t\toifname \"lo\" ip6 saddr ::6 return\n"
                                  "\t\toifname \"lo\" ip daddr != 127.0.0.1 meta skuid 1337 jump "
                                  "in_redirect\n"
                                  "\t\toifname \"lo\" ip6 daddr != ::1 meta skuid 1337 jump "
                                  "in_redirect\n"
                                  "\t\toifname \"lo\" meta skuid != 1337 return\n"
                                  "\t\tmeta skuid 1337 return\n"
                                  "\t\toifname \"lo\" ip daddr != 127.0.0.1 meta skgid 1337 jump "
                                  "in_redirect\n"
                                  "\t\toifname \"lo\" ip6 daddr != ::1 meta skgid 1337 jump "
                                  "in_redirect\n"
                                  "\t\toifname \"lo\" meta skgid != 1337 return\n"
                                  "\t\tmeta skgid 1337 return\n"
                                  "\t\tip daddr 127.0.0.1 return\n"
                                  "\t\tip6 daddr ::1 return\n"
                                  "\t\tjump out_redirect\n"
                                  "\t}\n"
                                  "\n"
                                  "\tchain out_redirect {\n"
                                  "\t\tmeta l4proto tcp redirect to :15001\n"
                                  "\t}\n"
                                  "}\n";

static void test_nft_table(void **state)
{
    (void)state;
    struct iptables_cfg c;
    struct iptables_plan p;
    struct sc_buf b, why;
    sc_buf_init(&b, IPTABLES_TEXT_MAX);
    sc_buf_init(&why, 4096);
    defaults(&c);
    plan(&c, true, &p);
    assert_int_equal(iptables_nft_table(&p, &b), 0);
    assert_string_equal(sc_buf_cstr(&b), default_nft);
    sc_buf_reset(&b);
    assert_int_equal(iptables_nft_apply(&p, &b), 0);
    assert_true(strncmp(sc_buf_cstr(&b),
                        "table inet sidecar\ndelete table inet sidecar\ntable inet sidecar {\n",
                        63) == 0);

    /* Verification ignores indentation and blank lines, nothing else. */
    assert_int_equal(iptables_nft_verify(&p, default_nft, &why), 0);
    char *spaced =
        replace(default_nft, "\t\tmeta skuid 1337 return\n", "    meta skuid 1337 return\n\n");
    assert_int_equal(iptables_nft_verify(&p, spaced, &why), 0);
    char *gone = replace(default_nft, "\t\tmeta skuid 1337 return\n", "");
    assert_int_equal(iptables_nft_verify(&p, gone, &why), -ENOENT);
    assert_non_null(strstr(sc_buf_cstr(&why), "meta skuid 1337 return"));
    sc_buf_reset(&why);
    assert_int_equal(iptables_nft_verify(&p, "", &why), -ENOENT);
    assert_non_null(strstr(sc_buf_cstr(&why), "missing: table inet sidecar {"));
    sc_free(spaced);
    sc_free(gone);

    /* IPv4 only: the base chains take IPv4 and no ip6 rule is written; CIDRs by family, a host
     * without its prefix as nft prints it. */
    char *ex[] = { "10.0.0.0/8", "fd00::/8", "192.0.2.9" };
    char *inc[] = { "8080" };
    c.exclude_outbound_cidrs = (struct sc_strv){ ex, 3 };
    c.include_inbound_ports = (struct sc_strv){ inc, 1 };
    plan(&c, false, &p);
    sc_buf_reset(&b);
    assert_int_equal(iptables_nft_table(&p, &b), 0);
    const char *t = sc_buf_cstr(&b);
    assert_non_null(strstr(t, "\t\tmeta nfproto ipv4 meta l4proto tcp jump inbound\n"));
    assert_non_null(strstr(t, "\t\tmeta nfproto ipv4 meta l4proto tcp jump outbound\n"));
    assert_null(strstr(t, "ip6"));
    assert_non_null(strstr(t, "\tchain inbound {\n\t\ttcp dport 8080 jump in_redirect\n\t}\n"));
    assert_non_null(strstr(t, "\t\tip daddr 10.0.0.0/8 return\n\t\tip daddr 192.0.2.9 return\n"
                              "\t\tjump out_redirect\n"));
    sc_buf_cleanup(&b);
    sc_buf_cleanup(&why);
}

static void test_exec(void **state)
{
    (void)state;
    struct sc_buf out, err;
    sc_buf_init(&out, 4u << 20);
    sc_buf_init(&err, 4096);
    /* More input than a pipe holds, echoed back while it is still being written. */
    size_t n = 1u << 20;
    char *in = sc_malloc(n);
    for (size_t i = 0; i < n; i++) {
        in[i] = (char)('a' + i % 26);
    }
    const char *cat[] = { "cat", NULL };
    assert_int_equal(iptables_exec(cat, in, n, &out, &err, 10000), 0);
    assert_int_equal(out.len, n);
    assert_memory_equal(out.p, in, n);

    /* A tool that exits without reading its input: our writes fail with EPIPE, not SIGPIPE. */
    const char *true_[] = { "true", NULL };
    assert_int_equal(iptables_exec(true_, in, n, &out, &err, 10000), 0);

    const char *fail[] = { "false", NULL };
    assert_int_equal(iptables_exec(fail, NULL, 0, NULL, NULL, 10000), 1);
    const char *nope[] = { "sidecar-no-such-tool-here", NULL };
    assert_int_equal(iptables_exec(nope, NULL, 0, NULL, NULL, 10000), -ENOENT);
    const char *ls[] = { "ls", "/sidecar-no-such-dir", NULL };
    sc_buf_reset(&err);
    assert_true(iptables_exec(ls, NULL, 0, NULL, &err, 10000) > 0);
    assert_true(err.len > 0);
    /* An output past its cap is an error, and the child is still reaped. */
    struct sc_buf small;
    sc_buf_init(&small, 1000);
    assert_int_equal(iptables_exec(cat, in, n, &small, NULL, 10000), SC_ETOOBIG);
    sc_buf_cleanup(&small);
    const char *sleep_[] = { "sleep", "10", NULL };
    assert_int_equal(iptables_exec(sleep_, NULL, 0, NULL, NULL, 100), SC_ETIMEDOUT);

    assert_true(iptables_have_tool("cat"));
    assert_false(iptables_have_tool("sidecar-no-such-tool-here"));
    sc_free(in);
    sc_buf_cleanup(&out);
    sc_buf_cleanup(&err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ipt_defaults_v4),
        cmocka_unit_test(test_ipt_v6_addresses),
        cmocka_unit_test(test_ipt_include_lists),
        cmocka_unit_test(test_plan_rejects),
        cmocka_unit_test(test_parse_cidr),
        cmocka_unit_test(test_ipt_restore_idempotent),
        cmocka_unit_test(test_ipt_cleanup_only_ours),
        cmocka_unit_test(test_ipt_verify),
        cmocka_unit_test(test_nft_table),
        cmocka_unit_test(test_exec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

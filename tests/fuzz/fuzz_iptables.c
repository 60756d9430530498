// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for what `sidecar iptables` reads back from the system (roles/iptables): the
// text of iptables-save and nft list, and CIDRs. Beyond "no crash", it abort()s when an invariant
// breaks: cleanup input is empty or one "*nat ... COMMIT" transaction made only of -D lines for
// jumps into the role's chains and -F/-X of those chains; restore input always declares the
// chains and ends with COMMIT; verification passes only for text that holds every planned rule;
// a parsed CIDR prints and parses back to itself.
#include <arpa/inet.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/alloc.h"
#include "roles/iptables/iptables.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_iptables: invariant broken: %s\n", what);
        abort();
    }
}

static bool ends_with(const struct sc_buf *b, const char *s)
{
    size_t n = strlen(s);
    return b->len >= n && memcmp(b->p + b->len - n, s, n) == 0;
}

static void check_cleanup(const char *text)
{
    struct sc_buf b;
    sc_buf_init(&b, IPTABLES_TEXT_MAX);
    int n = iptables_ipt_cleanup(text, &b);
    check(n >= 0, "cleanup of any text fits");
    check((n == 0) == (b.len == 0), "nothing to remove means no input");
    if (n > 0) {
        check(iptables_ipt_present(text), "cleanup only when something is present");
        check(b.len > 12 && memcmp(b.p, "*nat\n", 5) == 0 && ends_with(&b, "COMMIT\n"),
              "one nat transaction");
        struct sc_str rest = sc_str_n(b.p + 5, b.len - 5 - 7);
        while (rest.len) {
            struct sc_str l = sc_str_split(&rest, '\n');
            bool del = sc_str_startswith(l, SC_STR("-D ")) && l.len > 3 &&
                       (memmem(l.p, l.len, " -j SIDECAR_", 12) != NULL);
            bool fx = sc_str_startswith(l, SC_STR("-F SIDECAR_")) ||
                      sc_str_startswith(l, SC_STR("-X SIDECAR_"));
            check(del || fx, "only the role's jumps and chains are removed");
        }
    }
    sc_buf_cleanup(&b);
}

static void check_plan(const struct iptables_plan *p, const char *text)
{
    struct sc_buf b, why;
    sc_buf_init(&b, IPTABLES_TEXT_MAX);
    sc_buf_init(&why, 4096);
    check(iptables_ipt_restore(p, AF_INET, text, &b) == 0, "restore input fits");
    check(memcmp(b.p, "*nat\n:SIDECAR_INBOUND - [0:0]\n", 30) == 0 && ends_with(&b, "COMMIT\n"),
          "restore input shape");
    if (iptables_ipt_verify(p, AF_INET, text, &why) == 0) {
        check(strstr(text, "-A SIDECAR_REDIRECT -p tcp -j REDIRECT --to-ports 15001") != NULL &&
                  strstr(text, "-A SIDECAR_OUTPUT -m owner --uid-owner 1337 -j RETURN") != NULL,
              "verified text holds the rules");
    } else {
        check(why.len > 0, "a failed verification says why");
    }
    sc_buf_reset(&why);
    if (iptables_nft_verify(p, text, &why) == 0) {
        check(strstr(text, "table inet sidecar {") != NULL &&
                  strstr(text, "meta skuid 1337 return") != NULL,
              "verified listing holds the table");
    } else {
        check(why.len > 0, "a failed nft verification says why");
    }
    sc_buf_cleanup(&b);
    sc_buf_cleanup(&why);
}

static void check_cidr(const char *s)
{
    struct iptables_cidr c, d;
    if (iptables_parse_cidr(s, &c) < 0) {
        return;
    }
    unsigned max = c.family == AF_INET ? 32 : 128;
    check(c.prefix <= max, "prefix in range");
    char a[INET6_ADDRSTRLEN], again[INET6_ADDRSTRLEN + 8];
    check(inet_ntop(c.family, c.addr, a, sizeof(a)) != NULL, "printable");
    snprintf(again, sizeof(again), "%s/%u", a, c.prefix);
    check(iptables_parse_cidr(again, &d) == 0 && memcmp(&c, &d, sizeof(c)) == 0, "round trip");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 20)) {
        return 0;
    }
    char *text = sc_strndup((const char *)data, size); /* stops at a NUL, as C tools would */
    static struct iptables_plan plan;
    static bool have_plan;
    if (!have_plan) {
        static char *excl[] = { "15020", "15021" };
        struct iptables_cfg cfg = { .proxy_uid = 1337,
                                    .proxy_gid = 1337,
                                    .inbound_port = 15006,
                                    .outbound_port = 15001,
                                    .exclude_inbound_ports = { excl, 2 } };
        char *err = NULL;
        check(iptables_plan_build(&cfg, true, &plan, &err) == 0, "plan");
        have_plan = true;
    }
    check_cleanup(text);
    check_plan(&plan, text);
    struct sc_str rest = sc_str_c(text);
    for (int i = 0; i < 8 && rest.len; i++) {
        struct sc_str l = sc_str_split(&rest, '\n');
        char *line = sc_strndup(l.p, l.len);
        check_cidr(line);
        sc_free(line);
    }
    sc_free(text);
    return 0;
}

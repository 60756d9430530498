// SPDX-License-Identifier: Apache-2.0
// An Envoy filter_chain_match's address conditions (see proxy_envoy_chain.h): prefix_ranges (the
// destination address: the original destination with use_original_dst, else the listener's local
// address), source_prefix_ranges (and direct_source_prefix_ranges, the same without a PROXY
// protocol listener filter), source_type and source_ports, onto a tcp_route's
// destination_prefix_ranges, source_prefix_ranges, source_type and source_ports. Envoy prefers the
// longest matching prefix; a chain whose ranges have several lengths becomes one route per length
// so that sorting by length gives that order. Invariant: a CidrRange is checked (an address, a
// length within its family) before it is written, so the native loader never sees a bad one.
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "core/str.h"
#include "roles/proxy/proxy_envoy_chain.h"

/* Checks the CidrRange list <rs> (at <path>); its prefix lengths go to <lens> (distinct). */
static int read_ranges(struct proxy_front *f, const struct sc_ynode *rs, const char *path,
                       const char *key, struct envoy_lens *lens)
{
    lens->n = 0;
    for (size_t i = 0; i < sc_ynode_count(rs); i++) {
        const struct sc_ynode *r = sc_ynode_at(rs, i);
        char p[PROXY_FRONT_PATH];
        proxy_front_path(p, path, ".filter_chain_match.%s[%zu]", key, i);
        static const char *const k[] = { "address_prefix", "prefix_len", NULL };
        if (proxy_front_keys(f, r, p, k, NULL) < 0) {
            return SC_ECONFIG;
        }
        const char *a = proxy_front_str(f, r, "address_prefix", p);
        const char *l = proxy_front_str(f, r, "prefix_len", p);
        unsigned char buf[16];
        int fam = !a                                 ? 0
                  : inet_pton(AF_INET, a, buf) == 1  ? 4
                  : inet_pton(AF_INET6, a, buf) == 1 ? 6
                                                     : 0;
        if (!fam) {
            return proxy_front_refuse(f, r, p, "address_prefix \"%.64s\" is not an IP address",
                                      a ? a : "");
        }
        uint64_t len = 0;
        if (l && sc_str_to_u64(sc_str_c(l), fam == 4 ? 32 : 128, &len) < 0) {
            return proxy_front_refuse(f, sc_ynode_get(r, "prefix_len"), p,
                                      "prefix_len %.16s is not 0 to %d", l, fam == 4 ? 32 : 128);
        }
        bool seen = false;
        for (size_t k2 = 0; k2 < lens->n; k2++) {
            seen = seen || lens->v[k2] == (int)len;
        }
        if (!seen) {
            lens->v[lens->n++] = (int)len;
        }
    }
    return 0;
}

int proxy_envoy_chain_addr_read(struct proxy_front *f, const struct sc_ynode *m,
                                struct envoy_chain *c)
{
    c->pr =
        sc_ynode_count(sc_ynode_get(m, "prefix_ranges")) ? sc_ynode_get(m, "prefix_ranges") : NULL;
    const struct sc_ynode *spr = sc_ynode_get(m, "source_prefix_ranges");
    const struct sc_ynode *dspr = sc_ynode_get(m, "direct_source_prefix_ranges");
    if (sc_ynode_count(spr) && sc_ynode_count(dspr)) {
        return proxy_front_refuse(f, dspr, c->path,
                                  "direct_source_prefix_ranges next to source_prefix_ranges: "
                                  "without a PROXY protocol listener filter they are the same "
                                  "address; use one");
    }
    c->spr = sc_ynode_count(spr) ? spr : sc_ynode_count(dspr) ? dspr : NULL;
    const char *sprk = sc_ynode_count(spr) ? "source_prefix_ranges" : "direct_source_prefix_ranges";
    c->sp =
        sc_ynode_count(sc_ynode_get(m, "source_ports")) ? sc_ynode_get(m, "source_ports") : NULL;
    const char *st = proxy_front_str(f, m, "source_type", c->path);
    if (st && !is(st, "ANY") && !is(st, "SAME_IP_OR_LOOPBACK") && !is(st, "EXTERNAL")) {
        return proxy_front_refuse(f, sc_ynode_get(m, "source_type"), c->path,
                                  "source_type %.32s is not ANY, SAME_IP_OR_LOOPBACK or EXTERNAL",
                                  st);
    }
    c->st = is(st, "SAME_IP_OR_LOOPBACK") ? "local" : is(st, "EXTERNAL") ? "external" : NULL;
    c->stn = sc_ynode_get(m, "source_type");
    if (read_ranges(f, c->pr, c->path, "prefix_ranges", &c->dlens) < 0 ||
        read_ranges(f, c->spr, c->path, sprk, &c->slens) < 0) {
        return SC_ECONFIG;
    }
    for (size_t i = 0; i < sc_ynode_count(c->sp); i++) {
        const char *v = sc_ynode_str(sc_ynode_at(c->sp, i));
        uint64_t port = 0;
        if (!v || sc_str_to_u64(sc_str_c(v), 65535, &port) < 0 || port == 0) {
            return proxy_front_refuse(f, sc_ynode_at(c->sp, i), c->path,
                                      "source_ports: %.16s is not a port", v ? v : "");
        }
    }
    c->addr = c->pr || c->spr || c->sp || c->st;
    return 0;
}

/* Writes the ranges of <rs> of prefix length <len> (-1: all) as CIDR strings into <r>[key]. */
static void put_ranges(struct proxy_front *f, const struct sc_ynode *rs, int len,
                       struct sc_ynode *r, const char *key)
{
    for (size_t i = 0; i < sc_ynode_count(rs); i++) {
        const struct sc_ynode *e = sc_ynode_at(rs, i);
        const char *a = sc_ynode_str(sc_ynode_get(e, "address_prefix"));
        const char *l = sc_ynode_str(sc_ynode_get(e, "prefix_len"));
        uint64_t n = 0;
        if (l) {
            (void)sc_str_to_u64(sc_str_c(l), 128, &n);
        }
        if (len >= 0 && (int)n != len) {
            continue;
        }
        char cidr[80];
        snprintf(cidr, sizeof(cidr), "%s/%u", a ? a : "", (unsigned)n);
        proxy_front_push_str(f, r, key, e, cidr);
    }
}

void proxy_envoy_chain_addr_put(struct proxy_front *f, const struct envoy_chain *c, int dlen,
                                int slen, struct sc_ynode *r)
{
    put_ranges(f, c->pr, dlen, r, "destination_prefix_ranges");
    put_ranges(f, c->spr, slen, r, "source_prefix_ranges");
    for (size_t i = 0; i < sc_ynode_count(c->sp); i++) {
        const struct sc_ynode *p = sc_ynode_at(c->sp, i);
        proxy_front_push_str(f, r, "source_ports", p, sc_ynode_str(p));
    }
    if (c->st) {
        proxy_front_put(f, r, "source_type", c->stn, c->st);
    }
}

bool proxy_envoy_same(const struct sc_ynode *a, const struct sc_ynode *b, const char *const *skip,
                      int depth)
{
    if (!a || !b) {
        return !a && !b;
    }
    enum sc_ykind k = sc_ynode_kind(a);
    if (k != sc_ynode_kind(b) || depth > 64) {
        return false;
    }
    if (k == SC_Y_STR) {
        return strcmp(sc_ynode_str(a), sc_ynode_str(b)) == 0;
    }
    if (k == SC_Y_SEQ) {
        if (sc_ynode_count(a) != sc_ynode_count(b)) {
            return false;
        }
        for (size_t i = 0; i < sc_ynode_count(a); i++) {
            if (!proxy_envoy_same(sc_ynode_at(a, i), sc_ynode_at(b, i), NULL, depth + 1)) {
                return false;
            }
        }
        return true;
    }
    if (k != SC_Y_MAP) {
        return true;
    }
    size_t na = 0, nb = 0;
    for (int side = 0; side < 2; side++) {
        const struct sc_ynode *m = side ? b : a;
        for (size_t i = 0; i < sc_ynode_count(m); i++) {
            const char *key = sc_ynode_str(sc_ynode_key(m, i));
            bool skipped = !key;
            for (size_t s = 0; skip && key && skip[s] && !skipped; s++) {
                skipped = strcmp(key, skip[s]) == 0;
            }
            if (skipped) {
                continue;
            }
            *(side ? &nb : &na) += 1;
            if (!side &&
                !proxy_envoy_same(sc_ynode_val(a, i), sc_ynode_get(b, key), NULL, depth + 1)) {
                return false;
            }
        }
    }
    return na == nb;
}

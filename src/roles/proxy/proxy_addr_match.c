// SPDX-License-Identifier: Apache-2.0
// Address conditions of a connection (see proxy_tcp.h): the destination address (the original
// destination of a redirected connection, else the listener's local address), the client's
// address and port, and whether the client is local. tcp_routes and HTTP routes' match share them
// (one option table, inlined in both), as Envoy's filter_chain_match address fields choose among
// tcp_proxy and http_connection_manager chains alike. Invariant: the lists are checked at load, so
// building the runtime form never fails, and a route without conditions has no matcher (NULL):
// its connections' addresses are never read.
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "roles/proxy/proxy.h"
#include "roles/proxy/proxy_authz.h"
#include "roles/proxy/proxy_conn.h"

static const char *const source_types[] = { "any", "local", "external", NULL };

/* A list of CIDR blocks ("10.0.0.0/8", "::1/128", a bare address). */
static int cidrs_check(void *field, char **err)
{
    const struct sc_strv *v = field;
    for (size_t i = 0; i < v->n; i++) {
        struct proxy_cidr c;
        if (proxy_cidr_parse(v->v[i], &c, err) < 0) {
            return SC_ECONFIG;
        }
    }
    return 0;
}

const struct sc_opt proxy_addr_match_opts[] = {
    { .name = "destination_prefix_ranges",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct proxy_addr_match_cfg, destination_prefix_ranges),
      .help = "CIDR blocks (\"10.0.0.0/8\", \"fd00::/8\", an address) of the address the "
              "connection was going to (original destination, else the listener's local "
              "address); empty: any",
      .max = 64,
      .check = cidrs_check },
    { .name = "source_prefix_ranges",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct proxy_addr_match_cfg, source_prefix_ranges),
      .help = "CIDR blocks of the client's address; empty: any",
      .max = 64,
      .check = cidrs_check },
    { .name = "source_ports",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct proxy_addr_match_cfg, source_ports),
      .help = "the client's ports; empty: any",
      .max = PROXY_ICPT_MAX_PORTS,
      .check = proxy_icpt_ports_check },
    { .name = "source_type",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct proxy_addr_match_cfg, source_type),
      .def = "any",
      .help = "local (a client on a loopback address or on the destination address itself), "
              "external (any other) or any",
      .enums = source_types },
    { 0 },
};

/* CIDR list <v> (checked at load) as a new array of <*n>. */
static struct proxy_cidr *parse_cidrs(const struct sc_strv *v, size_t *n)
{
    struct proxy_cidr *out = v->n ? sc_calloc(v->n, sizeof(*out)) : NULL;
    *n = 0;
    for (size_t i = 0; i < v->n; i++) {
        char *err = NULL;
        if (proxy_cidr_parse(v->v[i], &out[*n], &err) == 0) {
            (*n)++;
        }
        sc_free(err);
    }
    return out;
}

struct proxy_addr_match *proxy_addr_match_new(const struct proxy_addr_match_cfg *c)
{
    if (!c->destination_prefix_ranges.n && !c->source_prefix_ranges.n && !c->source_ports.n &&
        c->source_type == PROXY_ST_ANY) {
        return NULL;
    }
    struct proxy_addr_match *am = SC_NEW(struct proxy_addr_match);
    am->dranges = parse_cidrs(&c->destination_prefix_ranges, &am->ndranges);
    am->sranges = parse_cidrs(&c->source_prefix_ranges, &am->nsranges);
    am->sports = proxy_icpt_parse_ports(&c->source_ports, &am->nsports);
    am->source_type = c->source_type;
    return am;
}

void proxy_addr_match_free(struct proxy_addr_match *am)
{
    if (!am) {
        return;
    }
    sc_free(am->dranges);
    sc_free(am->sranges);
    sc_free(am->sports);
    sc_free(am);
}

static bool in_cidrs(const struct proxy_cidr *v, size_t n, const struct proxy_az_ip *ip)
{
    for (size_t i = 0; i < n; i++) {
        if (proxy_cidr_match(&v[i], ip)) {
            return true;
        }
    }
    return false;
}

bool proxy_addr_match_takes(const struct proxy_addr_match *am, const struct proxy_az_ip *src,
                            uint16_t sport, const struct proxy_az_ip *dst)
{
    if ((am->ndranges && !in_cidrs(am->dranges, am->ndranges, dst)) ||
        (am->nsranges && !in_cidrs(am->sranges, am->nsranges, src))) {
        return false;
    }
    if (am->nsports) {
        bool any = false;
        for (size_t i = 0; i < am->nsports && !any; i++) {
            any = am->sports[i] == sport;
        }
        if (!any) {
            return false;
        }
    }
    if (am->source_type != PROXY_ST_ANY) {
        static const uint8_t v6_loop[16] = { [15] = 1 };
        bool loop = (src->fam == AF_INET && src->a[0] == 127) ||
                    (src->fam == AF_INET6 && memcmp(src->a, v6_loop, 16) == 0);
        bool local = loop || (src->fam == dst->fam && src->fam &&
                              memcmp(src->a, dst->a, src->fam == AF_INET ? 4 : 16) == 0);
        return local == (am->source_type == PROXY_ST_LOCAL);
    }
    return true;
}

bool proxy_route_conn_takes(const struct proxy_route *r, struct proxy_dconn *dc)
{
    if (r->ndports && !proxy_route_port_in(r, proxy_dest_port(dc))) {
        return false;
    }
    if (!r->am) {
        return true;
    }
    struct proxy_az_ip src, dst;
    (void)proxy_original_dst(dc); /* fills od->dst once per connection */
    proxy_az_ip_from_sa(&dc->od->dst, &dst);
    const struct sockaddr_storage *ca = &dc->ex.cl->addr;
    proxy_az_ip_from_sa(ca, &src);
    uint16_t sport = ca->ss_family == AF_INET6 ? ntohs(((const struct sockaddr_in6 *)ca)->sin6_port)
                     : ca->ss_family == AF_INET ? ntohs(((const struct sockaddr_in *)ca)->sin_port)
                                                : 0;
    return proxy_addr_match_takes(r->am, &src, sport, &dst);
}

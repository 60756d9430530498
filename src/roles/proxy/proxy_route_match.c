// SPDX-License-Identifier: Apache-2.0
// An HTTP route's match options, and the conditions on its connection (see proxy_tcp.h): the
// destination address (the original destination of a redirected connection, else the listener's
// local address), the client's address and port, whether the client is local (these four shared
// with tcp_routes: one option table, inlined in both), and for HTTP routes the server name the
// client sent and whether the connection is TLS. They are Envoy's filter_chain_match fields, which
// choose among tcp_proxy and http_connection_manager chains alike. Invariant: the lists are
// checked at load, so building the runtime form never fails, and a route without conditions has
// no matcher (NULL): its connections' addresses are never read.
#include <ctype.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "roles/proxy/proxy.h"
#include "roles/proxy/proxy_authz.h"
#include "roles/proxy/proxy_conn.h"
#include "roles/proxy/proxy_detect.h"

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

static const char *const transports[] = { "any", "tls", "raw_buffer", NULL };

/* The conditions on an HTTP route's connection: addresses, server name, TLS or not. */
static const struct sc_opt conn_opts[] = {
    { .name = "addr",
      .type = SC_OPT_INLINE,
      .offset = offsetof(struct proxy_route_conn_cfg, addr),
      .sub = proxy_addr_match_opts },
    { .name = "server_names",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct proxy_route_conn_cfg, server_names),
      .help = "server names (SNI) the client sent on a TLS connection the listener terminates: "
              "exact, \"*.suffix\" or \"*\" (any name sent); empty: any connection",
      .max = 256,
      .check = proxy_server_names_check },
    { .name = "transport_protocol",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct proxy_route_conn_cfg, transport_protocol),
      .def = "any",
      .help = "tls (only requests on TLS connections the listener terminates), raw_buffer (only "
              "plaintext ones) or any",
      .enums = transports },
    { 0 },
};

static const struct sc_opt header_match_opts[] = {
    { .name = "name",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_header_match_cfg, name),
      .help = "header name (case-insensitive)",
      .flags = SC_OPT_REQUIRED },
    { .name = "value",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_header_match_cfg, value),
      .help = "exact value the header must have (any value when unset)" },
    { .name = "present",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct proxy_header_match_cfg, present),
      .def = "true",
      .help = "false: the route matches only when the header is absent" },
    { 0 },
};

const struct sc_opt proxy_match_opts[] = {
    { .name = "prefix",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_match_cfg, prefix),
      .help = "path prefix (the query is not part of the path)" },
    { .name = "path",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_match_cfg, path),
      .help = "exact path" },
    { .name = "regex",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_match_cfg, regex),
      .help = "PCRE2 regular expression the whole path must match" },
    { .name = "methods",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct proxy_match_cfg, methods),
      .help = "request methods (any when empty)" },
    { .name = "authority",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct proxy_match_cfg, authority),
      .help = "Host names, exact or with a leading \"*.\" or trailing \".*\" wildcard, \"*\" "
              "for any; a name without a port matches the Host with any port (any when empty)",
      .max = 256 },
    { .name = "destination_ports",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct proxy_match_cfg, destination_ports),
      .help = "ports the client connected to: the original destination's port of a connection "
              "redirected by sidecar iptables, else the listener's (any when empty)",
      .max = PROXY_ICPT_MAX_PORTS,
      .check = proxy_icpt_ports_check },
    { .name = "conn",
      .type = SC_OPT_INLINE,
      .offset = offsetof(struct proxy_match_cfg, conn),
      .sub = conn_opts },
    { .name = "headers",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct proxy_match_cfg, headers),
      .help = "headers that must all match",
      .sub = header_match_opts,
      .sub_size = sizeof(struct proxy_header_match_cfg) },
    { .name = "cookies",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct proxy_match_cfg, cookies),
      .help = "cookies (from Cookie headers) that must all match, as headers do",
      .sub = header_match_opts,
      .sub_size = sizeof(struct proxy_header_match_cfg) },
    { .name = "query_parameters",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct proxy_match_cfg, query_parameters),
      .help = "query parameters that must all match (the first occurrence of a name counts)",
      .max = PROXY_QUERY_MAX,
      .sub = proxy_query_match_opts,
      .sub_size = sizeof(struct proxy_query_match_cfg) },
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

struct proxy_route_conn *proxy_route_conn_new(const struct proxy_route_conn_cfg *c)
{
    struct proxy_addr_match *am = proxy_addr_match_new(&c->addr);
    if (!am && !c->server_names.n && c->transport_protocol == PROXY_TP_ANY) {
        return NULL;
    }
    struct proxy_route_conn *rc = SC_NEW(struct proxy_route_conn);
    rc->am = am;
    rc->transport = c->transport_protocol;
    rc->nserver_names = c->server_names.n;
    rc->server_names = sc_calloc(rc->nserver_names ? rc->nserver_names : 1, sizeof(char *));
    for (size_t i = 0; i < rc->nserver_names; i++) {
        rc->server_names[i] = sc_strdup(c->server_names.v[i]);
        for (char *p = rc->server_names[i]; *p; p++) {
            *p = (char)tolower((unsigned char)*p);
        }
    }
    return rc;
}

void proxy_route_conn_free(struct proxy_route_conn *rc)
{
    if (!rc) {
        return;
    }
    proxy_addr_match_free(rc->am);
    for (size_t i = 0; i < rc->nserver_names; i++) {
        sc_free(rc->server_names[i]);
    }
    sc_free(rc->server_names);
    sc_free(rc);
}

/* Whether the server name <dc>'s client sent on the TLS connection matches one of <rc>'s. */
static bool sni_takes(const struct proxy_route_conn *rc, struct proxy_dconn *dc)
{
    struct sc_xport *tls = dc->ex.cl->tls;
    struct sc_str sni = tls ? sc_xport_query_str(tls, SC_XQ_SNI) : SC_STR_NULL;
    char name[256];
    if (!sni.len || sni.len >= sizeof(name)) {
        return false;
    }
    for (size_t i = 0; i < sni.len; i++) {
        name[i] = (char)tolower((unsigned char)sni.p[i]);
    }
    name[sni.len] = '\0';
    for (size_t i = 0; i < rc->nserver_names; i++) {
        if (proxy_sni_match(rc->server_names[i], name)) {
            return true;
        }
    }
    return false;
}

bool proxy_route_conn_takes(const struct proxy_route *r, struct proxy_dconn *dc)
{
    if (r->ndports && !proxy_route_port_in(r, proxy_dest_port(dc))) {
        return false;
    }
    const struct proxy_route_conn *rc = r->conn;
    if (!rc) {
        return true;
    }
    bool tls = dc->ex.cl->tls != NULL;
    if ((rc->transport == PROXY_TP_TLS && !tls) || (rc->transport == PROXY_TP_RAW && tls)) {
        return false;
    }
    if (rc->nserver_names && !sni_takes(rc, dc)) {
        return false;
    }
    if (!rc->am) {
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
    return proxy_addr_match_takes(rc->am, &src, sport, &dst);
}

// SPDX-License-Identifier: Apache-2.0
// Interception options (see proxy_tcp.h): a listener's protocol, detection timeout, port overrides
// and TCP routes; a cluster's upstream source address. The tables are included inline in the
// listener and cluster tables of proxy_config.c, so the loader, --help, /config and the docs come
// from them; the runtime copies (ports parsed, clusters resolved, SNI patterns lowercased) are
// built with each snapshot and freed with it.
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <unistd.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/metrics.h"
#include "core/str.h"
#include "roles/proxy/proxy.h"
#include "roles/proxy/proxy_tcp.h"

#ifndef IPV6_FREEBIND
#define IPV6_FREEBIND 78 /* linux/in6.h */
#endif

static const char *const protocols[] = { "http", "tcp", "auto", NULL };
static const char *const transports[] = { "any", "tls", "raw_buffer", NULL };

/* A list of ports: each 1 to 65535. */
int proxy_icpt_ports_check(void *field, char **err)
{
    const struct sc_strv *v = field;
    for (size_t i = 0; i < v->n; i++) {
        uint64_t p = 0;
        if (sc_str_to_u64(sc_str_c(v->v[i]), 65535, &p) < 0 || p == 0) {
            *err = sc_asprintf("\"%s\" is not a port (1 to 65535)", v->v[i]);
            return SC_ECONFIG;
        }
    }
    return 0;
}

/* Server-name patterns: a host name, "*.suffix" or "*". */
int proxy_server_names_check(void *field, char **err)
{
    const struct sc_strv *v = field;
    for (size_t i = 0; i < v->n; i++) {
        const char *s = v->v[i];
        size_t n = strlen(s);
        bool ok = n > 0 && n <= 255;
        for (size_t k = 0; ok && k < n; k++) {
            unsigned char c = (unsigned char)s[k];
            ok = isalnum(c) || c == '-' || c == '.' || c == '_' || (c == '*' && k == 0);
        }
        if (ok && s[0] == '*' && n > 1 && s[1] != '.') {
            ok = false;
        }
        if (!ok) {
            *err = sc_asprintf("\"%s\" is not a server name pattern (a host name, \"*.suffix\" "
                               "or \"*\")",
                               s);
            return SC_ECONFIG;
        }
    }
    return 0;
}

/* Source addresses: IP literals, at most one IPv4 and one IPv6. */
static int bind_check(void *field, char **err)
{
    const struct sc_strv *v = field;
    int n4 = 0, n6 = 0;
    for (size_t i = 0; i < v->n; i++) {
        struct in_addr a4;
        struct in6_addr a6;
        if (inet_pton(AF_INET, v->v[i], &a4) == 1) {
            n4++;
        } else if (inet_pton(AF_INET6, v->v[i], &a6) == 1) {
            n6++;
        } else {
            *err = sc_asprintf("\"%s\" is not an IP address", v->v[i]);
            return SC_ECONFIG;
        }
    }
    if (n4 > 1 || n6 > 1) {
        *err = sc_asprintf("at most one IPv4 and one IPv6 source address");
        return SC_ECONFIG;
    }
    return 0;
}

static const struct sc_opt tcp_weighted_opts[] = {
    { .name = "cluster",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_weighted_cfg, cluster),
      .help = "destination cluster",
      .flags = SC_OPT_REQUIRED,
      .check = proxy_name_check },
    { .name = "weight",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_weighted_cfg, weight),
      .def = "1",
      .help = "share of the route's connections, relative to the other clusters' weights",
      .min = 0,
      .max = 1000000 },
    { 0 },
};

static const struct sc_opt tcp_route_opts[] = {
    { .name = "name",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_tcp_route_cfg, name),
      .help = "route name (access log): letters, digits and -._:/; default tcpN",
      .check = proxy_name_check },
    { .name = "server_names",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct proxy_tcp_route_cfg, server_names),
      .help = "TLS server names (SNI) the route takes: \"a.example\", \"*.example\" (any name "
              "under it) or \"*\"; a route with names never takes a connection that is not TLS; "
              "empty: any",
      .max = 64,
      .check = proxy_server_names_check },
    { .name = "application_protocols",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct proxy_tcp_route_cfg, application_protocols),
      .help = "TLS ALPN protocols: the route takes a ClientHello offering any of them; empty: any",
      .max = 16 },
    { .name = "destination_ports",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct proxy_tcp_route_cfg, destination_ports),
      .help = "original destination ports the route takes; empty: any",
      .max = PROXY_ICPT_MAX_PORTS,
      .check = proxy_icpt_ports_check },
    { .name = "transport_protocol",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct proxy_tcp_route_cfg, transport_protocol),
      .def = "any",
      .help = "tls (the route takes only connections that start with a TLS ClientHello), "
              "raw_buffer (only those that do not) or any",
      .enums = transports },
    { .name = "addr",
      .type = SC_OPT_INLINE,
      .offset = offsetof(struct proxy_tcp_route_cfg, addr),
      .sub = proxy_addr_match_opts },
    { .name = "cluster",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_tcp_route_cfg, cluster),
      .help = "the cluster the connection goes to (an original_dst cluster: where it was going)",
      .check = proxy_name_check },
    { .name = "weighted_clusters",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct proxy_tcp_route_cfg, weighted_clusters),
      .help = "instead of cluster: clusters sharing the route's connections by weight",
      .max = 64,
      .sub = tcp_weighted_opts,
      .sub_size = sizeof(struct proxy_weighted_cfg) },
    { 0 },
};

const struct sc_opt proxy_icpt_listener_opts[] = {
    { .name = "protocol",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct proxy_icpt_listener_cfg, protocol),
      .def = "http",
      .help = "http (every connection is HTTP/1), tcp (every connection is relayed as bytes) or "
              "auto (detected from the first bytes: an HTTP/1 request line goes to the routes, a "
              "TLS ClientHello or anything else is relayed by tcp_routes)",
      .flags = SC_OPT_RESTART,
      .enums = protocols },
    { .name = "protocol_detection_timeout",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_icpt_listener_cfg, detect_timeout_ms),
      .def = "5s",
      .help = "protocol auto: a connection still undecided this long after it was accepted (a "
              "server-first protocol that waits for the server to speak) is relayed as TCP; 0: "
              "wait for the client's bytes (up to tcp_idle_timeout)",
      .max = 3600000 },
    { .name = "opaque_ports",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct proxy_icpt_listener_cfg, opaque_ports),
      .help = "protocol auto: original destination ports relayed as TCP without detection "
              "(server-first protocols: MySQL 3306, SMTP 25, ...)",
      .max = PROXY_ICPT_MAX_PORTS,
      .check = proxy_icpt_ports_check },
    { .name = "http_ports",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct proxy_icpt_listener_cfg, http_ports),
      .help = "protocol auto: original destination ports taken as HTTP/1 without detection",
      .max = PROXY_ICPT_MAX_PORTS,
      .check = proxy_icpt_ports_check },
    { .name = "tcp_routes",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct proxy_icpt_listener_cfg, tcp_routes),
      .help = "where TCP and TLS connections go, tried in order (first match wins); none "
              "matching: tcp_cluster",
      .max = 256,
      .sub = tcp_route_opts,
      .sub_size = sizeof(struct proxy_tcp_route_cfg) },
    { .name = "tcp_cluster",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_icpt_listener_cfg, tcp_cluster),
      .help = "the cluster of TCP and TLS connections no tcp_route takes; unset: the "
              "connection's original destination (a connection that was not redirected is "
              "closed)",
      .check = proxy_name_check },
    { .name = "tcp_idle_timeout",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_icpt_listener_cfg, tcp_idle_timeout_ms),
      .def = "1h",
      .help = "a relayed connection with no bytes either way this long is closed (0: never)" },
    { .name = "tcp_splice",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct proxy_icpt_listener_cfg, tcp_splice),
      .def = "true",
      .help = "relay established TCP connections with splice(2) through a pipe per direction "
              "(the bytes never enter the proxy's memory); false: through user-space buffers" },
    { 0 },
};

const struct sc_opt proxy_icpt_cluster_opts[] = {
    { .name = "upstream_bind_address",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct proxy_icpt_cluster_cfg, upstream_bind_address),
      .help = "source addresses of upstream connections, one IPv4 and one IPv6, each used for "
              "destinations of its family (the inbound passthrough: 127.0.0.6 and ::6, which the "
              "iptables rules let through); empty: the kernel's choice",
      .max = 2,
      .check = bind_check },
    { 0 },
};

/* Whether <name> is a cluster of <cfg> (or one the defaults add). */
static bool cluster_known(const struct proxy_cfg *cfg, const char *name)
{
    const struct proxy_cluster_cfg *cl = cfg->clusters.v;
    for (size_t i = 0; i < cfg->clusters.n; i++) {
        if (strcmp(cl[i].name, name) == 0) {
            return true;
        }
    }
    return cfg->listen && strcmp(name, "upstream") == 0;
}

int proxy_icpt_check(const struct proxy_cfg *cfg, char **err)
{
    const struct proxy_listener_cfg *ls = cfg->listeners.v;
    for (size_t i = 0; i < cfg->listeners.n; i++) {
        const struct proxy_icpt_listener_cfg *ic = &ls[i].icpt;
        if (ic->tcp_cluster && !cluster_known(cfg, ic->tcp_cluster)) {
            *err = sc_asprintf("listener \"%s\": tcp_cluster: unknown cluster \"%s\"", ls[i].name,
                               ic->tcp_cluster);
            return SC_ECONFIG;
        }
        const struct proxy_tcp_route_cfg *r = ic->tcp_routes.v;
        for (size_t k = 0; k < ic->tcp_routes.n; k++) {
            const struct proxy_weighted_cfg *wc = r[k].weighted_clusters.v;
            int64_t total = 0;
            if (!r[k].cluster == !r[k].weighted_clusters.n) {
                *err = sc_asprintf("listener \"%s\": tcp_routes[%zu]: use one of cluster and "
                                   "weighted_clusters",
                                   ls[i].name, k);
                return SC_ECONFIG;
            }
            for (size_t j = 0; j <= r[k].weighted_clusters.n; j++) {
                const char *cn = j < r[k].weighted_clusters.n ? wc[j].cluster : r[k].cluster;
                total += j < r[k].weighted_clusters.n ? wc[j].weight : 0;
                if (cn && !cluster_known(cfg, cn)) {
                    *err = sc_asprintf("listener \"%s\": tcp_routes: unknown cluster \"%s\"",
                                       ls[i].name, cn);
                    return SC_ECONFIG;
                }
            }
            if (r[k].weighted_clusters.n && total <= 0) {
                *err = sc_asprintf("listener \"%s\": tcp_routes[%zu]: the weights add up to 0",
                                   ls[i].name, k);
                return SC_ECONFIG;
            }
        }
        if (ic->protocol == PROXY_LP_HTTP && (ic->tcp_routes.n || ic->tcp_cluster)) {
            *err = sc_asprintf("listener \"%s\": tcp_routes and tcp_cluster need protocol tcp "
                               "or auto",
                               ls[i].name);
            return SC_ECONFIG;
        }
    }
    return 0;
}

static void parse_ports(const struct sc_strv *v, uint16_t *out, size_t *n)
{
    *n = 0;
    for (size_t i = 0; i < v->n && i < PROXY_ICPT_MAX_PORTS; i++) {
        uint64_t p = 0;
        if (sc_str_to_u64(sc_str_c(v->v[i]), 65535, &p) == 0) {
            out[(*n)++] = (uint16_t)p;
        }
    }
}

uint16_t *proxy_icpt_parse_ports(const struct sc_strv *v, size_t *n)
{
    uint16_t *out = sc_calloc(v->n ? v->n : 1, sizeof(uint16_t));
    *n = 0;
    for (size_t i = 0; i < v->n; i++) {
        uint64_t p = 0;
        if (sc_str_to_u64(sc_str_c(v->v[i]), 65535, &p) == 0) {
            out[(*n)++] = (uint16_t)p;
        }
    }
    return out;
}

bool proxy_route_port_in(const struct proxy_route *r, uint16_t port)
{
    for (size_t i = 0; i < r->ndports; i++) {
        if (r->dports[i] == port) {
            return true;
        }
    }
    return false;
}

static char **copy_strv(const struct sc_strv *v, size_t *n, bool lower)
{
    char **out = sc_calloc(v->n ? v->n : 1, sizeof(char *));
    for (size_t i = 0; i < v->n; i++) {
        out[i] = sc_strdup(v->v[i]);
        for (char *c = out[i]; lower && *c; c++) {
            *c = (char)tolower((unsigned char)*c);
        }
    }
    *n = v->n;
    return out;
}

int proxy_icpt_listener_init(struct proxy_listener *l, const struct proxy_listener_cfg *lc,
                             const struct proxy_cfg *cfg, struct proxy_rt *rt,
                             struct proxy_metrics *pm, char **err)
{
    struct proxy_listener_icpt *ic = &l->icpt;
    ic->connect_timeout_ms = cfg->connect_timeout_ms;
    const char *lv[] = { l->name };
    const char *lrx[] = { l->name, "received" }, *ltx[] = { l->name, "sent" };
    ic->m_total = sc_metrics_get(pm->tcp_total, lv);
    ic->m_active = sc_metrics_get(pm->tcp_active, lv);
    ic->m_rx = sc_metrics_get(pm->tcp_bytes, lrx);
    ic->m_tx = sc_metrics_get(pm->tcp_bytes, ltx);
    if (!lc) {
        ic->protocol = PROXY_LP_HTTP;
        return 0;
    }
    const struct proxy_icpt_listener_cfg *c = &lc->icpt;
    ic->protocol = c->protocol;
    ic->detect_timeout_ms = c->detect_timeout_ms;
    ic->idle_timeout_ms = c->tcp_idle_timeout_ms;
    ic->splice = c->tcp_splice;
    parse_ports(&c->opaque_ports, ic->opaque, &ic->nopaque);
    parse_ports(&c->http_ports, ic->http, &ic->nhttp);
    if (c->tcp_cluster && !(ic->cluster = proxy_rt_cluster(rt, c->tcp_cluster))) {
        *err = sc_asprintf("listener \"%s\": unknown cluster \"%s\"", l->name, c->tcp_cluster);
        return SC_ECONFIG;
    }
    ic->routes = sc_calloc(c->tcp_routes.n ? c->tcp_routes.n : 1, sizeof(*ic->routes));
    const struct proxy_tcp_route_cfg *rc = c->tcp_routes.v;
    for (size_t i = 0; i < c->tcp_routes.n; i++) {
        struct proxy_tcp_route *r = &ic->routes[i];
        ic->nroutes = i + 1;
        r->name = rc[i].name ? sc_strdup(rc[i].name) : sc_asprintf("tcp%zu", i + 1);
        r->server_names = copy_strv(&rc[i].server_names, &r->nserver_names, true);
        r->alpn = copy_strv(&rc[i].application_protocols, &r->nalpn, false);
        parse_ports(&rc[i].destination_ports, r->ports, &r->nports);
        r->transport = rc[i].transport_protocol;
        r->am = proxy_addr_match_new(&rc[i].addr);
        ic->by_addr = ic->by_addr || r->am;
        const struct proxy_weighted_cfg *wc = rc[i].weighted_clusters.v;
        r->nwc = rc[i].weighted_clusters.n;
        r->wc = sc_calloc(r->nwc ? r->nwc : 1, sizeof(*r->wc));
        r->cum = sc_calloc(r->nwc ? r->nwc : 1, sizeof(*r->cum));
        uint32_t sum = 0;
        for (size_t k = 0; k <= r->nwc; k++) {
            const char *cn = k < r->nwc ? wc[k].cluster : rc[i].cluster ? rc[i].cluster : NULL;
            struct proxy_cluster *pc = cn ? proxy_rt_cluster(rt, cn) : NULL;
            if (cn && !pc) {
                *err = sc_asprintf("listener \"%s\": unknown cluster \"%s\"", l->name, cn);
                return SC_ECONFIG;
            }
            if (k < r->nwc) {
                r->wc[k] = pc;
                sum += (uint32_t)wc[k].weight;
                r->cum[k] = sum;
            } else {
                r->cluster = pc ? pc : r->wc[0]; /* the first weighted one until chosen */
            }
        }
    }
    return 0;
}

void proxy_icpt_listener_free(struct proxy_listener *l)
{
    struct proxy_listener_icpt *ic = &l->icpt;
    for (size_t i = 0; i < ic->nroutes; i++) {
        struct proxy_tcp_route *r = &ic->routes[i];
        for (size_t k = 0; k < r->nserver_names; k++) {
            sc_free(r->server_names[k]);
        }
        for (size_t k = 0; k < r->nalpn; k++) {
            sc_free(r->alpn[k]);
        }
        sc_free(r->server_names);
        sc_free(r->alpn);
        proxy_addr_match_free(r->am);
        sc_free(r->wc);
        sc_free(r->cum);
        sc_free(r->name);
    }
    sc_free(ic->routes);
    ic->routes = NULL;
    ic->nroutes = 0;
    ic->by_addr = false;
}

void proxy_icpt_cluster_init(struct proxy_cluster *c, const struct proxy_cluster_cfg *cc)
{
    memset(&c->bind, 0, sizeof(c->bind));
    const struct sc_strv *v = &cc->icpt.upstream_bind_address;
    for (size_t i = 0; i < v->n; i++) {
        if (inet_pton(AF_INET, v->v[i], &c->bind.a4.sin_addr) == 1) {
            c->bind.a4.sin_family = AF_INET;
            c->bind.has4 = true;
        } else if (inet_pton(AF_INET6, v->v[i], &c->bind.a6.sin6_addr) == 1) {
            c->bind.a6.sin6_family = AF_INET6;
            c->bind.has6 = true;
        }
    }
}

int proxy_icpt_bind(uv_tcp_t *h, const struct proxy_cluster *c, int family)
{
    const struct sockaddr *sa = NULL;
    if (c && family == AF_INET && c->bind.has4) {
        sa = (const struct sockaddr *)&c->bind.a4;
    } else if (c && family == AF_INET6 && c->bind.has6) {
        sa = (const struct sockaddr *)&c->bind.a6;
    }
    if (!sa) {
        return 0;
    }
    /* The socket is made here so that IP_FREEBIND can be set before bind(2): ::6 need not be an
     * address of the pod's interfaces (127.0.0.6 is loopback already). The port is the
     * kernel's choice. */
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return uv_translate_sys_error(errno);
    }
    int one = 1;
    if (family == AF_INET6) {
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_FREEBIND, &one, sizeof(one));
    } else {
        (void)setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof(one));
    }
    socklen_t len = family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (bind(fd, sa, len) < 0) {
        int rc = uv_translate_sys_error(errno);
        close(fd);
        return rc;
    }
    int rc = uv_tcp_open(h, fd);
    if (rc < 0) {
        close(fd);
    }
    return rc;
}

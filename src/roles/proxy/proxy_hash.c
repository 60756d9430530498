// SPDX-License-Identifier: Apache-2.0
// Consistent-hash load balancing: hash policies (see proxy_hash.h).
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "roles/proxy/proxy_hash.h"
#include "roles/proxy/proxy_route_policy.h"
#include "roles/proxy/proxy_route_query.h"

const struct sc_opt proxy_hash_policy_opts[] = {
    { .name = "header",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_hash_policy_cfg, header),
      .help = "hash by this request header's value" },
    { .name = "cookie",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_hash_policy_cfg, cookie),
      .help = "hash by this cookie's value" },
    { .name = "query_parameter",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_hash_policy_cfg, query_parameter),
      .help = "hash by this query parameter's value (its first occurrence, as sent)" },
    { .name = "source_ip",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct proxy_hash_policy_cfg, source_ip),
      .def = "false",
      .help = "hash by the client's address (the connection's peer)" },
    { .name = "terminal",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct proxy_hash_policy_cfg, terminal),
      .def = "false",
      .help = "when this policy found its value, the later ones are not used" },
    { 0 },
};

enum { H_HEADER, H_COOKIE, H_QUERY, H_SOURCE_IP };

struct proxy_hash_policy {
    int kind;
    struct sc_str name;
    bool terminal;
};

int proxy_hash_check(const struct sc_vec *v, const char *where, char **err)
{
    const struct proxy_hash_policy_cfg *c = v->v;
    if (v->n > PROXY_HASH_MAX) {
        *err = sc_asprintf("%s: at most %d hash_policy entries", where, PROXY_HASH_MAX);
        return SC_ECONFIG;
    }
    for (size_t i = 0; i < v->n; i++) {
        int k = !!c[i].header + !!c[i].cookie + !!c[i].query_parameter + c[i].source_ip;
        const char *nm = c[i].header   ? c[i].header
                         : c[i].cookie ? c[i].cookie
                                       : c[i].query_parameter;
        if (k != 1 || (nm && !nm[0])) {
            *err = sc_asprintf("%s: hash_policy %zu: one of header, cookie, query_parameter and "
                               "source_ip (a name is not empty)",
                               where, i + 1);
            return SC_ECONFIG;
        }
    }
    return 0;
}

struct proxy_hash_policy *proxy_hash_new(const struct sc_vec *v)
{
    if (!v->n) {
        return NULL;
    }
    const struct proxy_hash_policy_cfg *c = v->v;
    struct proxy_hash_policy *p = sc_calloc(v->n, sizeof(*p));
    for (size_t i = 0; i < v->n; i++) {
        p[i].kind = c[i].header            ? H_HEADER
                    : c[i].cookie          ? H_COOKIE
                    : c[i].query_parameter ? H_QUERY
                                           : H_SOURCE_IP;
        const char *nm = c[i].header   ? c[i].header
                         : c[i].cookie ? c[i].cookie
                                       : c[i].query_parameter;
        p[i].name = nm ? sc_str_c(sc_strdup(nm)) : SC_STR_NULL;
        p[i].terminal = c[i].terminal;
    }
    return p;
}

void proxy_hash_free(struct proxy_hash_policy *p, size_t n)
{
    for (size_t i = 0; p && i < n; i++) {
        sc_free((char *)p[i].name.p);
    }
    sc_free(p);
}

uint64_t proxy_hash_bytes(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h = (h ^ (uint8_t)p[i]) * 0x100000001b3ULL;
    }
    return proxy_hash_score(h, 0);
}

bool proxy_hash_request(const struct proxy_hash_policy *p, size_t n, const struct sc_http_msg *m,
                        const char *client_ip, uint64_t *out)
{
    bool any = false;
    uint64_t h = 0;
    for (size_t i = 0; i < n; i++) {
        struct sc_str v = SC_STR_NULL;
        switch (p[i].kind) {
        case H_HEADER: {
            const struct sc_http_header *hd = sc_http1_find(m, p[i].name, NULL);
            v = hd ? hd->value : SC_STR_NULL;
            break;
        }
        case H_COOKIE:
            v = proxy_route_cookie_value(m, p[i].name);
            break;
        case H_QUERY:
            v = proxy_query_value(m->target, p[i].name);
            break;
        default:
            v = client_ip && client_ip[0] ? sc_str_c(client_ip) : SC_STR_NULL;
            break;
        }
        if (!v.p) {
            continue;
        }
        /* Envoy: the hashes of the policies with a value are combined, rotating the sum. */
        h = ((h << 1) | (h >> 63)) ^ proxy_hash_bytes(v.p, v.len);
        any = true;
        if (p[i].terminal) {
            break;
        }
    }
    *out = h;
    return any;
}

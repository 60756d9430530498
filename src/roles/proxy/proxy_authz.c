// SPDX-License-Identifier: Apache-2.0
// AuthorizationPolicy for the proxy (see proxy_authz.h): the option tables, the compiler from
// config structs into matchers (patterns, CIDRs, ports, condition keys) and the evaluator.
// Patterns follow Istio: exact, "prefix*", "*suffix", "*" (any non-empty value), and for paths
// the templates "{*}" (one segment) and "{**}" (the rest, last only). Nothing is a regular
// expression: a '.' in a service-account name is a dot. Memory is fixed at compile time; the
// evaluator allocates nothing.
#include "roles/proxy/proxy_authz_int.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "roles/proxy/proxy.h"
#include "roles/proxy/proxy_extauthz.h"
#include "roles/proxy/proxy_normalize.h"
#include "roles/proxy/proxy_peerauth.h"

const char *const proxy_az_action_names[] = { "ALLOW", "DENY", "AUDIT", "CUSTOM", NULL };

#define AZ_MAX_VALUES 256
#define AZ_MAX_SEGS 32

/* ---- option tables ---- */

#define STRV(st, field, what)                                                                      \
    {                                                                                              \
        .name = #field, .type = SC_OPT_STRLIST, .offset = offsetof(struct st, field),              \
        .help = what, .max = AZ_MAX_VALUES                                                         \
    }

static const struct sc_opt source_opts[] = {
    STRV(proxy_az_source_cfg, principals, "peer identities (mTLS) \"td/ns/N/sa/S\"; patterns"),
    STRV(proxy_az_source_cfg, not_principals, "peer identities that do not match"),
    STRV(proxy_az_source_cfg, request_principals, "JWT identities \"iss/sub\"; patterns"),
    STRV(proxy_az_source_cfg, not_request_principals, "JWT identities that do not match"),
    STRV(proxy_az_source_cfg, namespaces, "the peer identity's namespace; patterns"),
    STRV(proxy_az_source_cfg, not_namespaces, "namespaces that do not match"),
    STRV(proxy_az_source_cfg, ip_blocks, "the connection's peer address: addresses or CIDRs"),
    STRV(proxy_az_source_cfg, not_ip_blocks, "peer addresses that do not match"),
    STRV(proxy_az_source_cfg, remote_ip_blocks,
         "the client address by X-Forwarded-For and xff_num_trusted_hops: addresses or CIDRs"),
    STRV(proxy_az_source_cfg, not_remote_ip_blocks, "client addresses that do not match"),
    { 0 },
};

static const struct sc_opt operation_opts[] = {
    STRV(proxy_az_operation_cfg, hosts,
         "Host values (no case, port or trailing dot unless the pattern has a port); patterns"),
    STRV(proxy_az_operation_cfg, not_hosts, "hosts that do not match"),
    STRV(proxy_az_operation_cfg, ports, "destination ports"),
    STRV(proxy_az_operation_cfg, not_ports, "ports that do not match"),
    STRV(proxy_az_operation_cfg, methods, "request methods (exact case); patterns"),
    STRV(proxy_az_operation_cfg, not_methods, "methods that do not match"),
    STRV(proxy_az_operation_cfg, paths,
         "normalised paths without query; patterns and templates {*} and {**}"),
    STRV(proxy_az_operation_cfg, not_paths, "paths that do not match"),
    { 0 },
};

static const struct sc_opt from_opts[] = {
    { .name = "source",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_az_from_cfg, source),
      .help = "the request's source; every field set must match",
      .sub = source_opts },
    { 0 },
};

static const struct sc_opt to_opts[] = {
    { .name = "operation",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_az_to_cfg, operation),
      .help = "the request's operation; every field set must match",
      .sub = operation_opts },
    { 0 },
};

static const struct sc_opt cond_opts[] = {
    { .name = "key",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_az_cond_cfg, key),
      .help = "request.headers[NAME], source.ip, remote.ip, source.namespace, source.principal, "
              "request.auth.principal, request.auth.audiences, request.auth.presenter, "
              "request.auth.claims[NAME][...], destination.ip, destination.port, connection.sni",
      .flags = SC_OPT_REQUIRED },
    STRV(proxy_az_cond_cfg, values, "values of which one must match"),
    STRV(proxy_az_cond_cfg, not_values, "values none of which may match"),
    { 0 },
};

static const struct sc_opt rule_opts[] = {
    { .name = "from",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct proxy_az_rule_cfg, from),
      .help = "sources, one of which must match (none: any source)",
      .sub = from_opts,
      .sub_size = sizeof(struct proxy_az_from_cfg),
      .max = AZ_MAX_VALUES },
    { .name = "to",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct proxy_az_rule_cfg, to),
      .help = "operations, one of which must match (none: any operation)",
      .sub = to_opts,
      .sub_size = sizeof(struct proxy_az_to_cfg),
      .max = AZ_MAX_VALUES },
    { .name = "when",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct proxy_az_rule_cfg, when),
      .help = "conditions, all of which must match",
      .sub = cond_opts,
      .sub_size = sizeof(struct proxy_az_cond_cfg),
      .max = AZ_MAX_VALUES },
    { 0 },
};

const struct sc_opt proxy_az_policy_opts[] = {
    { .name = "name",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_az_policy_cfg, name),
      .help = "the policy's name (metrics, access log)",
      .flags = SC_OPT_REQUIRED,
      .check = proxy_name_check },
    { .name = "namespace",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_az_policy_cfg, ns),
      .help = "the policy's namespace: the root namespace makes it mesh-wide (default: the "
              "workload's)" },
    { .name = "match_labels",
      .type = SC_OPT_STRMAP,
      .offset = offsetof(struct proxy_az_policy_cfg, match_labels),
      .help = "selector: the labels a workload must all have (empty: every workload in scope)" },
    { .name = "action",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct proxy_az_policy_cfg, action),
      .def = "ALLOW",
      .help = "ALLOW, DENY, AUDIT or CUSTOM",
      .enums = proxy_az_action_names },
    { .name = "provider",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_az_policy_cfg, provider),
      .help = "CUSTOM: the external authorizer's name" },
    { .name = "dry_run",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct proxy_az_policy_cfg, dry_run),
      .def = "false",
      .help = "evaluate, log and count the decision without enforcing it (istio.io/dry-run)" },
    { .name = "rules",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct proxy_az_policy_cfg, rules),
      .help = "rules, one of which must match; none: the policy matches no request (an ALLOW "
              "policy without rules denies everything), a rule {} matches every request",
      .sub = rule_opts,
      .sub_size = sizeof(struct proxy_az_rule_cfg),
      .max = AZ_MAX_VALUES },
    { 0 },
};

const struct sc_opt proxy_authz_opts[] = {
    { .name = "path_normalization",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct proxy_authz_cfg, path_normalization),
      .def = "decode_and_merge_slashes",
      .help = "how request paths are normalised before routing, authorization and the upstream: "
              "none, base (RFC 3986 dot segments, unreserved %XX decoded), merge_slashes, "
              "decode_and_merge_slashes (also %2F and %5C, as escaped_slashes allows)",
      .enums = proxy_pathnorm_names },
    { .name = "escaped_slashes",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct proxy_authz_cfg, escaped_slashes),
      .def = "reject",
      .help = "%2F and %5C in a path: reject (400), decode (to '/'), or keep (forwarded "
              "encoded; not with decode_and_merge_slashes)",
      .enums = proxy_escslash_names },
    { .name = "headers_with_underscores",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct proxy_authz_cfg, headers_with_underscores),
      .def = "drop",
      .help = "request headers whose name holds '_' (\"Content_Length\" reads as framing to "
              "an upstream that maps '_' to '-'): allow, drop (before routing, policies and the "
              "upstream see them), or reject (400)",
      .enums = proxy_underscores_names },
    { .name = "xff_num_trusted_hops",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_authz_cfg, xff_num_trusted_hops),
      .def = "0",
      .help = "proxies in front of this one whose X-Forwarded-For entries are trusted: remote.ip "
              "is the Nth address from the right (0: the connection's peer)",
      .min = 0,
      .max = 16 },
    { .name = "extension_providers",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct proxy_authz_cfg, extension_providers),
      .help = "external authorizers for CUSTOM policies (Istio's envoyExtAuthzHttp)",
      .sub = proxy_extauthz_opts,
      .sub_size = sizeof(struct proxy_extauthz_cfg),
      .max = 16 },
    { .name = "authorization",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct proxy_authz_cfg, authorization),
      .help = "AuthorizationPolicy rules with Istio's semantics (docs/authorization.md)",
      .sub = proxy_az_policy_opts,
      .sub_size = sizeof(struct proxy_az_policy_cfg),
      .max = 1024 },
    { 0 },
};

static const char *const result_names[] = { "allowed", "denied", "audited", "dry_run_allowed",
                                            "dry_run_denied" };

/* ---- compiling ---- */

static int compile_str(const char *p, bool lower, bool path, struct az_str *out, char **err)
{
    size_t n = strlen(p);
    memset(out, 0, sizeof(*out));
    if (n == 0) {
        *err = sc_asprintf("empty value");
        return SC_ECONFIG;
    }
    if (path && memchr(p, '{', n)) {
        /* Templates: every '{' starts "{*}" or "{**}" spanning a whole segment; "{**}" last. */
        size_t segs = 0;
        for (size_t i = 0; i < n; i++) {
            if (p[i] == '/') {
                segs++;
            }
            if (p[i] != '{' && p[i] != '}') {
                continue;
            }
            bool one = strncmp(p + i, "{*}", 3) == 0, rest = strncmp(p + i, "{**}", 4) == 0;
            size_t l = one ? 3 : 4;
            if (p[i] == '}' || (!one && !rest) || i == 0 || p[i - 1] != '/' ||
                (i + l < n && p[i + l] != '/') || (rest && i + l != n)) {
                *err = sc_asprintf("\"%s\": a path template has {*} or {**} as whole segments, "
                                   "{**} last",
                                   p);
                return SC_ECONFIG;
            }
            i += l - 1;
        }
        if (p[0] != '/' || segs > AZ_MAX_SEGS) {
            *err = sc_asprintf("\"%s\": a path template starts with '/' and has at most %d "
                               "segments",
                               p, AZ_MAX_SEGS);
            return SC_ECONFIG;
        }
        out->kind = M_TEMPLATE;
        out->s = sc_strdup(p);
        out->len = n;
        return 0;
    }
    const char *s = p;
    if (n == 1 && p[0] == '*') {
        out->kind = M_ANY;
        n = 0;
    } else if (p[0] == '*') {
        out->kind = M_SUFFIX;
        s++;
        n--;
    } else if (p[n - 1] == '*') {
        out->kind = M_PREFIX;
        n--;
    }
    out->s = sc_strndup(s, n);
    out->len = n;
    if (lower) {
        for (size_t i = 0; i < n; i++) {
            char c = out->s[i];
            out->s[i] = (c >= 'A' && c <= 'Z') ? (char)(c | 0x20) : c;
        }
        /* A host pattern: a trailing dot never counts; a port makes it an authority pattern. */
        if (out->kind == M_EXACT || out->kind == M_SUFFIX) {
            if (out->len > 1 && out->s[out->len - 1] == '.') {
                out->s[--out->len] = '\0';
            }
        }
        const char *colon = strrchr(out->s, ':');
        out->port = colon && !strchr(colon, ']') && colon[1] != '\0';
    }
    return 0;
}

static int compile_strs(const struct sc_strv *v, bool lower, bool path, struct az_strs *out,
                        char **err)
{
    out->n = 0;
    out->v = v->n ? sc_calloc(v->n, sizeof(*out->v)) : NULL;
    for (size_t i = 0; i < v->n; i++) {
        int rc = compile_str(v->v[i], lower, path, &out->v[i], err);
        if (rc < 0) {
            return rc;
        }
        out->n++;
    }
    return 0;
}

static void free_strs(struct az_strs *s)
{
    for (size_t i = 0; i < s->n; i++) {
        sc_free(s->v[i].s);
    }
    sc_free(s->v);
}

int proxy_az_ip_parse(struct sc_str s, struct proxy_az_ip *ip)
{
    char buf[INET6_ADDRSTRLEN + 1];
    memset(ip, 0, sizeof(*ip));
    if (s.len == 0 || s.len >= sizeof(buf)) {
        return -1;
    }
    memcpy(buf, s.p, s.len);
    buf[s.len] = '\0';
    if (inet_pton(AF_INET, buf, ip->a) == 1) {
        ip->fam = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, buf, ip->a) == 1) {
        static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
        ip->fam = AF_INET6;
        if (memcmp(ip->a, mapped, 12) == 0) {
            memmove(ip->a, ip->a + 12, 4);
            memset(ip->a + 4, 0, 12);
            ip->fam = AF_INET;
        }
        return 0;
    }
    return -1;
}

void proxy_az_ip_from_sa(const struct sockaddr_storage *ss, struct proxy_az_ip *ip)
{
    memset(ip, 0, sizeof(*ip));
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        ip->fam = AF_INET;
        memcpy(ip->a, &in->sin_addr, 4);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            ip->fam = AF_INET;
            memcpy(ip->a, in6->sin6_addr.s6_addr + 12, 4);
        } else {
            ip->fam = AF_INET6;
            memcpy(ip->a, &in6->sin6_addr, 16);
        }
    }
}

int proxy_cidr_parse(const char *s, struct proxy_cidr *out, char **err)
{
    const char *slash = strchr(s, '/');
    struct proxy_az_ip ip;
    size_t al = slash ? (size_t)(slash - s) : strlen(s);
    if (proxy_az_ip_parse(sc_str_n(s, al), &ip) < 0) {
        goto bad;
    }
    int max = ip.fam == AF_INET ? 32 : 128;
    int bits = max;
    if (slash) {
        uint64_t b;
        if (sc_str_to_u64(sc_str_c(slash + 1), (uint64_t)max, &b) < 0) {
            goto bad;
        }
        bits = (int)b;
    }
    out->fam = ip.fam;
    out->bits = bits;
    memcpy(out->a, ip.a, 16);
    return 0;
bad:
    *err = sc_asprintf("\"%s\" is not an IP address or CIDR block", s);
    return SC_ECONFIG;
}

static int compile_cidrs(const struct sc_strv *v, struct az_cidrs *out, char **err)
{
    out->n = 0;
    out->v = v->n ? sc_calloc(v->n, sizeof(*out->v)) : NULL;
    for (size_t i = 0; i < v->n; i++) {
        int rc = proxy_cidr_parse(v->v[i], &out->v[i], err);
        if (rc < 0) {
            return rc;
        }
        out->n++;
    }
    return 0;
}

static int compile_ports(const struct sc_strv *v, struct az_ports *out, char **err)
{
    out->n = 0;
    out->v = v->n ? sc_calloc(v->n, sizeof(*out->v)) : NULL;
    for (size_t i = 0; i < v->n; i++) {
        uint64_t p;
        if (sc_str_to_u64(sc_str_c(v->v[i]), 65535, &p) < 0 || p == 0) {
            *err = sc_asprintf("\"%s\" is not a port (1-65535)", v->v[i]);
            return SC_ECONFIG;
        }
        out->v[out->n++] = (int)p;
    }
    return 0;
}

/* Parses "request.auth.claims[a][b]" brackets after <p> into <c>. */
static int parse_claims(const char *p, struct az_cond *c)
{
    c->nclaim = 0;
    while (*p == '[') {
        const char *e = strchr(p, ']');
        if (!e || e == p + 1 || c->nclaim == AZ_MAX_CLAIM_DEPTH) {
            return -1;
        }
        c->claim[c->nclaim++] = sc_str_n(p + 1, (size_t)(e - p - 1));
        p = e + 1;
    }
    return *p == '\0' && c->nclaim > 0 ? 0 : -1;
}

static int compile_cond(const struct proxy_az_cond_cfg *cc, struct az_cond *c, unsigned *needs,
                        char **err)
{
    static const struct {
        const char *name;
        int key;
        unsigned need;
    } keys[] = {
        { "source.ip", K_SOURCE_IP, 0 },
        { "remote.ip", K_REMOTE_IP, PROXY_AZ_NEED_REMOTE },
        { "source.namespace", K_SOURCE_NS, PROXY_AZ_NEED_PEER },
        { "source.principal", K_SOURCE_PRINCIPAL, PROXY_AZ_NEED_PEER },
        { "request.auth.principal", K_AUTH_PRINCIPAL, 0 },
        { "request.auth.audiences", K_AUTH_AUDIENCES, 0 },
        { "request.auth.presenter", K_AUTH_PRESENTER, 0 },
        { "destination.ip", K_DEST_IP, PROXY_AZ_NEED_DEST },
        { "destination.port", K_DEST_PORT, PROXY_AZ_NEED_DEST },
        { "connection.sni", K_SNI, PROXY_AZ_NEED_SNI },
    };
    const char *k = cc->key;
    c->key = -1;
    for (size_t i = 0; i < SC_ARRAY_LEN(keys); i++) {
        if (strcmp(k, keys[i].name) == 0) {
            c->key = keys[i].key;
            *needs |= keys[i].need;
        }
    }
    if (strncmp(k, "request.headers[", 16) == 0) {
        size_t n = strlen(k);
        if (n < 18 || k[n - 1] != ']' || memchr(k + 16, ']', n - 17) ||
            memchr(k + 16, '[', n - 17)) {
            goto bad;
        }
        c->key = K_HEADER;
        c->arg = sc_strndup(k + 16, n - 17);
    } else if (strncmp(k, "request.auth.claims", 19) == 0) {
        c->key = K_AUTH_CLAIMS;
        c->arg = sc_strdup(k + 19);
        if (parse_claims(c->arg, c) < 0) {
            goto bad;
        }
    }
    if (c->key < 0) {
        goto bad;
    }
    if (cc->values.n == 0 && cc->not_values.n == 0) {
        *err = sc_asprintf("when \"%s\": values or not_values needed", k);
        return SC_ECONFIG;
    }
    int rc;
    if (c->key == K_SOURCE_IP || c->key == K_REMOTE_IP || c->key == K_DEST_IP) {
        rc = compile_cidrs(&cc->values, &c->cvalues, err);
        if (rc == 0) {
            rc = compile_cidrs(&cc->not_values, &c->not_cvalues, err);
        }
    } else if (c->key == K_DEST_PORT) {
        rc = compile_ports(&cc->values, &c->pvalues, err);
        if (rc == 0) {
            rc = compile_ports(&cc->not_values, &c->not_pvalues, err);
        }
    } else {
        rc = compile_strs(&cc->values, false, false, &c->values, err);
        if (rc == 0) {
            rc = compile_strs(&cc->not_values, false, false, &c->not_values, err);
        }
    }
    return rc;
bad:
    *err = sc_asprintf("when: unknown or malformed key \"%s\"", k);
    return SC_ECONFIG;
}

static void free_cond(struct az_cond *c)
{
    sc_free(c->arg);
    free_strs(&c->values);
    free_strs(&c->not_values);
    sc_free(c->cvalues.v);
    sc_free(c->not_cvalues.v);
    sc_free(c->pvalues.v);
    sc_free(c->not_pvalues.v);
}

static int compile_src(const struct proxy_az_source_cfg *s, struct az_src *o, unsigned *needs,
                       char **err)
{
    int rc = 0;
    const struct {
        const struct sc_strv *in;
        struct az_strs *out;
    } strs[] = {
        { &s->principals, &o->principals },
        { &s->not_principals, &o->not_principals },
        { &s->request_principals, &o->rprincipals },
        { &s->not_request_principals, &o->not_rprincipals },
        { &s->namespaces, &o->ns },
        { &s->not_namespaces, &o->not_ns },
    };
    for (size_t i = 0; i < SC_ARRAY_LEN(strs) && rc == 0; i++) {
        rc = compile_strs(strs[i].in, false, false, strs[i].out, err);
    }
    const struct {
        const struct sc_strv *in;
        struct az_cidrs *out;
    } cidrs[] = {
        { &s->ip_blocks, &o->ip },
        { &s->not_ip_blocks, &o->not_ip },
        { &s->remote_ip_blocks, &o->rip },
        { &s->not_remote_ip_blocks, &o->not_rip },
    };
    for (size_t i = 0; i < SC_ARRAY_LEN(cidrs) && rc == 0; i++) {
        rc = compile_cidrs(cidrs[i].in, cidrs[i].out, err);
    }
    o->set = (o->principals.n || o->not_principals.n ? G_PRINC : 0) |
             (o->rprincipals.n || o->not_rprincipals.n ? G_RPRINC : 0) |
             (o->ns.n || o->not_ns.n ? G_NS : 0) | (o->ip.n || o->not_ip.n ? G_IP : 0) |
             (o->rip.n || o->not_rip.n ? G_RIP : 0);
    if (o->set & (G_PRINC | G_NS)) {
        *needs |= PROXY_AZ_NEED_PEER;
    }
    if (o->rip.n || o->not_rip.n) {
        *needs |= PROXY_AZ_NEED_REMOTE;
    }
    return rc;
}

static void free_src(struct az_src *o)
{
    struct az_strs *strs[] = { &o->principals,  &o->not_principals,
                               &o->rprincipals, &o->not_rprincipals,
                               &o->ns,          &o->not_ns };
    for (size_t i = 0; i < SC_ARRAY_LEN(strs); i++) {
        free_strs(strs[i]);
    }
    sc_free(o->ip.v);
    sc_free(o->not_ip.v);
    sc_free(o->rip.v);
    sc_free(o->not_rip.v);
}

static int compile_op(const struct proxy_az_operation_cfg *s, struct az_op *o, unsigned *needs,
                      char **err)
{
    int rc = compile_strs(&s->hosts, true, false, &o->hosts, err);
    if (rc == 0) {
        rc = compile_strs(&s->not_hosts, true, false, &o->not_hosts, err);
    }
    if (rc == 0) {
        rc = compile_strs(&s->methods, false, false, &o->methods, err);
    }
    if (rc == 0) {
        rc = compile_strs(&s->not_methods, false, false, &o->not_methods, err);
    }
    if (rc == 0) {
        rc = compile_strs(&s->paths, false, true, &o->paths, err);
    }
    if (rc == 0) {
        rc = compile_strs(&s->not_paths, false, true, &o->not_paths, err);
    }
    if (rc == 0) {
        rc = compile_ports(&s->ports, &o->ports, err);
    }
    if (rc == 0) {
        rc = compile_ports(&s->not_ports, &o->not_ports, err);
    }
    o->set = (o->hosts.n || o->not_hosts.n ? G_HOST : 0) |
             (o->methods.n || o->not_methods.n ? G_METHOD : 0) |
             (o->paths.n || o->not_paths.n ? G_PATH : 0) |
             (o->ports.n || o->not_ports.n ? G_PORT : 0);
    if (o->set & G_PORT) {
        *needs |= PROXY_AZ_NEED_DEST;
    }
    if (o->set & G_HOST) {
        *needs |= PROXY_AZ_NEED_HOST;
    }
    return rc;
}

static void free_op(struct az_op *o)
{
    struct az_strs *strs[] = { &o->hosts,       &o->not_hosts, &o->methods,
                               &o->not_methods, &o->paths,     &o->not_paths };
    for (size_t i = 0; i < SC_ARRAY_LEN(strs); i++) {
        free_strs(strs[i]);
    }
    sc_free(o->ports.v);
    sc_free(o->not_ports.v);
}

static void free_rule(struct az_rule *r)
{
    for (size_t i = 0; i < r->nfrom; i++) {
        free_src(&r->from[i]);
    }
    for (size_t i = 0; i < r->nto; i++) {
        free_op(&r->to[i]);
    }
    for (size_t i = 0; i < r->nwhen; i++) {
        free_cond(&r->when[i]);
    }
    sc_free(r->from);
    sc_free(r->to);
    sc_free(r->when);
}

static int compile_rule(const struct proxy_az_rule_cfg *rc_, struct az_rule *r, unsigned *needs,
                        char **err)
{
    const struct proxy_az_from_cfg *f = rc_->from.v;
    const struct proxy_az_to_cfg *t = rc_->to.v;
    const struct proxy_az_cond_cfg *w = rc_->when.v;
    r->from = rc_->from.n ? sc_calloc(rc_->from.n, sizeof(*r->from)) : NULL;
    r->to = rc_->to.n ? sc_calloc(rc_->to.n, sizeof(*r->to)) : NULL;
    r->when = rc_->when.n ? sc_calloc(rc_->when.n, sizeof(*r->when)) : NULL;
    int rc = 0;
    for (size_t i = 0; i < rc_->from.n && rc == 0; i++) {
        r->nfrom++;
        rc = compile_src(&f[i].source, &r->from[i], needs, err);
    }
    for (size_t i = 0; i < rc_->to.n && rc == 0; i++) {
        r->nto++;
        rc = compile_op(&t[i].operation, &r->to[i], needs, err);
    }
    for (size_t i = 0; i < rc_->when.n && rc == 0; i++) {
        r->nwhen++;
        rc = compile_cond(&w[i], &r->when[i], needs, err);
    }
    return rc;
}

static void free_policy(struct az_policy *p)
{
    for (size_t i = 0; i < p->nrules; i++) {
        free_rule(&p->rules[i]);
    }
    sc_free(p->rules);
    sc_free(p->name);
}

/* Compiles <pc> into <p> (CUSTOM providers looked up in <c>); on error the message is prefixed
 * with the policy and rule. */
static int compile_policy(const struct proxy_authz_cfg *c, const struct proxy_az_policy_cfg *pc,
                          struct az_policy *p, unsigned *needs, char **err)
{
    memset(p, 0, sizeof(*p));
    p->name = sc_strdup(pc->name);
    p->action = pc->action;
    p->dry_run = pc->dry_run;
    char *why = NULL;
    int rc = 0;
    const struct proxy_extauthz_cfg *eps = c->extension_providers.v;
    if (pc->action == PROXY_AZ_CUSTOM) {
        p->provider = c->extension_providers.n;
        for (size_t i = 0; pc->provider && i < c->extension_providers.n; i++) {
            if (strcmp(eps[i].name, pc->provider) == 0) {
                p->provider = i;
            }
        }
        if (p->provider == c->extension_providers.n) {
            why = sc_asprintf("CUSTOM needs provider naming one of extension_providers (\"%s\" "
                              "is not)",
                              pc->provider ? pc->provider : "");
            rc = SC_ECONFIG;
        }
    } else if (pc->provider) {
        why = sc_asprintf("provider is for CUSTOM policies only");
        rc = SC_ECONFIG;
    }
    const struct proxy_az_rule_cfg *rules = pc->rules.v;
    p->rules = pc->rules.n ? sc_calloc(pc->rules.n, sizeof(*p->rules)) : NULL;
    size_t i = 0;
    for (; i < pc->rules.n && rc == 0; i++) {
        p->nrules++;
        rc = compile_rule(&rules[i], &p->rules[i], needs, &why);
    }
    if (rc < 0) {
        *err = i ? sc_asprintf("authorization \"%s\": rule %zu: %s", pc->name, i, why)
                 : sc_asprintf("authorization \"%s\": %s", pc->name, why);
        sc_free(why);
    }
    return rc;
}

int proxy_authz_check(const struct proxy_authz_cfg *c, char **err)
{
    if (c->path_normalization == PROXY_PN_DECODE_MERGE && c->escaped_slashes == PROXY_ES_KEEP) {
        *err = sc_asprintf("escaped_slashes: keep contradicts path_normalization: "
                           "decode_and_merge_slashes (use decode or reject)");
        return SC_ECONFIG;
    }
    const struct proxy_az_policy_cfg *pcs = c->authorization.v;
    for (size_t i = 0; i < c->authorization.n; i++) {
        struct az_policy p;
        unsigned needs = 0;
        int rc = compile_policy(c, &pcs[i], &p, &needs, err);
        free_policy(&p);
        if (rc < 0) {
            return rc;
        }
        for (size_t j = 0; j < i; j++) {
            const char *a = pcs[i].ns ? pcs[i].ns : "", *b = pcs[j].ns ? pcs[j].ns : "";
            if (strcmp(pcs[i].name, pcs[j].name) == 0 && strcmp(a, b) == 0) {
                *err = sc_asprintf("authorization \"%s\" is defined twice", pcs[i].name);
                return SC_ECONFIG;
            }
        }
    }
    return 0;
}

struct sc_metric_family *proxy_authz_metrics(struct sc_metrics *reg)
{
    static const char *const labels[] = { "policy", "action", "result", NULL };
    return sc_metrics_family(reg, SC_METRIC_COUNTER, "sidecar_authz_decisions_total",
                             "Authorization decisions by the policy that took them (empty: no "
                             "policy matched), its action, and the result (allowed, denied, "
                             "audited, dry_run_allowed, dry_run_denied).",
                             labels, NULL, 0);
}

/* Whether policy <pc> applies to workload <wl> (Istio's scoping: the workload's namespace, or
 * the root namespace for every workload; a selector narrows either). */
static bool applies(const struct proxy_az_policy_cfg *pc, const struct proxy_workload *wl,
                    const char *root_ns)
{
    const char *ns = pc->ns ? pc->ns : wl->ns;
    if (strcmp(ns, wl->ns) != 0 && strcmp(ns, root_ns) != 0) {
        return false;
    }
    return proxy_workload_selected(wl, &pc->match_labels);
}

struct proxy_authz *proxy_authz_new(const struct proxy_authz_cfg *c,
                                    const struct proxy_workload *wl, const char *root_ns,
                                    struct sc_metrics *reg, char **err)
{
    struct sc_metric_family *fam = reg ? proxy_authz_metrics(reg) : NULL;
    const struct proxy_az_policy_cfg *pcs = c->authorization.v;
    size_t n = 0;
    for (size_t i = 0; i < c->authorization.n; i++) {
        n += applies(&pcs[i], wl, root_ns);
    }
    if (n == 0) {
        return NULL;
    }
    struct proxy_authz *az = SC_NEW(struct proxy_authz);
    az->pol = sc_calloc(n, sizeof(*az->pol));
    const struct proxy_extauthz_cfg *eps = c->extension_providers.v;
    az->ext =
        c->extension_providers.n ? sc_calloc(c->extension_providers.n, sizeof(*az->ext)) : NULL;
    struct sc_metric_family *efam = reg ? proxy_extauthz_metrics(reg) : NULL;
    for (size_t i = 0; i < c->extension_providers.n; i++) {
        az->ext[i] = proxy_extauthz_new(&eps[i], efam, err);
        if (!az->ext[i]) {
            proxy_authz_free(az);
            return NULL;
        }
        az->next++;
    }
    az->xff_hops = (int)c->xff_num_trusted_hops;
    for (size_t i = 0; i < c->authorization.n; i++) {
        if (!applies(&pcs[i], wl, root_ns)) {
            continue;
        }
        struct az_policy *p = &az->pol[az->npol++];
        if (compile_policy(c, &pcs[i], p, &az->needs, err) < 0) {
            proxy_authz_free(az);
            return NULL;
        }
        az->has_dry_allow |= p->action == PROXY_AZ_ALLOW && p->dry_run;
        for (int r = 0; r < R_COUNT; r++) {
            const char *v[] = { p->name, proxy_az_action_names[p->action], result_names[r] };
            p->m[r] = fam ? sc_metrics_get(fam, v) : NULL;
        }
    }
    for (int r = 0; r < R_COUNT; r++) {
        const char *v[] = { "", "ALLOW", result_names[r] };
        az->m_default[r] = fam ? sc_metrics_get(fam, v) : NULL;
    }
    static const int list_of[] = { [PROXY_AZ_ALLOW] = L_ALLOW,
                                   [PROXY_AZ_DENY] = L_DENY,
                                   [PROXY_AZ_AUDIT] = L_AUDIT,
                                   [PROXY_AZ_CUSTOM] = L_CUSTOM };
    for (int l = 0; l < L_COUNT; l++) {
        az->list[l] = sc_calloc(az->npol, sizeof(*az->list[l]));
    }
    for (size_t i = 0; i < az->npol; i++) {
        const struct az_policy *p = &az->pol[i];
        int l = p->dry_run ? L_DRY : list_of[p->action];
        az->list[l][az->nlist[l]++] = p;
    }
    static _Atomic uint64_t gens;
    az->gen = ++gens;
    proxy_az_index_build(az);
    return az;
}

void proxy_authz_free(struct proxy_authz *az)
{
    if (!az) {
        return;
    }
    for (size_t i = 0; i < az->npol; i++) {
        free_policy(&az->pol[i]);
    }
    proxy_az_index_free(&az->ix);
    for (int l = 0; l < L_COUNT; l++) {
        sc_free(az->list[l]);
    }
    for (size_t i = 0; i < az->next; i++) {
        proxy_extauthz_free(az->ext[i]);
    }
    sc_free(az->ext);
    sc_free(az->pol);
    sc_free(az);
}

unsigned proxy_authz_needs(const struct proxy_authz *az)
{
    return az ? az->needs : 0;
}

int proxy_authz_xff_hops(const struct proxy_authz *az)
{
    return az ? az->xff_hops : 0;
}

/* ---- matching ---- */

static bool lower_eq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z') {
            x = (char)(x | 0x20);
        }
        if (x != y) {
            return false;
        }
    }
    return true;
}

/* Template <t> against path <v>: segment by segment, "{*}" one non-empty segment, "{**}" the
 * rest (zero or more segments). */
static bool template_match(const char *t, size_t tl, struct sc_str v)
{
    size_t ti = 0, vi = 0;
    while (ti < tl) {
        if (t[ti] == '/' && vi < v.len && v.p[vi] == '/') {
            ti++;
            vi++;
            continue;
        }
        if (tl - ti >= 4 && memcmp(t + ti, "{**}", 4) == 0) {
            return true; /* the rest, whatever it holds */
        }
        if (tl - ti >= 3 && memcmp(t + ti, "{*}", 3) == 0) {
            size_t s = vi;
            while (vi < v.len && v.p[vi] != '/') {
                vi++;
            }
            if (vi == s) {
                return false;
            }
            ti += 3;
            continue;
        }
        if (vi >= v.len || t[ti] != v.p[vi]) {
            /* "/a/{**}" also matches "/a": the template's "/{**}" may stand for nothing. */
            return vi == v.len && tl - ti == 5 && memcmp(t + ti, "/{**}", 5) == 0;
        }
        ti++;
        vi++;
    }
    return vi == v.len;
}

/* memcmp(a, b, n) == 0 without a call for the short values policies mostly hold (methods,
 * path prefixes, names). */
static inline bool bytes_eq(const char *a, const char *b, size_t n)
{
    if (n > 16) {
        return memcmp(a, b, n) == 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (a[i] != b[i]) {
            return false;
        }
    }
    return true;
}

/* One pattern against value <v> (empty: absent). <ci>: compare <v> lower-cased. */
static bool str_match(const struct az_str *m, struct sc_str v, bool ci)
{
    if (v.len == 0) {
        return false;
    }
    switch (m->kind) {
    case M_ANY:
        return true;
    case M_TEMPLATE:
        return template_match(m->s, m->len, v);
    case M_PREFIX:
        return v.len >= m->len && (ci ? lower_eq(v.p, m->s, m->len) : bytes_eq(v.p, m->s, m->len));
    case M_SUFFIX: {
        const char *p = v.p + v.len - m->len;
        return v.len >= m->len && (ci ? lower_eq(p, m->s, m->len) : bytes_eq(p, m->s, m->len));
    }
    default:
        return v.len == m->len && (ci ? lower_eq(v.p, m->s, m->len) : bytes_eq(v.p, m->s, v.len));
    }
}

static bool strs_any(const struct az_strs *s, struct sc_str v)
{
    for (size_t i = 0; i < s->n; i++) {
        if (str_match(&s->v[i], v, false)) {
            return true;
        }
    }
    return false;
}

/* Host patterns: without a port against the normalised host, with one against the authority
 * (its host part without a trailing dot), both without case. */
static bool hosts_any(const struct az_strs *s, const struct proxy_az_req *rq)
{
    char auth[320];
    size_t al = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (!s->v[i].port) {
            if (str_match(&s->v[i], rq->host, false)) {
                return true;
            }
            continue;
        }
        if (al == 0 && rq->host.len) {
            const char *colon = NULL;
            for (size_t k = rq->authority.len; k > 0 && !colon; k--) {
                if (rq->authority.p[k - 1] == ':') {
                    colon = rq->authority.p + k - 1;
                } else if (rq->authority.p[k - 1] == ']') {
                    break;
                }
            }
            size_t pl = colon ? (size_t)(rq->authority.p + rq->authority.len - colon) : 0;
            if (rq->host.len + pl <= sizeof(auth)) {
                memcpy(auth, rq->host.p, rq->host.len);
                if (pl) {
                    memcpy(auth + rq->host.len, colon, pl);
                }
                al = rq->host.len + pl;
            }
        }
        if (str_match(&s->v[i], sc_str_n(auth, al), true)) {
            return true;
        }
    }
    return false;
}

static bool cidrs_any(const struct az_cidrs *s, const struct proxy_az_ip *ip)
{
    for (size_t i = 0; i < s->n; i++) {
        if (proxy_cidr_match(&s->v[i], ip)) {
            return true;
        }
    }
    return false;
}

static bool ports_any(const struct az_ports *s, int port)
{
    for (size_t i = 0; i < s->n; i++) {
        if (s->v[i] == port) {
            return true;
        }
    }
    return false;
}

/* A positive list must match when set; a negative one must not. */
#define POS(set, hit) ((set).n == 0 || (hit))
#define NEG(set, hit) ((set).n == 0 || !(hit))

/* The namespace of principal "td/ns/<ns>/sa/<sa>"; empty when it has none. */
static struct sc_str principal_ns(struct sc_str p)
{
    const char *s = p.len ? memmem(p.p, p.len, "/ns/", 4) : NULL;
    if (!s) {
        return SC_STR_NULL;
    }
    s += 4;
    const char *end = p.p + p.len, *e = memchr(s, '/', (size_t)(end - s));
    return sc_str_n(s, (size_t)((e ? e : end) - s));
}

/* Condition keys only HTTP has (request headers, request.auth.*). */
static bool cond_http_only(int key)
{
    return key == K_HEADER || key == K_AUTH_PRINCIPAL || key == K_AUTH_AUDIENCES ||
           key == K_AUTH_PRESENTER || key == K_AUTH_CLAIMS;
}

/* Whether rule <r> names a field only HTTP has: request principals, hosts, methods, paths, or
 * such a condition. */
static bool rule_http_only(const struct az_rule *r)
{
    for (size_t i = 0; i < r->nfrom; i++) {
        if (r->from[i].set & G_RPRINC) {
            return true;
        }
    }
    for (size_t i = 0; i < r->nto; i++) {
        if (r->to[i].set & (G_HOST | G_METHOD | G_PATH)) {
            return true;
        }
    }
    for (size_t i = 0; i < r->nwhen; i++) {
        if (cond_http_only(r->when[i].key)) {
            return true;
        }
    }
    return false;
}

/* Source <s> against <rq>, in the field groups of <mask> only. */
static bool src_match(const struct az_src *s, const struct proxy_az_req *rq, unsigned mask)
{
    unsigned set = s->set & mask & (rq->tcp ? ~(unsigned)G_RPRINC : ~0u);
    if ((set & G_IP) && !(POS(s->ip, cidrs_any(&s->ip, &rq->source)) &&
                          NEG(s->not_ip, cidrs_any(&s->not_ip, &rq->source)))) {
        return false;
    }
    if (set & G_RIP) {
        const struct proxy_az_ip *remote = rq->remote.fam ? &rq->remote : &rq->source;
        if (!(POS(s->rip, cidrs_any(&s->rip, remote)) &&
              NEG(s->not_rip, cidrs_any(&s->not_rip, remote)))) {
            return false;
        }
    }
    if ((set & G_PRINC) && !(POS(s->principals, strs_any(&s->principals, rq->principal)) &&
                             NEG(s->not_principals, strs_any(&s->not_principals, rq->principal)))) {
        return false;
    }
    if (set & G_RPRINC) {
        struct sc_str rp = rq->auth ? rq->auth->principal : SC_STR_NULL;
        if (!(POS(s->rprincipals, strs_any(&s->rprincipals, rp)) &&
              NEG(s->not_rprincipals, strs_any(&s->not_rprincipals, rp)))) {
            return false;
        }
    }
    if (set & G_NS) {
        struct sc_str ns = principal_ns(rq->principal);
        if (!(POS(s->ns, strs_any(&s->ns, ns)) && NEG(s->not_ns, strs_any(&s->not_ns, ns)))) {
            return false;
        }
    }
    return true;
}

/* Operation <o> against <rq>, in the field groups of <mask> only. */
static bool op_match(const struct az_op *o, const struct proxy_az_req *rq, unsigned mask)
{
    unsigned set = o->set & mask & (rq->tcp ? ~(unsigned)(G_HOST | G_METHOD | G_PATH) : ~0u);
    if ((set & G_METHOD) && !(POS(o->methods, strs_any(&o->methods, rq->method)) &&
                              NEG(o->not_methods, strs_any(&o->not_methods, rq->method)))) {
        return false;
    }
    if ((set & G_PATH) && !(POS(o->paths, strs_any(&o->paths, rq->path)) &&
                            NEG(o->not_paths, strs_any(&o->not_paths, rq->path)))) {
        return false;
    }
    if ((set & G_HOST) && !(POS(o->hosts, hosts_any(&o->hosts, rq)) &&
                            NEG(o->not_hosts, hosts_any(&o->not_hosts, rq)))) {
        return false;
    }
    if ((set & G_PORT) && !(POS(o->ports, ports_any(&o->ports, rq->dport)) &&
                            NEG(o->not_ports, ports_any(&o->not_ports, rq->dport)))) {
        return false;
    }
    return true;
}

struct claim_acc {
    const struct az_strs *set;
    bool hit;
};

static bool on_claim(void *arg, struct sc_str v)
{
    struct claim_acc *a = arg;
    if (strs_any(a->set, v)) {
        a->hit = true;
    }
    return !a->hit;
}

/* Whether any value of a multi-valued attribute (headers, claims) matches <set>. */
static bool multi_any(const struct az_cond *c, const struct proxy_az_req *rq,
                      const struct az_strs *set)
{
    if (set->n == 0) {
        return false;
    }
    if (c->key == K_HEADER) {
        for (size_t i = 0; rq->m && i < rq->m->nheaders; i++) {
            const struct sc_http_header *h = &rq->m->headers[i];
            if (sc_str_caseeq(h->name, sc_str_c(c->arg)) && strs_any(set, h->value)) {
                return true;
            }
        }
        return false;
    }
    if (!rq->auth || !rq->auth->claim) {
        return false;
    }
    struct claim_acc acc = { set, false };
    static const struct sc_str aud = { "aud", 3 };
    const struct sc_str *path = c->key == K_AUTH_AUDIENCES ? &aud : c->claim;
    size_t n = c->key == K_AUTH_AUDIENCES ? 1 : c->nclaim;
    rq->auth->claim(rq->auth->ctx, path, n, on_claim, &acc);
    return acc.hit;
}

static bool cond_match(const struct az_cond *c, const struct proxy_az_req *rq)
{
    if (rq->tcp && cond_http_only(c->key)) {
        return true; /* reached only for DENY policies (policy_match) */
    }
    const struct proxy_az_ip *ip = NULL;
    struct sc_str v = SC_STR_NULL;
    switch (c->key) {
    case K_SOURCE_IP:
        ip = &rq->source;
        break;
    case K_REMOTE_IP:
        ip = rq->remote.fam ? &rq->remote : &rq->source;
        break;
    case K_DEST_IP:
        ip = &rq->dest;
        break;
    case K_DEST_PORT:
        return POS(c->pvalues, ports_any(&c->pvalues, rq->dport)) &&
               NEG(c->not_pvalues, ports_any(&c->not_pvalues, rq->dport));
    case K_HEADER:
    case K_AUTH_AUDIENCES:
    case K_AUTH_CLAIMS:
        return POS(c->values, multi_any(c, rq, &c->values)) &&
               NEG(c->not_values, multi_any(c, rq, &c->not_values));
    case K_SOURCE_NS:
        v = principal_ns(rq->principal);
        break;
    case K_SOURCE_PRINCIPAL:
        v = rq->principal;
        break;
    case K_AUTH_PRINCIPAL:
        v = rq->auth ? rq->auth->principal : SC_STR_NULL;
        break;
    case K_AUTH_PRESENTER:
        v = rq->auth ? rq->auth->presenter : SC_STR_NULL;
        break;
    case K_SNI:
        v = rq->sni;
        break;
    default:
        return false;
    }
    if (ip) {
        return POS(c->cvalues, cidrs_any(&c->cvalues, ip)) &&
               NEG(c->not_cvalues, cidrs_any(&c->not_cvalues, ip));
    }
    return POS(c->values, strs_any(&c->values, v)) &&
           NEG(c->not_values, strs_any(&c->not_values, v));
}

/* Condition keys a connection fixes (the same for every request on it). */
static bool cond_conn(int key)
{
    return key == K_SOURCE_IP || key == K_SOURCE_NS || key == K_SOURCE_PRINCIPAL ||
           key == K_DEST_IP || key == K_DEST_PORT || key == K_SNI;
}

bool proxy_az_rule_match(const struct az_rule *r, const struct proxy_az_req *rq, int what)
{
    bool conn = what == AZ_MATCH_CONN;
    unsigned smask = conn ? (unsigned)(G_IP | G_PRINC | G_NS) : ~0u;
    unsigned omask = conn ? (unsigned)G_PORT : ~0u;
    bool ok = r->nfrom == 0;
    for (size_t i = 0; i < r->nfrom && !ok; i++) {
        ok = src_match(&r->from[i], rq, smask);
    }
    if (!ok) {
        return false;
    }
    ok = r->nto == 0;
    for (size_t i = 0; i < r->nto && !ok; i++) {
        ok = op_match(&r->to[i], rq, omask);
    }
    for (size_t i = 0; i < r->nwhen && ok; i++) {
        if (!conn || cond_conn(r->when[i].key)) {
            ok = cond_match(&r->when[i], rq);
        }
    }
    return ok;
}

bool proxy_az_rule_has_conn(const struct az_rule *r)
{
    for (size_t i = 0; i < r->nfrom; i++) {
        if (r->from[i].set & (G_IP | G_PRINC | G_NS)) {
            return true;
        }
    }
    for (size_t i = 0; i < r->nto; i++) {
        if (r->to[i].set & G_PORT) {
            return true;
        }
    }
    for (size_t i = 0; i < r->nwhen; i++) {
        if (cond_conn(r->when[i].key)) {
            return true;
        }
    }
    return false;
}

static bool policy_match(const struct az_policy *p, const struct proxy_az_req *rq)
{
    for (size_t i = 0; i < p->nrules; i++) {
        if (rq->tcp && p->action != PROXY_AZ_DENY && rule_http_only(&p->rules[i])) {
            continue;
        }
        if (proxy_az_rule_match(&p->rules[i], rq, AZ_MATCH_ALL)) {
            return true;
        }
    }
    return false;
}

void proxy_authz_remote_ip(const struct sc_http_msg *m, int hops, const struct proxy_az_ip *src,
                           struct proxy_az_ip *out)
{
    *out = *src;
    if (hops <= 0 || !m) {
        return;
    }
    /* Entries counted from the right across every X-Forwarded-For line, the last line last. */
    int seen = 0;
    for (size_t i = m->nheaders; i > 0; i--) {
        const struct sc_http_header *h = &m->headers[i - 1];
        if (!sc_str_caseeq(h->name, SC_STR("x-forwarded-for"))) {
            continue;
        }
        size_t end = h->value.len;
        for (size_t k = end;; k--) {
            if (k == 0 || h->value.p[k - 1] == ',') {
                if (++seen == hops) {
                    struct sc_str e = sc_str_trim(sc_str_n(h->value.p + k, end - k));
                    struct proxy_az_ip ip;
                    if (proxy_az_ip_parse(e, &ip) == 0) {
                        *out = ip;
                    } else {
                        memset(out, 0, sizeof(*out)); /* unparsable: no remote address */
                        out->fam = -1;
                    }
                    return;
                }
                end = k ? k - 1 : 0;
            }
            if (k == 0) {
                break;
            }
        }
    }
}

static void count(struct sc_metric *m)
{
    sc_metrics_counter_inc(m);
}

void proxy_az_dry_mark(struct proxy_az_decision *d, const struct az_policy *p, bool *allow_hit)
{
    if (p->action == PROXY_AZ_DENY && !d->dry_run_denied) {
        d->dry_run = p->name;
        d->dry_run_denied = true;
        count(p->m[R_DRY_DENIED]);
    } else if (p->action == PROXY_AZ_ALLOW && !*allow_hit) {
        *allow_hit = true;
        count(p->m[R_DRY_ALLOWED]);
    }
}

void proxy_az_dry_end(const struct proxy_authz *az, struct proxy_az_decision *d, bool allow_hit)
{
    if (az->has_dry_allow && !allow_hit && !d->dry_run_denied) {
        d->dry_run = "";
        d->dry_run_denied = true;
        count(az->m_default[R_DRY_DENIED]);
    }
}

void proxy_authz_eval_linear(const struct proxy_authz *az, const struct proxy_az_req *rq,
                             struct proxy_az_decision *d)
{
    memset(d, 0, sizeof(*d));
    d->result = PROXY_AZ_RES_ALLOW;
    /* Dry-run policies first: they only mark and count, whatever the enforced ones decide. */
    bool dry_allow_hit = false;
    for (size_t i = 0; i < az->nlist[L_DRY]; i++) {
        const struct az_policy *p = az->list[L_DRY][i];
        if (policy_match(p, rq)) {
            proxy_az_dry_mark(d, p, &dry_allow_hit);
        }
    }
    proxy_az_dry_end(az, d, dry_allow_hit);
    /* A matching CUSTOM policy sends the request to its authorizer first; the DENY and ALLOW
     * verdict below still applies when the authorizer allows (Istio's order). */
    for (size_t i = 0; i < az->nlist[L_CUSTOM] && !d->ext; i++) {
        const struct az_policy *p = az->list[L_CUSTOM][i];
        if (policy_match(p, rq)) {
            d->custom = p->name;
            d->ext = az->ext[p->provider];
        }
    }
    for (size_t i = 0; i < az->nlist[L_DENY]; i++) {
        const struct az_policy *p = az->list[L_DENY][i];
        if (policy_match(p, rq)) {
            d->result = PROXY_AZ_RES_DENY;
            d->policy = p->name;
            count(p->m[R_DENIED]);
            return;
        }
    }
    for (size_t i = 0; i < az->nlist[L_AUDIT]; i++) {
        const struct az_policy *p = az->list[L_AUDIT][i];
        if (policy_match(p, rq)) {
            d->audit = p->name;
            count(p->m[R_AUDITED]);
            break;
        }
    }
    if (az->nlist[L_ALLOW] == 0) {
        count(az->m_default[R_ALLOWED]);
        return;
    }
    for (size_t i = 0; i < az->nlist[L_ALLOW]; i++) {
        const struct az_policy *p = az->list[L_ALLOW][i];
        if (policy_match(p, rq)) {
            d->policy = p->name;
            count(p->m[R_ALLOWED]);
            return;
        }
    }
    d->result = PROXY_AZ_RES_DENY;
    count(az->m_default[R_DENIED]);
}

// SPDX-License-Identifier: Apache-2.0
// Authorization for the proxy with Istio AuthorizationPolicy semantics: policies (ALLOW, DENY,
// AUDIT, CUSTOM) scoped to the workload by namespace and selector as PeerAuthentication is, rules
// of sources (from), operations (to) and conditions (when), evaluated CUSTOM -> DENY -> ALLOW on
// the request as normalised once (proxy_normalize.h). The config structs mirror Istio's spec key
// for key (snake_case), so an Istio `kind: AuthorizationPolicy` document translates into them
// field by field. Key invariant: a decision is taken on the normalised request only, and any
// evaluation that cannot complete denies (fail closed).
#ifndef SC_ROLES_PROXY_PROXY_AUTHZ_H
#define SC_ROLES_PROXY_PROXY_AUTHZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/config.h"
#include "core/metrics.h"
#include "core/str.h"
#include "net/http1.h"

/* ---- configuration as loaded ---- */

/* from[].source */
struct proxy_az_source_cfg {
    struct sc_strv principals, not_principals;
    struct sc_strv request_principals, not_request_principals;
    struct sc_strv namespaces, not_namespaces;
    struct sc_strv ip_blocks, not_ip_blocks;
    struct sc_strv remote_ip_blocks, not_remote_ip_blocks;
};

/* to[].operation */
struct proxy_az_operation_cfg {
    struct sc_strv hosts, not_hosts;
    struct sc_strv ports, not_ports;
    struct sc_strv methods, not_methods;
    struct sc_strv paths, not_paths;
};

struct proxy_az_from_cfg {
    struct proxy_az_source_cfg source;
};

struct proxy_az_to_cfg {
    struct proxy_az_operation_cfg operation;
};

struct proxy_az_cond_cfg {
    char *key;
    struct sc_strv values, not_values;
};

struct proxy_az_rule_cfg {
    struct sc_vec from; /* struct proxy_az_from_cfg */
    struct sc_vec to;   /* struct proxy_az_to_cfg */
    struct sc_vec when; /* struct proxy_az_cond_cfg */
};

enum proxy_az_action { PROXY_AZ_ALLOW, PROXY_AZ_DENY, PROXY_AZ_AUDIT, PROXY_AZ_CUSTOM };

/* One AuthorizationPolicy (metadata and spec). */
struct proxy_az_policy_cfg {
    char *name;
    char *ns;                   /* metadata.namespace; default: the workload's */
    struct sc_kvv match_labels; /* selector.matchLabels */
    int action;                 /* enum proxy_az_action */
    char *provider;             /* provider.name, CUSTOM only */
    bool dry_run;               /* the istio.io/dry-run annotation */
    struct sc_vec rules;        /* struct proxy_az_rule_cfg; none: the policy matches nothing */
};

/* The proxy's top-level keys for this module (inlined into struct proxy_cfg). */
struct proxy_authz_cfg {
    int path_normalization;            /* enum proxy_pathnorm */
    int escaped_slashes;               /* enum proxy_escslash */
    int headers_with_underscores;      /* enum proxy_underscores */
    int64_t xff_num_trusted_hops;      /* remote.ip: the Nth X-Forwarded-For entry from the right */
    struct sc_vec authorization;       /* struct proxy_az_policy_cfg */
    struct sc_vec extension_providers; /* struct proxy_extauthz_cfg: CUSTOM policies' */
};

extern const struct sc_opt proxy_authz_opts[];     /* the inlined top-level keys */
extern const struct sc_opt proxy_az_policy_opts[]; /* one policy */
extern const char *const proxy_az_action_names[];

/* ---- the runtime ---- */

struct proxy_workload;
struct proxy_authz;
struct proxy_extauthz;

/* Compiles the policies of <c> that apply to workload <wl> (namespace <root_ns> makes a policy
 * mesh-wide), and the extension providers, into a new evaluator with its metric series in <reg>
 * (NULL: none). Returns it, NULL when no policy applies (nothing to
 * evaluate), or NULL with a new message in <*err> when a value does not compile (a CIDR, a port,
 * a `when` key, a path template, a CUSTOM policy without a known provider). */
struct proxy_authz *proxy_authz_new(const struct proxy_authz_cfg *c,
                                    const struct proxy_workload *wl, const char *root_ns,
                                    struct sc_metrics *reg, char **err);

/* Frees <az>. NULL-safe. */
void proxy_authz_free(struct proxy_authz *az);

/* Checks every policy of <c> (whatever workload it selects) as proxy_authz_new compiles it.
 * Returns 0 or SC_ECONFIG with a new message in <*err>. */
int proxy_authz_check(const struct proxy_authz_cfg *c, char **err);

/* What needs more than the head to compute: tells the caller which attributes to gather. */
enum {
    PROXY_AZ_NEED_REMOTE = 1 << 0, /* remote.ip / remote_ip_blocks */
    PROXY_AZ_NEED_DEST = 1 << 1,   /* destination.ip / destination.port / ports */
    PROXY_AZ_NEED_PEER = 1 << 2,   /* principals, namespaces, source.* identity keys */
    PROXY_AZ_NEED_SNI = 1 << 3,
    PROXY_AZ_NEED_HOST = 1 << 4, /* hosts / not_hosts: the normalised Host */
};
unsigned proxy_authz_needs(const struct proxy_authz *az);

/* An IP address as policies compare it (IPv4-mapped IPv6 taken as IPv4). */
struct proxy_az_ip {
    int fam; /* AF_INET, AF_INET6; 0: unknown */
    uint8_t a[16];
};

/* Parses text address <s> ("10.1.2.3", "::1") into <ip>. Returns 0 or -1. */
int proxy_az_ip_parse(struct sc_str s, struct proxy_az_ip *ip);
/* The same for a socket address. */
void proxy_az_ip_from_sa(const struct sockaddr_storage *ss, struct proxy_az_ip *ip);

/* A CIDR block ("10.0.0.0/8", "fd00::/8"; a bare address is a /32 or /128). */
struct proxy_cidr {
    int fam;
    int bits;
    uint8_t a[16];
};

/* Parses <s> into <out>. Returns 0, or SC_ECONFIG with a new message in <*err>. */
int proxy_cidr_parse(const char *s, struct proxy_cidr *out, char **err);

/* Whether <ip> lies in block <c> (of the same family). */
static inline bool proxy_cidr_match(const struct proxy_cidr *c, const struct proxy_az_ip *ip)
{
    if (ip->fam != c->fam) {
        return false;
    }
    int full = c->bits / 8, rest = c->bits % 8;
    for (int i = 0; i < full; i++) { /* a few bytes: a call to memcmp costs more */
        if (ip->a[i] != c->a[i]) {
            return false;
        }
    }
    if (rest) {
        uint8_t mask = (uint8_t)(0xff << (8 - rest));
        return (ip->a[full] & mask) == (c->a[full] & mask);
    }
    return true;
}

/* The request identity from a verified JWT (RequestAuthentication), borrowed. */
struct proxy_az_auth {
    struct sc_str principal; /* "<iss>/<sub>" */
    struct sc_str presenter; /* azp */
    /* Looks up a claim by path (<n> names, nested objects) and calls <cb> with each string
     * value it holds (an array: each string element). Returns 0, or -1 when absent. */
    int (*claim)(const void *ctx, const struct sc_str *path, size_t n,
                 bool (*cb)(void *arg, struct sc_str v), void *arg);
    const void *ctx;
};

/* What evaluation keeps per connection (struct proxy_client holds one): which rules the
 * connection's own attributes (source address, peer principal and namespace, SNI, destination)
 * already rule out, for the evaluator of generation <gen>. Filled on first use; a new evaluator
 * (a reload) refills it. Rules past the first PROXY_AZ_CONN_WORDS * 64 are never ruled out. */
#define PROXY_AZ_CONN_WORDS 8
struct proxy_az_conn {
    uint64_t gen; /* 0: empty */
    uint64_t may[PROXY_AZ_CONN_WORDS];
};

/* The request's attributes, all borrowed. Empty views: absent. */
struct proxy_az_req {
    const struct sc_http_msg *m; /* headers for request.headers[...] and X-Forwarded-For */
    struct sc_str method;
    struct sc_str path;      /* normalised, without query */
    struct sc_str host;      /* proxy_host_normalize()d */
    struct sc_str authority; /* the Host as sent (for host patterns with a port) */
    struct sc_str principal; /* the mTLS peer, "td/ns/x/sa/y" */
    struct sc_str sni;
    struct proxy_az_ip source; /* the connection's peer */
    struct proxy_az_ip remote; /* from X-Forwarded-For (unset: the source) */
    struct proxy_az_ip dest;
    int dport;
    const struct proxy_az_auth *auth; /* NULL: no verified token */
    struct proxy_az_conn *conn;       /* the connection's cache, or NULL (then nothing is kept) */
    bool tcp; /* a relayed TCP connection, no HTTP attributes (Istio's TCP rules): a DENY policy
                 ignores the HTTP-only fields of its rules (matching on the rest: more is
                 denied), a rule of any other action that has them never matches */
};

enum proxy_az_result { PROXY_AZ_RES_ALLOW, PROXY_AZ_RES_DENY };

struct proxy_az_decision {
    int result;                       /* enum proxy_az_result */
    const char *policy;               /* the policy that decided; NULL: the default */
    const char *audit;                /* the first AUDIT policy that matched, or NULL */
    const struct proxy_extauthz *ext; /* a CUSTOM policy matched: the authorizer to ask first */
    const char *custom;               /* that policy */
    const char *dry_run; /* a dry-run policy whose decision differs from the enforced one */
    bool dry_run_denied; /* what that dry run decided */
};

/* The remote address by X-Forwarded-For of <m> for <hops> trusted hops: the <hops>th address
 * from the right; <src> when <hops> is 0 or the header holds fewer addresses. */
void proxy_authz_remote_ip(const struct sc_http_msg *m, int hops, const struct proxy_az_ip *src,
                           struct proxy_az_ip *out);

/* Evaluates <rq> against <az> in Istio's order: a matching CUSTOM policy names the authorizer
 * to ask first (<d>->ext; the verdict below applies only if it allows), then a matching DENY
 * denies, then no ALLOW policy allows, a matching ALLOW allows, anything else denies. AUDIT and
 * dry-run policies only mark <d>. Counts the decision in sidecar_authz_decisions_total. */
void proxy_authz_eval(const struct proxy_authz *az, const struct proxy_az_req *rq,
                      struct proxy_az_decision *d);

/* The same decision, every policy of every list walked in order without the index: the
 * reference the indexed evaluator is tested against (and what TCP connections use). */
void proxy_authz_eval_linear(const struct proxy_authz *az, const struct proxy_az_req *rq,
                             struct proxy_az_decision *d);

/* The X-Forwarded-For hops option of <az>. */
int proxy_authz_xff_hops(const struct proxy_authz *az);

/* Registers sidecar_authz_decisions_total{policy,action,result} in <reg>, or returns the family
 * registered before (the proxy registers it at start, so it is exported before any policy). */
struct sc_metric_family *proxy_authz_metrics(struct sc_metrics *reg);

#endif

// SPDX-License-Identifier: Apache-2.0
// The compiled form of AuthorizationPolicy, shared by the compiler and the linear evaluator
// (proxy_authz.c) and the index that narrows evaluation to the rules a request can match
// (proxy_authz_index.c). Private to those two files and their tests. Key invariant: the index
// only ever removes rules that cannot match, so a decision through it is the linear decision.
#ifndef SC_ROLES_PROXY_PROXY_AUTHZ_INT_H
#define SC_ROLES_PROXY_PROXY_AUTHZ_INT_H

#include "roles/proxy/proxy_authz.h"

#define AZ_MAX_CLAIM_DEPTH 8 /* request.auth.claims[a][b]...: levels */

enum { M_EXACT, M_PREFIX, M_SUFFIX, M_ANY, M_TEMPLATE };

struct az_str {
    char *s; /* the literal part (M_TEMPLATE: the whole template) */
    size_t len;
    int kind;
    bool port; /* a host pattern with a port: compared with the authority */
};

struct az_strs {
    struct az_str *v;
    size_t n;
};

struct az_cidrs {
    struct proxy_cidr *v;
    size_t n;
};

struct az_ports {
    int *v;
    size_t n;
};

/* Which field groups a source or an operation sets: matching looks at those only (most rules
 * set one or two of ten). */
enum { G_PRINC = 1, G_RPRINC = 2, G_NS = 4, G_IP = 8, G_RIP = 16 };
enum { G_HOST = 1, G_METHOD = 2, G_PATH = 4, G_PORT = 8 };

struct az_src {
    unsigned set;
    struct az_strs principals, not_principals, rprincipals, not_rprincipals, ns, not_ns;
    struct az_cidrs ip, not_ip, rip, not_rip;
};

struct az_op {
    unsigned set;
    struct az_strs hosts, not_hosts, methods, not_methods, paths, not_paths;
    struct az_ports ports, not_ports;
};

enum {
    K_HEADER,
    K_SOURCE_IP,
    K_REMOTE_IP,
    K_SOURCE_NS,
    K_SOURCE_PRINCIPAL,
    K_AUTH_PRINCIPAL,
    K_AUTH_AUDIENCES,
    K_AUTH_PRESENTER,
    K_AUTH_CLAIMS,
    K_DEST_IP,
    K_DEST_PORT,
    K_SNI,
};

struct az_cond {
    int key;
    char *arg; /* K_HEADER: the header name */
    struct sc_str claim[AZ_MAX_CLAIM_DEPTH];
    size_t nclaim;
    struct az_strs values, not_values;
    struct az_cidrs cvalues, not_cvalues;
    struct az_ports pvalues, not_pvalues;
};

struct az_rule {
    struct az_src *from;
    size_t nfrom;
    struct az_op *to;
    size_t nto;
    struct az_cond *when;
    size_t nwhen;
};

enum { R_ALLOWED, R_DENIED, R_AUDITED, R_DRY_ALLOWED, R_DRY_DENIED, R_COUNT };

struct az_policy {
    char *name;
    size_t provider; /* CUSTOM: index in extension_providers */
    int action;
    bool dry_run;
    struct az_rule *rules;
    size_t nrules;
    struct sc_metric *m[R_COUNT];
};

/* Policy lists walked by evaluation: the enforced ones by action, and the dry-run ones. */
enum { L_CUSTOM, L_DENY, L_AUDIT, L_ALLOW, L_DRY, L_COUNT };

/* Method classes the index keys rules by; AZ_MC_OTHER: any other method (compared in full). */
enum {
    AZ_MC_GET,
    AZ_MC_HEAD,
    AZ_MC_POST,
    AZ_MC_PUT,
    AZ_MC_DELETE,
    AZ_MC_PATCH,
    AZ_MC_OPTIONS,
    AZ_MC_CONNECT,
    AZ_MC_TRACE,
    AZ_MC_OTHER,
    AZ_MC_COUNT
};

struct az_seg {
    const char *s; /* a first path segment (borrowed from a compiled pattern) */
    size_t len;
    uint64_t hash;
    uint64_t *bits; /* rules this segment may match: the unkeyed ones and those keyed by it */
};

/* The rules of the evaluated lists numbered in evaluation order (L_DRY, L_CUSTOM, L_DENY,
 * L_AUDIT, L_ALLOW), each list's rules contiguous and in policy order, and for each attribute a
 * bitset of the rules a request with that attribute can still match. */
struct az_index {
    size_t nrules;
    size_t words;                 /* 64-bit words of a rule bitset */
    const struct az_rule **rule;  /* rule number -> rule */
    const struct az_policy **pol; /* rule number -> its policy */
    size_t start[L_COUNT + 1]; /* the rules of the list at position o of the order: from start[o] */
    uint64_t *method[AZ_MC_COUNT]; /* by the request's method class */
    uint64_t *path_any;            /* rules with no first segment required (or none known) */
    struct az_seg *seg;            /* open addressing, nseg_slots a power of two */
    size_t nseg_slots;
    bool conn;       /* some rule tests connection attributes */
    uint64_t *store; /* every bitset above, one allocation */
};

struct proxy_authz {
    struct az_policy *pol;
    size_t npol;
    const struct az_policy **list[L_COUNT];
    struct proxy_extauthz **ext; /* extension_providers, compiled */
    size_t next;
    size_t nlist[L_COUNT];
    bool has_dry_allow; /* a dry-run ALLOW policy applies */
    unsigned needs;
    int xff_hops;
    uint64_t gen; /* unique per evaluator: per-connection caches key on it */
    struct az_index ix;
    struct sc_metric *m_default[R_COUNT]; /* decisions no policy took (policy="") */
};

/* What of a rule to match: all of it, or only the attributes a connection fixes (its source
 * address, peer principal and namespace, SNI, destination address and port). */
enum { AZ_MATCH_ALL, AZ_MATCH_CONN };

/* Whether rule <r> matches <rq>, in full or (AZ_MATCH_CONN) in its connection attributes only:
 * a rule that fails those fails every request on the connection. */
bool proxy_az_rule_match(const struct az_rule *r, const struct proxy_az_req *rq, int what);

/* Whether <r> tests any connection attribute (AZ_MATCH_CONN can fail for it). */
bool proxy_az_rule_has_conn(const struct az_rule *r);

/* Dry-run policy <p> matched: marks <d> with the first DENY and counts it, counts the first
 * ALLOW (<*allow_hit>). After the dry-run list, proxy_az_dry_end marks a dry-run denial when
 * dry-run ALLOW policies apply and none matched. Shared by both evaluators. */
void proxy_az_dry_mark(struct proxy_az_decision *d, const struct az_policy *p, bool *allow_hit);
void proxy_az_dry_end(const struct proxy_authz *az, struct proxy_az_decision *d, bool allow_hit);

/* Builds <az>'s index from its lists; frees it. */
void proxy_az_index_build(struct proxy_authz *az);
void proxy_az_index_free(struct az_index *ix);

/* The method class of <m>. */
int proxy_az_method_class(struct sc_str m);

#endif

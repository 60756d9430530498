// SPDX-License-Identifier: Apache-2.0
// TLS in the proxy (see proxy_tls.h): options, the shared certificate stores, and the two hooks of
// the data path. Stores are kept in one list, keyed by the options they were built from (as the
// /config dump prints them), so the snapshots of successive reloads share a store while its
// options stay the same: the watch goes on, ticket keys survive, and a certificate rotated on disk
// reaches every listener that names it. A snapshot counts its uses of a store; the main loop frees
// the stores no snapshot counts after each reload.
#include <limits.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/list.h"
#include "core/log.h"
#include "net/addr.h"
#include "net/http1.h"
#include "roles/proxy/proxy_conn.h"
#include "roles/proxy/proxy_h2.h"
#include "roles/proxy/proxy_hsink.h"
#include "roles/proxy/proxy_tcp.h"
#include "roles/proxy/proxy_tls.h"

static const char *const mtls_modes[] = { "unset", "strict", "permissive", "disable", NULL };
static const char *const xfcc_modes[] = { "auto",           "sanitize",     "forward_only",
                                          "append_forward", "sanitize_set", NULL };
static const char *const utls_modes[] = { "auto", "disable", "simple", "mutual", "mesh", NULL };
static const char *const directions[] = { "inbound", "outbound", NULL };

const struct sc_opt proxy_listener_tls_opts[] = {
    { .name = "tls",
      .type = SC_OPT_OBJ,
      .offset = offsetof(struct proxy_listener_tls_cfg, tls),
      .help = "terminate TLS with certificates of the listener's own (docs/tls.md)",
      .sub = sc_tls_server_opt_table },
    { .name = "mtls",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct proxy_listener_tls_cfg, mtls),
      .def = "unset",
      .help = "strict (TLS only), permissive (TLS and plaintext on one port, told apart by the "
              "first bytes) or disable; unset: strict with tls certificates, permissive on an "
              "inbound listener when the workload has an identity, else disable",
      .enums = mtls_modes },
    { .name = "forward_client_cert",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct proxy_listener_tls_cfg, forward_client_cert),
      .def = "auto",
      .help = "X-Forwarded-Client-Cert to the app: sanitize, forward_only, append_forward or "
              "sanitize_set; auto: sanitize_set when client certificates are verified, else "
              "sanitize",
      .enums = xfcc_modes },
    { .name = "direction",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct proxy_listener_tls_cfg, direction),
      .def = "inbound",
      .help = "inbound (traffic to this workload: mesh mTLS applies) or outbound (from the app)",
      .enums = directions },
    { 0 },
};

static const struct sc_opt cluster_tls_opts[] = {
    { .name = "mode",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct proxy_cluster_tls_cfg, mode),
      .def = "auto",
      .help = "disable, simple (verify the server), mutual (and present cert/key) or mesh (mutual "
              "TLS with the workload's identity); auto: mutual with a cert, simple with any other "
              "tls option, else disable",
      .enums = utls_modes },
    { .type = SC_OPT_INLINE,
      .offset = offsetof(struct proxy_cluster_tls_cfg, o),
      .sub = sc_tls_client_opt_table },
    { 0 },
};

const struct sc_opt proxy_cluster_tls_opts[] = {
    { .name = "tls",
      .type = SC_OPT_OBJ,
      .offset = 0,
      .help = "originate TLS to the endpoints (docs/tls.md)",
      .sub = cluster_tls_opts },
    { 0 },
};

const struct sc_opt proxy_identity_opts[] = {
    { .name = "cert",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_identity_cfg, cert),
      .help = "the workload's certificate (PEM, chain allowed): one URI SAN, its SPIFFE ID" },
    { .name = "key",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_identity_cfg, key),
      .help = "its private key (PEM)" },
    { .name = "ca",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_identity_cfg, ca),
      .help = "the trust bundle that verifies peers (PEM)" },
    { .name = "trust_domain",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_identity_cfg, trust_domain),
      .def = "cluster.local",
      .help = "peers of mesh clusters must have SPIFFE IDs in this trust domain" },
    { 0 },
};

const struct sc_opt proxy_tls_flag_opts[] = {
    { .name = "tls_cert",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_tls_flags, tls_cert),
      .help = "quick start: terminate TLS on --listen with this certificate (PEM)",
      .flags = SC_OPT_FLAG_ONLY },
    { .name = "tls_key",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_tls_flags, tls_key),
      .help = "quick start: the private key of --tls-cert",
      .flags = SC_OPT_FLAG_ONLY },
    { .name = "tls_client_ca",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_tls_flags, tls_client_ca),
      .help = "quick start: require client certificates verified by this CA (mutual TLS)",
      .flags = SC_OPT_FLAG_ONLY },
    { .name = "mtls",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct proxy_tls_flags, mtls),
      .def = "unset",
      .help = "quick start: strict or permissive (TLS and plaintext on one port) for --listen",
      .flags = SC_OPT_FLAG_ONLY,
      .enums = mtls_modes },
    { .name = "upstream_tls",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct proxy_tls_flags, upstream_tls),
      .def = "false",
      .help = "quick start: originate TLS to --upstream (verified against the system store or "
              "--upstream-ca)",
      .flags = SC_OPT_FLAG_ONLY },
    { .name = "upstream_ca",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_tls_flags, upstream_ca),
      .help = "quick start: CA bundle verifying --upstream (implies --upstream-tls)",
      .flags = SC_OPT_FLAG_ONLY },
    { .name = "upstream_cert",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_tls_flags, upstream_cert),
      .help = "quick start: client certificate for --upstream (mutual TLS)",
      .flags = SC_OPT_FLAG_ONLY },
    { .name = "upstream_key",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_tls_flags, upstream_key),
      .help = "quick start: the private key of --upstream-cert",
      .flags = SC_OPT_FLAG_ONLY },
    { .name = "upstream_sni",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_tls_flags, upstream_sni),
      .help = "quick start: server name sent to --upstream (and verified when no --upstream-san)",
      .flags = SC_OPT_FLAG_ONLY },
    { .name = "upstream_san",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct proxy_tls_flags, upstream_san),
      .help = "quick start: a DNS name or SPIFFE ID --upstream must present (repeatable)",
      .flags = SC_OPT_FLAG_ONLY },
    { .name = "identity_dir",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_tls_flags, identity_dir),
      .help = "a directory holding the identity as tls.crt, tls.key and ca.crt (cert-manager's "
              "CSI driver and Kubernetes TLS secrets); used when identity: is not set",
      .flags = SC_OPT_FLAG_ONLY },
    { .name = "trust_domain",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_tls_flags, trust_domain),
      .help = "the identity's trust domain (overrides identity.trust_domain)",
      .flags = SC_OPT_FLAG_ONLY },
    { 0 },
};

/* The workload's identity: identity:, else the files of --identity-dir (<buf> holds the paths),
 * with --trust-domain over the file's. */
struct identity_paths {
    char cert[PATH_MAX], key[PATH_MAX], ca[PATH_MAX];
};

static struct proxy_identity_cfg identity_of(const struct proxy_cfg *cfg,
                                             struct identity_paths *buf)
{
    struct proxy_identity_cfg id = cfg->identity;
    const char *dir = cfg->tls_flags.identity_dir;
    if (!id.cert && !id.key && !id.ca && dir) {
        snprintf(buf->cert, sizeof(buf->cert), "%s/tls.crt", dir);
        snprintf(buf->key, sizeof(buf->key), "%s/tls.key", dir);
        snprintf(buf->ca, sizeof(buf->ca), "%s/ca.crt", dir);
        id.cert = buf->cert;
        id.key = buf->key;
        id.ca = buf->ca;
    }
    if (cfg->tls_flags.trust_domain) {
        id.trust_domain = cfg->tls_flags.trust_domain; /* a flag overrides the file */
    }
    return id;
}

/* ---- checks ---- */

static bool server_has_cert(const struct sc_tls_server_opts *o)
{
    return o->cert || o->certificates.n > 0;
}

static bool identity_set(const struct proxy_identity_cfg *id)
{
    return id->cert || id->key || id->ca;
}

int proxy_tls_check(const struct proxy_cfg *cfg, char **err)
{
    struct identity_paths paths;
    struct proxy_identity_cfg idc = identity_of(cfg, &paths);
    const struct proxy_identity_cfg *id = &idc;
    if (identity_set(id) && !(id->cert && id->key && id->ca)) {
        *err = sc_asprintf("identity: cert, key and ca go together");
        return SC_ECONFIG;
    }
    const struct proxy_tls_flags *f = &cfg->tls_flags;
    if ((f->tls_cert != NULL) != (f->tls_key != NULL)) {
        *err = sc_asprintf("--tls-cert and --tls-key go together");
        return SC_ECONFIG;
    }
    if ((f->upstream_cert != NULL) != (f->upstream_key != NULL)) {
        *err = sc_asprintf("--upstream-cert and --upstream-key go together");
        return SC_ECONFIG;
    }
    if ((f->tls_client_ca || f->mtls == PROXY_MTLS_STRICT || f->mtls == PROXY_MTLS_PERMISSIVE) &&
        !f->tls_cert && !identity_set(id)) {
        *err = sc_asprintf("--tls-client-ca and --mtls need --tls-cert and --tls-key");
        return SC_ECONFIG;
    }
    const struct proxy_listener_cfg *ls = cfg->listeners.v;
    for (size_t i = 0; i < cfg->listeners.n; i++) {
        const struct proxy_listener_tls_cfg *t = &ls[i].tlscfg;
        bool own = server_has_cert(&t->tls);
        if ((t->mtls == PROXY_MTLS_STRICT || t->mtls == PROXY_MTLS_PERMISSIVE) && !own &&
            !identity_set(id)) {
            *err = sc_asprintf("listener \"%s\": mtls %s needs tls certificates or an identity",
                               ls[i].name, mtls_modes[t->mtls]);
            return SC_ECONFIG;
        }
    }
    const struct proxy_cluster_cfg *cs = cfg->clusters.v;
    for (size_t i = 0; i < cfg->clusters.n; i++) {
        if (cs[i].tlscfg.mode == PROXY_UTLS_MESH && !identity_set(id)) {
            *err = sc_asprintf("cluster \"%s\": tls mode mesh needs the top-level identity",
                               cs[i].name);
            return SC_ECONFIG;
        }
        if (cs[i].tlscfg.mode == PROXY_UTLS_MUTUAL && !cs[i].tlscfg.o.cert) {
            *err = sc_asprintf("cluster \"%s\": tls mode mutual needs cert and key", cs[i].name);
            return SC_ECONFIG;
        }
    }
    return 0;
}

/* ---- stores, shared by snapshots ---- */

struct proxy_tls_src {
    struct sc_list node;
    struct sc_tls_store *store;
    char *key;       /* the options it was built from, as JSON */
    char *name;      /* the first listener or cluster that used it (metric labels) */
    atomic_int refs; /* snapshot listeners and clusters using it */
    bool watching;
};

/* Every store, on the main loop only. */
static struct sc_list srcs = { &srcs, &srcs };

static char *opts_key(const struct sc_opt *table, const void *o, bool server)
{
    json_t *j = sc_config_dump(table, o);
    json_object_set_new(j, "server", json_boolean(server));
    char *s = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT); /* sc_free releases it */
    json_decref(j);
    return s;
}

/* Finds or builds the store for options <o>. Returns a source with a new reference, or NULL with a
 * new message in <*err>. */
static struct proxy_tls_src *src_get(const char *name, const void *o, bool server, char **err)
{
    char *key = opts_key(server ? sc_tls_server_opt_table : sc_tls_client_opt_table, o, server);
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &srcs)
    {
        struct proxy_tls_src *s = sc_list_entry(pos, struct proxy_tls_src, node);
        if (strcmp(s->key, key) == 0) {
            sc_free(key);
            atomic_fetch_add(&s->refs, 1);
            return s;
        }
    }
    char *e = NULL;
    struct sc_tls_store *st =
        server ? sc_tls_store_new_server(o, name, &e) : sc_tls_store_new_client(o, name, &e);
    if (!st) {
        *err = sc_asprintf("%s: tls: %s", name, e ? e : "cannot build the TLS context");
        sc_free(e);
        sc_free(key);
        return NULL;
    }
    struct proxy_tls_src *s = SC_NEW(struct proxy_tls_src);
    s->store = st;
    s->key = key;
    s->name = sc_strdup(name);
    atomic_init(&s->refs, 1);
    sc_list_append(&srcs, &s->node);
    return s;
}

static void src_release(struct proxy_tls_src *s)
{
    if (s) {
        atomic_fetch_sub(&s->refs, 1);
    }
}

static void src_free(struct proxy_tls_src *s)
{
    sc_list_remove(&s->node);
    sc_tls_store_free(s->store);
    sc_free(s->key);
    sc_free(s->name);
    sc_free(s);
}

void proxy_tls_watch(struct proxy *px)
{
    uv_loop_t *loop = sc_app_loop(px->app);
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &srcs)
    {
        struct proxy_tls_src *s = sc_list_entry(pos, struct proxy_tls_src, node);
        if (atomic_load(&s->refs) == 0) {
            src_free(s);
        } else if (!s->watching) {
            int rc = sc_tls_store_watch(s->store, loop, 0);
            if (rc < 0) {
                sc_warn("tls: cannot watch the certificate files", SC_LS("name", s->name),
                        SC_LERR(rc));
            }
            s->watching = rc == 0;
        }
    }
}

void proxy_tls_shutdown(void)
{
    while (!sc_list_empty(&srcs)) {
        src_free(sc_list_entry(srcs.next, struct proxy_tls_src, node));
    }
}

/* ---- listeners and clusters of a snapshot ---- */

static const char *const hs_labels[] = { "listener", "result", NULL };
static const char *const exp_labels[] = { "listener", "cert", NULL };

void proxy_tls_metrics_init(struct proxy_metrics *pm)
{
    pm->tls_hs = sc_metrics_family(pm->reg, SC_METRIC_COUNTER, "sidecar_tls_handshakes_total",
                                   "TLS handshakes on a listener, by result (ok or the reason it "
                                   "failed: unknown_ca, expired, bad_san, no_client_cert, "
                                   "protocol_version, not_tls, ...).",
                                   hs_labels, NULL, 0);
    pm->tls_expiry = sc_metrics_family(
        pm->reg, SC_METRIC_GAUGE, "sidecar_tls_cert_expiry_timestamp_seconds",
        "When each certificate a listener or cluster presents expires (Unix time), by the "
        "listener or cluster and the certificate's name.",
        exp_labels, NULL, 0);
    static const char *const rl_labels[] = { "listener", "layer", NULL };
    pm->tls_records = sc_metrics_family(
        pm->reg, SC_METRIC_COUNTER, "sidecar_tls_record_layer_total",
        "Downstream TLS connections after their handshake, by who carries their records: native "
        "(the proxy, TLS 1.3 with tls.record_layer native) or openssl.",
        rl_labels, NULL, 0);
    static const char *const uhs_labels[] = { "cluster", "result", NULL };
    pm->utls_hs = sc_metrics_family(
        pm->reg, SC_METRIC_COUNTER, "sidecar_upstream_tls_handshakes_total",
        "TLS handshakes to a cluster's endpoints, by result (ok, or why they failed; bad_san also "
        "for a mesh peer outside the trust domain).",
        uhs_labels, NULL, 0);
    static const char *const url_labels[] = { "cluster", "layer", NULL };
    pm->utls_records = sc_metrics_family(
        pm->reg, SC_METRIC_COUNTER, "sidecar_upstream_tls_record_layer_total",
        "Upstream TLS connections closed after their handshake, by who carried their records "
        "last: native (the proxy, TLS 1.3 with tls.record_layer native, from the server's "
        "session tickets on) or openssl.",
        url_labels, NULL, 0);
}

void proxy_tls_collect(struct proxy_metrics *pm)
{
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &srcs)
    {
        struct proxy_tls_src *s = sc_list_entry(pos, struct proxy_tls_src, node);
        struct sc_tls_cert_info ci[8];
        size_t n = sc_tls_store_certs(s->store, ci, SC_ARRAY_LEN(ci));
        for (size_t i = 0; i < n && i < SC_ARRAY_LEN(ci); i++) {
            const char *v[] = { s->name, ci[i].name };
            sc_metrics_gauge_set(sc_metrics_get(pm->tls_expiry, v), (double)ci[i].not_after);
        }
    }
}

/* The protocols an HTTP listener's server may select by ALPN: its `alpn` list without h2 (and h2c),
 * which the HTTP/1 codec cannot serve. An Envoy-style `[h2, http/1.1]` list then lets clients that
 * offer both fall back to HTTP/1.1 rather than getting HTTP/1 bytes on an HTTP/2 connection. <v>
 * has room for the list (at most 16 entries, as its option says). */
/* The protocols an HTTP listener offers by ALPN, into <alpn> (room in <v> for 16). A listener
 * that serves HTTP/2 offers "h2, http/1.1" when its tls.alpn is not set (what Envoy's users
 * configure and browsers and gRPC clients expect) and keeps h2 when it is; one with http2
 * disabled never selects h2, which its HTTP/1 codec would answer with HTTP/1 bytes. TCP
 * listeners relay bytes and keep their list as it is. */
static void http_listener_alpn(const char *lname, const struct proxy_listener_cfg *lc,
                               struct sc_strv *alpn, char **v)
{
    if (lc->icpt.protocol != PROXY_LP_HTTP) {
        return;
    }
    if (alpn->n == 0 && lc->http2.enabled) {
        v[0] = "h2";
        v[1] = "http/1.1";
        alpn->v = v;
        alpn->n = lc->http2.only ? 1 : 2; /* an HTTP/2-only listener offers h2 alone */
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < alpn->n && n < 16; i++) {
        bool h2 = strcmp(alpn->v[i], "h2") == 0 || strcmp(alpn->v[i], "h2c") == 0;
        if (h2 && (!lc->http2.enabled || strcmp(alpn->v[i], "h2c") == 0)) {
            sc_warn("tls: HTTP/2 is disabled on this listener (http2.enabled); ALPN protocol not "
                    "offered",
                    SC_LS("listener", lname), SC_LS("alpn", alpn->v[i]));
            continue;
        }
        v[n++] = alpn->v[i];
    }
    alpn->v = v;
    alpn->n = n;
}

int proxy_tls_listener_init(struct proxy_listener_tls *out, const char *lname,
                            const struct proxy_listener_cfg *lc, bool quick_inbound,
                            const struct proxy_cfg *cfg, struct proxy_metrics *pm, char **err)
{
    memset(out, 0, sizeof(*out));
    struct identity_paths paths;
    struct proxy_identity_cfg idc = identity_of(cfg, &paths);
    const struct proxy_identity_cfg *id = &idc;
    const struct proxy_tls_flags *f = &cfg->tls_flags;
    struct sc_tls_server_opts o;
    memset(&o, 0, sizeof(o));
    /* The quick-start flags and the identity get the options' defaults (files watched, session
     * cache); a configured listener's tls: has its own values. Nothing here allocates. */
    sc_config_defaults(sc_tls_server_opt_table, &o);
    int mode = PROXY_MTLS_UNSET, xfcc = PROXY_XFCC_AUTO;
    bool inbound = quick_inbound;
    char *alpn[16];
    if (lc) {
        o = lc->tlscfg.tls;
        http_listener_alpn(lname, lc, &o.alpn, alpn);
        mode = lc->tlscfg.mtls;
        xfcc = lc->tlscfg.forward_client_cert;
        inbound = lc->tlscfg.direction == 0;
    } else if (quick_inbound && f->tls_cert) {
        o.cert = f->tls_cert;
        o.key = f->tls_key;
        o.client_ca = f->tls_client_ca;
        mode = f->mtls;
    } else if (quick_inbound) {
        mode = f->mtls;
    }
    bool own = server_has_cert(&o);
    if (!own && identity_set(id) && inbound && mode != PROXY_MTLS_DISABLE) {
        /* Mesh mTLS: the workload's identity, peers verified against the trust bundle. */
        o.cert = id->cert;
        o.key = id->key;
        o.client_ca = id->ca;
        o.client_cert = SC_TLS_CLIENT_CERT_REQUIRE;
        own = true;
        if (mode == PROXY_MTLS_UNSET) {
            /* The workload's PeerAuthentication decides (PERMISSIVE when none does). */
            struct proxy_workload wl;
            int rc = proxy_workload_init(&wl, &cfg->workload, err);
            if (rc < 0) {
                return rc;
            }
            proxy_pa_resolve(cfg->peer_authentication.v, cfg->peer_authentication.n, &wl,
                             cfg->mesh_root_namespace ? cfg->mesh_root_namespace : "istio-system",
                             &out->pa);
            proxy_workload_cleanup(&wl);
            mode = out->pa.mode;
            out->by_port = out->pa.nports > 0;
        }
    }
    out->mode = !own ? PROXY_MTLS_DISABLE : mode == PROXY_MTLS_UNSET ? PROXY_MTLS_STRICT : mode;
    if (out->mode == PROXY_MTLS_DISABLE && !out->by_port) {
        out->xfcc = xfcc == PROXY_XFCC_AUTO ? PROXY_XFCC_SANITIZE : xfcc;
        return 0;
    }
    out->verifies = o.client_ca != NULL && o.client_cert != SC_TLS_CLIENT_CERT_NONE;
    out->xfcc = xfcc != PROXY_XFCC_AUTO ? xfcc
                : out->verifies         ? PROXY_XFCC_SANITIZE_SET
                                        : PROXY_XFCC_SANITIZE;
    out->src = src_get(lname, &o, true, err);
    if (!out->src) {
        return SC_ECONFIG;
    }
    for (int r = 0; r <= SC_TLS_FAIL_PROTOCOL; r++) {
        const char *v[] = { lname, r == SC_TLS_FAIL_NONE ? "ok" : sc_tls_fail_name(r) };
        out->m_hs[r] = sc_metrics_get(pm->tls_hs, v);
    }
    for (int i = 0; i < 2; i++) {
        const char *v[] = { lname, i ? "native" : "openssl" };
        out->m_records[i] = sc_metrics_get(pm->tls_records, v);
    }
    return 0;
}

int proxy_tls_cluster_init(struct proxy_cluster_tls *out, const char *cname,
                           const struct proxy_cluster_cfg *cc, const struct proxy_cfg *cfg,
                           struct proxy_metrics *pm, char **err)
{
    memset(out, 0, sizeof(*out));
    const struct proxy_tls_flags *f = &cfg->tls_flags;
    struct sc_tls_client_opts o;
    memset(&o, 0, sizeof(o));
    sc_config_defaults(sc_tls_client_opt_table, &o); /* as for listeners: nothing allocated */
    int mode = PROXY_UTLS_AUTO;
    if (cc) {
        o = cc->tlscfg.o;
        mode = cc->tlscfg.mode;
    } else if (f->upstream_tls || f->upstream_ca || f->upstream_cert || f->upstream_sni ||
               f->upstream_san.n) {
        o.ca = f->upstream_ca;
        o.cert = f->upstream_cert;
        o.key = f->upstream_key;
        o.sni = f->upstream_sni;
        o.subject_alt_names = f->upstream_san;
        mode = PROXY_UTLS_SIMPLE;
    }
    if (mode == PROXY_UTLS_AUTO) {
        mode = o.cert ? PROXY_UTLS_MUTUAL
               : o.ca || o.sni || o.subject_alt_names.n || o.alpn.n || o.insecure_skip_verify
                   ? PROXY_UTLS_SIMPLE
                   : PROXY_UTLS_DISABLE;
    }
    if (mode == PROXY_UTLS_DISABLE) {
        return 0;
    }
    char *mesh_alpn[18];
    proxy_h2_up_alpn(cc, &o.alpn); /* h2 offered to a cluster that speaks HTTP/2 */
    if (mode == PROXY_UTLS_MESH) {
        /* Workloads are known by SPIFFE IDs, not host names: the chain must lead to the trust
         * bundle and the ID be in the trust domain (or one of subject_alt_names). */
        struct identity_paths paths;
        struct proxy_identity_cfg id = identity_of(cfg, &paths);
        o.cert = id.cert;
        o.key = id.key;
        o.ca = id.ca;
        out->mesh = true;
        snprintf(out->trust_domain, sizeof(out->trust_domain), "%s",
                 id.trust_domain ? id.trust_domain : "cluster.local");
        /* Istio's mesh ALPN after the application's protocols (h2): a PERMISSIVE inbound tells
         * the mesh's TLS from an application's own by it; a server that knows neither ignores
         * it */
        size_t n = 0;
        for (size_t i = 0; i < o.alpn.n && n < SC_ARRAY_LEN(mesh_alpn) - 2; i++) {
            mesh_alpn[n++] = o.alpn.v[i];
        }
        mesh_alpn[n++] = (char *)"istio-peer-exchange";
        mesh_alpn[n++] = (char *)"istio";
        o.alpn.v = mesh_alpn;
        o.alpn.n = n;
    }
    out->sni_from_host = o.sni == NULL && !out->mesh;
    out->src = src_get(cname, &o, false, err);
    if (!out->src) {
        return SC_ECONFIG;
    }
    for (int r = 0; r <= SC_TLS_FAIL_PROTOCOL; r++) {
        const char *v[] = { cname, r == SC_TLS_FAIL_NONE ? "ok" : sc_tls_fail_name(r) };
        out->m_hs[r] = sc_metrics_get(pm->utls_hs, v);
    }
    for (int i = 0; i < 2; i++) {
        const char *v[] = { cname, i ? "native" : "openssl" };
        out->m_records[i] = sc_metrics_get(pm->utls_records, v);
    }
    return 0;
}

void proxy_tls_listener_release(struct proxy_listener_tls *t)
{
    src_release(t->src);
    t->src = NULL;
}

void proxy_tls_cluster_release(struct proxy_cluster_tls *t)
{
    src_release(t->src);
    t->src = NULL;
}

/* ---- the data path: downstream ---- */

#define XFCC_MAX 4096

static const struct proxy_listener_tls *ltls(struct proxy_dconn *dc)
{
    struct proxy_rt *rt = dc->ex.rt ? dc->ex.rt : dc->w->rt;
    return &rt->listeners[dc->lidx].tls;
}

bool proxy_tls_mesh_alpn(const char *p)
{
    static const char *const names[] = { "istio-peer-exchange", "istio", "istio-http/1.0",
                                         "istio-http/1.1", "istio-h2" };
    for (size_t i = 0; i < SC_ARRAY_LEN(names); i++) {
        if (strcmp(p, names[i]) == 0) {
            return true;
        }
    }
    return false;
}

struct sc_tls_ctx *proxy_tls_listener_ctx(const struct proxy_listener_tls *t)
{
    return sc_tls_store_get(t->src->store);
}

/* Stacks a server TLS layer on dc's TCP transport, feeding it <pre> (bytes a sniffer read). */
static void start_tls(struct proxy_dconn *dc, struct sc_str pre)
{
    struct sc_tls_ctx *ctx = sc_tls_store_get(ltls(dc)->src->store);
    struct sc_tls_xport_args a = {
        .loop = dc->w->loop,
        .below = &dc->tx->base,
        .cbs = dc->tx->base.cbs,
        .owner = dc,
        .preread = pre,
        .handshake_cb = true,
    };
    dc->x = sc_tls_xport_new(ctx, &a);
    sc_tls_ctx_unref(ctx);
    dc->cl->tls = dc->x;
    dc->handshaking = true;
    dc->head_start_ms = uv_now(dc->w->loop);
}

void proxy_tls_accepted(struct proxy_dconn *dc)
{
    const struct proxy_listener_tls *t = ltls(dc);
    int mode = t->by_port ? proxy_pa_mode_for(&t->pa, proxy_dest_port(dc)) : t->mode;
    if (!t->src || mode == PROXY_MTLS_DISABLE) {
        return;
    }
    if (mode == PROXY_MTLS_PERMISSIVE) {
        dc->sniff = true;
        dc->head_start_ms = uv_now(dc->w->loop); /* the first bytes are due within the head
                                                    timeout */
        return;
    }
    start_tls(dc, SC_STR_NULL);
}

int proxy_tls_sniff(struct proxy_dconn *dc)
{
    size_t avail = dc->in.end - dc->in.start;
    enum sc_tls_sniff s = sc_tls_sniff(dc->in.p + dc->in.start, avail);
    if (s == SC_TLS_SNIFF_MORE) {
        return 1;
    }
    dc->sniff = false;
    if (s == SC_TLS_SNIFF_PLAIN) {
        return 0;
    }
    struct sc_str pre = sc_str_n(dc->in.p + dc->in.start, avail);
    start_tls(dc, pre); /* the layer copies the bytes */
    dc->in.start = dc->in.end = 0;
    (void)sc_xport_read_start(dc->x);
    return 1;
}

void proxy_tls_handshake_done(struct proxy_dconn *dc, int status)
{
    dc->handshaking = false;
    enum sc_tls_fail f = status < 0 ? sc_tls_xport_fail(dc->cl->tls) : SC_TLS_FAIL_NONE;
    if (status < 0 && f == SC_TLS_FAIL_NONE) {
        f = SC_TLS_FAIL_HANDSHAKE;
    }
    const struct proxy_listener_tls *t = ltls(dc);
    sc_metrics_counter_inc(t->m_hs[f]);
    if (status < 0) {
        sc_debug("tls handshake failed", SC_LS("peer", dc->cl->ip),
                 SC_LS("reason", sc_tls_fail_name(f)));
        proxy_dconn_close(dc);
        return;
    }
    bool native = false;
    (void)sc_xport_query(dc->x, SC_XQ_TLS_NATIVE, &native);
    sc_metrics_counter_inc(t->m_records[native]);
    dc->last_activity = uv_now(dc->w->loop);
    if (sc_str_eq(sc_xport_query_str(dc->x, SC_XQ_ALPN), SC_STR("h2")) &&
        dc->w->rt->listeners[dc->lidx].http2.enabled) {
        proxy_h2_start(dc);
        return;
    }
    proxy_arm_timer(dc);
}

struct sc_str proxy_tls_peer_principal(struct proxy_exch *ex)
{
    if (!ex->cl->tls) {
        return SC_STR_NULL;
    }
    struct sc_str id = sc_xport_query_str(ex->cl->tls, SC_XQ_PEER_ID);
    if (sc_str_startswith(id, SC_STR("spiffe://"))) {
        id.p += 9;
        id.len -= 9;
    }
    return id;
}

struct sc_str proxy_tls_version(struct proxy_exch *ex)
{
    return ex->cl->tls ? sc_xport_query_str(ex->cl->tls, SC_XQ_TLS_VERSION) : SC_STR_NULL;
}

bool proxy_tls_misdirected(struct proxy_exch *ex, struct sc_str host)
{
    return ex->cl->tls && host.len && sc_tls_xport_misdirected(ex->cl->tls, host);
}

/* The connection's own XFCC element, made once: hashing and formatting the certificate is too
 * much to repeat for every request of a keep-alive connection. Empty without a client
 * certificate. */
static struct sc_str own_element(struct proxy_exch *ex)
{
    struct proxy_client *cl = ex->cl;
    if (!cl->tls) {
        return SC_STR_NULL;
    }
    if (!cl->xfcc) {
        cl->xfcc = sc_malloc(XFCC_MAX);
        if (sc_tls_xport_xfcc(cl->tls, cl->xfcc, XFCC_MAX) < 0) {
            cl->xfcc[0] = '\0'; /* no verified client certificate */
        }
    }
    return sc_str_c(cl->xfcc);
}

int proxy_tls_xfcc(struct proxy_exch *ex, const struct sc_http_msg *m, struct proxy_hsink *s)
{
    int mode = ex->lsn->tls.xfcc;
    if (mode == PROXY_XFCC_SANITIZE) {
        return 0;
    }
    struct sc_str own = mode == PROXY_XFCC_FORWARD_ONLY ? SC_STR_NULL : own_element(ex);
    bool forward = mode == PROXY_XFCC_FORWARD_ONLY || mode == PROXY_XFCC_APPEND_FORWARD;
    size_t from = 0;
    const struct sc_http_header *h = NULL;
    struct sc_buf *b = NULL;
    int rc = 0;
    while (forward && (h = sc_http1_find(m, SC_STR("x-forwarded-client-cert"), &from)) != NULL) {
        if (b) {
            rc |= sc_buf_append(b, ",", 1);
        } else if ((b = proxy_hsink_open(s, SC_STR("X-Forwarded-Client-Cert"))) == NULL) {
            return SC_ETOOBIG;
        }
        rc |= sc_buf_append(b, h->value.p, h->value.len);
    }
    if (own.len) {
        if (b) {
            rc |= sc_buf_append(b, ",", 1);
        } else if ((b = proxy_hsink_open(s, SC_STR("X-Forwarded-Client-Cert"))) == NULL) {
            return SC_ETOOBIG;
        }
        rc |= sc_buf_append(b, own.p, own.len);
    }
    if (b) {
        rc |= proxy_hsink_close(s);
    }
    return rc ? SC_ETOOBIG : 0;
}

/* ---- the data path: upstream ---- */

/* Stacks cluster <c>'s TLS layer on <below> for a connection to <dest> ("ip:port" or
 * "host:port", the session key) sending <host> as SNI when the cluster has none, offering <alpn>
 * (wire format; empty: the cluster's). */
static struct sc_xport *cluster_layer(const struct proxy_cluster *c, const char *host,
                                      const char *dest, uv_loop_t *loop, struct sc_xport *below,
                                      struct sc_str alpn)
{
    const struct proxy_cluster_tls *t = &c->tls;
    char key[320];
    snprintf(key, sizeof(key), "%s|%s", c->name, dest);
    struct sc_tls_ctx *ctx = sc_tls_store_get(t->src->store);
    struct sc_tls_xport_args a = {
        .loop = loop,
        .below = below,
        .cbs = below->cbs,
        .owner = below->owner,
        .sni = t->sni_from_host ? host : NULL, /* an IP is verified, not sent */
        .session_key = key,
        .alpn = alpn,
    };
    struct sc_xport *x = sc_tls_xport_new(ctx, &a);
    sc_tls_ctx_unref(ctx);
    return x;
}

struct sc_xport *proxy_tls_cluster_layer(struct proxy_endpoint *ep, uv_loop_t *loop,
                                         struct sc_xport *below)
{
    if (!ep->cluster->tls.src) {
        return below;
    }
    return cluster_layer(ep->cluster, ep->host, ep->name, loop, below, SC_STR_NULL);
}

struct sc_xport *proxy_tls_relay_layer(const struct proxy_cluster *c,
                                       const struct proxy_endpoint *ep, const struct sockaddr *addr,
                                       uv_loop_t *loop, struct sc_xport *below)
{
    /* Istio's TCP clusters offer these two under ISTIO_MUTUAL: the peer's inbound terminates
     * the mesh's TLS by them and relays what is inside as bytes */
    static const char mesh_alpn[] = "\x13istio-peer-exchange\x05istio";
    char dest[64];
    if (!ep) {
        sc_addr_format(addr, dest, sizeof(dest));
    }
    return cluster_layer(c, ep ? ep->host : NULL, ep ? ep->name : dest, loop, below,
                         c->tls.mesh ? sc_str_n(mesh_alpn, sizeof(mesh_alpn) - 1) : SC_STR_NULL);
}

void proxy_tls_upstream(struct proxy_uconn *uc)
{
    if (uc->ep->cluster->tls.src) {
        uc->x = proxy_tls_cluster_layer(uc->ep, uc->w->loop, &uc->tx.base);
        uc->tls = uc->x;
    }
}

const char *proxy_tls_cluster_done(const struct proxy_cluster *c, struct sc_xport *x, int status,
                                   enum sc_tls_fail *fail)
{
    const struct proxy_cluster_tls *t = &c->tls;
    enum sc_tls_fail f = SC_TLS_FAIL_NONE;
    const char *bad = NULL;
    if (fail) {
        *fail = SC_TLS_FAIL_NONE;
    }
    if (status < 0) {
        f = sc_tls_xport_fail(x);
        if (f == SC_TLS_FAIL_NONE) {
            return NULL; /* the TCP connect failed: no handshake took place */
        }
        bad = sc_tls_fail_name(f);
    } else if (t->mesh) {
        struct sc_spiffe_id id;
        struct sc_str s = sc_xport_query_str(x, SC_XQ_PEER_ID);
        if (s.len == 0 || sc_tls_spiffe_parse(s, &id) < 0) {
            bad = "upstream has no SPIFFE identity";
        } else if (!sc_str_eq(id.trust_domain, sc_str_c(t->trust_domain))) {
            bad = "upstream identity is outside the trust domain";
        }
        f = bad ? SC_TLS_FAIL_BAD_SAN : SC_TLS_FAIL_NONE;
    }
    sc_metrics_counter_inc(t->m_hs[f]);
    if (fail) {
        *fail = f;
    }
    return bad;
}

void proxy_tls_cluster_closing(const struct proxy_cluster *c, struct sc_xport *x)
{
    bool native = false;
    if (!c || !c->tls.src || !sc_tls_xport_is(x) ||
        sc_xport_query_str(x, SC_XQ_TLS_VERSION).len == 0) {
        return; /* no handshake completed */
    }
    (void)sc_xport_query(x, SC_XQ_TLS_NATIVE, &native);
    sc_metrics_counter_inc(c->tls.m_records[native]);
}

const char *proxy_tls_upstream_done(struct proxy_uconn *uc, int status)
{
    return uc->tls ? proxy_tls_cluster_done(uc->ep->cluster, uc->x, status, NULL) : NULL;
}

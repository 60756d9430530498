// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for authorization on untrusted requests: the input is a request head (what
// the strict parser accepts), its target normalised as the exchange does and judged by a set of
// ALLOW, DENY and AUDIT policies over paths (prefix, suffix, templates), hosts, methods, headers
// and remote addresses by X-Forwarded-For. Invariants: a decision is always taken and names a
// policy that exists; the path it was taken on is normal (normalising it again changes nothing);
// and a decision never depends on a spelling the normaliser merges: the normalised path respelled
// (an extra "./", a doubled slash, "x/../", unreserved characters percent-encoded, hex case
// flipped) normalises back to the same path and gets the same decision; the indexed evaluator,
// with and without a connection's cache, decides as the linear walk of every policy.
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/config.h"
#include "core/metrics.h"
#include "net/http1.h"
#include "roles/proxy/proxy_authz.h"
#include "roles/proxy/proxy_normalize.h"
#include "roles/proxy/proxy_peerauth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_proxy_authz: invariant failed: %s (%s:%d)\n", #cond, __FILE__,   \
                    __LINE__);                                                                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const char config[] =
    "xff_num_trusted_hops: 1\n"
    "authorization:\n"
    "  - {name: deny-admin, action: DENY, rules: [{to: [{operation: {paths: ['/admin*', "
    "'*/secret', '/u/{*}/keys'], hosts: ['*.shop', 'shop']}}]}]}\n"
    "  - {name: deny-net, action: DENY, rules: [{from: [{source: {remote_ip_blocks: "
    "[203.0.113.0/24]}}]}]}\n"
    "  - {name: deny-outside, action: DENY, rules: [{from: [{source: {not_ip_blocks: "
    "[10.0.0.0/8]}}]}, {to: [{operation: {methods: [DELETE], paths: ['/api/*']}}]}]}\n"
    "  - {name: dry-deny, action: DENY, dry_run: true, rules: [{to: [{operation: {paths: "
    "['/dry/*', '/api/v1/x']}}]}]}\n"
    "  - {name: audit-pay, action: AUDIT, rules: [{to: [{operation: {paths: ['/pay/{**}']}}]}]}\n"
    "  - name: allow\n"
    "    rules:\n"
    "      - to: [{operation: {methods: [GET, HEAD], not_paths: ['/internal*']}}]\n"
    "      - to: [{operation: {methods: [POST], paths: ['/api/v1/charge', '/pay/{**}']}}]\n"
    "        when: [{key: 'request.headers[x-tenant]', values: ['acme', 'beta-*']}]\n";

struct doc {
    struct proxy_authz_cfg az;
};

static const struct sc_opt doc_opts[] = {
    { .type = SC_OPT_INLINE, .offset = offsetof(struct doc, az), .sub = proxy_authz_opts },
    { 0 },
};

static struct proxy_authz *az;

static void setup(void)
{
    struct doc d;
    memset(&d, 0, sizeof(d));
    char *err = NULL;
    sc_config_defaults(doc_opts, &d);
    CHECK(sc_config_load_string(doc_opts, &d, "fuzz", config, sizeof(config) - 1, &err) == 0);
    CHECK(proxy_authz_check(&d.az, &err) == 0);
    struct proxy_workload w;
    memset(&w, 0, sizeof(w));
    w.ns = "shop";
    az = proxy_authz_new(&d.az, &w, "istio-system", NULL, &err);
    CHECK(az != NULL);
    sc_config_free(doc_opts, &d);
}

static struct proxy_az_decision decide(const struct sc_http_msg *m, struct sc_str path)
{
    char host[256];
    struct proxy_az_req rq = { .m = m, .method = m->method, .path = path, .authority = m->host };
    rq.host = sc_str_n(host, proxy_host_normalize(m->host, host, sizeof(host)));
    proxy_az_ip_parse(SC_STR("10.0.0.5"), &rq.source);
    proxy_authz_remote_ip(m, 1, &rq.source, &rq.remote);
    struct proxy_az_decision d, lin, cached;
    proxy_authz_eval(az, &rq, &d);
    /* The index (with and without the connection's cache) decides as the linear walk. */
    static struct proxy_az_conn conn;
    proxy_authz_eval_linear(az, &rq, &lin);
    rq.conn = &conn;
    proxy_authz_eval(az, &rq, &cached);
    const struct proxy_az_decision *v[] = { &d, &cached };
    for (int k = 0; k < 2; k++) {
        CHECK(v[k]->result == lin.result && v[k]->policy == lin.policy &&
              v[k]->audit == lin.audit && v[k]->dry_run == lin.dry_run &&
              v[k]->dry_run_denied == lin.dry_run_denied);
    }
    return d;
}

static bool unreserved(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* Respells normal path <p> into <out> by <seed>: the same path once normalised. */
static size_t respell(struct sc_str p, uint32_t seed, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < p.len; i++) {
        char c = p.p[i];
        uint32_t r = (seed >> (i % 29)) & 7;
        seed = seed * 1103515245u + 12345u;
        if (c == '%' && i + 2 < p.len) {
            memcpy(out + o, p.p + i, 3); /* an escape the normaliser kept stays as it is */
            o += 3;
            i += 2;
        } else if (c == '/') {
            out[o++] = '/';
            if (r == 1) {
                out[o++] = '.';
                out[o++] = '/';
            } else if (r == 2) {
                out[o++] = '/';
            } else if (r == 3 && i + 1 < p.len) {
                memcpy(out + o, "zz/../", 6);
                o += 6;
            }
        } else if (unreserved(c) && r >= 6) {
            static const char hex[] = "0123456789abcdef", HEX[] = "0123456789ABCDEF";
            const char *h = r == 6 ? hex : HEX;
            out[o++] = '%';
            out[o++] = h[(unsigned char)c >> 4];
            out[o++] = h[c & 15];
        } else {
            out[o++] = c;
        }
    }
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!az) {
        setup();
    }
    if (size < 4 || size > 16384) {
        return 0;
    }
    uint32_t seed;
    memcpy(&seed, data, 4);
    const char *buf = (const char *)data + 4;
    size_t len = size - 4;
    struct sc_http_header hdrs[64];
    struct sc_http_msg m = { .headers = hdrs };
    struct sc_http_error herr;
    struct sc_http_limits lim = sc_http1_default_limits;
    if (sc_http1_parse_request(buf, len, 0, &lim, &m, 64, &herr) <= 0) {
        return 0;
    }
    struct sc_str t = m.target;
    if (t.len == 0 || t.p[0] != '/') {
        return 0;
    }
    char *norm = malloc(t.len);
    size_t olen, plen;
    const char *why;
    int rc = proxy_normalize_target(t, PROXY_PN_DECODE_MERGE, PROXY_ES_REJECT, norm, t.len, &olen,
                                    &plen, &why);
    if (rc < 0) {
        free(norm);
        return 0;
    }
    struct sc_str path = rc == 0 ? sc_str_n(norm, plen) : sc_str_n(t.p, plen);
    struct proxy_az_decision d = decide(&m, path);
    CHECK(d.result == PROXY_AZ_RES_ALLOW || d.result == PROXY_AZ_RES_DENY);
    if (d.policy) {
        CHECK(strcmp(d.policy, "deny-admin") == 0 || strcmp(d.policy, "deny-net") == 0 ||
              strcmp(d.policy, "allow") == 0);
    }
    if (d.result == PROXY_AZ_RES_DENY && d.policy) {
        CHECK(strncmp(d.policy, "deny-", 5) == 0);
    }
    /* Respelled, normalised again: the same path, the same decision. */
    char *alt = malloc(path.len * 6 + 1);
    size_t al = respell(path, seed, alt);
    char *norm2 = malloc(al ? al : 1);
    size_t olen2, plen2;
    rc = proxy_normalize_target(sc_str_n(alt, al), PROXY_PN_DECODE_MERGE, PROXY_ES_REJECT, norm2,
                                al, &olen2, &plen2, &why);
    CHECK(rc >= 0);
    struct sc_str path2 = rc == 0 ? sc_str_n(norm2, plen2) : sc_str_n(alt, plen2);
    CHECK(path2.len == path.len && memcmp(path2.p, path.p, path.len) == 0);
    struct proxy_az_decision d2 = decide(&m, path2);
    CHECK(d2.result == d.result);
    CHECK((d.policy == NULL) == (d2.policy == NULL));
    free(norm2);
    free(alt);
    free(norm);
    return 0;
}

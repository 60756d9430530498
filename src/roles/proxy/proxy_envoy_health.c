// SPDX-License-Identifier: Apache-2.0
// Envoy health checking that is not an HTTP route (see proxy_envoy.h): a cluster health check's
// tcp_health_check onto health_check.tcp. Its Payloads are hex text or base64 binary; both become
// the hex our option takes, checked for length here so that a refusal carries the Envoy path.
// The health_check HTTP filter becomes a first route with a health_endpoint. Invariant: an empty
// send and receive is a connect-only check, as in Envoy.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/template.h"
#include "roles/proxy/proxy_envoy.h"
#include "roles/proxy/proxy_health_tcp.h"

/* Payload <pl> (at <path>) as hex into <out> (2 * PROXY_HC_TCP_MAX_PAYLOAD + 1). Returns 0 or -1
 * after a refusal. */
static int payload(struct proxy_front *f, const struct sc_ynode *pl, const char *path, char *out,
                   size_t cap)
{
    static const char *const k[] = { "text", "binary", NULL };
    if (proxy_front_keys(f, pl, path, k, NULL) < 0) {
        return -1;
    }
    const char *text = proxy_front_str(f, pl, "text", path);
    const char *bin = proxy_front_str(f, pl, "binary", path);
    if (!text == !bin) {
        return proxy_front_refuse(f, pl, path, "a Payload has one of text and binary");
    }
    if (text) {
        size_t n = strlen(text);
        bool hex = n % 2 == 0;
        for (size_t i = 0; hex && i < n; i++) {
            hex = strchr("0123456789abcdefABCDEF", text[i]) != NULL;
        }
        if (!hex || n / 2 > PROXY_HC_TCP_MAX_PAYLOAD) {
            return proxy_front_refuse(f, sc_ynode_get(pl, "text"), path,
                                      "text is not hex of at most %d bytes",
                                      PROXY_HC_TCP_MAX_PAYLOAD);
        }
        if (n >= cap) { /* not reached: n <= 2 * PROXY_HC_TCP_MAX_PAYLOAD */
            return proxy_front_refuse(f, pl, path, "payload too long");
        }
        memcpy(out, text, n + 1);
        return 0;
    }
    struct sc_buf b;
    sc_buf_init(&b, PROXY_HC_TCP_MAX_PAYLOAD);
    int rc = sc_template_base64_decode(&b, bin, strlen(bin));
    if (rc < 0) {
        sc_buf_cleanup(&b);
        return proxy_front_refuse(f, sc_ynode_get(pl, "binary"), path,
                                  "binary is not base64 of at most %d bytes",
                                  PROXY_HC_TCP_MAX_PAYLOAD);
    }
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < b.len && 2 * i + 2 < cap; i++) {
        out[2 * i] = hx[(uint8_t)b.p[i] >> 4];
        out[2 * i + 1] = hx[(uint8_t)b.p[i] & 15];
        out[2 * i + 2] = '\0';
    }
    if (b.len == 0) {
        out[0] = '\0';
    }
    sc_buf_cleanup(&b);
    return 0;
}

struct sc_ynode *proxy_envoy_tcp_health(struct proxy_front *f, const struct sc_ynode *th,
                                        const char *path)
{
    static const char *const k[] = { "send", "receive", NULL };
    if (proxy_front_keys(f, th, path, k, NULL) < 0) {
        return NULL;
    }
    struct sc_ynode *o = proxy_front_map(f, th);
    char hex[2 * PROXY_HC_TCP_MAX_PAYLOAD + 1];
    char p[PROXY_FRONT_PATH];
    const struct sc_ynode *send = sc_ynode_get(th, "send");
    if (send) {
        proxy_front_path(p, path, ".tcp_health_check.send");
        if (payload(f, send, p, hex, sizeof(hex)) < 0) {
            return NULL;
        }
        if (hex[0]) {
            proxy_front_put(f, o, "send", send, hex);
        }
    }
    const struct sc_ynode *rs = sc_ynode_get(th, "receive");
    if (sc_ynode_count(rs) > PROXY_HC_TCP_MAX_RECV) {
        proxy_front_refuse(f, rs, path, "tcp_health_check.receive: at most %d blocks",
                           PROXY_HC_TCP_MAX_RECV);
        return NULL;
    }
    for (size_t i = 0; i < sc_ynode_count(rs); i++) {
        const struct sc_ynode *r = sc_ynode_at(rs, i);
        proxy_front_path(p, path, ".tcp_health_check.receive[%zu]", i);
        if (payload(f, r, p, hex, sizeof(hex)) < 0) {
            return NULL;
        }
        if (!hex[0]) {
            proxy_front_refuse(f, r, p, "an empty block to expect");
            return NULL;
        }
        proxy_front_push_str(f, o, "receive", r, hex);
    }
    return f->err ? NULL : o;
}

/* ---- the health_check HTTP filter ---- */

#define T_HEALTH_FILTER                                                                            \
    "type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck"

bool proxy_envoy_health_filter_is(const char *t, const char *name)
{
    return t ? is(t, T_HEALTH_FILTER) : is(name, "envoy.filters.http.health_check");
}

/* HeaderMatcher <h> (at <path>) into native match <m>: :path exact or prefix as the path, other
 * headers by exact value or presence. Returns 0 or -1 after a refusal. */
static int header_matcher(struct proxy_front *f, const struct sc_ynode *h, const char *path,
                          struct sc_ynode *m)
{
    static const char *const k[] = { "name",         "exact_match",   "prefix_match",
                                     "string_match", "present_match", NULL };
    if (proxy_front_keys(f, h, path, k, NULL) < 0) {
        return -1; /* invert_match, safe_regex_match, range_match, ...: no equivalent here */
    }
    const char *name = proxy_front_str(f, h, "name", path);
    const struct sc_ynode *sm = sc_ynode_get(h, "string_match");
    static const char *const sk[] = { "exact", "prefix", NULL };
    if (sm && proxy_front_keys(f, sm, path, sk, NULL) < 0) {
        return -1; /* suffix, contains, safe_regex, ignore_case: refused */
    }
    const struct sc_ynode *exact = sc_ynode_get(h, "exact_match");
    const struct sc_ynode *prefix = sc_ynode_get(h, "prefix_match");
    exact = exact ? exact : sc_ynode_get(sm, "exact");
    prefix = prefix ? prefix : sc_ynode_get(sm, "prefix");
    const char *pm = proxy_front_str(f, h, "present_match", path);
    if (!name || (exact != NULL) + (prefix != NULL) + (pm != NULL) != 1 || is(pm, "false")) {
        return proxy_front_refuse(f, h, path,
                                  "a header matcher needs a name and one of exact, prefix or "
                                  "present_match: true");
    }
    if (is(name, ":path")) {
        if (pm) {
            return proxy_front_refuse(f, h, path, ":path is always present: match its value");
        }
        proxy_front_put(f, m, exact ? "path" : "prefix", exact ? exact : prefix,
                        sc_ynode_str(exact ? exact : prefix));
        return 0;
    }
    if (name[0] == ':' || prefix) {
        return proxy_front_refuse(f, h, path,
                                  "%.64s: a pseudo-header other than :path, or a prefix match on "
                                  "a header other than :path, is not supported",
                                  name);
    }
    struct sc_ynode *e = proxy_front_map(f, h);
    proxy_front_put(f, e, "name", h, name);
    if (exact) {
        proxy_front_put(f, e, "value", exact, sc_ynode_str(exact));
    }
    struct sc_ynode *hs = sc_ynode_get_mut(m, "headers");
    if (!hs) {
        hs = proxy_front_seq(f, h);
        proxy_front_set(f, m, "headers", hs, h);
    }
    proxy_front_push(f, hs, e, h);
    return 0;
}

struct sc_ynode *proxy_envoy_health_filter(struct proxy_front *f, const struct sc_ynode *tc,
                                           const char *path)
{
    static const char *const k[] = { "@type",      "pass_through_mode",
                                     "headers",    "cluster_min_healthy_percentages",
                                     "cache_time", NULL };
    if (!tc || proxy_front_keys(f, tc, path, k, NULL) < 0) {
        if (!tc) {
            proxy_front_refuse(f, tc, path, "the health_check filter needs a typed_config");
        }
        return NULL;
    }
    const char *pt = proxy_front_str(f, tc, "pass_through_mode", path);
    const struct sc_ynode *ptn = sc_ynode_get(tc, "pass_through_mode");
    if (ptn && sc_ynode_kind(ptn) == SC_Y_MAP) { /* BoolValue written as {value: ...} */
        pt = proxy_front_str(f, ptn, "value", path);
    }
    if (!pt || !(is(pt, "true") || is(pt, "false"))) {
        proxy_front_refuse(f, ptn ? ptn : tc, path,
                           "pass_through_mode (true or false) is required");
        return NULL;
    }
    bool pass = is(pt, "true");
    const struct sc_ynode *hs = sc_ynode_get(tc, "headers");
    if (sc_ynode_count(hs) == 0) {
        proxy_front_refuse(f, hs ? hs : tc, path,
                           "headers are required: they say which requests are health checks");
        return NULL;
    }
    struct sc_ynode *r = proxy_front_map(f, tc);
    proxy_front_put(f, r, "name", tc, "health_check");
    struct sc_ynode *m = proxy_front_map(f, hs);
    for (size_t i = 0; i < sc_ynode_count(hs) && !f->err; i++) {
        char p[PROXY_FRONT_PATH];
        proxy_front_path(p, path, ".headers[%zu]", i);
        if (header_matcher(f, sc_ynode_at(hs, i), p, m) < 0) {
            return NULL;
        }
    }
    if (!sc_ynode_get(m, "path") && !sc_ynode_get(m, "prefix")) {
        proxy_front_put(f, m, "prefix", hs, "/");
    }
    proxy_front_set(f, r, "match", m, hs);
    struct sc_ynode *he = proxy_front_map(f, tc);
    proxy_front_put(f, he, "pass_through", ptn, pass ? "true" : "false");
    const struct sc_ynode *mh = sc_ynode_get(tc, "cluster_min_healthy_percentages");
    if (mh && pass) {
        proxy_front_note(f, mh, path,
                         "cluster_min_healthy_percentages has no effect with pass_through_mode "
                         "(the app answers), as in Envoy");
    }
    if (sc_ynode_count(mh) && !pass) {
        struct sc_ynode *l = proxy_front_seq(f, mh);
        for (size_t i = 0; i < sc_ynode_count(mh) && !f->err; i++) {
            const struct sc_ynode *key = sc_ynode_key(mh, i), *v = sc_ynode_val(mh, i);
            char p[PROXY_FRONT_PATH];
            proxy_front_path(p, path, ".cluster_min_healthy_percentages.%.64s",
                             sc_ynode_str(key) ? sc_ynode_str(key) : "");
            static const char *const pk[] = { "value", NULL };
            if (proxy_front_keys(f, v, p, pk, NULL) < 0) {
                return NULL;
            }
            const char *pv = proxy_front_str(f, v, "value", p);
            char *end = NULL;
            double d = pv ? strtod(pv, &end) : -1;
            if (!pv || *end || !(d >= 0 && d <= 100)) {
                proxy_front_refuse(f, v, p, "value is a percent from 0 to 100");
                return NULL;
            }
            struct sc_ynode *e = proxy_front_map(f, v);
            proxy_front_put(f, e, "cluster", key, sc_ynode_str(key));
            proxy_front_put(f, e, "percent", v, pv);
            proxy_front_push(f, l, e, v);
        }
        proxy_front_set(f, he, "min_healthy", l, mh);
    }
    if (sc_ynode_get(tc, "cache_time")) {
        proxy_front_note(f, sc_ynode_get(tc, "cache_time"), path,
                         "cache_time: answers are not cached, every health check reaches the app");
    }
    proxy_front_set(f, r, "health_endpoint", he, tc);
    return f->err ? NULL : r;
}

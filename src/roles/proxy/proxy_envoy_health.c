// SPDX-License-Identifier: Apache-2.0
// Envoy health checking that is not an HTTP route (see proxy_envoy.h): a cluster health check's
// tcp_health_check onto health_check.tcp. Its Payloads are hex text or base64 binary; both become
// the hex our option takes, checked for length here so that a refusal carries the Envoy path.
// Invariant: an empty send and receive is a connect-only check, as in Envoy.
#include <stdio.h>
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

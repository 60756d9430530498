// SPDX-License-Identifier: Apache-2.0
// VirtualService http[] routes the proxy answers itself: `redirect` (uri, authority, port, scheme,
// redirectCode) and `directResponse` (status, body.string), into the native route's `redirect`
// and `direct_response`.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "roles/proxy/proxy_front.h"

int proxy_istio_answer(struct proxy_front *f, struct sc_ynode *act, const struct sc_ynode *h,
                       const char *path)
{
    char p[PROXY_FRONT_PATH];
    const struct sc_ynode *rd = sc_ynode_get(h, "redirect");
    if (rd) {
        proxy_front_path(p, path, ".redirect");
        static const char *const k[] = {
            "uri", "authority", "port", "scheme", "redirectCode", NULL
        };
        if (proxy_front_keys(f, rd, p, k, NULL) < 0) {
            return SC_ECONFIG; /* derivePort among others */
        }
        struct sc_ynode *o = proxy_front_map(f, rd);
        const char *scheme = proxy_front_str(f, rd, "scheme", p);
        if (scheme && strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
            return proxy_front_refuse(f, sc_ynode_get(rd, "scheme"), p,
                                      "scheme: only http and https are supported");
        }
        const char *code = proxy_front_str(f, rd, "redirectCode", p);
        if (code && strcmp(code, "301") != 0 && strcmp(code, "302") != 0 &&
            strcmp(code, "303") != 0 && strcmp(code, "307") != 0 && strcmp(code, "308") != 0) {
            return proxy_front_refuse(f, sc_ynode_get(rd, "redirectCode"), p,
                                      "redirectCode %.16s is not supported (301, 302, 303, 307 "
                                      "or 308)",
                                      code);
        }
        proxy_front_copy(f, o, "path", rd, "uri");
        proxy_front_copy(f, o, "host", rd, "authority");
        proxy_front_copy(f, o, "port", rd, "port");
        proxy_front_copy(f, o, "scheme", rd, "scheme");
        proxy_front_copy(f, o, "response_code", rd, "redirectCode");
        if (sc_ynode_count(o) == 0 || (sc_ynode_count(o) == 1 && code)) {
            return proxy_front_refuse(f, rd, p, "a redirect needs uri, authority, port or scheme");
        }
        proxy_front_set(f, act, "redirect", o, rd);
        return f->err ? SC_ECONFIG : 0;
    }
    const struct sc_ynode *dr = sc_ynode_get(h, "directResponse");
    proxy_front_path(p, path, ".directResponse");
    static const char *const dk[] = { "status", "body", NULL };
    if (proxy_front_keys(f, dr, p, dk, NULL) < 0) {
        return SC_ECONFIG;
    }
    if (!sc_ynode_get(dr, "status")) {
        return proxy_front_refuse(f, dr, p, "status is required");
    }
    struct sc_ynode *o = proxy_front_map(f, dr);
    proxy_front_copy(f, o, "status", dr, "status");
    const struct sc_ynode *b = sc_ynode_get(dr, "body");
    static const char *const bk[] = { "string", NULL };
    proxy_front_path(p, path, ".directResponse.body");
    if (b && proxy_front_keys(f, b, p, bk, NULL) < 0) {
        return SC_ECONFIG; /* bytes */
    }
    proxy_front_copy(f, o, "body", b, "string");
    proxy_front_set(f, act, "direct_response", o, dr);
    return f->err ? SC_ECONFIG : 0;
}

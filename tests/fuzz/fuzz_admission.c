// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the webhook's AdmissionReview handler (bytes the API server, or anyone who
// reaches the port, sends). Beyond "no crash", it abort()s when an invariant breaks:
//   - the status is 200 or 400; a 400 body starts with "malformed AdmissionReview: ";
//   - a 200 body is an admission.k8s.io/v1 AdmissionReview whose response echoes request.uid and
//     has a boolean allowed; a patch, when present, is base64 of a JSON array of operations each
//     with an op and a path that is empty or starts with '/'.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "roles/inject/webhook.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int unb64(const char *s, struct sc_buf *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(s);
    if (n % 4) {
        return -1;
    }
    for (size_t i = 0; i < n; i += 4) {
        unsigned v = 0;
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            const char *p = s[i + k] == '=' ? NULL : strchr(tab, s[i + k]);
            if (!p && s[i + k] != '=') {
                return -1;
            }
            pad += !p;
            v = v << 6 | (p ? (unsigned)(p - tab) : 0);
        }
        char b[3] = { (char)(v >> 16), (char)(v >> 8), (char)v };
        sc_buf_append(out, b, (size_t)(3 - pad));
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct inject_mesh mesh;
    static bool loaded;
    if (!loaded) {
        sc_config_defaults(inject_mesh_opts, &mesh);
        loaded = true;
    }
    struct inject_opts o;
    inject_choose(&mesh, true, NULL, false, &o);
    struct sc_buf out;
    sc_buf_init(&out, 256u << 20);
    const char *result = NULL;
    int status = webhook_review(&o, (const char *)data, size, &out, &result);
    if (!result || (status != 200 && status != 400)) {
        abort();
    }
    if (status == 400) {
        if (strncmp(sc_buf_cstr(&out), "malformed AdmissionReview: ", 27) != 0) {
            abort();
        }
        sc_buf_cleanup(&out);
        return 0;
    }
    json_t *r = json_loadb(out.p, out.len, 0, NULL);
    json_t *in = json_loadb((const char *)data, size, 0, NULL);
    json_t *resp = json_object_get(r, "response");
    const char *uid = json_string_value(json_object_get(resp, "uid"));
    const char *want = json_string_value(json_object_get(json_object_get(in, "request"), "uid"));
    if (!r || !uid || !want || strcmp(uid, want) != 0 ||
        !json_is_boolean(json_object_get(resp, "allowed"))) {
        abort();
    }
    json_t *patch = json_object_get(resp, "patch");
    if (patch) {
        struct sc_buf dec;
        sc_buf_init(&dec, 256u << 20);
        if (!json_is_string(patch) || unb64(json_string_value(patch), &dec) < 0) {
            abort();
        }
        json_t *ops = json_loadb(dec.p ? dec.p : "", dec.len, 0, NULL);
        if (!json_is_array(ops)) {
            abort();
        }
        size_t i;
        json_t *op;
        json_array_foreach(ops, i, op)
        {
            const char *path = json_string_value(json_object_get(op, "path"));
            if (!json_string_value(json_object_get(op, "op")) || !path ||
                (path[0] && path[0] != '/')) {
                abort();
            }
        }
        json_decref(ops);
        sc_buf_cleanup(&dec);
    }
    json_decref(in);
    json_decref(r);
    sc_buf_cleanup(&out);
    return 0;
}

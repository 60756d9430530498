// SPDX-License-Identifier: Apache-2.0
// One AdmissionReview (admission.k8s.io/v1) in, its response out: the decision rules of Istio's
// injector (only Pod CREATE; never kube-system, kube-public, the mesh config's excluded
// namespaces or hostNetwork pods; the pod's sidecar.dev/inject annotation overrides; an injected
// pod gets no patch, so reinvocation is safe) and a base64 RFC 6902 JSON Patch that turns the
// submitted pod into exactly what `sidecar inject` produces from it. Invariant: any input gives an
// answer (a malformed review a 400 with the reason, an injection error a denial naming the field),
// never a crash; the input size is bounded by the caller.
#include "roles/inject/webhook.h"

#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

static void b64(struct sc_buf *out, const unsigned char *p, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16;
        if (i + 1 < n) {
            v |= (unsigned)p[i + 1] << 8;
        }
        if (i + 2 < n) {
            v |= p[i + 2];
        }
        char q[4] = { tab[(v >> 18) & 63], tab[(v >> 12) & 63],
                      i + 1 < n ? tab[(v >> 6) & 63] : '=', i + 2 < n ? tab[v & 63] : '=' };
        sc_buf_append(out, q, 4);
    }
}

static int invalid(struct sc_buf *out, const char **result, const char *why)
{
    *result = "invalid";
    sc_buf_appendf(out, "malformed AdmissionReview: %s\n", why);
    return 400;
}

static bool excluded_ns(const struct inject_mesh *m, const char *ns)
{
    if (strcmp(ns, "kube-system") == 0 || strcmp(ns, "kube-public") == 0) {
        return true;
    }
    for (size_t i = 0; i < m->exclude_namespaces.n; i++) {
        if (strcmp(ns, m->exclude_namespaces.v[i]) == 0) {
            return true;
        }
    }
    return false;
}

int webhook_review(const struct inject_opts *o, const char *body, size_t len, struct sc_buf *out,
                   const char **result)
{
    json_error_t jerr;
    json_t *review = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!review) {
        char why[200];
        snprintf(why, sizeof(why), "not JSON (line %d column %d: %s)", jerr.line, jerr.column,
                 jerr.text);
        return invalid(out, result, why);
    }
    int status = 200;
    json_t *resp = NULL, *pod = NULL, *patch = NULL;
    char *err = NULL;
    const char *api = json_string_value(json_object_get(review, "apiVersion"));
    const char *kind = json_string_value(json_object_get(review, "kind"));
    json_t *req = json_object_get(review, "request");
    const char *uid = json_string_value(json_object_get(req, "uid"));
    if (!api || strcmp(api, "admission.k8s.io/v1") != 0 || !kind ||
        strcmp(kind, "AdmissionReview") != 0) {
        status = invalid(out, result,
                         "apiVersion must be admission.k8s.io/v1 and kind "
                         "AdmissionReview");
        goto done;
    }
    if (!json_is_object(req) || !uid || !*uid) {
        status = invalid(out, result, "request.uid is missing");
        goto done;
    }
    resp = json_pack("{s:s, s:b}", "uid", uid, "allowed", 1);
    *result = "skipped";
    json_t *rkind = json_object_get(json_object_get(req, "kind"), "kind");
    const char *op = json_string_value(json_object_get(req, "operation"));
    const char *ns = json_string_value(json_object_get(req, "namespace"));
    json_t *obj = json_object_get(req, "object");
    if (!json_is_string(rkind) || strcmp(json_string_value(rkind), "Pod") != 0 || !op ||
        strcmp(op, "CREATE") != 0) {
        goto answer;
    }
    if (!json_is_object(obj)) {
        status = 0;
        json_decref(resp);
        resp = NULL;
        status = invalid(out, result, "request.object is not a Pod");
        goto done;
    }
    if (!ns) {
        ns = json_string_value(json_object_get(json_object_get(obj, "metadata"), "namespace"));
    }
    if (ns && excluded_ns(o->mesh, ns)) {
        goto answer;
    }
    pod = json_deep_copy(obj);
    const char *why = NULL;
    int rc = inject_template(o, pod, "", &why, &err);
    if (rc < 0) {
        *result = "denied";
        json_object_set_new(resp, "allowed", json_false());
        json_object_set_new(resp, "status",
                            json_pack("{s:i, s:s, s:s}", "code", 400, "reason", "BadRequest",
                                      "message", err ? err : "injection failed"));
        goto answer;
    }
    if (rc == 0) {
        goto answer;
    }
    *result = "injected";
    patch = inject_json_diff(obj, pod);
    char *text = json_dumps(patch, JSON_COMPACT);
    struct sc_buf enc;
    sc_buf_init(&enc, 64u << 20);
    b64(&enc, (const unsigned char *)text, strlen(text));
    json_object_set_new(resp, "patchType", json_string("JSONPatch"));
    json_object_set_new(resp, "patch", json_stringn(enc.p, enc.len));
    sc_buf_cleanup(&enc);
    sc_free(text);
answer : {
    json_t *r = json_pack("{s:s, s:s, s:O}", "apiVersion", "admission.k8s.io/v1", "kind",
                          "AdmissionReview", "response", resp);
    char *s = json_dumps(r, JSON_COMPACT);
    if (!s || sc_buf_append_cstr(out, s) < 0) {
        sc_buf_reset(out);
        status = 500;
        *result = "error";
    }
    sc_free(s);
    json_decref(r);
}
done:
    sc_free(err);
    json_decref(patch);
    json_decref(pod);
    json_decref(resp);
    json_decref(review);
    return status;
}

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
#include "core/json.h"

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

static int dump(struct sc_buf *b, json_t *j);

static int dump_str(struct sc_buf *b, const char *s, size_t n)
{
    /* An escaped byte takes at most 6 ("\u00XX"). */
    if (n > (b->max - b->len) / 6 || sc_buf_reserve(b, n * 6 + 2) < 0) {
        return SC_ETOOBIG;
    }
    b->p[b->len++] = '"';
    sc_json_escape(b->p, b->cap, &b->len, s, n);
    b->p[b->len++] = '"';
    return 0;
}

/* Appends <j> as compact JSON (jansson's dumper escapes byte by byte; patches and responses are
 * mostly long plain strings). */
static int dump(struct sc_buf *b, json_t *j)
{
    int rc = 0;
    size_t i;
    const char *k;
    json_t *v;
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        rc = sc_buf_append_cstr(b, "{");
        i = 0;
        json_object_foreach(j, k, v)
        {
            rc = rc ? rc : sc_buf_append_cstr(b, i++ ? "," : "");
            rc = rc ? rc : dump_str(b, k, strlen(k));
            rc = rc ? rc : sc_buf_append_cstr(b, ":");
            rc = rc ? rc : dump(b, v);
        }
        return rc ? rc : sc_buf_append_cstr(b, "}");
    case JSON_ARRAY:
        rc = sc_buf_append_cstr(b, "[");
        json_array_foreach(j, i, v)
        {
            rc = rc ? rc : sc_buf_append_cstr(b, i ? "," : "");
            rc = rc ? rc : dump(b, v);
        }
        return rc ? rc : sc_buf_append_cstr(b, "]");
    case JSON_STRING:
        return dump_str(b, json_string_value(j), json_string_length(j));
    case JSON_INTEGER:
        return sc_buf_appendf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(j));
    case JSON_REAL:
        return sc_buf_appendf(b, "%.17g", json_real_value(j));
    case JSON_TRUE:
        return sc_buf_append_cstr(b, "true");
    case JSON_FALSE:
        return sc_buf_append_cstr(b, "false");
    default:
        return sc_buf_append_cstr(b, "null");
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
answer : {
    struct sc_buf text;
    sc_buf_init(&text, out->max);
    int rc2 = sc_buf_append_cstr(out, "{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":"
                                      "\"AdmissionReview\",\"response\":");
    rc2 = rc2 ? rc2 : dump(out, resp);
    if (rc2 == 0 && patch) {
        /* The patch goes in last, base64 written straight into the body. */
        out->len--;
        rc2 = dump(&text, patch);
        rc2 = rc2 ? rc2 : sc_buf_append_cstr(out, ",\"patchType\":\"JSONPatch\",\"patch\":\"");
        rc2 = rc2 ? rc2 : sc_buf_reserve(out, (text.len + 2) / 3 * 4 + 3);
        if (rc2 == 0) {
            b64(out, (const unsigned char *)text.p, text.len);
            rc2 = sc_buf_append_cstr(out, "\"}");
        }
    }
    rc2 = rc2 ? rc2 : sc_buf_append_cstr(out, "}");
    sc_buf_cleanup(&text);
    if (rc2 < 0) {
        sc_buf_reset(out);
        status = 500;
        *result = "error";
    }
}
done:
    sc_free(err);
    json_decref(patch);
    json_decref(pod);
    json_decref(resp);
    json_decref(review);
    return status;
}

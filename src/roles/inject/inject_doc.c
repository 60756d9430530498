// SPDX-License-Identifier: Apache-2.0
// Where the pod templates are: a Pod is one, the workload kinds hold one at spec.template (a
// CronJob at spec.jobTemplate.spec.template), a List holds documents in items. Also the JSON diff
// that turns an injected pod back into a patch for the webhook. Invariant: a document of another
// kind (Service, ConfigMap, ...) passes through untouched.
#include "roles/inject/inject.h"

#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

#define LIST_MAX_DEPTH 4

static const struct {
    const char *kind;
    const char *path[4]; /* keys from the object to its pod template */
    const char *field;   /* the same, as a field path prefix */
} kinds[] = {
    { "Pod", { NULL }, "" },
    { "Deployment", { "spec", "template", NULL }, "spec.template." },
    { "StatefulSet", { "spec", "template", NULL }, "spec.template." },
    { "DaemonSet", { "spec", "template", NULL }, "spec.template." },
    { "ReplicaSet", { "spec", "template", NULL }, "spec.template." },
    { "ReplicationController", { "spec", "template", NULL }, "spec.template." },
    { "Job", { "spec", "template", NULL }, "spec.template." },
    { "CronJob", { "spec", "jobTemplate", "spec", "template" }, "spec.jobTemplate.spec.template." },
};

/* Injects into <obj> (a document, or an item of a List at <prefix> such as "items[2].").
 * Errors read "document N (Kind/name): <prefix><field>: message". */
static int walk(const struct inject_opts *o, json_t *obj, size_t index, const char *prefix,
                int depth, char **err)
{
    if (!json_is_object(obj)) {
        *err =
            sc_asprintf("document %zu: %smust be a mapping (a Kubernetes object)", index, prefix);
        return SC_ECONFIG;
    }
    const char *kind = json_string_value(json_object_get(obj, "kind"));
    if (!kind) {
        *err = sc_asprintf("document %zu: %skind: missing (every object needs apiVersion and "
                           "kind)",
                           index, prefix);
        return SC_ECONFIG;
    }
    const char *name = json_string_value(json_object_get(json_object_get(obj, "metadata"), "name"));
    char head[512];
    snprintf(head, sizeof(head), "document %zu (%.100s%s%.200s): %s", index, kind, name ? "/" : "",
             name ? name : "", prefix);
    size_t klen = strlen(kind);
    if (strcmp(kind, "List") == 0 || (klen > 4 && strcmp(kind + klen - 4, "List") == 0)) {
        json_t *items = json_object_get(obj, "items");
        if (depth >= LIST_MAX_DEPTH || (items && !json_is_array(items))) {
            *err = sc_asprintf("%sitems: %s", head,
                               depth >= LIST_MAX_DEPTH ? "Lists nest at most 4 deep"
                                                       : "must be a list");
            return SC_ECONFIG;
        }
        int total = 0;
        size_t i;
        json_t *it;
        json_array_foreach(items, i, it)
        {
            char sub[256];
            snprintf(sub, sizeof(sub), "%sitems[%zu].", prefix, i);
            int rc = walk(o, it, index, sub, depth + 1, err);
            if (rc < 0) {
                return rc;
            }
            total += rc;
        }
        return total;
    }
    for (size_t k = 0; k < SC_ARRAY_LEN(kinds); k++) {
        if (strcmp(kind, kinds[k].kind) != 0) {
            continue;
        }
        json_t *tmpl = obj;
        char field[128] = "";
        for (size_t p = 0; p < 4 && kinds[k].path[p]; p++) {
            size_t n = strlen(field);
            snprintf(field + n, sizeof(field) - n, "%s%s", n ? "." : "", kinds[k].path[p]);
            json_t *next = json_object_get(tmpl, kinds[k].path[p]);
            if (!json_is_object(next)) {
                *err = sc_asprintf("%s%s: %s", head, field,
                                   next ? "must be a mapping" : "missing (no pod template)");
                return SC_ECONFIG;
            }
            tmpl = next;
        }
        char *where = sc_asprintf("%s%s", head, kinds[k].field);
        const char *why = NULL;
        int rc = inject_template(o, tmpl, where, &why, err);
        sc_free(where);
        return rc;
    }
    return 0;
}

int inject_document(const struct inject_opts *o, json_t *doc, size_t index, char **err)
{
    return walk(o, doc, index, "", 0, err);
}

/* ---- JSON Patch ---- */

/* Appends <key> escaped as a JSON Pointer token (RFC 6901: ~ as ~0, / as ~1). */
static void pointer_append(struct sc_buf *b, const char *key)
{
    sc_buf_append_cstr(b, "/");
    for (const char *p = key; *p; p++) {
        if (*p == '~') {
            sc_buf_append_cstr(b, "~0");
        } else if (*p == '/') {
            sc_buf_append_cstr(b, "~1");
        } else {
            sc_buf_append(b, p, 1);
        }
    }
}

static void op(json_t *patch, const char *what, const char *path, json_t *value)
{
    json_t *o = json_pack("{s:s, s:s}", "op", what, "path", path);
    if (value) {
        json_object_set(o, "value", value);
    }
    json_array_append_new(patch, o);
}

static void diff(json_t *patch, struct sc_buf *path, json_t *from, json_t *to)
{
    if (json_equal(from, to)) {
        return;
    }
    size_t mark = path->len;
    if (json_is_object(from) && json_is_object(to)) {
        const char *k;
        json_t *v;
        json_object_foreach(from, k, v)
        {
            if (!json_object_get(to, k)) {
                pointer_append(path, k);
                op(patch, "remove", sc_buf_cstr(path), NULL);
                path->len = mark;
            }
        }
        json_object_foreach(to, k, v)
        {
            json_t *old = json_object_get(from, k);
            pointer_append(path, k);
            if (!old) {
                op(patch, "add", sc_buf_cstr(path), v);
            } else {
                diff(patch, path, old, v);
            }
            path->len = mark;
        }
        return;
    }
    if (json_is_array(from) && json_is_array(to) && json_array_size(from) == json_array_size(to)) {
        for (size_t i = 0; i < json_array_size(to); i++) {
            sc_buf_appendf(path, "/%zu", i);
            diff(patch, path, json_array_get(from, i), json_array_get(to, i));
            path->len = mark;
        }
        return;
    }
    op(patch, "replace", path->len ? sc_buf_cstr(path) : "", to);
}

json_t *inject_json_diff(json_t *from, json_t *to)
{
    json_t *patch = json_array();
    struct sc_buf path;
    sc_buf_init(&path, 1u << 20);
    diff(patch, &path, from, to);
    sc_buf_cleanup(&path);
    return patch;
}

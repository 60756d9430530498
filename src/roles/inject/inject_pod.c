// SPDX-License-Identifier: Apache-2.0
// The injection itself: one pod template in, the same template with the sidecars in place out.
// It reads the pod's annotations (sidecar.dev/*, the Vault Agent injector's, prometheus.io/*)
// over the mesh config, and adds the sidecar-iptables init container, the proxy with its identity
// volume and the app's HTTP probes rewritten through its admin port, the logs role on a shared
// emptyDir, the metrics role with the pod's scrape annotations pointed at it, the secrets role
// from Vault annotations, the downward API env and files, and a status annotation. Invariants:
// nothing the pod had is removed or reordered (containers are only added before or after), a
// template with the status annotation is never touched again, and every error names its field.
#include "roles/inject/inject.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

enum { R_PROXY, R_LOGS, R_METRICS, R_SECRETS, R_N };
static const char *const role_names[R_N] = { "proxy", "logs", "metrics", "secrets" };

#define PROXY_ADMIN_PORT 15000
#define PROXY_STATUS_PORT 15024 /* health and the rewritten probes, for the kubelet */
#define LOGS_ADMIN_PORT 15020
#define METRICS_ADMIN_PORT 15021
#define SECRETS_ADMIN_PORT 15023
#define PODINFO_DIR "/etc/podinfo"
#define IDENTITY_DIR "/var/run/secrets/sidecar"
#define VAULT_DIR "/vault/secrets"
#define STATE_DIR "/var/lib/sidecar"
#define SA_TOKEN_DIR "/var/run/secrets/kubernetes.io/serviceaccount"

struct ctx {
    const struct inject_opts *o;
    const struct inject_mesh *m;
    const char *where;
    char **err;
    json_t *meta, *anns, *spec;
    bool role[R_N];
    bool native, rewrite, hold;
    bool secrets_init, secrets_sidecar, secrets_first;
    json_t *probes; /* SIDECAR_APP_PROBES */
};

static int bad(struct ctx *c, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int bad(struct ctx *c, const char *field, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (!*c->err) {
        *c->err = sc_asprintf("%s%s: %s", c->where, field, msg);
    }
    return SC_ECONFIG;
}

/* Returns the member <key> of <parent>, creating an empty object there when it is missing.
 * NULL (with an error) when it exists and is not an object. */
static json_t *child_obj(struct ctx *c, json_t *parent, const char *key, const char *field)
{
    json_t *v = json_object_get(parent, key);
    if (!v || json_is_null(v)) {
        v = json_object();
        json_object_set_new(parent, key, v);
    } else if (!json_is_object(v)) {
        bad(c, field, "must be a mapping");
        return NULL;
    }
    return v;
}

static json_t *child_arr(struct ctx *c, json_t *parent, const char *key, const char *field)
{
    json_t *v = json_object_get(parent, key);
    if (!v || json_is_null(v)) {
        v = json_array();
        json_object_set_new(parent, key, v);
    } else if (!json_is_array(v)) {
        bad(c, field, "must be a list");
        return NULL;
    }
    return v;
}

/* An annotation's value, NULL when absent; <*rc> is set on a non-string value. */
static const char *ann(struct ctx *c, const char *key, int *rc)
{
    json_t *v = json_object_get(c->anns, key);
    if (!v) {
        return NULL;
    }
    if (!json_is_string(v)) {
        char field[300];
        snprintf(field, sizeof(field), "metadata.annotations[%s]", key);
        *rc = bad(c, field, "annotation values must be strings");
        return NULL;
    }
    return json_string_value(v);
}

/* A boolean annotation: 1 true, 0 false, -1 absent; SC_ECONFIG when it is neither. */
static int ann_bool(struct ctx *c, const char *key)
{
    int rc = 0;
    const char *v = ann(c, key, &rc);
    if (rc < 0) {
        return rc;
    }
    if (!v) {
        return -1;
    }
    if (strcmp(v, "true") == 0) {
        return 1;
    }
    if (strcmp(v, "false") == 0) {
        return 0;
    }
    char field[300];
    snprintf(field, sizeof(field), "metadata.annotations[%s]", key);
    return bad(c, field, "\"%s\" is not \"true\" or \"false\"", v);
}

/* Splits a comma-separated annotation into <out> (a JSON array of trimmed non-empty strings).
 * With <ports>, each item must be a port number. */
static int ann_list(struct ctx *c, const char *key, json_t *out, bool ports)
{
    int rc = 0;
    const char *v = ann(c, key, &rc);
    if (rc < 0 || !v) {
        return rc;
    }
    struct sc_str rest = sc_str_c(v);
    while (rest.len) {
        struct sc_str item = sc_str_trim(sc_str_split(&rest, ','));
        if (!item.len) {
            continue;
        }
        uint64_t port;
        if (ports && (sc_str_to_u64(item, 65535, &port) < 0 || port == 0)) {
            char field[300];
            snprintf(field, sizeof(field), "metadata.annotations[%s]", key);
            return bad(c, field, "\"%.*s\" is not a port number", SC_STR_FMT(item));
        }
        json_array_append_new(out, json_stringn(item.p, item.len));
    }
    return 0;
}

static const char *ann_or(struct ctx *c, const char *key, const char *def, int *rc)
{
    const char *v = ann(c, key, rc);
    return v && *v ? v : def;
}

static void add_strv(json_t *arr, const struct sc_strv *v)
{
    for (size_t i = 0; i < v->n; i++) {
        json_array_append_new(arr, json_string(v->v[i]));
    }
}

static char *join(json_t *arr)
{
    struct sc_buf b;
    sc_buf_init(&b, 1u << 16);
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        sc_buf_appendf(&b, "%s%s", i ? "," : "", json_string_value(v));
    }
    char *s = sc_strdup(sc_buf_cstr(&b));
    sc_buf_cleanup(&b);
    return s;
}

/* ---- decisions ---- */

static int decide_roles(struct ctx *c, const char **why)
{
    int rc = 0;
    const char *list = ann(c, INJECT_PREFIX "roles", &rc);
    if (rc < 0) {
        return rc;
    }
    if (list) {
        struct sc_str rest = sc_str_c(list);
        while (rest.len) {
            struct sc_str item = sc_str_trim(sc_str_split(&rest, ','));
            if (!item.len) {
                continue;
            }
            bool found = false;
            for (int r = 0; r < R_N; r++) {
                if (sc_str_eq(item, sc_str_c(role_names[r]))) {
                    c->role[r] = found = true;
                }
            }
            if (!found) {
                return bad(c, "metadata.annotations[" INJECT_PREFIX "roles]",
                           "unknown role \"%.*s\" (proxy, logs, metrics, secrets)",
                           SC_STR_FMT(item));
            }
        }
    } else {
        for (size_t i = 0; i < c->m->roles.n; i++) {
            for (int r = 0; r < R_N; r++) {
                c->role[r] = c->role[r] || strcmp(c->m->roles.v[i], role_names[r]) == 0;
            }
        }
    }
    /* The Vault Agent injector's annotations turn the secrets role on, unless its own injector
     * already ran. */
    int vault = ann_bool(c, "vault.hashicorp.com/agent-inject");
    if (vault == SC_ECONFIG) {
        return vault;
    }
    if (vault == 1) {
        c->role[R_SECRETS] = true;
    }
    const char *vstatus = ann(c, "vault.hashicorp.com/agent-inject-status", &rc);
    if (rc < 0) {
        return rc;
    }
    if (vstatus && strcmp(vstatus, "injected") == 0) {
        c->role[R_SECRETS] = false;
    }
    /* One role at a time, as the classic sidecar guides' enable_* switches. */
    for (int r = 0; r < R_N; r++) {
        char key[64];
        snprintf(key, sizeof(key), INJECT_PREFIX "%s", role_names[r]);
        int on = ann_bool(c, key);
        if (on == SC_ECONFIG) {
            return on;
        }
        if (on >= 0) {
            c->role[r] = on;
        }
    }
    bool any = false;
    for (int r = 0; r < R_N; r++) {
        any = any || c->role[r];
    }
    if (!any) {
        *why = "no roles";
        return 0;
    }
    return 1;
}

static int decide(struct ctx *c, const char **why)
{
    int rc = 0;
    if (ann(c, INJECT_STATUS, &rc)) {
        *why = "already injected";
        return 0;
    }
    if (rc < 0) {
        return rc;
    }
    int on = ann_bool(c, INJECT_PREFIX "inject");
    if (on == SC_ECONFIG) {
        return on;
    }
    /* The same as a label, which the webhook's objectSelector can match (the annotation wins). */
    json_t *label = json_object_get(json_object_get(c->meta, "labels"), INJECT_PREFIX "inject");
    if (on < 0 && json_is_string(label)) {
        const char *l = json_string_value(label);
        if (strcmp(l, "true") != 0 && strcmp(l, "false") != 0) {
            return bad(c, "metadata.labels[" INJECT_PREFIX "inject]",
                       "\"%s\" is not \"true\" or \"false\"", l);
        }
        on = strcmp(l, "true") == 0;
    }
    if (on == 0) {
        *why = INJECT_PREFIX "inject is false";
        return 0;
    }
    json_t *hn = json_object_get(c->spec, "hostNetwork");
    if (json_is_true(hn)) {
        *why = "hostNetwork pod";
        return 0;
    }
    rc = decide_roles(c, why);
    if (rc <= 0) {
        return rc;
    }
    c->native = c->o->native;
    int native = ann_bool(c, INJECT_PREFIX "native-sidecars");
    if (native == SC_ECONFIG) {
        return native;
    }
    if (native >= 0) {
        c->native = native;
    }
    int rewrite = ann_bool(c, INJECT_PREFIX "rewrite-probes");
    if (rewrite == SC_ECONFIG) {
        return rewrite;
    }
    c->rewrite = c->role[R_PROXY] && (rewrite >= 0 ? rewrite == 1 : c->m->rewrite_probes);
    int hold = ann_bool(c, INJECT_PREFIX "hold-application");
    if (hold == SC_ECONFIG) {
        return hold;
    }
    c->hold = hold >= 0 ? hold == 1 : c->m->hold_application;
    if (c->role[R_SECRETS]) {
        int only = ann_bool(c, "vault.hashicorp.com/agent-pre-populate-only");
        int pre = ann_bool(c, "vault.hashicorp.com/agent-pre-populate");
        int first = ann_bool(c, "vault.hashicorp.com/agent-init-first");
        if (only == SC_ECONFIG || pre == SC_ECONFIG || first == SC_ECONFIG) {
            return SC_ECONFIG;
        }
        c->secrets_sidecar = only != 1;
        /* A native secrets sidecar is started (its startup probe passes) only once every file
         * is rendered, before the user's init containers: it pre-populates by itself. */
        c->secrets_init = only == 1 || (pre != 0 && !c->native);
        c->secrets_first = first == 1;
    }
    return 1;
}

/* ---- building blocks ---- */

static json_t *field_env(const char *name, const char *path)
{
    return json_pack("{s:s, s:{s:{s:s}}}", "name", name, "valueFrom", "fieldRef", "fieldPath",
                     path);
}

static json_t *exec_wait(int port, const char *timeout)
{
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/ready", port);
    return json_pack("{s:[s,s,s,s,s,s]}", "command", "sidecar", "wait", "--url", url, "--timeout",
                     timeout);
}

static void mount(json_t *ctr, const char *vol, const char *path, bool ro)
{
    json_t *mounts = json_object_get(ctr, "volumeMounts");
    if (!mounts) {
        mounts = json_array();
        json_object_set_new(ctr, "volumeMounts", mounts);
    }
    json_t *m = json_pack("{s:s, s:s}", "name", vol, "mountPath", path);
    if (ro) {
        json_object_set_new(m, "readOnly", json_true());
    }
    json_array_append_new(mounts, m);
}

/* A sidecar container with what every one of them has: image, env from the downward API,
 * resources, the podinfo mount and the hardened security context. <args> is taken. */
static json_t *sidecar(struct ctx *c, const char *name, json_t *args, int rc_port)
{
    const struct inject_mesh *m = c->m;
    int rc = 0;
    json_t *ctr = json_object();
    json_object_set_new(ctr, "name", json_string(name));
    json_object_set_new(ctr, "image", json_string(m->image));
    json_object_set_new(ctr, "imagePullPolicy", json_string(m->image_pull_policy));
    json_object_set_new(ctr, "command", json_pack("[s]", "sidecar"));
    json_object_set_new(ctr, "args", args);
    json_t *env = json_array();
    json_array_append_new(env, field_env("POD_NAME", "metadata.name"));
    json_array_append_new(env, field_env("POD_NAMESPACE", "metadata.namespace"));
    json_array_append_new(env, field_env("POD_IP", "status.podIP"));
    json_array_append_new(env, field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"));
    json_object_set_new(ctr, "env", env);
    json_t *req = json_object(), *lim = json_object();
    const char *v;
    if ((v = ann_or(c, INJECT_PREFIX "cpu-request", m->cpu_request, &rc)) && *v) {
        json_object_set_new(req, "cpu", json_string(v));
    }
    if ((v = ann_or(c, INJECT_PREFIX "memory-request", m->memory_request, &rc)) && *v) {
        json_object_set_new(req, "memory", json_string(v));
    }
    if ((v = ann_or(c, INJECT_PREFIX "cpu-limit", m->cpu_limit, &rc)) && *v) {
        json_object_set_new(lim, "cpu", json_string(v));
    }
    if ((v = ann_or(c, INJECT_PREFIX "memory-limit", m->memory_limit, &rc)) && *v) {
        json_object_set_new(lim, "memory", json_string(v));
    }
    json_object_set_new(ctr, "resources", json_pack("{s:o, s:o}", "requests", req, "limits", lim));
    if (c->m->podinfo) {
        mount(ctr, "sidecar-podinfo", PODINFO_DIR, true);
    }
    if (rc_port > 0 && c->native) {
        json_object_set_new(ctr, "restartPolicy", json_string("Always"));
        json_t *probe = json_pack("{s:o, s:i, s:i, s:i}", "exec", exec_wait(rc_port, "1s"),
                                  "periodSeconds", 1, "timeoutSeconds", 3, "failureThreshold", 600);
        json_object_set_new(ctr, "startupProbe", probe);
    } else if (rc_port > 0) {
        json_t *probe = json_pack("{s:o, s:i, s:i}", "exec", exec_wait(rc_port, "1s"),
                                  "periodSeconds", 5, "timeoutSeconds", 3);
        json_object_set_new(ctr, "readinessProbe", probe);
    }
    json_object_set_new(
        ctr, "securityContext",
        json_pack("{s:I, s:I, s:b, s:b, s:b, s:b, s:{s:[s]}}", "runAsUser", (json_int_t)m->uid,
                  "runAsGroup", (json_int_t)m->uid, "runAsNonRoot", 1, "readOnlyRootFilesystem", 1,
                  "allowPrivilegeEscalation", 0, "privileged", 0, "capabilities", "drop", "ALL"));
    return ctr;
}

static void add_arg(json_t *args, const char *flag, const char *value)
{
    json_array_append_new(args, json_string(flag));
    json_array_append_new(args, json_string(value));
}

/* ---- checks over what the pod already has ---- */

static const char *const our_containers[] = { "sidecar-iptables", "sidecar-proxy",
                                              "sidecar-logs",     "sidecar-metrics",
                                              "sidecar-secrets",  "sidecar-secrets-init" };
static const char *const our_volumes[] = { "sidecar-podinfo", "sidecar-identity", "sidecar-logs",
                                           "sidecar-state", "sidecar-secrets" };

static int check_names(struct ctx *c, const char *list, const char *const *ours, size_t n)
{
    json_t *arr = json_object_get(c->spec, list);
    if (!arr || json_is_null(arr)) {
        return 0;
    }
    char field[128];
    if (!json_is_array(arr)) {
        snprintf(field, sizeof(field), "spec.%s", list);
        return bad(c, field, "must be a list");
    }
    size_t i;
    json_t *item;
    json_array_foreach(arr, i, item)
    {
        snprintf(field, sizeof(field), "spec.%s[%zu]", list, i);
        if (!json_is_object(item)) {
            return bad(c, field, "must be a mapping");
        }
        const char *name = json_string_value(json_object_get(item, "name"));
        for (size_t k = 0; name && k < n; k++) {
            if (strcmp(name, ours[k]) == 0) {
                snprintf(field, sizeof(field), "spec.%s[%zu].name", list, i);
                return bad(c, field, "\"%s\" is reserved for the injected sidecars; rename it",
                           name);
            }
        }
    }
    return 0;
}

/* The numeric port of <port> (a number, or the name of one of <ctr>'s ports). */
static int resolve_port(struct ctx *c, json_t *ctr, json_t *port, const char *field)
{
    if (json_is_integer(port)) {
        json_int_t p = json_integer_value(port);
        if (p > 0 && p <= 65535) {
            return (int)p;
        }
    } else if (json_is_string(port)) {
        uint64_t p;
        if (sc_str_to_u64(sc_str_c(json_string_value(port)), 65535, &p) == 0 && p > 0) {
            return (int)p;
        }
        size_t i;
        json_t *cp;
        json_array_foreach(json_object_get(ctr, "ports"), i, cp)
        {
            json_t *n = json_object_get(cp, "name");
            if (json_is_string(n) && strcmp(json_string_value(n), json_string_value(port)) == 0) {
                json_t *num = json_object_get(cp, "containerPort");
                if (json_is_integer(num) && json_integer_value(num) > 0 &&
                    json_integer_value(num) <= 65535) {
                    return (int)json_integer_value(num);
                }
            }
        }
        return bad(c, field, "no port named \"%s\" in the container", json_string_value(port));
    }
    return bad(c, field, "must be a port number or a port name");
}

/* Istio's probe rewriting: an HTTP probe of an app container goes to the proxy's status port at
 * /app-health/<container>/<kind>; the original is kept in SIDECAR_APP_PROBES for the proxy. */
static int rewrite_probes(struct ctx *c, json_t *ctr, size_t idx)
{
    static const char *const kinds[][2] = {
        { "livenessProbe", "livez" },
        { "readinessProbe", "readyz" },
        { "startupProbe", "startupz" },
    };
    const char *name = json_string_value(json_object_get(ctr, "name"));
    for (size_t k = 0; k < SC_ARRAY_LEN(kinds); k++) {
        json_t *probe = json_object_get(ctr, kinds[k][0]);
        json_t *hg = json_is_object(probe) ? json_object_get(probe, "httpGet") : NULL;
        if (!json_is_object(hg) || !name) {
            continue;
        }
        char field[200];
        snprintf(field, sizeof(field), "spec.containers[%zu].%s.httpGet.port", idx, kinds[k][0]);
        int port = resolve_port(c, ctr, json_object_get(hg, "port"), field);
        if (port < 0) {
            return port;
        }
        json_t *orig = json_object();
        const char *path = json_string_value(json_object_get(hg, "path"));
        json_object_set_new(orig, "path", json_string(path ? path : "/"));
        json_object_set_new(orig, "port", json_integer(port));
        const char *keys[] = { "host", "scheme", "httpHeaders" };
        for (size_t i = 0; i < SC_ARRAY_LEN(keys); i++) {
            json_t *v = json_object_get(hg, keys[i]);
            if (v) {
                json_object_set(orig, keys[i], v);
            }
        }
        json_t *entry = json_pack("{s:o}", "httpGet", orig);
        json_t *t = json_object_get(probe, "timeoutSeconds");
        if (t) {
            json_object_set(entry, "timeoutSeconds", t);
        }
        char *newpath = sc_asprintf("/app-health/%s/%s", name, kinds[k][1]);
        json_object_set_new(c->probes, newpath, entry);
        json_object_set_new(probe, "httpGet",
                            json_pack("{s:s, s:i, s:s}", "path", newpath, "port", PROXY_STATUS_PORT,
                                      "scheme", "HTTP"));
        sc_free(newpath);
    }
    return 0;
}

/* Checks that no app container mounts something at <path> already. */
static int check_mount_path(struct ctx *c, json_t *ctrs, const char *path)
{
    size_t i;
    json_t *ctr;
    json_array_foreach(ctrs, i, ctr)
    {
        size_t k;
        json_t *vm;
        json_array_foreach(json_object_get(ctr, "volumeMounts"), k, vm)
        {
            json_t *mp = json_object_get(vm, "mountPath");
            if (json_is_string(mp) && strcmp(json_string_value(mp), path) == 0) {
                char field[128];
                snprintf(field, sizeof(field), "spec.containers[%zu].volumeMounts[%zu].mountPath",
                         i, k);
                return bad(c, field, "\"%s\" is where the injector mounts its volume", path);
            }
        }
    }
    return 0;
}

/* ---- the roles ---- */

static json_t *iptables_init(struct ctx *c, json_t *excl_in, json_t *excl_out, json_t *cidrs)
{
    json_t *args = json_pack("[s]", "iptables");
    char uid[32];
    snprintf(uid, sizeof(uid), "%lld", (long long)c->m->uid);
    add_arg(args, "--proxy-uid", uid);
    add_arg(args, "--proxy-gid", uid);
    char *s = join(excl_in);
    add_arg(args, "--exclude-inbound-ports", s);
    sc_free(s);
    if (json_array_size(excl_out)) {
        s = join(excl_out);
        add_arg(args, "--exclude-outbound-ports", s);
        sc_free(s);
    }
    if (json_array_size(cidrs)) {
        s = join(cidrs);
        add_arg(args, "--exclude-outbound-cidrs", s);
        sc_free(s);
    }
    json_t *ctr = sidecar(c, "sidecar-iptables", args, 0);
    json_object_del(ctr, "env");
    json_object_del(ctr, "volumeMounts");
    /* Only what changing the pod's netfilter rules needs: root inside the pod's own network
     * namespace with NET_ADMIN and NET_RAW, nothing else. */
    json_object_set_new(ctr, "securityContext",
                        json_pack("{s:i, s:i, s:b, s:b, s:b, s:b, s:{s:[s,s], s:[s]}}", "runAsUser",
                                  0, "runAsGroup", 0, "runAsNonRoot", 0, "readOnlyRootFilesystem",
                                  1, "allowPrivilegeEscalation", 0, "privileged", 0, "capabilities",
                                  "add", "NET_ADMIN", "NET_RAW", "drop", "ALL"));
    return ctr;
}

static json_t *identity_volume(struct ctx *c)
{
    const struct inject_mesh *m = c->m;
    if (m->identity == INJECT_ID_CSI) {
        char *san = sc_asprintf("spiffe://%s/ns/${POD_NAMESPACE}/sa/${SERVICE_ACCOUNT_NAME}",
                                m->trust_domain);
        char uid[32];
        snprintf(uid, sizeof(uid), "%lld", (long long)m->uid);
        json_t *v = json_pack(
            "{s:s, s:{s:s, s:b, s:{s:s, s:s, s:s, s:s, s:s}}}", "name", "sidecar-identity", "csi",
            "driver", "csi.cert-manager.io", "readOnly", 1, "volumeAttributes",
            "csi.cert-manager.io/issuer-name", m->identity_issuer,
            "csi.cert-manager.io/issuer-kind", m->identity_issuer_kind,
            "csi.cert-manager.io/uri-sans", san, "csi.cert-manager.io/common-name",
            "${SERVICE_ACCOUNT_NAME}.${POD_NAMESPACE}", "csi.cert-manager.io/fs-group", uid);
        sc_free(san);
        return v;
    }
    return json_pack("{s:s, s:{s:[{s:{s:s, s:i, s:s}}, {s:{s:s, s:[{s:s, s:s}], s:b}}]}}", "name",
                     "sidecar-identity", "projected", "sources", "serviceAccountToken", "audience",
                     m->identity_audience, "expirationSeconds", 43200, "path", "token", "configMap",
                     "name", m->ca_configmap, "items", "key", "ca.crt", "path", "ca.crt",
                     "optional", 1);
}

static int first_app_port(json_t *ctrs)
{
    size_t i, k;
    json_t *ctr, *p;
    json_array_foreach(ctrs, i, ctr)
    {
        json_array_foreach(json_object_get(ctr, "ports"), k, p)
        {
            json_t *proto = json_object_get(p, "protocol");
            json_t *num = json_object_get(p, "containerPort");
            if ((!proto ||
                 (json_is_string(proto) && strcmp(json_string_value(proto), "TCP") == 0)) &&
                json_is_integer(num)) {
                return (int)json_integer_value(num);
            }
        }
    }
    return 0;
}

static json_t *proxy_container(struct ctx *c, json_t *ctrs)
{
    json_t *args = json_pack("[s]", "proxy");
    if (c->rewrite) {
        /* The kubelet reaches the rewritten probes on the pod's address; the admin port stays on
         * loopback. */
        char status[32];
        snprintf(status, sizeof(status), "0.0.0.0:%d", PROXY_STATUS_PORT);
        add_arg(args, "--status-listen", status);
    }
    int app = first_app_port(ctrs);
    if (app > 0) {
        char up[32];
        snprintf(up, sizeof(up), "127.0.0.1:%d", app);
        add_arg(args, "--upstream", up);
    }
    if (c->m->identity == INJECT_ID_CSI) {
        /* The CSI driver writes tls.crt, tls.key and ca.crt: the proxy's mesh identity. */
        add_arg(args, "--identity-dir", IDENTITY_DIR);
        add_arg(args, "--trust-domain", c->m->trust_domain);
    }
    json_t *ctr = sidecar(c, "sidecar-proxy", args, PROXY_ADMIN_PORT);
    json_t *env = json_object_get(ctr, "env");
    json_array_append_new(
        env, json_pack("{s:s, s:s}", "name", "SIDECAR_TRUST_DOMAIN", "value", c->m->trust_domain));
    if (json_object_size(c->probes)) {
        char *p = json_dumps(c->probes, JSON_COMPACT);
        json_array_append_new(env,
                              json_pack("{s:s, s:s}", "name", "SIDECAR_APP_PROBES", "value", p));
        sc_free(p);
    }
    if (c->m->identity != INJECT_ID_NONE) {
        mount(ctr, "sidecar-identity", IDENTITY_DIR, true);
    }
    if (!c->native && c->hold) {
        json_object_set_new(
            ctr, "lifecycle",
            json_pack("{s:{s:o}}", "postStart", "exec", exec_wait(PROXY_ADMIN_PORT, "120s")));
    }
    return ctr;
}

static int logs_container(struct ctx *c, json_t **out)
{
    int rc = 0;
    const char *path = ann_or(c, INJECT_PREFIX "logs-path", c->m->logs_path, &rc);
    const char *parser = ann_or(c, INJECT_PREFIX "logs-parser", c->m->logs_parser, &rc);
    json_t *outputs = json_array();
    rc = rc < 0 ? rc : ann_list(c, INJECT_PREFIX "logs-output", outputs, false);
    if (rc < 0) {
        goto out;
    }
    if (json_array_size(outputs) == 0) {
        add_strv(outputs, &c->m->logs_output);
    }
    if (path[0] != '/') {
        rc = bad(c, "metadata.annotations[" INJECT_PREFIX "logs-path]",
                 "\"%s\" is not an absolute path", path);
        goto out;
    }
    rc = check_mount_path(c, json_object_get(c->spec, "containers"), path);
    if (rc < 0) {
        goto out;
    }
    json_t *args = json_pack("[s]", "logs");
    char *glob = sc_asprintf("%s%s*.log", path, path[strlen(path) - 1] == '/' ? "" : "/");
    add_arg(args, "--path", glob);
    sc_free(glob);
    add_arg(args, "--db", STATE_DIR "/logs.db");
    add_arg(args, "--parser", parser);
    add_arg(args, "--field", "pod=$(POD_NAME)");
    add_arg(args, "--field", "namespace=$(POD_NAMESPACE)");
    size_t i;
    json_t *o;
    json_array_foreach(outputs, i, o)
    {
        add_arg(args, "--output", json_string_value(o));
    }
    json_t *ctr = sidecar(c, "sidecar-logs", args, LOGS_ADMIN_PORT);
    mount(ctr, "sidecar-logs", path, true);
    mount(ctr, "sidecar-state", STATE_DIR, false);
    json_t *ctrs = json_object_get(c->spec, "containers");
    json_t *app;
    json_array_foreach(ctrs, i, app)
    {
        mount(app, "sidecar-logs", path, false);
    }
    *out = ctr;
out:
    json_decref(outputs);
    return rc;
}

static int metrics_container(struct ctx *c, json_t **out)
{
    int rc = 0;
    const char *port =
        ann_or(c, INJECT_PREFIX "metrics-port", ann_or(c, "prometheus.io/port", NULL, &rc), &rc);
    const char *path = ann_or(c, INJECT_PREFIX "metrics-path",
                              ann_or(c, "prometheus.io/path", "/metrics", &rc), &rc);
    if (rc < 0) {
        return rc;
    }
    uint64_t p = 0;
    if (port && (sc_str_to_u64(sc_str_c(port), 65535, &p) < 0 || p == 0)) {
        return bad(c, "metadata.annotations[prometheus.io/port]", "\"%s\" is not a port number",
                   port);
    }
    if ((int64_t)p == c->m->metrics_port) {
        return bad(c, "metadata.annotations[prometheus.io/port]",
                   "the app's metrics port %s is the metrics sidecar's own; set metrics_port in "
                   "the mesh config to another port",
                   port);
    }
    size_t i, k;
    json_t *ctr, *cp;
    json_array_foreach(json_object_get(c->spec, "containers"), i, ctr)
    {
        json_array_foreach(json_object_get(ctr, "ports"), k, cp)
        {
            json_t *num = json_object_get(cp, "containerPort");
            if (json_is_integer(num) && json_integer_value(num) == c->m->metrics_port) {
                char field[128];
                snprintf(field, sizeof(field), "spec.containers[%zu].ports[%zu].containerPort", i,
                         k);
                return bad(c, field,
                           "port %lld is the metrics sidecar's; set metrics_port in the mesh "
                           "config to another port",
                           (long long)c->m->metrics_port);
            }
        }
    }
    json_t *args = json_pack("[s]", "metrics");
    char buf[600];
    snprintf(buf, sizeof(buf), "0.0.0.0:%lld", (long long)c->m->metrics_port);
    add_arg(args, "--listen", buf);
    if (p) {
        snprintf(buf, sizeof(buf), "http://127.0.0.1:%llu%s%.400s", (unsigned long long)p,
                 path[0] == '/' ? "" : "/", path);
        add_arg(args, "--scrape", buf);
    }
    add_arg(args, "--label", "pod=$(POD_NAME)");
    add_arg(args, "--label", "namespace=$(POD_NAMESPACE)");
    *out = sidecar(c, "sidecar-metrics", args, METRICS_ADMIN_PORT);
    /* Istio's metrics merging: Prometheus scrapes the sidecar, which serves the app's metrics
     * with its own. */
    snprintf(buf, sizeof(buf), "%lld", (long long)c->m->metrics_port);
    if (!json_object_get(c->anns, "prometheus.io/scrape")) {
        json_object_set_new(c->anns, "prometheus.io/scrape", json_string("true"));
    }
    json_object_set_new(c->anns, "prometheus.io/port", json_string(buf));
    json_object_set_new(c->anns, "prometheus.io/path", json_string("/metrics"));
    return 0;
}

static int secrets_containers(struct ctx *c, json_t **init, json_t **side)
{
    if (!c->m->podinfo) {
        return bad(c, "metadata.annotations",
                   "the secrets role reads the pod's annotations from the podinfo volume, which "
                   "the mesh config turns off (podinfo: false)");
    }
    int rc = check_mount_path(c, json_object_get(c->spec, "containers"), VAULT_DIR);
    const char *addr = ann_or(c, "vault.hashicorp.com/service", c->m->vault_addr, &rc);
    if (rc < 0) {
        return rc;
    }
    /* Injected after the service-account admission plugin ran: copy the app's token mount. */
    json_t *token = NULL;
    size_t i, k;
    json_t *ctr, *vm;
    json_array_foreach(json_object_get(c->spec, "containers"), i, ctr)
    {
        json_array_foreach(json_object_get(ctr, "volumeMounts"), k, vm)
        {
            json_t *mp = json_object_get(vm, "mountPath");
            if (!token && json_is_string(mp) && strcmp(json_string_value(mp), SA_TOKEN_DIR) == 0) {
                token = vm;
            }
        }
    }
    for (int pass = 0; pass < 2; pass++) {
        bool is_init = pass == 0;
        if (is_init ? !c->secrets_init : !c->secrets_sidecar) {
            continue;
        }
        json_t *args = json_pack("[s]", "secrets");
        add_arg(args, "--annotations-file", PODINFO_DIR "/annotations");
        add_arg(args, "--dest-dir", VAULT_DIR);
        add_arg(args, "--vault-addr", addr);
        if (is_init) {
            json_array_append_new(args, json_string("--once"));
        }
        json_t *s = sidecar(c, is_init ? "sidecar-secrets-init" : "sidecar-secrets", args,
                            is_init ? 0 : SECRETS_ADMIN_PORT);
        mount(s, "sidecar-secrets", VAULT_DIR, false);
        if (token) {
            json_array_append(json_object_get(s, "volumeMounts"), token);
        }
        *(is_init ? init : side) = s;
    }
    json_array_foreach(json_object_get(c->spec, "containers"), i, ctr)
    {
        mount(ctr, "sidecar-secrets", VAULT_DIR, true);
    }
    return 0;
}

/* ---- the whole ---- */

static void put(json_t *list, size_t *at, json_t *ctr)
{
    if (!ctr) {
        return;
    }
    if (at) {
        json_array_insert_new(list, (*at)++, ctr);
    } else {
        json_array_append_new(list, ctr);
    }
}

static int build(struct ctx *c)
{
    json_t *spec = c->spec;
    int rc = check_names(c, "containers", our_containers, SC_ARRAY_LEN(our_containers));
    rc = rc < 0 ? rc
                : check_names(c, "initContainers", our_containers, SC_ARRAY_LEN(our_containers));
    rc = rc < 0 ? rc : check_names(c, "volumes", our_volumes, SC_ARRAY_LEN(our_volumes));
    if (rc < 0) {
        return rc;
    }
    json_t *ctrs = child_arr(c, spec, "containers", "spec.containers");
    if (!ctrs) {
        return SC_ECONFIG;
    }
    if (json_array_size(ctrs) == 0) {
        return bad(c, "spec.containers", "a pod needs at least one container");
    }
    size_t i;
    json_t *ctr;
    json_array_foreach(ctrs, i, ctr)
    {
        char field[64];
        snprintf(field, sizeof(field), "spec.containers[%zu].volumeMounts", i);
        if (!child_arr(c, ctr, "volumeMounts", field)) {
            return SC_ECONFIG;
        }
        if (c->rewrite && (rc = rewrite_probes(c, ctr, i)) < 0) {
            return rc;
        }
    }
    json_t *proxy = NULL, *logs = NULL, *metrics = NULL, *sec_init = NULL, *sec = NULL;
    json_t *excl_in = json_array(), *excl_out = json_array(), *cidrs = json_array();
    json_t *ipt = NULL;
    if (c->role[R_LOGS]) {
        rc = logs_container(c, &logs);
    }
    if (rc == 0 && c->role[R_METRICS]) {
        rc = metrics_container(c, &metrics);
    }
    if (rc == 0 && c->role[R_SECRETS]) {
        rc = secrets_containers(c, &sec_init, &sec);
    }
    if (rc == 0 && c->role[R_PROXY]) {
        char port[16];
        snprintf(port, sizeof(port), "%d", PROXY_ADMIN_PORT);
        json_array_append_new(excl_in, json_string(port));
        if (c->rewrite) {
            snprintf(port, sizeof(port), "%d", PROXY_STATUS_PORT);
            json_array_append_new(excl_in, json_string(port));
        }
        if (c->role[R_METRICS]) {
            snprintf(port, sizeof(port), "%lld", (long long)c->m->metrics_port);
            json_array_append_new(excl_in, json_string(port));
        }
        add_strv(excl_in, &c->m->exclude_inbound_ports);
        add_strv(excl_out, &c->m->exclude_outbound_ports);
        add_strv(cidrs, &c->m->exclude_outbound_cidrs);
        rc = ann_list(c, INJECT_PREFIX "proxy-exclude-inbound-ports", excl_in, true);
        rc =
            rc < 0 ? rc : ann_list(c, INJECT_PREFIX "proxy-exclude-outbound-ports", excl_out, true);
        rc = rc < 0 ? rc : ann_list(c, INJECT_PREFIX "proxy-exclude-outbound-cidrs", cidrs, false);
        if (rc == 0) {
            proxy = proxy_container(c, ctrs);
            int cni = ann_bool(c, INJECT_PREFIX "cni");
            rc = cni == SC_ECONFIG ? cni : 0;
            if (rc == 0 && !(cni >= 0 ? cni == 1 : c->o->cni)) {
                ipt = iptables_init(c, excl_in, excl_out, cidrs);
            }
        }
    }
    json_decref(excl_in);
    json_decref(excl_out);
    json_decref(cidrs);
    json_t *inits = rc == 0 ? child_arr(c, spec, "initContainers", "spec.initContainers") : NULL;
    json_t *vols = inits ? child_arr(c, spec, "volumes", "spec.volumes") : NULL;
    if (!vols) {
        json_decref(proxy);
        json_decref(logs);
        json_decref(metrics);
        json_decref(sec_init);
        json_decref(sec);
        json_decref(ipt);
        return rc < 0 ? rc : SC_ECONFIG;
    }
    /* Order: interception first; then the proxy, so every later container (the user's init
     * containers too) has the network; then the other sidecars; the user's init containers; the
     * secrets init container last unless vault.hashicorp.com/agent-init-first. */
    size_t at = 0;
    put(inits, &at, ipt);
    if (c->native) {
        put(inits, &at, proxy);
        if (c->secrets_first) {
            put(inits, &at, sec_init);
            sec_init = NULL;
        }
        put(inits, &at, logs);
        put(inits, &at, metrics);
        put(inits, &at, sec);
    } else {
        size_t front = 0;
        put(ctrs, &front, proxy);
        if (c->secrets_first) {
            put(inits, &at, sec_init);
            sec_init = NULL;
        }
        put(ctrs, NULL, logs);
        put(ctrs, NULL, metrics);
        put(ctrs, NULL, sec);
    }
    put(inits, NULL, sec_init);
    if (json_array_size(inits) == 0) {
        json_object_del(spec, "initContainers");
    }
    if (c->m->podinfo) {
        json_array_append_new(vols, json_pack("{s:s, s:{s:[{s:s, s:{s:s}}, {s:s, s:{s:s}}]}}",
                                              "name", "sidecar-podinfo", "downwardAPI", "items",
                                              "path", "labels", "fieldRef", "fieldPath",
                                              "metadata.labels", "path", "annotations", "fieldRef",
                                              "fieldPath", "metadata.annotations"));
    }
    if (c->role[R_PROXY] && c->m->identity != INJECT_ID_NONE) {
        json_array_append_new(vols, identity_volume(c));
    }
    if (c->role[R_LOGS]) {
        json_array_append_new(vols, json_pack("{s:s, s:{}}", "name", "sidecar-logs", "emptyDir"));
        json_array_append_new(vols, json_pack("{s:s, s:{}}", "name", "sidecar-state", "emptyDir"));
    }
    if (c->role[R_SECRETS]) {
        json_array_append_new(vols, json_pack("{s:s, s:{s:s}}", "name", "sidecar-secrets",
                                              "emptyDir", "medium", "Memory"));
        /* The Vault injector's own status: it must not mutate this pod a second time. */
        json_object_set_new(c->anns, "vault.hashicorp.com/agent-inject-status",
                            json_string("injected"));
    }
    return 0;
}

int inject_template(const struct inject_opts *o, json_t *tmpl, const char *where, const char **why,
                    char **err)
{
    struct ctx c = { .o = o, .m = o->mesh, .where = where ? where : "", .err = err };
    *why = NULL;
    if (!json_is_object(tmpl)) {
        return bad(&c, "", "must be a mapping");
    }
    /* Created here only if missing, and removed again when nothing is injected. */
    json_t *m0 = json_object_get(tmpl, "metadata");
    json_t *a0 = json_object_get(m0, "annotations");
    bool had_meta = m0 && !json_is_null(m0), meta_null = json_is_null(m0);
    bool had_anns = a0 && !json_is_null(a0), anns_null = json_is_null(a0);
    c.meta = child_obj(&c, tmpl, "metadata", "metadata");
    c.anns = c.meta ? child_obj(&c, c.meta, "annotations", "metadata.annotations") : NULL;
    c.spec = c.anns ? json_object_get(tmpl, "spec") : NULL;
    if (!c.anns) {
        return SC_ECONFIG;
    }
    if (!json_is_object(c.spec)) {
        return bad(&c, "spec", "must be a mapping");
    }
    int rc = decide(&c, why);
    if (rc <= 0) {
        if (anns_null) {
            json_object_set_new(c.meta, "annotations", json_null());
        } else if (!had_anns) {
            json_object_del(c.meta, "annotations");
        }
        if (meta_null) {
            json_object_set_new(tmpl, "metadata", json_null());
        } else if (!had_meta) {
            json_object_del(tmpl, "metadata");
        }
        return rc;
    }
    c.probes = json_object();
    /* App containers without volumeMounts get the list only if a mount is added to it. */
    json_t *bare = json_array();
    size_t i;
    json_t *ctr;
    json_array_foreach(json_object_get(c.spec, "containers"), i, ctr)
    {
        if (json_is_object(ctr) && !json_object_get(ctr, "volumeMounts")) {
            json_array_append(bare, ctr);
        }
    }
    bool had_vols = json_object_get(c.spec, "volumes") != NULL;
    rc = build(&c);
    json_t *vols = json_object_get(c.spec, "volumes");
    if (!had_vols && json_is_array(vols) && json_array_size(vols) == 0) {
        json_object_del(c.spec, "volumes");
    }
    json_array_foreach(bare, i, ctr)
    {
        json_t *vm = json_object_get(ctr, "volumeMounts");
        if (json_is_array(vm) && json_array_size(vm) == 0) {
            json_object_del(ctr, "volumeMounts");
        }
    }
    json_decref(bare);
    if (rc == 0) {
        /* Short enough for runtimes that hold annotations to label limits (63 bytes, podman
         * kube play): the names added follow from the roles and the mode. */
        struct sc_buf st;
        sc_buf_init(&st, 256);
        sc_buf_appendf(&st, "version=%s;roles=", SC_VERSION);
        bool first = true;
        for (int r = 0; r < R_N; r++) {
            if (c.role[r]) {
                sc_buf_appendf(&st, "%s%s", first ? "" : ",", role_names[r]);
                first = false;
            }
        }
        sc_buf_appendf(&st, ";mode=%s", c.native ? "native" : "classic");
        json_object_set_new(c.anns, INJECT_STATUS, json_string(sc_buf_cstr(&st)));
        sc_buf_cleanup(&st);
        rc = 1;
    }
    json_decref(c.probes);
    return rc;
}

// SPDX-License-Identifier: Apache-2.0
// The configuration front end (see proxy_front.h): it tells the formats apart, dispatches each
// document to the translator of its kind through one registry, and loads the native document the
// translators built with the proxy's own option tables, so every value is validated exactly as if
// the user had written it in our format, at the position of the text they wrote.
#include "roles/proxy/proxy_front.h"
#include "roles/proxy/proxy_peerauth.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "core/file.h"
#include "core/value.h"
#include "roles/proxy/proxy_route_query.h"

#define FRONT_MAX_INPUT ((size_t)4 << 20)
#define MSG_MAX 2048

/* The registry of Kubernetes-style kinds: one line per translator. */
static const struct proxy_front_kind *const registries[] = { proxy_istio_kinds,
                                                             proxy_istio_authz_kinds,
                                                             proxy_istio_telemetry_kinds, NULL };

static void vmsg(struct proxy_front *f, struct sc_buf *b, const struct sc_ynode *at,
                 const char *path, const char *fmt, va_list ap)
    __attribute__((format(printf, 5, 0)));

static void vmsg(struct proxy_front *f, struct sc_buf *b, const struct sc_ynode *at,
                 const char *path, const char *fmt, va_list ap)
{
    struct sc_buf raw;
    sc_buf_init(&raw, MSG_MAX + PROXY_FRONT_PATH);
    if (path && *path) {
        sc_buf_appendf(&raw, "%s: ", path);
    }
    sc_buf_vappendf(&raw, fmt, ap);
    /* Paths and messages quote the user's keys and values: control bytes are escaped, so a
     * message stays one readable line. */
    sc_buf_init(b, 4 * raw.len + strlen(f->name) + 64);
    sc_buf_appendf(b, "%s:%u:%u: ", f->name, sc_ynode_line(at), sc_ynode_col(at));
    for (size_t i = 0; i < raw.len; i++) {
        unsigned char c = (unsigned char)raw.p[i];
        if (c < 0x20 || c == 0x7f) {
            sc_buf_appendf(b, "\\x%02x", c);
        } else {
            sc_buf_append(b, raw.p + i, 1);
        }
    }
    sc_buf_cleanup(&raw);
}

void proxy_front_path(char *out, const char *parent, const char *fmt, ...)
{
    int n = snprintf(out, PROXY_FRONT_PATH, "%s", parent ? parent : "");
    if (n < 0 || n >= PROXY_FRONT_PATH) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out + n, PROXY_FRONT_PATH - (size_t)n, fmt, ap);
    va_end(ap);
}

int proxy_front_refuse(struct proxy_front *f, const struct sc_ynode *at, const char *path,
                       const char *fmt, ...)
{
    if (f->err) {
        return SC_ECONFIG;
    }
    struct sc_buf b;
    va_list ap;
    va_start(ap, fmt);
    vmsg(f, &b, at, path, fmt, ap);
    va_end(ap);
    f->err = sc_strdup(sc_buf_cstr(&b));
    sc_buf_cleanup(&b);
    return SC_ECONFIG;
}

void proxy_front_note(struct proxy_front *f, const struct sc_ynode *at, const char *path,
                      const char *fmt, ...)
{
    if (f->notes->n >= 1024) {
        return; /* bounded: a file of 100,000 ignored fields still loads with the first notes */
    }
    struct sc_buf b;
    va_list ap;
    va_start(ap, fmt);
    vmsg(f, &b, at, path, fmt, ap);
    va_end(ap);
    f->notes->v = sc_reallocarray(f->notes->v, f->notes->n + 1, sizeof(*f->notes->v));
    f->notes->v[f->notes->n++] = sc_strdup(sc_buf_cstr(&b));
    sc_buf_cleanup(&b);
}

static bool in_list(const char *const *l, const char *k)
{
    for (size_t i = 0; l && l[i]; i++) {
        if (strcmp(l[i], k) == 0) {
            return true;
        }
    }
    return false;
}

int proxy_front_keys(struct proxy_front *f, const struct sc_ynode *n, const char *path,
                     const char *const *handled, const char *const *noted)
{
    if (sc_ynode_kind(n) == SC_Y_NULL) {
        return 0;
    }
    if (sc_ynode_kind(n) != SC_Y_MAP) {
        return proxy_front_refuse(f, n, path, "expected a mapping");
    }
    if (sc_ynode_count(n) > PROXY_FRONT_MAX_KEYS) {
        /* No Envoy or Istio object has that many fields; the bound keeps the checks linear. */
        return proxy_front_refuse(f, n, path, "more than %d keys", PROXY_FRONT_MAX_KEYS);
    }
    for (size_t i = 0; i < sc_ynode_count(n); i++) {
        const struct sc_ynode *k = sc_ynode_key(n, i);
        const char *ks = sc_ynode_str(k);
        if (!ks) {
            return proxy_front_refuse(f, k, path, "expected a string as key");
        }
        for (size_t j = 0; j < i; j++) {
            const char *prev = sc_ynode_str(sc_ynode_key(n, j));
            if (prev && strcmp(prev, ks) == 0) {
                return proxy_front_refuse(f, k, path, "duplicate key \"%.64s\"", ks);
            }
        }
        if (in_list(handled, ks)) {
            continue;
        }
        if (in_list(noted, ks)) {
            proxy_front_note(f, k, path, "%.64s is accepted and has no effect here", ks);
            continue;
        }
        return proxy_front_refuse(f, k, path, "%.64s is not supported", ks);
    }
    return 0;
}

const char *proxy_front_scalar(struct proxy_front *f, const struct sc_ynode *n, const char *path,
                               int *rc)
{
    *rc = 0;
    enum sc_ykind k = sc_ynode_kind(n);
    if (k == SC_Y_STR) {
        return sc_ynode_str(n);
    }
    if (k != SC_Y_NULL) {
        *rc = proxy_front_refuse(f, n, path, "expected a single value");
    }
    return NULL;
}

const char *proxy_front_str(struct proxy_front *f, const struct sc_ynode *m, const char *key,
                            const char *path)
{
    int rc;
    return proxy_front_scalar(f, sc_ynode_get(m, key), path, &rc);
}

const struct proxy_front_enum *proxy_front_enum_find(const struct proxy_front_enum *vals,
                                                     const char *s)
{
    for (size_t i = 0; s && vals[i].name; i++) {
        if (strcmp(vals[i].name, s) == 0) {
            return &vals[i];
        }
    }
    return NULL;
}

const struct proxy_front_enum *proxy_front_enum(struct proxy_front *f, const struct sc_ynode *m,
                                                const char *key, const char *path,
                                                const char *label,
                                                const struct proxy_front_enum *vals)
{
    const char *s = proxy_front_str(f, m, key, path);
    const struct proxy_front_enum *e = proxy_front_enum_find(vals, s);
    if (s && !e) {
        char names[256];
        size_t n = 0;
        names[0] = '\0';
        for (size_t i = 0; vals[i].name && n < sizeof(names); i++) {
            int w = snprintf(names + n, sizeof(names) - n, "%s%s", i ? ", " : "", vals[i].name);
            n += w > 0 ? (size_t)w : 0;
        }
        proxy_front_refuse(f, sc_ynode_get(m, key), path, "%s %.32s is not one of %s",
                           label ? label : key, s, names);
    }
    return e;
}

const struct proxy_front_enum proxy_front_retry_on[] = {
    { "5xx", "5xx" },
    { "gateway-error", "gateway-error" },
    { "connect-failure", "connect-failure" },
    { "reset", "reset" },
    { "refused-stream", "reset" },
    { "retriable-status-codes", "retriable-status-codes" },
    /* the gRPC statuses concern gRPC calls only */
    { "cancelled", "cancelled" },
    { "deadline-exceeded", "deadline-exceeded" },
    { "internal", "internal" },
    { "resource-exhausted", "resource-exhausted" },
    { "unavailable", "unavailable" },
    { NULL, NULL }
};

void proxy_front_put(struct proxy_front *f, struct sc_ynode *map, const char *key,
                     const struct sc_ynode *at, const char *value)
{
    struct sc_ynode *v = sc_ytree_str(f->out, at, value);
    if (!v || sc_ynode_put(f->out, map, key, v) < 0) {
        proxy_front_refuse(f, at, NULL, "configuration too large");
    }
}

struct sc_ynode *proxy_front_list(struct proxy_front *f, const char *key, const struct sc_ynode *at)
{
    struct sc_ynode *l = sc_ynode_get_mut(f->root, key);
    if (l && sc_ynode_kind(l) == SC_Y_SEQ) {
        return l;
    }
    if (l) {
        proxy_front_refuse(f, l, key, "expected a list");
        return NULL;
    }
    l = sc_ytree_seq(f->out, at);
    if (!l || sc_ynode_put(f->out, f->root, key, l) < 0) {
        proxy_front_refuse(f, at, NULL, "configuration too large");
        return NULL;
    }
    return l;
}

int proxy_front_duration(const char *s, char *out, size_t outlen)
{
    /* protobuf JSON's "0.250s" and Istio's "10ms", "1m", "1h" are our syntax already. */
    uint64_t ms;
    char d[SC_DURATION_MAX];
    if (sc_value_parse_duration(s, &ms) < 0) {
        return -EINVAL;
    }
    sc_value_format_duration(ms, d);
    snprintf(out, outlen, "%s", d);
    return 0;
}

struct sc_ynode *proxy_front_map(struct proxy_front *f, const struct sc_ynode *at)
{
    struct sc_ynode *m = sc_ytree_map(f->out, at);
    if (!m) {
        proxy_front_refuse(f, at, NULL, "configuration too large");
    }
    return m;
}

struct sc_ynode *proxy_front_seq(struct proxy_front *f, const struct sc_ynode *at)
{
    struct sc_ynode *m = sc_ytree_seq(f->out, at);
    if (!m) {
        proxy_front_refuse(f, at, NULL, "configuration too large");
    }
    return m;
}

void proxy_front_set(struct proxy_front *f, struct sc_ynode *map, const char *key,
                     struct sc_ynode *v, const struct sc_ynode *at)
{
    if (!map || !v || sc_ynode_put(f->out, map, key, v) < 0) {
        proxy_front_refuse(f, at, NULL, "configuration too large");
    }
}

void proxy_front_push(struct proxy_front *f, struct sc_ynode *seq, struct sc_ynode *v,
                      const struct sc_ynode *at)
{
    if (!seq || !v || sc_ynode_push(f->out, seq, v) < 0) {
        proxy_front_refuse(f, at, NULL, "configuration too large");
    }
}

void proxy_front_copy(struct proxy_front *f, struct sc_ynode *dst, const char *key2,
                      const struct sc_ynode *src, const char *key)
{
    const struct sc_ynode *v = sc_ynode_get(src, key);
    if (v && sc_ynode_kind(v) != SC_Y_NULL) {
        proxy_front_set(f, dst, key2, sc_ytree_copy(f->out, v), v);
    }
}

void proxy_front_put_duration(struct proxy_front *f, struct sc_ynode *dst, const char *key2,
                              const struct sc_ynode *src, const char *key, const char *path,
                              const char *def)
{
    const struct sc_ynode *v = sc_ynode_get(src, key);
    int rc;
    const char *s = proxy_front_scalar(f, v, path, &rc);
    if (!s) {
        if (def && rc == 0) {
            proxy_front_put(f, dst, key2, v ? v : src, def);
        }
        return;
    }
    char d[32];
    if (proxy_front_duration(s, d, sizeof(d)) < 0) {
        proxy_front_refuse(f, v, path, "%s: invalid duration \"%.64s\" (expected e.g. 5s, 0.25s)",
                           key, s);
        return;
    }
    proxy_front_put(f, dst, key2, v, d);
}

static bool version_ok(const struct proxy_front_kind *k, const char *v)
{
    return v && in_list(k->api_versions, v);
}

/* Dispatches one Kubernetes-style document to its kind's translator. */
static int add_resource(struct proxy_front *f, const struct sc_ynode *doc, size_t i)
{
    char path[64];
    snprintf(path, sizeof(path), "document %zu", i + 1);
    const struct sc_ynode *kn = sc_ynode_get(doc, "kind");
    const struct sc_ynode *vn = sc_ynode_get(doc, "apiVersion");
    const char *kind = sc_ynode_str(kn), *ver = sc_ynode_str(vn);
    if (!kind || !ver) {
        return proxy_front_refuse(f,
                                  kind ? doc
                                  : kn ? kn
                                       : doc,
                                  path, "a resource needs apiVersion and kind");
    }
    for (size_t r = 0; registries[r]; r++) {
        for (const struct proxy_front_kind *k = registries[r]; k->kind; k++) {
            if (strcmp(k->kind, kind) != 0) {
                continue;
            }
            if (!version_ok(k, ver)) {
                return proxy_front_refuse(f, vn, path, "%s %.64s is not supported", kind, ver);
            }
            snprintf(path, sizeof(path), "%s", kind);
            return k->add(f, doc, path);
        }
    }
    return proxy_front_refuse(f, kn, path, "kind %.64s is not supported", kind);
}

static bool is_resource(const struct sc_ynode *doc)
{
    return sc_ynode_get(doc, "kind") || sc_ynode_get(doc, "apiVersion");
}

static void front_free(struct proxy_front *f)
{
    sc_free(f->vs);
    sc_free(f->dr);
    sc_free(f->se);
    sc_free(f->sidecar);
    sc_free(f->tel);
    sc_free(f->err);
    if (f->workload) {
        proxy_workload_cleanup(f->workload);
        sc_free(f->workload);
    }
}

/* The workload's namespace for Istio's short names: the native document's workload.namespace
 * when written literally, else $POD_NAMESPACE, else "default" (as the peer authentication). */
static const char *workload_ns(const struct sc_ynode *native)
{
    const char *ns = sc_ynode_str(sc_ynode_get(sc_ynode_get(native, "workload"), "namespace"));
    if (ns && *ns && !strchr(ns, '$')) {
        return ns;
    }
    const char *env = getenv("POD_NAMESPACE");
    return env && *env ? env : "default";
}

int proxy_front_translate(const char *name, const char *text, size_t len, bool joined,
                          struct sc_strv *notes, struct sc_ytree **out, struct sc_ynode **root,
                          bool *native, char **err)
{
    struct sc_ytree *in = NULL;
    struct proxy_front f = { .name = name, .notes = notes };
    *out = NULL;
    *root = NULL;
    *native = false;
    if (sc_ytree_parse(name, text, len, &in, err) < 0) {
        return SC_ECONFIG;
    }
    size_t ndocs = sc_ytree_ndocs(in);
    const struct sc_ynode *envoy = NULL;
    size_t nres = 0;
    for (size_t i = 0; i < ndocs; i++) {
        const struct sc_ynode *d = sc_ytree_doc(in, i);
        if (sc_ynode_kind(d) == SC_Y_NULL) {
            continue;
        }
        if (sc_ynode_kind(d) != SC_Y_MAP) {
            proxy_front_refuse(&f, d, NULL, "expected a mapping at the top level");
            goto done;
        }
        if (sc_ynode_get(d, "static_resources")) {
            if (envoy || ndocs > 1) {
                proxy_front_refuse(&f, d, NULL,
                                   "an Envoy bootstrap must be the file's only "
                                   "document");
                goto done;
            }
            envoy = d;
        } else if (is_resource(d)) {
            nres++;
        } else if (proxy_istio_is_mesh(d)) {
            if (f.mesh) {
                proxy_front_refuse(&f, d, NULL, "a second MeshConfig document");
                goto done;
            }
            f.mesh = d;
            nres++;
        } else if (f.native) {
            proxy_front_refuse(&f, d, NULL,
                               "a second document of the proxy's own format "
                               "(put resources next to one proxy document)");
            goto done;
        } else {
            f.native = d;
        }
    }
    if (!envoy && nres == 0 && !joined) {
        *native = true; /* the proxy's own format: loaded as it always was */
        goto done;
    }
    if (ndocs > PROXY_FRONT_MAX_DOCS) {
        proxy_front_refuse(&f, sc_ytree_doc(in, PROXY_FRONT_MAX_DOCS), NULL,
                           "more than %d documents", PROXY_FRONT_MAX_DOCS);
        goto done;
    }
    f.out = sc_ytree_new(name);
    f.root = f.native ? sc_ytree_copy(f.out, f.native) : sc_ytree_map(f.out, NULL);
    if (!f.root) {
        proxy_front_refuse(&f, f.native, NULL, "configuration too large");
        goto done;
    }
    f.ns = workload_ns(f.native);
    if (envoy) {
        proxy_envoy_translate(&f, envoy);
        goto done;
    }
    for (size_t i = 0; i < ndocs && !f.err; i++) {
        const struct sc_ynode *d = sc_ytree_doc(in, i);
        if (sc_ynode_kind(d) == SC_Y_MAP && is_resource(d)) {
            add_resource(&f, d, i);
        }
    }
    if (!f.err) {
        proxy_istio_finish(&f);
    }
    if (!f.err) {
        proxy_istio_mesh_finish(&f);
    }
    if (!f.err) {
        proxy_istio_telemetry_finish(&f);
    }
done:
    if (f.err) {
        *err = f.err;
        f.err = NULL;
        sc_ytree_free(f.out);
        sc_ytree_free(in);
        front_free(&f);
        return SC_ECONFIG;
    }
    /* The output borrows nothing from the input: copies and built strings own their text. */
    sc_ytree_free(in);
    front_free(&f);
    *out = f.out;
    *root = f.root;
    return 0;
}

/* The files of a -c directory, joined into one stream with a document marker between them; <starts>
 * holds the line where each file begins, so messages can name it. */
struct joined {
    struct sc_buf text;
    char **names; /* "<dir>/<file>" */
    size_t *starts;
    size_t n;
};

static bool config_name(const char *n)
{
    size_t len = strlen(n);
    /* Hidden entries include Kubernetes' "..data" and "..<timestamp>" of a mounted ConfigMap. */
    return n[0] != '.' && ((len > 5 && strcmp(n + len - 5, ".yaml") == 0) ||
                           (len > 4 && strcmp(n + len - 4, ".yml") == 0) ||
                           (len > 5 && strcmp(n + len - 5, ".json") == 0));
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Whether YAML text starts (after blank and comment lines) with a directive ("%YAML 1.2"). */
static bool directives(const char *p, size_t len)
{
    size_t i = 0;
    while (i < len) {
        while (i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r')) {
            i++;
        }
        if (i < len && (p[i] == '#' || p[i] == '\n')) {
            while (i < len && p[i] != '\n') {
                i++;
            }
            i++;
            continue;
        }
        return i < len && p[i] == '%';
    }
    return false;
}

static size_t count_lines(const char *p, size_t len)
{
    size_t n = 0;
    for (const char *q = p; (q = memchr(q, '\n', len - (size_t)(q - p))) != NULL; q++) {
        n++;
    }
    return n;
}

/* Appends file <name> (taken) to the stream <j>, whose next line is <*line>. */
static int join_file(struct joined *j, char *name, size_t *line, char **err)
{
    struct sc_buf one;
    sc_buf_init(&one, FRONT_MAX_INPUT);
    int r = sc_file_read(name, &one);
    if (r < 0 || one.len + 8 > j->text.max - j->text.len) {
        *err = r < 0 && r != SC_ETOOBIG
                   ? sc_asprintf("%s: cannot read: %s", name, sc_strerror(r))
                   : sc_asprintf("%s:1:1: input too large (over %zu MiB with the other files)",
                                 name, FRONT_MAX_INPUT >> 20);
        sc_free(name);
        sc_buf_cleanup(&one);
        return SC_ECONFIG;
    }
    if (j->n) {
        /* A new document: "---", or "..." before a file with directives of its own. */
        sc_buf_append_cstr(&j->text, directives(one.p, one.len) ? "...\n" : "---\n");
        (*line)++;
    }
    j->names = sc_reallocarray(j->names, j->n + 1, sizeof(*j->names));
    j->starts = sc_reallocarray(j->starts, j->n + 1, sizeof(*j->starts));
    j->names[j->n] = name;
    j->starts[j->n++] = *line;
    sc_buf_append(&j->text, one.p, one.len);
    bool nl = one.len && one.p[one.len - 1] != '\n';
    if (nl) {
        sc_buf_append_cstr(&j->text, "\n");
    }
    *line += count_lines(one.p, one.len) + nl;
    sc_buf_cleanup(&one);
    return 0;
}

/* Appends the configuration files of directory <dir>, in name order, to <j>. */
static int join_dir(const char *dir, struct joined *j, size_t *line, char **err)
{
    DIR *d = opendir(dir);
    if (!d) {
        *err = sc_asprintf("%s: cannot read: %s", dir, sc_strerror(-errno));
        return SC_ECONFIG;
    }
    char **files = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n + j->n < PROXY_FRONT_MAX_FILES) {
        if (config_name(e->d_name)) {
            files = sc_reallocarray(files, n + 1, sizeof(*files));
            files[n++] = sc_strdup(e->d_name);
        }
    }
    closedir(d);
    if (n) {
        qsort(files, n, sizeof(*files), by_name);
    }
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (rc == 0) {
            rc = join_file(j, sc_asprintf("%s/%s", dir, files[i]), line, err);
        }
        sc_free(files[i]);
    }
    sc_free(files);
    if (rc == 0 && n == 0) {
        *err = sc_asprintf("%s: no .yaml, .yml or .json files", dir);
        rc = SC_ECONFIG;
    }
    return rc;
}

/* Joins the -c files <paths> (a directory stands for its configuration files) into <j>, in the
 * order given. */
static int join_paths(const char *const *paths, size_t npaths, struct joined *j, char **err)
{
    size_t line = 1;
    for (size_t i = 0; i < npaths; i++) {
        struct stat st;
        int rc;
        if (j->n >= PROXY_FRONT_MAX_FILES) {
            *err = sc_asprintf("%s: more than %d configuration files", paths[i],
                               PROXY_FRONT_MAX_FILES);
            return SC_ECONFIG;
        }
        if (stat(paths[i], &st) == 0 && S_ISDIR(st.st_mode)) {
            rc = join_dir(paths[i], j, &line, err);
        } else {
            rc = join_file(j, sc_strdup(paths[i]), &line, err);
        }
        if (rc < 0) {
            return rc;
        }
    }
    return 0;
}

/* Rewrites "<joined>:<line>:<col>: ..." in <*msg> into the file and line it came from. */
static void unjoin(const struct joined *j, const char *dir, char **msg)
{
    size_t dl = strlen(dir);
    if (!*msg || strncmp(*msg, dir, dl) != 0 || (*msg)[dl] != ':') {
        return;
    }
    char *end = NULL;
    unsigned long line = strtoul(*msg + dl + 1, &end, 10);
    if (*end != ':' || line == 0) {
        return;
    }
    size_t i = 0;
    while (i + 1 < j->n && j->starts[i + 1] <= line) {
        i++;
    }
    char *out = sc_asprintf("%s:%lu%s", j->names[i], line - j->starts[i] + 1, end);
    sc_free(*msg);
    *msg = out;
}

int proxy_front_load(const struct sc_opt *table, void *blob, const char *const *paths,
                     size_t npaths, struct sc_strv *notes, char **derived, char **err)
{
    struct stat st;
    struct joined j = { 0 };
    sc_buf_init(&j.text, FRONT_MAX_INPUT);
    struct sc_buf *b = &j.text;
    int rc;
    const char *path = paths[0];
    bool joined = npaths > 1 || (stat(path, &st) == 0 && S_ISDIR(st.st_mode));
    /* Messages name the joined stream by its -c arguments until unjoin finds the file. */
    char *name = NULL;
    for (size_t i = 0; i < npaths; i++) {
        char *next = name ? sc_asprintf("%s,%s", name, paths[i]) : sc_strdup(paths[i]);
        sc_free(name);
        name = next;
    }
    if (joined) {
        rc = join_paths(paths, npaths, &j, err);
    } else {
        rc = sc_file_read(path, b);
        if (rc == SC_ETOOBIG) {
            *err =
                sc_asprintf("%s:1:1: input too large (over %zu MiB)", path, FRONT_MAX_INPUT >> 20);
        } else if (rc < 0) {
            *err = sc_asprintf("%s: cannot read: %s", path, sc_strerror(rc));
        }
        rc = rc < 0 ? SC_ECONFIG : 0;
    }
    struct sc_ytree *out = NULL;
    struct sc_ynode *root = NULL;
    bool native = false;
    size_t first_note = notes->n;
    if (rc == 0) {
        rc = proxy_front_translate(name, b->p, b->len, joined, notes, &out, &root, &native, err);
    }
    if (rc == 0 && native) {
        rc = sc_config_load_string(table, blob, path, b->p, b->len, err);
    } else if (rc == 0) {
        rc = sc_ytree_load(table, blob, name, root, err);
        json_t *js = sc_ynode_json(root);
        char *s = json_dumps(js, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        *derived = s ? sc_asprintf("%s\n", s) : NULL;
        sc_free(s);
        json_decref(js);
    }
    if (joined) {
        for (size_t i = first_note; i < notes->n; i++) {
            unjoin(&j, name, &notes->v[i]);
        }
        if (rc < 0) {
            unjoin(&j, name, err);
        }
    }
    sc_ytree_free(out);
    for (size_t i = 0; i < j.n; i++) {
        sc_free(j.names[i]);
    }
    sc_free(j.names);
    sc_free(j.starts);
    sc_free(name);
    sc_buf_cleanup(b);
    return rc;
}

void proxy_front_regex(struct proxy_front *f, const struct sc_ynode *at, const char *path,
                       const char *re, const char *subst)
{
    char *why = NULL;
    if (!re) {
        proxy_front_refuse(f, at, path, "a regular expression is required");
    } else if (proxy_route_regex_check(re, subst, &why) < 0) {
        proxy_front_refuse(f, at, path, "%s", why);
        sc_free(why);
    }
}

void proxy_front_regex_rewrite(struct proxy_front *f, struct sc_ynode *rt,
                               const struct sc_ynode *at, const struct sc_ynode *pat,
                               const struct sc_ynode *subst, const char *path)
{
    struct sc_ynode *o = proxy_front_map(f, at);
    if (pat) {
        proxy_front_set(f, o, "pattern", sc_ytree_copy(f->out, pat), pat);
    }
    if (subst) {
        proxy_front_set(f, o, "substitution", sc_ytree_copy(f->out, subst), subst);
    }
    proxy_front_set(f, rt, "regex_rewrite", o, at);
    if (!sc_ynode_str(subst)) {
        proxy_front_refuse(f, at, path, "a substitution is required");
        return;
    }
    proxy_front_regex(f, at, path, sc_ynode_str(pat), sc_ynode_str(subst));
}

void proxy_front_push_str(struct proxy_front *f, struct sc_ynode *map, const char *key,
                          const struct sc_ynode *at, const char *s)
{
    struct sc_ynode *v = sc_ynode_get_mut(map, key);
    if (!v) {
        v = proxy_front_seq(f, at);
        proxy_front_set(f, map, key, v, at);
    }
    proxy_front_push(f, v, sc_ytree_str(f->out, at, s), at);
}

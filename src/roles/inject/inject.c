// SPDX-License-Identifier: Apache-2.0
// `sidecar inject`: manifests in, manifests out, as `istioctl kube-inject` and `linkerd inject`.
// It reads YAML (or JSON) documents from a file or stdin, injects the sidecars into every pod
// template it finds (inject_document) and writes the result in the same format. Invariant: the
// output is written only when every document was processed, so an error never leaves half a
// manifest behind; running it again on its own output changes nothing.
#include "roles/inject/inject.h"

#include <stdio.h>
#include <string.h>

#include "app.h"
#include "core/alloc.h"
#include "core/error.h"
#include "core/file.h"

#define INJECT_MAX_INPUT (4u << 20)
#define INJECT_MAX_OUTPUT (64u << 20)

struct inject_cfg {
    char *file;
    char *output;
    struct inject_front front;
};

int inject_k8s_minor(const char *v)
{
    if (v[0] == 'v') {
        v++;
    }
    if (strncmp(v, "1.", 2) != 0) {
        return -1;
    }
    struct sc_str rest = sc_str_c(v + 2);
    struct sc_str minor = sc_str_split(&rest, '.');
    uint64_t m;
    return sc_str_to_u64(minor, 1000, &m) == 0 ? (int)m : -1;
}

int inject_front_check(const struct inject_front *f, char **err)
{
    if (f->kubernetes_version && inject_k8s_minor(f->kubernetes_version) < 0) {
        *err = sc_asprintf("--kubernetes-version: \"%s\" is not a version such as 1.29",
                           f->kubernetes_version);
        return SC_ECONFIG;
    }
    return 0;
}

int inject_front_load(struct inject_front *f, struct inject_opts *o, char **err)
{
    if (inject_mesh_load(&f->mesh, f->mesh_config, err) < 0) {
        return SC_ECONFIG;
    }
    inject_choose(&f->mesh, f->native, f->kubernetes_version, f->cni, o);
    return 0;
}

static int check_cfg(const void *cfgp, char **err)
{
    return inject_front_check(&((const struct inject_cfg *)cfgp)->front, err);
}

void inject_choose(const struct inject_mesh *m, bool native, const char *version, bool cni,
                   struct inject_opts *o)
{
    *o = (struct inject_opts){ .mesh = m, .native = native, .cni = cni };
    if (version && inject_k8s_minor(version) < 29) {
        o->native = false;
    }
}

static bool looks_json(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '{' || p[i] == '[') {
            return true;
        }
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n') {
            return false;
        }
    }
    return false;
}

static int inject_command(const void *cfgp)
{
    /* The config block is ours until the app frees it: --mesh-config loads on top of it. */
    struct inject_cfg *cfg = (struct inject_cfg *)cfgp;
    struct sc_buf in, out;
    sc_buf_init(&in, INJECT_MAX_INPUT);
    sc_buf_init(&out, INJECT_MAX_OUTPUT);
    json_t *docs = NULL;
    char *err = NULL;
    int code = 1;
    struct inject_opts o;
    if (inject_front_load(&cfg->front, &o, &err) < 0) {
        goto out;
    }
    const char *name = strcmp(cfg->file, "-") == 0 ? "stdin" : cfg->file;
    int rc = sc_file_read(strcmp(cfg->file, "-") == 0 ? "/dev/stdin" : cfg->file, &in);
    if (rc < 0) {
        err = sc_asprintf("%s: %s", name, rc == SC_ETOOBIG ? "larger than 4 MiB" : sc_strerror(rc));
        goto out;
    }
    if (inject_yaml_parse(name, in.p ? in.p : "", in.len, &docs, &err) < 0) {
        goto out;
    }
    size_t i;
    json_t *doc;
    int injected = 0;
    json_array_foreach(docs, i, doc)
    {
        rc = inject_document(&o, doc, i + 1, &err);
        if (rc < 0) {
            char *e = sc_asprintf("%s: %s", name, err);
            sc_free(err);
            err = e;
            goto out;
        }
        injected += rc;
    }
    if (looks_json(in.p, in.len)) {
        json_array_foreach(docs, i, doc)
        {
            char *s = json_dumps(doc, JSON_INDENT(2));
            rc = sc_buf_appendf(&out, "%s\n", s ? s : "");
            sc_free(s);
        }
    } else {
        rc = inject_yaml_emit(docs, &out);
    }
    if (rc < 0) {
        err = sc_asprintf("output larger than 64 MiB");
        goto out;
    }
    if (strcmp(cfg->output, "-") == 0) {
        if (out.len && fwrite(out.p, 1, out.len, stdout) != out.len) {
            err = sc_asprintf("stdout: write failed");
            goto out;
        }
        fflush(stdout);
    } else if (sc_file_write_atomic(cfg->output, out.p ? out.p : "", out.len, 0644, (uid_t)-1,
                                    (gid_t)-1, &err) < 0) {
        goto out;
    }
    fprintf(stderr, "sidecar inject: %d pod template%s injected\n", injected,
            injected == 1 ? "" : "s");
    code = 0;
out:
    if (err) {
        fprintf(stderr, "sidecar inject: %s\n", err);
    }
    sc_free(err);
    json_decref(docs);
    sc_buf_cleanup(&in);
    sc_buf_cleanup(&out);
    return code;
}

const struct sc_opt inject_front_opts[] = {
    { .name = "mesh_config",
      .type = SC_OPT_STR,
      .offset = offsetof(struct inject_front, mesh_config),
      .help = "the mesh config file: image, default roles, resources, identity, excluded ports "
              "(see docs/kubernetes.md)",
      .flags = SC_OPT_FLAG },
    { .name = "native_sidecars",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct inject_front, native),
      .def = "true",
      .help = "inject native sidecars (init containers with restartPolicy: Always, Kubernetes "
              ">= 1.29; an older --kubernetes-version turns them off); false: classic "
              "containers, the proxy first",
      .flags = SC_OPT_FLAG },
    { .name = "kubernetes_version",
      .type = SC_OPT_STR,
      .offset = offsetof(struct inject_front, kubernetes_version),
      .help = "the cluster's version (1.28, v1.30.2): native sidecars from 1.29 on",
      .flags = SC_OPT_FLAG },
    { .name = "cni",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct inject_front, cni),
      .def = "false",
      .help = "a CNI plugin sets up interception: no sidecar-iptables init container",
      .flags = SC_OPT_FLAG },
    { .type = SC_OPT_INLINE,
      .offset = offsetof(struct inject_front, mesh),
      .sub = inject_mesh_opts },
    { 0 },
};

static const struct sc_opt inject_opts_table[] = {
    { .name = "file",
      .type = SC_OPT_STR,
      .offset = offsetof(struct inject_cfg, file),
      .def = "-",
      .help = "the manifests: YAML or JSON, one or more documents (- for stdin)",
      .flags = SC_OPT_FLAG | SC_OPT_POSITIONAL,
      .flag_alias = "f" },
    { .name = "output",
      .type = SC_OPT_STR,
      .offset = offsetof(struct inject_cfg, output),
      .def = "-",
      .help = "where the injected manifests go, in the input's format (- for stdout)",
      .flags = SC_OPT_FLAG,
      .flag_alias = "o" },
    { .type = SC_OPT_INLINE,
      .offset = offsetof(struct inject_cfg, front),
      .sub = inject_front_opts },
    { 0 },
};

static const char inject_usage[] =
    "  sidecar inject -f app.yaml [-o out.yaml] [--mesh-config mesh.yaml]\n"
    "  kubectl get deploy web -o yaml | sidecar inject | kubectl apply -f -\n"
    "Pods choose what they get with sidecar.dev/* annotations (docs/kubernetes.md).";

static int inject_start(struct sc_app *app, const void *cfg, void **state, char **err)
{
    (void)app;
    (void)cfg;
    (void)state;
    *err = sc_asprintf("sidecar inject is a command: it runs once and exits");
    return SC_ECONFIG;
}

const struct sc_role sc_role_inject = {
    .name = "inject",
    .summary = "adds the sidecars to Kubernetes manifests (Pods, workloads, Lists)",
    .usage = inject_usage,
    .opts = inject_opts_table,
    .cfg_size = sizeof(struct inject_cfg),
    .admin_default = "127.0.0.1:0",
    .check = check_cfg,
    .start = inject_start,
    .command = inject_command,
};

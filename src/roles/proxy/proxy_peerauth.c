// SPDX-License-Identifier: Apache-2.0
// PeerAuthentication resolution (see proxy_peerauth.h). The labels file is the Kubernetes
// downward API's format: one `key="value"` per line, the value a Go-quoted string; it is read once
// per configuration load, bounded in size and in labels.
#include "roles/proxy/proxy_peerauth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "core/file.h"

const char *const proxy_pa_mode_names[] = { "UNSET", "STRICT", "PERMISSIVE", "DISABLE", NULL };

#define LABELS_FILE "/etc/podinfo/labels"
#define LABELS_MAX_BYTES (256 * 1024)

const struct sc_opt proxy_workload_opts[] = {
    { .name = "namespace",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_workload_cfg, ns),
      .help = "the workload's namespace (default: $POD_NAMESPACE, else \"default\")" },
    { .name = "labels",
      .type = SC_OPT_STRMAP,
      .offset = offsetof(struct proxy_workload_cfg, labels),
      .help = "the workload's labels, on top of those of labels_file" },
    { .name = "labels_file",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_workload_cfg, labels_file),
      .help = "the downward API labels file, key=\"value\" per line (default: "
              "/etc/podinfo/labels when it exists)" },
    { .name = "service_account",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_workload_cfg, service_account),
      .help = "the workload's service account (shown in /config)" },
    { 0 },
};

static const struct sc_opt pa_port_opts[] = {
    { .name = "port",
      .type = SC_OPT_INT,
      .offset = offsetof(struct proxy_pa_port_cfg, port),
      .help = "the workload's port (the port clients dial, not a Service's)",
      .flags = SC_OPT_REQUIRED,
      .min = 1,
      .max = 65535 },
    { .name = "mode",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct proxy_pa_port_cfg, mode),
      .def = "UNSET",
      .help = "UNSET, STRICT, PERMISSIVE or DISABLE for connections to this port",
      .enums = proxy_pa_mode_names },
    { 0 },
};

const struct sc_opt proxy_pa_opts[] = {
    { .name = "name",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_pa_cfg, name),
      .help = "the policy's name (logs and /config)",
      .flags = SC_OPT_REQUIRED },
    { .name = "namespace",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_pa_cfg, ns),
      .help = "the policy's namespace: the root namespace makes it mesh-wide (default: the "
              "workload's)" },
    { .name = "match_labels",
      .type = SC_OPT_STRMAP,
      .offset = offsetof(struct proxy_pa_cfg, match_labels),
      .help = "selector: the labels a workload must all have (empty: every workload of the "
              "namespace)" },
    { .name = "mode",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct proxy_pa_cfg, mode),
      .def = "UNSET",
      .help = "mtls.mode: UNSET (inherit), STRICT, PERMISSIVE or DISABLE",
      .enums = proxy_pa_mode_names },
    { .name = "port_level_mtls",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct proxy_pa_cfg, port_level_mtls),
      .help = "per-port modes (with a selector only)",
      .sub = pa_port_opts,
      .sub_size = sizeof(struct proxy_pa_port_cfg),
      .max = PROXY_PA_MAX_PORTS },
    { 0 },
};

int proxy_pa_check(const struct proxy_pa_cfg *pas, size_t n, char **err)
{
    for (size_t i = 0; i < n; i++) {
        const struct proxy_pa_cfg *p = &pas[i];
        if (p->port_level_mtls.n > 0 && p->match_labels.n == 0) {
            *err = sc_asprintf("peer_authentication \"%s\": port_level_mtls needs a selector "
                               "(match_labels)",
                               p->name);
            return SC_ECONFIG;
        }
        const struct proxy_pa_port_cfg *pp = p->port_level_mtls.v;
        for (size_t a = 0; a < p->port_level_mtls.n; a++) {
            for (size_t b = 0; b < a; b++) {
                if (pp[a].port == pp[b].port) {
                    *err = sc_asprintf("peer_authentication \"%s\": port %lld is listed twice",
                                       p->name, (long long)pp[a].port);
                    return SC_ECONFIG;
                }
            }
        }
    }
    return 0;
}

/* ---- the workload ---- */

static void add_label(struct proxy_workload *w, const char *k, size_t kl, const char *v, size_t vl)
{
    for (size_t i = 0; i < w->nlabels; i++) {
        if (strlen(w->labels[i].key) == kl && memcmp(w->labels[i].key, k, kl) == 0) {
            sc_free(w->labels[i].value);
            w->labels[i].value = sc_strndup(v, vl);
            return;
        }
    }
    if (w->nlabels < SC_ARRAY_LEN(w->labels)) {
        w->labels[w->nlabels].key = sc_strndup(k, kl);
        w->labels[w->nlabels].value = sc_strndup(v, vl);
        w->nlabels++;
    }
}

/* Unquotes a Go-quoted label value in place (the downward API writes strconv.Quote output; label
 * values hold no escapes but \" and \\ are handled). Returns its length, or -1 when malformed. */
static long unquote(char *s, size_t n)
{
    if (n < 2 || s[0] != '"' || s[n - 1] != '"') {
        return -1;
    }
    size_t o = 0;
    for (size_t i = 1; i + 1 < n; i++) {
        if (s[i] == '\\') {
            if (i + 2 >= n || (s[i + 1] != '"' && s[i + 1] != '\\')) {
                return -1;
            }
            i++;
        } else if (s[i] == '"') {
            return -1;
        }
        s[o++] = s[i];
    }
    return (long)o;
}

static int read_labels(struct proxy_workload *w, const char *path, bool required, char **err)
{
    struct sc_buf b;
    sc_buf_init(&b, LABELS_MAX_BYTES);
    int rc = sc_file_read(path, &b);
    if (rc < 0) {
        sc_buf_cleanup(&b);
        if (!required) {
            return 0;
        }
        *err = sc_asprintf("workload: labels_file %s: %s", path, sc_strerror(rc));
        return SC_ECONFIG;
    }
    char *text = b.p;
    size_t len = b.len;
    size_t lineno = 0;
    for (char *p = text, *end = text + len; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *le = nl ? nl : end;
        lineno++;
        if (le > p) {
            char *eq = memchr(p, '=', (size_t)(le - p));
            long vl = eq ? unquote(eq + 1, (size_t)(le - eq - 1)) : -1;
            if (!eq || eq == p || vl < 0) {
                *err = sc_asprintf("%s:%zu:1: not key=\"value\"", path, lineno);
                sc_buf_cleanup(&b);
                return SC_ECONFIG;
            }
            add_label(w, p, (size_t)(eq - p), eq + 1, (size_t)vl);
        }
        p = le + 1;
    }
    sc_buf_cleanup(&b);
    return 0;
}

int proxy_workload_init(struct proxy_workload *w, const struct proxy_workload_cfg *c, char **err)
{
    memset(w, 0, sizeof(*w));
    const char *env = getenv("POD_NAMESPACE");
    w->ns = sc_strdup(c->ns ? c->ns : env && *env ? env : "default");
    int rc =
        read_labels(w, c->labels_file ? c->labels_file : LABELS_FILE, c->labels_file != NULL, err);
    if (rc < 0) {
        proxy_workload_cleanup(w);
        return rc;
    }
    for (size_t i = 0; i < c->labels.n; i++) {
        add_label(w, c->labels.v[i].key, strlen(c->labels.v[i].key), c->labels.v[i].value,
                  strlen(c->labels.v[i].value));
    }
    return 0;
}

void proxy_workload_cleanup(struct proxy_workload *w)
{
    sc_free(w->ns);
    for (size_t i = 0; i < w->nlabels; i++) {
        sc_free(w->labels[i].key);
        sc_free(w->labels[i].value);
    }
    memset(w, 0, sizeof(*w));
}

/* ---- resolution ---- */

static const char *label(const struct proxy_workload *w, const char *k)
{
    for (size_t i = 0; i < w->nlabels; i++) {
        if (strcmp(w->labels[i].key, k) == 0) {
            return w->labels[i].value;
        }
    }
    return NULL;
}

bool proxy_workload_selected(const struct proxy_workload *w, const struct sc_kvv *match_labels)
{
    for (size_t i = 0; i < match_labels->n; i++) {
        const char *v = label(w, match_labels->v[i].key);
        if (!v || strcmp(v, match_labels->v[i].value) != 0) {
            return false;
        }
    }
    return true;
}

void proxy_pa_resolve(const struct proxy_pa_cfg *pas, size_t n, const struct proxy_workload *w,
                      const char *root_ns, struct proxy_pa_effective *out)
{
    const struct proxy_pa_cfg *mesh = NULL, *nsp = NULL, *wl = NULL;
    for (size_t i = 0; i < n; i++) {
        const struct proxy_pa_cfg *p = &pas[i];
        const char *ns = p->ns ? p->ns : w->ns;
        if (p->match_labels.n == 0) {
            if (strcmp(ns, w->ns) == 0 && !nsp) {
                nsp = p;
            } else if (strcmp(ns, root_ns) == 0 && !mesh) {
                mesh = p;
            }
        } else if (strcmp(ns, w->ns) == 0 && proxy_workload_selected(w, &p->match_labels) && !wl) {
            wl = p;
        }
    }
    int mode = PROXY_PA_PERMISSIVE;
    const struct proxy_pa_cfg *chain[] = { mesh, nsp, wl };
    for (size_t i = 0; i < SC_ARRAY_LEN(chain); i++) {
        if (chain[i] && chain[i]->mode != PROXY_PA_UNSET) {
            mode = chain[i]->mode;
        }
    }
    out->mode = mode;
    out->nports = 0;
    const struct proxy_pa_port_cfg *pp = wl ? wl->port_level_mtls.v : NULL;
    for (size_t i = 0; wl && i < wl->port_level_mtls.n && i < PROXY_PA_MAX_PORTS; i++) {
        out->ports[out->nports].port = (int)pp[i].port;
        out->ports[out->nports].mode = pp[i].mode == PROXY_PA_UNSET ? mode : pp[i].mode;
        out->nports++;
    }
}

int proxy_pa_mode_for(const struct proxy_pa_effective *e, int port)
{
    for (size_t i = 0; i < e->nports; i++) {
        if (e->ports[i].port == port) {
            return e->ports[i].mode;
        }
    }
    return e->mode;
}

// SPDX-License-Identifier: Apache-2.0
// Istio's source matches and gateways (see proxy_front.h). Istio applies a VirtualService match's
// sourceLabels and sourceNamespace on the caller's own sidecar, when it builds that sidecar's
// configuration: a match naming other workloads does not exist there. The translation does the
// same for the workload this proxy serves (the proxy document's workload.namespace, else
// $POD_NAMESPACE; its workload.labels over the downward API labels file): a match that does not
// apply is left out with a note, and a route whose matches all are left out is dropped. A match's
// `gateways` replace the VirtualService's; a sidecar is the gateway `mesh`, which applies when
// neither names gateways. Invariant: the decision is made once, at load, from the configuration
// alone; nothing of it runs per request.
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "core/alloc.h"
#include "core/error.h"
#include "roles/proxy/proxy_front.h"
#include "roles/proxy/proxy_peerauth.h"

/* The workload's labels: workload.labels of the proxy document (as written) over those of its
 * labels_file, else of /etc/podinfo/labels when present; read once per translation. */
static const struct proxy_workload *workload(struct proxy_front *f)
{
    if (f->workload) {
        return f->workload;
    }
    f->workload = sc_calloc(1, sizeof(*f->workload));
    const struct sc_ynode *w = sc_ynode_get(f->native, "workload");
    struct proxy_workload_cfg c = { 0 };
    const char *file = sc_ynode_str(sc_ynode_get(w, "labels_file"));
    struct stat st;
    /* Only a regular file (the downward API's is a symlink to one): a FIFO would block. */
    c.labels_file =
        file && *file && !strchr(file, '$') && stat(file, &st) == 0 && S_ISREG(st.st_mode)
            ? (char *)file
            : NULL;
    char *err = NULL;
    if (proxy_workload_init(f->workload, &c, &err) < 0) {
        proxy_front_refuse(f, sc_ynode_get(w, "labels_file"), "workload", "%s", err);
        sc_free(err);
        memset(f->workload, 0, sizeof(*f->workload));
    }
    return f->workload;
}

bool proxy_istio_workload_has(struct proxy_front *f, const struct sc_ynode *labels)
{
    const struct sc_ynode *own = sc_ynode_get(sc_ynode_get(f->native, "workload"), "labels");
    const struct proxy_workload *w = NULL;
    for (size_t i = 0; i < sc_ynode_count(labels); i++) {
        const char *k = sc_ynode_str(sc_ynode_key(labels, i));
        const char *v = sc_ynode_str(sc_ynode_val(labels, i));
        const char *have = k ? sc_ynode_str(sc_ynode_get(own, k)) : NULL;
        if (k && !have) {
            w = w ? w : workload(f);
            for (size_t j = 0; j < w->nlabels && !have; j++) {
                have = strcmp(w->labels[j].key, k) == 0 ? w->labels[j].value : NULL;
            }
        }
        if (!have || !v || strcmp(have, v) != 0) {
            return false;
        }
    }
    return true;
}

/* Whether list <gw> (gateway names) holds "mesh"; a name that is not a string is refused. */
static int has_mesh(struct proxy_front *f, const struct sc_ynode *gw, const char *path)
{
    if (sc_ynode_kind(gw) != SC_Y_SEQ) {
        return proxy_front_refuse(f, gw, path, "gateways must be a list of names");
    }
    int mesh = 0;
    for (size_t g = 0; g < sc_ynode_count(gw); g++) {
        const char *s = sc_ynode_str(sc_ynode_at(gw, g));
        if (!s) {
            return proxy_front_refuse(f, sc_ynode_at(gw, g), path, "gateways[%zu] is not a name",
                                      g);
        }
        mesh = mesh || strcmp(s, "mesh") == 0;
    }
    return mesh;
}

int proxy_istio_source_applies(struct proxy_front *f, const struct sc_ynode *vs,
                               const struct sc_ynode *mn, const char *path)
{
    if (!mn) {
        return 1;
    }
    const struct sc_ynode *gw = sc_ynode_get(mn, "gateways");
    if (!gw || sc_ynode_kind(gw) == SC_Y_NULL || sc_ynode_count(gw) == 0) {
        gw = sc_ynode_get(sc_ynode_get(vs, "spec"), "gateways");
    }
    if (gw && sc_ynode_kind(gw) != SC_Y_NULL && sc_ynode_count(gw) > 0) {
        int mesh = has_mesh(f, gw, path);
        if (mesh <= 0) {
            if (mesh == 0 && path) {
                proxy_front_note(f, gw, path,
                                 "left out: its gateways do not include mesh (this proxy is a "
                                 "sidecar)");
            }
            return mesh;
        }
    }
    const struct sc_ynode *sn = sc_ynode_get(mn, "sourceNamespace");
    if (sn && sc_ynode_kind(sn) != SC_Y_NULL) {
        const char *ns = sc_ynode_str(sn);
        if (!ns) {
            return proxy_front_refuse(f, sn, path, "sourceNamespace must be a namespace name");
        }
        if (strcmp(ns, f->ns) != 0) {
            if (path) {
                proxy_front_note(f, sn, path,
                                 "left out: sourceNamespace %.64s is not this workload's (%.64s)",
                                 ns, f->ns);
            }
            return 0;
        }
    }
    const struct sc_ynode *sl = sc_ynode_get(mn, "sourceLabels");
    if (sl && sc_ynode_kind(sl) != SC_Y_NULL) {
        if (sc_ynode_kind(sl) != SC_Y_MAP) {
            return proxy_front_refuse(f, sl, path, "sourceLabels must map label names to values");
        }
        for (size_t i = 0; i < sc_ynode_count(sl); i++) {
            if (!sc_ynode_str(sc_ynode_val(sl, i))) {
                return proxy_front_refuse(f, sc_ynode_val(sl, i), path,
                                          "sourceLabels values must be strings");
            }
        }
        if (!proxy_istio_workload_has(f, sl)) {
            if (path) {
                proxy_front_note(f, sl, path,
                                 "left out: sourceLabels do not select this workload "
                                 "(workload.labels, the labels file)");
            }
            return 0;
        }
    }
    return f->err ? SC_ECONFIG : 1;
}

int proxy_istio_gateways(struct proxy_front *f, const struct sc_ynode *vs, const char *path)
{
    const struct sc_ynode *spec = sc_ynode_get(vs, "spec");
    const struct sc_ynode *gw = sc_ynode_get(spec, "gateways");
    if (!gw || sc_ynode_kind(gw) == SC_Y_NULL || sc_ynode_count(gw) == 0) {
        return 0;
    }
    int mesh = has_mesh(f, gw, path);
    if (mesh != 0) {
        return mesh < 0 ? SC_ECONFIG : 0;
    }
    /* A match may still name mesh among gateways of its own. */
    static const char *const kinds[] = { "http", "tcp", "tls" };
    for (size_t k = 0; k < 3; k++) {
        const struct sc_ynode *l = sc_ynode_get(spec, kinds[k]);
        for (size_t i = 0; i < sc_ynode_count(l); i++) {
            const struct sc_ynode *ms = sc_ynode_get(sc_ynode_at(l, i), "match");
            for (size_t j = 0; j < sc_ynode_count(ms); j++) {
                const struct sc_ynode *mg = sc_ynode_get(sc_ynode_at(ms, j), "gateways");
                if (sc_ynode_count(mg) && has_mesh(f, mg, path) > 0) {
                    return 0;
                }
            }
        }
    }
    /* Istio applies it to gateways only; a sidecar's configuration leaves it out. */
    proxy_front_note(f, gw, path,
                     "left out: its gateways do not include mesh (this VirtualService is for "
                     "gateways; the proxy is a sidecar)");
    return 1;
}

// SPDX-License-Identifier: Apache-2.0
// The proxy's front end for configuration files: it recognises what a -c file holds (the proxy's
// own YAML, an Envoy v3 bootstrap, or a stream of Kubernetes-style resources such as Istio's
// PeerAuthentication, VirtualService, DestinationRule and ServiceEntry, possibly next to one
// document of the proxy's own) and translates the foreign parts into a native document that the
// proxy's option tables then load, so nothing downstream knows which format came in. Invariant:
// nothing is dropped silently: a field that would change behaviour and has no equivalent is
// refused with its position and path, one that concerns only the other product's statistics or
// runtime is accepted with a note.
#ifndef SC_ROLES_PROXY_PROXY_FRONT_H
#define SC_ROLES_PROXY_PROXY_FRONT_H

#include <stdbool.h>
#include <stddef.h>

#include "core/config.h"
#include "core/ytree.h"

#define PROXY_FRONT_PATH 512 /* longest field path kept in a message */
#define PROXY_FRONT_MAX_DOCS 4096
#define PROXY_FRONT_MAX_FILES 256 /* files read from a -c directory */
#define PROXY_FRONT_MAX_KEYS 256  /* fields of one object of theirs (checked pairwise) */

/* The translation in progress. */
struct proxy_front {
    const char *name;              /* the file, as messages name it */
    struct sc_ytree *out;          /* the native document being built */
    struct sc_ynode *root;         /* its top-level mapping */
    struct sc_strv *notes;         /* accepted without effect (new strings) */
    char *err;                     /* the first refusal, complete with its position */
    const char *ns;                /* the workload's namespace (short Istio host names) */
    const struct sc_ynode *native; /* the proxy's own document, when the stream has one */
    /* Istio traffic resources, gathered first and translated together at the end. */
    const struct sc_ynode **vs, **dr, **se, **sidecar;
    size_t nvs, ndr, nse, nsidecar;
    /* Envoy authorization filters (proxy_envoy_authz.c): the first one and its listener. */
    const struct sc_ynode *authz_at;
    const struct sc_ynode *authz_listener;
    bool rbac_seen;
    const struct sc_ynode *envoy; /* the bootstrap being translated (its clusters) */
    /* Istio tracing (proxy_istio_telemetry.c): Telemetry resources and the MeshConfig document. */
    const struct sc_ynode **tel;
    size_t ntel;
    const struct sc_ynode *mesh;
    /* The workload's labels (proxy_istio_source.c), read on first use. */
    struct proxy_workload *workload;
};

/* One kind of Kubernetes-style document: its kind, the apiVersions accepted, and what to do with
 * one document (translate it at once or gather it). Returns 0 or SC_ECONFIG after a refusal. */
struct proxy_front_kind {
    const char *kind;
    const char *const *api_versions;
    int (*add)(struct proxy_front *f, const struct sc_ynode *doc, const char *path);
};

/* The app's load_file hook for the proxy (struct sc_role, app.h). A file of one document without
 * `apiVersion`, `kind` or `static_resources` loads exactly as the proxy's own YAML always did.
 * A path of <paths> may be a directory: its *.yaml, *.yml and *.json files (not hidden ones, so a
 * mounted ConfigMap's "..data" is skipped), in name order, stand for it. Several paths, or a
 * directory, are read as one stream of documents in the order given, and messages name the file
 * and line each came from. */
int proxy_front_load(const struct sc_opt *table, void *blob, const char *const *paths,
                     size_t npaths, struct sc_strv *notes, char **derived, char **err);

/* Translates the text of a -c file into a new native tree (NULL with *native set when the file is
 * the proxy's own format, unless <joined>: the files of a directory always give a tree). Returns 0
 * or SC_ECONFIG with a new message in <*err>; notes are added to <notes>. The fuzz target drives
 * this directly. */
int proxy_front_translate(const char *name, const char *text, size_t len, bool joined,
                          struct sc_strv *notes, struct sc_ytree **out, struct sc_ynode **root,
                          bool *native, char **err);

/* Writes <parent> followed by the formatted suffix into <out> (PROXY_FRONT_PATH bytes), cut
 * when too long: a field path for messages. */
void proxy_front_path(char *out, const char *parent, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records a refusal "file:line:col: <path>: <message>" at <at> (the first one wins). Returns
 * SC_ECONFIG. */
int proxy_front_refuse(struct proxy_front *f, const struct sc_ynode *at, const char *path,
                       const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Adds the note "file:line:col: <path>: <message>" (accepted, without effect here). */
void proxy_front_note(struct proxy_front *f, const struct sc_ynode *at, const char *path,
                      const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Checks the keys of mapping <n> at <path>: those in <handled> (NULL-terminated) are the caller's,
 * those in <noted> are accepted with a note, any other is refused as not supported. A non-mapping
 * is refused too. Returns 0 or SC_ECONFIG. */
int proxy_front_keys(struct proxy_front *f, const struct sc_ynode *n, const char *path,
                     const char *const *handled, const char *const *noted);

/* Returns the scalar text of <n>, or NULL after refusing a list or mapping at <path>. A null is
 * NULL without a refusal; <*rc> tells them apart. */
const char *proxy_front_scalar(struct proxy_front *f, const struct sc_ynode *n, const char *path,
                               int *rc);

/* The scalar value of <key> in mapping <m> (NULL when absent, null, or refused as not a scalar). */
const char *proxy_front_str(struct proxy_front *f, const struct sc_ynode *m, const char *key,
                            const char *path);

/* One value of an enum field of theirs: its name there and what it becomes here (NULL: accepted
 * with nothing to put). A table of them ends with a NULL name. */
struct proxy_front_enum {
    const char *name;
    const char *ours;
};

/* The entry of table <vals> named <s> (NULL <s>: none). Returns it or NULL. */
const struct proxy_front_enum *proxy_front_enum_find(const struct proxy_front_enum *vals,
                                                     const char *s);

/* The value of <key> in mapping <m> looked up in table <vals>. Returns its entry; NULL when the key
 * is absent or null, or after refusing a value not in the table at its position with
 * "<path>: <label> <value> is not one of <the table's names>" (<label> NULL: <key>). f->err tells
 * a refusal apart. */
const struct proxy_front_enum *proxy_front_enum(struct proxy_front *f, const struct sc_ynode *m,
                                                const char *key, const char *path,
                                                const char *label,
                                                const struct proxy_front_enum *vals);

/* Retry conditions shared by Envoy's retry_on and Istio's retryOn: each name and ours (Envoy's
 * refused-stream is our reset). */
extern const struct proxy_front_enum proxy_front_retry_on[];

/* Puts <key>: <value> (a string at <at>'s position) into mapping <map> of the output. */
void proxy_front_put(struct proxy_front *f, struct sc_ynode *map, const char *key,
                     const struct sc_ynode *at, const char *value);

/* Returns the list <key> of the native document, creating it (at <at>) when absent. */
struct sc_ynode *proxy_front_list(struct proxy_front *f, const char *key,
                                  const struct sc_ynode *at);

/* Output builders: a new mapping or list at <at>'s position; <v> set as <key> of <map> or pushed
 * onto <seq>; the value of <key> in <src>, when present and not null, copied as <key2> of <dst>.
 * Past the node limit they refuse the configuration ("configuration too large"). */
struct sc_ynode *proxy_front_map(struct proxy_front *f, const struct sc_ynode *at);
struct sc_ynode *proxy_front_seq(struct proxy_front *f, const struct sc_ynode *at);
void proxy_front_set(struct proxy_front *f, struct sc_ynode *map, const char *key,
                     struct sc_ynode *v, const struct sc_ynode *at);
void proxy_front_push(struct proxy_front *f, struct sc_ynode *seq, struct sc_ynode *v,
                      const struct sc_ynode *at);
void proxy_front_copy(struct proxy_front *f, struct sc_ynode *dst, const char *key2,
                      const struct sc_ynode *src, const char *key);

/* The duration <key> of <src> put as <key2> of <dst> in our syntax, <def> when absent (NULL:
 * nothing); an invalid one is refused at its position. */
void proxy_front_put_duration(struct proxy_front *f, struct sc_ynode *dst, const char *key2,
                              const struct sc_ynode *src, const char *key, const char *path,
                              const char *def);

/* Converts a protobuf-JSON duration ("5s", "0.250s"; Istio's "10ms", "1m", "1h" too) into the
 * proxy's syntax, into <out> of at least 32 bytes. Returns 0 or -EINVAL. */
int proxy_front_duration(const char *s, char *out, size_t outlen);

/* Refuses at <at> a route regex <re> (with <subst>, a regex_rewrite) that does not compile or
 * whose substitution names a group it lacks (proxy_route_regex_check). NULL <re>: refused as
 * missing. */
void proxy_front_regex(struct proxy_front *f, const struct sc_ynode *at, const char *path,
                       const char *re, const char *subst);

/* Puts regex_rewrite {pattern: <pat>, substitution: <subst>} (their values at <at>) into route
 * <rt>, refused at <at> as proxy_front_regex refuses. */
void proxy_front_regex_rewrite(struct proxy_front *f, struct sc_ynode *rt,
                               const struct sc_ynode *at, const struct sc_ynode *pat,
                               const struct sc_ynode *subst, const char *path);

/* Pushes string <s> (at <at>) onto list <key> of mapping <map>, creating the list. */
void proxy_front_push_str(struct proxy_front *f, struct sc_ynode *map, const char *key,
                          const struct sc_ynode *at, const char *s);

/* proxy_envoy.c: translates the bootstrap <doc> (a mapping with static_resources). */
int proxy_envoy_translate(struct proxy_front *f, const struct sc_ynode *doc);

/* proxy_istio.c: the kinds it reads, and the translation of the gathered traffic resources. */
extern const struct proxy_front_kind proxy_istio_kinds[];
int proxy_istio_finish(struct proxy_front *f);

/* Checks an Istio document's top and metadata keys (refusing or noting the rest); <*spec> gets
 * spec. With <annotations>, metadata.annotations is left to the caller. Returns 0 or SC_ECONFIG. */
int proxy_istio_top(struct proxy_front *f, const struct sc_ynode *doc, const char *path,
                    const struct sc_ynode **spec, bool annotations);
/* metadata.name ("" when absent) and metadata.namespace (else the workload's). */
const char *proxy_istio_name(const struct sc_ynode *doc);
const char *proxy_istio_ns(const struct proxy_front *f, const struct sc_ynode *doc);
extern const char *const proxy_istio_security_versions[]; /* security.istio.io v1beta1, v1 */

/* Istio host names: <h> expanded in namespace <ns> ("reviews" -> reviews.<ns>.svc.cluster.local)
 * into <out>; the resource among <v> whose host (spec.host or one of spec.hosts) is <host>. */
void proxy_istio_fqdn(const char *h, const char *ns, char *out, size_t len);
const struct sc_ynode *proxy_istio_find_host(const struct proxy_front *f, const struct sc_ynode **v,
                                             size_t n, const char *host);
/* The cluster of route destination <d> ({host, subset, port}) in namespace <ns>, made once per
 * host, port and subset in <m> (a subset is a cluster of its endpoints); NULL after a refusal. */
struct istio_made;
const char *proxy_istio_destination(struct proxy_front *f, struct istio_made *m,
                                    const struct sc_ynode *d, const char *ns, const char *path);

/* proxy_istio_policy.c: the traffic policy of DestinationRule <dr> for its host on <port> (its
 * subset <subset>, an entry of spec.subsets, or NULL) put on cluster <c>, with Istio's precedence
 * (port-level settings, then the subset's policy and its own port-level settings). Every policy
 * of the rule is checked. Returns 0 or SC_ECONFIG. */
int proxy_istio_policy(struct proxy_front *f, struct sc_ynode *c, const struct sc_ynode *dr,
                       const char *port, const struct sc_ynode *subset);
/* h2UpgradePolicy's values (UPGRADE: "http2"), for DestinationRules and MeshConfig. */
extern const struct proxy_front_enum proxy_istio_h2_upgrade[];

/* proxy_istio_source.c: whether match <mn> (of http[], tcp[] or tls[] of VirtualService <vs>;
 * NULL: none) applies to this workload: its gateways, else the VirtualService's, include mesh
 * (or neither names any); sourceNamespace is the workload's; sourceLabels are all among the
 * workload's labels. Returns 1, 0 (left out, noted at <path>; NULL <path>: not noted) or
 * SC_ECONFIG. */
int proxy_istio_source_applies(struct proxy_front *f, const struct sc_ynode *vs,
                               const struct sc_ynode *mn, const char *path);
/* Whether VirtualService <vs> is for gateways only: its spec.gateways lack mesh and no match
 * names mesh among gateways of its own. Returns 1 (noted; a sidecar leaves it out, as Istio does),
 * 0 (it applies) or SC_ECONFIG. */
int proxy_istio_gateways(struct proxy_front *f, const struct sc_ynode *vs, const char *path);
/* Whether the workload carries every label of mapping <labels> (workload.labels of the proxy
 * document over the downward API labels file). */
bool proxy_istio_workload_has(struct proxy_front *f, const struct sc_ynode *labels);

/* proxy_istio_tcp.c: a DestinationRule's loadBalancer.consistentHash <ch> (NULL: nothing) onto
 * cluster <c> (lb_policy ring_hash or maglev and its hash_policy). */
void proxy_istio_consistent_hash(struct proxy_front *f, struct sc_ynode *c,
                                 const struct sc_ynode *ch, const char *path);

/* proxy_istio_tcp.c: VirtualService <vs>'s tcp[] and tls[] routes (at <path>) appended to
 * <troutes> as native tcp_routes. Returns 0 or SC_ECONFIG. */
int proxy_istio_tcp(struct proxy_front *f, struct istio_made *m, const struct sc_ynode *vs,
                    const char *path, struct sc_ynode *troutes);
/* Puts <troutes> first in outbound listener <l>'s tcp_routes (its protocol auto when unset;
 * refused when http). Returns 0 or SC_ECONFIG. */
int proxy_istio_tcp_listener(struct proxy_front *f, struct sc_ynode *l, struct sc_ynode *troutes,
                             const struct sc_ynode *at);

/* proxy_istio_answer.c: an http[] route's redirect or directResponse <h> into the native route
 * <act>. Returns 0 or SC_ECONFIG. */
int proxy_istio_answer(struct proxy_front *f, struct sc_ynode *act, const struct sc_ynode *h,
                       const char *path);

/* proxy_front_cors.c: an http[] route's corsPolicy <cp> (of the route at <path>) into the native
 * route <rt>. Returns 0 or SC_ECONFIG. */
int proxy_istio_cors(struct proxy_front *f, struct sc_ynode *rt, const struct sc_ynode *cp,
                     const char *path);

/* proxy_istio_authz.c: AuthorizationPolicy and RequestAuthentication (security.istio.io). */
extern const struct proxy_front_kind proxy_istio_authz_kinds[];

/* proxy_istio_telemetry.c: Telemetry, and the MeshConfig document's tracing; the `tracing:` block
 * they make. */
extern const struct proxy_front_kind proxy_istio_telemetry_kinds[];
int proxy_istio_telemetry_finish(struct proxy_front *f);

/* proxy_istio_mesh.c: a MeshConfig document (one without apiVersion and kind holding any of
 * MeshConfig's top-level fields). proxy_istio_is_mesh recognises one; proxy_istio_mesh_keys
 * checks its top-level fields (0 or SC_ECONFIG); proxy_istio_mesh_finish puts what it sets into
 * the native document (after proxy_istio_finish, whose listeners it may amend; 0 or
 * SC_ECONFIG). outboundTrafficPolicy.mode REGISTRY_ONLY, and defaultHttpRetryPolicy (NULL when
 * unset), for proxy_istio.c. */
bool proxy_istio_is_mesh(const struct sc_ynode *doc);
int proxy_istio_mesh_keys(struct proxy_front *f);
int proxy_istio_mesh_finish(struct proxy_front *f);
bool proxy_istio_mesh_registry_only(struct proxy_front *f);
/* outboundTrafficPolicy.mode's values, for MeshConfig and Sidecar. */
extern const struct proxy_front_enum proxy_istio_outbound_modes[];
const struct sc_ynode *proxy_istio_mesh_retry(const struct proxy_front *f);

#endif

// SPDX-License-Identifier: Apache-2.0
// What the files of the secrets role share: its configuration and run-time state, and the calls
// between the role (secrets.c: options, annotations, paths, start, reload, stop), the Vault client
// (secrets_vault.c: requests, authentication, token and lease renewal) and the rendering of
// templates to files (secrets_render.c). One loop thread touches all of it; nothing here is
// shared with another role.
#ifndef SC_ROLES_SECRETS_SECRETS_H
#define SC_ROLES_SECRETS_SECRETS_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "app.h"
#include "core/config.h"
#include "core/metrics.h"
#include "core/template.h"
#include "net/dest.h"
#include "net/egress.h"
#include "net/h1client.h"
#define SECRETS_MAX_PATHS 256
#define SECRETS_MAX_OUT (4u << 20)
#define ANN "vault.hashicorp.com/"

struct secrets_item_cfg {
    char *name;
    char *path;
    char *template;
    char *template_file;
    char *dest;
    char *mode;
    char *owner;
    struct sc_dest_reload_cfg reload;
};

struct secrets_cfg {
    char *address;
    char *namespace;
    char *ca_cert;
    int auth_method;
    char *token;
    char *token_file;
    char *role_id;
    char *secret_id;
    char *secret_id_file;
    char *role;
    char *auth_path;
    char *jwt_path;
    struct sc_vec secrets;
    char *dest_dir;
    char *mode;
    char *owner;
    char *annotations_file;
    char *annotations_env;
    bool once;
    uint64_t refresh_ms;
    uint64_t retry_backoff_ms;
    uint64_t max_backoff_ms;
    int64_t retries;
    uint64_t timeout_ms;
    struct sc_strv validate;
    struct sc_dest_reload_cfg reload;
};

enum { AUTH_AUTO, AUTH_TOKEN, AUTH_APPROLE, AUTH_KUBERNETES };
struct secrets;

/* One Vault path some template reads, with its last response and lease. Heap-allocated, so a
 * reload can drop one while the others keep their place (the timer is a libuv handle). */
struct secrets_path {
    struct secrets *sv;
    char *path;
    json_t *secret; /* {Data, LeaseID, LeaseDuration, Renewable} or NULL before the first read */
    char *lease_id;
    int64_t lease_s;
    bool renewable;
    uv_timer_t timer;
    bool busy;
    bool used; /* a template of the config being applied reads it */
    int failures;
    struct sc_metric *m_expiry;
};

struct secrets_file {
    struct secrets *sv;
    struct secrets_file *next; /* in sv->retired */
    char *name;
    struct sc_template *tmpl;
    char *dest;
    struct sc_dest_spec spec;
    const struct sc_dest_reload_cfg *reload_cfg; /* the item's reload_* keys, own_reload, or NULL */
    struct sc_dest_reload_cfg own_reload;        /* from agent-inject-command-<name> */
    bool has_own_reload;
    struct sc_dest_reloader *reloader; /* the file's own action, or NULL: the top-level one */
    bool written;
    bool writing;
    bool dirty;
    bool retired; /* a reload replaced it while its write was in flight */
};

/* What a config resolves to (annotations read, templates parsed, files described), built in
 * full before anything running changes, so a config that fails changes nothing. */
struct secrets_plan {
    char *role;
    char *namespace;
    char *auth_path;
    const char *address;   /* borrowed from the config or the environment */
    const char *cfg_token; /* same */
    const char *ca_file;   /* same */
    int method;
    char *auth_key; /* every setting authentication depends on, to tell whether it changed */
    struct secrets_file **files;
    size_t nfiles;
};

struct secrets {
    struct sc_app *app;
    uv_loop_t *loop;
    const struct secrets_cfg *cfg;
    struct sc_egress *egress;
    struct sc_egress_tls tls;
    struct sc_dest_reloader *reloader;
    char *token;
    int64_t token_ttl;
    bool token_renewable;
    int method;
    char *role;
    char *auth_path;
    char *namespace;
    const char *address;
    const char *cfg_token;
    char *auth_key;
    uv_timer_t token_timer;
    uv_timer_t retry_timer;
    int auth_failures;
    bool authed;
    struct secrets_path **paths;
    size_t npaths;
    struct secrets_file **files;
    size_t nfiles;
    struct secrets_file *retired; /* replaced files whose write is still in flight */
    struct secrets_req *reqs;     /* in flight, for cancellation */
    int writes;
    bool stopping;
    bool stopped;
    bool gave_up;
    struct sc_metric *m_fetch_ok, *m_fetch_err, *m_renew_ok, *m_renew_err, *m_auth_ok, *m_auth_err;
    struct sc_metric_family *f_expiry;
};

struct secrets_req {
    struct secrets *sv;
    struct secrets_req *next, *prev;
    struct sc_egress_xfer *xfer; /* through libcurl (https, proxies) */
    struct sc_h1cli_named *h1;   /* or through net/h1client (plain http://) */
    char *url;
    char *body;
    struct sc_kv hdrs[4];
    size_t nhdrs;
    void (*cb)(struct secrets *sv, void *arg, int status, json_t *j, const char *err);
    void *arg;
};

/* The auth_method names, indexed by the option's value (NULL-terminated). */
extern const char *const secrets_auth_methods[];

/* ---- the Vault client (secrets_vault.c) ---- */

/* Logs in (token, AppRole or Kubernetes JWT, as configured) and, once authenticated, starts
 * reading every path; a failure retries with backoff or gives up past the attempts allowed. */
void secrets_vault_authenticate(struct secrets *sv);

/* The egress client (libcurl), created on first use: Vault over https or a proxy, reload
 * actions with a URL. */
struct sc_egress *secrets_egress(struct secrets *sv);

/* Reads <p> from Vault now (its callback schedules the next read or renewal). */
void secrets_vault_fetch(struct secrets_path *p);

/* Cancels the requests in flight whose callback argument is <arg>, or all of them for NULL; their
 * callbacks never run. */
void secrets_vault_cancel(struct secrets *sv, const void *arg);

/* Reports the role stopped with <code> once no write is in flight (no-op before that, and after
 * the first call). */
void secrets_finish(struct secrets *sv, int code);

/* Logs that <what> failed for good because of <why> and stops the role with an error. */
void secrets_give_up(struct secrets *sv, const char *what, const char *why);

/* ---- rendering (secrets_render.c) ---- */

/* The path <path> the current config reads, or NULL (borrowed). */
struct secrets_path *secrets_find_path(struct secrets *sv, const char *path);

/* The reload action of <f>: its own, or the role's top-level one (borrowed; may be NULL). */
struct sc_dest_reloader *secrets_file_reloader(const struct secrets_file *f);

/* Renders every file whose secrets have all been read and writes the ones that changed. */
void secrets_render_all(struct secrets *sv);

/* Frees <f> (NULL-safe), wiping its rendered text. */
void secrets_file_free(struct secrets_file *f);

#endif

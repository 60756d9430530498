// SPDX-License-Identifier: Apache-2.0
// `sidecar secrets`: a Vault Agent replacement. It authenticates to Vault (token, AppRole or
// Kubernetes service-account JWT), reads the secrets that each template names (KV v1, KV v2,
// dynamic secrets), renders the templates and writes each file atomically with mode 0600, keeps
// dynamic leases alive (renewed at 2/3 of the lease, re-fetched before expiry when the lease
// cannot be extended) and the token renewed, and re-renders and reloads the app when a value
// changes. Secrets go from the HTTP response into the template and the file only: they are never
// logged, shown as "<redacted>" in /config, and zeroed when freed (jansson's blocks, the Vault
// transfers' buffers, rendered files, request bodies, tokens; see secrets_mem.h). The Vault Agent
// injector's pod annotations can be read from a file or an environment variable, so an annotated
// pod works unchanged. SIGHUP / POST /reload applies a new config without reading again the
// secrets it still uses, unless the Vault settings changed. This file holds the options, the
// annotations, the paths and the role's life cycle; the Vault client is in secrets_vault.c and the
// rendering of files in secrets_render.c.
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "app.h"
#include "core/alloc.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "core/template.h"
#include "net/dest.h"
#include "net/egress.h"
#include "roles/secrets/secrets_mem.h"

#include "roles/secrets/secrets.h"

const char *const secrets_auth_methods[] = { "auto", "token", "approle", "kubernetes", NULL };

static const struct sc_opt item_opts[] = {
    { .name = "name",
      .type = SC_OPT_STR,
      .offset = offsetof(struct secrets_item_cfg, name),
      .help = "file name under dest_dir (and the name in logs)",
      .flags = SC_OPT_REQUIRED },
    { .name = "path",
      .type = SC_OPT_STR,
      .offset = offsetof(struct secrets_item_cfg, path),
      .help = "Vault path read for the default template (KV v2: secret/data/<key>); templates "
              "name their own with {{ with secret \"path\" }}" },
    { .name = "template",
      .type = SC_OPT_STR,
      .offset = offsetof(struct secrets_item_cfg, template),
      .help = "inline template (Vault Agent / consul-template syntax subset)" },
    { .name = "template_file",
      .type = SC_OPT_STR,
      .offset = offsetof(struct secrets_item_cfg, template_file),
      .help = "template read from this file at start" },
    { .name = "dest",
      .type = SC_OPT_STR,
      .offset = offsetof(struct secrets_item_cfg, dest),
      .help = "destination file (default: <dest_dir>/<name>)" },
    { .name = "mode",
      .type = SC_OPT_STR,
      .offset = offsetof(struct secrets_item_cfg, mode),
      .help = "file mode, octal (default: the top-level mode)" },
    { .name = "owner",
      .type = SC_OPT_STR,
      .offset = offsetof(struct secrets_item_cfg, owner),
      .help = "file owner, user[:group] or uid[:gid]" },
    { .name = "reload",
      .type = SC_OPT_INLINE,
      .offset = offsetof(struct secrets_item_cfg, reload),
      .sub = sc_dest_reload_item_opts },
    { 0 },
};

static const struct sc_opt secrets_opts[] = {
    { .name = "vault_addr",
      .type = SC_OPT_STR,
      .offset = offsetof(struct secrets_cfg, address),
      .help = "Vault address (default: VAULT_ADDR, else https://127.0.0.1:8200)",
      .flags = SC_OPT_FLAG },
    { .name = "vault_namespace",
      .type = SC_OPT_STR,
      .offset = offsetof(struct secrets_cfg, namespace),
      .help = "Vault Enterprise namespace, sent as X-Vault-Namespace (default: VAULT_NAMESPACE)",
      .flags = SC_OPT_FLAG },
    { .name = "vault_cacert",
      .type = SC_OPT_STR,
      .offset = offsetof(struct secrets_cfg, ca_cert),
      .help = "PEM bundle that verifies Vault's certificate (default: VAULT_CACERT)",
      .flags = SC_OPT_FLAG },
    { .name = "auth_method",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct secrets_cfg, auth_method),
      .def = "auto",
      .help = "auto picks token when one is set, else approle when role_id is set, else "
              "kubernetes",
      .flags = SC_OPT_FLAG,
      .enums = secrets_auth_methods },
    { .name = "token",
      .type = SC_OPT_STR,
      .offset = offsetof(struct secrets_cfg, token),
      .help = "Vault token (default: VAULT_TOKEN)",
      .flags = SC_OPT_SECRET },
    { .name = "token_file",
      .type = SC_OPT_STR,
      .offset = offsetof(struct secrets_cfg, token_file),
      .help = "file holding the Vault token",
      .flags = SC_OPT_FLAG },
    { .name = "role_id",
      .type = SC_OPT_STR,
      .offset = offsetof(struct secrets_cfg, role_id),
      .help = "AppRole role_id",
      .flags = SC_OPT_FLAG },
    { .name = "secret_id",
      .type = SC_OPT_STR,
      .offset = offsetof(struct secrets_cfg, secret_id),
      .help = "AppRole secret_id",
      .flags = SC_OPT_SECRET },
    { .name = "secret_id_file",
      .type = SC_OPT_STR,
      .offset = offsetof(struct secrets_cfg, secret_id_file),
      .help = "file holding the AppRole secret_id",
      .flags = SC_OPT_FLAG },
    { .name = "role",
      .type = SC_OPT_STR,
      .offset = offsetof(struct secrets_cfg, role),
      .help = "Kubernetes auth role (or the vault.hashicorp.com/role annotation)",
      .flags = SC_OPT_FLAG },
    { .name = "auth_path",
      .type = SC_OPT_STR,
      .offset = offsetof(struct secrets_cfg, auth_path),
      .help = "auth mount path (default auth/approle or auth/kubernetes)",
      .flags = SC_OPT_FLAG },
    { .name = "jwt_path",
      .type = SC_OPT_STR,
      .offset = offsetof(struct secrets_cfg, jwt_path),
      .def = "/var/run/secrets/kubernetes.io/serviceaccount/token",
      .help = "service-account JWT for Kubernetes auth",
      .flags = SC_OPT_FLAG },
    { .name = "secrets",
      .type = SC_OPT_OBJLIST,
      .offset = offsetof(struct secrets_cfg, secrets),
      .help = "files to render",
      .sub = item_opts,
      .sub_size = sizeof(struct secrets_item_cfg),
      .max = 256 },
    { .name = "dest_dir",
      .type = SC_OPT_STR,
      .offset = offsetof(struct secrets_cfg, dest_dir),
      .def = "/vault/secrets",
      .help = "directory of the rendered files",
      .flags = SC_OPT_FLAG },
    { .name = "mode",
      .type = SC_OPT_STR,
      .offset = offsetof(struct secrets_cfg, mode),
      .def = "0600",
      .help = "file mode of the rendered files, octal",
      .flags = SC_OPT_FLAG },
    { .name = "owner",
      .type = SC_OPT_STR,
      .offset = offsetof(struct secrets_cfg, owner),
      .help = "owner of the rendered files, user[:group] or uid[:gid]",
      .flags = SC_OPT_FLAG },
    { .name = "annotations_file",
      .type = SC_OPT_STR,
      .offset = offsetof(struct secrets_cfg, annotations_file),
      .help = "pod annotations (downward API format key=\"value\" per line) with Vault Agent "
              "injector annotations to honour",
      .flags = SC_OPT_FLAG },
    { .name = "annotations_env",
      .type = SC_OPT_STR,
      .offset = offsetof(struct secrets_cfg, annotations_env),
      .def = "SIDECAR_VAULT_ANNOTATIONS",
      .help = "environment variable holding annotations in the same format (read when set)",
      .flags = SC_OPT_FLAG },
    { .name = "once",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct secrets_cfg, once),
      .help = "render every file once and exit (init container; exit 1 on failure)",
      .flags = SC_OPT_FLAG },
    { .name = "refresh",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct secrets_cfg, refresh_ms),
      .def = "5m",
      .help = "re-read interval of secrets without a lease (KV)",
      .flags = SC_OPT_FLAG,
      .min = 100,
      .max = 86400000 },
    { .name = "retry_backoff",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct secrets_cfg, retry_backoff_ms),
      .def = "1s",
      .help = "first retry delay after a failure; doubles up to max_backoff",
      .flags = SC_OPT_FLAG },
    { .name = "max_backoff",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct secrets_cfg, max_backoff_ms),
      .def = "30s",
      .help = "longest retry delay",
      .flags = SC_OPT_FLAG },
    { .name = "retries",
      .type = SC_OPT_INT,
      .offset = offsetof(struct secrets_cfg, retries),
      .def = "3",
      .help = "--once: retries before giving up",
      .flags = SC_OPT_FLAG,
      .min = 0,
      .max = 100 },
    { .name = "timeout",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct secrets_cfg, timeout_ms),
      .def = "10s",
      .help = "deadline of one Vault request" },
    { .name = "validate",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct secrets_cfg, validate),
      .help = "check before each swap: json, yaml, or a command with {{file}}" },
    { .name = "reload",
      .type = SC_OPT_INLINE,
      .offset = offsetof(struct secrets_cfg, reload),
      .sub = sc_dest_reload_opts },
    { 0 },
};

/* ---- annotations ---- */

/* Decodes a Go-quoted string ("a\nb") or returns the raw text when it is not quoted. */
static char *unquote(const char *s, size_t n)
{
    if (n < 2 || s[0] != '"' || s[n - 1] != '"') {
        return sc_strndup(s, n);
    }
    struct sc_buf b;
    sc_buf_init(&b, n);
    for (size_t i = 1; i + 1 < n; i++) {
        char c = s[i];
        if (c == '\\' && i + 2 < n) {
            char e = s[++i];
            c = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e;
        }
        sc_buf_append(&b, &c, 1);
    }
    char *r = sc_strndup(b.p ? b.p : "", b.len);
    sc_buf_cleanup(&b);
    return r;
}

struct ann {
    struct sc_kv *v;
    size_t n;
};

static void ann_parse(struct ann *a, const char *text, size_t len)
{
    struct sc_str rest = { text, len };
    while (rest.len > 0) {
        struct sc_str line = sc_str_trim(sc_str_split(&rest, '\n'));
        const char *eq = memchr(line.p, '=', line.len);
        if (!eq || line.len == 0 || a->n >= 1024) {
            continue;
        }
        a->v = sc_reallocarray(a->v, a->n + 1, sizeof(struct sc_kv));
        a->v[a->n].key = sc_strndup(line.p, (size_t)(eq - line.p));
        a->v[a->n].value = unquote(eq + 1, line.len - (size_t)(eq + 1 - line.p));
        a->n++;
    }
}

static const char *ann_get(const struct ann *a, const char *key)
{
    for (size_t i = 0; i < a->n; i++) {
        if (strcmp(a->v[i].key, key) == 0) {
            return a->v[i].value;
        }
    }
    return NULL;
}

static void ann_free(struct ann *a)
{
    for (size_t i = 0; i < a->n; i++) {
        sc_free(a->v[i].key);
        sc_free(a->v[i].value);
    }
    sc_free(a->v);
}

/* ---- paths ---- */

/* sc_template_calls callback: marks <path> used, adding it when it is new. */
static void add_path(void *arg, const char *func, const char *path)
{
    struct secrets *sv = arg;
    (void)func;
    struct secrets_path *p = secrets_find_path(sv, path);
    if (p) {
        p->used = true;
        return;
    }
    if (sv->npaths >= SECRETS_MAX_PATHS) {
        sc_error("too many distinct secret paths; this one is never read", SC_LS("path", path),
                 SC_LU("max", SECRETS_MAX_PATHS));
        return;
    }
    p = SC_NEW(struct secrets_path);
    p->sv = sv;
    p->path = sc_strdup(path);
    p->used = true;
    uv_timer_init(sv->loop, &p->timer);
    p->timer.data = p;
    p->m_expiry = sc_metrics_get(sv->f_expiry, (const char *[]){ path });
    sv->paths[sv->npaths++] = p;
}

static void path_free(struct secrets_path *p)
{
    sc_free(p->path);
    sc_free(p->lease_id);
    if (p->secret) {
        json_decref(p->secret);
    }
    sc_free(p);
}

static void on_path_closed(uv_handle_t *h)
{
    path_free(h->data);
}

/* Forgets what was read: the next read starts afresh (a new Vault or new credentials). */
static void path_reset(struct secrets_path *p)
{
    uv_timer_stop(&p->timer);
    p->busy = false;
    p->failures = 0;
    sc_free(p->lease_id);
    p->lease_id = NULL;
    if (p->secret) {
        json_decref(p->secret);
        p->secret = NULL;
    }
}

/* Marks every path some template of the current files reads, and drops the others (their
 * requests in flight are cancelled; the leases are left to expire). */
static void sync_paths(struct secrets *sv)
{
    for (size_t i = 0; i < sv->npaths; i++) {
        sv->paths[i]->used = false;
    }
    for (size_t i = 0; i < sv->nfiles; i++) {
        sc_template_calls(sv->files[i]->tmpl, "secret", add_path, sv);
    }
    size_t n = 0;
    for (size_t i = 0; i < sv->npaths; i++) {
        struct secrets_path *p = sv->paths[i];
        if (p->used) {
            sv->paths[n++] = p;
            continue;
        }
        sc_info("secret path no longer read", SC_LS("path", p->path));
        secrets_vault_cancel(sv, p);
        uv_close((uv_handle_t *)&p->timer, on_path_closed);
    }
    sv->npaths = n;
}

/* ---- setup ---- */

/* Returns a new file described by the arguments (borrowed), or NULL with a message in <*err>.
 * <reload> names the file's own reload keys (NULL: none); <command> is the injector's
 * agent-inject-command (run by /bin/sh -c). */
static struct secrets_file *file_new(struct secrets *sv, const struct secrets_cfg *c,
                                     const char *name, const char *path, const char *tmpl_text,
                                     const char *tmpl_file, const char *dest, const char *mode,
                                     const char *owner, const struct sc_dest_reload_cfg *reload,
                                     const char *command, char **err)
{
    static const char *const extra[] = { "secret", NULL };
    char *text = NULL;
    if (tmpl_file) {
        struct sc_buf b;
        sc_buf_init(&b, 1u << 20);
        int rc = sc_file_read(tmpl_file, &b);
        if (rc < 0) {
            sc_buf_cleanup(&b);
            *err = sc_asprintf("%s: cannot read the template: %s", tmpl_file, sc_strerror(rc));
            return NULL;
        }
        text = sc_strndup(b.p ? b.p : "", b.len);
        sc_buf_cleanup(&b);
    } else if (tmpl_text) {
        text = sc_strdup(tmpl_text);
    } else if (path) {
        /* Vault Agent's default rendering: one "key: value" line per field of the data. */
        text = sc_asprintf("{{ with secret \"%s\" }}{{ range $k, $v := .Data }}{{ $k }}: {{ $v "
                           "}}\n{{ end }}{{ end }}",
                           path);
    } else {
        *err = sc_asprintf("secret %s: needs a path or a template", name);
        return NULL;
    }
    struct secrets_file *f = SC_NEW(struct secrets_file);
    f->sv = sv;
    f->name = sc_strdup(name);
    char *tname = sc_asprintf("%s.template", name);
    f->tmpl = sc_template_parse(tmpl_file ? tmpl_file : tname, text, strlen(text), extra, err);
    sc_free(text);
    sc_free(tname);
    if (!f->tmpl) {
        goto fail;
    }
    f->dest = dest ? sc_strdup(dest) : sc_asprintf("%s/%s", c->dest_dir, name);
    f->spec.path = f->dest;
    f->spec.validate = &c->validate;
    const char *m = mode ? mode : c->mode;
    if (sc_file_parse_mode(m, &f->spec.mode) < 0) {
        *err = sc_asprintf("secret %s: mode \"%s\" is not an octal file mode", name, m);
        goto fail;
    }
    const char *o = owner ? owner : c->owner;
    if (sc_file_parse_owner(o, &f->spec.uid, &f->spec.gid) < 0) {
        *err = sc_asprintf("secret %s: unknown owner \"%s\"", name, o);
        goto fail;
    }
    if (reload && (reload->url || reload->pid_file || reload->process || reload->command.n)) {
        if (sc_dest_reload_check(reload, err) < 0) {
            char *msg = sc_asprintf("secret %s: %s", name, *err);
            sc_free(*err);
            *err = msg;
            goto fail;
        }
        f->reload_cfg = reload;
    } else if (command && command[0]) {
        sc_config_defaults(sc_dest_reload_item_opts, &f->own_reload);
        f->has_own_reload = true;
        f->own_reload.command.v = sc_calloc(4, sizeof(char *));
        f->own_reload.command.v[0] = sc_strdup("/bin/sh");
        f->own_reload.command.v[1] = sc_strdup("-c");
        f->own_reload.command.v[2] = sc_strdup(command);
        f->own_reload.command.n = 3;
        f->reload_cfg = &f->own_reload;
    }
    return f;
fail:
    secrets_file_free(f);
    return NULL;
}

static int load_annotations(const struct secrets_cfg *c, struct ann *a, char **err)
{
    if (c->annotations_file) {
        struct sc_buf b;
        sc_buf_init(&b, 1u << 20);
        int rc = sc_file_read(c->annotations_file, &b);
        if (rc < 0) {
            sc_buf_cleanup(&b);
            *err = sc_asprintf("%s: cannot read the annotations: %s", c->annotations_file,
                               sc_strerror(rc));
            return SC_ECONFIG;
        }
        ann_parse(a, b.p ? b.p : "", b.len);
        sc_buf_cleanup(&b);
    }
    const char *env = c->annotations_env ? getenv(c->annotations_env) : NULL;
    if (env) {
        ann_parse(a, env, strlen(env));
    }
    return 0;
}

/* The option, else the Vault CLI's environment variable, else <def>. */
static const char *opt_env(const char *opt, const char *env, const char *def)
{
    if (opt && opt[0]) {
        return opt;
    }
    const char *e = getenv(env);
    return e && e[0] ? e : def;
}

static void plan_cleanup(struct secrets_plan *pl)
{
    sc_free(pl->role);
    sc_free(pl->namespace);
    sc_free(pl->auth_path);
    sc_free_secret(pl->auth_key, pl->auth_key ? strlen(pl->auth_key) : 0);
    for (size_t i = 0; i < pl->nfiles; i++) {
        secrets_file_free(pl->files[i]);
    }
    sc_free(pl->files);
    memset(pl, 0, sizeof(*pl));
}

static const char *nz(const char *s)
{
    return s ? s : "";
}

/* Resolves <c> (annotations, environment, templates) into <pl>. Returns 0, or SC_ECONFIG with a
 * message in <*err>; <pl> must be cleaned up either way. Starts nothing. */
static int plan_build(struct secrets *sv, const struct secrets_cfg *c, struct secrets_plan *pl,
                      char **err)
{
    struct ann a = { 0 };
    int rc = load_annotations(c, &a, err);
    if (rc < 0) {
        goto out;
    }
    pl->role = sc_strdup(c->role ? c->role : ann_get(&a, ANN "role"));
    pl->namespace =
        sc_strdup(opt_env(c->namespace, "VAULT_NAMESPACE", ann_get(&a, ANN "namespace")));
    pl->address = opt_env(c->address, "VAULT_ADDR", "https://127.0.0.1:8200");
    pl->cfg_token = opt_env(c->token, "VAULT_TOKEN", NULL);
    pl->ca_file = opt_env(c->ca_cert, "VAULT_CACERT", NULL);
    pl->method = c->auth_method;
    if (pl->method == AUTH_AUTO) {
        pl->method = pl->cfg_token || c->token_file ? AUTH_TOKEN
                     : c->role_id                   ? AUTH_APPROLE
                                                    : AUTH_KUBERNETES;
    }
    const char *ap = c->auth_path ? c->auth_path : ann_get(&a, ANN "auth-path");
    pl->auth_path = ap ? sc_strdup(ap)
                       : sc_strdup(pl->method == AUTH_APPROLE ? "auth/approle" : "auth/kubernetes");
    if (pl->method == AUTH_KUBERNETES && !pl->role) {
        *err = sc_strdup("kubernetes auth needs a role (role: or the vault.hashicorp.com/role "
                         "annotation); or set token / role_id");
        rc = SC_ECONFIG;
        goto out;
    }
    pl->auth_key = sc_asprintf("%s\n%s\n%s\n%d\n%s\n%s\n%s\n%s\n%s\n%s\n%s\n%s", pl->address,
                               nz(pl->namespace), nz(pl->ca_file), pl->method, nz(pl->cfg_token),
                               nz(c->token_file), nz(c->role_id), nz(c->secret_id),
                               nz(c->secret_id_file), nz(pl->role), pl->auth_path, nz(c->jwt_path));

    size_t cap = c->secrets.n + a.n;
    pl->files = sc_calloc(cap ? cap : 1, sizeof(struct secrets_file *));
    const struct secrets_item_cfg *items = c->secrets.v;
    for (size_t i = 0; i < c->secrets.n && rc == 0; i++) {
        struct secrets_file *f =
            file_new(sv, c, items[i].name, items[i].path, items[i].template, items[i].template_file,
                     items[i].dest, items[i].mode, items[i].owner, &items[i].reload, NULL, err);
        if (!f) {
            rc = SC_ECONFIG;
        } else {
            pl->files[pl->nfiles++] = f;
        }
    }
    static const char pfx[] = ANN "agent-inject-secret-";
    for (size_t i = 0; i < a.n && rc == 0; i++) {
        if (strncmp(a.v[i].key, pfx, sizeof(pfx) - 1) != 0) {
            continue;
        }
        const char *name = a.v[i].key + sizeof(pfx) - 1;
        char *tk = sc_asprintf(ANN "agent-inject-template-%s", name);
        char *fk = sc_asprintf(ANN "agent-inject-file-%s", name);
        char *ck = sc_asprintf(ANN "agent-inject-command-%s", name);
        const char *file = ann_get(&a, fk);
        const char *vol = ann_get(&a, ANN "secret-volume-path");
        char *dest =
            vol || file ? sc_asprintf("%s/%s", vol ? vol : c->dest_dir, file ? file : name) : NULL;
        struct secrets_file *f = file_new(sv, c, name, a.v[i].value, ann_get(&a, tk), NULL, dest,
                                          NULL, NULL, NULL, ann_get(&a, ck), err);
        if (!f) {
            rc = SC_ECONFIG;
        } else {
            pl->files[pl->nfiles++] = f;
        }
        sc_free(tk);
        sc_free(fk);
        sc_free(ck);
        sc_free(dest);
    }
    if (rc == 0 && pl->nfiles == 0) {
        *err = sc_strdup("no secrets to render: give secrets: in the config or "
                         "vault.hashicorp.com/agent-inject-secret-<name> annotations");
        rc = SC_ECONFIG;
    }
out:
    ann_free(&a);
    return rc;
}

/* Moves the settings and files of <pl> into <sv> (whose old files must be gone) and gives each
 * file that names one its own reloader. */
/* The egress client for a reload action: only one with a URL needs it. */
static struct sc_egress *reload_egress(struct secrets *sv, const struct sc_dest_reload_cfg *r)
{
    return r->url ? secrets_egress(sv) : NULL;
}

static void plan_apply(struct secrets *sv, struct secrets_plan *pl)
{
    sc_free(sv->role);
    sc_free(sv->namespace);
    sc_free(sv->auth_path);
    sc_free_secret(sv->auth_key, sv->auth_key ? strlen(sv->auth_key) : 0);
    sc_free(sv->files);
    sv->role = pl->role;
    sv->namespace = pl->namespace;
    sv->auth_path = pl->auth_path;
    sv->auth_key = pl->auth_key;
    sv->address = pl->address;
    sv->cfg_token = pl->cfg_token;
    sv->tls.ca_file = pl->ca_file;
    sv->method = pl->method;
    sv->files = pl->files;
    sv->nfiles = pl->nfiles;
    memset(pl, 0, sizeof(*pl));
    struct sc_metrics *m = sc_app_metrics(sv->app);
    for (size_t i = 0; i < sv->nfiles; i++) {
        struct secrets_file *f = sv->files[i];
        if (f->reload_cfg) {
            f->reloader = sc_dest_reloader_new(sv->loop, reload_egress(sv, f->reload_cfg),
                                               f->reload_cfg, m, "sidecar_secrets_reload_total");
        }
        sc_info("secret file", SC_LS("name", f->name), SC_LS("dest", f->dest),
                SC_LB("own_reload_action", f->reloader != NULL));
    }
}

static void secrets_free(struct secrets *sv)
{
    for (size_t i = 0; i < sv->npaths; i++) {
        path_free(sv->paths[i]);
    }
    sc_free(sv->paths);
    for (size_t i = 0; i < sv->nfiles; i++) {
        secrets_file_free(sv->files[i]);
    }
    sc_free(sv->files);
    while (sv->retired) {
        struct secrets_file *f = sv->retired;
        sv->retired = f->next;
        secrets_file_free(f);
    }
    sc_free_secret(sv->token, sv->token ? strlen(sv->token) : 0);
    sc_free_secret(sv->auth_key, sv->auth_key ? strlen(sv->auth_key) : 0);
    sc_free(sv->role);
    sc_free(sv->auth_path);
    sc_free(sv->namespace);
    sc_free(sv);
}

static void secrets_cleanup(void *state)
{
    secrets_free(state);
}

static int secrets_check(const void *vcfg, char **err)
{
    const struct secrets_cfg *c = vcfg;
    const char *a = opt_env(c->address, "VAULT_ADDR", "https://127.0.0.1:8200");
    if (strncmp(a, "http://", 7) != 0 && strncmp(a, "https://", 8) != 0) {
        *err = sc_asprintf("vault_addr: \"%s\" is not an http:// or https:// URL", a);
        return SC_ECONFIG;
    }
    const struct secrets_item_cfg *items = c->secrets.v;
    for (size_t i = 0; i < c->secrets.n; i++) {
        if (sc_dest_reload_check(&items[i].reload, err) < 0) {
            char *m = sc_asprintf("secrets[%zu]: %s", i, *err);
            sc_free(*err);
            *err = m;
            return SC_ECONFIG;
        }
    }
    return sc_dest_reload_check(&c->reload, err);
}

static int secrets_start(struct sc_app *app, const void *vcfg, void **state, char **err)
{
    const struct secrets_cfg *c = vcfg;
    secrets_mem_protect();
    struct secrets *sv = SC_NEW(struct secrets);
    sv->app = app;
    sv->loop = sc_app_loop(app);
    sv->cfg = c;
    struct secrets_plan pl = { 0 };
    int rc = plan_build(sv, c, &pl, err);
    if (rc < 0) {
        plan_cleanup(&pl);
        secrets_free(sv);
        return rc;
    }
    struct sc_metrics *m = sc_app_metrics(app);
    static const char *const path_label[] = { "path", NULL };
    sv->f_expiry = sc_metrics_family(
        m, SC_METRIC_GAUGE, "sidecar_secrets_lease_expiry_timestamp_seconds",
        "Unix time at which the secret's current lease expires.", path_label, NULL, 0);
    static const char *const result_label[] = { "result", NULL };
    struct sc_metric_family *f =
        sc_metrics_family(m, SC_METRIC_COUNTER, "sidecar_secrets_fetch_total",
                          "Secret reads from Vault, by result.", result_label, NULL, 0);
    sv->m_fetch_ok = sc_metrics_get(f, (const char *[]){ "success" });
    sv->m_fetch_err = sc_metrics_get(f, (const char *[]){ "error" });
    f = sc_metrics_family(m, SC_METRIC_COUNTER, "sidecar_secrets_renew_total",
                          "Lease and token renewals, by result.", result_label, NULL, 0);
    sv->m_renew_ok = sc_metrics_get(f, (const char *[]){ "success" });
    sv->m_renew_err = sc_metrics_get(f, (const char *[]){ "error" });
    f = sc_metrics_family(m, SC_METRIC_COUNTER, "sidecar_secrets_auth_total",
                          "Vault logins and token lookups, by result.", result_label, NULL, 0);
    sv->m_auth_ok = sc_metrics_get(f, (const char *[]){ "success" });
    sv->m_auth_err = sc_metrics_get(f, (const char *[]){ "error" });

    sv->reloader = sc_dest_reloader_new(sv->loop, reload_egress(sv, &c->reload), &c->reload, m,
                                        "sidecar_secrets_reload_total");
    plan_apply(sv, &pl);
    sv->paths = sc_calloc(SECRETS_MAX_PATHS, sizeof(struct secrets_path *));
    sync_paths(sv);
    if (sv->method == AUTH_TOKEN && sv->cfg_token && !c->token_file) {
        sv->token = sc_strdup(sv->cfg_token);
    }
    uv_timer_init(sv->loop, &sv->token_timer);
    sv->token_timer.data = sv;
    uv_timer_init(sv->loop, &sv->retry_timer);
    sv->retry_timer.data = sv;
    secrets_vault_authenticate(sv);
    *state = sv;
    return 0;
}

/* SIGHUP / POST /reload: the new config is resolved in full first (a config that fails changes
 * nothing). Then the files are replaced (a replaced file whose write is in flight finishes it
 * first), the reload actions rebuilt, and the paths synchronised: a path that some template
 * still reads keeps its secret, lease and timers, so an unchanged secret is not read again. When
 * anything authentication depends on changed (address, namespace, CA, method, credentials), the
 * requests in flight are cancelled, what was read is forgotten, and the role logs in again. */
static int secrets_reload(struct sc_app *app, void *state, const void *vcfg, char **err)
{
    struct secrets *sv = state;
    const struct secrets_cfg *c = vcfg;
    if (sv->stopping || sv->cfg->once || c->once) {
        *err = sc_strdup("cannot reload while stopping or in --once mode");
        return SC_EUNSUPPORTED;
    }
    struct secrets_plan pl = { 0 };
    int rc = plan_build(sv, c, &pl, err);
    if (rc < 0) {
        plan_cleanup(&pl);
        return rc;
    }
    bool auth_changed = strcmp(sv->auth_key, pl.auth_key) != 0;
    /* A reload action waiting for its debounce (or running) is owed to the app: the new action
     * for the same file runs instead. */
    bool top_owed = sc_dest_reloader_busy(sv->reloader);
    bool *owed = sc_calloc(pl.nfiles, sizeof(bool));
    for (size_t i = 0; i < pl.nfiles; i++) {
        for (size_t k = 0; k < sv->nfiles; k++) {
            if (strcmp(sv->files[k]->dest, pl.files[i]->dest) == 0 &&
                sc_dest_reloader_busy(secrets_file_reloader(sv->files[k]))) {
                owed[i] = true;
            }
        }
    }
    for (size_t i = 0; i < sv->nfiles; i++) {
        struct secrets_file *f = sv->files[i];
        sc_dest_reloader_close(f->reloader);
        f->reloader = NULL;
        if (f->writing) {
            f->retired = true;
            f->next = sv->retired;
            sv->retired = f;
        } else {
            secrets_file_free(f);
        }
    }
    sv->nfiles = 0;
    sv->cfg = c;
    sc_dest_reloader_close(sv->reloader);
    sv->reloader = sc_dest_reloader_new(sv->loop, reload_egress(sv, &c->reload), &c->reload,
                                        sc_app_metrics(app), "sidecar_secrets_reload_total");
    plan_apply(sv, &pl);
    if (top_owed) {
        sc_dest_reloader_trigger(sv->reloader);
    }
    for (size_t i = 0; i < sv->nfiles; i++) {
        if (owed[i]) {
            sc_dest_reloader_trigger(secrets_file_reloader(sv->files[i]));
        }
    }
    sc_free(owed);
    sync_paths(sv);
    if (auth_changed) {
        sc_info("Vault settings changed; authenticating again");
        secrets_vault_cancel(sv, NULL);
        uv_timer_stop(&sv->token_timer);
        uv_timer_stop(&sv->retry_timer);
        for (size_t i = 0; i < sv->npaths; i++) {
            path_reset(sv->paths[i]);
        }
        sc_free_secret(sv->token, sv->token ? strlen(sv->token) : 0);
        sv->token = NULL;
        sv->authed = false;
        sv->auth_failures = 0;
        secrets_vault_authenticate(sv);
    } else {
        for (size_t i = 0; sv->authed && i < sv->npaths; i++) {
            struct secrets_path *p = sv->paths[i];
            if (!p->secret && !p->busy) {
                secrets_vault_fetch(p);
            }
        }
        secrets_render_all(sv);
    }
    sc_info("secrets configuration applied", SC_LU("files", sv->nfiles), SC_LU("paths", sv->npaths),
            SC_LB("reauthenticate", auth_changed));
    return 0;
}

static void secrets_stop(struct sc_app *app, void *state, bool now)
{
    struct secrets *sv = state;
    (void)app;
    sv->stopping = true;
    if (now) {
        sv->writes = 0;
    }
    secrets_finish(sv, sv->gave_up ? 1 : 0);
}

static const char secrets_usage[] =
    "Authenticates to Vault (token, AppRole, Kubernetes), renders secrets into files (mode 0600)\n"
    "with Vault Agent-compatible templates, renews leases and the token, and reloads the app\n"
    "when a value changes. Honours VAULT_ADDR, VAULT_NAMESPACE, VAULT_CACERT, VAULT_TOKEN and the\n"
    "vault.hashicorp.com/agent-inject-* pod annotations (--annotations-file).\n";

const struct sc_role sc_role_secrets = {
    .name = "secrets",
    .summary = "Vault agent: authenticate, render secrets to files, renew leases and tokens",
    .usage = secrets_usage,
    .opts = secrets_opts,
    .cfg_size = sizeof(struct secrets_cfg),
    .admin_default = "127.0.0.1:15023",
    .check = secrets_check,
    .start = secrets_start,
    .stop = secrets_stop,
    .reload = secrets_reload,
    .cleanup = secrets_cleanup,
};

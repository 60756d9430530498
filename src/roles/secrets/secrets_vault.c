// SPDX-License-Identifier: Apache-2.0
// The secrets role's Vault client: requests to a plain http:// address (no proxy in the
// environment) over net/h1client, others (https, proxies) over the egress client, libcurl, which is
// then loaded on first use; every body, token and response zeroed when freed; authentication
// (token, AppRole, Kubernetes service-account JWT), token renewal, reads of KV v1, KV v2 and
// dynamic secrets, and lease renewal at 2/3 of the lease with a fresh read before expiry when a
// lease cannot be extended. Invariant: a request's callback runs once, or never when the request
// was cancelled (secrets_vault_cancel), so no callback sees a freed path.
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
#include "roles/secrets/secrets.h"
#include "roles/secrets/secrets_mem.h"

/* ---- Vault requests ---- */

#define SECRETS_MAX_RESPONSE (4u << 20) /* a Vault response body, bytes */

/* Takes <r> off the list of requests in flight. */
static void req_unlink(struct secrets *sv, struct secrets_req *r)
{
    if (r->prev) {
        r->prev->next = r->next;
    } else {
        sv->reqs = r->next;
    }
    if (r->next) {
        r->next->prev = r->prev;
    }
}

struct sc_egress *secrets_egress(struct secrets *sv)
{
    if (!sv->egress) {
        sv->egress = sc_egress_new(sv->loop);
    }
    return sv->egress;
}

/* The outcome of a request from either client: <error_msg> when it failed, else the status and
 * the body. */
static void vault_done(struct secrets_req *r, const char *error_msg, int status, struct sc_str body)
{
    struct secrets *sv = r->sv;
    req_unlink(sv, r);
    json_t *j = NULL;
    const char *err = error_msg;
    char why[96];
    if (!err) {
        json_error_t je;
        j = body.len ? json_loadb(body.p, body.len, 0, &je) : NULL;
        if (status < 200 || status > 299) {
            /* Vault's {"errors": [...]} never holds secret values. */
            json_t *e = json_array_get(json_object_get(j, "errors"), 0);
            snprintf(why, sizeof(why), "Vault answered %d%s%.60s", status, e ? ": " : "",
                     e && json_is_string(e) ? json_string_value(e) : "");
            err = why;
        }
    }
    if (!sv->stopping) {
        r->cb(sv, r->arg, status, j, err);
    }
    if (j) {
        json_decref(j);
    }
    sc_free(r->url);
    sc_free_secret(r->body, r->body ? strlen(r->body) : 0);
    sc_free(r);
}

static void on_vault_resp(void *arg, const struct sc_egress_resp *resp)
{
    vault_done(arg,
               resp->error ? (resp->error_msg ? resp->error_msg : sc_strerror(resp->error)) : NULL,
               resp->status, resp->body);
}

static void on_vault_h1(void *arg, const struct sc_h1cli_resp *resp)
{
    struct secrets_req *r = arg;
    r->h1 = NULL;
    vault_done(r, resp->error ? (resp->reason ? resp->reason : sc_strerror(resp->error)) : NULL,
               resp->status, resp->body);
}

/* Sends <r> through net/h1client when the Vault address is plain http:// without a proxy in the
 * environment. Returns false when libcurl must send it; otherwise the outcome is reported. */
static bool vault_h1(struct secrets_req *r, const char *method)
{
    struct secrets *sv = r->sv;
    struct sc_h1cli_url u;
    if (!sc_h1cli_url_parse(r->url, &u)) {
        return false;
    }
    struct sc_http_header h[6];
    size_t n = 0;
    h[n++] = (struct sc_http_header){ SC_STR("Host"), sc_str_c(u.authority) };
    h[n++] = (struct sc_http_header){ SC_STR("Accept"), SC_STR("*/*") };
    for (size_t i = 0; i < r->nhdrs; i++) {
        h[n++] = (struct sc_http_header){ sc_str_c(r->hdrs[i].key), sc_str_c(r->hdrs[i].value) };
    }
    struct sc_h1cli_req req = {
        .method = sc_str_c(method),
        .target = sc_str_c(u.target),
        .headers = h,
        .nheaders = n,
        .body = r->body ? sc_str_c(r->body) : SC_STR_NULL,
        .timeout_ms = sv->cfg->timeout_ms,
        .max_body = SECRETS_MAX_RESPONSE,
        .sensitive = true,
    };
    int rc = sc_h1cli_send_host(sv->loop, u.host, u.port, &req, on_vault_h1, r, &r->h1);
    if (rc < 0) {
        char why[200];
        snprintf(why, sizeof(why), "cannot reach %s: %s", u.host, sc_strerror(rc));
        vault_done(r, why, 0, SC_STR_NULL);
    }
    sc_h1cli_url_free(&u);
    return true;
}

/* Sends <method> /v1/<path> with <body> (taken; may be NULL). <cb> runs once unless stopping. */
static void vault_call(struct secrets *sv, const char *method, const char *path, char *body,
                       void (*cb)(struct secrets *, void *, int, json_t *, const char *), void *arg)
{
    struct secrets_req *r = SC_NEW(struct secrets_req);
    r->sv = sv;
    r->cb = cb;
    r->arg = arg;
    const char *a = sv->address;
    size_t alen = strlen(a);
    while (alen > 0 && a[alen - 1] == '/') {
        alen--;
    }
    r->url = sc_asprintf("%.*s/v1/%s", (int)alen, a, path[0] == '/' ? path + 1 : path);
    r->body = body;
    if (sv->token) {
        r->hdrs[r->nhdrs++] = (struct sc_kv){ "X-Vault-Token", sv->token };
    }
    if (sv->namespace && sv->namespace[0]) {
        r->hdrs[r->nhdrs++] = (struct sc_kv){ "X-Vault-Namespace", sv->namespace };
    }
    r->hdrs[r->nhdrs++] = (struct sc_kv){ "X-Vault-Request", "true" };
    if (body) {
        r->hdrs[r->nhdrs++] = (struct sc_kv){ "Content-Type", "application/json" };
    }
    r->next = sv->reqs;
    if (sv->reqs) {
        sv->reqs->prev = r;
    }
    sv->reqs = r;
    if (vault_h1(r, method)) {
        return;
    }
    struct sc_egress_req req = {
        .method = method,
        .url = r->url,
        .headers = r->hdrs,
        .nheaders = r->nhdrs,
        .body = body,
        .body_len = body ? strlen(body) : 0,
        .timeout_ms = sv->cfg->timeout_ms,
        .max_response = SECRETS_MAX_RESPONSE,
        .tls = &sv->tls,
        .sensitive = true,
    };
    int rc = sc_egress_send(secrets_egress(sv), &req, on_vault_resp, r, &r->xfer);
    if (rc < 0) {
        struct sc_egress_resp fake = { .error = rc, .error_msg = sc_strerror(rc) };
        on_vault_resp(r, &fake);
    }
}

/* ---- flow ---- */

static uint64_t backoff(const struct secrets *sv, int failures)
{
    uint64_t b = sv->cfg->retry_backoff_ms;
    for (int i = 1; i < failures && b < sv->cfg->max_backoff_ms; i++) {
        b *= 2;
    }
    return b < sv->cfg->max_backoff_ms ? b : sv->cfg->max_backoff_ms;
}

static void on_closed_noop(uv_handle_t *h)
{
    (void)h;
}

/* Cancels the requests in flight whose callback argument is <arg>, or all of them for NULL; their
 * callbacks never run. */
void secrets_vault_cancel(struct secrets *sv, const void *arg)
{
    for (struct secrets_req *r = sv->reqs, *next; r; r = next) {
        next = r->next;
        if (arg && r->arg != arg) {
            continue;
        }
        req_unlink(sv, r);
        sc_egress_cancel(r->xfer);
        sc_h1cli_named_cancel(r->h1);
        sc_free(r->url);
        sc_free_secret(r->body, r->body ? strlen(r->body) : 0);
        sc_free(r);
    }
}

void secrets_finish(struct secrets *sv, int code)
{
    if (sv->stopped || sv->writes > 0) {
        return;
    }
    sv->stopped = true;
    sv->stopping = true;
    secrets_vault_cancel(sv, NULL);
    for (size_t i = 0; i < sv->npaths; i++) {
        uv_close((uv_handle_t *)&sv->paths[i]->timer, on_closed_noop);
    }
    for (size_t i = 0; i < sv->nfiles; i++) {
        sc_dest_reloader_close(sv->files[i]->reloader);
        sv->files[i]->reloader = NULL;
    }
    uv_close((uv_handle_t *)&sv->token_timer, on_closed_noop);
    uv_close((uv_handle_t *)&sv->retry_timer, on_closed_noop);
    sc_dest_reloader_close(sv->reloader);
    sv->reloader = NULL;
    sc_egress_close(sv->egress);
    sv->egress = NULL;
    sc_app_stopped(sv->app, code);
}

void secrets_give_up(struct secrets *sv, const char *what, const char *why)
{
    sc_error("secrets failed; the init step fails", SC_LS("step", what), SC_LS("reason", why));
    sv->gave_up = true;
    sv->stopping = true;
    secrets_finish(sv, 1);
}

static void on_retry_auth(uv_timer_t *t)
{
    secrets_vault_authenticate(t->data);
}

static void auth_failed(struct secrets *sv, const char *why)
{
    sc_metrics_counter_inc(sv->m_auth_err);
    sv->auth_failures++;
    if (sv->cfg->once && sv->auth_failures > sv->cfg->retries) {
        secrets_give_up(sv, "auth", why);
        return;
    }
    uint64_t b = backoff(sv, sv->auth_failures);
    sc_warn("Vault authentication failed; retrying", SC_LS("reason", why), SC_LU("retry_in_ms", b));
    uv_timer_start(&sv->retry_timer, on_retry_auth, b, 0);
}

static void on_token_timer(uv_timer_t *t);

static void schedule_token_renewal(struct secrets *sv)
{
    if (sv->token_renewable && sv->token_ttl > 0 && !sv->cfg->once) {
        uv_timer_start(&sv->token_timer, on_token_timer, (uint64_t)sv->token_ttl * 2000 / 3, 0);
    }
}

static void start_fetching(struct secrets *sv)
{
    for (size_t i = 0; i < sv->npaths; i++) {
        if (!sv->paths[i]->busy) {
            secrets_vault_fetch(sv->paths[i]);
        }
    }
}

static void on_login(struct secrets *sv, void *arg, int status, json_t *j, const char *err)
{
    (void)arg;
    (void)status;
    json_t *auth = json_object_get(j, "auth");
    const char *tok = json_string_value(json_object_get(auth, "client_token"));
    if (err || !tok) {
        auth_failed(sv, err ? err : "no client_token in the login response");
        return;
    }
    sc_free_secret(sv->token, sv->token ? strlen(sv->token) : 0);
    sv->token = sc_strdup(tok);
    sv->token_ttl = json_integer_value(json_object_get(auth, "lease_duration"));
    sv->token_renewable = json_is_true(json_object_get(auth, "renewable"));
    sv->auth_failures = 0;
    sv->authed = true;
    sc_metrics_counter_inc(sv->m_auth_ok);
    sc_info("authenticated to Vault", SC_LS("method", secrets_auth_methods[sv->method]),
            SC_LI("token_ttl_s", sv->token_ttl));
    schedule_token_renewal(sv);
    start_fetching(sv);
}

static void on_lookup_self(struct secrets *sv, void *arg, int status, json_t *j, const char *err)
{
    (void)arg;
    (void)status;
    if (err) {
        auth_failed(sv, err);
        return;
    }
    json_t *d = json_object_get(j, "data");
    sv->token_ttl = json_integer_value(json_object_get(d, "ttl"));
    sv->token_renewable = json_is_true(json_object_get(d, "renewable"));
    sv->auth_failures = 0;
    sv->authed = true;
    sc_metrics_counter_inc(sv->m_auth_ok);
    sc_info("using the Vault token", SC_LI("token_ttl_s", sv->token_ttl));
    schedule_token_renewal(sv);
    start_fetching(sv);
}

static char *read_trimmed(const char *path, char **err)
{
    struct sc_buf b;
    sc_buf_init(&b, 64 * 1024);
    b.sensitive = true;
    int rc = sc_file_read(path, &b);
    if (rc < 0) {
        sc_buf_cleanup(&b);
        *err = sc_asprintf("cannot read %s: %s", path, sc_strerror(rc));
        return NULL;
    }
    struct sc_str s = sc_str_trim((struct sc_str){ b.p ? b.p : "", b.len });
    while (s.len > 0 && (s.p[s.len - 1] == '\n' || s.p[s.len - 1] == '\r')) {
        s.len--;
    }
    char *r = sc_strndup(s.p, s.len);
    sc_buf_cleanup(&b);
    return r;
}

void secrets_vault_authenticate(struct secrets *sv)
{
    const struct secrets_cfg *c = sv->cfg;
    char *err = NULL;
    char *cred = NULL; /* the secret_id or the JWT */
    sv->authed = false;
    if (sv->method == AUTH_TOKEN) {
        if (!sv->token) {
            sv->token =
                c->token_file ? read_trimmed(c->token_file, &err) : sc_strdup(sv->cfg_token);
        }
        if (!sv->token) {
            goto fail;
        }
        vault_call(sv, "GET", "auth/token/lookup-self", NULL, on_lookup_self, NULL);
        return;
    }
    bool approle = sv->method == AUTH_APPROLE;
    if (approle) {
        cred = c->secret_id_file ? read_trimmed(c->secret_id_file, &err)
                                 : sc_strdup(c->secret_id ? c->secret_id : "");
    } else {
        cred = read_trimmed(c->jwt_path, &err);
    }
    if (!cred) {
        goto fail;
    }
    json_t *body = json_object();
    if (approle) {
        json_object_set_new(body, "role_id", json_string(c->role_id ? c->role_id : ""));
        json_object_set_new(body, "secret_id", json_string(cred));
    } else {
        json_object_set_new(body, "role", json_string(sv->role ? sv->role : ""));
        json_object_set_new(body, "jwt", json_string(cred));
    }
    sc_free_secret(cred, strlen(cred));
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    char *path = sc_asprintf("%s/login", sv->auth_path);
    /* A login must not carry an old token. */
    sc_free_secret(sv->token, sv->token ? strlen(sv->token) : 0);
    sv->token = NULL;
    vault_call(sv, "POST", path, text, on_login, NULL);
    sc_free(path);
    return;
fail:
    auth_failed(sv, err);
    sc_free(err);
}

static void on_renew_self(struct secrets *sv, void *arg, int status, json_t *j, const char *err)
{
    (void)arg;
    (void)status;
    json_t *auth = json_object_get(j, "auth");
    if (err || !auth) {
        sc_metrics_counter_inc(sv->m_renew_err);
        sc_warn("token renewal failed; authenticating again",
                SC_LS("reason", err ? err : "no auth"));
        if (sv->method != AUTH_TOKEN) {
            secrets_vault_authenticate(sv);
        }
        return;
    }
    sc_metrics_counter_inc(sv->m_renew_ok);
    sv->token_ttl = json_integer_value(json_object_get(auth, "lease_duration"));
    sv->token_renewable = json_is_true(json_object_get(auth, "renewable"));
    sc_info("token renewed", SC_LI("token_ttl_s", sv->token_ttl));
    schedule_token_renewal(sv);
}

static void on_token_timer(uv_timer_t *t)
{
    struct secrets *sv = t->data;
    vault_call(sv, "POST", "auth/token/renew-self", sc_strdup("{}"), on_renew_self, NULL);
}

/* ---- secrets and leases ---- */

static void on_path_timer(uv_timer_t *t);
static void lease_renew(struct secrets_path *p);

/* The timer's action is chosen when it fires: renew while there is a renewable lease, else
 * read the secret again. */
static void schedule_path(struct secrets_path *p, uint64_t ms)
{
    uv_timer_start(&p->timer, on_path_timer, ms, 0);
}

static void path_failed(struct secrets_path *p, const char *why, int status)
{
    struct secrets *sv = p->sv;
    p->busy = false;
    sc_metrics_counter_inc(sv->m_fetch_err);
    p->failures++;
    if (sv->cfg->once && p->failures > sv->cfg->retries) {
        secrets_give_up(sv, p->path, why);
        return;
    }
    uint64_t b = backoff(sv, p->failures);
    sc_warn("reading a secret failed; the last good file stays", SC_LS("path", p->path),
            SC_LS("reason", why), SC_LU("retry_in_ms", b));
    sc_free(p->lease_id);
    p->lease_id = NULL; /* re-read, not renew */
    if (status == 403 && sv->method != AUTH_TOKEN && sv->authed) {
        secrets_vault_authenticate(sv);
        return;
    }
    schedule_path(p, b);
}

static void set_expiry(struct secrets_path *p)
{
    if (p->lease_s > 0) {
        sc_metrics_gauge_set(p->m_expiry, (double)time(NULL) + (double)p->lease_s);
    }
}

static void on_secret(struct secrets *sv, void *arg, int status, json_t *j, const char *err)
{
    struct secrets_path *p = arg;
    if (err || !json_is_object(j)) {
        path_failed(p, err ? err : "no JSON in the response", status);
        return;
    }
    p->busy = false;
    p->failures = 0;
    sc_metrics_counter_inc(sv->m_fetch_ok);
    const char *lid = json_string_value(json_object_get(j, "lease_id"));
    sc_free(p->lease_id);
    p->lease_id = lid && lid[0] ? sc_strdup(lid) : NULL;
    p->lease_s = json_integer_value(json_object_get(j, "lease_duration"));
    p->renewable = json_is_true(json_object_get(j, "renewable"));
    json_t *data = json_object_get(j, "data");
    json_t *sec = json_pack("{s:O,s:s,s:I,s:b}", "Data", data ? data : json_null(), "LeaseID",
                            p->lease_id ? p->lease_id : "", "LeaseDuration", (json_int_t)p->lease_s,
                            "Renewable", p->renewable);
    bool changed = !p->secret || !json_equal(p->secret, sec);
    if (p->secret) {
        json_decref(p->secret);
    }
    p->secret = sec;
    set_expiry(p);
    sc_info("secret read", SC_LS("path", p->path), SC_LI("lease_s", p->lease_s),
            SC_LB("renewable", p->renewable));
    if (!sv->cfg->once) {
        if (p->lease_id && p->lease_s > 0) {
            schedule_path(p, (uint64_t)p->lease_s * 2000 / 3);
        } else {
            schedule_path(p, sv->cfg->refresh_ms);
        }
    }
    if (changed) {
        secrets_render_all(sv);
    }
}

void secrets_vault_fetch(struct secrets_path *p)
{
    if (p->sv->stopping || !p->sv->authed) {
        return;
    }
    p->busy = true;
    vault_call(p->sv, "GET", p->path, NULL, on_secret, p);
}

static void on_lease_renewed(struct secrets *sv, void *arg, int status, json_t *j, const char *err)
{
    struct secrets_path *p = arg;
    (void)status;
    p->busy = false;
    if (err || !json_is_object(j)) {
        sc_metrics_counter_inc(sv->m_renew_err);
        sc_warn("lease renewal failed; reading the secret again", SC_LS("path", p->path),
                SC_LS("reason", err ? err : "bad response"));
        sc_free(p->lease_id);
        p->lease_id = NULL;
        secrets_vault_fetch(p);
        return;
    }
    sc_metrics_counter_inc(sv->m_renew_ok);
    int64_t asked = p->lease_s;
    p->lease_s = json_integer_value(json_object_get(j, "lease_duration"));
    set_expiry(p);
    sc_info("lease renewed", SC_LS("path", p->path), SC_LI("lease_s", p->lease_s));
    if (p->lease_s <= 0) {
        secrets_vault_fetch(p);
    } else if (p->lease_s < asked) {
        /* The lease hit its max TTL: new credentials before this one expires. */
        sc_free(p->lease_id);
        p->lease_id = NULL;
        schedule_path(p, (uint64_t)p->lease_s * 2000 / 3);
    } else {
        schedule_path(p, (uint64_t)p->lease_s * 2000 / 3);
    }
}

static void lease_renew(struct secrets_path *p)
{
    json_t *b =
        json_pack("{s:s,s:I}", "lease_id", p->lease_id, "increment", (json_int_t)p->lease_s);
    char *body = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    p->busy = true;
    vault_call(p->sv, "PUT", "sys/leases/renew", body, on_lease_renewed, p);
}

static void on_path_timer(uv_timer_t *t)
{
    struct secrets_path *p = t->data;
    if (p->sv->stopping || p->busy) {
        return;
    }
    if (p->lease_id && p->renewable) {
        lease_renew(p);
    } else {
        secrets_vault_fetch(p);
    }
}

// SPDX-License-Identifier: Apache-2.0
// The reloadable TLS store (see tls.h): one context at a time, rebuilt when the files it was built
// from change. Polling (a uv_timer on the owning loop) compares each path's resolved target
// (device, inode, size, mtime), and only when those differ the content's SHA-256, so Kubernetes'
// atomic `..data` symlink swap, cert-manager's and SPIRE's rewrites are all seen without reading
// files every second. Worker threads take the current context under a mutex with a reference;
// a failed rebuild keeps the old context and is retried only when a file changes again.
#include "net/tls_int.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "net/ossl.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"

#define EXPIRY_CHECK_MS (3600 * 1000ULL)

struct sc_tls_store {
    bool server;
    char *name;
    struct sc_tls_server_opts sopts; /* copies (the caller's config may go away) */
    struct sc_tls_client_opts copts;
    pthread_mutex_t mu;
    struct sc_tls_ctx *cur;
    _Atomic uint64_t generation;
    struct sc_tls_ticket_keys *keys;
    struct sc_tls_sessions *sessions;
    struct sc__tls_files files; /* as last seen (even after a failed rebuild) */
    uv_timer_t timer;
    bool watching;
    uint64_t expiry_check_ms; /* loop time of the last expiry check */
};

/* ---- copies of the options ---------------------------------------------------------------- */

static void strv_copy(struct sc_strv *dst, const struct sc_strv *src)
{
    dst->n = src->n;
    dst->v = src->n ? sc_calloc(src->n, sizeof(char *)) : NULL;
    for (size_t i = 0; i < src->n; i++) {
        dst->v[i] = sc_strdup(src->v[i]);
    }
}

static void strv_free(struct sc_strv *v)
{
    for (size_t i = 0; i < v->n; i++) {
        sc_free(v->v[i]);
    }
    sc_free(v->v);
}

static void sopts_copy(struct sc_tls_server_opts *d, const struct sc_tls_server_opts *s)
{
    *d = *s;
    d->cert = sc_strdup(s->cert);
    d->key = sc_strdup(s->key);
    d->client_ca = sc_strdup(s->client_ca);
    strv_copy(&d->alpn, &s->alpn);
    d->certificates.v = NULL;
    if (s->certificates.n) {
        struct sc_tls_cert_opts *v = sc_calloc(s->certificates.n, sizeof(*v));
        const struct sc_tls_cert_opts *from = s->certificates.v;
        for (size_t i = 0; i < s->certificates.n; i++) {
            v[i].cert = sc_strdup(from[i].cert);
            v[i].key = sc_strdup(from[i].key);
            strv_copy(&v[i].server_names, &from[i].server_names);
            v[i].client_ca = sc_strdup(from[i].client_ca);
            v[i].client_cert = from[i].client_cert;
        }
        d->certificates.v = v;
    }
}

static void sopts_free(struct sc_tls_server_opts *o)
{
    struct sc_tls_cert_opts *v = o->certificates.v;
    for (size_t i = 0; i < o->certificates.n; i++) {
        sc_free(v[i].cert);
        sc_free(v[i].key);
        strv_free(&v[i].server_names);
        sc_free(v[i].client_ca);
    }
    sc_free(v);
    sc_free(o->cert);
    sc_free(o->key);
    sc_free(o->client_ca);
    strv_free(&o->alpn);
}

static void copts_copy(struct sc_tls_client_opts *d, const struct sc_tls_client_opts *s)
{
    *d = *s;
    d->ca = sc_strdup(s->ca);
    d->cert = sc_strdup(s->cert);
    d->key = sc_strdup(s->key);
    d->sni = sc_strdup(s->sni);
    strv_copy(&d->subject_alt_names, &s->subject_alt_names);
    strv_copy(&d->alpn, &s->alpn);
}

static void copts_free(struct sc_tls_client_opts *o)
{
    sc_free(o->ca);
    sc_free(o->cert);
    sc_free(o->key);
    sc_free(o->sni);
    strv_free(&o->subject_alt_names);
    strv_free(&o->alpn);
}

/* ---- building ----------------------------------------------------------------------------- */

static struct sc_tls_ctx *build(struct sc_tls_store *s, struct sc__tls_files *files, char **err)
{
    if (s->server) {
        return sc__tls_ctx_server(&s->sopts, s->keys, files, err);
    }
    return sc__tls_ctx_client(&s->copts, s->sessions, files, err);
}

static struct sc_tls_store *store_new(bool server, const void *opts, const char *name, char **err)
{
    if (sc_lazylib_ssl_load(err) < 0) {
        return NULL;
    }
    struct sc_tls_store *s = SC_NEW(struct sc_tls_store);
    s->server = server;
    s->name = sc_strdup(name ? name : "tls");
    pthread_mutex_init(&s->mu, NULL);
    if (server) {
        sopts_copy(&s->sopts, opts);
        s->keys = sc_tls_ticket_keys_new(s->sopts.session_timeout_ms);
    } else {
        copts_copy(&s->copts, opts);
        if (s->copts.session_reuse) {
            s->sessions = sc_tls_sessions_new(0);
        }
    }
    char *e = NULL;
    s->cur = build(s, &s->files, &e);
    if (!s->cur) {
        *err = sc_asprintf("%s: %s", s->name, e);
        sc_free(e);
        sc_tls_store_free(s);
        return NULL;
    }
    atomic_store(&s->generation, 1);
    sc__tls_ctx_warn_expiry(s->cur, s->name);
    return s;
}

struct sc_tls_store *sc_tls_store_new_server(const struct sc_tls_server_opts *o, const char *name,
                                             char **err)
{
    return store_new(true, o, name, err);
}

struct sc_tls_store *sc_tls_store_new_client(const struct sc_tls_client_opts *o, const char *name,
                                             char **err)
{
    return store_new(false, o, name, err);
}

struct sc_tls_ctx *sc_tls_store_get(struct sc_tls_store *s)
{
    pthread_mutex_lock(&s->mu);
    struct sc_tls_ctx *c = sc_tls_ctx_ref(s->cur);
    pthread_mutex_unlock(&s->mu);
    return c;
}

uint64_t sc_tls_store_generation(struct sc_tls_store *s)
{
    return atomic_load(&s->generation);
}

size_t sc_tls_store_certs(struct sc_tls_store *s, struct sc_tls_cert_info *out, size_t cap)
{
    struct sc_tls_ctx *c = sc_tls_store_get(s);
    size_t n = sc_tls_ctx_certs(c, out, cap);
    sc_tls_ctx_unref(c);
    return n;
}

/* ---- watching ----------------------------------------------------------------------------- */

/* Whether <f> still has the content it had: the same resolved target and stamps, or else the
 * same SHA-256 (then the new stamps are kept, so an unchanged file is hashed once). A file
 * recorded as missing (size -1) is the same while it stays missing. */
static bool file_same(struct sc__tls_file *f)
{
    struct stat st;
    if (stat(f->path, &st) < 0) {
        return f->size == -1; /* still missing */
    }
    if (st.st_dev == f->dev && st.st_ino == f->ino && st.st_size == f->size &&
        st.st_mtim.tv_sec == f->mtime.tv_sec && st.st_mtim.tv_nsec == f->mtime.tv_nsec) {
        return true;
    }
    if (!S_ISREG(st.st_mode) || st.st_size != f->size || st.st_size > 1024 * 1024) {
        return false;
    }
    FILE *fp = fopen(f->path, "rb");
    if (!fp) {
        return false;
    }
    unsigned char md[32];
    char buf[8192];
    size_t n;
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    EVP_DigestInit_ex(m, EVP_sha256(), NULL);
    while ((n = fread(buf, 1, sizeof(buf), fp)) > 0) {
        EVP_DigestUpdate(m, buf, n);
    }
    bool bad = ferror(fp) != 0;
    fclose(fp);
    EVP_DigestFinal_ex(m, md, NULL);
    EVP_MD_CTX_free(m);
    if (bad || memcmp(md, f->sha256, sizeof(md)) != 0) {
        return false;
    }
    f->dev = st.st_dev;
    f->ino = st.st_ino;
    f->mtime = st.st_mtim;
    return true;
}

int sc_tls_store_check(struct sc_tls_store *s, char **err)
{
    bool changed = false;
    for (size_t i = 0; i < s->files.n && !changed; i++) {
        changed = !file_same(&s->files.v[i]);
    }
    if (!changed) {
        return 0;
    }
    struct sc__tls_files files = { 0 };
    char *e = NULL;
    struct sc_tls_ctx *c = build(s, &files, &e);
    if (c) {
        sc__tls_files_free(&s->files);
        s->files = files;
    } else {
        /* Remember what the failed build read, so the same content is not retried (nor logged)
         * on every poll; a file it could not open is marked missing until it reappears. */
        for (size_t j = 0; j < s->files.n; j++) {
            struct sc__tls_file *f = &s->files.v[j];
            bool seen = false;
            for (size_t i = 0; i < files.n && !seen; i++) {
                if (files.v[i].path && strcmp(f->path, files.v[i].path) == 0) {
                    sc_free(f->path);
                    *f = files.v[i];
                    files.v[i].path = NULL;
                    seen = true;
                }
            }
            struct stat st;
            if (!seen && stat(f->path, &st) < 0) {
                f->size = -1;
            }
        }
        sc__tls_files_free(&files);
    }
    if (!c) {
        sc_error("TLS reload refused; the previous certificates stay in use", SC_LS("tls", s->name),
                 SC_LS("reason", e));
        if (err) {
            *err = e;
        } else {
            sc_free(e);
        }
        return SC_ECONFIG;
    }
    if (!s->server && s->sessions) {
        sc_tls_sessions_flush(s->sessions); /* new CA or certificate: no old sessions */
    }
    pthread_mutex_lock(&s->mu);
    struct sc_tls_ctx *old = s->cur;
    s->cur = c;
    pthread_mutex_unlock(&s->mu);
    sc_tls_ctx_unref(old);
    uint64_t gen = atomic_fetch_add(&s->generation, 1) + 1;
    struct sc_tls_cert_info info[1];
    size_t n = sc_tls_ctx_certs(c, info, 1);
    sc_info("TLS certificates reloaded", SC_LS("tls", s->name), SC_LU("generation", gen),
            SC_LS("serial", n ? info[0].serial : ""));
    sc__tls_ctx_warn_expiry(c, s->name);
    return 1;
}

static void on_poll(uv_timer_t *t)
{
    struct sc_tls_store *s = t->data;
    (void)sc_tls_store_check(s, NULL);
    uint64_t now = uv_now(t->loop);
    if (now - s->expiry_check_ms >= EXPIRY_CHECK_MS) {
        s->expiry_check_ms = now;
        struct sc_tls_ctx *c = sc_tls_store_get(s);
        sc__tls_ctx_warn_expiry(c, s->name);
        sc_tls_ctx_unref(c);
    }
}

int sc_tls_store_watch(struct sc_tls_store *s, uv_loop_t *loop, uint64_t interval_ms)
{
    if (interval_ms == 0) {
        interval_ms = s->server ? s->sopts.watch_interval_ms : s->copts.watch_interval_ms;
    }
    if (interval_ms == 0 || s->watching) {
        return 0;
    }
    int rc = uv_timer_init(loop, &s->timer);
    if (rc < 0) {
        return rc;
    }
    s->timer.data = s;
    s->watching = true;
    s->expiry_check_ms = uv_now(loop);
    uv_unref((uv_handle_t *)&s->timer);
    return uv_timer_start(&s->timer, on_poll, interval_ms, interval_ms);
}

static void store_release(struct sc_tls_store *s)
{
    sc_tls_ctx_unref(s->cur);
    sc_tls_ticket_keys_unref(s->keys);
    sc_tls_sessions_unref(s->sessions);
    sc__tls_files_free(&s->files);
    if (s->server) {
        sopts_free(&s->sopts);
    } else {
        copts_free(&s->copts);
    }
    pthread_mutex_destroy(&s->mu);
    sc_free(s->name);
    sc_free(s);
}

static void on_timer_closed(uv_handle_t *h)
{
    store_release(h->data);
}

void sc_tls_store_free(struct sc_tls_store *s)
{
    if (!s) {
        return;
    }
    if (s->watching) {
        uv_close((uv_handle_t *)&s->timer, on_timer_closed);
        return;
    }
    store_release(s);
}

// SPDX-License-Identifier: Apache-2.0
// JWKS key sets and where they come from (see proxy_jwt.h). A set is immutable once parsed and
// reference counted, so a worker verifying with it never races a refresh that replaces it. URI
// sources are fetched on the main loop with the egress client (libcurl, loaded on first use);
// a failed or malformed answer never replaces the last good set (an empty or reject-all set is
// never substituted). Sources live in one list, touched only on the main loop; workers reach a
// source's current set under its mutex and ask for a refresh through one async handle.
#include "roles/proxy/proxy_jwt.h"

#include <jansson.h>
#include <stdatomic.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/list.h"
#include "core/log.h"
#include "net/egress.h"

#define JWKS_MAX_KEYS 64
#define JWKS_MAX_BYTES (1024 * 1024)
#define KICK_MIN_MS 30000
#define RETRY_MIN_MS 5000

struct jwk {
    char kid[128];
    int fam;
    int alg; /* the JWK's own "alg"; PROXY_JWS_NONE: any its family allows */
    void *key;
};

struct proxy_jwks {
    atomic_int refs;
    size_t n;
    struct jwk keys[];
};

/* ---- parsing ---- */

/* Decodes base64url <s> (no padding) into <out> (cap bytes). Returns the length or -1. */
static long b64url(const char *s, size_t n, uint8_t *out, size_t cap)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int v = c >= 'A' && c <= 'Z'   ? c - 'A'
                : c >= 'a' && c <= 'z' ? c - 'a' + 26
                : c >= '0' && c <= '9' ? c - '0' + 52
                : c == '-'             ? 62
                : c == '_'             ? 63
                                       : -1;
        if (v < 0) {
            return -1;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o == cap) {
                return -1;
            }
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    if (bits >= 6 || (acc & ((1u << bits) - 1)) != 0) {
        return -1; /* a dangling character or non-zero padding bits */
    }
    return (long)o;
}

long proxy_jwt_b64url(const char *s, size_t n, uint8_t *out, size_t cap)
{
    return b64url(s, n, out, cap);
}

static int alg_of(const char *s)
{
    static const char *const names[] = { "",      "RS256", "RS384", "RS512", "PS256",
                                         "PS384", "PS512", "ES256", "ES384", "EdDSA" };
    for (size_t i = 1; s && i < SC_ARRAY_LEN(names); i++) {
        if (strcmp(s, names[i]) == 0) {
            return (int)i;
        }
    }
    return PROXY_JWS_NONE;
}

int proxy_jwt_alg(struct sc_str s)
{
    char b[8];
    if (s.len == 0 || s.len >= sizeof(b)) {
        return PROXY_JWS_NONE;
    }
    memcpy(b, s.p, s.len);
    b[s.len] = '\0';
    return alg_of(b);
}

static bool family_allows(int fam, int alg)
{
    switch (fam) {
    case PROXY_JWK_RSA:
        return alg >= PROXY_JWS_RS256 && alg <= PROXY_JWS_PS512;
    case PROXY_JWK_EC256:
        return alg == PROXY_JWS_ES256;
    case PROXY_JWK_EC384:
        return alg == PROXY_JWS_ES384;
    case PROXY_JWK_ED25519:
        return alg == PROXY_JWS_EDDSA;
    default:
        return false;
    }
}

/* Decodes member <name> of <o> (base64url) into <out>. Returns its length or -1. */
static long member(json_t *o, const char *name, uint8_t *out, size_t cap)
{
    const char *s = json_string_value(json_object_get(o, name));
    return s ? b64url(s, strlen(s), out, cap) : -1;
}

/* One JWK into <k>. Returns 0, 1 to skip it (another use or an unknown type), or -1 with a
 * reason in <*why>. */
static int parse_jwk(json_t *o, struct jwk *k, const char **why)
{
    const char *kty = json_string_value(json_object_get(o, "kty"));
    const char *use = json_string_value(json_object_get(o, "use"));
    const char *alg = json_string_value(json_object_get(o, "alg"));
    const char *kid = json_string_value(json_object_get(o, "kid"));
    if (!kty || (use && strcmp(use, "sig") != 0)) {
        return 1;
    }
    memset(k, 0, sizeof(*k));
    if (kid) {
        size_t kl = strlen(kid);
        if (kl >= sizeof(k->kid)) {
            *why = "kid longer than 127 bytes";
            return -1;
        }
        memcpy(k->kid, kid, kl + 1);
    }
    if (alg) {
        k->alg = alg_of(alg);
        if (k->alg == PROXY_JWS_NONE) {
            return 1; /* HS*, none or unknown: never used */
        }
    }
    static uint8_t a[1024], b[1024]; /* main loop only */
    long al, bl;
    if (strcmp(kty, "RSA") == 0) {
        k->fam = PROXY_JWK_RSA;
        al = member(o, "n", a, sizeof(a));
        bl = member(o, "e", b, sizeof(b));
        if (al <= 0 || bl <= 0) {
            *why = "RSA key without n or e";
            return -1;
        }
        k->key = proxy_jwt_key_rsa(a, (size_t)al, b, (size_t)bl, why);
    } else if (strcmp(kty, "EC") == 0) {
        const char *crv = json_string_value(json_object_get(o, "crv"));
        if (!crv || (strcmp(crv, "P-256") != 0 && strcmp(crv, "P-384") != 0)) {
            return 1;
        }
        k->fam = strcmp(crv, "P-256") == 0 ? PROXY_JWK_EC256 : PROXY_JWK_EC384;
        al = member(o, "x", a, sizeof(a));
        bl = member(o, "y", b, sizeof(b));
        if (al <= 0 || bl <= 0) {
            *why = "EC key without x or y";
            return -1;
        }
        k->key = proxy_jwt_key_ec(k->fam, a, (size_t)al, b, (size_t)bl, why);
    } else if (strcmp(kty, "OKP") == 0) {
        const char *crv = json_string_value(json_object_get(o, "crv"));
        if (!crv || strcmp(crv, "Ed25519") != 0) {
            return 1;
        }
        k->fam = PROXY_JWK_ED25519;
        al = member(o, "x", a, sizeof(a));
        if (al <= 0) {
            *why = "OKP key without x";
            return -1;
        }
        k->key = proxy_jwt_key_ed25519(a, (size_t)al, why);
    } else {
        return 1; /* "oct" (a shared secret) and others: never used */
    }
    if (!k->key) {
        return -1;
    }
    if (k->alg && !family_allows(k->fam, k->alg)) {
        proxy_jwt_key_free(k->key);
        *why = "the key's alg does not fit its type";
        return -1;
    }
    return 0;
}

struct proxy_jwks *proxy_jwks_parse(const char *text, size_t len, char **err)
{
    json_error_t je;
    struct proxy_jwks *ks = NULL;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    json_t *keys = root ? json_object_get(root, "keys") : NULL;
    if (!json_is_array(keys)) {
        *err = root ? sc_asprintf("JWKS: no \"keys\" array")
                    : sc_asprintf("JWKS: %s (line %d)", je.text, je.line);
        goto fail;
    }
    size_t n = json_array_size(keys);
    if (n > JWKS_MAX_KEYS) {
        n = JWKS_MAX_KEYS;
    }
    ks = sc_calloc(1, sizeof(*ks) + n * sizeof(ks->keys[0]));
    atomic_init(&ks->refs, 1);
    for (size_t i = 0; i < n; i++) {
        const char *why = NULL;
        json_t *o = json_array_get(keys, i);
        int rc = json_is_object(o) ? parse_jwk(o, &ks->keys[ks->n], &why) : 1;
        if (rc < 0) {
            *err = sc_asprintf("JWKS key %zu: %s", i + 1, why);
            goto fail;
        }
        ks->n += rc == 0;
    }
    if (ks->n == 0) {
        *err = sc_asprintf("JWKS: no usable signing key (RSA, EC P-256/P-384, Ed25519)");
        goto fail;
    }
    json_decref(root);
    return ks;
fail:
    proxy_jwks_unref(ks);
    json_decref(root);
    return NULL;
}

void proxy_jwks_unref(struct proxy_jwks *ks)
{
    if (ks && atomic_fetch_sub(&ks->refs, 1) == 1) {
        for (size_t i = 0; i < ks->n; i++) {
            proxy_jwt_key_free(ks->keys[i].key);
        }
        sc_free(ks);
    }
}

size_t proxy_jwks_count(const struct proxy_jwks *ks)
{
    return ks ? ks->n : 0;
}

const void *proxy_jwks_find(const struct proxy_jwks *ks, struct sc_str kid, int alg,
                            bool *kid_known)
{
    *kid_known = false;
    for (size_t i = 0; ks && i < ks->n; i++) {
        const struct jwk *k = &ks->keys[i];
        if (kid.len) {
            if (strlen(k->kid) != kid.len || memcmp(k->kid, kid.p, kid.len) != 0) {
                continue;
            }
            *kid_known = true;
        }
        if (family_allows(k->fam, alg) && (k->alg == PROXY_JWS_NONE || k->alg == alg)) {
            return k->key;
        }
    }
    return NULL;
}

/* ---- sources ---- */

struct proxy_jwks_src {
    struct sc_list node;
    char *uri; /* NULL: a fixed set */
    atomic_int refs;
    uv_mutex_t mu;
    struct proxy_jwks *cur; /* under mu */
    uint64_t refresh_ms;
    uint64_t retry_ms;
    atomic_bool kicked;
    atomic_uint_fast64_t last_kick_ms;
    uv_timer_t *timer; /* NULL until started */
    struct sc_egress_xfer *xfer;
    struct sc_metric *m_ok, *m_fail;
};

static struct sc_list srcs = { &srcs, &srcs };
static uv_loop_t *src_loop;
static uv_async_t *kick_async; /* under kick_mu: workers send while the main loop may close */
static uv_mutex_t kick_mu;
static uv_once_t kick_once = UV_ONCE_INIT;

static void kick_mu_init(void)
{
    uv_mutex_init(&kick_mu);
}
static struct sc_egress *egress;

static struct proxy_jwks_src *src_new(void)
{
    struct proxy_jwks_src *s = SC_NEW(struct proxy_jwks_src);
    atomic_init(&s->refs, 1);
    uv_mutex_init(&s->mu);
    sc_list_append(&srcs, &s->node);
    return s;
}

struct proxy_jwks_src *proxy_jwks_src_fixed(struct proxy_jwks *ks)
{
    struct proxy_jwks_src *s = src_new();
    s->cur = ks;
    return s;
}

struct proxy_jwks_src *proxy_jwks_src_uri(const char *uri, uint64_t refresh_ms,
                                          struct sc_metric_family *fetches)
{
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &srcs)
    {
        struct proxy_jwks_src *s = sc_list_entry(pos, struct proxy_jwks_src, node);
        if (s->uri && strcmp(s->uri, uri) == 0 && atomic_load(&s->refs) > 0) {
            atomic_fetch_add(&s->refs, 1);
            s->refresh_ms = refresh_ms; /* the newest snapshot's interval */
            return s;
        }
    }
    struct proxy_jwks_src *s = src_new();
    s->uri = sc_strdup(uri);
    s->refresh_ms = refresh_ms;
    if (fetches) {
        const char *ok[] = { uri, "success" }, *fail[] = { uri, "failure" };
        s->m_ok = sc_metrics_get(fetches, ok);
        s->m_fail = sc_metrics_get(fetches, fail);
    }
    return s;
}

static void on_timer_closed(uv_handle_t *h)
{
    sc_free(h);
}

/* Frees an unused source (main loop). */
static void src_free(struct proxy_jwks_src *s)
{
    sc_list_remove(&s->node);
    if (s->xfer) {
        sc_egress_cancel(s->xfer);
    }
    if (s->timer) {
        uv_close((uv_handle_t *)s->timer, on_timer_closed);
    }
    proxy_jwks_unref(s->cur);
    uv_mutex_destroy(&s->mu);
    sc_free(s->uri);
    sc_free(s);
}

void proxy_jwks_src_release(struct proxy_jwks_src *s)
{
    if (!s) {
        return;
    }
    /* The last reference only marks it: the main loop frees it at its next sweep (its handles
     * are the loop's), or proxy_jwks_cleanup at the end. */
    atomic_fetch_sub(&s->refs, 1);
}

struct proxy_jwks *proxy_jwks_src_get(struct proxy_jwks_src *s)
{
    uv_mutex_lock(&s->mu);
    struct proxy_jwks *ks = s->cur;
    if (ks) {
        atomic_fetch_add(&ks->refs, 1);
    }
    uv_mutex_unlock(&s->mu);
    return ks;
}

void proxy_jwks_src_kick(struct proxy_jwks_src *s)
{
    if (!s->uri) {
        return;
    }
    uint64_t now = uv_hrtime() / 1000000, last = atomic_load(&s->last_kick_ms);
    if (last && now - last < KICK_MIN_MS) {
        return;
    }
    if (atomic_compare_exchange_strong(&s->last_kick_ms, &last, now)) {
        atomic_store(&s->kicked, true);
        uv_once(&kick_once, kick_mu_init);
        uv_mutex_lock(&kick_mu);
        if (kick_async) {
            uv_async_send(kick_async);
        }
        uv_mutex_unlock(&kick_mu);
    }
}

static void fetch(struct proxy_jwks_src *s);

static void on_timer(uv_timer_t *t)
{
    fetch(t->data);
}

static void schedule(struct proxy_jwks_src *s, uint64_t ms)
{
    uv_timer_start(s->timer, on_timer, ms, 0);
}

static void on_fetched(void *arg, const struct sc_egress_resp *resp)
{
    struct proxy_jwks_src *s = arg;
    s->xfer = NULL;
    char *err = NULL;
    struct proxy_jwks *ks = NULL;
    if (resp->error) {
        err = sc_asprintf("%s", resp->error_msg ? resp->error_msg : sc_strerror(resp->error));
    } else if (resp->status != 200) {
        err = sc_asprintf("HTTP status %d", resp->status);
    } else {
        ks = proxy_jwks_parse(resp->body.p, resp->body.len, &err);
    }
    if (!ks) {
        /* The last good set stays; retry sooner than the interval, backing off. */
        sc_metrics_counter_inc(s->m_fail);
        sc_warn("jwks fetch failed; the last good key set stays", SC_LS("uri", s->uri),
                SC_LS("reason", err ? err : ""));
        sc_free(err);
        s->retry_ms = s->retry_ms ? s->retry_ms * 2 : RETRY_MIN_MS;
        if (s->retry_ms > s->refresh_ms) {
            s->retry_ms = s->refresh_ms;
        }
        schedule(s, s->retry_ms);
        return;
    }
    sc_metrics_counter_inc(s->m_ok);
    sc_info("jwks fetched", SC_LS("uri", s->uri), SC_LI("keys", (int64_t)ks->n));
    uv_mutex_lock(&s->mu);
    struct proxy_jwks *old = s->cur;
    s->cur = ks;
    uv_mutex_unlock(&s->mu);
    proxy_jwks_unref(old);
    s->retry_ms = 0;
    schedule(s, s->refresh_ms);
}

static void fetch(struct proxy_jwks_src *s)
{
    if (s->xfer || !egress) {
        return;
    }
    struct sc_egress_req req = {
        .url = s->uri,
        .timeout_ms = 10000,
        .max_response = JWKS_MAX_BYTES,
    };
    uv_timer_stop(s->timer);
    if (sc_egress_send(egress, &req, on_fetched, s, &s->xfer) < 0) {
        s->xfer = NULL;
        schedule(s, RETRY_MIN_MS);
    }
}

/* Frees unused sources, starts new ones, serves kicks. Main loop. */
static void sweep(void)
{
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &srcs)
    {
        struct proxy_jwks_src *s = sc_list_entry(pos, struct proxy_jwks_src, node);
        if (atomic_load(&s->refs) <= 0) {
            src_free(s);
            continue;
        }
        if (!s->uri || !src_loop) {
            continue;
        }
        if (!s->timer) {
            s->timer = SC_NEW(uv_timer_t);
            uv_timer_init(src_loop, s->timer);
            s->timer->data = s;
            fetch(s);
        } else if (atomic_exchange(&s->kicked, false)) {
            fetch(s);
        }
    }
}

static void on_kick(uv_async_t *a)
{
    (void)a;
    sweep();
}

void proxy_jwks_start(uv_loop_t *loop)
{
    src_loop = loop;
    bool any_uri = false;
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &srcs)
    {
        struct proxy_jwks_src *s = sc_list_entry(pos, struct proxy_jwks_src, node);
        any_uri |= s->uri != NULL && atomic_load(&s->refs) > 0;
    }
    uv_once(&kick_once, kick_mu_init);
    if (!kick_async) {
        uv_async_t *a = SC_NEW(uv_async_t);
        uv_async_init(loop, a, on_kick);
        uv_mutex_lock(&kick_mu);
        kick_async = a;
        uv_mutex_unlock(&kick_mu);
    }
    if (any_uri && !egress) {
        egress = sc_egress_new(loop); /* NULL (logged) without libcurl: tokens then fail */
    }
    sweep();
}

static void on_async_closed(uv_handle_t *h)
{
    sc_free(h);
}

void proxy_jwks_stop(void)
{
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &srcs)
    {
        struct proxy_jwks_src *s = sc_list_entry(pos, struct proxy_jwks_src, node);
        if (s->xfer) {
            sc_egress_cancel(s->xfer);
            s->xfer = NULL;
        }
        if (s->timer) {
            uv_close((uv_handle_t *)s->timer, on_timer_closed);
            s->timer = NULL;
        }
    }
    uv_once(&kick_once, kick_mu_init);
    uv_mutex_lock(&kick_mu);
    uv_async_t *a = kick_async;
    kick_async = NULL;
    uv_mutex_unlock(&kick_mu);
    if (a) {
        uv_close((uv_handle_t *)a, on_async_closed);
    }
    sc_egress_close(egress);
    egress = NULL;
    src_loop = NULL;
}

void proxy_jwks_cleanup(void)
{
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &srcs)
    {
        struct proxy_jwks_src *s = sc_list_entry(pos, struct proxy_jwks_src, node);
        if (atomic_load(&s->refs) <= 0) {
            src_free(s);
        }
    }
}

// SPDX-License-Identifier: Apache-2.0
// OpenID Connect login (see proxy_oidc.h): the `oidc:` options, compiling them, the provider's
// discovery document (OpenID Connect Discovery 1.0 section 4: fetched on the main loop with the
// egress client, its issuer checked, refreshed on an interval; a failed or malformed fetch keeps
// the last good document and retries sooner), and the codecs of untrusted input: the session
// cookie, query parameters and redirect targets.
#include "roles/proxy/proxy_oidc.h"

#include <ctype.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "core/alloc.h"
#include "core/lazylib.h"
#include "core/buf.h"
#include "core/error.h"
#include "core/file.h"
#include "core/list.h"
#include "core/log.h"
#include "net/egress.h"
#include "roles/proxy/proxy.h"
#include "roles/proxy/proxy_oidc_int.h"

#define DOC_MAX_BYTES (256 * 1024)
#define RETRY_MIN_MS 5000
#define JWKS_REFRESH_MS (20 * 60 * 1000)

static const char *const auth_methods[] = { "client_secret_basic", "client_secret_post", NULL };

const struct sc_opt proxy_oidc_opts[] = {
    { .name = "enabled",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct proxy_oidc_cfg, enabled),
      .def = "true",
      .help = "false: no login (in a listener's oidc: that listener has none, whatever the "
              "top-level oidc says)" },
    { .name = "issuer",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_oidc_cfg, issuer),
      .help = "the provider's issuer URL; its /.well-known/openid-configuration is fetched "
              "(unset: no login)" },
    { .name = "client_id",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_oidc_cfg, client_id),
      .help = "the client id registered at the provider (also the ID token's audience)" },
    { .name = "client_secret",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_oidc_cfg, client_secret),
      .flags = SC_OPT_SECRET,
      .help = "the client secret (use ${ENV}); or client_secret_file" },
    { .name = "client_secret_file",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_oidc_cfg, client_secret_file),
      .help = "a file holding the client secret (trailing newline ignored)" },
    { .name = "token_auth_method",
      .type = SC_OPT_ENUM,
      .offset = offsetof(struct proxy_oidc_cfg, token_auth_method),
      .enums = auth_methods,
      .def = "client_secret_basic",
      .help = "how the client authenticates at the token endpoint" },
    { .name = "scopes",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_oidc_cfg, scopes),
      .def = "openid email profile",
      .help = "scopes asked for (space-separated; openid is required)" },
    { .name = "redirect_path",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_oidc_cfg, redirect_path),
      .def = "/oauth2/callback",
      .help = "the callback path the provider redirects back to" },
    { .name = "redirect_url",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_oidc_cfg, redirect_url),
      .help = "the absolute callback URL registered at the provider (unset: the request's "
              "scheme and Host with redirect_path; X-Forwarded-* are never used)" },
    { .name = "cookie_name",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_oidc_cfg, cookie_name),
      .def = "_sidecar_oidc",
      .help = "the session cookie's name (the pre-login cookie adds _csrf)" },
    { .name = "cookie_domain",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_oidc_cfg, cookie_domain),
      .help = "the cookies' Domain attribute (unset: host-only cookies)" },
    { .name = "cookie_secure",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct proxy_oidc_cfg, cookie_secure),
      .def = "true",
      .help = "mark the cookies Secure (HttpOnly and SameSite=Lax always)" },
    { .name = "cookie_secret_file",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_oidc_cfg, cookie_secret_file),
      .help = "a file holding the AES-256-GCM cookie key: 32 bytes, or 64 hex digits (unset: a "
              "random key per process; sessions end at restart)" },
    { .name = "cookie_secret_previous_file",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_oidc_cfg, cookie_secret_previous_file),
      .help = "the previous cookie key, still accepted for sessions during a rotation" },
    { .name = "session_ttl",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_oidc_cfg, session_ttl_ms),
      .def = "8h",
      .min = 60000,
      .max = 30ULL * 24 * 3600 * 1000,
      .help = "how long a session lasts from the login or its last renewal (the ID token's "
              "own exp is checked when it is received)" },
    { .name = "login_timeout",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_oidc_cfg, login_timeout_ms),
      .def = "10m",
      .min = 10000,
      .max = 3600000,
      .help = "how long the pre-login cookie (state, nonce, PKCE verifier) is valid" },
    { .name = "discovery_refresh",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_oidc_cfg, discovery_refresh_ms),
      .def = "1h",
      .min = 10000,
      .max = 7ULL * 24 * 3600 * 1000,
      .help = "how often the discovery document is fetched again" },
    { .name = "allowed_emails",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct proxy_oidc_cfg, allowed_emails),
      .max = 1024,
      .help = "emails allowed in (case-insensitive; empty with allowed_domains and "
              "allowed_groups empty: every user of the provider)" },
    { .name = "allowed_domains",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct proxy_oidc_cfg, allowed_domains),
      .max = 1024,
      .help = "email domains allowed in (the part after @, exact, case-insensitive)" },
    { .name = "allowed_groups",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct proxy_oidc_cfg, allowed_groups),
      .max = 1024,
      .help = "groups allowed in: the user must be in one of them (from groups_claim)" },
    { .name = "groups_claim",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_oidc_cfg, groups_claim),
      .def = "groups",
      .help = "the ID token claim holding the user's groups (a string or an array of strings)" },
    { .name = "skip",
      .type = SC_OPT_STRLIST,
      .offset = offsetof(struct proxy_oidc_cfg, skip),
      .max = 256,
      .help = "paths served without login: exact, or a prefix ending in *; matched on the "
              "normalised path only, never the query" },
    { .name = "pass_authorization_header",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct proxy_oidc_cfg, pass_authorization_header),
      .def = "false",
      .help = "send the ID token upstream as Authorization: Bearer (kept in the session "
              "cookie, which then grows by the token's size)" },
    { .name = "use_refresh_token",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct proxy_oidc_cfg, use_refresh_token),
      .def = "true",
      .help = "keep the provider's refresh token in the session cookie (when it grants one, "
              "e.g. with the offline_access scope) and renew the session with it before the "
              "tokens expire; false: sessions end at session_ttl" },
    { .name = "refresh_before",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_oidc_cfg, refresh_before_ms),
      .def = "1m",
      .max = 24ULL * 3600 * 1000,
      .help = "how long before the ID or access token expires the next request refreshes them "
              "(the request waits for the token endpoint)" },
    { .name = "end_provider_session",
      .type = SC_OPT_BOOL,
      .offset = offsetof(struct proxy_oidc_cfg, end_provider_session),
      .def = "false",
      .help = "/oauth2/sign_out also ends the session at the provider (OpenID Connect "
              "RP-Initiated Logout: a redirect to the discovery document's "
              "end_session_endpoint, when it lists one; the session then keeps the ID token "
              "for id_token_hint)" },
    { .name = "post_logout_redirect_url",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_oidc_cfg, post_logout_redirect_url),
      .help = "where the provider sends the browser after ending its session (registered at "
              "the provider; unset: the request's scheme and Host with sign_out's local rd, or "
              "/)" },
    { 0 },
};

/* ---- small codecs ---- */

size_t proxy_oidc_b64url(const uint8_t *p, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
        out[o++] = a[(v >> 6) & 63];
        out[o++] = a[v & 63];
    }
    if (n - i == 1) {
        out[o++] = a[p[i] >> 2];
        out[o++] = a[(p[i] & 3) << 4];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 8 | p[i + 1];
        out[o++] = a[v >> 10];
        out[o++] = a[(v >> 4) & 63];
        out[o++] = a[(v & 15) << 2];
    }
    return o;
}

bool proxy_oidc_local_target(struct sc_str rd)
{
    if (rd.len == 0 || rd.p[0] != '/' || (rd.len > 1 && (rd.p[1] == '/' || rd.p[1] == '\\'))) {
        return false;
    }
    for (size_t i = 0; i < rd.len; i++) {
        unsigned char c = (unsigned char)rd.p[i];
        if (c == '\\' || c < 0x21 || c == 0x7f) {
            return false; /* browsers read \ as /, and strip tabs and newlines */
        }
    }
    return true;
}

static int hexval(int c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

long proxy_oidc_query_param(struct sc_str q, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    long found = -1;
    struct sc_str rest = q;
    while (rest.len) {
        struct sc_str kv = sc_str_split(&rest, '&');
        if (kv.len <= nl || memcmp(kv.p, name, nl) != 0 || kv.p[nl] != '=') {
            if (kv.len == nl && memcmp(kv.p, name, nl) == 0) {
                return -2; /* the name without a value */
            }
            continue;
        }
        if (found >= 0) {
            return -2; /* given twice: which one the provider meant is unknown */
        }
        size_t o = 0;
        for (size_t i = nl + 1; i < kv.len; i++) {
            int c = (unsigned char)kv.p[i];
            if (c == '%') {
                int h = i + 2 < kv.len ? hexval(kv.p[i + 1]) : -1;
                int l = i + 2 < kv.len ? hexval(kv.p[i + 2]) : -1;
                if (h < 0 || l < 0) {
                    return -2;
                }
                c = h << 4 | l;
                i += 2;
            } else if (c == '+') {
                c = ' ';
            }
            if (o + 1 >= cap || c == 0) {
                return -2;
            }
            out[o++] = (char)c;
        }
        out[o] = '\0';
        found = (long)o;
    }
    return found;
}

/* Session plaintext: version 2, the session's expiry and the tokens' (8 bytes big-endian each),
 * then seven fields each a 16-bit big-endian length and its bytes: iss, sub, email, user, groups,
 * id_token, refresh_token. Version 1 (no token expiry, no refresh_token) is still read. */
#define SESS_VERSION 2
#define SESS_V1 1
#define SESS_FIELDS 7

long proxy_oidc_session_encode(const uint8_t key[PROXY_OIDC_KEY_LEN], struct sc_str aad,
                               const struct proxy_oidc_session *s, char *out, size_t cap)
{
    const struct sc_str f[SESS_FIELDS] = { s->iss,    s->sub,      s->email,        s->user,
                                           s->groups, s->id_token, s->refresh_token };
    size_t n = 1 + 8 + 8;
    for (size_t i = 0; i < SESS_FIELDS; i++) {
        if (f[i].len > 0xffff) {
            return -1;
        }
        n += 2 + f[i].len;
    }
    size_t sealed = n + PROXY_OIDC_SEAL_OVERHEAD;
    if ((sealed + 2) / 3 * 4 + 1 > cap) {
        return -1;
    }
    uint8_t *plain = sc_malloc(n), *box = sc_malloc(sealed);
    size_t o = 0;
    plain[o++] = SESS_VERSION;
    const int64_t t[2] = { s->expires, s->token_exp };
    for (size_t k = 0; k < 2; k++) {
        for (int i = 7; i >= 0; i--) {
            plain[o++] = (uint8_t)((uint64_t)t[k] >> (i * 8));
        }
    }
    for (size_t i = 0; i < SESS_FIELDS; i++) {
        plain[o++] = (uint8_t)(f[i].len >> 8);
        plain[o++] = (uint8_t)f[i].len;
        if (f[i].len) {
            memcpy(plain + o, f[i].p, f[i].len);
        }
        o += f[i].len;
    }
    long rc = -1;
    if (proxy_oidc_seal(key, plain, n, aad, box) == 0) {
        rc = (long)proxy_oidc_b64url(box, sealed, out);
        out[rc] = '\0';
    }
    sc_free_secret(plain, n);
    sc_free(box);
    return rc;
}

/* The value of base64url digit <c>, or -1. */
static int b64v(unsigned char c)
{
    return c >= 'A' && c <= 'Z'   ? c - 'A'
           : c >= 'a' && c <= 'z' ? c - 'a' + 26
           : c >= '0' && c <= '9' ? c - '0' + 52
           : c == '-'             ? 62
           : c == '_'             ? 63
                                  : -1;
}

/* Decodes unpadded base64url <s> into <out> (<cap> bytes). Returns the length or -1 when <s> is
 * not canonical base64url or does not fit. (A session seen before is found in the worker's cache
 * without decoding.) */
static long b64url_decode(const char *s, size_t n, uint8_t *out, size_t cap)
{
    if (n % 4 == 1 || n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0) > cap) {
        return -1;
    }
    size_t o = 0, i = 0;
    for (; i + 4 <= n; i += 4) {
        int a = b64v((unsigned char)s[i]), b = b64v((unsigned char)s[i + 1]),
            c = b64v((unsigned char)s[i + 2]), d = b64v((unsigned char)s[i + 3]);
        if ((a | b | c | d) < 0) {
            return -1;
        }
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
        out[o++] = (uint8_t)(v >> 16);
        out[o++] = (uint8_t)(v >> 8);
        out[o++] = (uint8_t)v;
    }
    size_t r = n - i;
    if (r) {
        int a = b64v((unsigned char)s[i]), b = b64v((unsigned char)s[i + 1]),
            c = r == 3 ? b64v((unsigned char)s[i + 2]) : 0;
        if ((a | b | c) < 0 || (r == 2 && (b & 15)) || (r == 3 && (c & 3))) {
            return -1; /* not canonical: bits past the last byte set */
        }
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6;
        out[o++] = (uint8_t)(v >> 16);
        if (r == 3) {
            out[o++] = (uint8_t)(v >> 8);
        }
    }
    return (long)o;
}

int proxy_oidc_session_decode(const uint8_t key[PROXY_OIDC_KEY_LEN], struct sc_str aad,
                              struct sc_str v, struct proxy_oidc_session *s, uint8_t *buf,
                              size_t cap, struct proxy_oidc_aead **a)
{
    /* The sealed bytes and the plaintext share <buf>: the first half holds the box. */
    size_t half = cap / 2;
    long bl = b64url_decode(v.p, v.len, buf, half);
    if (bl < 0) {
        return -1;
    }
    uint8_t *plain = buf + half;
    long n = a ? proxy_oidc_open_cached(a, key, buf, (size_t)bl, aad, plain)
               : proxy_oidc_open(key, buf, (size_t)bl, aad, plain);
    if (n < 1 || (plain[0] != SESS_VERSION && plain[0] != SESS_V1)) {
        return -1;
    }
    size_t ntimes = plain[0] == SESS_V1 ? 1 : 2, nfields = SESS_FIELDS - (plain[0] == SESS_V1);
    if ((size_t)n < 1 + 8 * ntimes) {
        return -1;
    }
    int64_t t[2] = { 0, 0 };
    size_t o = 1;
    for (size_t k = 0; k < ntimes; k++) {
        uint64_t x = 0;
        for (int i = 0; i < 8; i++) {
            x = x << 8 | plain[o++];
        }
        t[k] = (int64_t)x;
    }
    s->expires = t[0];
    s->token_exp = t[1];
    s->refresh_token = SC_STR_NULL;
    struct sc_str *f[SESS_FIELDS] = { &s->iss,    &s->sub,      &s->email,        &s->user,
                                      &s->groups, &s->id_token, &s->refresh_token };
    for (size_t i = 0; i < nfields; i++) {
        if (o + 2 > (size_t)n) {
            return -1;
        }
        size_t l = (size_t)plain[o] << 8 | plain[o + 1];
        o += 2;
        if (o + l > (size_t)n) {
            return -1;
        }
        *f[i] = sc_str_n((const char *)plain + o, l);
        o += l;
    }
    return o == (size_t)n ? 0 : -1;
}

/* ---- discovery ---- */

struct proxy_oidc_disc {
    struct sc_list node;
    char *issuer;
    char *url;
    uint64_t refresh_ms, retry_ms;
    uv_mutex_t mu;
    struct proxy_oidc_doc *cur;
    uv_timer_t *timer;
    struct sc_egress_xfer *xfer;
    struct sc_metric *m_ok, *m_fail;
};

static struct sc_list discs = { &discs, &discs };
static struct sc_egress *egress;
static uv_loop_t *disc_loop;

void proxy_oidc_doc_unref(struct proxy_oidc_doc *d)
{
    if (!d || atomic_fetch_sub(&d->refs, 1) != 1) {
        return;
    }
    sc_free(d->authorization_endpoint);
    sc_free(d->token_endpoint);
    sc_free(d->end_session_endpoint);
    proxy_jwks_src_release(d->jwks);
    sc_free(d);
}

struct proxy_oidc_doc *proxy_oidc_doc_get(const struct proxy_oidc *o)
{
    struct proxy_oidc_disc *d = o->disc;
    uv_mutex_lock(&d->mu);
    struct proxy_oidc_doc *doc = d->cur;
    if (doc) {
        atomic_fetch_add(&doc->refs, 1);
    }
    uv_mutex_unlock(&d->mu);
    return doc;
}

static bool http_url(const char *s)
{
    return s && (strncmp(s, "https://", 8) == 0 || strncmp(s, "http://", 7) == 0);
}

/* Whether absolute URL <u>'s path (no query) is <path>. */
static bool url_path_is(const char *u, const char *path)
{
    const char *p = strstr(u, "://");
    p = p ? strchr(p + 3, '/') : NULL;
    return p && strcmp(p, path) == 0;
}

/* Parses a discovery document for <d>. Returns a new document or NULL with a static reason. */
static struct proxy_oidc_doc *doc_parse(struct proxy_oidc_disc *d, struct sc_str body,
                                        const char **why)
{
    json_t *j = json_loadb(body.p, body.len, JSON_REJECT_DUPLICATES, NULL);
    const char *iss = json_string_value(json_object_get(j, "issuer"));
    const char *az = json_string_value(json_object_get(j, "authorization_endpoint"));
    const char *tok = json_string_value(json_object_get(j, "token_endpoint"));
    const char *ju = json_string_value(json_object_get(j, "jwks_uri"));
    const char *es = json_string_value(json_object_get(j, "end_session_endpoint"));
    struct proxy_oidc_doc *doc = NULL;
    if (!json_is_object(j)) {
        *why = "not a JSON object";
    } else if (!iss || strcmp(iss, d->issuer) != 0) {
        *why = "its issuer is not the configured issuer"; /* Discovery 4.3 */
    } else if (!http_url(az) || !http_url(tok) || !http_url(ju)) {
        *why = "authorization_endpoint, token_endpoint or jwks_uri missing or not a URL";
    } else {
        doc = SC_NEW(struct proxy_oidc_doc);
        atomic_init(&doc->refs, 1);
        doc->authorization_endpoint = sc_strdup(az);
        doc->token_endpoint = sc_strdup(tok);
        doc->end_session_endpoint = http_url(es) ? sc_strdup(es) : NULL;
        doc->jwks = proxy_jwks_src_uri(ju, JWKS_REFRESH_MS, NULL);
    }
    json_decref(j);
    return doc;
}

static void disc_fetch(struct proxy_oidc_disc *d);

static void on_disc_timer(uv_timer_t *t)
{
    disc_fetch(t->data);
}

static void on_disc_fetched(void *arg, const struct sc_egress_resp *resp)
{
    struct proxy_oidc_disc *d = arg;
    d->xfer = NULL;
    const char *why = NULL;
    struct proxy_oidc_doc *doc = NULL;
    if (resp->error) {
        why = resp->error_msg ? resp->error_msg : "unreachable";
    } else if (resp->status != 200) {
        why = "HTTP status not 200";
    } else {
        doc = doc_parse(d, resp->body, &why);
    }
    if (!doc) {
        sc_metrics_counter_inc(d->m_fail);
        sc_warn("oidc discovery failed; the last good document stays", SC_LS("url", d->url),
                SC_LS("reason", why), SC_LI("status", resp->status));
        d->retry_ms = d->retry_ms ? d->retry_ms * 2 : RETRY_MIN_MS;
        if (d->retry_ms > d->refresh_ms) {
            d->retry_ms = d->refresh_ms;
        }
        uv_timer_start(d->timer, on_disc_timer, d->retry_ms, 0);
        return;
    }
    sc_metrics_counter_inc(d->m_ok);
    sc_info("oidc discovery fetched", SC_LS("url", d->url));
    uv_mutex_lock(&d->mu);
    struct proxy_oidc_doc *old = d->cur;
    d->cur = doc;
    uv_mutex_unlock(&d->mu);
    proxy_oidc_doc_unref(old);
    proxy_jwks_start(disc_loop); /* the new document's key set, when new */
    d->retry_ms = 0;
    uv_timer_start(d->timer, on_disc_timer, d->refresh_ms, 0);
}

static void disc_fetch(struct proxy_oidc_disc *d)
{
    if (d->xfer || !egress) {
        return;
    }
    struct sc_egress_req req = {
        .url = d->url,
        .timeout_ms = 10000,
        .max_response = DOC_MAX_BYTES,
    };
    if (sc_egress_send(egress, &req, on_disc_fetched, d, &d->xfer) < 0) {
        d->xfer = NULL;
        uv_timer_start(d->timer, on_disc_timer, RETRY_MIN_MS, 0);
    }
}

static struct proxy_oidc_disc *disc_get(const char *issuer, uint64_t refresh_ms,
                                        struct sc_metric_family *fam)
{
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &discs)
    {
        struct proxy_oidc_disc *d = sc_list_entry(pos, struct proxy_oidc_disc, node);
        if (strcmp(d->issuer, issuer) == 0) {
            d->refresh_ms = refresh_ms;
            return d;
        }
    }
    struct proxy_oidc_disc *d = SC_NEW(struct proxy_oidc_disc);
    d->issuer = sc_strdup(issuer);
    size_t il = strlen(issuer);
    d->url = sc_asprintf("%.*s/.well-known/openid-configuration",
                         (int)(il && issuer[il - 1] == '/' ? il - 1 : il), issuer);
    d->refresh_ms = refresh_ms;
    uv_mutex_init(&d->mu);
    if (fam) {
        const char *ok[] = { issuer, "success" }, *fail[] = { issuer, "failure" };
        d->m_ok = sc_metrics_get(fam, ok);
        d->m_fail = sc_metrics_get(fam, fail);
    }
    sc_list_append(&discs, &d->node);
    return d;
}

void proxy_oidc_start(uv_loop_t *loop)
{
    if (sc_list_empty(&discs)) {
        return;
    }
    disc_loop = loop;
    if (!egress) {
        egress = sc_egress_new(loop);
    }
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &discs)
    {
        struct proxy_oidc_disc *d = sc_list_entry(pos, struct proxy_oidc_disc, node);
        if (!d->timer) {
            d->timer = SC_NEW(uv_timer_t);
            uv_timer_init(loop, d->timer);
            d->timer->data = d;
            disc_fetch(d);
        }
    }
}

static void on_disc_timer_closed(uv_handle_t *h)
{
    sc_free(h);
}

void proxy_oidc_stop(void)
{
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &discs)
    {
        struct proxy_oidc_disc *d = sc_list_entry(pos, struct proxy_oidc_disc, node);
        if (d->xfer) {
            sc_egress_cancel(d->xfer);
            d->xfer = NULL;
        }
        if (d->timer) {
            uv_close((uv_handle_t *)d->timer, on_disc_timer_closed);
            d->timer = NULL;
        }
    }
    sc_egress_close(egress);
    egress = NULL;
}

void proxy_oidc_cleanup(void)
{
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &discs)
    {
        struct proxy_oidc_disc *d = sc_list_entry(pos, struct proxy_oidc_disc, node);
        sc_list_remove(&d->node);
        proxy_oidc_doc_unref(d->cur);
        uv_mutex_destroy(&d->mu);
        sc_free(d->issuer);
        sc_free(d->url);
        sc_free(d);
    }
}

/* ---- compiling ---- */

int proxy_oidc_check(const struct proxy_oidc_cfg *c, char **err)
{
    if (!c->issuer || !c->enabled) {
        return 0;
    }
    const char *why = NULL;
    if (!http_url(c->issuer)) {
        why = "oidc.issuer: not an http(s) URL";
    } else if (!c->client_id || !*c->client_id) {
        why = "oidc.client_id: required with an issuer";
    } else if (!c->client_secret == !c->client_secret_file) {
        why = "oidc: exactly one of client_secret and client_secret_file is required";
    } else if (!c->scopes || !strstr(c->scopes, "openid")) {
        why = "oidc.scopes: must include openid";
    } else if (!proxy_oidc_local_target(sc_str_c(c->redirect_path)) ||
               strchr(c->redirect_path, '?')) {
        why = "oidc.redirect_path: must be a path starting with one /";
    } else if (c->redirect_url && !http_url(c->redirect_url)) {
        why = "oidc.redirect_url: not an http(s) URL";
    } else if (c->redirect_url && !url_path_is(c->redirect_url, c->redirect_path)) {
        why = "oidc.redirect_url: its path must be redirect_path (where callbacks are served)";
    } else if (!c->cookie_name || !sc_http1_is_token(sc_str_c(c->cookie_name))) {
        why = "oidc.cookie_name: not a cookie name (an HTTP token)";
    } else if (c->cookie_domain && strpbrk(c->cookie_domain, ";, \t\r\n")) {
        why = "oidc.cookie_domain: not a domain";
    } else if (c->post_logout_redirect_url && !http_url(c->post_logout_redirect_url)) {
        why = "oidc.post_logout_redirect_url: not an http(s) URL";
    }
    const char *files[] = { c->client_secret_file, c->cookie_secret_file,
                            c->cookie_secret_previous_file };
    for (size_t i = 0; !why && i < SC_ARRAY_LEN(files); i++) {
        if (files[i] && access(files[i], R_OK) != 0) {
            *err = sc_asprintf("oidc: %s: cannot be read (a secret or key file)", files[i]);
            return SC_ECONFIG;
        }
    }
    for (size_t i = 0; !why && i < c->skip.n; i++) {
        if (c->skip.v[i][0] != '/') {
            why = "oidc.skip: paths start with /";
        }
    }
    if (why) {
        *err = sc_strdup(why);
        return SC_ECONFIG;
    }
    return 0;
}

/* Reads a key file: 32 raw bytes or 64 hex digits (a trailing newline ignored). */
static int read_key(const char *path, uint8_t out[PROXY_OIDC_KEY_LEN], char **err)
{
    struct sc_buf b;
    sc_buf_init(&b, 4096);
    int rc = sc_file_read(path, &b);
    size_t n = b.len;
    while (rc == 0 && n && (b.p[n - 1] == '\n' || b.p[n - 1] == '\r')) {
        n--;
    }
    if (rc == 0 && n == 2 * PROXY_OIDC_KEY_LEN) {
        for (size_t i = 0; i < PROXY_OIDC_KEY_LEN && rc == 0; i++) {
            int h = hexval(b.p[2 * i]), l = hexval(b.p[2 * i + 1]);
            if (h < 0 || l < 0) {
                rc = -1;
            }
            out[i] = (uint8_t)(h << 4 | l);
        }
    } else if (rc == 0 && b.len == PROXY_OIDC_KEY_LEN) {
        memcpy(out, b.p, PROXY_OIDC_KEY_LEN);
    } else {
        rc = -1;
    }
    if (b.p) {
        sc_free_secret(b.p, b.cap);
        b.p = NULL;
    }
    sc_buf_cleanup(&b);
    if (rc < 0) {
        *err = sc_asprintf("oidc: %s: not a key of 32 bytes or 64 hex digits", path);
    }
    return rc;
}

/* <s> as application/x-www-form-urlencoded (RFC 6749 2.3.1 and appendix B: client_secret_basic's
 * id and secret are encoded so before they are joined by ':'): every byte but ALPHA, DIGIT and
 * "-._*" percent-encoded, space as '+'. */
static char *form_encode(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out = sc_malloc(3 * n + 1), *p = out;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '*') {
            *p++ = (char)c;
        } else if (c == ' ') {
            *p++ = '+';
        } else {
            *p++ = '%';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 15];
        }
    }
    *p = '\0';
    return out;
}

static uint8_t process_key[PROXY_OIDC_KEY_LEN];
static bool process_key_made;

/* Sessions active: made by a login (or renewed) in this process and neither expired nor signed
 * out. A cookie session leaves nothing on the proxy, so they are counted by end time in LIVE_N
 * buckets LIVE_WIDTH seconds wide: bounded memory, exact to a bucket, kept across reloads. The
 * live buckets are the LIVE_N from now on, so two never share a slot; an end further away is
 * counted in the farthest one. */
#define LIVE_WIDTH 60
#define LIVE_N 4096 /* 68 hours */

static struct {
    pthread_mutex_t mu;
    int64_t epoch[LIVE_N]; /* the bucket a slot counts: end / LIVE_WIDTH */
    uint32_t n[LIVE_N];
    struct sc_metric *gauge;
} live = { .mu = PTHREAD_MUTEX_INITIALIZER };

void proxy_oidc_live(int64_t expires, int64_t now, int d)
{
    if (expires <= now) {
        return;
    }
    int64_t b = expires / LIVE_WIDTH, far = now / LIVE_WIDTH + LIVE_N - 1;
    b = b < far ? b : far;
    size_t i = (size_t)(b % LIVE_N);
    pthread_mutex_lock(&live.mu);
    if (live.epoch[i] != b) {
        live.epoch[i] = b;
        live.n[i] = 0;
    }
    if (d > 0) {
        live.n[i]++;
    } else if (live.n[i] > 0) { /* a session of an earlier process: not counted here */
        live.n[i]--;
    }
    pthread_mutex_unlock(&live.mu);
}

void proxy_oidc_collect(void)
{
    if (!live.gauge) {
        return;
    }
    int64_t now = (int64_t)time(NULL) / LIVE_WIDTH;
    uint64_t sum = 0;
    pthread_mutex_lock(&live.mu);
    for (size_t i = 0; i < LIVE_N; i++) {
        sum += live.epoch[i] >= now ? live.n[i] : 0;
    }
    pthread_mutex_unlock(&live.mu);
    sc_metrics_gauge_set(live.gauge, (double)sum);
}

static struct sc_metric *metric(struct sc_metric_family *f, const char *v)
{
    const char *vals[] = { v };
    return f ? sc_metrics_get(f, vals) : NULL;
}

struct proxy_oidc *proxy_oidc_new(const struct proxy_oidc_cfg *c, struct sc_metrics *reg,
                                  char **err)
{
    if (!c->issuer || !c->enabled) {
        return NULL;
    }
    char *why = NULL;
    if (sc_lazylib_ssl_load(&why) < 0) { /* sealing cookies and verifying tokens need it */
        *err = sc_asprintf("oidc: %s", why ? why : "OpenSSL cannot be loaded");
        sc_free(why);
        return NULL;
    }
    static atomic_uint_fast64_t next_id = 1;
    struct proxy_oidc *o = SC_NEW(struct proxy_oidc);
    o->id = atomic_fetch_add(&next_id, 1);
    if (c->cookie_secret_file) {
        if (read_key(c->cookie_secret_file, o->key, err) < 0) {
            proxy_oidc_free(o);
            return NULL;
        }
    } else {
        if (!process_key_made && proxy_oidc_random(process_key, sizeof(process_key)) < 0) {
            *err = sc_strdup("oidc: no random bytes for the cookie key");
            proxy_oidc_free(o);
            return NULL;
        }
        process_key_made = true;
        memcpy(o->key, process_key, sizeof(o->key));
    }
    if (c->cookie_secret_previous_file) {
        if (read_key(c->cookie_secret_previous_file, o->prev_key, err) < 0) {
            proxy_oidc_free(o);
            return NULL;
        }
        o->has_prev = true;
    }
    if (c->client_secret_file) {
        struct sc_buf b;
        sc_buf_init(&b, 4096);
        if (sc_file_read(c->client_secret_file, &b) < 0 || b.len == 0) {
            *err = sc_asprintf("oidc.client_secret_file: %s cannot be read or is empty",
                               c->client_secret_file);
            sc_buf_cleanup(&b);
            proxy_oidc_free(o);
            return NULL;
        }
        size_t n = b.len;
        while (n && (b.p[n - 1] == '\n' || b.p[n - 1] == '\r')) {
            n--;
        }
        o->client_secret = sc_strndup(b.p, n);
        sc_buf_cleanup(&b);
    } else {
        o->client_secret = sc_strdup(c->client_secret);
    }
    o->issuer = sc_strdup(c->issuer);
    o->client_id = sc_strdup(c->client_id);
    o->auth_method = c->token_auth_method;
    o->basic_id = form_encode(o->client_id);
    o->basic_secret = form_encode(o->client_secret);
    /* Scopes go into a query: spaces as %20, nothing else allowed to need escaping. */
    struct sc_buf sb;
    sc_buf_init(&sb, 4096);
    for (const char *p = c->scopes; *p; p++) {
        if (*p == ' ') {
            sc_buf_append_cstr(&sb, "%20");
        } else if (isalnum((unsigned char)*p) || strchr("-._~:/", *p)) {
            sc_buf_append(&sb, p, 1);
        }
    }
    o->scopes = sc_strndup(sb.p ? sb.p : "", sb.len);
    sc_buf_cleanup(&sb);
    o->redirect_path = sc_strdup(c->redirect_path);
    o->redirect_url = c->redirect_url ? sc_strdup(c->redirect_url) : NULL;
    o->cookie_name = sc_strdup(c->cookie_name);
    o->csrf_name = sc_asprintf("%s_csrf", c->cookie_name);
    o->cookie_domain = c->cookie_domain ? sc_strdup(c->cookie_domain) : NULL;
    o->secure = c->cookie_secure;
    o->ttl_s = (int64_t)(c->session_ttl_ms / 1000);
    o->login_s = (int64_t)(c->login_timeout_ms / 1000);
    sc_config_strv_copy(&o->emails, &c->allowed_emails);
    sc_config_strv_copy(&o->domains, &c->allowed_domains);
    sc_config_strv_copy(&o->groups, &c->allowed_groups);
    sc_config_strv_copy(&o->skip, &c->skip);
    o->groups_claim = sc_strdup(c->groups_claim);
    o->pass_auth = c->pass_authorization_header;
    o->refresh = c->use_refresh_token;
    o->refresh_early = (int64_t)(c->refresh_before_ms / 1000);
    o->end_session = c->end_provider_session;
    o->post_logout_url =
        c->post_logout_redirect_url ? sc_strdup(c->post_logout_redirect_url) : NULL;
    o->name_s = sc_str_c(o->cookie_name);
    o->csrf_s = sc_str_c(o->csrf_name);
    o->rpath_s = sc_str_c(o->redirect_path);
    o->iss_s = sc_str_c(o->issuer);
    o->drop[o->ndrop++] = SC_STR("x-auth-request-user");
    o->drop[o->ndrop++] = SC_STR("x-auth-request-email");
    o->drop[o->ndrop++] = SC_STR("x-auth-request-groups");
    o->drop[o->ndrop++] = SC_STR("x-auth-request-preferred-username");
    if (o->pass_auth) {
        o->drop[o->ndrop++] = SC_STR("authorization");
    }
    o->drop[o->ndrop] = SC_STR("cookie"); /* past ndrop: used only with several Cookie fields */
    static const char *const l1[] = { "result", NULL }, *const l2[] = { "reason", NULL },
                             *const l3[] = { "issuer", "result", NULL };
    struct sc_metric_family *logins = NULL, *sess = NULL, *disc = NULL;
    if (reg) {
        logins = sc_metrics_family(reg, SC_METRIC_COUNTER, "sidecar_oidc_logins_total",
                                   "Login callbacks by result (success, or why they failed: "
                                   "state, token, id_token, denied, provider).",
                                   l1, NULL, 0);
        sess = sc_metrics_family(reg, SC_METRIC_COUNTER, "sidecar_oidc_sessions_total",
                                 "Requests by what their session cookie was (valid, or refused: "
                                 "none, invalid, expired).",
                                 l2, NULL, 0);
        disc = sc_metrics_family(reg, SC_METRIC_COUNTER, "sidecar_oidc_discovery_fetches_total",
                                 "Discovery document fetches by issuer and result.", l3, NULL, 0);
        live.gauge = sc_metrics_get(
            sc_metrics_family(reg, SC_METRIC_GAUGE, "sidecar_oidc_sessions_active",
                              "Sessions made by a login or renewed by this process, not yet "
                              "expired nor signed out (to the minute).",
                              NULL, NULL, 0),
            NULL);
    }
    o->m_login_ok = metric(logins, "success");
    o->m_login_state = metric(logins, "state");
    o->m_login_token = metric(logins, "token");
    o->m_login_idtoken = metric(logins, "id_token");
    o->m_login_denied = metric(logins, "denied");
    o->m_login_provider = metric(logins, "provider");
    o->m_sess_ok = metric(sess, "valid");
    o->m_sess_none = metric(sess, "none");
    o->m_sess_invalid = metric(sess, "invalid");
    o->m_sess_expired = metric(sess, "expired");
    struct sc_metric_family *refr =
        reg ? sc_metrics_family(reg, SC_METRIC_COUNTER, "sidecar_oidc_refreshes_total",
                                "Sessions renewed with the refresh token, by result (success; "
                                "refused: the provider said no, the user logs in again; error: "
                                "the token endpoint failed or answered something unusable).",
                                l1, NULL, 0)
            : NULL;
    o->m_refresh_ok = metric(refr, "success");
    o->m_refresh_failed = metric(refr, "refused");
    o->m_refresh_error = metric(refr, "error");
    o->disc = disc_get(o->issuer, c->discovery_refresh_ms, disc);
    return o;
}

void proxy_oidc_free(struct proxy_oidc *o)
{
    if (!o) {
        return;
    }
    char *secrets[] = { o->client_secret, o->basic_secret };
    for (size_t i = 0; i < SC_ARRAY_LEN(secrets); i++) {
        if (secrets[i]) {
            sc_free_secret(secrets[i], strlen(secrets[i]));
        }
    }
    sc_free(o->basic_id);
    sc_free(o->post_logout_url);
    sc_free(o->issuer);
    sc_free(o->client_id);
    sc_free(o->scopes);
    sc_free(o->redirect_path);
    sc_free(o->redirect_url);
    sc_free(o->cookie_name);
    sc_free(o->csrf_name);
    sc_free(o->cookie_domain);
    sc_free(o->groups_claim);
    sc_config_strv_free(&o->emails);
    sc_config_strv_free(&o->domains);
    sc_config_strv_free(&o->groups);
    sc_config_strv_free(&o->skip);
    memset(o->key, 0, sizeof(o->key));
    memset(o->prev_key, 0, sizeof(o->prev_key));
    sc_free(o);
}

/* ---- the proxy's logins ---- */

static bool login_on(const struct proxy_oidc_cfg *c)
{
    return c->issuer && c->enabled;
}

int proxy_oidc_check_all(const struct proxy_cfg *c, char **err)
{
    const struct proxy_listener_cfg *lcs = c->listeners.v;
    const struct proxy_oidc_cfg *top = &c->oidc;
    int rc = proxy_oidc_check(top, err);
    bool any = login_on(top);
    for (size_t i = 0; rc == 0 && i < c->listeners.n; i++) {
        const struct proxy_oidc_cfg *a = &lcs[i].oidc;
        if ((rc = proxy_oidc_check(a, err)) < 0) {
            char *e = sc_asprintf("listener \"%s\": %s", lcs[i].name, *err);
            sc_free(*err);
            *err = e;
            break;
        }
        any = any || login_on(a);
        /* A browser sends a host's cookies to all its ports: two providers cannot share a
         * cookie name (their sessions would replace each other's). */
        for (size_t j = 0; login_on(a) && j <= i; j++) {
            const struct proxy_oidc_cfg *b = j < i ? &lcs[j].oidc : top;
            if (login_on(b) && strcmp(a->cookie_name, b->cookie_name) == 0 &&
                (strcmp(a->issuer, b->issuer) != 0 || strcmp(a->client_id, b->client_id) != 0)) {
                *err = sc_asprintf("listener \"%s\": oidc.cookie_name \"%s\" is used by another "
                                   "provider or client: give each its own",
                                   lcs[i].name, a->cookie_name);
                rc = SC_ECONFIG;
            }
        }
    }
    if (rc == 0 && any && c->jwt.request_authentication.n) {
        /* Both would set the request's identity and its upstream headers. */
        *err = sc_strdup("oidc and request_authentication cannot be configured together");
        rc = SC_ECONFIG;
    }
    return rc;
}

int proxy_oidc_listener_init(struct proxy_listener *l, const struct proxy_listener_cfg *lc,
                             struct sc_metrics *reg, char **err)
{
    l->oidc_off = !lc->oidc.enabled;
    if (!login_on(&lc->oidc)) {
        return 0;
    }
    char *e = NULL;
    l->oidc = proxy_oidc_new(&lc->oidc, reg, &e);
    if (!l->oidc) {
        *err = sc_asprintf("listener \"%s\": %s", l->name, e ? e : "oidc");
        sc_free(e);
        return SC_ECONFIG;
    }
    return 0;
}

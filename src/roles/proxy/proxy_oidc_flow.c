// SPDX-License-Identifier: Apache-2.0
// The OpenID Connect login on the exchange (see proxy_oidc.h): the session check of every
// request, the redirect to the provider (authorization code flow with PKCE S256, OpenID Connect
// Core 3.1.2.1), the callback (state checked against the pre-login cookie, the code exchanged at
// the token endpoint with the worker's egress client while the exchange waits, the ID token
// verified as Core 3.1.3.7 says), sign-out and oauth2-proxy's /oauth2/auth. Identity goes
// upstream in X-Auth-Request-* headers; the client's copies of those and the proxy's cookies never
// do.
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "core/log.h"
#include "core/tlbuf.h"
#include "net/egress.h"
#include "roles/proxy/proxy_authz.h"
#include "roles/proxy/proxy_conn.h"
#include "roles/proxy/proxy_oidc_int.h"

#define COOKIE_MAX 3800 /* a cookie value stays well under the 4 KiB browsers keep */
#define PARAM_MAX 2048
#define TOKEN_MAX 16384
#define SIGN_OUT_PATH "/oauth2/sign_out"
#define AUTH_PATH "/oauth2/auth"
#define CLOCK_SKEW_S 60

/* Header lines of a local reply or for upstream: built here, used within the call that made
 * them (the exchange writes or copies them before returning). */
/* Per-thread buffers (core/tlbuf.h): LINE_CAP bytes for the lines of a reply, SESS_CAP for a
 * decoded session cookie. */
#define LINE_CAP 16384
#define SESS_CAP (2 * COOKIE_MAX)
static _Thread_local void *line_tl, *sess_tl;

struct lines {
    char *p;
    size_t len, cap;
    bool over;
};

static void put(struct lines *l, const char *p, size_t n)
{
    if (l->over || l->len + n > l->cap) {
        l->over = true;
        return;
    }
    memcpy(l->p + l->len, p, n);
    l->len += n;
}

static void puts_c(struct lines *l, const char *s)
{
    put(l, s, strlen(s));
}

static void put_str(struct lines *l, struct sc_str s)
{
    put(l, s.p, s.len);
}

/* Percent-encodes everything but RFC 3986 unreserved characters. */
static void put_enc(struct lines *l, struct sc_str s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            put(l, (const char *)&c, 1);
        } else {
            char e[3] = { '%', hex[c >> 4], hex[c & 15] };
            put(l, e, 3);
        }
    }
}

/* A header value without CR, LF or NUL (claims are the provider's, still not trusted blindly). */
/* A header value from a session: the login refused claims with control characters (see
 * clean_claims), and the session is sealed, so it is copied as it is. */
static void put_value(struct lines *l, struct sc_str v)
{
    put(l, v.p, v.len);
}

/* Whether <s> can be a header value: no control character but tab, nothing past 0x7e unless
 * UTF-8 bytes (>= 0x80). */
static bool clean_value(struct sc_str s)
{
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            return false;
        }
    }
    return true;
}

static struct sc_str header(const struct sc_http_msg *m, const char *name)
{
    struct sc_str n = sc_str_c(name);
    for (size_t i = 0; i < m->nheaders; i++) {
        if (sc_str_caseeq(m->headers[i].name, n)) {
            return m->headers[i].value;
        }
    }
    return SC_STR_NULL;
}

/* Whether header name <n> is Cookie, any case (one load: OR-ing 0x20 turns only 'A'-'Z' into
 * the letters compared). */
static inline bool cookie_field(struct sc_str n)
{
    if (n.len != 6) {
        return false;
    }
    uint32_t a;
    uint16_t b;
    memcpy(&a, n.p, 4);
    memcpy(&b, n.p + 4, 2);
    uint32_t ca;
    uint16_t cb;
    memcpy(&ca, "cook", 4);
    memcpy(&cb, "ie", 2);
    return (a | 0x20202020u) == ca && (uint16_t)(b | 0x2020u) == cb;
}

/* Whether cookie pair <kv> ("name=value") is cookie <name>; then <*v> is its value. */
static inline bool is_cookie(struct sc_str kv, struct sc_str name, struct sc_str *v)
{
    if (kv.len <= name.len || kv.p[name.len] != '=' || memcmp(kv.p, name.p, name.len) != 0) {
        return false;
    }
    *v = sc_str_n(kv.p + name.len + 1, kv.len - name.len - 1);
    return true;
}

static void set_cookie(struct lines *l, const struct proxy_oidc *o, const char *name,
                       struct sc_str value, int64_t max_age)
{
    char num[32];
    puts_c(l, "Set-Cookie: ");
    puts_c(l, name);
    puts_c(l, "=");
    put_str(l, value);
    puts_c(l, "; Path=/; HttpOnly; SameSite=Lax");
    if (o->secure) {
        puts_c(l, "; Secure");
    }
    if (o->cookie_domain) {
        puts_c(l, "; Domain=");
        puts_c(l, o->cookie_domain);
    }
    snprintf(num, sizeof(num), "; Max-Age=%lld\r\n", (long long)max_age);
    puts_c(l, num);
}

/* Decodes <v> with the current key, then the previous one (a rotation), with the worker's
 * AES-GCM contexts <a>. */
static int open_cookie(const struct proxy_oidc *o, struct proxy_oidc_aead **a, const char *aad,
                       struct sc_str v, struct proxy_oidc_session *s)
{
    if (!v.len || v.len > COOKIE_MAX) {
        return -1;
    }
    struct sc_str ad = sc_str_c(aad);
    uint8_t *sb = sc_tlbuf_get(&sess_tl, SESS_CAP);
    if (proxy_oidc_session_decode(o->key, ad, v, s, sb, SESS_CAP, a) == 0) {
        return 0;
    }
    return o->has_prev ? proxy_oidc_session_decode(o->prev_key, ad, v, s, sb, SESS_CAP, a) : -1;
}

static bool skipped(const struct proxy_oidc *o, struct sc_str path)
{
    for (size_t i = 0; i < o->skip.n; i++) {
        struct sc_str p = sc_str_c(o->skip.v[i]);
        if (p.len && p.p[p.len - 1] == '*') {
            p.len--;
            if (sc_str_startswith(path, p)) {
                return true;
            }
        } else if (sc_str_eq(path, p)) {
            return true;
        }
    }
    return false;
}

static bool wants_html(const struct sc_http_msg *m)
{
    struct sc_str xrw = header(m, "x-requested-with"), acc = header(m, "accept");
    if (sc_str_caseeq(xrw, SC_STR("XMLHttpRequest"))) {
        return false;
    }
    for (size_t i = 0; i + 9 <= acc.len; i++) {
        if (sc_str_caseeq(sc_str_n(acc.p + i, 9), SC_STR("text/html"))) {
            return true;
        }
    }
    return false;
}

/* The identity headers of session <s> for upstream or for /oauth2/auth's answer. */
static void identity(struct lines *l, const struct proxy_oidc *o,
                     const struct proxy_oidc_session *s)
{
    puts_c(l, "X-Auth-Request-User: ");
    put_value(l, s->sub);
    puts_c(l, "\r\n");
    if (s->email.len) {
        puts_c(l, "X-Auth-Request-Email: ");
        put_value(l, s->email);
        puts_c(l, "\r\n");
    }
    if (s->user.len) {
        puts_c(l, "X-Auth-Request-Preferred-Username: ");
        put_value(l, s->user);
        puts_c(l, "\r\n");
    }
    if (s->groups.len) {
        puts_c(l, "X-Auth-Request-Groups: ");
        put_value(l, s->groups);
        puts_c(l, "\r\n");
    }
    if (o->pass_auth && s->id_token.len) {
        puts_c(l, "Authorization: Bearer ");
        put_value(l, s->id_token);
        puts_c(l, "\r\n");
    }
}

/* One upstream Cookie field joining the request's Cookie fields without the proxy's cookies
 * (nothing when no other cookie is left). */
static void rewrite_cookies(struct lines *l, const struct proxy_oidc *o,
                            const struct sc_http_msg *m)
{
    bool any = false;
    for (size_t i = 0; i < m->nheaders; i++) {
        const struct sc_http_header *h = &m->headers[i];
        if (!cookie_field(h->name)) {
            continue;
        }
        struct sc_str rest = h->value, v;
        while (rest.len) {
            struct sc_str kv = sc_str_trim(sc_str_split(&rest, ';'));
            if (!kv.len || is_cookie(kv, o->name_s, &v) || is_cookie(kv, o->csrf_s, &v)) {
                continue;
            }
            puts_c(l, any ? "; " : "Cookie: ");
            put_str(l, kv);
            any = true;
        }
    }
    if (any) {
        puts_c(l, "\r\n");
    }
}

/* Compares in time independent of where the bytes differ. */
static bool same(const char *a, const char *b, size_t n)
{
    unsigned char d = 0;
    for (size_t i = 0; i < n; i++) {
        d |= (unsigned char)(a[i] ^ b[i]);
    }
    return d == 0;
}

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

/* ---- the per-worker cache of opened sessions ---- */

/* Direct-mapped, a slot chosen by the value's first bytes (the GCM nonce: random per seal), a
 * hit compares the whole value; entries belong to one compiled login (its id), so a reload with
 * other keys never sees them. Bounded: SESS_CACHE entries of at most COOKIE_MAX + the fields.
 * An entry also keeps what every request of the session writes, made once: the identity header
 * lines for upstream and the principal. */
#define SESS_CACHE 256
#define REFRESH_RETRY_S 30 /* after a token endpoint failure, the next try of a session */

struct sess_entry {
    uint64_t owner; /* 0: empty */
    char *block;    /* the value, the fields, the identity lines, the principal */
    size_t vlen, blen;
    struct proxy_oidc_session s;
    struct sc_str lines;     /* identity header lines for upstream (or /oauth2/auth's answer) */
    struct sc_str principal; /* <iss>/<sub> */
    int64_t refresh_at;      /* a request from then on refreshes the tokens (0: never) */
    bool refreshing;         /* a request of this worker is refreshing them */
};

struct proxy_oidc_cache {
    struct sess_entry e[SESS_CACHE];
};

static void entry_clear(struct sess_entry *e)
{
    if (e->block) {
        sc_free_secret(e->block, e->blen); /* it holds the refresh token */
    }
    memset(e, 0, sizeof(*e));
}

void proxy_oidc_cache_free(struct proxy_oidc_cache *c)
{
    if (!c) {
        return;
    }
    for (size_t i = 0; i < SESS_CACHE; i++) {
        entry_clear(&c->e[i]);
    }
    sc_free(c);
}

/* Makes <e> hold session <s> of cookie value <v> (copied: <s> may point anywhere, even into
 * <e>'s old block). */
static void entry_fill(struct sess_entry *e, const struct proxy_oidc *o, struct sc_str v,
                       const struct proxy_oidc_session *s)
{
    struct lines l = { sc_tlbuf_get(&line_tl, LINE_CAP), 0, LINE_CAP, false };
    identity(&l, o, s); /* fits: the fields came from (or went into) a cookie of COOKIE_MAX */
    /* iss, "/", sub last: together they are the principal */
    struct sc_str f[] = { v,           s->iss,           s->sub,
                          s->email,    s->user,          s->groups,
                          s->id_token, s->refresh_token, sc_str_n(l.p, l.over ? 0 : l.len),
                          s->iss,      SC_STR("/"),      s->sub };
    struct sess_entry ne = { .owner = o->id, .vlen = v.len };
    struct sc_str *to[] = { NULL,       &ne.s.iss,    &ne.s.sub,      &ne.s.email,
                            &ne.s.user, &ne.s.groups, &ne.s.id_token, &ne.s.refresh_token,
                            &ne.lines,  NULL,         NULL,           NULL };
    for (size_t i = 0; i < SC_ARRAY_LEN(f); i++) {
        ne.blen += f[i].len;
    }
    ne.block = sc_malloc(ne.blen ? ne.blen : 1);
    size_t off = 0, poff = 0;
    for (size_t i = 0; i < SC_ARRAY_LEN(f); i++) {
        if (f[i].len) {
            memcpy(ne.block + off, f[i].p, f[i].len);
        }
        if (to[i]) {
            *to[i] = sc_str_n(ne.block + off, f[i].len);
        }
        poff = i == 9 ? off : poff;
        off += f[i].len;
    }
    ne.principal = sc_str_n(ne.block + poff, off - poff);
    ne.s.expires = s->expires;
    ne.s.token_exp = s->token_exp;
    ne.refresh_at =
        o->refresh && s->refresh_token.len && s->token_exp ? s->token_exp - o->refresh_early : 0;
    entry_clear(e);
    *e = ne;
}

/* A value's slot: from its first 8 characters (the AES-GCM nonce's: random per seal), so that a
 * request's cookie is found before its end is known. */
static inline size_t slot_at(const char *p, size_t len)
{
    uint64_t x = 0;
    memcpy(&x, p, len < 8 ? len : 8);
    return (size_t)((x * 0x9E3779B97F4A7C15ull) >> 56); /* SESS_CACHE: 256 */
}

static size_t slot_of(struct sc_str v)
{
    return slot_at(v.p, v.len);
}

static struct sess_entry *cache_put(struct proxy_worker *w, const struct proxy_oidc *o,
                                    struct sc_str v, const struct proxy_oidc_session *s)
{
    if (!w->oidc_cache) {
        w->oidc_cache = SC_NEW(struct proxy_oidc_cache);
    }
    struct sess_entry *e = &w->oidc_cache->e[slot_of(v)];
    entry_fill(e, o, v, s);
    return e;
}

static struct sess_entry *cache_get(struct proxy_worker *w, const struct proxy_oidc *o,
                                    struct sc_str v)
{
    if (!w->oidc_cache) {
        return NULL;
    }
    struct sess_entry *e = &w->oidc_cache->e[slot_of(v)];
    return e->owner == o->id && e->vlen == v.len && memcmp(e->block, v.p, v.len) == 0 ? e : NULL;
}

/* The cached session whose value starts at <p> and ends at <end> or at a ';' there. */
static inline struct sess_entry *cache_at(struct proxy_worker *w, const struct proxy_oidc *o,
                                          const char *p, const char *end)
{
    size_t left = (size_t)(end - p);
    if (!w->oidc_cache || left < 8) {
        return NULL;
    }
    struct sess_entry *e = &w->oidc_cache->e[slot_at(p, left)];
    return e->owner == o->id && e->vlen <= left && (e->vlen == left || p[e->vlen] == ';') &&
                   memcmp(e->block, p, e->vlen) == 0
               ? e
               : NULL;
}

/* The request's Cookie fields as the login sees them. */
struct cookies {
    struct sc_str sess, csrf;           /* the proxy's cookies (the first of each name) */
    struct sess_entry *hit;             /* the session cookie's cache entry, when cached */
    const struct sc_http_header *field; /* the last Cookie field */
    size_t nfields;                     /* how many Cookie fields the request has */
    bool theirs;                        /* a field holds cookies other than the proxy's */
};

/* Reads the Cookie fields (RFC 6265 5.4: pairs separated by "; "). A cached session cookie is
 * matched where its name ends, without looking for its end first. */
static void scan_cookies(const struct proxy_oidc *o, struct proxy_worker *w,
                         const struct sc_http_msg *m, struct cookies *ck)
{
    memset(ck, 0, sizeof(*ck));
    const struct sc_str name = o->name_s;
    for (size_t i = 0; i < m->nheaders; i++) {
        const struct sc_http_header *h = &m->headers[i];
        if (!cookie_field(h->name)) {
            continue;
        }
        ck->nfields++;
        ck->field = h;
        const char *p = h->value.p, *end = p + h->value.len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == '\t')) {
                p++;
            }
            if (p == end) {
                break;
            }
            if (!ck->sess.p && (size_t)(end - p) > name.len && p[name.len] == '=' &&
                memcmp(p, name.p, name.len) == 0) {
                struct sess_entry *e = cache_at(w, o, p + name.len + 1, end);
                if (e) {
                    ck->sess = sc_str_n(p + name.len + 1, e->vlen);
                    ck->hit = e;
                    p += name.len + 1 + e->vlen;
                    p += p < end; /* past the ';' */
                    continue;
                }
            }
            const char *semi = memchr(p, ';', (size_t)(end - p));
            struct sc_str kv = sc_str_trim(sc_str_n(p, (size_t)((semi ? semi : end) - p))), v;
            p = semi ? semi + 1 : end;
            if (is_cookie(kv, name, &v)) {
                ck->sess = ck->sess.p ? ck->sess : v;
            } else if (is_cookie(kv, o->csrf_s, &v)) {
                ck->csrf = ck->csrf.p ? ck->csrf : v;
            } else if (kv.len) {
                ck->theirs = true;
            }
        }
    }
}

/* The entry of session cookie value <v>, opened and cached when new; NULL when it is not one of
 * this login's (counted). Expired sessions too. */
static struct sess_entry *lookup(const struct proxy_oidc *o, struct proxy_worker *w,
                                 struct sc_str v)
{
    struct sess_entry *e = cache_get(w, o, v);
    if (e) {
        return e;
    }
    struct proxy_oidc_session s;
    if (open_cookie(o, &w->oidc_aead, o->cookie_name, v, &s) < 0 || !sc_str_eq(s.iss, o->iss_s)) {
        sc_metrics_counter_inc(o->m_sess_invalid);
        return NULL;
    }
    return cache_put(w, o, v, &s);
}

/* The request's valid session, or NULL. Counts what the cookie was. */
static struct sess_entry *session(const struct proxy_oidc *o, struct proxy_worker *w,
                                  const struct cookies *ck, int64_t now)
{
    if (!ck->sess.len) {
        sc_metrics_counter_inc(o->m_sess_none);
        return NULL;
    }
    struct sess_entry *e = ck->hit ? ck->hit : lookup(o, w, ck->sess);
    if (!e) {
        return NULL;
    }
    if (e->s.expires <= now) {
        sc_metrics_counter_inc(o->m_sess_expired);
        return NULL;
    }
    sc_metrics_counter_inc(o->m_sess_ok);
    return e;
}

static void redirect_uri(struct lines *l, const struct proxy_oidc *o, const struct proxy_exch *ex,
                         const struct sc_http_msg *m)
{
    if (o->redirect_url) {
        puts_c(l, o->redirect_url);
        return;
    }
    puts_c(l, ex->cl->tls ? "https://" : "http://");
    put_str(l, m->host);
    puts_c(l, o->redirect_path);
}

static void b64_random(char *out, size_t nbytes)
{
    uint8_t r[48];
    if (proxy_oidc_random(r, nbytes) < 0) {
        memset(r, 0, sizeof(r)); /* never: then the login fails at the state check */
    }
    out[proxy_oidc_b64url(r, nbytes, out)] = '\0';
}

/* Starts a login: the pre-login cookie and the 302 to the authorization endpoint. */
static int start_login(struct proxy_exch *ex, const struct proxy_oidc *o,
                       const struct sc_http_msg *m, struct sc_str origin, bool clear,
                       const char **why)
{
    struct proxy_oidc_doc *doc = proxy_oidc_doc_get(o);
    if (!doc) {
        *why = "the identity provider is unavailable: try again later";
        return 502;
    }
    char state[48], nonce[48], verifier[64], challenge[48], cv[COOKIE_MAX + 1];
    uint8_t dg[32];
    b64_random(state, 24);
    b64_random(nonce, 24);
    b64_random(verifier, 32); /* 43 characters (RFC 7636 4.1) */
    proxy_oidc_sha256(verifier, strlen(verifier), dg);
    challenge[proxy_oidc_b64url(dg, 32, challenge)] = '\0';
    struct proxy_oidc_session pre = {
        .expires = now_s() + o->login_s,
        .iss = sc_str_c(state),
        .sub = sc_str_c(nonce),
        .email = sc_str_c(verifier),
        .user = proxy_oidc_local_target(origin) ? origin : SC_STR("/"),
    };
    long cl = proxy_oidc_session_encode(o->key, sc_str_c(o->csrf_name), &pre, cv, sizeof(cv));
    if (cl < 0) {
        proxy_oidc_doc_unref(doc);
        *why = "the request target is too long to log in with";
        return 414;
    }
    struct lines l = { sc_tlbuf_get(&line_tl, LINE_CAP), 0, LINE_CAP, false };
    puts_c(&l, "Location: ");
    puts_c(&l, doc->authorization_endpoint);
    puts_c(&l, strchr(doc->authorization_endpoint, '?') ? "&" : "?");
    puts_c(&l, "response_type=code&client_id=");
    put_enc(&l, sc_str_c(o->client_id));
    puts_c(&l, "&redirect_uri=");
    char ru[2048];
    struct lines rl = { ru, 0, sizeof(ru), false };
    redirect_uri(&rl, o, ex, m);
    put_enc(&l, sc_str_n(ru, rl.len));
    puts_c(&l, "&scope=");
    puts_c(&l, o->scopes);
    puts_c(&l, "&state=");
    puts_c(&l, state);
    puts_c(&l, "&nonce=");
    puts_c(&l, nonce);
    puts_c(&l, "&code_challenge=");
    puts_c(&l, challenge);
    puts_c(&l, "&code_challenge_method=S256\r\n");
    set_cookie(&l, o, o->csrf_name, sc_str_n(cv, (size_t)cl), o->login_s);
    if (clear) {
        set_cookie(&l, o, o->cookie_name, SC_STR(""), 0); /* a session that cannot go on */
    }
    puts_c(&l, "Cache-Control: no-store\r\n");
    proxy_oidc_doc_unref(doc);
    if (l.over || rl.over) {
        *why = "the login redirect is too long";
        return 414;
    }
    ex->reply_headers = sc_str_n(l.p, l.len);
    *why = "redirecting to the identity provider";
    return 302;
}

/* Where the provider sends the browser after ending its session: the configured URL, or this
 * origin's <rd>. */
static void post_logout_uri(struct lines *l, const struct proxy_oidc *o,
                            const struct proxy_exch *ex, const struct sc_http_msg *m,
                            struct sc_str rd)
{
    if (o->post_logout_url) {
        puts_c(l, o->post_logout_url);
        return;
    }
    puts_c(l, ex->cl->tls ? "https://" : "http://");
    put_str(l, m->host);
    put_str(l, rd);
}

/* /oauth2/sign_out: both cookies cleared; then to the local <rd> (or /), or, with
 * end_provider_session and an end_session_endpoint, to the provider (OpenID Connect
 * RP-Initiated Logout 1.0 section 2: id_token_hint when the session holds the ID token,
 * client_id, post_logout_redirect_uri, state). */
static int sign_out(struct proxy_exch *ex, const struct proxy_oidc *o, const struct sc_http_msg *m,
                    struct sc_str origin, const char **why)
{
    const char *q = memchr(origin.p, '?', origin.len);
    char rdb[PARAM_MAX];
    long rl = q ? proxy_oidc_query_param(sc_str_n(q + 1, (size_t)(origin.p + origin.len - q - 1)),
                                         "rd", rdb, sizeof(rdb))
                : -1;
    struct sc_str rd = rl > 0 && proxy_oidc_local_target(sc_str_n(rdb, (size_t)rl))
                           ? sc_str_n(rdb, (size_t)rl)
                           : SC_STR("/");
    struct proxy_oidc_doc *doc = o->end_session ? proxy_oidc_doc_get(o) : NULL;
    struct cookies ck;
    scan_cookies(o, ex->w, m, &ck);
    struct sess_entry *e = ck.sess.len ? lookup(o, ex->w, ck.sess) : NULL;
    int64_t now = now_s();
    if (e && e->s.expires > now) {
        proxy_oidc_live(e->s.expires, now, -1);
        e->s.expires = 0; /* this worker refuses the cookie from now on */
    }
    struct sc_str hint = SC_STR_NULL;
    if (doc && doc->end_session_endpoint) {
        hint = e ? e->s.id_token : SC_STR_NULL; /* an expired session's too (section 2) */
    }
    struct lines l = { sc_tlbuf_get(&line_tl, LINE_CAP), 0, LINE_CAP, false };
    puts_c(&l, "Location: ");
    if (doc && doc->end_session_endpoint) {
        char state[48], pl[PARAM_MAX + 512];
        b64_random(state, 24);
        puts_c(&l, doc->end_session_endpoint);
        puts_c(&l, strchr(doc->end_session_endpoint, '?') ? "&" : "?");
        puts_c(&l, "client_id=");
        put_enc(&l, sc_str_c(o->client_id));
        if (hint.len) {
            puts_c(&l, "&id_token_hint=");
            put_str(&l, hint); /* a JWS: base64url and dots only */
        }
        struct lines pll = { pl, 0, sizeof(pl), false };
        post_logout_uri(&pll, o, ex, m, rd);
        puts_c(&l, "&post_logout_redirect_uri=");
        put_enc(&l, sc_str_n(pl, pll.over ? 0 : pll.len));
        puts_c(&l, "&state=");
        puts_c(&l, state);
    } else {
        put_str(&l, rd);
    }
    proxy_oidc_doc_unref(doc);
    puts_c(&l, "\r\n");
    set_cookie(&l, o, o->cookie_name, SC_STR(""), 0);
    set_cookie(&l, o, o->csrf_name, SC_STR(""), 0);
    puts_c(&l, "Cache-Control: no-store\r\n");
    if (l.over) {
        *why = "the sign-out redirect is too long";
        return 414;
    }
    ex->reply_headers = sc_str_n(l.p, l.len);
    *why = "signed out";
    return 302;
}

/* ---- the callback ---- */

enum { CALL_LOGIN, CALL_REFRESH };
enum { RES_KEEP, RES_NEW, RES_LOGIN }; /* what a refresh left: the old session, a new one, none */

/* A token request of an exchange: a login's code exchange, or a session's refresh (then the
 * call lives until the exchange ends: the upstream request and response use its session). */
struct proxy_oidc_call {
    struct proxy_exch *ex;
    const struct proxy_oidc *o;
    struct sc_egress_xfer *xfer;
    struct proxy_oidc_doc *doc;
    int kind;
    char nonce[48]; /* a login's; empty for a refresh (OpenID Connect Core 12.2) */
    char rd[PARAM_MAX];
    char *form;
    struct sc_kv hdr;
    /* a refresh: */
    char *head; /* the request head as received, parsed again to go on */
    size_t headlen;
    char *value;           /* the session cookie the request came with */
    struct sess_entry use; /* the session the request goes on with */
    char *set_cookie;      /* the renewed session's Set-Cookie line for the response */
    int outcome;
    bool resume; /* the exchange goes on: proxy_oidc_request takes the outcome */
};

static struct proxy_oidc_call *call_new(struct proxy_exch *ex, const struct proxy_oidc *o,
                                        struct proxy_oidc_doc *doc, int kind)
{
    struct proxy_oidc_call *c = SC_NEW(struct proxy_oidc_call);
    c->ex = ex;
    c->o = o;
    c->doc = doc; /* the reference is the call's */
    c->kind = kind;
    return c;
}

static void call_free(struct proxy_oidc_call *c)
{
    proxy_oidc_doc_unref(c->doc);
    if (c->form) {
        sc_free_secret(c->form, strlen(c->form));
    }
    if (c->set_cookie) {
        sc_free_secret(c->set_cookie, strlen(c->set_cookie));
    }
    sc_free(c->head);
    sc_free(c->value);
    entry_clear(&c->use);
    sc_free(c);
}

/* The refresh of the session <c> came with is over: this worker may start another, from
 * <next> on (0: never; -1: as it was). */
static void refresh_done(struct proxy_oidc_call *c, int64_t next)
{
    struct sess_entry *e = cache_get(c->ex->w, c->o, sc_str_c(c->value));
    if (e) {
        e->refreshing = false;
        e->refresh_at = next < 0 ? e->refresh_at : next;
    }
}

void proxy_oidc_cancel(struct proxy_exch *ex)
{
    struct proxy_oidc_call *c = ex->oidc_call;
    if (!c) {
        return;
    }
    ex->oidc_call = NULL;
    if (c->xfer) {
        sc_egress_cancel(c->xfer);
        if (c->kind == CALL_REFRESH) {
            refresh_done(c, -1);
        }
    }
    call_free(c);
}

static bool in_list(const struct sc_strv *v, struct sc_str s)
{
    for (size_t i = 0; i < v->n; i++) {
        if (sc_str_caseeq(sc_str_c(v->v[i]), s)) {
            return true;
        }
    }
    return false;
}

static bool aud_ok(const struct proxy_oidc *o, json_t *p)
{
    json_t *aud = json_object_get(p, "aud");
    const char *azp = json_string_value(json_object_get(p, "azp"));
    if (json_object_get(p, "azp") && (!azp || strcmp(azp, o->client_id) != 0)) {
        return false; /* Core 3.1.3.7 (5): azp, when present, is this client */
    }
    if (json_is_string(aud)) {
        return strcmp(json_string_value(aud), o->client_id) == 0;
    }
    if (!json_is_array(aud)) {
        return false;
    }
    bool found = false;
    size_t i;
    json_t *v;
    json_array_foreach(aud, i, v)
    {
        found = found || (json_is_string(v) && strcmp(json_string_value(v), o->client_id) == 0);
    }
    /* (4): several audiences need an azp (checked above to be this client) */
    return found && (json_array_size(aud) == 1 || azp);
}

/* Verifies ID token <tok>. Returns its payload or NULL with a static reason. */
static json_t *verify_id_token(const struct proxy_oidc_call *c, struct sc_str tok, const char **why)
{
    const struct proxy_oidc *o = c->o;
    const char *d1 = memchr(tok.p, '.', tok.len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', (size_t)(tok.p + tok.len - d1 - 1)) : NULL;
    if (!d1 || !d2 || tok.len > TOKEN_MAX) {
        *why = "the ID token is not a JWS";
        return NULL;
    }
    size_t hl = (size_t)(d1 - tok.p), pl = (size_t)(d2 - d1 - 1),
           sl = (size_t)(tok.p + tok.len - d2 - 1);
    static _Thread_local void *tbuf; /* TOKEN_MAX bytes (core/tlbuf.h) */
    uint8_t *buf = sc_tlbuf_get(&tbuf, TOKEN_MAX);
    long n = proxy_jwt_b64url(tok.p, hl, buf, TOKEN_MAX);
    json_t *hdr =
        n > 0 ? json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, NULL) : NULL;
    const char *algs = json_string_value(json_object_get(hdr, "alg"));
    const char *kid = json_string_value(json_object_get(hdr, "kid"));
    int alg = algs ? proxy_jwt_alg(sc_str_c(algs)) : PROXY_JWS_NONE;
    char kidc[128] = "";
    if (kid && strlen(kid) < sizeof(kidc)) {
        memcpy(kidc, kid, strlen(kid) + 1);
    }
    bool crit = json_object_get(hdr, "crit") != NULL;
    json_decref(hdr);
    if (!algs || alg == PROXY_JWS_NONE || crit) {
        *why = "the ID token's algorithm is not allowed";
        return NULL;
    }
    struct proxy_jwks *ks = proxy_jwks_src_get(c->doc->jwks);
    bool kid_known = false;
    const void *key = ks ? proxy_jwks_find(ks, sc_str_c(kidc), alg, &kid_known) : NULL;
    long sn = key ? proxy_jwt_b64url(d2 + 1, sl, buf, TOKEN_MAX) : -1;
    int vr = sn > 0 ? proxy_jwt_verify(key, alg, tok.p, hl + 1 + pl, buf, (size_t)sn) : -1;
    if (!key && kidc[0] && !kid_known) {
        proxy_jwks_src_kick(c->doc->jwks);
    }
    proxy_jwks_unref(ks);
    if (!key) {
        *why = "no key of the provider's JWKS matches the ID token";
        return NULL;
    }
    if (vr < 0) {
        *why = "the ID token's signature does not verify";
        return NULL;
    }
    n = proxy_jwt_b64url(d1 + 1, pl, buf, TOKEN_MAX);
    json_t *p =
        n > 0 ? json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, NULL) : NULL;
    const char *iss = json_string_value(json_object_get(p, "iss"));
    const char *nonce = json_string_value(json_object_get(p, "nonce"));
    json_t *exp = json_object_get(p, "exp");
    json_t *sub = json_object_get(p, "sub");
    int64_t now = now_s();
    if (!json_is_object(p)) {
        *why = "the ID token's payload is not a JSON object";
    } else if (!iss || strcmp(iss, o->issuer) != 0) {
        *why = "the ID token's issuer is not the provider";
    } else if (!aud_ok(o, p)) {
        *why = "the ID token is not for this client";
    } else if (!json_is_integer(exp) && !json_is_real(exp)) {
        *why = "the ID token has no exp";
    } else if ((int64_t)json_number_value(exp) <= now - CLOCK_SKEW_S) {
        *why = "the ID token has expired";
    } else if (c->kind == CALL_LOGIN && (!nonce || strcmp(nonce, c->nonce) != 0)) {
        *why = "the ID token's nonce is not the login's";
    } else if (!json_is_string(sub) || json_string_length(sub) == 0) {
        *why = "the ID token has no sub";
    } else {
        return p;
    }
    json_decref(p);
    return NULL;
}

/* The user's groups from the configured claim, comma-joined into <l>; whether one is allowed. */
static bool groups_of(const struct proxy_oidc *o, json_t *p, struct lines *l)
{
    json_t *g = json_object_get(p, o->groups_claim);
    bool allowed = o->groups.n == 0;
    if (json_is_string(g)) {
        put_str(l, sc_str_c(json_string_value(g)));
        return allowed || in_list(&o->groups, sc_str_c(json_string_value(g)));
    }
    size_t i;
    json_t *v;
    bool first = true;
    json_array_foreach(g, i, v)
    {
        if (!json_is_string(v) || strchr(json_string_value(v), ',')) {
            continue;
        }
        if (!first) {
            puts_c(l, ",");
        }
        first = false;
        put_str(l, sc_str_c(json_string_value(v)));
        allowed = allowed || in_list(&o->groups, sc_str_c(json_string_value(v)));
    }
    return allowed;
}

static bool email_allowed(const struct proxy_oidc *o, json_t *p)
{
    if (!o->emails.n && !o->domains.n) {
        return true;
    }
    const char *email = json_string_value(json_object_get(p, "email"));
    json_t *ev = json_object_get(p, "email_verified");
    if (!email || json_is_false(ev)) {
        return false; /* an unverified address is anybody's claim */
    }
    if (in_list(&o->emails, sc_str_c(email))) {
        return true;
    }
    const char *at = strrchr(email, '@');
    return at && in_list(&o->domains, sc_str_c(at + 1));
}

static void fail(struct proxy_oidc_call *c, struct sc_metric *mt, int status, const char *why)
{
    struct proxy_exch *ex = c->ex;
    sc_metrics_counter_inc(mt);
    sc_warn("oidc login failed", SC_LS("reason", why));
    struct lines l = { sc_tlbuf_get(&line_tl, LINE_CAP), 0, LINE_CAP, false };
    set_cookie(&l, c->o, c->o->csrf_name, SC_STR(""), 0);
    ex->reply_headers = sc_str_n(l.p, l.len);
    proxy_local_reply(ex, status, why, 0);
    ex->reply_headers = SC_STR_NULL;
}

/* The session a token response gives: <p> the verified ID token's payload (NULL: a refresh
 * answer without one, <base>'s claims kept), <j> the response. Fills <s> (views into <p>, <j>,
 * <base> and <gl>). Returns NULL, or why the user cannot have it with the metric in <*mt>. */
static const char *session_of(const struct proxy_oidc *o, json_t *p, json_t *j, const char *idt,
                              const struct proxy_oidc_session *base, struct lines *gl, int64_t now,
                              struct proxy_oidc_session *s, struct sc_metric **mt)
{
    *s = base ? *base : (struct proxy_oidc_session){ 0 };
    s->expires = now + o->ttl_s;
    s->iss = o->iss_s;
    s->token_exp = 0;
    *mt = o->m_login_denied;
    if (p) {
        if (!groups_of(o, p, gl) || !email_allowed(o, p)) {
            return "this user is not allowed in";
        }
        const char *email = json_string_value(json_object_get(p, "email"));
        const char *pu = json_string_value(json_object_get(p, "preferred_username"));
        s->sub = sc_str_c(json_string_value(json_object_get(p, "sub")));
        s->email = email ? sc_str_c(email) : SC_STR_NULL;
        s->user = pu ? sc_str_c(pu) : SC_STR_NULL;
        s->groups = gl->over ? SC_STR_NULL : sc_str_n(gl->p, gl->len);
        s->id_token = o->pass_auth || o->end_session ? sc_str_c(idt) : SC_STR_NULL;
        s->token_exp = (int64_t)json_number_value(json_object_get(p, "exp"));
    }
    /* RFC 6749 5.1: the access token's lifetime; the earlier of the two is refreshed */
    json_t *ei = json_object_get(j, "expires_in");
    if (json_is_integer(ei) && json_integer_value(ei) > 0) {
        int64_t t = now + (int64_t)json_integer_value(ei);
        s->token_exp = s->token_exp && s->token_exp < t ? s->token_exp : t;
    }
    /* RFC 6749 6: a refresh answer without a refresh_token leaves the old one in force */
    const char *rt = json_string_value(json_object_get(j, "refresh_token"));
    if (rt && o->refresh) {
        s->refresh_token = sc_str_c(rt);
    } else if (!base || !o->refresh) {
        s->refresh_token = SC_STR_NULL;
    }
    *mt = o->m_login_idtoken;
    if (!clean_value(s->sub) || !clean_value(s->email) || !clean_value(s->user) ||
        !clean_value(s->groups) || !clean_value(s->id_token) || !clean_value(s->refresh_token)) {
        return "the ID token's claims hold control characters";
    }
    return NULL;
}

/* Seals <s> into cookie value <cv>; a refresh token that does not fit is left out (the session
 * then ends at session_ttl). Returns the length or -1. */
static long seal_session(const struct proxy_oidc *o, struct proxy_oidc_session *s, char *cv,
                         size_t cap)
{
    long cl = proxy_oidc_session_encode(o->key, o->name_s, s, cv, cap);
    if (cl < 0 && s->refresh_token.len) {
        sc_warn("oidc session kept without its refresh token: it does not fit in a cookie",
                SC_LI("refresh_token_bytes", (long long)s->refresh_token.len));
        s->refresh_token = SC_STR_NULL;
        cl = proxy_oidc_session_encode(o->key, o->name_s, s, cv, cap);
    }
    return cl;
}

static void on_token(void *arg, const struct sc_egress_resp *resp)
{
    struct proxy_oidc_call *c = arg;
    struct proxy_exch *ex = c->ex;
    const struct proxy_oidc *o = c->o;
    c->xfer = NULL;
    ex->oidc_call = NULL;
    ex->dc->rpaused = false;
    if (resp->error || resp->status == 0 || resp->status >= 500) {
        fail(c, o->m_login_provider, 502,
             "the identity provider's token endpoint failed: try again later");
        call_free(c);
        return;
    }
    json_t *j = json_loadb(resp->body.p, resp->body.len, JSON_REJECT_DUPLICATES, NULL);
    const char *idt = json_string_value(json_object_get(j, "id_token"));
    if (resp->status != 200 || !idt) {
        const char *err = json_string_value(json_object_get(j, "error"));
        sc_warn("oidc token endpoint refused the code", SC_LI("status", resp->status),
                SC_LS("error", err ? err : ""));
        json_decref(j);
        fail(c, o->m_login_token, 403, "the identity provider refused the login code");
        call_free(c);
        return;
    }
    const char *why = NULL;
    json_t *p = verify_id_token(c, sc_str_c(idt), &why);
    if (!p) {
        json_decref(j);
        fail(c, o->m_login_idtoken, 403, why);
        call_free(c);
        return;
    }
    char groups[4096], cv[COOKIE_MAX + 1];
    struct lines gl = { groups, 0, sizeof(groups), false };
    struct proxy_oidc_session s;
    struct sc_metric *mt = NULL;
    why = session_of(o, p, j, idt, NULL, &gl, now_s(), &s, &mt);
    long cl = why ? -1 : seal_session(o, &s, cv, sizeof(cv));
    json_decref(p);
    json_decref(j);
    if (why) {
        fail(c, mt, 403, why);
        call_free(c);
        return;
    }
    if (cl < 0) {
        fail(c, o->m_login_idtoken, 502, "the session does not fit in a cookie");
        call_free(c);
        return;
    }
    sc_metrics_counter_inc(o->m_login_ok);
    proxy_oidc_live(s.expires, now_s(), 1);
    struct lines l = { sc_tlbuf_get(&line_tl, LINE_CAP), 0, LINE_CAP, false };
    puts_c(&l, "Location: ");
    puts_c(&l, c->rd);
    puts_c(&l, "\r\n");
    set_cookie(&l, o, o->cookie_name, sc_str_n(cv, (size_t)cl), o->ttl_s);
    set_cookie(&l, o, o->csrf_name, SC_STR(""), 0);
    puts_c(&l, "Cache-Control: no-store\r\n");
    ex->reply_headers = sc_str_n(l.p, l.len);
    proxy_local_reply(ex, 302, "logged in", 0);
    ex->reply_headers = SC_STR_NULL;
    call_free(c);
}

static void form_add(struct lines *l, const char *k, struct sc_str v)
{
    if (l->len) {
        puts_c(l, "&");
    }
    puts_c(l, k);
    puts_c(l, "=");
    put_enc(l, v);
}

/* Sends form <f> to the token endpoint for <c> (RFC 6749 3.2, the client authenticated as
 * configured, 2.3.1) and pauses the exchange until <cb>. Returns 0, or -1 (nothing sent). */
static int token_post(struct proxy_exch *ex, struct proxy_oidc_call *c, struct lines *f,
                      sc_egress_cb cb)
{
    const struct proxy_oidc *o = c->o;
    if (o->auth_method == 1) {
        form_add(f, "client_id", sc_str_c(o->client_id));
        form_add(f, "client_secret", sc_str_c(o->client_secret));
    }
    if (f->over) {
        return -1;
    }
    c->form = sc_strndup(f->p, f->len);
    memset(f->p, 0, f->len);
    c->hdr = (struct sc_kv){ .key = "Content-Type", .value = "application/x-www-form-urlencoded" };
    struct proxy_worker *w = ex->w;
    if (!w->oidc_egress && !w->draining) {
        w->oidc_egress = sc_egress_new(w->loop); /* closed when the worker stops */
    }
    struct sc_egress_req req = {
        .method = "POST",
        .url = c->doc->token_endpoint,
        .headers = &c->hdr,
        .nheaders = 1,
        .body = c->form,
        .body_len = strlen(c->form),
        .timeout_ms = 10000,
        .max_response = 256 * 1024,
        .basic_user = o->auth_method == 0 ? o->basic_id : NULL,
        .basic_password = o->auth_method == 0 ? o->basic_secret : NULL,
        .sensitive = true,
    };
    if (!w->oidc_egress || sc_egress_send(w->oidc_egress, &req, cb, c, &c->xfer) < 0) {
        return -1;
    }
    ex->oidc_call = c;
    ex->dc->rpaused = true;
    proxy_dread_update(ex->dc);
    ex->down->arm_timer(ex);
    return 0;
}

static int callback(struct proxy_exch *ex, const struct proxy_oidc *o, const struct sc_http_msg *m,
                    struct sc_str origin, const char **why)
{
    const char *qp = memchr(origin.p, '?', origin.len);
    struct sc_str q = qp ? sc_str_n(qp + 1, (size_t)(origin.p + origin.len - qp - 1)) : SC_STR_NULL;
    char code[PARAM_MAX], state[PARAM_MAX], err[256];
    long cl = proxy_oidc_query_param(q, "code", code, sizeof(code));
    long sl = proxy_oidc_query_param(q, "state", state, sizeof(state));
    if (proxy_oidc_query_param(q, "error", err, sizeof(err)) >= 0) {
        sc_metrics_counter_inc(o->m_login_provider);
        *why = "the identity provider refused the login";
        return 403;
    }
    struct proxy_oidc_session pre;
    struct cookies ck;
    scan_cookies(o, ex->w, m, &ck);
    if (cl <= 0 || sl <= 0) {
        sc_metrics_counter_inc(o->m_login_state);
        *why = "the callback has no code or state";
        return 400;
    }
    if (open_cookie(o, &ex->w->oidc_aead, o->csrf_name, ck.csrf, &pre) < 0 ||
        pre.expires <= now_s() || pre.iss.len != (size_t)sl ||
        !same(pre.iss.p, state, (size_t)sl)) {
        sc_metrics_counter_inc(o->m_login_state);
        *why = "the login state does not match this browser's: start again";
        return 403;
    }
    struct proxy_oidc_doc *doc = proxy_oidc_doc_get(o);
    if (!doc) {
        sc_metrics_counter_inc(o->m_login_provider);
        *why = "the identity provider is unavailable: try again later";
        return 502;
    }
    struct proxy_oidc_call *c = call_new(ex, o, doc, CALL_LOGIN);
    if (pre.sub.len >= sizeof(c->nonce) || pre.user.len >= sizeof(c->rd) ||
        !proxy_oidc_local_target(pre.user)) {
        call_free(c);
        sc_metrics_counter_inc(o->m_login_state);
        *why = "the login state is malformed";
        return 400;
    }
    memcpy(c->nonce, pre.sub.p, pre.sub.len);
    memcpy(c->rd, pre.user.p, pre.user.len);
    char form[8192], ru[2048];
    struct lines f = { form, 0, sizeof(form), false }, rl = { ru, 0, sizeof(ru), false };
    redirect_uri(&rl, o, ex, m);
    form_add(&f, "grant_type", SC_STR("authorization_code"));
    form_add(&f, "code", sc_str_n(code, (size_t)cl));
    form_add(&f, "redirect_uri", sc_str_n(ru, rl.len));
    form_add(&f, "code_verifier", pre.email);
    if (rl.over || token_post(ex, c, &f, on_token) < 0) {
        call_free(c);
        sc_metrics_counter_inc(o->m_login_provider);
        *why = "the token endpoint cannot be reached";
        return 502;
    }
    return PROXY_AUTHZ_PENDING;
}

/* ---- refreshing a session (RFC 6749 section 6, OpenID Connect Core 12) ---- */

/* The refresh is over: the exchange goes on from its head, as the client sent it, through the
 * normalisation and authorization again (the login then takes the outcome from the call). */
static void resume(struct proxy_oidc_call *c)
{
    struct proxy_exch *ex = c->ex;
    struct proxy_worker *w = ex->w;
    struct sc_http_msg m = { .headers = w->hdrs };
    struct sc_http_error herr;
    struct sc_http_limits lim = sc_http1_default_limits;
    lim.max_head = (uint32_t)c->headlen;
    c->resume = true;
    if (sc_http1_parse_request(c->head, c->headlen, 0, &lim, &m, SC_ARRAY_LEN(w->hdrs), &herr) <=
        0) {
        proxy_local_reply(ex, 500, "the request head could not be read again", F_DPE);
        return; /* cannot happen: it parsed before */
    }
    struct sc_str origin;
    struct sc_str path = proxy_target_path(m.target, &origin);
    const char *why = NULL;
    unsigned fl = 0;
    int st = proxy_authz_request(ex, &m, sc_str_n(c->head, c->headlen), &origin, &path, &why, &fl);
    /* <c> may be gone from here on: a local reply ends the exchange */
    if (st == PROXY_AUTHZ_PENDING) {
        return;
    }
    if (st) {
        ex->close_after = ex->body != B_NONE;
        proxy_local_reply(ex, st, why, fl);
        return;
    }
    proxy_exchange_route(ex->dc, &m, origin, path);
}

/* Ends the worker's refresh of the cookie <c> came with: <next> as refresh_done's; <dead>: the
 * provider ended the session. */
static void refresh_end(struct proxy_oidc_call *c, int64_t next, bool dead)
{
    refresh_done(c, next);
    struct sess_entry *e = dead ? cache_get(c->ex->w, c->o, sc_str_c(c->value)) : NULL;
    if (e) {
        e->s.expires = 0; /* its other requests log in again too */
    }
}

static void on_refreshed(void *arg, const struct sc_egress_resp *resp)
{
    struct proxy_oidc_call *c = arg;
    struct proxy_exch *ex = c->ex;
    const struct proxy_oidc *o = c->o;
    c->xfer = NULL;
    ex->dc->rpaused = false;
    int64_t now = now_s(), old_expires = c->use.s.expires;
    json_t *j = NULL, *p = NULL;
    const char *why = NULL;
    char err[128] = ""; /* the provider's error code, kept past the answer */
    c->outcome = RES_LOGIN;
    if (resp->error || resp->status == 0 || resp->status >= 500) {
        why = "the token endpoint failed";
        c->outcome = RES_KEEP;
    } else {
        j = json_loadb(resp->body.p, resp->body.len, JSON_REJECT_DUPLICATES, NULL);
        const char *at = json_string_value(json_object_get(j, "access_token"));
        const char *idt = json_string_value(json_object_get(j, "id_token"));
        const char *e = json_string_value(json_object_get(j, "error"));
        snprintf(err, sizeof(err), "%s", e ? e : "");
        if (resp->status != 200 || !at) {
            why = "the provider refused the refresh token";
        } else if (idt && (p = verify_id_token(c, sc_str_c(idt), &why)) == NULL) {
            /* why: the check that failed */
        } else if (p && !sc_str_eq(sc_str_c(json_string_value(json_object_get(p, "sub"))),
                                   c->use.s.sub)) {
            why = "the refreshed ID token is another user's"; /* Core 12.2 */
        } else {
            char groups[4096], cv[COOKIE_MAX + 1];
            struct lines gl = { groups, 0, sizeof(groups), false };
            struct proxy_oidc_session ns;
            struct sc_metric *mt = NULL;
            why = session_of(o, p, j, idt, &c->use.s, &gl, now, &ns, &mt);
            long cl = why ? -1 : seal_session(o, &ns, cv, sizeof(cv));
            if (!why && cl < 0) {
                why = "the renewed session does not fit in a cookie";
                c->outcome = RES_KEEP;
            } else if (!why) {
                struct lines l = { sc_tlbuf_get(&line_tl, LINE_CAP), 0, LINE_CAP, false };
                set_cookie(&l, o, o->cookie_name, sc_str_n(cv, (size_t)cl), o->ttl_s);
                c->set_cookie = sc_strndup(l.p, l.len);
                entry_fill(&c->use, o, sc_str_n(cv, (size_t)cl), &ns); /* copies ns first */
                cache_put(ex->w, o, sc_str_n(cv, (size_t)cl), &c->use.s);
                c->outcome = RES_NEW;
            }
        }
    }
    json_decref(p);
    json_decref(j);
    if (c->outcome == RES_NEW) {
        sc_metrics_counter_inc(o->m_refresh_ok);
        proxy_oidc_live(old_expires, now, -1);
        proxy_oidc_live(c->use.s.expires, now, 1);
        /* the old cookie's other requests go on without refreshing it again (its refresh
         * token may be rotated away: the browser has the new cookie) */
        refresh_end(c, 0, false);
    } else if (c->outcome == RES_KEEP) {
        sc_metrics_counter_inc(o->m_refresh_error);
        sc_warn("oidc session refresh failed; the session goes on and is refreshed later",
                SC_LS("reason", why), SC_LI("status", resp->status));
        refresh_end(c, now + REFRESH_RETRY_S, false);
    } else {
        sc_metrics_counter_inc(o->m_refresh_failed);
        proxy_oidc_live(old_expires, now, -1);
        sc_info("oidc session refresh refused; the user logs in again", SC_LS("reason", why),
                SC_LI("status", resp->status), SC_LS("error", err));
        refresh_end(c, -1, true);
    }
    resume(c);
}

/* Starts refreshing session <e> (cookie value <v>) of the exchange, whose head as received is
 * <raw>. Returns PROXY_AUTHZ_PENDING, or 0 when it cannot start (the session goes on). */
static int start_refresh(struct proxy_exch *ex, const struct proxy_oidc *o, struct sc_str raw,
                         struct sc_str v, struct sess_entry *e, int64_t now)
{
    struct proxy_oidc_doc *doc = raw.len ? proxy_oidc_doc_get(o) : NULL;
    if (!doc) {
        e->refresh_at = now + REFRESH_RETRY_S; /* no provider yet: later */
        return 0;
    }
    struct proxy_oidc_call *c = call_new(ex, o, doc, CALL_REFRESH);
    c->head = sc_malloc(raw.len);
    memcpy(c->head, raw.p, raw.len);
    c->headlen = raw.len;
    c->value = sc_strndup(v.p, v.len);
    entry_fill(&c->use, o, v, &e->s);
    char form[8192];
    struct lines f = { form, 0, sizeof(form), false };
    form_add(&f, "grant_type", SC_STR("refresh_token"));
    form_add(&f, "refresh_token", e->s.refresh_token);
    if (token_post(ex, c, &f, on_refreshed) < 0) {
        call_free(c);
        e->refresh_at = now + REFRESH_RETRY_S;
        return 0;
    }
    e->refreshing = true;
    return PROXY_AUTHZ_PENDING;
}

/* ---- every request ---- */

/* The identity the authorization policies see: the session's fields (views into the session's
 * cache entry or refresh call). */
static _Thread_local struct proxy_oidc_session cur;
static _Thread_local const struct proxy_oidc *cur_o;

static int claim_cb(const void *ctx, const struct sc_str *path, size_t n,
                    bool (*cb)(void *arg, struct sc_str v), void *arg)
{
    (void)ctx;
    if (n != 1) {
        return -1;
    }
    struct sc_str k = path[0];
    struct sc_str v = sc_str_eq(k, SC_STR("sub"))                  ? cur.sub
                      : sc_str_eq(k, SC_STR("iss"))                ? cur.iss
                      : sc_str_eq(k, SC_STR("email"))              ? cur.email
                      : sc_str_eq(k, SC_STR("preferred_username")) ? cur.user
                                                                   : SC_STR_NULL;
    if (v.len) {
        cb(arg, v);
        return 0;
    }
    if (!sc_str_eq(k, sc_str_c(cur_o->groups_claim)) || !cur.groups.len) {
        return -1;
    }
    struct sc_str rest = cur.groups;
    while (rest.len) {
        if (!cb(arg, sc_str_split(&rest, ','))) {
            break;
        }
    }
    return 0;
}

static const struct proxy_az_auth *auth_of(const struct proxy_oidc *o, const struct sess_entry *e)
{
    static _Thread_local struct proxy_az_auth a;
    cur = e->s;
    cur_o = o;
    a.principal = e->principal;
    a.presenter = SC_STR_NULL;
    a.claim = claim_cb;
    a.ctx = NULL;
    return &a;
}

/* What goes upstream with the request: identity lines <lines> (may be empty) and the request's
 * cookies without the proxy's. Returns 0 or 431. */
static int forward(struct proxy_exch *ex, const struct proxy_oidc *o, const struct sc_http_msg *m,
                   const struct cookies *ck, struct sc_str lines, const char **why)
{
    ex->authn_add = lines;
    if (!ck->nfields) {
        return 0;
    }
    if (ck->nfields == 1 && !ck->theirs) {
        ex->authn_strip = ck->field->value; /* the proxy's cookies only: the field goes */
        return 0;
    }
    struct lines l = { sc_tlbuf_get(&line_tl, LINE_CAP), 0, LINE_CAP, false };
    put_str(&l, lines);
    rewrite_cookies(&l, o, m);
    if (l.over) {
        *why = "the identity headers are too long";
        return 431;
    }
    if (ck->nfields == 1) {
        ex->authn_strip = ck->field->value;
    } else {
        ex->nauthn_drop = o->ndrop + 1; /* every Cookie field: one joined field replaces them */
    }
    ex->authn_add = sc_str_n(l.p, l.len);
    return 0;
}

static bool browser(const struct sc_http_msg *m)
{
    return wants_html(m) &&
           (sc_str_eq(m->method, SC_STR("GET")) || sc_str_eq(m->method, SC_STR("HEAD")));
}

/* A 401 for an API call without a valid session; <clear>: the one it came with is cleared. */
static int unauthorized(struct proxy_exch *ex, const struct proxy_oidc *o, bool clear,
                        const char *reason, const char **why)
{
    if (clear) {
        struct lines l = { sc_tlbuf_get(&line_tl, LINE_CAP), 0, LINE_CAP, false };
        set_cookie(&l, o, o->cookie_name, SC_STR(""), 0);
        ex->reply_headers = sc_str_n(l.p, l.len);
    }
    *why = reason;
    return 401;
}

/* The exchange comes back from a refresh (resume): the outcome decides. */
static int resumed(struct proxy_exch *ex, const struct proxy_oidc *o, const struct sc_http_msg *m,
                   struct sc_str origin, struct proxy_oidc_call *c, const char **why,
                   const struct proxy_az_auth **auth)
{
    c->resume = false;
    if (c->outcome == RES_LOGIN) {
        if (browser(m)) {
            return start_login(ex, o, m, origin, true, why);
        }
        return unauthorized(ex, o, true, "unauthorized: the session ended, log in again", why);
    }
    if (c->outcome == RES_NEW) {
        ex->resp_add = sc_str_c(c->set_cookie);
    }
    if (ex->rt->authz) {
        *auth = auth_of(o, &c->use);
    }
    struct cookies ck;
    scan_cookies(o, ex->w, m, &ck);
    return forward(ex, o, m, &ck, c->use.lines, why);
}

int proxy_oidc_request(struct proxy_exch *ex, const struct proxy_oidc *o,
                       const struct sc_http_msg *m, struct sc_str raw, struct sc_str origin,
                       struct sc_str path, const char **why, const struct proxy_az_auth **auth)
{
    ex->authn_drop = o->drop;
    ex->nauthn_drop = o->ndrop;
    if (ex->oidc_call && ex->oidc_call->resume) {
        return resumed(ex, o, m, origin, ex->oidc_call, why, auth);
    }
    if (sc_str_eq(path, o->rpath_s)) {
        return callback(ex, o, m, origin, why);
    }
    if (sc_str_eq(path, SC_STR(SIGN_OUT_PATH))) {
        return sign_out(ex, o, m, origin, why);
    }
    struct cookies ck;
    scan_cookies(o, ex->w, m, &ck);
    int64_t now = now_s();
    struct sess_entry *e = session(o, ex->w, &ck, now);
    if (sc_str_eq(path, SC_STR(AUTH_PATH))) {
        if (!e) {
            *why = "unauthorized";
            return 401;
        }
        ex->reply_headers = e->lines;
        *why = "authenticated";
        return 202;
    }
    bool skip = o->skip.n && skipped(o, path);
    if (!e) {
        if (skip) {
            return forward(ex, o, m, &ck, SC_STR_NULL, why);
        }
        if (browser(m)) {
            return start_login(ex, o, m, origin, ck.sess.len > 0, why);
        }
        return unauthorized(ex, o, ck.sess.len > 0, "unauthorized: log in first", why);
    }
    if (e->refresh_at && now >= e->refresh_at && !e->refreshing && !skip &&
        start_refresh(ex, o, raw, ck.sess, e, now) == PROXY_AUTHZ_PENDING) {
        return PROXY_AUTHZ_PENDING;
    }
    if (ex->rt->authz) {
        *auth = auth_of(o, e);
    }
    if (ck.nfields == 1 && !ck.theirs) { /* forward()'s usual case, inline */
        ex->authn_add = e->lines;
        ex->authn_strip = ck.field->value;
        return 0;
    }
    return forward(ex, o, m, &ck, e->lines, why);
}

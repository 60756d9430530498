// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the OpenID Connect login's parsers of untrusted input. The first byte
// picks the mode: 0, the rest is a session cookie value decoded with a fixed key; 1, a callback
// query whose code, state and error parameters are read; 2, a redirect target judged local or
// not; 3, a session made of the bytes (split in seven fields) is sealed and must decode to the same
// fields. Invariants: the cached AES-GCM contexts decode as the uncached path does; a decoded
// session's fields lie within the decode buffer and re-encode to a value that decodes to the same
// fields; a parameter is shorter than its buffer, holds no NUL, and asking twice gives the same
// answer; a local target starts with one '/' and holds no '\', no control character and no "//" at
// its start.
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/str.h"
#include "roles/proxy/proxy_oidc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_proxy_oidc: invariant failed: %s (%s:%d)\n", #cond, __FILE__,    \
                    __LINE__);                                                                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const uint8_t key[PROXY_OIDC_KEY_LEN] = "0123456789abcdef0123456789abcdef";

static bool within(struct sc_str s, const uint8_t *buf, size_t cap)
{
    return s.len == 0 || ((const uint8_t *)s.p >= buf && (const uint8_t *)s.p + s.len <= buf + cap);
}

static void same_fields(const struct proxy_oidc_session *a, const struct proxy_oidc_session *b)
{
    CHECK(a->expires == b->expires && a->token_exp == b->token_exp);
    CHECK(sc_str_eq(a->refresh_token, b->refresh_token));
    CHECK(sc_str_eq(a->iss, b->iss) && sc_str_eq(a->sub, b->sub));
    CHECK(sc_str_eq(a->email, b->email) && sc_str_eq(a->user, b->user));
    CHECK(sc_str_eq(a->groups, b->groups) && sc_str_eq(a->id_token, b->id_token));
}

static void roundtrip(const struct proxy_oidc_session *s)
{
    static char out[8192];
    static uint8_t buf2[16384];
    long n = proxy_oidc_session_encode(key, SC_STR("c"), s, out, sizeof(out));
    if (n < 0) {
        return;
    }
    struct proxy_oidc_session t;
    CHECK(proxy_oidc_session_decode(key, SC_STR("c"), sc_str_n(out, (size_t)n), &t, buf2,
                                    sizeof(buf2), NULL) == 0);
    same_fields(s, &t);
    /* another associated name (the pre-login cookie's) does not open it */
    CHECK(proxy_oidc_session_decode(key, SC_STR("c_csrf"), sc_str_n(out, (size_t)n), &t, buf2,
                                    sizeof(buf2), NULL) < 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    int mode = data[0] % 4;
    struct sc_str in = sc_str_n((const char *)data + 1, size - 1);
    static uint8_t buf[16384];
    if (mode == 0) {
        struct proxy_oidc_session s, t;
        static struct proxy_oidc_aead *aead; /* the cached contexts answer as the plain path */
        static uint8_t buf3[16384];
        int rc = proxy_oidc_session_decode(key, SC_STR("c"), in, &s, buf, sizeof(buf), NULL);
        CHECK(proxy_oidc_session_decode(key, SC_STR("c"), in, &t, buf3, sizeof(buf3), &aead) == rc);
        if (rc == 0) {
            CHECK(s.expires == t.expires && sc_str_eq(s.sub, t.sub) && sc_str_eq(s.iss, t.iss));
            CHECK(within(s.iss, buf, sizeof(buf)) && within(s.sub, buf, sizeof(buf)));
            CHECK(within(s.email, buf, sizeof(buf)) && within(s.user, buf, sizeof(buf)));
            CHECK(within(s.groups, buf, sizeof(buf)) && within(s.id_token, buf, sizeof(buf)));
            CHECK(within(s.refresh_token, buf, sizeof(buf)));
            roundtrip(&s);
        }
    } else if (mode == 1) {
        static const char *const names[] = { "code", "state", "error", "rd" };
        for (size_t i = 0; i < 4; i++) {
            char out[256], again[256];
            long n = proxy_oidc_query_param(in, names[i], out, sizeof(out));
            long m = proxy_oidc_query_param(in, names[i], again, sizeof(again));
            CHECK(n == m && n >= -2 && n < (long)sizeof(out));
            if (n >= 0) {
                CHECK(memchr(out, 0, (size_t)n) == NULL && memcmp(out, again, (size_t)n) == 0);
            }
        }
    } else if (mode == 2) {
        if (proxy_oidc_local_target(in)) {
            CHECK(in.len >= 1 && in.p[0] == '/' && memchr(in.p, '\\', in.len) == NULL);
            CHECK(in.len == 1 || in.p[1] != '/');
            for (size_t i = 0; i < in.len; i++) {
                CHECK((unsigned char)in.p[i] > 0x20 && (unsigned char)in.p[i] != 0x7f);
            }
        }
    } else {
        struct sc_str f[7] = { 0 };
        struct sc_str rest = in;
        for (size_t i = 0; i < 7 && rest.len; i++) {
            f[i] = sc_str_split(&rest, '|');
        }
        struct proxy_oidc_session s = { .expires = (int64_t)size * 1000003,
                                        .token_exp = (int64_t)size * 7,
                                        .refresh_token = f[6],
                                        .iss = f[0],
                                        .sub = f[1],
                                        .email = f[2],
                                        .user = f[3],
                                        .groups = f[4],
                                        .id_token = f[5] };
        roundtrip(&s);
    }
    return 0;
}

// SPDX-License-Identifier: Apache-2.0
// Microseconds per JWT authentication through the proxy's own code (src/roles/proxy/proxy_jwt.c):
// a first-seen token (parse, claim checks, one signature verification with the key the JWKS
// holds) and a token found in the per-worker cache. bench/jwt.sh makes the key with openssl and
// the token with PyJWT, and prints these beside `openssl speed`.
// Usage: bench_jwt_verify JWKS_FILE TOKEN_FILE ISSUER [ITERATIONS]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/config.h"
#include "net/http1.h"
#include "roles/proxy/proxy_jwt.h"
#include "roles/proxy/proxy_peerauth.h"

struct doc {
    struct proxy_jwt_cfg jwt;
};

static const struct sc_opt doc_opts[] = {
    { .type = SC_OPT_INLINE, .offset = offsetof(struct doc, jwt), .sub = proxy_jwt_opts },
    { 0 },
};

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static struct proxy_jwt *load(const char *jwks_file, const char *issuer, int cache)
{
    char y[4096];
    snprintf(y, sizeof(y),
             "jwt_cache_entries: %d\n"
             "request_authentication:\n"
             "  - name: bench\n"
             "    jwt_rules: [{ issuer: '%s', jwks_file: '%s' }]\n",
             cache, issuer, jwks_file);
    struct doc d;
    memset(&d, 0, sizeof(d));
    char *err = NULL;
    sc_config_defaults(doc_opts, &d);
    struct proxy_workload w;
    memset(&w, 0, sizeof(w));
    w.ns = "default";
    struct proxy_jwt *j = NULL;
    if (sc_config_load_string(doc_opts, &d, "bench", y, strlen(y), &err) == 0) {
        j = proxy_jwt_new(&d.jwt, &w, "istio-system", NULL, &err);
    }
    if (!j) {
        fprintf(stderr, "bench_jwt_verify: %s\n", err ? err : "no rule");
        exit(1);
    }
    sc_config_free(doc_opts, &d);
    return j;
}

/* Runs <n> authentications; returns microseconds each. */
static double run(struct proxy_jwt *j, const char *auth, long n)
{
    struct proxy_jwt_cache *c = proxy_jwt_cache_new(proxy_jwt_cache_want(j));
    struct sc_http_header h[1] = { { SC_STR("Authorization"), sc_str_c(auth) } };
    struct sc_http_msg m = { .headers = h, .nheaders = 1 };
    struct proxy_jwt_result res;
    const char *why = NULL;
    double t0 = now_us();
    for (long i = 0; i < n; i++) {
        if (proxy_jwt_authenticate(j, c, &m, SC_STR_NULL, (int64_t)time(NULL), &res, &why) < 0 ||
            !res.auth) {
            fprintf(stderr, "bench_jwt_verify: token refused: %s\n", why ? why : "no token");
            exit(1);
        }
    }
    double us = (now_us() - t0) / (double)n;
    proxy_jwt_cache_free(c);
    return us;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: bench_jwt_verify JWKS_FILE TOKEN_FILE ISSUER [ITERATIONS]\n");
        return 2;
    }
    long n = argc > 4 ? strtol(argv[4], NULL, 10) : 2000;
    FILE *f = fopen(argv[2], "r");
    char tok[8192] = "Bearer ";
    size_t tl = f ? fread(tok + 7, 1, sizeof(tok) - 8, f) : 0;
    if (f) {
        fclose(f);
    }
    while (tl && (tok[6 + tl] == '\n' || tok[6 + tl] == '\r')) {
        tl--;
    }
    tok[7 + tl] = '\0';
    struct proxy_jwt *uncached = load(argv[1], argv[3], 0);
    struct proxy_jwt *cached = load(argv[1], argv[3], 1024);
    printf("first_seen_us %.2f\n", run(uncached, tok, n));
    printf("cached_us %.3f\n", run(cached, tok, n * 100));
    proxy_jwt_free(uncached);
    proxy_jwt_free(cached);
    proxy_jwks_cleanup();
    return 0;
}

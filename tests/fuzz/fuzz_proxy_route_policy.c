// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the proxy's route policy on untrusted requests: the input is a request head
// (anything the strict parser accepts), routed through a listener whose routes match cookies and
// headers, rate-limit by a header value (a 4-key table, so eviction runs), abort by fault
// injection, split by weight between subsets, rewrite the path prefix and Host, and set, add and
// remove request and response headers with %REQ()% and other substitutions, redirect, answer
// directly, match query parameters, rewrite the path by a regular expression, hash the
// request for consistent-hash balancing (a function of the request alone), and apply a CORS
// policy (the Origin matched exact, by suffix, regex and contains). Invariants: a
// policy answer (429, fault abort) is a well-formed response with the rate-limit headers where due;
// a redirect's Location is one line of visible ASCII with the configured scheme, port and rewritten
// prefix, in a response the strict parser accepts; the head sent upstream parses strictly, carries
// exactly one Host and one x-copy equal to the client's x-user, no removed header, and the
// rewritten prefix (or regex rewrite); the client's response head parses, lost the removed header
// and carries the added ones; a CORS preflight answer parses, with Access-Control-Allow-Origin
// (when present) equal to the request's Origin and the requested method echoed; on a response to
// an allowed origin, exactly one Access-Control-Allow-Origin (the origin, upstream's replaced) and
// one Vary: Origin.
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/config.h"
#include "core/metrics.h"
#include "net/http1.h"
#include "roles/proxy/proxy_conn.h"
#include "roles/proxy/proxy_route_policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_proxy_route_policy: invariant failed: %s (%s:%d)\n", #cond,      \
                    __FILE__, __LINE__);                                                           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const char config[] =
    "listeners:\n"
    "  - name: l\n"
    "    address: 127.0.0.1:1\n"
    "    routes:\n"
    "      - name: canary\n"
    "        match: { cookies: [{ name: user, value: tester }] }\n"
    "        cluster: up\n"
    "        subset: v2\n"
    "        fault: { abort: { http_status: 503, percentage: 100 } }\n"
    "      - name: limited\n"
    "        match: { prefix: /limited, headers: [{ name: x-user }] }\n"
    "        cluster: up\n"
    "        rate_limit: { requests_per_unit: 1, unit: hour, burst: 1, key: header,\n"
    "                      header: x-user, max_keys: 4 }\n"
    "      - name: moved\n"
    "        match: { prefix: /moved }\n"
    "        redirect: { prefix_rewrite: /new, scheme: https, port: 8443, response_code: 308 }\n"
    "      - name: static\n"
    "        match: { prefix: /static }\n"
    "        direct_response: { status: 200, body: hi, content_type: text/html }\n"
    "      - name: hashed\n"
    "        match: { prefix: /h }\n"
    "        cluster: ring\n"
    "        hash_policy: [{ cookie: session }, { query_parameter: k, terminal: true },\n"
    "                      { header: x-user }, { source_ip: true }]\n"
    "      - name: query\n"
    "        match: { prefix: /q, query_parameters: [{ name: v, prefix: \"1\" },\n"
    "                 { name: tag, regex: \"[a-z]{1,8}\" }, { name: no, present: false }] }\n"
    "        cluster: up\n"
    "        regex_rewrite: { pattern: \"^/q(/[^/]*)?\", substitution: \"/rx\\\\1\" }\n"
    "      - name: cors\n"
    "        match: { prefix: /cors }\n"
    "        cluster: up\n"
    "        cors: { allow_origins: [{ exact: \"https://a.example\" },\n"
    "                                { suffix: .b.example, ignore_case: true },\n"
    "                                { regex: \"https://c[0-9]{1,3}\\\\.example\" }, { contains: "
    "dd }],\n"
    "                allow_methods: \"*\", allow_headers: \"*\", expose_headers: x-e, max_age: "
    "1h,\n"
    "                allow_credentials: true, allow_private_network_access: true,\n"
    "                forward_not_matching_preflights: false }\n"
    "      - name: main\n"
    "        match: { prefix: /a }\n"
    "        prefix_rewrite: /r/\n"
    "        host_rewrite: backend.internal\n"
    "        weighted_clusters:\n"
    "          - { cluster: up, subset: v1, weight: 3 }\n"
    "          - { cluster: up, subset: v2, weight: 1 }\n"
    "        rate_limit: { requests_per_unit: 1000000000, key: client_ip, headers: true }\n"
    "        headers:\n"
    "          request:\n"
    "            set: { x-copy: \"%REQ(x-user)%\", x-client: "
    "\"%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%\" }\n"
    "            add: { x-start: \"%START_TIME% %PROTOCOL% 100%%\" }\n"
    "            remove: [x-drop]\n"
    "          response:\n"
    "            set: { x-up: \"%UPSTREAM_HOST%\" }\n"
    "            add: { x-code: \"%RESPONSE_CODE%\" }\n"
    "            remove: [server]\n"
    "clusters:\n"
    "  - name: ring\n"
    "    lb_policy: maglev\n"
    "    endpoints: [\"127.0.0.1:11\", \"127.0.0.1:12\", \"127.0.0.1:13\"]\n"
    "  - name: up\n"
    "    labeled_endpoints:\n"
    "      - { address: \"127.0.0.1:9\", labels: { v: \"1\" } }\n"
    "      - { address: \"127.0.0.1:10\", labels: { v: \"2\" } }\n"
    "    subsets: [{ name: v1, labels: { v: \"1\" } }, { name: v2, labels: { v: \"2\" } }]\n";

static struct proxy px;
static struct proxy_worker worker;
static struct proxy_rt *rt;
static struct proxy_dconn *dc;
static struct proxy_client client;
static struct proxy_endpoint ep;
static int replied; /* the status of the proxy's own answer (the fuzz codec's reply) */

static bool fz_can_reply(struct proxy_exch *ex)
{
    (void)ex;
    return true;
}

static void fz_reply(struct proxy_exch *ex, int status, struct sc_str body)
{
    replied = status;
    sc_buf_reset(&dc->out);
    CHECK(proxy_route_policy_write_local(ex, &dc->out, status, "text/plain", body, true) == 0);
}

/* The codec ops of the harness: a local answer is written as HTTP/1.1 would write it. */
static const struct proxy_down_ops fz_down = { .can_reply = fz_can_reply, .reply = fz_reply };

static void setup(void)
{
    static struct proxy_cfg cfg;
    char *err = NULL;
    sc_config_defaults(proxy_opts, &cfg);
    CHECK(sc_config_load_string(proxy_opts, &cfg, "fuzz", config, strlen(config), &err) == 0);
    CHECK(proxy_config_check(&cfg, &err) == 0);
    struct proxy_metrics *pm = &px.pm;
    pm->reg = sc_metrics_new();
    static const char *const rl[] = { "listener", "route", "cluster", "code", NULL };
    static const char *const lr[] = { "listener", "route", NULL };
    static const char *const ll[] = { "listener", NULL };
    static const char *const cl[] = { "cluster", NULL };
    pm->requests = sc_metrics_family(pm->reg, SC_METRIC_COUNTER, "r", "r", rl, NULL, 0);
    pm->duration = sc_metrics_family(pm->reg, SC_METRIC_HISTOGRAM, "d", "d", ll, NULL, 0);
    pm->retry = sc_metrics_family(pm->reg, SC_METRIC_COUNTER, "x", "x", cl, NULL, 0);
    pm->ucx_active = sc_metrics_family(pm->reg, SC_METRIC_GAUGE, "u", "u", cl, NULL, 0);
    pm->dcx_active = sc_metrics_family(pm->reg, SC_METRIC_GAUGE, "c", "c", ll, NULL, 0);
    pm->timeout = sc_metrics_family(pm->reg, SC_METRIC_COUNTER, "t", "t", cl, NULL, 0);
    pm->rate_limited = sc_metrics_family(pm->reg, SC_METRIC_COUNTER, "rl", "rl", lr, NULL, 0);
    pm->mirror = sc_metrics_family(pm->reg, SC_METRIC_COUNTER, "m", "m", cl, NULL, 0);
    pm->mirror_dropped = sc_metrics_family(pm->reg, SC_METRIC_COUNTER, "md", "md", cl, NULL, 0);
    px.nworkers = 1;
    worker.px = &px;
    proxy_worker_init(&worker);
    rt = proxy_rt_new(&cfg, 1, pm, &err);
    CHECK(rt != NULL);
    worker.rt = rt;
    dc = SC_NEW(struct proxy_dconn);
    dc->w = &worker;
    dc->ex.w = &worker;
    dc->ex.dc = dc;
    dc->cl = &client;
    dc->ex.cl = &client;
    sc_buf_init(&dc->out, 65536 + 8192);
    sc_buf_init(&dc->ex.head, 65536 + 8192);
    snprintf(client.ip, sizeof(client.ip), "192.0.2.7");
    ep.name = "127.0.0.1:9";
}

static const struct sc_http_header *only(const struct sc_http_msg *m, const char *name)
{
    size_t from = 0;
    const struct sc_http_header *h = sc_http1_find(m, sc_str_c(name), &from);
    if (h) {
        size_t again = from;
        CHECK(sc_http1_find(m, sc_str_c(name), &again) == NULL);
    }
    return h;
}

static void check_local(int status)
{
    struct sc_http_header h[64];
    struct sc_http_msg m = { .headers = h };
    struct sc_http_error err = { 0 };
    int rc = sc_http1_parse_response(dc->out.p, dc->out.len, 0, &sc_http1_default_limits, 0, &m, 64,
                                     &err);
    CHECK(rc > 0);
    CHECK(m.status == status);
    if (status == 429) {
        CHECK(only(&m, "retry-after") != NULL);
        CHECK(only(&m, "x-ratelimit-limit") != NULL);
        CHECK(sc_str_eq(only(&m, "x-ratelimit-remaining")->value, SC_STR("0")));
    }
}

static void check_upstream_head(const struct sc_http_msg *in, struct sc_str origin)
{
    struct proxy_exch *r = &dc->ex;
    struct sc_http_header h[MAX_HEADERS + 16];
    struct sc_http_msg m = { .headers = h };
    struct sc_http_error err = { 0 };
    struct sc_http_limits lim = sc_http1_default_limits;
    lim.max_head = 65536 + 8192;        /* the upstream head's cap: the client's head plus ours */
    lim.max_headers = MAX_HEADERS + 16; /* the client's fields plus the proxy's own */
    int rc = sc_http1_parse_request(r->head.p, r->head.len, 0, &lim, &m, MAX_HEADERS + 16, &err);
    CHECK(rc > 0 && (size_t)rc == r->head.len);
    CHECK(only(&m, "host") != NULL);
    if (strcmp(r->route->name, "query") == 0 && origin.len && origin.p[0] == '/') {
        CHECK(sc_str_startswith(m.target, SC_STR("/rx")));
    }
    if (strcmp(r->route->name, "main") != 0) {
        return;
    }
    CHECK(sc_str_eq(only(&m, "host")->value, SC_STR("backend.internal")));
    CHECK(sc_http1_find(&m, SC_STR("x-drop"), NULL) == NULL);
    const struct sc_http_header *user = sc_http1_find(in, SC_STR("x-user"), NULL);
    const struct sc_http_header *copy = only(&m, "x-copy");
    CHECK(copy != NULL);
    CHECK(sc_str_eq(copy->value, user ? sc_str_trim(user->value) : SC_STR("")));
    CHECK(sc_str_eq(only(&m, "x-client")->value, SC_STR("192.0.2.7")));
    CHECK(sc_http1_find(&m, SC_STR("x-start"), NULL) != NULL);
    if (!r->is_connect && origin.len && origin.p[0] == '/') {
        CHECK(sc_str_startswith(m.target, SC_STR("/r")));
    }
    CHECK(r->subset != NULL && r->subset->n == 1);
}

/* The response to a CORS request from an allowed <origin>: upstream's Access-Control-Allow-Origin
 * replaced by the origin, and one Vary: Origin. */
static void check_cors_response(const struct sc_http_msg *m, struct sc_str origin)
{
    if (strcmp(dc->ex.route->name, "cors") != 0) {
        return;
    }
    const struct sc_http_header *vary = only(m, "vary");
    CHECK(vary && sc_str_eq(vary->value, SC_STR("Origin")));
    const struct sc_http_header *acao = only(m, "access-control-allow-origin");
    if (dc->ex.pol.cors && dc->ex.pol.cors->allowed) {
        CHECK(acao && sc_str_eq(acao->value, origin));
        CHECK(sc_str_eq(only(m, "access-control-expose-headers")->value, SC_STR("x-e")));
    } else {
        CHECK(acao && sc_str_eq(acao->value, SC_STR("spoof")));
    }
}

/* A preflight the policy answered: 200, empty, the origin echoed when allowed, the requested
 * method echoed ("*"), Vary. */
static void check_preflight(const struct sc_http_msg *req)
{
    CHECK(replied == 200 && strcmp(dc->ex.route->name, "cors") == 0);
    struct sc_http_header h[64];
    struct sc_http_msg m = { .headers = h };
    struct sc_http_error err = { 0 };
    CHECK(sc_http1_parse_response(dc->out.p, dc->out.len, 0, &sc_http1_default_limits, 0, &m, 64,
                                  &err) > 0);
    CHECK(m.status == 200 && (dc->ex.flags & F_CORS));
    const struct sc_http_header *acao = only(&m, "access-control-allow-origin");
    const struct sc_http_header *o = sc_http1_find(req, SC_STR("origin"), NULL);
    CHECK(!acao || sc_str_eq(acao->value, o->value));
    const struct sc_http_header *acam = only(&m, "access-control-allow-methods");
    const struct sc_http_header *acrm =
        sc_http1_find(req, SC_STR("access-control-request-method"), NULL);
    CHECK(acam && sc_str_eq(acam->value, acrm->value));
    CHECK(only(&m, "vary") != NULL);
}

static void check_response_head(struct sc_str origin)
{
    static const char up[] = "HTTP/1.1 200 OK\r\nServer: x\r\nX-Up: spoof\r\n"
                             "Access-Control-Allow-Origin: spoof\r\nContent-Length: 0\r\n\r\n";
    struct sc_http_header uh[16];
    struct sc_http_msg um = { .headers = uh };
    struct sc_http_error err = { 0 };
    CHECK(sc_http1_parse_response(up, sizeof(up) - 1, 0, &sc_http1_default_limits, 0, &um, 16,
                                  &err) > 0);
    struct proxy_exch *r = &dc->ex;
    r->status = 200;
    r->rbody = B_LENGTH;
    r->ep = &ep;
    sc_buf_reset(&dc->out);
    CHECK(proxy_build_resp_head(r, &um, &dc->out, false) == 0);
    struct sc_http_header h[64];
    struct sc_http_msg m = { .headers = h };
    CHECK(sc_http1_parse_response(dc->out.p, dc->out.len, 0, &sc_http1_default_limits, 0, &m, 64,
                                  &err) > 0);
    if (strcmp(r->route->name, "main") == 0) {
        CHECK(sc_http1_find(&m, SC_STR("server"), NULL) == NULL);
        CHECK(sc_str_eq(only(&m, "x-up")->value, SC_STR("127.0.0.1:9")));
        CHECK(sc_str_eq(only(&m, "x-code")->value, SC_STR("200")));
        CHECK(only(&m, "x-ratelimit-limit") != NULL);
    }
    check_cors_response(&m, origin);
}

/* A route that answers itself: the direct response as configured; the redirect's Location one
 * header line of visible ASCII, https on port 8443 with the rewritten prefix, and the answer a
 * response the strict parser accepts with exactly that Location. */
static void check_answer(struct proxy_exch *r, const struct sc_http_msg *req, struct sc_str origin)
{
    struct sc_buf hb;
    sc_buf_init(&hb, 16384);
    struct sc_str body;
    const char *ctype = NULL;
    unsigned flags = 0;
    int status = proxy_route_action_answer(r, req, origin, &hb, &body, &ctype, &flags);
    if (strcmp(r->route->name, "static") == 0) {
        CHECK(status == 200 && flags == (unsigned)F_DR && hb.len == 0);
        CHECK(sc_str_eq(body, SC_STR("hi")) && strcmp(ctype, "text/html") == 0);
        sc_buf_cleanup(&hb);
        return;
    }
    CHECK(strcmp(r->route->name, "moved") == 0);
    if (status == 414 || status == 400) {
        CHECK(flags == (unsigned)F_DPE && hb.len == 0);
        sc_buf_cleanup(&hb);
        return;
    }
    CHECK(status == 308 && flags == (unsigned)F_RD && body.len == 0);
    static const char pre[] = "Location: https://";
    CHECK(hb.len > sizeof(pre) + 1 && memcmp(hb.p, pre, sizeof(pre) - 1) == 0);
    CHECK(hb.p[hb.len - 2] == '\r' && hb.p[hb.len - 1] == '\n');
    for (size_t i = 0; i < hb.len - 2; i++) {
        CHECK(hb.p[i] >= 0x20 && hb.p[i] < 0x7f);
    }
    struct sc_str loc = sc_str_n(hb.p + 10, hb.len - 12);
    const char *slash = memchr(loc.p + 8, '/', loc.len - 8);
    CHECK(slash && slash - loc.p >= 5 && memcmp(slash - 5, ":8443", 5) == 0);
    CHECK(loc.p + loc.len - slash >= 4 && memcmp(slash, "/new", 4) == 0);
    r->reply_headers = sc_str_n(hb.p, hb.len);
    sc_buf_reset(&dc->out);
    CHECK(proxy_route_policy_write_local(r, &dc->out, status, "text/plain", SC_STR_NULL, true) ==
          0);
    r->reply_headers = SC_STR_NULL;
    struct sc_http_header h[64];
    struct sc_http_msg m = { .headers = h };
    struct sc_http_error err = { 0 };
    CHECK(sc_http1_parse_response(dc->out.p, dc->out.len, 0, &sc_http1_default_limits, 0, &m, 64,
                                  &err) > 0);
    CHECK(m.status == 308 && sc_str_eq(only(&m, "location")->value, loc));
    sc_buf_cleanup(&hb);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        setup();
        ready = true;
    }
    struct sc_http_header hdrs[MAX_HEADERS];
    struct sc_http_msg m = { .headers = hdrs };
    struct sc_http_error err = { 0 };
    struct sc_http_limits lim = sc_http1_default_limits;
    int rc = sc_http1_parse_request((const char *)data, size, 0, &lim, &m, MAX_HEADERS, &err);
    if (rc <= 0) {
        return 0;
    }
    struct proxy_exch *r = &dc->ex;
    struct sc_buf head = r->head;
    proxy_cors_release(r); /* the last input's */
    memset(r, 0, sizeof(*r));
    r->down = &fz_down;
    replied = 0;
    r->w = &worker;
    r->dc = dc;
    r->cl = dc->cl;
    r->head = head;
    sc_buf_reset(&r->head);
    r->rt = rt;
    r->lsn = &rt->listeners[0];
    r->start_ns = uv_hrtime();
    r->minor = m.minor_version;
    r->keep_alive = m.keep_alive;
    r->is_connect = sc_str_eq(m.method, SC_STR("CONNECT"));
    r->upgrade = m.upgrade && !r->is_connect;
    r->body = m.body == SC_HTTP_BODY_LENGTH    ? B_LENGTH
              : m.body == SC_HTTP_BODY_CHUNKED ? B_CHUNKED
                                               : B_NONE;
    struct sc_str origin;
    struct sc_str path = proxy_target_path(m.target, &origin);
    struct proxy_route *found = NULL;
    for (size_t i = 0; i < r->lsn->nroutes && !found; i++) {
        if (proxy_route_matches(&r->lsn->routes[i], &m, path, worker.md)) {
            found = &r->lsn->routes[i];
        }
    }
    if (!found) {
        return 0;
    }
    r->route = found;
    r->cluster = found->cluster;
    if (found->pol && found->pol->nhash) {
        /* the request's hash is a function of the request alone */
        uint64_t h1 = 0, h2 = 1;
        bool a = proxy_hash_request(found->pol->hash, found->pol->nhash, &m, "192.0.2.7", &h1);
        bool b = proxy_hash_request(found->pol->hash, found->pol->nhash, &m, "192.0.2.7", &h2);
        CHECK(a && b && h1 == h2); /* source_ip always has a value */
    }
    int status = 0;
    const char *why = NULL;
    unsigned flags = 0;
    int act = proxy_route_policy_request(r, &m, &status, &why, &flags);
    if (act == PROXY_ROUTE_POL_DONE) {
        check_preflight(&m);
        return 0;
    }
    if (act == PROXY_ROUTE_POL_ACTION) {
        check_answer(r, &m, origin);
        return 0;
    }
    if (act != PROXY_ROUTE_POL_GO) {
        CHECK(strcmp(found->name, "main") != 0);
        CHECK(status == 429 || status == 503);
        CHECK(flags == (status == 429 ? (unsigned)F_RL : (unsigned)F_FI));
        sc_buf_reset(&dc->out);
        CHECK(proxy_route_policy_write_local(r, &dc->out, status, "text/plain", sc_str_c(why),
                                             true) == 0);
        check_local(status);
        return 0;
    }
    CHECK(strcmp(found->name, "canary") != 0); /* that route aborts every request */
    if (proxy_build_req_head(r, &m, origin) == 0) {
        check_upstream_head(&m, origin);
    }
    const struct sc_http_header *oh = sc_http1_find(&m, SC_STR("origin"), NULL);
    check_response_head(oh ? oh->value : SC_STR_NULL);
    return 0;
}

// SPDX-License-Identifier: Apache-2.0
// gRPC semantics on the exchange (contracts in proxy_conn.h): the call's deadline from
// grpc-timeout (capped by the route's timeout, the forwarded value reduced to what remains at
// each try), the status of an upstream answer (grpc-status in the head, in trailers, or mapped
// from an HTTP status when the upstream gave none), retries on gRPC statuses, and the
// observability of a call (grpc_status, message counts, sidecar_grpc_* metrics).
//
// Invariant: nothing here buffers a message. Messages are counted from their 5-byte
// length-prefix as the bytes stream past (a few bytes of state per direction), and the trailer
// section's grpc-status is matched by a small state machine over the chunked framing, so a call
// of any length costs the same fixed state. Everything read here came from a peer: lengths are
// never trusted beyond counting, and grpc-status values outside 0..16 are not a status.
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/metrics.h"
#include "core/value.h"
#include "roles/proxy/proxy_conn.h"
#include "roles/proxy/proxy_h2.h"
#include "roles/proxy/proxy_policy.h"

/* The highest status code gRPC defines (UNAUTHENTICATED). */
#define GRPC_MAX_CODE 16

static const char *const code_names[GRPC_MAX_CODE + 1] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

void proxy_grpc_metrics_init(struct proxy_metrics *pm)
{
    static const char *const lc[] = { "listener", "cluster", NULL };
    static const char *const lcc[] = { "listener", "cluster", "grpc_code", NULL };
    pm->grpc_responses = sc_metrics_family(
        pm->reg, SC_METRIC_COUNTER, "sidecar_grpc_responses_total",
        "gRPC calls (requests with content-type application/grpc) by the status their client was "
        "given: the upstream's grpc-status (in the head or the trailers), one mapped from an HTTP "
        "status the upstream sent without grpc-status, or the proxy's own (no route, timeout, "
        "...). Calls that ended without any status (reset) are not counted.",
        lcc, NULL, 0);
    pm->grpc_req_msgs =
        sc_metrics_family(pm->reg, SC_METRIC_COUNTER, "sidecar_grpc_request_messages_total",
                          "gRPC messages clients sent upstream (length-prefixed messages counted "
                          "as they pass; a streaming call counts each).",
                          lc, NULL, 0);
    pm->grpc_resp_msgs =
        sc_metrics_family(pm->reg, SC_METRIC_COUNTER, "sidecar_grpc_response_messages_total",
                          "gRPC messages upstreams sent to clients.", lc, NULL, 0);
}

const char *proxy_grpc_code_name(int code)
{
    return code >= 0 && code <= GRPC_MAX_CODE ? code_names[code] : "UNKNOWN";
}

/* A duration option that may be unset (NULL). */
static int duration_check(void *field, char **err)
{
    const char *s = *(char **)field;
    uint64_t ms;
    if (s && sc_value_parse_duration(s, &ms) < 0) {
        *err = sc_asprintf("\"%s\" is not a duration (e.g. 250ms, 30s, 0s)", s);
        return SC_ECONFIG;
    }
    return 0;
}

const struct sc_opt proxy_grpc_route_opts[] = {
    { .name = "timeout_max",
      .type = SC_OPT_STR,
      .offset = offsetof(struct proxy_grpc_route_cfg, timeout_max),
      .help = "the most a call's grpc-timeout may give it (Envoy's "
              "max_stream_duration.grpc_timeout_header_max); unset: the route's timeout; 0s: no "
              "cap",
      .check = duration_check },
    { .name = "timeout_offset",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct proxy_grpc_route_cfg, timeout_offset_ms),
      .def = "0s",
      .help = "taken off a call's grpc-timeout, so the proxy's deadline passes first (Envoy's "
              "grpc_timeout_header_offset); a call left with none ends at once" },
    { 0 },
};

void proxy_grpc_route_init(struct proxy_route *r, const struct proxy_grpc_route_cfg *c)
{
    r->grpc_timeout_max_ms = r->timeout_ms;
    if (c->timeout_max && sc_value_parse_duration(c->timeout_max, &r->grpc_timeout_max_ms) < 0) {
        r->grpc_timeout_max_ms = r->timeout_ms; /* checked at load */
    }
    r->grpc_timeout_offset_ms = c->timeout_offset_ms;
}

/* ---- message counting ---- */

void proxy_grpc_frames_feed(struct proxy_grpc_frames *f, const char *p, size_t n)
{
    while (n) {
        if (f->skip) {
            size_t k = n < f->skip ? n : f->skip;
            f->skip -= (uint32_t)k;
            p += k;
            n -= k;
            continue;
        }
        /* In a message's prefix: one byte of flags, four of big-endian length. */
        if (f->hpos == 0) {
            f->msgs++;
        } else {
            f->len = f->len << 8 | (unsigned char)*p;
        }
        f->hpos++;
        p++;
        n--;
        if (f->hpos == 5) {
            f->skip = f->len;
            f->hpos = 0;
            f->len = 0;
        }
    }
}

/* ---- grpc-status in a trailer section ---- */

/* Parses a grpc-status value: 1 or 2 digits, 0..16 (surrounding blanks allowed). Returns the
 * code or -1. */
static int parse_status(struct sc_str v)
{
    v = sc_str_trim(v);
    if (v.len < 1 || v.len > 2) {
        return -1;
    }
    int code = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.p[i] < '0' || v.p[i] > '9') {
            return -1;
        }
        code = code * 10 + (v.p[i] - '0');
    }
    return code <= GRPC_MAX_CODE ? code : -1;
}

int proxy_grpc_status_of(const struct sc_http_msg *m)
{
    const struct sc_http_header *h = sc_http1_find(m, SC_STR("grpc-status"), NULL);
    return h ? parse_status(h->value) : -1;
}

/* The state machine of proxy_grpc_tscan_feed: <pos> 0..13 bytes of "\ngrpc-status:" matched
 * (case-insensitively), 13 reading the value; <val> the digits so far (-1 none, -2 invalid). */
static const char tname[] = "\ngrpc-status:";
#define TS_VALUE ((uint8_t)(sizeof(tname) - 1))

void proxy_grpc_tscan_feed(struct proxy_grpc_tscan *t, struct sc_str span)
{
    for (size_t i = 0; i < span.len; i++) {
        char c = span.p[i];
        if (t->pos == TS_VALUE) {
            if (c == '\r' || c == '\n') {
                if (t->val >= 0 && t->val <= GRPC_MAX_CODE) {
                    t->code = (uint8_t)(t->val + 1);
                }
                t->pos = c == '\n' ? 1 : 0;
                continue;
            }
            if (c == ' ' || c == '\t') {
                continue;
            }
            if (c >= '0' && c <= '9' && t->val >= -1 && t->ndig < 2) {
                t->val = (int16_t)((t->val < 0 ? 0 : t->val * 10) + (c - '0'));
                t->ndig++;
            } else {
                t->val = -2;
            }
            continue;
        }
        char l = c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
        if (l == tname[t->pos]) {
            t->pos++;
            if (t->pos == TS_VALUE) {
                t->val = -1;
                t->ndig = 0;
            }
        } else {
            t->pos = c == '\n' ? 1 : 0;
        }
    }
}

void proxy_grpc_resp_framing(struct proxy_exch *ex, bool data, struct sc_str span)
{
    if (data) {
        proxy_grpc_frames_feed(&ex->gresp, span.p, span.len);
        ex->tscan.pos = 0;
        return;
    }
    proxy_grpc_tscan_feed(&ex->tscan, span);
    if (ex->tscan.code) {
        /* grpc-status in the trailers: the call's outcome */
        ex->grpc_status = ex->tscan.code;
    }
}

/* ---- the deadline ---- */

/* Writes <ms> into <o> (9 bytes) as a fixed-width grpc-timeout value: 8 digits and a unit, in
 * milliseconds while they fit, else seconds (rounded up) or hours. */
static void timeout_text(char *o, uint64_t ms)
{
    char unit = 'm';
    uint64_t v = ms;
    if (v > 99999999ULL) {
        v = (ms + 999) / 1000;
        unit = 'S';
        if (v > 99999999ULL) {
            v = (v + 3599) / 3600;
            unit = 'H';
            v = v > 99999999ULL ? 99999999ULL : v;
        }
    }
    for (int i = 7; i >= 0; i--) {
        o[i] = (char)('0' + v % 10);
        v /= 10;
    }
    o[8] = unit;
}

/* Finds the grpc-timeout field in the HTTP/1 head <b> and replaces its value with 9 bytes of
 * room (a fixed-width value is then written there at each try). Returns the value's offset, or
 * 0 when the head has no such field or cannot grow. */
static uint32_t head_make_room(struct sc_buf *b)
{
    static const char name[] = "grpc-timeout:";
    size_t nl = sizeof(name) - 1;
    const char *p = b->p, *end = b->p + b->len;
    const char *line = memchr(p, '\n', b->len); /* skip the request line */
    while (line && line + 1 < end) {
        const char *s = line + 1;
        const char *e = memchr(s, '\n', (size_t)(end - s));
        if (!e) {
            return 0;
        }
        if ((size_t)(e - s) > nl && sc_str_caseeq(sc_str_n(s, nl), sc_str_n(name, nl))) {
            size_t voff = (size_t)(s - b->p) + nl;
            size_t vend = (size_t)(e - b->p);
            if (vend > voff && b->p[vend - 1] == '\r') {
                vend--;
            }
            /* ": <value>" becomes ": " and 9 bytes */
            const char repl[] = " 000000000";
            size_t old = vend - voff, neu = sizeof(repl) - 1;
            if (neu > old && sc_buf_reserve(b, neu - old) < 0) {
                return 0;
            }
            memmove(b->p + voff + neu, b->p + vend, b->len - vend);
            memcpy(b->p + voff, repl, neu);
            b->len = b->len - old + neu;
            return (uint32_t)(voff + 1);
        }
        line = e;
    }
    return 0;
}

void proxy_grpc_route(struct proxy_exch *ex, const struct sc_http_msg *m)
{
    const struct sc_http_header *h = sc_http1_find(m, SC_STR("grpc-timeout"), NULL);
    uint64_t ms;
    if (!h || proxy_grpc_timeout_parse(h->value, &ms) < 0) {
        return; /* no deadline of the client's: the route's timeout applies as to any request */
    }
    uint64_t cap = ex->route->grpc_timeout_max_ms;
    if (cap && ms > cap) {
        ms = cap;
    }
    ms = ms > ex->route->grpc_timeout_offset_ms ? ms - ex->route->grpc_timeout_offset_ms : 0;
    uint64_t start_ms = uv_now(ex->w->loop);
    ex->grpc_deadline = start_ms + ms;
    ex->grpc_to_off = head_make_room(&ex->head);
    proxy_grpc_timeout_refresh(ex);
}

void proxy_grpc_timeout_refresh(struct proxy_exch *ex)
{
    if (!ex->grpc_to_off || ex->grpc_to_off + 9 > ex->head.len) {
        return;
    }
    uv_update_time(ex->w->loop);
    uint64_t now = uv_now(ex->w->loop);
    uint64_t left = ex->grpc_deadline > now ? ex->grpc_deadline - now : 1;
    timeout_text(ex->head.p + ex->grpc_to_off, left ? left : 1);
}

/* ---- the upstream's answer ---- */

/* Whether the route retries gRPC status <code>. */
static bool retries_code(const struct proxy_route *rt, int code)
{
    switch (code) {
    case PROXY_GRPC_CANCELLED:
        return (rt->retry_on & PROXY_RETRY_GRPC_CANCELLED) != 0;
    case PROXY_GRPC_DEADLINE_EXCEEDED:
        return (rt->retry_on & PROXY_RETRY_GRPC_DEADLINE) != 0;
    case PROXY_GRPC_INTERNAL:
        return (rt->retry_on & PROXY_RETRY_GRPC_INTERNAL) != 0;
    case PROXY_GRPC_RESOURCE_EXHAUSTED:
        return (rt->retry_on & PROXY_RETRY_GRPC_EXHAUSTED) != 0;
    case PROXY_GRPC_UNAVAILABLE:
        return (rt->retry_on & PROXY_RETRY_GRPC_UNAVAILABLE) != 0;
    default:
        return false;
    }
}

/* The trailers of a body that has no message: the bytes after the head <rest> are a chunked
 * body's last chunk and trailer section. Returns the grpc-status there (-1: none), -2 when the
 * body has data (the status comes too late to retry), -3 when more bytes are needed. */
static int empty_body_status(struct sc_str rest)
{
    /* "0" [extensions] CRLF, then fields, then CRLF */
    if (rest.len == 0) {
        return -3;
    }
    if (rest.p[0] != '0') {
        return -2; /* a chunk of data first */
    }
    size_t i = 1;
    while (i < rest.len && rest.p[i] == '0') {
        i++;
    }
    if (i < rest.len && rest.p[i] != '\r' && rest.p[i] != '\n' && rest.p[i] != ';') {
        return -2; /* "0a", "01": a chunk size that is not zero */
    }
    const char *eol = memchr(rest.p, '\n', rest.len);
    if (!eol) {
        return -3;
    }
    /* the section ends at an empty line */
    struct sc_str s = sc_str_n(eol, rest.len - (size_t)(eol - rest.p));
    const char *end = NULL;
    for (size_t k = 0; k + 1 < s.len; k++) {
        if (s.p[k] == '\n' &&
            (s.p[k + 1] == '\n' || (s.p[k + 1] == '\r' && k + 2 < s.len && s.p[k + 2] == '\n'))) {
            end = s.p + k + 1;
            break;
        }
    }
    if (!end) {
        return -3;
    }
    struct proxy_grpc_tscan t = { 0 };
    proxy_grpc_tscan_feed(&t, sc_str_n(s.p, (size_t)(end - s.p)));
    return t.code - 1;
}

int proxy_grpc_response(struct proxy_exch *ex, const struct sc_http_msg *m, struct sc_str rest,
                        uint32_t max_wait)
{
    int code = proxy_grpc_status_of(m);
    bool mapped = false;
    if (code < 0 && m->status != 200) {
        /* gRPC's table: what a client makes of an HTTP error without grpc-status */
        code = proxy_grpc_from_http(m->status);
        mapped = true;
    }
    bool may = (ex->route->retry_on & PROXY_RETRY_GRPC_ANY) != 0 &&
               proxy_may_retry(ex, COND_GRPC, PROXY_GRPC_OK);
    if (code < 0 && may && m->body == SC_HTTP_BODY_CHUNKED) {
        /* A 200 whose status may come in trailers before any message: wait for them to decide
         * whether to retry (bounded: the head's limit). */
        int t = empty_body_status(rest);
        if (t == -3) {
            return rest.len < max_wait ? PROXY_GRPC_WAIT : PROXY_GRPC_PASS;
        }
        code = t >= 0 ? t : -1;
    }
    if (code >= 0 && may && retries_code(ex->route, code) && proxy_breaker_retry(ex)) {
        ex->grpc_status = 0;
        return PROXY_GRPC_RETRY;
    }
    if (code >= 0) {
        ex->grpc_status = (uint8_t)(code + 1);
    }
    return mapped ? PROXY_GRPC_MAP : PROXY_GRPC_PASS;
}

/* ---- the end of the call ---- */

bool proxy_grpc_deadline_end(struct proxy_exch *ex)
{
    if (ex->gresp.hpos || ex->gresp.skip || ex->resp_done) {
        return false; /* mid-message: only a reset keeps the client from a truncated one */
    }
    if (!ex->down_h2) {
        /* An HTTP/1.1 client: trailers end the chunked body, between two chunks. */
        return proxy_h1_grpc_end(ex, PROXY_GRPC_DEADLINE_EXCEEDED, "gRPC deadline exceeded");
    }
    proxy_h2_grpc_end(ex->dc, PROXY_GRPC_DEADLINE_EXCEEDED, "gRPC deadline exceeded");
    ex->grpc_status = PROXY_GRPC_DEADLINE_EXCEEDED + 1;
    if (ex->uc) {
        proxy_uconn_close(ex->uc);
    }
    ex->resp_done = true;
    proxy_finish_request(ex);
    return true;
}

void proxy_grpc_finish(struct proxy_exch *ex)
{
    struct proxy_metrics *pm = &ex->w->px->pm;
    struct proxy_cluster *cl = ex->cluster ? ex->cluster : ex->route->cluster;
    const char *cname = cl ? cl->name : "";
    const char *lv[] = { ex->lsn->name, cname, NULL, NULL };
    if (ex->grpc_status) {
        lv[2] = proxy_grpc_code_name(ex->grpc_status - 1);
        sc_metrics_counter_inc(sc_metrics_get(pm->grpc_responses, lv));
    }
    lv[2] = NULL;
    if (ex->greq.msgs) {
        sc_metrics_counter_add(sc_metrics_get(pm->grpc_req_msgs, lv), ex->greq.msgs);
    }
    if (ex->gresp.msgs) {
        sc_metrics_counter_add(sc_metrics_get(pm->grpc_resp_msgs, lv), ex->gresp.msgs);
    }
}

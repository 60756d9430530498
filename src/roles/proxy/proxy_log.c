// SPDX-License-Identifier: Apache-2.0
// The proxy's access log (one JSON line per request on stdout, buffered per worker and written once
// per loop iteration) and its request metrics, whose series are looked up once and cached so the
// steady state neither locks nor allocates.
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/log.h"
#include "roles/proxy/proxy_conn.h"

static const char *flags_str(unsigned f, char *out, size_t cap)
{
    /* Indexed by bit; bit 10 (UO) is the circuit breakers'. */
    static const char *const names[] = { "UF",  "UT",  "URX", "UH", "UC", "DC", "NR",
                                         "UPE", "DPE", "SI",  "UO", "DI", "FI", "RL" };
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < SC_ARRAY_LEN(names); i++) {
        if (f & (1u << i)) {
            int n = snprintf(out + len, cap - len, "%s%s", len ? "," : "", names[i]);
            if (n < 0 || (size_t)n >= cap - len) {
                break;
            }
            len += (size_t)n;
        }
    }
    if (len == 0) {
        snprintf(out, cap, "-");
    }
    return out;
}

/* Writes the buffered access-log lines to stdout in one write(2) (lines are whole, so several
 * workers' writes never interleave within a line). */
void proxy_log_flush(struct proxy_worker *w)
{
    struct sc_buf *b = &w->logbuf;
    size_t off = 0;
    /* One worker writes everything at once. Several share stdout: a write to a pipe is atomic
     * only up to PIPE_BUF, so each write then holds whole lines and at most PIPE_BUF bytes. */
    bool shared = w->px->nworkers > 1;
    while (off < b->len) {
        size_t len = b->len - off;
        if (shared && len > PIPE_BUF) {
            const char *cut = memrchr(b->p + off, '\n', PIPE_BUF);
            len = cut ? (size_t)(cut - (b->p + off)) + 1 : len;
        }
        ssize_t n = write(STDOUT_FILENO, b->p + off, len);
        if (n <= 0) {
            break;
        }
        off += (size_t)n;
    }
    sc_buf_reset(b);
}

static void on_logcheck(uv_check_t *c)
{
    struct proxy_worker *w = c->data;
    proxy_log_flush(w);
    uv_check_stop(c);
}

void proxy_access_log(struct proxy_dconn *dc, double dur)
{
    struct proxy_worker *w = dc->w;
    struct proxy_req *r = &dc->req;
    time_t now = time(NULL);
    if ((uint64_t)now != w->date_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(w->date, sizeof(w->date), "%Y-%m-%dT%H:%M:%SZ", &tm);
        w->date_sec = (uint64_t)now;
    }
    char flags[64], path[600], ua[16];
    size_t plen = 0, mlen = 0;
    sc_json_escape(path, sizeof(path), &plen, r->path, r->path_len);
    sc_json_escape(ua, sizeof(ua), &mlen, r->method, strlen(r->method));
    char rid[140];
    size_t rlen = 0;
    sc_json_escape(rid, sizeof(rid), &rlen, r->request_id, r->request_id_len);
    struct sc_buf *b = &w->logbuf;
    for (int i = 0; i < 2; i++) {
        size_t before = b->len;
        int rc = sc_buf_appendf(
            b,
            "{\"time\":\"%s\",\"listener\":\"%s\",\"method\":\"%.*s\",\"path\":\"%.*s\","
            "\"protocol\":\"HTTP/1.%d\",\"status\":%d,\"bytes_in\":%llu,\"bytes_out\":%llu,"
            "\"duration_ms\":%.3f,\"upstream_ms\":%.3f,\"retries\":%d,\"route\":\"%s\","
            "\"cluster\":\"%s\",\"endpoint\":\"%s\",\"request_id\":\"%.*s\","
            "\"flags\":\"%s\",\"peer\":\"%s\"}\n",
            w->date, r->lsn->name, (int)mlen, ua, (int)plen, path, r->minor, r->status,
            (unsigned long long)r->bytes_in, (unsigned long long)r->bytes_out, dur * 1e3,
            (double)r->upstream_total_ns / 1e6, r->retries, r->route->name,
            r->cluster ? r->cluster->name : (r->route->cluster ? r->route->cluster->name : ""),
            r->ep ? r->ep->name : "", (int)rlen, rid, flags_str(r->flags, flags, sizeof(flags)),
            dc->peer);
        if (rc == 0) {
            break;
        }
        b->len = before;
        proxy_log_flush(w);
    }
    if (!uv_is_active((uv_handle_t *)&w->logcheck)) {
        uv_check_start(&w->logcheck, on_logcheck);
    }
}

void proxy_count_request(struct proxy_dconn *dc, double dur)
{
    struct proxy_req *r = &dc->req;
    int code = r->status;
    if (code < 100 || code > 599) {
        code = 0;
    }
    struct proxy_route *rt = r->route;
    /* A weighted route caches series per destination (their cluster label differs). */
    _Atomic(struct sc_metric *) *codes = r->codes ? r->codes : rt->codes;
    struct proxy_cluster *cl = r->codes && r->cluster ? r->cluster : rt->cluster;
    size_t idx = code ? (size_t)(code - 100) : 0;
    struct sc_metric *m = code ? atomic_load_explicit(&codes[idx], memory_order_acquire) : NULL;
    if (!m) {
        char cs[8];
        snprintf(cs, sizeof(cs), "%d", code);
        const char *lv[] = { r->lsn->name, rt->name, cl ? cl->name : "", cs };
        m = sc_metric_get(dc->w->px->pm.requests, lv);
        if (code) {
            atomic_store_explicit(&codes[idx], m, memory_order_release);
        }
    }
    sc_counter_inc(m);
    sc_histogram_observe(r->lsn->m_duration, dur);
}

// SPDX-License-Identifier: Apache-2.0
// The proxy's access log (one JSON line per request on stdout, buffered per worker and written once
// per loop iteration) and its request metrics, whose series are looked up once and cached so the
// steady state neither locks nor allocates. The log never blocks a worker: writes are non-blocking,
// what a slow reader does not take waits in the worker's bounded buffer, and a line that does not
// fit is dropped and counted in sidecar_access_log_dropped_total.
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "roles/proxy/proxy_conn.h"

static const char *flags_str(unsigned f, char *out, size_t cap)
{
    static const char *const names[] = { "UF",   "UT",   "URX", "UH", "UC", "DC",  "NR",
                                         "UPE",  "DPE",  "SI",  "UO", "DI", "FI",  "RL",
                                         "RBAC", "UAEX", "DR",  "RD", "LH", "CORS" };
    size_t len = 0;
    for (size_t i = 0; i < SC_ARRAY_LEN(names); i++) {
        if (f & (1u << i)) {
            size_t n = strlen(names[i]);
            if (len + (len ? 1 : 0) + n + 1 > cap) {
                break;
            }
            if (len) {
                out[len++] = ',';
            }
            memcpy(out + len, names[i], n);
            len += n;
        }
    }
    if (len == 0) {
        out[len++] = '-';
    }
    out[len] = '\0';
    return out;
}

/* A write the reader was not ready for is retried after this long (or at the next loop
 * iteration that logs a request). */
#define LOG_RETRY_MS 20
/* At exit, how long a slow reader may take the last lines before they are dropped. */
#define LOG_FINISH_MS 1000

void proxy_log_open(struct proxy *px)
{
    struct stat st;
    px->log_fd = STDOUT_FILENO;
    px->log_sock = false;
    if (fstat(STDOUT_FILENO, &st) < 0) {
        return;
    }
    if (S_ISSOCK(st.st_mode)) {
        px->log_sock = true;
    } else if (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode)) {
        /* A description of our own: O_NONBLOCK on stdout's would reach every process sharing
         * it (a shell, the container runtime's other writers). */
        int fd = open("/proc/self/fd/1", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd >= 0) {
            px->log_fd = fd;
        } else {
            sc_warn("access log: cannot reopen stdout without blocking; writes may block",
                    SC_LERR(-errno));
        }
    }
}

void proxy_log_close(struct proxy *px)
{
    if (px->log_fd > STDERR_FILENO) {
        close(px->log_fd);
    }
    px->log_fd = STDOUT_FILENO;
}

static ssize_t log_write(const struct proxy *px, const char *p, size_t n)
{
    if (px->log_sock) {
        return send(px->log_fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    }
    return write(px->log_fd, p, n);
}

/* Counts the whole lines in p[0..n) as dropped. */
static void count_dropped(struct proxy_worker *w, const char *p, size_t n)
{
    size_t lines = 0;
    for (const char *q = p; (q = memchr(q, '\n', n - (size_t)(q - p))) != NULL; q++) {
        lines++;
    }
    if (lines) {
        sc_metrics_counter_add(w->px->pm.log_dropped, lines);
    }
}

static void on_logtimer(uv_timer_t *t)
{
    proxy_log_flush(t->data);
}

/* Writes buffered lines without blocking. Returns 0 when the buffer is empty, 1 when the reader
 * took only part (the rest stays buffered). Several workers share stdout: a write to a pipe is
 * atomic only up to PIPE_BUF, so each write then holds whole lines and at most PIPE_BUF bytes
 * (atomic also means all or nothing in non-blocking mode: lines never interleave). */
static int log_write_some(struct proxy_worker *w)
{
    struct sc_buf *b = &w->logbuf;
    size_t off = 0;
    bool shared = w->px->nworkers > 1;
    int rc = 0;
    while (off < b->len) {
        size_t len = b->len - off;
        if (shared && len > PIPE_BUF) {
            const char *cut = memrchr(b->p + off, '\n', PIPE_BUF);
            len = cut ? (size_t)(cut - (b->p + off)) + 1 : len;
        }
        ssize_t n = log_write(w->px, b->p + off, len);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            rc = 1;
            break;
        }
        /* The log is gone (EPIPE, EIO...): what is left is dropped, and counted. */
        count_dropped(w, b->p + off, b->len - off);
        off = b->len;
    }
    if (off == b->len) {
        sc_buf_reset(b);
        if (b->cap > 65536) {
            sc_buf_cleanup(b); /* a burst grew it: give the memory back */
        }
    } else {
        sc_buf_consume(b, off);
    }
    return rc;
}

void proxy_log_flush(struct proxy_worker *w)
{
    if (log_write_some(w) == 1) {
        if (w->logtimer.loop && !uv_is_closing((uv_handle_t *)&w->logtimer) &&
            !uv_is_active((uv_handle_t *)&w->logtimer)) {
            uv_timer_start(&w->logtimer, on_logtimer, LOG_RETRY_MS, 0);
        }
    } else if (w->logtimer.loop) {
        uv_timer_stop(&w->logtimer);
    }
}

void proxy_log_finish(struct proxy_worker *w)
{
    uint64_t deadline = uv_hrtime() + (uint64_t)LOG_FINISH_MS * 1000000;
    while (log_write_some(w) == 1) {
        uint64_t now = uv_hrtime();
        if (now >= deadline) {
            count_dropped(w, w->logbuf.p, w->logbuf.len);
            sc_buf_reset(&w->logbuf);
            break;
        }
        struct pollfd pfd = { .fd = w->px->log_fd, .events = POLLOUT };
        (void)poll(&pfd, 1, (int)((deadline - now) / 1000000) + 1);
    }
    if (w->logtimer.loop) {
        uv_close((uv_handle_t *)&w->logtimer, NULL);
    }
    uv_close((uv_handle_t *)&w->logcheck, NULL);
}

static void on_logcheck(uv_check_t *c)
{
    struct proxy_worker *w = c->data;
    uv_check_stop(c);
    if (!uv_is_active((uv_handle_t *)&w->logtimer)) {
        proxy_log_flush(w); /* else the reader is slow: the timer retries */
    }
}

const char *proxy_log_flags(unsigned f, char *out, size_t cap)
{
    return flags_str(f, out, cap);
}

/* Appends the decimal digits of <v> at <w>; returns the end. */
static char *put_u64(char *w, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[sizeof(tmp) - ++n] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    memcpy(w, tmp + sizeof(tmp) - n, n);
    return w + n;
}

/* Appends <us> microseconds as milliseconds with three decimals ("12.345"). */
static char *put_ms(char *w, uint64_t us)
{
    w = put_u64(w, us / 1000);
    unsigned f = (unsigned)(us % 1000);
    w[0] = '.';
    w[1] = (char)('0' + f / 100);
    w[2] = (char)('0' + f / 10 % 10);
    w[3] = (char)('0' + f % 10);
    return w + 4;
}

static char *put_s(char *w, const char *s, size_t n)
{
    memcpy(w, s, n);
    return w + n;
}

#define PUT_LIT(w, s) put_s((w), (s), sizeof(s) - 1)

void proxy_access_log(struct proxy_exch *r, double dur)
{
    struct proxy_worker *w = r->w;
    time_t now = time(NULL);
    if ((uint64_t)now != w->date_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(w->date, sizeof(w->date), "%Y-%m-%dT%H:%M:%SZ", &tm);
        w->date_sec = (uint64_t)now;
    }
    char flags[64], path[600], ua[16];
    size_t plen = 0, mlen = 0;
    sc_json_escape(path, sizeof(path), &plen, r->path_len ? r->path : "", r->path_len);
    sc_json_escape(ua, sizeof(ua), &mlen, r->method, strlen(r->method));
    char rid[140];
    size_t rlen = 0;
    sc_json_escape(rid, sizeof(rid), &rlen, r->request_id, r->request_id_len);
    const char *lsn = r->lsn->name, *route = r->route->name;
    const char *cluster =
        r->cluster ? r->cluster->name : (r->route->cluster ? r->route->cluster->name : "");
    const char *ep = r->ep ? r->ep->name : "";
    size_t datel = strlen(w->date), lsnl = strlen(lsn), routel = strlen(route);
    size_t clusterl = strlen(cluster), epl = strlen(ep), peerl = strlen(r->cl->ip);
    flags_str(r->flags, flags, sizeof(flags));
    size_t flagsl = strlen(flags);
    char principal[512], rprincipal[512];
    size_t prl = 0, rprl = 0;
    if (r->request_principal) {
        sc_json_escape(rprincipal, sizeof(rprincipal), &rprl, r->request_principal,
                       strlen(r->request_principal));
    }
    struct sc_str tlsv = SC_STR_NULL;
    if (r->cl->tls) {
        struct sc_str pr = proxy_tls_peer_principal(r);
        sc_json_escape(principal, sizeof(principal), &prl, pr.p, pr.len);
        tlsv = proxy_tls_version(r);
        if (tlsv.len > 16) {
            tlsv.len = 16;
        }
    }
    /* The line is formatted by hand (printf's float formatting cost more than the rest of the
     * request): the fixed text is under 300 bytes, each number under 21. */
    size_t need = 340 + 6 * 21 + datel + lsnl + mlen + plen + routel + clusterl + epl + rlen +
                  flagsl + peerl + prl + rprl + tlsv.len + 110 +
                  (r->authz_policy ? strlen(r->authz_policy) : 0) +
                  (r->authz_audit ? strlen(r->authz_audit) : 0) +
                  (r->authz_dry_run ? strlen(r->authz_dry_run) : 0) + (r->grpc ? 120 : 0);
    struct sc_buf *b = &w->logbuf;
    if (sc_buf_reserve(b, need) < 0) {
        proxy_log_flush(w); /* makes room if the reader takes some now */
        if (sc_buf_reserve(b, need) < 0) {
            sc_metrics_counter_inc(
                w->px->pm.log_dropped); /* full: the line is dropped, never waited on */
            return;
        }
    }
    char *o = b->p + b->len;
    o = PUT_LIT(o, "{\"time\":\"");
    o = put_s(o, w->date, datel);
    o = PUT_LIT(o, "\",\"listener\":\"");
    o = put_s(o, lsn, lsnl);
    o = PUT_LIT(o, "\",\"method\":\"");
    o = put_s(o, ua, mlen);
    o = PUT_LIT(o, "\",\"path\":\"");
    o = put_s(o, path, plen);
    if (r->down_h2) {
        o = PUT_LIT(o, "\",\"protocol\":\"HTTP/2");
    } else {
        o = PUT_LIT(o, "\",\"protocol\":\"HTTP/1.");
        *o++ = r->minor ? '1' : '0';
    }
    o = PUT_LIT(o, "\",\"status\":");
    if (r->status < 0) {
        *o++ = '-';
    }
    o = put_u64(o, (uint64_t)(r->status < 0 ? -(int64_t)r->status : r->status));
    o = PUT_LIT(o, ",\"bytes_in\":");
    o = put_u64(o, r->bytes_in);
    o = PUT_LIT(o, ",\"bytes_out\":");
    o = put_u64(o, r->bytes_out);
    o = PUT_LIT(o, ",\"duration_ms\":");
    o = put_ms(o, dur > 0 ? (uint64_t)(dur * 1e6 + 0.5) : 0);
    o = PUT_LIT(o, ",\"upstream_ms\":");
    o = put_ms(o, (r->upstream_total_ns + 500) / 1000);
    o = PUT_LIT(o, ",\"retries\":");
    o = put_u64(o, r->retries > 0 ? (uint64_t)r->retries : 0);
    o = PUT_LIT(o, ",\"route\":\"");
    o = put_s(o, route, routel);
    o = PUT_LIT(o, "\",\"cluster\":\"");
    o = put_s(o, cluster, clusterl);
    o = PUT_LIT(o, "\",\"endpoint\":\"");
    o = put_s(o, ep, epl);
    o = PUT_LIT(o, "\",\"request_id\":\"");
    o = put_s(o, rid, rlen);
    o = PUT_LIT(o, "\",\"flags\":\"");
    o = put_s(o, flags, flagsl);
    o = PUT_LIT(o, "\",\"peer\":\"");
    o = put_s(o, r->cl->ip, peerl);
    if (r->cl->tls) {
        /* TLS connections add the client's identity and the protocol version. */
        o = PUT_LIT(o, "\",\"peer_principal\":\"");
        o = put_s(o, principal, prl);
        o = PUT_LIT(o, "\",\"tls_version\":\"");
        o = put_s(o, tlsv.p, tlsv.len);
    }
    if (r->request_principal) {
        o = PUT_LIT(o, "\",\"request_principal\":\"");
        o = put_s(o, rprincipal, rprl);
    }
    if (r->authz_policy || r->authz_audit || r->authz_dry_run) {
        /* Policy names are checked at load to need no escaping. */
        o = PUT_LIT(o, "\",\"authz_policy\":\"");
        o = put_s(o, r->authz_policy ? r->authz_policy : "",
                  r->authz_policy ? strlen(r->authz_policy) : 0);
        if (r->authz_audit) {
            o = PUT_LIT(o, "\",\"authz_audit\":\"");
            o = put_s(o, r->authz_audit, strlen(r->authz_audit));
        }
        if (r->authz_dry_run) {
            o = PUT_LIT(o, "\",\"authz_dry_run\":\"");
            o = put_s(o, r->authz_dry_run, strlen(r->authz_dry_run));
            o = r->authz_dry_denied ? PUT_LIT(o, "\",\"authz_dry_run_result\":\"denied")
                                    : PUT_LIT(o, "\",\"authz_dry_run_result\":\"allowed");
        }
    }
    if (r->grpc) {
        /* gRPC calls, last: the status the client was given (null: none, the call was reset)
         * and the messages each way. */
        o = PUT_LIT(o, "\",\"grpc_status\":");
        if (r->grpc_status) {
            o = put_u64(o, (uint64_t)(r->grpc_status - 1));
        } else {
            o = PUT_LIT(o, "null");
        }
        o = PUT_LIT(o, ",\"grpc_request_messages\":");
        o = put_u64(o, r->greq.msgs);
        o = PUT_LIT(o, ",\"grpc_response_messages\":");
        o = put_u64(o, r->gresp.msgs);
        o = PUT_LIT(o, "}\n");
    } else {
        o = PUT_LIT(o, "\"}\n");
    }
    b->len = (size_t)(o - b->p);
    if (!uv_is_active((uv_handle_t *)&w->logcheck)) {
        uv_check_start(&w->logcheck, on_logcheck);
    }
}

void proxy_log_line(struct proxy_worker *w, const char *line, size_t n)
{
    struct sc_buf *b = &w->logbuf;
    if (sc_buf_reserve(b, n) < 0) {
        proxy_log_flush(w);
        if (sc_buf_reserve(b, n) < 0) {
            sc_metrics_counter_inc(w->px->pm.log_dropped);
            return;
        }
    }
    memcpy(b->p + b->len, line, n);
    b->len += n;
    if (!uv_is_active((uv_handle_t *)&w->logcheck)) {
        uv_check_start(&w->logcheck, on_logcheck);
    }
}

void proxy_count_request(struct proxy_exch *r, double dur)
{
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
        m = sc_metrics_get(r->w->px->pm.requests, lv);
        if (code) {
            atomic_store_explicit(&codes[idx], m, memory_order_release);
        }
    }
    sc_metrics_counter_inc(m);
    sc_metrics_histogram_observe(r->lsn->m_duration, dur);
}

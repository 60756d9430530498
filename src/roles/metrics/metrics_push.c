// SPDX-License-Identifier: Apache-2.0
// Pushing, for where nothing scrapes us: to a Pushgateway (the whole output PUT or POSTed under
// the job/instance grouping key on an interval, and once more at shutdown so a Job's final values
// are not lost) and to a Prometheus remote_write 1.0 receiver (a WriteRequest encoded by hand,
// snappy-compressed, sent in order from a bounded queue; 5xx, 429 and network errors are retried
// with exponential backoff, other 4xx dropped, the oldest batch dropped when the queue is full).
// Both take their samples from the same snapshots as the exposition endpoint, and send through
// metrics_call_send: a plain http:// receiver without libcurl, https and proxies with it.
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/template.h"
#include "core/error.h"
#include "core/log.h"
#include "core/snappy.h"
#include "roles/metrics/metrics.h"

/* ---- Pushgateway ---- */

struct metrics_push {
    struct metrics_role *m;
    uv_timer_t timer;
    struct metrics_waiter waiter;
    bool collecting;
    struct metrics_call *call;
    struct sc_buf body;
    char *url;
    int method;
    uint64_t timeout_ms;
    bool stopping, final_started, final_waiting, done;
    bool retired; /* replaced by a reload: frees itself once its timer has closed */
    struct sc_metric *m_ok, *m_fail;
};

static bool unreserved(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

int metrics_push_group(struct sc_buf *b, const char *key, const char *value)
{
    size_t n = strlen(value);
    if (n == 0 || memchr(value, '/', n)) {
        /* The Pushgateway's @base64 form uses the URL-safe alphabet. */
        int rc = sc_buf_appendf(b, "/%s@base64/", key);
        size_t from = b->len;
        if (rc == 0 && n == 0) {
            rc = sc_buf_append(b, "=", 1); /* its spelling of empty base64 */
        } else if (rc == 0) {
            rc = sc_template_base64_encode(b, value, n);
        }
        for (size_t i = from; rc == 0 && i < b->len; i++) {
            b->p[i] = b->p[i] == '+' ? '-' : b->p[i] == '/' ? '_' : b->p[i];
        }
        return rc;
    }
    int rc = sc_buf_appendf(b, "/%s/", key);
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (unreserved(value[i])) {
            rc = sc_buf_append(b, &value[i], 1);
        } else {
            rc = sc_buf_appendf(b, "%%%02X", (unsigned char)value[i]);
        }
    }
    return rc;
}

/* Pushgateway refuses samples with timestamps: render the output without them. */
static int render_untimed(const struct metrics_prom_set *s, struct sc_buf *out)
{
    for (size_t i = 0; i < s->nfams; i++) {
        const struct metrics_prom_family *f = s->fams[i];
        if (f->nsamples == 0) {
            continue;
        }
        struct metrics_prom_family copy = *f;
        copy.samples = sc_reallocarray(NULL, f->nsamples, sizeof(*copy.samples));
        memcpy(copy.samples, f->samples, f->nsamples * sizeof(*copy.samples));
        for (size_t k = 0; k < f->nsamples; k++) {
            copy.samples[k].has_ts = false;
        }
        int rc = metrics_prom_render_family(&copy, METRICS_PROM_FMT_TEXT, out);
        sc_free(copy.samples);
        if (rc) {
            return rc;
        }
    }
    return 0;
}

static void push_finish(struct metrics_push *p);
static void push_now(struct metrics_push *p);

static void on_timer_closed(uv_handle_t *h)
{
    struct metrics_push *p = h->data;
    if (p->retired) {
        metrics_push_free(p);
        return;
    }
    metrics_role_push_done(p->m);
}

static void push_finish(struct metrics_push *p)
{
    if (p->done) {
        return;
    }
    p->done = true;
    uv_close((uv_handle_t *)&p->timer, on_timer_closed);
}

static void on_pushed(void *arg, const struct sc_egress_resp *resp)
{
    struct metrics_push *p = arg;
    p->call = NULL;
    if (resp->error || resp->status < 200 || resp->status > 299) {
        sc_metrics_counter_inc(p->m_fail);
        sc_warn("pushgateway push failed", SC_LS("url", p->url), SC_LI("status", resp->status),
                SC_LS("reason",
                      resp->error ? (resp->error_msg ? resp->error_msg : "") : "unexpected status"),
                SC_LSN("body", resp->body.p, resp->body.len > 512 ? 512 : resp->body.len));
    } else {
        sc_metrics_counter_inc(p->m_ok);
        sc_debug("pushed to pushgateway", SC_LS("url", p->url), SC_LU("bytes", p->body.len));
    }
    if (p->stopping && p->final_waiting) {
        /* The push in flight at SIGTERM is done: now the final one, with fresh values. It is
         * sent only now so that it cannot reach the Pushgateway before the older one. */
        p->final_waiting = false;
        push_now(p);
        return;
    }
    if (p->stopping && p->final_started) {
        push_finish(p);
    }
}

static void on_push_snapshot(void *arg, struct metrics_snapshot *snap)
{
    struct metrics_push *p = arg;
    p->collecting = false;
    sc_buf_reset(&p->body);
    size_t est = metrics_prom_render_estimate(&snap->out);
    (void)sc_buf_reserve(&p->body, est < p->body.max ? est : p->body.max);
    if (render_untimed(&snap->out, &p->body) != 0) {
        sc_warn("pushgateway: output over max_response_bytes, not pushed");
        if (p->stopping) {
            push_finish(p);
        }
        return;
    }
    static const struct sc_kv hdr[] = {
        { .key = "Content-Type", .value = "text/plain; version=0.0.4; charset=utf-8" },
    };
    struct sc_egress_req req = {
        .method = p->method == 1 ? "POST" : "PUT",
        .url = p->url,
        .headers = hdr,
        .nheaders = 1,
        .body = p->body.p,
        .body_len = p->body.len,
        .timeout_ms = p->timeout_ms,
    };
    int rc = metrics_call_send(p->m, &req, on_pushed, p, &p->call);
    if (rc) {
        sc_warn("pushgateway push not started", SC_LERR(rc));
        if (p->stopping) {
            push_finish(p);
        }
    }
}

static void push_now(struct metrics_push *p)
{
    if (p->collecting || p->call) {
        return; /* the previous push is still going: skip this tick */
    }
    p->collecting = true;
    metrics_collect(p->m, &p->waiter, on_push_snapshot, p);
}

static void on_push_timer(uv_timer_t *t)
{
    push_now(t->data);
}

int metrics_push_start(struct metrics_role *m, struct metrics_push **out, char **err)
{
    const struct metrics_push_cfg *pc = &m->cfg->pushgateway;
    const char *base = m->conf->push_url;
    struct metrics_push *p = SC_NEW(struct metrics_push);
    p->m = m;
    p->method = pc->method;
    p->timeout_ms = pc->timeout_ms;
    sc_buf_init(&p->body, m->cfg->max_response_bytes);
    struct sc_buf u;
    sc_buf_init(&u, 8192);
    size_t l = strlen(base);
    while (l && base[l - 1] == '/') {
        l--;
    }
    int rc = sc_buf_append(&u, base, l);
    rc |= sc_buf_append_cstr(&u, "/metrics");
    rc |= metrics_push_group(&u, "job", pc->job ? pc->job : "sidecar");
    if (pc->instance) {
        rc |= metrics_push_group(&u, "instance", pc->instance);
    }
    if (rc) {
        sc_buf_cleanup(&u);
        sc_buf_cleanup(&p->body);
        sc_free(p);
        *err = sc_asprintf("pushgateway: URL too long");
        return SC_ECONFIG;
    }
    p->url = sc_strdup(sc_buf_cstr(&u));
    sc_buf_cleanup(&u);
    static const char *const res[] = { "result", NULL };
    struct sc_metric_family *f =
        sc_metrics_family(sc_app_metrics(m->app), SC_METRIC_COUNTER, "sidecar_metrics_pushes_total",
                          "Pushes to the Pushgateway, by result.", res, NULL, 0);
    p->m_ok = sc_metrics_get(f, (const char *const[]){ "ok" });
    p->m_fail = sc_metrics_get(f, (const char *const[]){ "error" });
    uv_timer_init(m->loop, &p->timer);
    p->timer.data = p;
    uv_timer_start(&p->timer, on_push_timer, 0, pc->interval_ms);
    *out = p;
    return 0;
}

/* Cancels the collection and the transfer in flight, if any: their callbacks will not run. */
static void cancel_inflight(struct metrics_push *p)
{
    if (p->collecting) {
        metrics_collect_cancel(&p->waiter);
        p->collecting = false;
    }
    if (p->call) {
        metrics_call_cancel(p->call);
        p->call = NULL;
    }
}

void metrics_push_stop(struct metrics_push *p, bool now)
{
    if (!p) {
        return;
    }
    p->stopping = true;
    uv_timer_stop(&p->timer);
    if (now) {
        cancel_inflight(p);
        push_finish(p);
        return;
    }
    if (p->final_started) {
        return;
    }
    p->final_started = true;
    if (p->call) {
        p->final_waiting = true; /* on_pushed starts the final push */
        return;
    }
    if (!p->collecting) {
        push_now(p);
    }
}

void metrics_push_retire(struct metrics_push *p)
{
    if (!p) {
        return;
    }
    p->retired = true;
    p->stopping = true;
    uv_timer_stop(&p->timer);
    cancel_inflight(p);
    if (p->done) {
        return; /* its timer is closing already: the close callback frees it */
    }
    push_finish(p);
}

void metrics_push_free(struct metrics_push *p)
{
    if (!p) {
        return;
    }
    sc_buf_cleanup(&p->body);
    sc_free(p->url);
    sc_free(p);
}

/* ---- remote_write ---- */

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static int put_varint(struct sc_buf *b, uint64_t v)
{
    unsigned char tmp[10];
    size_t n = 0;
    while (v >= 0x80) {
        tmp[n++] = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    tmp[n++] = (unsigned char)v;
    return sc_buf_append(b, tmp, n);
}

static int put_bytes(struct sc_buf *b, unsigned char tag, struct sc_str s)
{
    int rc = sc_buf_append(b, &tag, 1);
    rc |= put_varint(b, s.len);
    rc |= sc_buf_append(b, s.p, s.len);
    return rc;
}

static size_t label_msg_len(const struct metrics_prom_label *l)
{
    return 1 + varint_len(l->name.len) + l->name.len + 1 + varint_len(l->value.len) + l->value.len;
}

static int cmp_label(const void *a, const void *b)
{
    const struct metrics_prom_label *x = a, *y = b;
    size_t n = x->name.len < y->name.len ? x->name.len : y->name.len;
    int c = memcmp(x->name.p, y->name.p, n);
    if (c) {
        return c;
    }
    return x->name.len < y->name.len ? -1 : x->name.len > y->name.len;
}

/* MetricMetadata.MetricType of prompb/types.proto for a family type. */
static uint64_t rw_type(enum metrics_prom_type t)
{
    switch (t) {
    case METRICS_PROM_COUNTER:
        return 1;
    case METRICS_PROM_GAUGE:
        return 2;
    case METRICS_PROM_HISTOGRAM:
        return 3;
    case METRICS_PROM_GAUGEHISTOGRAM:
        return 4;
    case METRICS_PROM_SUMMARY:
        return 5;
    case METRICS_PROM_INFO:
        return 6;
    case METRICS_PROM_STATESET:
        return 7;
    default:
        return 0; /* UNKNOWN */
    }
}

int metrics_rw_encode(const struct metrics_prom_set *out, int64_t now_ms, struct sc_buf *buf)
{
    struct metrics_prom_label *lb = NULL;
    size_t cap = 0;
    int rc = 0;
    for (size_t i = 0; i < out->nfams && rc == 0; i++) {
        const struct metrics_prom_family *f = out->fams[i];
        for (size_t k = 0; k < f->nsamples && rc == 0; k++) {
            const struct metrics_prom_sample *sm = &f->samples[k];
            size_t n = sm->nlabels + 1;
            if (n > cap) {
                cap = n * 2;
                lb = sc_reallocarray(lb, cap, sizeof(*lb));
            }
            lb[0].name = SC_STR("__name__");
            lb[0].value = sm->name;
            if (sm->nlabels) {
                memcpy(lb + 1, sm->labels, sm->nlabels * sizeof(*lb));
            }
            qsort(lb, n, sizeof(*lb), cmp_label);
            int64_t ts = sm->has_ts ? sm->ts_ms : now_ms;
            size_t sample_len = 1 + 8 + 1 + varint_len((uint64_t)ts);
            size_t ts_len = 1 + varint_len(sample_len) + sample_len;
            for (size_t j = 0; j < n; j++) {
                size_t ll = label_msg_len(&lb[j]);
                ts_len += 1 + varint_len(ll) + ll;
            }
            rc |= sc_buf_append(buf, "\x0a", 1);
            rc |= put_varint(buf, ts_len);
            for (size_t j = 0; j < n; j++) {
                rc |= sc_buf_append(buf, "\x0a", 1);
                rc |= put_varint(buf, label_msg_len(&lb[j]));
                rc |= put_bytes(buf, 0x0a, lb[j].name);
                rc |= put_bytes(buf, 0x12, lb[j].value);
            }
            rc |= sc_buf_append(buf, "\x12", 1);
            rc |= put_varint(buf, sample_len);
            unsigned char d[9];
            d[0] = 0x09;
            uint64_t bits;
            memcpy(&bits, &sm->value, 8);
            for (int q = 0; q < 8; q++) {
                d[1 + q] = (unsigned char)(bits >> (8 * q));
            }
            rc |= sc_buf_append(buf, d, 9);
            rc |= sc_buf_append(buf, "\x10", 1);
            rc |= put_varint(buf, (uint64_t)ts);
        }
    }
    sc_free(lb);
    /* The families' metadata (WriteRequest field 3), as Prometheus sends it: a receiver that
     * keeps it shows the TYPE, HELP and UNIT of what it stores. */
    for (size_t i = 0; i < out->nfams && rc == 0; i++) {
        const struct metrics_prom_family *f = out->fams[i];
        if (f->nsamples == 0) {
            continue;
        }
        uint64_t type = rw_type(f->type);
        size_t len = (type ? 1 + varint_len(type) : 0) + 1 + varint_len(f->name.len) + f->name.len;
        if (f->has_help && f->help.len) {
            len += 1 + varint_len(f->help.len) + f->help.len;
        }
        if (f->unit.len) {
            len += 1 + varint_len(f->unit.len) + f->unit.len;
        }
        rc |= sc_buf_append(buf, "\x1a", 1);
        rc |= put_varint(buf, len);
        if (type) {
            rc |= sc_buf_append(buf, "\x08", 1);
            rc |= put_varint(buf, type);
        }
        rc |= put_bytes(buf, 0x12, f->name);
        if (f->has_help && f->help.len) {
            rc |= put_bytes(buf, 0x22, f->help);
        }
        if (f->unit.len) {
            rc |= put_bytes(buf, 0x2a, f->unit);
        }
    }
    return rc ? SC_ETOOBIG : 0;
}

struct batch {
    struct sc_list link;
    char *data;
    size_t len;
    int attempts;
};

struct metrics_rw {
    struct metrics_role *m;
    struct metrics_conf *conf;      /* its settings (a reference), swapped by a reload */
    struct metrics_conf *xfer_conf; /* the one the request in flight borrows strings from */
    bool retired;                   /* removed by a reload: frees itself once closed */
    uv_timer_t tick;
    uv_timer_t backoff;
    int handles;
    struct metrics_waiter waiter;
    bool collecting;
    struct sc_list queue;
    size_t queued;
    struct metrics_call *call;
    bool backing_off;
    bool stopping, final_started, done;
    struct sc_buf enc;
    struct sc_metric *m_sent, *m_failed, *m_dropped, *m_retries, *m_queue;
};

static void rw_send(struct metrics_rw *w);

static void rw_check_done(struct metrics_rw *w);

static void on_rw_closed(uv_handle_t *h)
{
    struct metrics_rw *w = h->data;
    if (--w->handles == 0) {
        if (w->retired) {
            metrics_rw_free(w);
            return;
        }
        metrics_role_push_done(w->m);
    }
}

static void rw_close(struct metrics_rw *w)
{
    if (w->done) {
        return;
    }
    w->done = true;
    uv_close((uv_handle_t *)&w->tick, on_rw_closed);
    uv_close((uv_handle_t *)&w->backoff, on_rw_closed);
}

static void batch_free(struct batch *b)
{
    sc_free(b->data);
    sc_free(b);
}

static void rw_pop(struct metrics_rw *w)
{
    struct batch *b = sc_list_entry(w->queue.next, struct batch, link);
    sc_list_remove(&b->link);
    batch_free(b);
    w->queued--;
    sc_metrics_gauge_set(w->m_queue, (double)w->queued);
}

static void on_backoff(uv_timer_t *t)
{
    struct metrics_rw *w = t->data;
    w->backing_off = false;
    rw_send(w);
}

static void on_rw_sent(void *arg, const struct sc_egress_resp *resp)
{
    struct metrics_rw *w = arg;
    w->call = NULL;
    metrics_conf_unref(w->xfer_conf);
    w->xfer_conf = NULL;
    struct batch *b = sc_list_entry(w->queue.next, struct batch, link);
    const struct metrics_rw_cfg *rc = &w->conf->cfg.remote_write;
    bool ok = !resp->error && resp->status >= 200 && resp->status <= 299;
    bool retry = resp->error || resp->status >= 500 || resp->status == 429;
    if (ok) {
        sc_metrics_counter_inc(w->m_sent);
        rw_pop(w);
        rw_send(w);
        return;
    }
    sc_warn("remote_write failed", SC_LS("url", w->conf->rw_url), SC_LI("status", resp->status),
            SC_LS("reason", resp->error ? (resp->error_msg ? resp->error_msg : "") : "status"),
            SC_LSN("body", resp->body.p, resp->body.len > 512 ? 512 : resp->body.len),
            SC_LB("retry", retry && !w->stopping && b->attempts <= rc->max_retries));
    if (!retry || b->attempts > rc->max_retries || w->stopping) {
        sc_metrics_counter_inc(w->m_failed);
        rw_pop(w);
        rw_send(w);
        return;
    }
    sc_metrics_counter_inc(w->m_retries);
    uint64_t delay = rc->min_backoff_ms;
    for (int i = 1; i < b->attempts && delay < rc->max_backoff_ms; i++) {
        delay *= 2;
    }
    if (delay > rc->max_backoff_ms) {
        delay = rc->max_backoff_ms;
    }
    w->backing_off = true;
    uv_timer_start(&w->backoff, on_backoff, delay, 0);
}

static void rw_send(struct metrics_rw *w)
{
    if (w->call || w->backing_off || w->done) {
        return;
    }
    if (sc_list_empty(&w->queue)) {
        rw_check_done(w);
        return;
    }
    const struct metrics_rw_cfg *rc = &w->conf->cfg.remote_write;
    struct batch *b = sc_list_entry(w->queue.next, struct batch, link);
    b->attempts++;
    static const struct sc_kv hdr[] = {
        { .key = "Content-Encoding", .value = "snappy" },
        { .key = "Content-Type", .value = "application/x-protobuf" },
        { .key = "X-Prometheus-Remote-Write-Version", .value = "0.1.0" },
        { .key = "User-Agent", .value = "sidecar/" SC_VERSION },
    };
    struct sc_egress_req req = {
        .method = "POST",
        .url = w->conf->rw_url,
        .headers = hdr,
        .nheaders = SC_ARRAY_LEN(hdr),
        .body = b->data,
        .body_len = b->len,
        .timeout_ms = rc->timeout_ms,
        .bearer_token = rc->bearer_token,
        .basic_user = rc->basic_user,
        .basic_password = rc->basic_password,
    };
    int err = metrics_call_send(w->m, &req, on_rw_sent, w, &w->call);
    if (err == 0) {
        w->xfer_conf = w->conf; /* the request borrows its URL and credentials */
        metrics_conf_ref(w->xfer_conf);
    } else {
        sc_warn("remote_write not started", SC_LERR(err));
        sc_metrics_counter_inc(w->m_failed);
        rw_pop(w);
        rw_send(w);
    }
}

static void rw_check_done(struct metrics_rw *w)
{
    if (w->stopping && w->final_started && !w->collecting && !w->call && sc_list_empty(&w->queue)) {
        rw_close(w);
    }
}

static void on_rw_snapshot(void *arg, struct metrics_snapshot *snap)
{
    struct metrics_rw *w = arg;
    w->collecting = false;
    sc_buf_reset(&w->enc);
    if (metrics_rw_encode(&snap->out, snap->wall_ms, &w->enc) != 0) {
        sc_warn("remote_write: batch over max_response_bytes, dropped");
        sc_metrics_counter_inc(w->m_dropped);
        rw_check_done(w);
        return;
    }
    struct batch *b = SC_NEW(struct batch);
    b->data = sc_malloc(sc_snappy_bound(w->enc.len));
    if (sc_snappy_compress(w->enc.p, w->enc.len, b->data, &b->len) != 0) {
        batch_free(b);
        sc_metrics_counter_inc(w->m_dropped);
        rw_check_done(w);
        return;
    }
    if (w->queued >= (size_t)w->conf->cfg.remote_write.queue) {
        /* Keep the newest data: the oldest waiting batch (not the one in flight) goes. */
        struct sc_list *victim = w->queue.next;
        if (w->call || w->backing_off) {
            victim = victim->next;
        }
        if (victim != &w->queue) {
            sc_list_remove(victim);
            batch_free(sc_list_entry(victim, struct batch, link));
            w->queued--;
            sc_metrics_counter_inc(w->m_dropped);
        }
    }
    sc_list_append(&w->queue, &b->link);
    w->queued++;
    sc_metrics_gauge_set(w->m_queue, (double)w->queued);
    rw_send(w);
}

static void on_rw_tick(uv_timer_t *t)
{
    struct metrics_rw *w = t->data;
    if (w->collecting) {
        return;
    }
    w->collecting = true;
    metrics_collect(w->m, &w->waiter, on_rw_snapshot, w);
}

void metrics_rw_start(struct metrics_role *m, struct metrics_rw **out)
{
    struct metrics_rw *w = SC_NEW(struct metrics_rw);
    w->m = m;
    w->conf = m->conf;
    metrics_conf_ref(w->conf);
    sc_list_init(&w->queue);
    sc_buf_init(&w->enc, m->cfg->max_response_bytes);
    struct sc_metrics *r = sc_app_metrics(m->app);
    w->m_sent = sc_metrics_counter(r, "sidecar_remote_write_batches_sent_total",
                                   "Batches the remote_write receiver accepted.");
    w->m_failed = sc_metrics_counter(r, "sidecar_remote_write_batches_failed_total",
                                     "Batches given up on (4xx, retries exhausted, shutdown).");
    w->m_dropped = sc_metrics_counter(r, "sidecar_remote_write_batches_dropped_total",
                                      "Batches dropped because the queue was full.");
    w->m_retries = sc_metrics_counter(r, "sidecar_remote_write_retries_total",
                                      "Retries after 5xx, 429 or network errors.");
    w->m_queue =
        sc_metrics_gauge(r, "sidecar_remote_write_queue_batches", "Batches waiting to be sent.");
    uv_timer_init(m->loop, &w->tick);
    uv_timer_init(m->loop, &w->backoff);
    w->tick.data = w;
    w->backoff.data = w;
    w->handles = 2;
    uv_timer_start(&w->tick, on_rw_tick, 0, m->cfg->remote_write.interval_ms);
    *out = w;
}

void metrics_rw_stop(struct metrics_rw *w, bool now)
{
    if (!w) {
        return;
    }
    w->stopping = true;
    uv_timer_stop(&w->tick);
    if (now) {
        if (w->collecting) {
            metrics_collect_cancel(&w->waiter);
            w->collecting = false;
        }
        if (w->call) {
            metrics_call_cancel(w->call);
            w->call = NULL;
            metrics_conf_unref(w->xfer_conf);
            w->xfer_conf = NULL;
        }
        rw_close(w);
        return;
    }
    if (w->final_started) {
        return;
    }
    w->final_started = true;
    if (w->backing_off) {
        uv_timer_stop(&w->backoff);
        w->backing_off = false;
    }
    if (!w->collecting) {
        on_rw_tick(&w->tick);
    }
    rw_send(w);
}

void metrics_rw_reconfigure(struct metrics_rw *w, struct metrics_conf *conf)
{
    uint64_t old_interval = w->conf->cfg.remote_write.interval_ms;
    metrics_conf_ref(conf);
    metrics_conf_unref(w->conf);
    w->conf = conf;
    w->enc.max = conf->cfg.max_response_bytes;
    if (conf->cfg.remote_write.interval_ms != old_interval && !w->stopping) {
        uv_timer_start(&w->tick, on_rw_tick, conf->cfg.remote_write.interval_ms,
                       conf->cfg.remote_write.interval_ms);
    }
}

void metrics_rw_retire(struct metrics_rw *w)
{
    if (!w) {
        return;
    }
    if (w->done) {
        w->retired = true; /* closing already */
        return;
    }
    metrics_rw_stop(w, true);
    w->retired = true;
}

void metrics_rw_free(struct metrics_rw *w)
{
    if (!w) {
        return;
    }
    metrics_conf_unref(w->xfer_conf);
    metrics_conf_unref(w->conf);
    while (!sc_list_empty(&w->queue)) {
        struct batch *b = sc_list_entry(w->queue.next, struct batch, link);
        sc_list_remove(&b->link);
        batch_free(b);
    }
    sc_buf_cleanup(&w->enc);
    sc_free(w);
}

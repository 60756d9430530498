// SPDX-License-Identifier: Apache-2.0
// Outputs: each has its own queue of batches (sealed by count, bytes or time), sends several at
// once (max_in_flight, or fewer while adaptive concurrency finds what the backend takes), retries
// a failed batch with exponential backoff and jitter, or after the Retry-After the backend asked
// for, without holding back the batches behind it (forever, or up to a limit and then into a
// dead-letter file), and counts what it ships and drops. Batches may be acknowledged in any order;
// logs_ack.c turns that into the acknowledged sequence, which only covers a contiguous prefix of
// delivered batches, so positions never pass a batch that could still be lost. The queue's bytes
// (in-flight batches included) are capped by buffer_limit: the tailer stops reading while any
// output is at its cap, so a slow or dead backend leaves the backlog in the files, not in memory.
//
// Adaptive concurrency is a slow start followed by additive-increase, multiplicative-decrease on
// the request outcome, as TCP's congestion window: the limit starts at 1; a response whose
// round-trip time stays within 1.5x (+1 ms) of the mean, while sending had to wait for the limit,
// adds one (up to max_in_flight). In slow start every such response adds one, so the limit
// doubles per round trip; the first sign of congestion (a round-trip time over that bound, or a
// back-off) ends it, and from then on the limit grows by one per mean round-trip time at most. A
// 429, a 503, a timeout, a transport error, or a round-trip time over twice the mean (+5 ms) cuts
// it by a tenth (at least one), at most once per mean round-trip time, so that a burst of
// responses in flight counts once.
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/file.h"
#include "core/error.h"
#include "core/log.h"
#include "roles/logs/logs.h"

static uint64_t jitter_state;

static uint64_t rnd(void)
{
    if (!jitter_state) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        jitter_state = ((uint64_t)ts.tv_nsec << 16) ^ (uint64_t)getpid() ^ 0x9e3779b97f4a7c15ull;
    }
    jitter_state ^= jitter_state << 13;
    jitter_state ^= jitter_state >> 7;
    jitter_state ^= jitter_state << 17;
    return jitter_state;
}

static void pump(struct logs_out *o);

static void batch_free(struct logs_batch *b)
{
    if (!b) {
        return;
    }
    sc_buf_cleanup(&b->body);
    sc_buf_cleanup(&b->send);
    sc_free(b->items);
    sc_free(b->loki);
    sc_free(b->streams);
    sc_free(b);
}

static struct logs_batch *batch_new(struct logs_out *o)
{
    struct logs_batch *b = SC_NEW(struct logs_batch);
    sc_list_init(&b->node);
    b->out = o;
    /* One record may exceed batch_bytes; the per-output limit bounds it anyway. */
    sc_buf_init(&b->body, o->cfg->buffer_limit + o->lg->cfg->max_line_size * 6 + 65536);
    sc_buf_init(&b->send, o->cfg->buffer_limit * 2 + (64u << 20));
    b->items = sc_calloc((size_t)o->cfg->batch_count, sizeof(size_t));
    return b;
}

static void update_gauge(struct logs_out *o)
{
    sc_metrics_gauge_set(o->m.queue_bytes, (double)o->queue_bytes);
}

static void unqueue(struct logs_out *o, struct logs_batch *b)
{
    sc_list_remove(&b->node);
    o->queue_bytes -= o->queue_bytes >= b->body.len ? b->body.len : o->queue_bytes;
    update_gauge(o);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t stream_hash(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t k = 0; k < n; k++) {
        h = (h ^ (uint8_t)p[k]) * 0x100000001b3ull;
    }
    return h;
}

/* loki: notes the batch's streams (each item starts with its labels' JSON and a tab). Without
 * label_fields every record has the output's one set of labels: nothing to look at. */
static void note_streams(const struct logs_out *o, struct logs_batch *b)
{
    if (o->cfg->label_fields.n == 0 && o->labels_json) {
        b->streams = sc_calloc(1, sizeof(uint64_t));
        b->streams[0] = stream_hash(o->labels_json, strlen(o->labels_json));
        b->nstreams = 1;
        return;
    }
    b->streams = sc_calloc(b->nitems + 1, sizeof(uint64_t));
    size_t start = 0, n0 = 0, prev_len = 0;
    const char *prev = NULL;
    for (size_t i = 0; i < b->nitems; i++) {
        const char *p = b->body.p + start;
        const char *tab = memchr(p, '\t', b->items[i] - start);
        size_t n = tab ? (size_t)(tab - p) : b->items[i] - start;
        if (prev && n == prev_len && memcmp(p, prev, n) == 0) {
            start = b->items[i];
            continue; /* the same labels as the record before */
        }
        prev = p;
        prev_len = n;
        b->streams[n0++] = stream_hash(p, n);
        start = b->items[i];
    }
    qsort(b->streams, n0, sizeof(uint64_t), cmp_u64);
    size_t k = 0;
    for (size_t i = 0; i < n0; i++) {
        if (k == 0 || b->streams[k - 1] != b->streams[i]) {
            b->streams[k++] = b->streams[i];
        }
    }
    b->nstreams = k;
}

/* Whether <b> shares a stream with the sorted set <v>[<n>]. */
static bool shares_stream(const struct logs_batch *b, const uint64_t *v, size_t n)
{
    if (n == 0) {
        return false;
    }
    for (size_t i = 0; i < b->nstreams; i++) {
        if (bsearch(&b->streams[i], v, n, sizeof(uint64_t), cmp_u64)) {
            return true;
        }
    }
    return false;
}

static void seal(struct logs_out *o)
{
    struct logs_batch *b = o->building;
    if (!b) {
        return;
    }
    if (b->nitems == 0) {
        /* Only records that could not be encoded: nothing to send, they are acknowledged. */
        o->building = NULL;
        logs_ack_done(&o->ack, b->unit);
        batch_free(b);
        return;
    }
    o->building = NULL;
    /* A batch sealed early by its timer lowers the hint only slowly. */
    o->body_hint = b->body.len > o->body_hint - o->body_hint / 8 ? b->body.len
                                                                 : o->body_hint - o->body_hint / 8;
    uv_timer_stop(&o->batch_timer);
    /* Once a failure moved the queue to the spool, later batches follow it there (delivery
     * stays in order) until it has drained. */
    if (o->spool_fd >= 0 && o->spool_pending > 0 && sc_list_empty(&o->queue) &&
        logs_spool_append(o, b) == 0) {
        o->queue_bytes -= o->queue_bytes >= b->body.len ? b->body.len : o->queue_bytes;
        update_gauge(o);
        logs_ack_done(&o->ack, b->unit); /* durable: positions may move past it */
        batch_free(b);
    } else {
        if (o->cfg->type == LOGS_O_LOKI && o->cfg->ordered) {
            note_streams(o, b);
        }
        sc_list_append(&o->queue, &b->node);
    }
    pump(o);
}

static void on_batch_timer(uv_timer_t *t)
{
    seal(t->data);
}

void logs_out_flush(struct logs_out *o)
{
    seal(o);
}

bool logs_out_idle(const struct logs_out *o)
{
    /* Spooled batches are durable: a drain does not wait for them. */
    return sc_list_empty(&o->queue) && (!o->building || o->building->nitems == 0);
}

static const char digit_pairs[] =
    "00010203040506070809101112131415161718192021222324252627282930313233"
    "34353637383940414243444546474849505152535455565758596061626364656667"
    "6869707172737475767778798081828384858687888990919293949596979899";

/* Writes <v> in decimal to <out> (room for 10 digits); returns the end. Two digits a step, in
 * 32-bit arithmetic. */
static char *put_u32(char *out, uint32_t v)
{
    char tmp[10];
    size_t n = sizeof(tmp);
    while (v >= 100) {
        unsigned d = (v % 100) * 2;
        v /= 100;
        n -= 2;
        memcpy(tmp + n, digit_pairs + d, 2);
    }
    if (v >= 10) {
        n -= 2;
        memcpy(tmp + n, digit_pairs + v * 2, 2);
    } else {
        tmp[--n] = (char)('0' + v);
    }
    memcpy(out, tmp + n, sizeof(tmp) - n);
    return out + sizeof(tmp) - n;
}

/* Writes <lo> (below 10^9) as nine decimal digits, zeros first, to <out>; returns the end. */
static char *put_nanos(char *out, uint32_t lo)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* The first digit, then eight in one word: two halves of four digits in its 32-bit lanes
     * (the first half in the low lane, which is stored first), each split into two pairs of 16
     * bits and each pair into two bytes, by multiplying with fixed-point reciprocals that are
     * exact over these ranges (/100 below 10^4, /10 below 100) and never carry into the next
     * lane. */
    uint32_t low8 = lo % 100000000;
    out[0] = (char)('0' + lo / 100000000);
    uint64_t x = (uint64_t)(low8 / 10000) | (uint64_t)(low8 % 10000) << 32;
    uint64_t q = ((x * 10486) >> 20) & 0x0000007F0000007Full;
    x = q | (x - q * 100) << 16;
    q = ((x * 103) >> 10) & 0x000F000F000F000Full;
    x = q | (x - q * 10) << 8;
    x += 0x3030303030303030ull;
    memcpy(out + 1, &x, 8);
#else
    for (int i = 7; i >= 1; i -= 2) {
        memcpy(out + i, digit_pairs + (lo % 100) * 2, 2);
        lo /= 100;
    }
    out[0] = (char)('0' + lo);
#endif
    return out + 9;
}

/* Writes <v> in decimal to <out> (room for 20 digits); returns the end. A nanosecond time is
 * written as its seconds and nine digits of nanoseconds, each in 32-bit arithmetic. */
static char *put_u64(char *out, uint64_t v)
{
    if (v < 1000000000) {
        return put_u32(out, (uint32_t)v);
    }
    uint64_t hi = v / 1000000000;
    out = hi < 1000000000 ? put_u32(out, (uint32_t)hi) : put_u64(out, hi);
    return put_nanos(out, (uint32_t)(v % 1000000000));
}

/* <ns> as RFC 3339 UTC with nanoseconds into <out> (room for 40 bytes), NUL-terminated. The date
 * and time of day are formatted once per second and kept on <o>. */
static void ts_rfc3339(struct logs_out *o, int64_t ns, char *out)
{
    int64_t secs = ns / 1000000000, frac = ns % 1000000000;
    if (frac < 0) {
        frac += 1000000000;
        secs--;
    }
    if (!o->ts_valid || secs != o->ts_secs) {
        time_t t = (time_t)secs;
        gmtime_r(&t, &o->ts_tm);
        o->ts_prefix_len =
            strftime(o->ts_prefix, sizeof(o->ts_prefix), "%Y-%m-%dT%H:%M:%S", &o->ts_tm);
        o->ts_secs = secs;
        o->ts_valid = true;
        o->es_index_stale = true;
    }
    memcpy(out, o->ts_prefix, o->ts_prefix_len);
    char *p = out + o->ts_prefix_len;
    *p++ = '.';
    for (int i = 8; i >= 0; i--) {
        p[i] = (char)('0' + frac % 10);
        frac /= 10;
    }
    p[9] = 'Z';
    p[10] = 0;
}

/* Appends the JSON of <v> (compact, key order kept) to <b>. */
static int dump_json(struct sc_buf *b, json_t *v)
{
    size_t need = json_dumpb(v, NULL, 0, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    if (need == 0) {
        return -EINVAL;
    }
    int rc = sc_buf_reserve(b, need);
    if (rc < 0) {
        return rc;
    }
    json_dumpb(v, b->p + b->len, need, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    b->len += need;
    return 0;
}

/* Writes "\t<ts_ns>\t" to <p> (room for 32 bytes); returns the end (Loki entries are never before
 * 1970: a negative time is written as 0). Records of one second share their leading digits,
 * written once a second and stored as 16 bytes (the cache's size) from then on. */
static char *put_ts(struct logs_out *o, char *p, int64_t ns)
{
    uint64_t v = ns < 0 ? 0 : (uint64_t)ns;
    *p++ = '\t';
    if (v < 1000000000) {
        p = put_u64(p, v);
    } else {
        uint64_t secs = v / 1000000000;
        if (secs != o->loki_secs || !o->loki_secs_len) {
            o->loki_secs = secs;
            o->loki_secs_len = (size_t)(put_u64(o->loki_secs_text, secs) - o->loki_secs_text);
        }
        memcpy(p, o->loki_secs_text, sizeof(o->loki_secs_text));
        p = put_nanos(p + o->loki_secs_len, (uint32_t)(v - secs * 1000000000));
    }
    *p++ = '\t';
    return p;
}

/* Appends "\t<ts_ns>\t" (put_ts). */
static int append_ts(struct logs_out *o, struct sc_buf *b, int64_t ns)
{
    int rc = sc_buf_reserve(b, 32);
    if (rc == 0) {
        b->len = (size_t)(put_ts(o, b->p + b->len, ns) - b->p);
    }
    return rc;
}

/* A Loki record in a batch is "<labels JSON>\t<ts_ns>\t<line>\n", where <line> is either the
 * line as a JSON string (for loki_encoding json, which sends it as it is) or, for protobuf, which
 * sends the bytes, LOKI_RAW followed by the line's bytes unquoted. A JSON string never starts with
 * LOKI_RAW, so a batch read back from the spool after the encoding changed is still read right. */
static int encode_loki(struct logs_out *o, struct logs_batch *bt, const struct logs_rec *r)
{
    const struct logs_cfg *c = o->lg->cfg;
    struct sc_buf *b = &bt->body;
    struct logs_loki_item *it = &bt->loki[bt->nitems];
    size_t start = b->len;
    bool raw = o->cfg->loki_encoding == LOGS_LOKI_PROTOBUF, marked = false;
    int rc;
    it->ts = r->ts_ns < 0 ? 0 : r->ts_ns;
    if (o->cfg->label_fields.n == 0 && o->labels_json) {
        /* The same labels for every record: their JSON is made once, and the record's head
         * written in one go. */
        size_t ll = o->labels_json_len;
        rc = sc_buf_reserve(b, ll + 33);
        if (rc < 0) {
            return rc;
        }
        memcpy(b->p + b->len, o->labels_json, ll);
        char *p = put_ts(o, b->p + b->len + ll, r->ts_ns);
        if (raw) {
            *p++ = LOKI_RAW[0];
            marked = true;
        }
        b->len = (size_t)(p - b->p);
        it->labels_len = (uint32_t)ll;
        it->same = bt->nitems > 0;
        goto line;
    }
    json_t *labels = json_object();
    for (size_t i = 0; i < c->labels.n; i++) {
        json_object_set_new(labels, c->labels.v[i].key, json_string(c->labels.v[i].value));
    }
    for (size_t i = 0; i < o->cfg->label_fields.n; i++) {
        const struct logs_field *v = logs_ev_get(r->ev, sc_str_c(o->cfg->label_fields.v[i]));
        if (v && v->type == LOGS_V_STR) {
            json_object_set_new(labels, o->cfg->label_fields.v[i],
                                json_stringn_nocheck(v->val.len ? v->val.p : "", v->val.len));
        }
    }
    if (json_object_size(labels) == 0) {
        json_object_set_new(labels, "job", json_string("sidecar"));
    }
    size_t need = json_dumpb(labels, NULL, 0, JSON_COMPACT | JSON_SORT_KEYS);
    rc = sc_buf_reserve(b, need + 32);
    if (rc == 0) {
        json_dumpb(labels, b->p + b->len, need, JSON_COMPACT | JSON_SORT_KEYS);
        if (o->cfg->label_fields.n == 0) {
            o->labels_json = sc_strndup(b->p + b->len, need);
            o->labels_json_len = need;
        }
        /* The previous item's labels, when they are the same bytes. */
        size_t pstart = bt->nitems > 1 ? bt->items[bt->nitems - 2] : 0;
        it->same = bt->nitems > 0 && bt->loki[bt->nitems - 1].labels_len == need &&
                   memcmp(b->p + pstart, b->p + b->len, need) == 0;
        it->labels_len = (uint32_t)need;
        b->len += need;
        rc = append_ts(o, b, r->ts_ns);
    }
    json_decref(labels);
    if (rc < 0) {
        return rc;
    }
line:
    /* "<labels>\t<digits>\t" (and the mark) */
    it->ts_len = (uint16_t)(b->len - start - it->labels_len - 2 - marked);
    /* The line: the original text when the record is just a message, else the record's JSON. */
    const struct logs_field *msg = r->ev->live == 1 ? logs_ev_get(r->ev, SC_STR("message")) : NULL;
    bool plain = msg && msg->type == LOGS_V_STR;
    if (raw) {
        rc = marked ? 0 : sc_buf_append(b, LOKI_RAW, 1);
        if (rc == 0) {
            rc = plain ? sc_buf_append_str(b, msg->val)
                       : logs_ev_dump(b, r->ev, LOGS_ESC_JANSSON, NULL, NULL);
        }
    } else if (plain) {
        rc = logs_json_quote(b, msg->val, LOGS_ESC_JANSSON);
    } else {
        rc = logs_ev_dump_quoted(b, r->ev);
    }
    if (rc == 0) {
        rc = sc_buf_append(b, "\n", 1);
    }
    return rc;
}

static int encode_es(struct logs_out *o, struct sc_buf *b, const struct logs_rec *r)
{
    char ts[48];
    ts_rfc3339(o, r->ts_ns, ts);
    /* The index name can only change with the second; its action line only with the name (once
     * a day with the default pattern). */
    if (o->es_index_stale || !o->es_index) {
        char index[512];
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        /* The pattern is operator config (strftime only reads the struct tm). */
        size_t n = strftime(index, sizeof(index), o->cfg->index, &o->ts_tm);
#pragma GCC diagnostic pop
        if (n == 0) {
            return -EINVAL;
        }
        if (!o->es_index || strcmp(o->es_index, index) != 0) {
            json_t *act = json_pack("{s:{s:s}}", "create", "_index", index);
            struct sc_buf line;
            sc_buf_init(&line, sizeof(index) * 6 + 64);
            int rc = act ? dump_json(&line, act) : -EINVAL;
            json_decref(act);
            if (rc < 0) {
                sc_buf_cleanup(&line);
                return rc;
            }
            sc_free(o->es_index);
            sc_free(o->es_action);
            o->es_index = sc_strdup(index);
            o->es_action = sc_strndup(line.p, line.len);
            sc_buf_cleanup(&line);
        }
        o->es_index_stale = false;
    }
    int rc = sc_buf_append_cstr(b, o->es_action);
    if (rc == 0) {
        rc = sc_buf_append(b, "\n", 1);
    }
    if (rc < 0) {
        return rc;
    }
    struct logs_field at = { SC_STR("@timestamp"), sc_str_c(ts), LOGS_V_STR };
    rc = logs_ev_dump(b, r->ev, LOGS_ESC_JANSSON, NULL, &at);
    if (rc == 0) {
        rc = sc_buf_append(b, "\n", 1);
    }
    return rc;
}

static int encode(struct logs_out *o, struct logs_batch *bt, const struct logs_rec *r)
{
    struct sc_buf *b = &bt->body;
    switch (o->cfg->type) {
    case LOGS_O_LOKI:
        return encode_loki(o, bt, r);
    case LOGS_O_ES:
        return encode_es(o, b, r);
    default:
        break;
    }
    int rc;
    if (o->cfg->format == LOGS_F_RAW) {
        rc = sc_buf_append(b, r->raw.len ? r->raw.p : "", r->raw.len);
    } else if (o->cfg->timestamp_field && o->cfg->timestamp_field[0]) {
        char ts[48];
        ts_rfc3339(o, r->ts_ns, ts);
        struct logs_field tf = { sc_str_c(o->cfg->timestamp_field), sc_str_c(ts), LOGS_V_STR };
        rc = logs_ev_dump(b, r->ev, LOGS_ESC_JANSSON, &tf, NULL);
    } else {
        rc = logs_ev_dump(b, r->ev, logs_ev_style(r->ev), NULL, NULL);
    }
    if (rc == 0) {
        rc = sc_buf_append(b, "\n", 1);
    }
    return rc;
}

void logs_out_append(struct logs_out *o, const struct logs_rec *r)
{
    if (!o->building) {
        o->building = batch_new(o);
        o->building->unit = logs_ack_open(&o->ack);
        if (o->cfg->type == LOGS_O_LOKI) {
            o->building->loki =
                sc_reallocarray(NULL, (size_t)o->cfg->batch_count, sizeof(struct logs_loki_item));
        }
        /* Room for what the last batches held (half as much again: sizes vary), or for a full
         * batch at first, allocated at that size (not rounded up to a power of two), so that a
         * batch is not copied over and over as it grows; the pages are only touched as it
         * fills. */
        size_t want = o->body_hint ? o->body_hint + o->body_hint / 2 + 4096 : SIZE_MAX;
        size_t cap = o->cfg->batch_bytes + 65536;
        cap = cap < (8u << 20) ? cap : (8u << 20); /* larger batches grow as they fill */
        (void)sc_buf_reserve_exact(&o->building->body,
                                   want < cap ? want : cap); /* over max: none */
    }
    struct logs_batch *b = o->building;
    size_t before = b->body.len;
    int rc = encode(o, b, r);
    if (rc < 0) {
        b->body.len = before;
        sc_metrics_counter_inc(o->m.dropped_oversize);
        sc_warn("record dropped: cannot encode it for the output", SC_LS("output", o->name),
                SC_LERR(rc));
        logs_ack_skip(&o->ack, r->seq);
        return;
    }
    b->items[b->nitems++] = b->body.len;
    b->last_seq = r->seq;
    logs_ack_extend(&o->ack, r->seq);
    o->queue_bytes += b->body.len - before;
    update_gauge(o);
    if (b->nitems == 1 && o->cfg->batch_wait_ms) {
        uv_timer_start(&o->batch_timer, on_batch_timer, o->cfg->batch_wait_ms, 0);
    }
    if (b->nitems >= (size_t)o->cfg->batch_count || b->body.len >= o->cfg->batch_bytes ||
        o->cfg->batch_wait_ms == 0) {
        seal(o);
    }
}

static bool is_http(const struct logs_out *o)
{
    return o->cfg->type != LOGS_O_FILE && o->cfg->type != LOGS_O_STDOUT;
}

static void on_retry_timer(uv_timer_t *t)
{
    pump(t->data);
}

/* Starts <b>: the HTTP outputs call logs_out_done from their response; file and stdout write
 * now and call it before returning. */
static void start(struct logs_out *o, struct logs_batch *b)
{
    b->in_flight = true;
    o->inflight++;
    if (is_http(o)) {
        logs_http_send(o, b);
        return;
    }
    int rc = sc_file_write_all(o->fd, b->body.p, b->body.len);
    if (rc < 0) {
        sc_warn("output write failed", SC_LS("output", o->name), SC_LERR(rc));
    }
    logs_out_done(o, b, rc == 0, true, NULL, 0);
}

/* loki, ordered: <b> is about to be sent; the batches queued right behind it join its request
 * (b->merged, in queue order) while each holds one of the request's streams (a busy stream's
 * backlog goes out in one push, not one batch per round trip; a batch of other streams keeps its
 * own request, in parallel), waits for nothing (not in flight, no retry pending), shares no
 * stream with an older unacknowledged batch (<busy>[<nbusy>], sorted; <b> is not in it), and
 * keeps the request's batches within max_push_bytes. The first batch that does not qualify ends
 * the run, so a stream's entries stay in order: every older batch of its streams is acknowledged
 * or in this request. */
static void merge(struct logs_out *o, struct logs_batch *b, const uint64_t *busy, size_t nbusy,
                  uint64_t now)
{
    size_t bytes = b->body.len, n = b->nstreams;
    uint64_t *group = NULL;
    struct logs_batch *last = b;
    for (struct sc_list *pos = b->node.next; pos != &o->queue; pos = pos->next) {
        struct logs_batch *c = sc_list_entry(pos, struct logs_batch, node);
        if (c->in_flight || c->retry_at_ms > now || bytes + c->body.len > o->cfg->max_push_bytes ||
            !shares_stream(c, group ? group : b->streams, n) || shares_stream(c, busy, nbusy)) {
            break;
        }
        if (!group) {
            group = sc_calloc(n + 1, sizeof(uint64_t));
            memcpy(group, b->streams, n * sizeof(uint64_t));
        }
        group = sc_reallocarray(group, n + c->nstreams + 1, sizeof(uint64_t));
        memcpy(group + n, c->streams, c->nstreams * sizeof(uint64_t));
        n += c->nstreams;
        qsort(group, n, sizeof(uint64_t), cmp_u64);
        bytes += c->body.len;
        c->in_flight = c->member = true;
        last->merged = c;
        last = c;
    }
    sc_free(group);
}

/* Sends what the limits allow: spooled batches one at a time once the memory queue is empty;
 * queued batches oldest first, skipping those waiting for their retry, up to the concurrency
 * limit. Re-entrant calls (a file write acknowledges from inside) are folded into the running
 * one. Arms the retry timer for the earliest batch left waiting. */
static void pump(struct logs_out *o)
{
    if (o->closing) {
        return;
    }
    if (o->pumping) {
        o->repump = true;
        return;
    }
    o->pumping = true;
    do {
        o->repump = false;
        uint64_t now = uv_now(o->lg->loop), next = UINT64_MAX;
        unsigned limit = is_http(o) ? (unsigned)o->limit : 1;
        if (sc_list_empty(&o->queue) && o->spool_pending &&
            !(o->spool_batch && o->spool_batch->in_flight)) {
            struct logs_batch *b = o->spool_batch;
            if (b && b->nitems && b->retry_at_ms > now) {
                next = b->retry_at_ms;
            } else {
                if (!b) {
                    b = o->spool_batch = batch_new(o);
                    b->from_spool = true;
                }
                if (!b->nitems) {
                    b->attempts = 0;
                    b->retry_at_ms = 0;
                    if (!logs_spool_read(o, b)) {
                        sc_error("spool unreadable: its batches are dropped",
                                 SC_LS("output", o->name), SC_LU("batches", o->spool_pending));
                        logs_spool_reset(o);
                        continue;
                    }
                }
                start(o, b);
            }
        }
        /* loki, ordered: the streams of older batches not acknowledged yet. */
        bool ordered = o->cfg->type == LOGS_O_LOKI && o->cfg->ordered;
        uint64_t *busy = NULL;
        size_t nbusy = 0, cbusy = 0;
        struct sc_list *pos, *tmp;
        sc_list_foreach(pos, tmp, &o->queue)
        {
            if (o->repump || o->closing) {
                break; /* the queue changed under us: walk it again */
            }
            struct logs_batch *b = sc_list_entry(pos, struct logs_batch, node);
            bool wait = ordered && shares_stream(b, busy, nbusy);
            bool go = !wait && !b->in_flight && b->retry_at_ms <= now && o->inflight < limit;
            if (!wait && !b->in_flight && b->retry_at_ms > now) {
                next = b->retry_at_ms < next ? b->retry_at_ms : next;
            }
            if (!wait && !b->in_flight && b->retry_at_ms <= now && !go) {
                o->limited = true;
                break;
            }
            if (go && ordered) {
                merge(o, b, busy, nbusy, now);
            }
            if (ordered) {
                /* Its streams (and its followers') are busy for every batch behind it. */
                for (struct logs_batch *m = b; m; m = m->merged) {
                    if (m->nstreams == 0) {
                        continue;
                    }
                    if (nbusy + m->nstreams > cbusy) {
                        cbusy = (nbusy + m->nstreams) * 2;
                        busy = sc_reallocarray(busy, cbusy, sizeof(uint64_t));
                    }
                    memcpy(busy + nbusy, m->streams, m->nstreams * sizeof(uint64_t));
                    nbusy += m->nstreams;
                }
                qsort(busy, nbusy, sizeof(uint64_t), cmp_u64);
            }
            if (go) {
                start(o, b);
            }
        }
        sc_free(busy);
        if (next != UINT64_MAX && !o->closing) {
            uv_timer_start(&o->retry_timer, on_retry_timer, next - now, 0);
        }
    } while (o->repump && !o->closing);
    o->pumping = false;
    sc_metrics_gauge_set(o->m.in_flight, (double)o->inflight);
}

void logs_out_feedback(struct logs_out *o, double rtt_s, bool pushed_back)
{
    if (!o->cfg->adaptive_concurrency) {
        return;
    }
    double rtt = rtt_s * 1000;
    uint64_t now = uv_now(o->lg->loop);
    double max = (double)o->cfg->max_in_flight;
    bool rising = o->rtt_ms > 0 && rtt > o->rtt_ms * 2 + 5;
    bool flat = o->rtt_ms <= 0 || rtt <= o->rtt_ms * 1.5 + 1; /* the first has no mean yet */
    if (pushed_back || rising || !flat) {
        o->slow_start = false;
    }
    if (pushed_back || rising) {
        if (o->decreased_ms == 0 || (double)(now - o->decreased_ms) >= o->rtt_ms) {
            double l = floor(o->limit * 0.9);
            o->limit = l < o->limit - 1 ? l : o->limit - 1;
            if (o->limit < 1) {
                o->limit = 1;
            }
            o->decreased_ms = now;
            o->limited = false;
        }
    } else if (o->limited && flat && o->limit < max &&
               (o->slow_start || (double)(now - o->increased_ms) >= o->rtt_ms)) {
        o->limit += 1;
        o->limited = false;
        o->increased_ms = now;
    }
    if (!pushed_back) {
        o->rtt_ms = o->rtt_ms > 0 ? o->rtt_ms * 0.6 + rtt * 0.4 : rtt;
    }
    sc_metrics_gauge_set(o->m.concurrency, o->limit);
}

void logs_out_dead_letter(struct logs_out *o, const char *p, size_t n)
{
    if (!o->cfg->dead_letter) {
        return;
    }
    int fd = open(o->cfg->dead_letter, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0 || sc_file_write_all(fd, p, n) < 0) {
        sc_error("cannot write the dead-letter file", SC_LS("path", o->cfg->dead_letter),
                 SC_LS("error", strerror(errno)));
    }
    if (fd >= 0) {
        close(fd);
    }
}

/* Moves every batch of the memory queue to the spool, in order, so that during an outage
 * nothing waits in memory only and positions can move past it. Requests still running are
 * cancelled: their batches are sent again from the spool (at-least-once: perhaps twice). Stops
 * when the spool is full. */
static void spill(struct logs_out *o)
{
    while (!sc_list_empty(&o->queue)) {
        struct logs_batch *b = sc_list_entry(o->queue.next, struct logs_batch, node);
        if (logs_spool_append(o, b) < 0) {
            break;
        }
        if (b->in_flight && !b->member) {
            logs_http_cancel(b);
            o->inflight--;
        }
        b->in_flight = b->member = false;
        /* Its followers (next in the queue) are plain queued batches again. */
        for (struct logs_batch *m = b->merged, *n; m; m = n) {
            n = m->merged;
            m->merged = NULL;
            m->in_flight = m->member = false;
        }
        b->merged = NULL;
        unqueue(o, b);
        logs_ack_done(&o->ack, b->unit);
        batch_free(b);
    }
}

bool logs_out_full(const struct logs_out *o)
{
    if (o->queue_bytes < o->cfg->buffer_limit) {
        return false;
    }
    /* Spooling: the building batch goes to disk when sealed, if it fits. */
    size_t batch = o->cfg->batch_bytes + o->lg->cfg->max_line_size * 6 + 4 * o->cfg->batch_count;
    return !(o->spool_pending > 0 && sc_list_empty(&o->queue) && logs_spool_has_room(o, batch));
}

/* The delay before attempt <attempts> + 1: exponential from retry_initial up to retry_max, with
 * jitter over its upper half; or the backend's Retry-After (capped at retry_max). */
static uint64_t retry_delay(const struct logs_out *o, uint32_t attempts, uint64_t retry_after_ms)
{
    if (retry_after_ms) {
        return retry_after_ms < o->cfg->retry_max_ms ? retry_after_ms : o->cfg->retry_max_ms;
    }
    uint64_t d = o->cfg->retry_initial_ms;
    for (uint32_t i = 1; i < attempts && d < o->cfg->retry_max_ms; i++) {
        d *= 2;
    }
    if (d > o->cfg->retry_max_ms) {
        d = o->cfg->retry_max_ms;
    }
    return d / 2 + (d ? rnd() % (d / 2 + 1) : 0);
}

/* Counts <b> shipped, or dropped for <reason>. */
static void count(struct logs_out *o, const struct logs_batch *b, bool ok, const char *reason)
{
    if (ok) {
        sc_metrics_counter_add(o->m.shipped, b->nitems);
        sc_metrics_counter_add(o->m.bytes, b->body.len);
    } else {
        struct sc_metric *m = reason && strcmp(reason, "retries_exhausted") == 0
                                  ? o->m.dropped_retries
                                  : o->m.dropped_rejected;
        sc_metrics_counter_add(m, b->nitems);
    }
}

/* Counts <b> shipped or dropped and acknowledges it (it leaves the queue and is freed). */
static void settle(struct logs_out *o, struct logs_batch *b, bool ok, const char *reason)
{
    count(o, b, ok, reason);
    unqueue(o, b);
    logs_ack_done(&o->ack, b->unit);
    batch_free(b);
}

/* <b>'s request ended: its followers (merge) share its outcome when it was delivered or
 * rejected; when it is to be retried they become plain queued batches again, which wait behind
 * <b> for their common streams and may join its retry. Settled before <b>, so that nothing
 * <b>'s handling starts (a spill, a new request) sees the chain. */
static void done_followers(struct logs_out *o, struct logs_batch *b, bool ok, bool retry,
                           const char *reason)
{
    struct logs_batch *m = b->merged;
    b->merged = NULL;
    while (m) {
        struct logs_batch *n = m->merged;
        m->merged = NULL;
        m->in_flight = m->member = false;
        if (ok || !retry) {
            settle(o, m, ok, reason ? reason : "rejected");
        }
        m = n;
    }
}

void logs_out_done(struct logs_out *o, struct logs_batch *b, bool ok, bool retry,
                   const char *reason, uint64_t retry_after_ms)
{
    done_followers(o, b, ok, retry, reason);
    if (b->in_flight) {
        b->in_flight = false;
        o->inflight--;
    }
    b->xfer = NULL;
    sc_buf_reset(&b->send);
    if (!ok && retry && !o->closing) {
        b->attempts++;
        if (o->cfg->max_retries == 0 || b->attempts <= (uint32_t)o->cfg->max_retries) {
            sc_metrics_counter_inc(o->m.retries);
            b->retry_at_ms = uv_now(o->lg->loop) + retry_delay(o, b->attempts, retry_after_ms);
            if (o->spool_fd >= 0 && !b->from_spool) {
                spill(o);
                logs_on_ack(o->lg);
            }
            pump(o);
            return;
        }
        reason = "retries_exhausted";
        sc_error("batch dropped after its last retry", SC_LS("output", o->name),
                 SC_LU("lines", b->nitems), SC_LS("dead_letter", o->cfg->dead_letter));
        logs_out_dead_letter(o, b->body.p, b->body.len);
    }
    if (!ok && retry && !reason) {
        /* closing: leave the batch unacknowledged (it is read again after a restart) */
        return;
    }
    if (!b->from_spool) {
        settle(o, b, ok, reason);
    } else {
        count(o, b, ok, reason);
        logs_spool_consume(o, b); /* its records were acknowledged when spooled */
        b->nitems = 0;
        sc_buf_reset(&b->body);
    }
    pump(o);
    logs_on_ack(o->lg);
}

/* A process killed in the middle of a write can leave a file output ending in part of a line; the
 * next record appended would be glued to it. Ends such a fragment with a newline, so that it is
 * one damaged line and not two. */
static void end_torn_line(int fd, const char *path)
{
    struct stat st;
    char last;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size == 0) {
        return; /* a FIFO or device has no last byte to look at */
    }
    int rfd = open(path, O_RDONLY | O_CLOEXEC);
    if (rfd < 0) {
        return;
    }
    if (pread(rfd, &last, 1, st.st_size - 1) == 1 && last != '\n' &&
        sc_file_write_all(fd, "\n", 1) == 0) {
        sc_warn("file output ended in a partial line (an earlier run was killed while writing); "
                "terminated it",
                SC_LS("path", path));
    }
    close(rfd);
}

int logs_out_new(struct logs *lg, const struct logs_output_cfg *cfg, struct logs_out **out,
                 char **err)
{
    struct logs_out *o = SC_NEW(struct logs_out);
    static const char *const tnames[] = { "file", "stdout", "http", "loki", "elasticsearch" };
    o->lg = lg;
    o->cfg = cfg;
    o->name = sc_strdup(cfg->name ? cfg->name : tnames[cfg->type]);
    o->fd = -1;
    o->spool_fd = -1;
    sc_list_init(&o->queue);
    logs_ack_init(&o->ack);
    o->limit = cfg->adaptive_concurrency ? 1 : (double)cfg->max_in_flight;
    o->slow_start = cfg->adaptive_concurrency;
    if (cfg->type == LOGS_O_FILE) {
        if (!cfg->path) {
            *err = sc_asprintf("output %s: a file output needs a path", o->name);
            goto fail;
        }
        o->fd = open(cfg->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (o->fd < 0) {
            *err = sc_asprintf("output %s: %s: %s", o->name, cfg->path, strerror(errno));
            goto fail;
        }
        end_torn_line(o->fd, cfg->path);
    } else if (cfg->type == LOGS_O_STDOUT) {
        o->fd = 1;
    } else if (!cfg->url) {
        *err = sc_asprintf("output %s: needs a url", o->name);
        goto fail;
    }
    if (cfg->spool && logs_spool_open(o, err) < 0) {
        goto fail;
    }
    uv_timer_init(lg->loop, &o->batch_timer);
    uv_timer_init(lg->loop, &o->retry_timer);
    o->batch_timer.data = o->retry_timer.data = o;
    o->nhandles = 2;
    const char *l1[] = { o->name, NULL };
    o->m.shipped = sc_metrics_get(lg->m.shipped, l1);
    o->m.bytes = sc_metrics_get(lg->m.bytes, l1);
    o->m.retries = sc_metrics_get(lg->m.retries, l1);
    o->m.queue_bytes = sc_metrics_get(lg->m.queue_bytes, l1);
    const char *l2[] = { o->name, "rejected", NULL };
    o->m.dropped_rejected = sc_metrics_get(lg->m.dropped, l2);
    const char *l3[] = { o->name, "retries_exhausted", NULL };
    o->m.dropped_retries = sc_metrics_get(lg->m.dropped, l3);
    const char *l4[] = { o->name, "unencodable", NULL };
    o->m.dropped_oversize = sc_metrics_get(lg->m.dropped, l4);
    *out = o;
    o->m.concurrency = sc_metrics_get(lg->m.concurrency, l1);
    o->m.in_flight = sc_metrics_get(lg->m.in_flight, l1);
    sc_metrics_gauge_set(o->m.concurrency, o->limit);
    pump(o); /* batches spooled by the last run */
    return 0;
fail:
    if (o->spool_fd >= 0) {
        close(o->spool_fd);
    }
    if (o->fd > 2) {
        close(o->fd);
    }
    sc_free(o->name);
    sc_free(o);
    return SC_ECONFIG;
}

static void out_free(struct logs_out *o)
{
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &o->queue)
    {
        struct logs_batch *b = sc_list_entry(pos, struct logs_batch, node);
        sc_list_remove(&b->node);
        batch_free(b);
    }
    batch_free(o->building);
    batch_free(o->spool_batch);
    if (o->spool_fd >= 0) {
        close(o->spool_fd);
    }
    if (o->fd > 2) {
        close(o->fd);
    }
    logs_ack_cleanup(&o->ack);
    for (size_t i = 0; i < o->nhdrs; i++) {
        sc_free(o->hdrs[i].key);
        sc_free(o->hdrs[i].value);
    }
    sc_free(o->hdrs);
    sc_free(o->endpoint);
    sc_free(o->labels_json);
    sc_free(o->es_index);
    sc_free(o->es_action);
    sc_free(o->bearer);
    sc_free(o->user);
    if (o->password) {
        sc_free_secret(o->password, strlen(o->password));
    }
    sc_free(o->name);
    sc_free(o);
}

static void on_out_closed(uv_handle_t *h)
{
    struct logs_out *o = h->data;
    if (--o->nhandles == 0) {
        struct logs *lg = o->lg;
        out_free(o);
        logs_on_ack(lg);
    }
}

void logs_out_close(struct logs_out *o)
{
    o->closing = true;
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &o->queue)
    {
        logs_http_cancel(sc_list_entry(pos, struct logs_batch, node));
    }
    if (o->spool_batch) {
        logs_http_cancel(o->spool_batch);
    }
    uv_close((uv_handle_t *)&o->batch_timer, on_out_closed);
    uv_close((uv_handle_t *)&o->retry_timer, on_out_closed);
}

// SPDX-License-Identifier: Apache-2.0
// The HTTP-based outputs on the egress client: generic HTTP (NDJSON or a JSON array), Loki's push
// API (JSON, or protobuf PushRequest hand-encoded and snappy-compressed) and Elasticsearch _bulk.
// A batch is acknowledged only on a 2xx answer; 408, 429, 5xx and transport errors are retried
// (after Retry-After when the answer has one); other 4xx are counted as dropped and logged, never
// retried forever. For _bulk, a 200 with errors:true is split per item: 429/5xx items are retried
// alone, the others dropped, counted and written to the dead-letter file with their reason. Every
// batch in flight has its own request (and its own encoded body when it differs from the batch's).
#include <string.h>
#include <strings.h>
#include <time.h>

#include <zlib.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/prom.h"
#include "core/snappy.h"
#include "roles/logs/logs.h"

static int gzip_into(struct sc_buf *out, const char *p, size_t n)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        return -ENOMEM;
    }
    size_t bound = deflateBound(&z, (uLong)n) + 32;
    sc_buf_reset(out);
    int rc = sc_buf_reserve(out, bound);
    if (rc == 0) {
        z.next_in = (Bytef *)(uintptr_t)p;
        z.avail_in = (uInt)n;
        z.next_out = (Bytef *)out->p;
        z.avail_out = (uInt)bound;
        rc = deflate(&z, Z_FINISH) == Z_STREAM_END ? 0 : -EIO;
        out->len = bound - z.avail_out;
    }
    deflateEnd(&z);
    return rc;
}

struct loki_ent {
    struct sc_str labels;
    int64_t ts;
    size_t size;           /* protobuf: the Entry message's size (loki_protobuf) */
    uint64_t secs;         /* protobuf: the time's seconds, nanoseconds and the size of the */
    uint32_t nanos, tsz;   /* Timestamp message they make */
    struct sc_str ts_text; /* the decimal nanoseconds as the batch holds them */
    struct sc_str line;    /* a JSON string, or LOKI_RAW and the bytes (encode_loki) */
    size_t idx;
};

static int loki_cmp(const void *a, const void *b)
{
    const struct loki_ent *x = a, *y = b;
    size_t n = x->labels.len < y->labels.len ? x->labels.len : y->labels.len;
    int c = memcmp(x->labels.p, y->labels.p, n);
    if (c || x->labels.len != y->labels.len) {
        return c ? c : (x->labels.len < y->labels.len ? -1 : 1);
    }
    if (x->ts != y->ts) {
        return x->ts < y->ts ? -1 : 1;
    }
    return x->idx < y->idx ? -1 : (x->idx > y->idx);
}

/* A record's time: decimal nanoseconds (up to 19 digits, as encode_loki writes them), or 0 for
 * anything else (a damaged spool record). */
static uint64_t parse_ts(struct sc_str s)
{
    if (s.len == 0 || s.len > 19) {
        return 0;
    }
    uint64_t t = 0;
    for (size_t i = 0; i < s.len; i++) {
        unsigned d = (unsigned)(unsigned char)s.p[i] - '0';
        if (d > 9) {
            return 0;
        }
        t = t * 10 + d;
    }
    return t > INT64_MAX ? 0 : t;
}

/* Reads eight ASCII digits at <p> into <*v>; false when a byte is not a digit. Little-endian: the
 * first digit is the word's low byte. Neighbouring digits are combined in the word itself, two
 * into a byte, four into 16 bits, eight into 32, no lane ever reaching the next. */
static inline bool digits8(const char *p, uint32_t *v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t w;
    memcpy(&w, p, 8);
    /* A digit is 0x30..0x39: high nibble 3, and still 3 once 6 is added. */
    if ((w & 0xF0F0F0F0F0F0F0F0ull) != 0x3030303030303030ull ||
        ((w + 0x0606060606060606ull) & 0xF0F0F0F0F0F0F0F0ull) != 0x3030303030303030ull) {
        return false;
    }
    uint64_t d = w - 0x3030303030303030ull;
    d = (d * 10 + (d >> 8)) & 0x00FF00FF00FF00FFull;   /* byte 2i: digits 2i and 2i+1 */
    d = (d * 100 + (d >> 16)) & 0x0000FFFF0000FFFFull; /* 16 bits at 32i: four digits */
    *v = (uint32_t)(d * 10000 + (d >> 32));            /* low 32 bits: all eight */
    return true;
#else
    (void)p;
    (void)v;
    return false;
#endif
}

/* Reads one record "<labels>\t<ts>\t<line>" into <e>. <prev>: the labels of the record before,
 * which most records repeat, so that they are compared rather than scanned for (a label set holds
 * no tab). Returns true when <e>'s labels are <prev>'s. */
static bool loki_rec(struct loki_ent *e, struct sc_str rec, struct sc_str prev)
{
    struct sc_str labels;
    bool same = prev.len && prev.len < rec.len && rec.p[prev.len] == '\t' &&
                memcmp(rec.p, prev.p, prev.len) == 0;
    if (same) {
        labels = prev; /* the same bytes: streams are then told apart by pointer */
        rec = sc_str_n(rec.p + prev.len + 1, rec.len - prev.len - 1);
    } else {
        labels = sc_str_split(&rec, '\t');
    }
    /* The time: up to 19 digits and a tab (as encode_loki writes it), read in one pass; anything
     * else (a damaged spool record) is split as it comes and reads as time 0. */
    uint64_t t = 0;
    size_t k = 0;
    uint32_t hi, mid;
    if (rec.len > 19 && rec.p[19] == '\t' && digits8(rec.p, &hi) && digits8(rec.p + 8, &mid) &&
        (unsigned)(rec.p[16] - '0') <= 9 && (unsigned)(rec.p[17] - '0') <= 9 &&
        (unsigned)(rec.p[18] - '0') <= 9) {
        /* Nineteen digits: any time since 2001. */
        t = (uint64_t)hi * 100000000000ull + (uint64_t)mid * 1000 +
            (unsigned)(rec.p[16] - '0') * 100 + (unsigned)(rec.p[17] - '0') * 10 +
            (unsigned)(rec.p[18] - '0');
        k = 19;
    }
    while (k < rec.len && k < 20 && (unsigned)(rec.p[k] - '0') <= 9) {
        t = t * 10 + (unsigned)(rec.p[k++] - '0');
    }
    struct sc_str ts;
    if (k > 0 && k <= 19 && k < rec.len && rec.p[k] == '\t' && t <= INT64_MAX) {
        ts = sc_str_n(rec.p, k);
        rec = sc_str_n(rec.p + k + 1, rec.len - k - 1);
    } else {
        ts = sc_str_split(&rec, '\t');
        t = parse_ts(ts);
    }
    e->labels = labels;
    e->ts = (int64_t)t;
    e->size = 0;
    e->ts_text = t ? ts : SC_STR("0");
    e->line = rec;
    return same;
}

/* The records of <b> and of the batches merged into its request, in order, sorted by stream and
 * time (their order kept among equals). <*bytes>: the bodies' size together. */
static struct loki_ent *loki_split(const struct logs_batch *b, size_t *n, size_t *bytes)
{
    size_t total = 0, k = 0;
    *bytes = 0;
    for (const struct logs_batch *m = b; m; m = m->merged) {
        total += m->nitems;
        *bytes += m->body.len;
    }
    struct loki_ent *v = sc_reallocarray(NULL, total + 1, sizeof(*v));
    bool sorted = true;
    struct sc_str prev = { "", 0 };
    for (const struct logs_batch *m = b; m; m = m->merged) {
        size_t start = 0;
        for (size_t i = 0; i < m->nitems; i++) {
            struct loki_ent *e = &v[k];
            struct sc_str rec = sc_str_n(m->body.p + start, m->items[i] - start - 1);
            bool same;
            if (m->loki) {
                /* Built in memory: where its parts are is known. */
                const struct logs_loki_item *it = &m->loki[i];
                size_t head = (size_t)it->labels_len + it->ts_len + 2;
                same = (i > 0 && it->same) ||
                       (prev.len == it->labels_len && memcmp(prev.p, rec.p, prev.len) == 0);
                e->labels = same ? prev : sc_str_n(rec.p, it->labels_len);
                e->ts = it->ts;
                e->size = 0;
                e->ts_text = sc_str_n(rec.p + it->labels_len + 1, it->ts_len);
                e->line = sc_str_n(rec.p + head, rec.len - head);
            } else {
                same = loki_rec(e, rec, prev);
            }
            start = m->items[i];
            e->idx = k++;
            if (k > 1 && sorted) {
                /* Equal labels (the common case) compare by time alone: idx only grows. */
                sorted = same ? e[-1].ts <= e->ts : loki_cmp(e - 1, e) < 0;
            }
            prev = e->labels;
        }
    }
    /* Records mostly come in time order with one set of labels: sort only when they do not. */
    if (!sorted) {
        qsort(v, k, sizeof(*v), loki_cmp);
    }
    *n = k;
    return v;
}

/* Whether two records belong to one stream; records that repeat their predecessor's labels share
 * its view (loki_rec), so most are told by pointer. */
static inline bool same_stream(const struct loki_ent *a, const struct loki_ent *b)
{
    return (a->labels.p == b->labels.p && a->labels.len == b->labels.len) ||
           sc_str_eq(a->labels, b->labels);
}

static int loki_json(const struct logs_batch *b, struct sc_buf *out)
{
    size_t n, bytes;
    struct loki_ent *v = loki_split(b, &n, &bytes);
    int rc = sc_buf_append_cstr(out, "{\"streams\":[");
    for (size_t i = 0; rc == 0 && i < n; i++) {
        bool first = i == 0 || !same_stream(&v[i], &v[i - 1]);
        if (first) {
            rc = sc_buf_appendf(out, "%s{\"stream\":%.*s,\"values\":[", i ? "]}," : "",
                                SC_STR_FMT(v[i].labels));
        } else {
            rc = sc_buf_append(out, ",", 1);
        }
        rc = rc ? rc : sc_buf_append(out, "[\"", 2);
        rc = rc ? rc : sc_buf_append_str(out, v[i].ts_text);
        rc = rc ? rc : sc_buf_append(out, "\",", 2);
        if (rc == 0 && v[i].line.len && v[i].line.p[0] == LOKI_RAW[0]) {
            rc = logs_json_quote(out, sc_str_n(v[i].line.p + 1, v[i].line.len - 1),
                                 LOGS_ESC_JANSSON);
        } else if (rc == 0) {
            rc = sc_buf_append_str(out, v[i].line);
        }
        rc = rc ? rc : sc_buf_append(out, "]", 1);
    }
    if (rc == 0) {
        rc = sc_buf_append_cstr(out, n ? "]}]}" : "]}");
    }
    sc_free(v);
    return rc;
}

static size_t varint_len(uint64_t v)
{
    /* 7 bits a byte: (bits needed + 6) / 7, at least one byte. */
    return (size_t)(64 - __builtin_clzll(v | 1) + 6) / 7;
}

static char *put_varint(char *p, uint64_t v)
{
    /* Lengths are mostly below 2^14: one or two bytes without a loop. */
    if (v < 0x80) {
        *p = (char)v;
        return p + 1;
    }
    if (v < 0x4000) {
        p[0] = (char)(v | 0x80);
        p[1] = (char)(v >> 7);
        return p + 2;
    }
    while (v > 0x7f) {
        *p++ = (char)((v & 0x7f) | 0x80);
        v >>= 7;
    }
    *p++ = (char)v;
    return p;
}

/* A length-delimited field's key and length; the caller copies the bytes after them. */
static char *put_len(char *p, unsigned field, size_t n)
{
    return put_varint(put_varint(p, field << 3 | 2), n);
}

/* The size of a field of <n> bytes with its key and length (fields below 16: a one-byte key). */
static size_t len_field(size_t n)
{
    return 1 + varint_len(n) + n;
}

/* {"a":"x","b":"y"} -> {a="x", b="y"} (Prometheus label syntax, as Loki's protobuf wants). */
static char *labels_prom(struct sc_str json)
{
    json_error_t e;
    json_t *o = json_loadb(json.p, json.len, 0, &e);
    struct sc_buf b;
    sc_buf_init(&b, 1 << 20);
    sc_buf_append(&b, "{", 1);
    const char *k;
    json_t *v;
    bool first = true;
    json_object_foreach(o, k, v)
    {
        sc_buf_appendf(&b, "%s%s=\"", first ? "" : ", ", k);
        const char *s = json_string_value(v);
        sc_prom_escape(&b, s ? s : "", s ? strlen(s) : 0, SC_PROM_ESC_QUOTE);
        sc_buf_append(&b, "\"", 1);
        first = false;
    }
    sc_buf_append(&b, "}", 1);
    json_decref(o);
    char *r = sc_strndup(b.p, b.len);
    sc_buf_cleanup(&b);
    return r;
}

/* Entry { Timestamp timestamp = 1 { seconds = 1; nanos = 2 }; string line = 2 }: its size, with
 * the Timestamp's parts and size noted on <e> (times are never negative). */
static size_t entry_size(struct loki_ent *e)
{
    uint64_t t = (uint64_t)e->ts;
    e->secs = t / 1000000000;
    e->nanos = (uint32_t)(t - e->secs * 1000000000);
    e->tsz = (uint32_t)((e->secs ? 1 + varint_len(e->secs) : 0) +
                        (e->nanos ? 1 + varint_len(e->nanos) : 0));
    /* The Timestamp is below 128 bytes: a one-byte key and a one-byte length. */
    return 2 + e->tsz + len_field(e->line.len);
}

/* Its line's bytes into <e>: kept unquoted in the batch (LOKI_RAW), or a JSON string (spooled
 * while loki_encoding was json) decoded into <*text> (allocated on first use, <bytes> + 1: decoding
 * never grows a line, so the batches' size bounds all of them together), at <*used>. Only a
 * damaged spool record fails to decode: its line is sent empty, not garbled. */
static void entry_line(struct loki_ent *e, char **text, size_t bytes, size_t *used)
{
    if (e->line.len && e->line.p[0] == LOKI_RAW[0]) {
        e->line = sc_str_n(e->line.p + 1, e->line.len - 1);
        return;
    }
    if (!*text) {
        *text = sc_malloc(bytes + 1);
    }
    ssize_t l = logs_json_unquote(*text + *used, e->line);
    e->line = sc_str_n(*text + *used, l < 0 ? 0 : (size_t)l);
    *used += l < 0 ? 0 : (size_t)l;
}

/* PushRequest { repeated StreamAdapter streams = 1 { string labels = 1; repeated Entry entries =
 * 2 } } (Loki's push.proto), written straight into one buffer: each stream's size is summed
 * before it is written, and the whole message is snappy-compressed into <out>. */
static int loki_protobuf(const struct logs_batch *b, struct sc_buf *out)
{
    size_t n, bytes;
    struct loki_ent *v = loki_split(b, &n, &bytes);
    char *text = NULL;
    size_t used = 0;
    /* Per stream (a run of equal labels): its labels in Prometheus syntax and its size. */
    size_t nstreams = 0, total = 0;
    char **labels = sc_reallocarray(NULL, n + 1, sizeof(char *)); /* set for each stream below */
    size_t *ssize = sc_reallocarray(NULL, n + 1, sizeof(size_t));
    for (size_t i = 0; i < n;) {
        size_t j = i, sz;
        labels[nstreams] = labels_prom(v[i].labels);
        sz = len_field(strlen(labels[nstreams]));
        for (; j < n && same_stream(&v[j], &v[i]); j++) {
            entry_line(&v[j], &text, bytes, &used);
            v[j].size = entry_size(&v[j]);
            sz += len_field(v[j].size);
        }
        ssize[nstreams++] = sz;
        total += len_field(sz);
        i = j;
    }
    /* 16 bytes of slack: a cached seconds field is stored as one 16-byte copy. */
    char *pb = sc_malloc(total + 16), *p = pb;
    uint64_t last_secs = 0;
    char secs_field[16];
    size_t secs_len = 0;
    for (size_t i = 0, s = 0; i < n; s++) {
        size_t ll = strlen(labels[s]);
        p = put_len(p, 1, ssize[s]);
        p = put_len(p, 1, ll);
        memcpy(p, labels[s], ll);
        p += ll;
        for (size_t j = i; i < n && same_stream(&v[i], &v[j]); i++) {
            uint64_t secs = v[i].secs;
            uint32_t nanos = v[i].nanos;
            p = put_len(p, 2, v[i].size);
            *p++ = 1 << 3 | 2;
            *p++ = (char)v[i].tsz;
            if (secs) {
                /* Entries of one second share their seconds field: encoded once. */
                if (secs != last_secs || !secs_len) {
                    secs_len =
                        (size_t)(put_varint(put_varint(secs_field, 1 << 3), secs) - secs_field);
                    last_secs = secs;
                }
                memcpy(p, secs_field, sizeof(secs_field));
                p += secs_len;
            }
            if (nanos) {
                p = put_varint(put_varint(p, 2 << 3), nanos);
            }
            p = put_len(p, 2, v[i].line.len);
            memcpy(p, v[i].line.p, v[i].line.len);
            p += v[i].line.len;
        }
    }
    for (size_t s = 0; s < nstreams; s++) {
        sc_free(labels[s]);
    }
    sc_free(labels);
    sc_free(ssize);
    sc_free(text);
    sc_free(v);
    int rc = sc_buf_reserve(out, sc_snappy_bound(total));
    if (rc == 0) {
        size_t olen = 0;
        rc = sc_snappy_compress(pb, total, out->p + out->len, &olen);
        out->len += olen;
    }
    sc_free(pb);
    return rc;
}

/* Writes a rejected _bulk item to the dead-letter file: one JSON object with the output, the
 * item's status, error type and reason, and the item itself (its action and document lines). */
static void es_dead_letter(struct logs_out *o, json_int_t st, json_t *err, struct sc_str item)
{
    if (!o->cfg->dead_letter) {
        return;
    }
    json_t *j = json_pack("{s:s,s:I,s:O?,s:O?,s:s%}", "output", o->name, "status", st, "type",
                          json_object_get(err, "type"), "reason", json_object_get(err, "reason"),
                          "item", item.len ? item.p : "", item.len);
    size_t n = j ? json_dumpb(j, NULL, 0, JSON_COMPACT | JSON_PRESERVE_ORDER) : 0;
    if (n) {
        char *line = sc_malloc(n + 1);
        json_dumpb(j, line, n, JSON_COMPACT | JSON_PRESERVE_ORDER);
        line[n] = '\n';
        logs_out_dead_letter(o, line, n + 1);
        sc_free(line);
    }
    json_decref(j);
}

static void on_es_resp(struct logs_out *o, struct logs_batch *b, struct sc_str body)
{
    json_error_t e;
    json_t *r = json_loadb(body.p, body.len, 0, &e);
    json_t *items = json_object_get(r, "items");
    if (!json_is_true(json_object_get(r, "errors"))) {
        json_decref(r);
        logs_out_done(o, b, true, false, NULL, 0);
        return;
    }
    if (!json_is_array(items) || json_array_size(items) != b->nitems) {
        sc_warn("elasticsearch: errors without a matching items list: retrying the batch",
                SC_LS("output", o->name));
        json_decref(r);
        logs_out_done(o, b, false, true, NULL, 0);
        return;
    }
    struct sc_buf keep;
    sc_buf_init(&keep, b->body.max);
    size_t *kitems = sc_calloc(b->nitems + 1, sizeof(size_t));
    size_t nk = 0, ok = 0, dropped = 0, start = 0;
    for (size_t i = 0; i < b->nitems; i++) {
        json_t *it = json_array_get(items, i);
        const char *k;
        json_t *op = NULL, *v;
        json_object_foreach(it, k, v)
        {
            op = v;
        }
        json_int_t st = json_integer_value(json_object_get(op, "status"));
        struct sc_str item = sc_str_n(b->body.p + start, b->items[i] - start);
        start = b->items[i];
        if ((st >= 200 && st < 300) || st == 409) {
            ok++;
        } else if (st == 429 || st >= 500 || st == 0) {
            sc_buf_append_str(&keep, item);
            kitems[nk++] = keep.len;
        } else {
            dropped++;
            json_t *err = json_object_get(op, "error");
            sc_warn("elasticsearch rejected a record: dropped", SC_LS("output", o->name),
                    SC_LI("status", (long long)st),
                    SC_LS("type", json_string_value(json_object_get(err, "type"))),
                    SC_LS("reason", json_string_value(json_object_get(err, "reason"))));
            es_dead_letter(o, st, err, item);
        }
    }
    json_decref(r);
    sc_metrics_counter_add(o->m.shipped, ok);
    sc_metrics_counter_add(o->m.dropped_rejected, dropped);
    size_t old = b->body.len;
    sc_buf_cleanup(&b->body);
    b->body = keep;
    sc_free(b->items);
    b->items = kitems;
    b->nitems = nk;
    if (!b->from_spool) {
        o->queue_bytes -= old - b->body.len;
    }
    if (nk == 0) {
        logs_out_done(o, b, true, false, NULL, 0);
    } else {
        logs_out_done(o, b, false, true, NULL, 0);
    }
}

/* Retry-After (RFC 9110 10.2.3): delay-seconds or an HTTP-date. Returns milliseconds, or 0 when
 * absent or unreadable. */
static uint64_t retry_after_ms(struct sc_str v)
{
    uint64_t secs = 0;
    if (!v.len) {
        return 0;
    }
    if (sc_str_to_u64(v, 86400, &secs) == 0) {
        return secs ? secs * 1000 : 1;
    }
    char tmp[64];
    if (v.len >= sizeof(tmp)) {
        return 0;
    }
    memcpy(tmp, v.p, v.len);
    tmp[v.len] = 0;
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *end = strptime(tmp, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (!end || *end) {
        return 0;
    }
    time_t when = timegm(&tm), now = time(NULL);
    return when > now ? (uint64_t)(when - now) * 1000 : 1;
}

static void on_resp(void *arg, const struct sc_egress_resp *resp)
{
    struct logs_batch *b = arg;
    struct logs_out *o = b->out;
    b->xfer = NULL;
    if (resp->error) {
        sc_warn("output request failed: retrying", SC_LS("output", o->name),
                SC_LS("error", resp->error_msg ? resp->error_msg : sc_strerror(resp->error)));
        logs_out_feedback(o, resp->seconds, true);
        logs_out_done(o, b, false, true, NULL, 0);
        return;
    }
    int st = resp->status;
    logs_out_feedback(o, resp->seconds, st == 429 || st == 503);
    if (st >= 200 && st < 300) {
        if (o->cfg->type == LOGS_O_ES) {
            on_es_resp(o, b, resp->body);
            return;
        }
        logs_out_done(o, b, true, false, NULL, 0);
        return;
    }
    size_t show = resp->body.len < 300 ? resp->body.len : 300;
    if (st == 408 || st == 429 || st >= 500) {
        uint64_t after = retry_after_ms(sc_egress_resp_header(resp, "Retry-After"));
        sc_warn("output answered a retryable status", SC_LS("output", o->name), SC_LI("status", st),
                SC_LU("retry_after_ms", after), SC_LSN("body", resp->body.p, show));
        logs_out_done(o, b, false, true, NULL, after);
        return;
    }
    sc_error("output rejected a batch: dropped", SC_LS("output", o->name), SC_LI("status", st),
             SC_LU("lines", b->nitems), SC_LSN("body", resp->body.p, show));
    logs_out_done(o, b, false, false, "rejected", 0);
}

static void add_hdr(struct logs_out *o, const char *k, const char *v)
{
    o->hdrs = sc_reallocarray(o->hdrs, o->nhdrs + 1, sizeof(*o->hdrs));
    o->hdrs[o->nhdrs++] = (struct sc_kv){ sc_strdup(k), sc_strdup(v) };
}

static void build_hdrs(struct logs_out *o)
{
    const struct logs_output_cfg *c = o->cfg;
    const char *ct = "application/json";
    if (c->type == LOGS_O_ES) {
        ct = "application/x-ndjson";
    } else if (c->type == LOGS_O_LOKI && c->loki_encoding == LOGS_LOKI_PROTOBUF) {
        ct = "application/x-protobuf";
    } else if (c->type == LOGS_O_HTTP && c->format != LOGS_F_JSON_ARRAY) {
        ct = "application/x-ndjson";
    }
    add_hdr(o, "Content-Type", ct);
    o->bearer = sc_strdup(c->bearer_token);
    o->user = sc_strdup(c->user);
    o->password = sc_strdup(c->password);
    if (c->gzip && !(c->type == LOGS_O_LOKI && c->loki_encoding == LOGS_LOKI_PROTOBUF)) {
        add_hdr(o, "Content-Encoding", "gzip");
    }
    for (size_t i = 0; i < c->headers.n; i++) {
        add_hdr(o, c->headers.v[i].key, c->headers.v[i].value);
    }
    const char *url = c->url;
    size_t ul = strlen(url);
    while (ul && url[ul - 1] == '/') {
        ul--;
    }
    if (c->type == LOGS_O_LOKI && !strstr(url, "/loki/api/v1/push")) {
        o->endpoint = sc_asprintf("%.*s/loki/api/v1/push", (int)ul, url);
    } else if (c->type == LOGS_O_ES && !strstr(url, "/_bulk")) {
        o->endpoint = sc_asprintf("%.*s/_bulk", (int)ul, url);
    } else {
        o->endpoint = sc_strdup(url);
    }
}

void logs_http_send(struct logs_out *o, struct logs_batch *b)
{
    const struct logs_output_cfg *c = o->cfg;
    if (!o->endpoint) {
        build_hdrs(o);
    }
    struct sc_buf plain;
    sc_buf_init(&plain, b->send.max);
    int rc = 0;
    const char *body = b->body.p;
    size_t blen = b->body.len;
    if (c->type == LOGS_O_LOKI) {
        rc = c->loki_encoding == LOGS_LOKI_PROTOBUF ? loki_protobuf(b, &plain)
                                                    : loki_json(b, &plain);
        body = plain.p;
        blen = plain.len;
    } else if (c->type == LOGS_O_HTTP && c->format == LOGS_F_JSON_ARRAY) {
        rc = sc_buf_reserve(&plain, blen + 2);
        if (rc == 0) {
            plain.p[0] = '[';
            memcpy(plain.p + 1, b->body.p, blen);
            for (size_t i = 0; i < b->nitems; i++) {
                plain.p[b->items[i]] = i + 1 == b->nitems ? ']' : ',';
            }
            plain.len = blen + 1;
            body = plain.p;
            blen = plain.len;
        }
    }
    sc_buf_reset(&b->send);
    if (rc == 0 && c->gzip && !(c->type == LOGS_O_LOKI && c->loki_encoding == LOGS_LOKI_PROTOBUF)) {
        rc = gzip_into(&b->send, body ? body : "", blen);
        body = b->send.p;
        blen = b->send.len;
    } else if (rc == 0 && body == plain.p && blen) {
        /* Keep the encoded body with the batch for as long as its request runs. */
        sc_buf_cleanup(&b->send);
        b->send = plain;
        sc_buf_init(&plain, b->send.max);
    }
    sc_buf_cleanup(&plain);
    if (rc < 0) {
        sc_error("cannot encode a batch: dropped", SC_LS("output", o->name), SC_LERR(rc));
        logs_out_done(o, b, false, false, "rejected", 0);
        return;
    }
    struct sc_egress_req req = {
        .method = "POST",
        .url = o->endpoint,
        .headers = o->hdrs,
        .nheaders = o->nhdrs,
        .body = blen ? body : "",
        .body_len = blen,
        .timeout_ms = c->timeout_ms,
        .max_response = 64u << 20,
        .bearer_token = o->bearer,
        .basic_user = o->user,
        .basic_password = o->password,
    };
    rc = sc_egress_send(o->lg->egress, &req, on_resp, b, &b->xfer);
    if (rc < 0) {
        sc_warn("cannot start a request: retrying", SC_LS("output", o->name), SC_LERR(rc));
        logs_out_done(o, b, false, true, NULL, 0);
    }
}

void logs_http_cancel(struct logs_batch *b)
{
    if (b->xfer) {
        sc_egress_cancel(b->xfer);
        b->xfer = NULL;
    }
}

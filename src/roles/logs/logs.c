// SPDX-License-Identifier: Apache-2.0
// `sidecar logs`: the role's entry point. It declares the option table, compiles the parser,
// multiline and grep settings, runs each record through parse -> enrich -> grep -> every output,
// and drives the lifecycle: on stop it stops reading, flushes every queue, waits for the outputs'
// acknowledgements (bounded by the app's drain timeout), commits positions and only then reports
// stopped. Positions never move past a record some output has not acknowledged.
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "roles/logs/logs.h"

struct grep_rule {
    char *field;
    pcre2_code *re;
    pcre2_match_data *md;
    bool drop;
};

static const char *const parser_names[] = { "none", "json", "logfmt", "cri", "regex", NULL };
static const char *const out_types[] = { "file", "stdout", "http", "loki", "elasticsearch", NULL };
static const char *const formats[] = { "ndjson", "raw", "json_array", NULL };
static const char *const loki_encs[] = { "json", "protobuf", NULL };
static const char *const read_froms[] = { "head", "tail", NULL };

#define OFF(f) offsetof(struct logs_output_cfg, f)
static const struct sc_opt output_opts[] = {
    { .name = "name",
      .type = SC_OPT_STR,
      .offset = OFF(name),
      .flags = SC_OPT_RESTART,
      .help = "name in metrics and logs (default: the type)" },
    { .name = "type",
      .type = SC_OPT_ENUM,
      .offset = OFF(type),
      .enums = out_types,
      .flags = SC_OPT_REQUIRED | SC_OPT_RESTART,
      .help = "file, stdout, http, loki or elasticsearch" },
    { .name = "path",
      .type = SC_OPT_STR,
      .offset = OFF(path),
      .flags = SC_OPT_RESTART,
      .help = "file: the file appended to" },
    { .name = "url",
      .type = SC_OPT_STR,
      .offset = OFF(url),
      .flags = SC_OPT_RESTART,
      .help = "http: the endpoint; loki: the base URL (/loki/api/v1/push is added); "
              "elasticsearch: the base URL (/_bulk is added)" },
    { .name = "format",
      .type = SC_OPT_ENUM,
      .offset = OFF(format),
      .enums = formats,
      .def = "ndjson",
      .flags = SC_OPT_RESTART,
      .help = "file/stdout: ndjson (one JSON event per line) or raw (the original line); http: "
              "ndjson or json_array" },
    { .name = "gzip",
      .type = SC_OPT_BOOL,
      .offset = OFF(gzip),
      .def = "false",
      .flags = SC_OPT_RESTART,
      .help = "http, loki, elasticsearch: gzip request bodies" },
    { .name = "loki_encoding",
      .type = SC_OPT_ENUM,
      .offset = OFF(loki_encoding),
      .enums = loki_encs,
      .def = "protobuf",
      .flags = SC_OPT_RESTART,
      .help = "loki: protobuf (a snappy-compressed PushRequest, as Loki's own clients send) or "
              "json" },
    { .name = "label_fields",
      .type = SC_OPT_STRLIST,
      .offset = OFF(label_fields),
      .min = 0,
      .max = 16,
      .help = "loki: event fields promoted to stream labels (at most 16)" },
    { .name = "index",
      .type = SC_OPT_STR,
      .offset = OFF(index),
      .def = "logs-%Y.%m.%d",
      .help = "elasticsearch: index name, strftime %Y %m %d of the record time (UTC)" },
    { .name = "timestamp_field",
      .type = SC_OPT_STR,
      .offset = OFF(timestamp_field),
      .help = "file/stdout/http ndjson: add the record time (RFC 3339) under this key" },
    { .name = "headers",
      .type = SC_OPT_STRMAP,
      .offset = OFF(headers),
      .flags = SC_OPT_RESTART,
      .help = "extra request headers" },
    { .name = "bearer_token",
      .type = SC_OPT_STR,
      .offset = OFF(bearer_token),
      .flags = SC_OPT_SECRET | SC_OPT_RESTART,
      .help = "Authorization: Bearer token" },
    { .name = "user",
      .type = SC_OPT_STR,
      .offset = OFF(user),
      .flags = SC_OPT_RESTART,
      .help = "basic auth user" },
    { .name = "password",
      .type = SC_OPT_STR,
      .offset = OFF(password),
      .flags = SC_OPT_SECRET | SC_OPT_RESTART,
      .help = "basic auth password" },
    { .name = "batch_count",
      .type = SC_OPT_INT,
      .offset = OFF(batch_count),
      .def = "10000",
      .min = 1,
      .max = 1000000,
      .help = "records per batch at most" },
    { .name = "batch_bytes",
      .type = SC_OPT_SIZE,
      .offset = OFF(batch_bytes),
      .def = "1MiB",
      .min = 1,
      .max = 1LL << 30,
      .help = "batch body size that seals a batch" },
    { .name = "batch_wait",
      .type = SC_OPT_DURATION,
      .offset = OFF(batch_wait_ms),
      .def = "1s",
      .help = "time a partial batch waits before it is sent (0: send at once)" },
    { .name = "buffer_limit",
      .type = SC_OPT_SIZE,
      .offset = OFF(buffer_limit),
      .def = "8MiB",
      .min = 4096,
      .max = 1LL << 32,
      .help = "memory this output's queue may hold; reading pauses at the limit" },
    { .name = "max_retries",
      .type = SC_OPT_INT,
      .offset = OFF(max_retries),
      .def = "0",
      .min = 0,
      .max = 1000000,
      .help = "retries of a batch before it is dropped (0: forever)" },
    { .name = "retry_initial",
      .type = SC_OPT_DURATION,
      .offset = OFF(retry_initial_ms),
      .def = "250ms",
      .help = "first retry delay; doubles each time, with jitter" },
    { .name = "retry_max",
      .type = SC_OPT_DURATION,
      .offset = OFF(retry_max_ms),
      .def = "30s",
      .help = "longest retry delay" },
    { .name = "timeout",
      .type = SC_OPT_DURATION,
      .offset = OFF(timeout_ms),
      .def = "30s",
      .help = "deadline of one request" },
    { .name = "dead_letter",
      .type = SC_OPT_STR,
      .offset = OFF(dead_letter),
      .help = "file that receives batches dropped after max_retries" },
    { .name = "max_in_flight",
      .type = SC_OPT_INT,
      .offset = OFF(max_in_flight),
      .def = "16",
      .min = 1,
      .max = 256,
      .help = "http, loki, elasticsearch: batches sent at once at most; positions are committed "
              "only past a contiguous prefix of delivered batches" },
    { .name = "adaptive_concurrency",
      .type = SC_OPT_BOOL,
      .offset = OFF(adaptive_concurrency),
      .def = "true",
      .help = "http, loki, elasticsearch: start with one batch in flight, double per round "
              "trip until the first sign of congestion (slow start), then add one per round "
              "trip while round-trip times stay flat; cut by a tenth on 429, 503, timeouts and "
              "rising latency (within max_in_flight); false: always max_in_flight" },
    { .name = "ordered",
      .type = SC_OPT_BOOL,
      .offset = OFF(ordered),
      .def = "false",
      .help = "loki: keep each stream's entries in order across batches in flight (a batch waits "
              "while an older one holding one of its streams is unacknowledged), for a Loki with "
              "unordered_writes off (Loki accepts out-of-order writes by default since 2.4); "
              "false lets every batch go at once" },
    { .name = "max_push_bytes",
      .type = SC_OPT_SIZE,
      .offset = OFF(max_push_bytes),
      .def = "4MiB",
      .min = 0,
      .max = 1LL << 30,
      .help = "loki, ordered: a push also carries the batches queued right behind its own that "
              "hold one of its streams, up to this many bytes of batches (0: one batch a push), "
              "so a busy stream is not held to one batch per round trip; keep it under Loki's "
              "ingestion_burst_size_mb" },
    { .name = "spool",
      .type = SC_OPT_STR,
      .offset = OFF(spool),
      .help = "on-disk spool file: once a send fails, queued batches are fsynced here and "
              "reading goes on during the outage" },
    { .name = "spool_limit",
      .type = SC_OPT_SIZE,
      .offset = OFF(spool_limit),
      .def = "256MiB",
      .min = 65536,
      .max = 1LL << 40,
      .help = "size of the spool file at most" },
    { 0 },
};
#undef OFF

#define OFF(f) offsetof(struct logs_cfg, f)
static const struct sc_opt logs_opts[] = {
    { .name = "paths",
      .type = SC_OPT_STRLIST,
      .offset = OFF(paths),
      .flags = SC_OPT_FLAG,
      .help = "glob patterns of files to tail (flag: --paths, repeatable)" },
    { .name = "path",
      .type = SC_OPT_STRLIST,
      .offset = OFF(paths),
      .flags = SC_OPT_FLAG_ONLY,
      .help = "a glob pattern of files to tail (repeatable)" },
    { .name = "db",
      .type = SC_OPT_STR,
      .offset = OFF(db),
      .flags = SC_OPT_FLAG | SC_OPT_RESTART,
      .help = "positions database file (without it, restarts read files again from read_from)" },
    { .name = "read_from",
      .type = SC_OPT_ENUM,
      .offset = OFF(read_from),
      .enums = read_froms,
      .def = "head",
      .flags = SC_OPT_FLAG,
      .help = "where files found at start-up without a position begin (files created later are "
              "always read from the head)" },
    { .name = "stdin",
      .type = SC_OPT_BOOL,
      .offset = OFF(stdin_input),
      .def = "false",
      .flags = SC_OPT_FLAG | SC_OPT_RESTART,
      .help = "also read lines from standard input" },
    { .name = "poll_interval",
      .type = SC_OPT_DURATION,
      .offset = OFF(poll_interval_ms),
      .def = "250ms",
      .min = 1,
      .max = 3600000,
      .help = "stat polling of open files (inotify wakes reads sooner)" },
    { .name = "refresh_interval",
      .type = SC_OPT_DURATION,
      .offset = OFF(refresh_interval_ms),
      .def = "1s",
      .min = 1,
      .max = 3600000,
      .help = "glob rescan for new and rotated files" },
    { .name = "rotate_wait",
      .type = SC_OPT_DURATION,
      .offset = OFF(rotate_wait_ms),
      .def = "5s",
      .help = "how long a rotated file is kept open after its last data" },
    { .name = "max_rotated_open",
      .type = SC_OPT_INT,
      .offset = OFF(max_rotated_open),
      .def = "16",
      .min = 0,
      .max = 100000,
      .help = "rotated files kept open at most" },
    { .name = "max_files",
      .type = SC_OPT_INT,
      .offset = OFF(max_files),
      .def = "8192",
      .min = 1,
      .max = 1000000,
      .help = "files followed at most" },
    { .name = "max_line_size",
      .type = SC_OPT_SIZE,
      .offset = OFF(max_line_size),
      .def = "1MiB",
      .min = 16,
      .max = 256LL << 20,
      .flags = SC_OPT_FLAG | SC_OPT_RESTART,
      .help = "longer lines are cut and flagged truncated=true" },
    { .name = "commit_interval",
      .type = SC_OPT_DURATION,
      .offset = OFF(commit_interval_ms),
      .def = "0",
      .help = "minimum time between positions writes (0: after every acknowledgement)" },
    { .name = "parser",
      .type = SC_OPT_ENUM,
      .offset = OFF(parser),
      .enums = parser_names,
      .def = "none",
      .flags = SC_OPT_FLAG,
      .help = "none, json, logfmt, cri or regex" },
    { .name = "regex",
      .type = SC_OPT_STR,
      .offset = OFF(regex),
      .flags = SC_OPT_FLAG,
      .help = "regex parser: PCRE2 pattern with named groups" },
    { .name = "time_key",
      .type = SC_OPT_STR,
      .offset = OFF(time_key),
      .help = "field holding the record time (else the read time)" },
    { .name = "time_format",
      .type = SC_OPT_STR,
      .offset = OFF(time_format),
      .def = "rfc3339",
      .help = "rfc3339, unix, unix_ms, unix_ns or a strptime format (UTC)" },
    { .name = "keep_time_key",
      .type = SC_OPT_BOOL,
      .offset = OFF(keep_time_key),
      .def = "true",
      .help = "keep the time field in the event" },
    { .name = "multiline_start",
      .type = SC_OPT_STR,
      .offset = OFF(multiline_start),
      .flags = SC_OPT_FLAG,
      .help = "PCRE2 pattern of a record's first line; other lines join it" },
    { .name = "multiline_indent",
      .type = SC_OPT_BOOL,
      .offset = OFF(multiline_indent),
      .def = "false",
      .flags = SC_OPT_FLAG,
      .help = "join indented lines, 'Caused by:' and '... N more' to the previous record" },
    { .name = "multiline_timeout",
      .type = SC_OPT_DURATION,
      .offset = OFF(multiline_timeout_ms),
      .def = "1s",
      .help = "a pending multiline record is sent after this long" },
    { .name = "fields",
      .type = SC_OPT_STRMAP,
      .offset = OFF(fields),
      .flags = SC_OPT_FLAG,
      .help = "static fields added to every record (${ENV} expanded; flag: --fields k=v)" },
    { .name = "field",
      .type = SC_OPT_STRMAP,
      .offset = OFF(fields),
      .flags = SC_OPT_FLAG_ONLY,
      .help = "a static field k=v (repeatable)" },
    { .name = "labels",
      .type = SC_OPT_STRMAP,
      .offset = OFF(labels),
      .flags = SC_OPT_FLAG,
      .help = "static Loki stream labels (${ENV} expanded)" },
    { .name = "label",
      .type = SC_OPT_STRMAP,
      .offset = OFF(labels),
      .flags = SC_OPT_FLAG_ONLY,
      .help = "a static Loki label k=v (repeatable)" },
    { .name = "host_field",
      .type = SC_OPT_STR,
      .offset = OFF(host_field),
      .help = "add the host name under this key" },
    { .name = "file_field",
      .type = SC_OPT_STR,
      .offset = OFF(file_field),
      .help = "add the source file path under this key" },
    { .name = "stream_field",
      .type = SC_OPT_STR,
      .offset = OFF(stream_field),
      .help = "add the CRI stream (stdout/stderr) under this key" },
    { .name = "rename",
      .type = SC_OPT_STRMAP,
      .offset = OFF(rename),
      .help = "fields renamed, old: new" },
    { .name = "remove", .type = SC_OPT_STRLIST, .offset = OFF(remove), .help = "fields removed" },
    { .name = "grep_keep",
      .type = SC_OPT_STRLIST,
      .offset = OFF(grep_keep),
      .flags = SC_OPT_FLAG,
      .help = "FIELD=REGEX: keep only records whose field matches (all rules)" },
    { .name = "grep_drop",
      .type = SC_OPT_STRLIST,
      .offset = OFF(grep_drop),
      .flags = SC_OPT_FLAG,
      .help = "FIELD=REGEX: drop records whose field matches (any rule)" },
    { .name = "outputs",
      .type = SC_OPT_OBJLIST,
      .offset = OFF(outputs),
      .sub = output_opts,
      .sub_size = sizeof(struct logs_output_cfg),
      .min = 0,
      .max = 16,
      .help = "where records go, each with its own queue" },
    { .name = "output",
      .type = SC_OPT_STRLIST,
      .offset = OFF(output_flags),
      .flags = SC_OPT_FLAG_ONLY | SC_OPT_RESTART,
      .help = "TYPE[=TARGET]: stdout, file=PATH, http=URL, loki=URL, elasticsearch=URL "
              "(repeatable)" },
    { 0 },
};
#undef OFF

static const char logs_usage[] =
    "Tails log files, parses and enriches each line and ships it to Loki, Elasticsearch, HTTP,\n"
    "files or stdout, at least once: positions are committed only after every output\n"
    "acknowledged the line.\n"
    "  sidecar logs --path '/shared/logs/*.log' --parser json --label app=demo \\\n"
    "      --output loki=http://127.0.0.1:3100 --db /var/lib/sidecar/logs.db\n";

struct logs_state {
    struct logs lg;
    struct logs_output_cfg *flag_outs;
    size_t nflag_outs;
    bool drained;
};

static int64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static bool field_matches(pcre2_code *re, pcre2_match_data *md, const struct logs_field *f)
{
    struct sc_str v;
    if (!f) {
        return false;
    }
    switch (f->type) {
    case LOGS_V_STR:
    case LOGS_V_INT:
        v = f->val;
        break;
    case LOGS_V_TRUE:
        v = SC_STR("true");
        break;
    case LOGS_V_FALSE:
        v = SC_STR("false");
        break;
    default:
        return false;
    }
    return pcre2_match(re, (PCRE2_SPTR)(v.len ? v.p : ""), v.len, 0, 0, md, NULL) >= 0;
}

void logs_emit(struct logs *lg, struct sc_str raw, const char *file_path, struct sc_str stream,
               unsigned flags, int64_t ts_ns)
{
    const struct logs_cfg *c = lg->cfg;
    struct logs_ev *ev = &lg->ev;
    struct logs_rec r = { .ev = ev, .raw = raw, .ts_ns = ts_ns ? ts_ns : realtime_ns() };
    bool perr = false;
    logs_parse_line(&lg->pc, raw, ev, &r.ts_ns, &perr);
    if (perr) {
        sc_metrics_counter_inc(lg->m.parse_errors);
    }
    if (flags & LOGS_REC_PARSE_ERROR) {
        logs_ev_set(ev, SC_STR("parse_error"), LOGS_V_TRUE, SC_STR_NULL);
    }
    if (flags & LOGS_REC_TRUNCATED) {
        logs_ev_set(ev, SC_STR("truncated"), LOGS_V_TRUE, SC_STR_NULL);
    }
    for (size_t i = 0; i < c->fields.n; i++) {
        logs_ev_set(ev, logs_ev_clean(ev, sc_str_c(c->fields.v[i].key)), LOGS_V_STR,
                    logs_ev_clean(ev, sc_str_c(c->fields.v[i].value)));
    }
    if (c->host_field && c->host_field[0]) {
        logs_ev_set(ev, logs_ev_clean(ev, sc_str_c(c->host_field)), LOGS_V_STR,
                    logs_ev_clean(ev, sc_str_c(lg->hostname)));
    }
    if (c->file_field && c->file_field[0] && file_path) {
        logs_ev_set(ev, logs_ev_clean(ev, sc_str_c(c->file_field)), LOGS_V_STR,
                    logs_ev_clean(ev, sc_str_c(file_path)));
    }
    if (c->stream_field && c->stream_field[0] && stream.len) {
        logs_ev_set(ev, logs_ev_clean(ev, sc_str_c(c->stream_field)), LOGS_V_STR,
                    logs_ev_clean(ev, stream));
    }
    for (size_t i = 0; i < c->rename.n; i++) {
        logs_ev_rename(ev, sc_str_c(c->rename.v[i].key),
                       logs_ev_clean(ev, sc_str_c(c->rename.v[i].value)));
    }
    for (size_t i = 0; i < c->remove.n; i++) {
        logs_ev_del(ev, sc_str_c(c->remove.v[i]));
    }
    for (size_t i = 0; i < lg->ngrep; i++) {
        bool m = field_matches(lg->grep[i].re, lg->grep[i].md,
                               logs_ev_get(ev, sc_str_c(lg->grep[i].field)));
        if (m == lg->grep[i].drop) {
            sc_metrics_counter_inc(lg->m.grep_dropped);
            return;
        }
    }
    r.seq = ++lg->seq;
    for (size_t i = 0; i < lg->nouts; i++) {
        logs_out_append(lg->outs[i], &r);
    }
}

bool logs_backpressured(const struct logs *lg)
{
    for (size_t i = 0; i < lg->nouts; i++) {
        if (logs_out_full(lg->outs[i])) {
            return true;
        }
    }
    return false;
}

static void finish_stop(struct logs_state *st)
{
    struct logs *lg = &st->lg;
    if (lg->stopped) {
        return;
    }
    lg->stopped = true;
    logs_tail_commit(lg, true);
    for (size_t i = 0; i < lg->nouts; i++) {
        logs_out_close(lg->outs[i]);
    }
    lg->nouts = 0; /* freed in their close callbacks */
    logs_tail_close(lg);
    sc_egress_close(lg->egress);
    lg->egress = NULL;
    sc_app_stopped(lg->app, 0);
}

/* The smallest sequence every output acknowledged. */
static uint64_t acked_all(const struct logs *lg)
{
    uint64_t acked = lg->seq;
    for (size_t i = 0; i < lg->nouts; i++) {
        if (lg->outs[i]->ack.acked < acked) {
            acked = lg->outs[i]->ack.acked;
        }
    }
    return acked;
}

void logs_drain_step(struct logs *lg)
{
    struct logs_state *st = sc_container_of(lg, struct logs_state, lg);
    if (lg->stopped) {
        return;
    }
    bool read = logs_tail_drain(lg);
    /* Batches go out as they are read: a drain does not wait for batch_wait. */
    for (size_t i = 0; i < lg->nouts; i++) {
        logs_out_flush(lg->outs[i]);
    }
    if (lg->stopped || !read) {
        return;
    }
    for (size_t i = 0; i < lg->nouts; i++) {
        if (!logs_out_idle(lg->outs[i])) {
            return; /* logs_on_ack finishes once the last batch is acknowledged */
        }
    }
    finish_stop(st);
}

void logs_on_ack(struct logs *lg)
{
    struct logs_state *st = sc_container_of(lg, struct logs_state, lg);
    if (lg->stopped) {
        return;
    }
    logs_tail_commit(lg, false);
    if (lg->stopping) {
        /* Acknowledgements arrive from inside a read (file outputs write synchronously): the
         * drain goes on from the idle handle, never by reading here. */
        if (!lg->drain_read) {
            if (!logs_backpressured(lg)) {
                logs_tail_resume(lg);
            }
            return;
        }
        for (size_t i = 0; i < lg->nouts; i++) {
            if (!logs_out_idle(lg->outs[i])) {
                return;
            }
        }
        finish_stop(st);
        return;
    }
    if (lg->paused && !logs_backpressured(lg)) {
        logs_tail_unpause(lg);
    }
}

static int compile(const char *pat, pcre2_code **out, const char *what, char **err)
{
    *out = NULL;
    if (sc_lazylib_pcre2_load(err) < 0) {
        return SC_ECONFIG;
    }
    int ec;
    PCRE2_SIZE off;
    *out = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
                         PCRE2_UTF | PCRE2_MATCH_INVALID_UTF, &ec, &off, NULL);
    if (!*out) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof(msg));
        *err = sc_asprintf("%s: %s at offset %zu", what, (const char *)msg, (size_t)off);
        return SC_ECONFIG;
    }
    return 0;
}

static int logs_check(const void *cfgp, char **err)
{
    const struct logs_cfg *c = cfgp;
    pcre2_code *re = NULL;
    if (c->paths.n == 0 && !c->stdin_input) {
        *err = sc_asprintf("logs: set paths (--path GLOB) or stdin");
        return SC_ECONFIG;
    }
    if (c->parser == LOGS_P_REGEX && !c->regex) {
        *err = sc_asprintf("logs: the regex parser needs regex");
        return SC_ECONFIG;
    }
    if (c->regex && compile(c->regex, &re, "regex", err) < 0) {
        return SC_ECONFIG;
    }
    pcre2_code_free(re);
    re = NULL;
    if (c->multiline_start && compile(c->multiline_start, &re, "multiline_start", err) < 0) {
        return SC_ECONFIG;
    }
    pcre2_code_free(re);
    for (size_t i = 0; i < c->grep_keep.n + c->grep_drop.n; i++) {
        bool drop = i >= c->grep_keep.n;
        const char *rule = drop ? c->grep_drop.v[i - c->grep_keep.n] : c->grep_keep.v[i];
        const char *eq = strchr(rule, '=');
        if (!eq || eq == rule) {
            *err =
                sc_asprintf("%s %s: expected FIELD=REGEX", drop ? "grep_drop" : "grep_keep", rule);
            return SC_ECONFIG;
        }
        if (compile(eq + 1, &re, rule, err) < 0) {
            return SC_ECONFIG;
        }
        pcre2_code_free(re);
        re = NULL;
    }
    const struct logs_output_cfg *oc = c->outputs.v;
    for (size_t i = 0; i < c->outputs.n; i++) {
        bool file = oc[i].type == LOGS_O_FILE, net = oc[i].type >= LOGS_O_HTTP;
        if ((file && !oc[i].path) || (net && !oc[i].url)) {
            *err = sc_asprintf("outputs[%zu]: a %s output needs %s", i, out_types[oc[i].type],
                               file ? "path" : "url");
            return SC_ECONFIG;
        }
    }
    for (size_t i = 0; i < c->output_flags.n; i++) {
        const char *f = c->output_flags.v[i];
        const char *eq = strchr(f, '=');
        size_t tl = eq ? (size_t)(eq - f) : strlen(f);
        bool ok = false;
        for (size_t t = 0; out_types[t]; t++) {
            if (strlen(out_types[t]) == tl && strncmp(out_types[t], f, tl) == 0) {
                ok = t == LOGS_O_STDOUT ? true : eq && eq[1];
            }
        }
        if (!ok) {
            *err = sc_asprintf("--output %s: expected stdout, file=PATH, http=URL, loki=URL or "
                               "elasticsearch=URL",
                               f);
            return SC_ECONFIG;
        }
    }
    return 0;
}

static void on_metrics(struct sc_metrics *r, void *arg)
{
    struct logs *lg = arg;
    (void)r;
    for (size_t i = 0; i < lg->nouts; i++) {
        struct logs_out *o = lg->outs[i];
        sc_metrics_gauge_set(o->m.queue_bytes, (double)o->queue_bytes);
        sc_metrics_gauge_set(o->m.concurrency, o->limit);
        sc_metrics_gauge_set(o->m.in_flight, (double)o->inflight);
    }
}

static void init_metrics(struct logs *lg)
{
    struct sc_metrics *r = sc_app_metrics(lg->app);
    static const char *const lo[] = { "output", NULL };
    static const char *const lor[] = { "output", "reason", NULL };
    lg->m.lines_read = sc_metrics_counter(r, "sidecar_logs_lines_read_total", "Lines read.");
    lg->m.parse_errors = sc_metrics_counter(r, "sidecar_logs_parse_errors_total",
                                            "Records shipped raw because the parser failed.");
    lg->m.files_watched = sc_metrics_gauge(r, "sidecar_logs_files_watched", "Files open.");
    lg->m.truncated = sc_metrics_counter(r, "sidecar_logs_lines_truncated_total",
                                         "Lines cut at max_line_size (shipped, flagged).");
    lg->m.rotations =
        sc_metrics_counter(r, "sidecar_logs_rotations_total", "Files renamed away or removed.");
    lg->m.truncations = sc_metrics_counter(r, "sidecar_logs_copytruncate_total",
                                           "Files truncated in place (read again from 0).");
    lg->m.grep_dropped = sc_metrics_counter(r, "sidecar_logs_filtered_total",
                                            "Records dropped by grep_keep / grep_drop.");
    lg->m.skipped_bytes = sc_metrics_counter(
        r, "sidecar_logs_skipped_bytes_total",
        "Bytes never read: rotated files closed before their end at max_rotated_open.");
    lg->m.shipped = sc_metrics_family(r, SC_METRIC_COUNTER, "sidecar_logs_lines_shipped_total",
                                      "Records acknowledged by the output.", lo, NULL, 0);
    lg->m.bytes = sc_metrics_family(r, SC_METRIC_COUNTER, "sidecar_logs_bytes_shipped_total",
                                    "Encoded bytes acknowledged by the output.", lo, NULL, 0);
    lg->m.retries = sc_metrics_family(r, SC_METRIC_COUNTER, "sidecar_logs_retries_total",
                                      "Batch retries.", lo, NULL, 0);
    lg->m.dropped = sc_metrics_family(r, SC_METRIC_COUNTER, "sidecar_logs_dropped_total",
                                      "Records given up, by reason.", lor, NULL, 0);
    lg->m.queue_bytes = sc_metrics_family(r, SC_METRIC_GAUGE, "sidecar_logs_queue_bytes",
                                          "Bytes queued in the output.", lo, NULL, 0);
    lg->m.concurrency = sc_metrics_family(
        r, SC_METRIC_GAUGE, "sidecar_logs_output_concurrency",
        "Batches the output may have in flight now (adaptive concurrency's limit).", lo, NULL, 0);
    lg->m.in_flight = sc_metrics_family(r, SC_METRIC_GAUGE, "sidecar_logs_output_in_flight",
                                        "Batches whose request is running.", lo, NULL, 0);
    sc_metrics_on_collect(r, on_metrics, lg);
}

static int build_grep(struct logs *lg, const struct logs_cfg *c, char **err)
{
    size_t n = c->grep_keep.n + c->grep_drop.n;
    lg->grep = sc_calloc(n + 1, sizeof(*lg->grep));
    for (size_t i = 0; i < n; i++) {
        bool drop = i >= c->grep_keep.n;
        const char *rule = drop ? c->grep_drop.v[i - c->grep_keep.n] : c->grep_keep.v[i];
        const char *eq = strchr(rule, '=');
        if (!eq || eq == rule) {
            *err = sc_asprintf("grep rule %s: expected FIELD=REGEX", rule);
            return SC_ECONFIG;
        }
        struct grep_rule *g = &lg->grep[lg->ngrep];
        if (compile(eq + 1, &g->re, rule, err) < 0) {
            return SC_ECONFIG;
        }
        g->md = pcre2_match_data_create_from_pattern(g->re, NULL);
        g->field = sc_strndup(rule, (size_t)(eq - rule));
        g->drop = drop;
        lg->ngrep++;
    }
    return 0;
}

/* Frees the compiled patterns of <lg> (parser regex, multiline start, grep rules). */
static void compiled_free(struct logs *lg)
{
    for (size_t i = 0; i < lg->ngrep; i++) {
        sc_free(lg->grep[i].field);
        pcre2_match_data_free(lg->grep[i].md);
        pcre2_code_free(lg->grep[i].re);
    }
    sc_free(lg->grep);
    lg->grep = NULL;
    lg->ngrep = 0;
    pcre2_match_data_free(lg->pc.md);
    pcre2_code_free(lg->pc.re);
    pcre2_match_data_free(lg->ml_md);
    pcre2_code_free(lg->ml_start);
    lg->pc.md = NULL;
    lg->pc.re = NULL;
    lg->ml_md = NULL;
    lg->ml_start = NULL;
}

/* Compiles the patterns of <c> into <lg>. On error, what was compiled is left for
 * compiled_free. */
static int compile_cfg(struct logs *lg, const struct logs_cfg *c, char **err)
{
    int rc;
    lg->pc.parser = (enum logs_parser)c->parser;
    lg->pc.time_key = c->time_key;
    lg->pc.time_format = c->time_format;
    lg->pc.keep_time_key = c->keep_time_key;
    if (c->regex) {
        if ((rc = compile(c->regex, &lg->pc.re, "regex", err)) < 0) {
            return rc;
        }
        lg->pc.md = pcre2_match_data_create_from_pattern(lg->pc.re, NULL);
    }
    if (c->multiline_start) {
        if ((rc = compile(c->multiline_start, &lg->ml_start, "multiline_start", err)) < 0) {
            return rc;
        }
        lg->ml_md = pcre2_match_data_create_from_pattern(lg->ml_start, NULL);
    }
    return build_grep(lg, c, err);
}

static int logs_start(struct sc_app *app, const void *cfgp, void **state, char **err)
{
    const struct logs_cfg *c = cfgp;
    struct logs_state *st = SC_NEW(struct logs_state);
    struct logs *lg = &st->lg;
    int rc;
    lg->app = app;
    lg->cfg = c;
    lg->loop = sc_app_loop(app);
    logs_tail_init(lg);
    logs_ev_init(&lg->ev);
    if (gethostname(lg->hostname, sizeof(lg->hostname) - 1) < 0) {
        lg->hostname[0] = 0;
    }
    /* Following many files needs descriptors: raise the soft limit to the hard one. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    init_metrics(lg);
    if ((rc = compile_cfg(lg, c, err)) < 0) {
        goto fail;
    }
    /* Outputs from --output flags, then from the file; stdout when none is given. */
    size_t nflag = c->output_flags.n;
    bool def_stdout = nflag == 0 && c->outputs.n == 0;
    st->nflag_outs = def_stdout ? 1 : nflag;
    st->flag_outs = sc_calloc(st->nflag_outs + 1, sizeof(*st->flag_outs));
    for (size_t i = 0; i < st->nflag_outs; i++) {
        struct logs_output_cfg *oc = &st->flag_outs[i];
        sc_config_defaults(output_opts, oc);
        const char *f = def_stdout ? "stdout" : c->output_flags.v[i];
        const char *eq = strchr(f, '=');
        size_t tl = eq ? (size_t)(eq - f) : strlen(f);
        for (size_t t = 0; out_types[t]; t++) {
            if (strlen(out_types[t]) == tl && strncmp(out_types[t], f, tl) == 0) {
                oc->type = (int)t;
            }
        }
        if (eq && oc->type == LOGS_O_FILE) {
            oc->path = sc_strdup(eq + 1);
        } else if (eq) {
            oc->url = sc_strdup(eq + 1);
        }
        if (oc->type == LOGS_O_FILE || oc->type == LOGS_O_STDOUT) {
            oc->batch_wait_ms = 200;
        }
    }
    size_t nouts = st->nflag_outs + c->outputs.n;
    lg->outs = sc_calloc(nouts + 1, sizeof(*lg->outs));
    for (size_t i = 0; i < nouts; i++) {
        const struct logs_output_cfg *oc =
            i < st->nflag_outs
                ? &st->flag_outs[i]
                : &((const struct logs_output_cfg *)c->outputs.v)[i - st->nflag_outs];
        if (oc->type != LOGS_O_FILE && oc->type != LOGS_O_STDOUT && !lg->egress) {
            lg->egress = sc_egress_new(lg->loop);
        }
        if ((rc = logs_out_new(lg, oc, &lg->outs[lg->nouts], err)) < 0) {
            goto fail_outs;
        }
        lg->nouts++;
    }
    if ((rc = logs_tail_start(lg, err)) < 0) {
        goto fail_outs;
    }
    sc_app_set_ready(app, true);
    sc_info("logs started", SC_LU("files", lg->nfiles), SC_LU("outputs", lg->nouts));
    *state = st;
    return 0;
fail_outs:
    for (size_t i = 0; i < lg->nouts; i++) {
        logs_out_close(lg->outs[i]);
    }
    lg->nouts = 0;
    logs_tail_close(lg);
    sc_egress_close(lg->egress);
    lg->egress = NULL;
    lg->stopped = true;
    *state = st; /* freed by cleanup once the handles have closed */
    sc_app_stopped(app, 1);
    return rc;
fail:
    *state = st;
    return rc;
}

static void logs_stop(struct sc_app *app, void *state, bool now)
{
    struct logs_state *st = state;
    struct logs *lg = &st->lg;
    (void)app;
    if (lg->stopped) {
        return;
    }
    if (!lg->stopping) {
        lg->stopping = true;
        logs_tail_stop(lg);
        if (!now) {
            logs_drain_step(lg);
            return;
        }
    }
    if (now) {
        uint64_t acked = acked_all(lg);
        sc_warn("drain cut short: what is not acknowledged stays uncommitted and is read again "
                "after a restart",
                SC_LU("records_unacknowledged", lg->seq - acked),
                SC_LU("bytes_unread", logs_tail_unread(lg)));
        finish_stop(st);
    }
}

/* Applies a new config to the running pipeline: paths, parser, multiline, enrichment, grep,
 * intervals and the outputs' batching, retry and limit settings. What the running state is built
 * around (the set of outputs and their endpoints and credentials, db, max_line_size, stdin) is
 * refused with a reason, and the old config keeps running. */
static int logs_reload(struct sc_app *app, void *state, const void *cfgp, char **err)
{
    struct logs_state *st = state;
    struct logs *lg = &st->lg;
    const struct logs_cfg *c = cfgp;
    const struct logs_output_cfg *no = c->outputs.v;
    (void)app; /* outputs, db, max_line_size and stdin are SC_OPT_RESTART: the app checked them */
    struct logs tmp;
    memset(&tmp, 0, sizeof(tmp));
    if (compile_cfg(&tmp, c, err) < 0) {
        compiled_free(&tmp);
        return SC_ECONFIG;
    }
    compiled_free(lg);
    lg->pc = tmp.pc;
    lg->ml_start = tmp.ml_start;
    lg->ml_md = tmp.ml_md;
    lg->grep = tmp.grep;
    lg->ngrep = tmp.ngrep;
    lg->cfg = c;
    for (size_t i = st->nflag_outs; i < lg->nouts; i++) {
        lg->outs[i]->cfg = &no[i - st->nflag_outs];
    }
    for (size_t i = 0; i < lg->nouts; i++) {
        sc_free(lg->outs[i]->labels_json); /* the static labels may have changed */
        lg->outs[i]->labels_json = NULL;
        lg->outs[i]->es_index_stale = true; /* and the index pattern */
    }
    logs_tail_reconfigure(lg);
    sc_info("logs reloaded", SC_LU("paths", c->paths.n));
    return 0;
}

static void logs_cleanup(void *state)
{
    struct logs_state *st = state;
    if (!st) {
        return;
    }
    struct logs *lg = &st->lg;
    for (size_t i = 0; i < st->nflag_outs; i++) {
        sc_config_free(output_opts, &st->flag_outs[i]);
    }
    sc_free(st->flag_outs);
    sc_free(lg->outs);
    compiled_free(lg);
    logs_ev_cleanup(&lg->ev);
    logs_pos_free(lg->known, lg->nknown);
    sc_free(st);
}

const struct sc_role sc_role_logs = {
    .name = "logs",
    .summary = "log shipper: tail, parse, enrich, ship to Loki/Elasticsearch/HTTP/file, "
               "at least once",
    .usage = logs_usage,
    .opts = logs_opts,
    .cfg_size = sizeof(struct logs_cfg),
    .admin_default = "127.0.0.1:15020",
    .check = logs_check,
    .start = logs_start,
    .stop = logs_stop,
    .reload = logs_reload,
    .cleanup = logs_cleanup,
};

// SPDX-License-Identifier: Apache-2.0
// `sidecar logs`, shared declarations: the config structs the option table fills, the event
// pipeline (tail -> multiline -> parse -> enrich -> outputs), the outputs' queues and the positions
// database. The key invariant is at-least-once delivery: every record gets a sequence number, every
// output acknowledges records strictly in sequence order, and a file offset is committed only once
// the smallest acknowledged sequence across all outputs covers every record read before it.
#ifndef SC_ROLES_LOGS_H
#define SC_ROLES_LOGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>
#include "core/regex.h"
#include <uv.h>

#include "app.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/json.h"
#include "core/list.h"
#include "core/metrics.h"
#include "core/str.h"
#include "net/egress.h"
#include "roles/logs/logs_ack.h"

enum logs_parser { LOGS_P_NONE, LOGS_P_JSON, LOGS_P_LOGFMT, LOGS_P_CRI, LOGS_P_REGEX };
enum logs_out_type { LOGS_O_FILE, LOGS_O_STDOUT, LOGS_O_HTTP, LOGS_O_LOKI, LOGS_O_ES };
enum logs_format { LOGS_F_NDJSON, LOGS_F_RAW, LOGS_F_JSON_ARRAY };
enum logs_loki_enc { LOGS_LOKI_JSON, LOGS_LOKI_PROTOBUF };
/* Marks a Loki record's line kept unquoted in a batch (logs_out.c encode_loki). */
#define LOKI_RAW "="

struct logs_output_cfg {
    char *name;
    int type;   /* enum logs_out_type */
    char *path; /* file */
    char *url;  /* http, loki, elasticsearch */
    int format; /* enum logs_format */
    bool gzip;
    int loki_encoding;           /* enum logs_loki_enc */
    struct sc_strv label_fields; /* loki: event fields promoted to stream labels */
    char *index;                 /* elasticsearch: index pattern with %Y %m %d */
    char *timestamp_field;       /* file/stdout/http: add the record time under this key */
    struct sc_kvv headers;
    char *bearer_token;
    char *user;
    char *password;
    int64_t batch_count;
    uint64_t batch_bytes;
    uint64_t batch_wait_ms;
    uint64_t buffer_limit;
    int64_t max_retries; /* 0: forever */
    uint64_t retry_initial_ms;
    uint64_t retry_max_ms;
    uint64_t timeout_ms;
    char *dead_letter;
    int64_t max_in_flight;     /* batches in flight at most */
    bool adaptive_concurrency; /* AIMD between 1 and max_in_flight; false: max_in_flight */
    bool ordered;              /* loki: one batch of a stream in flight at a time, in order */
    uint64_t max_push_bytes;   /* loki, ordered: queued batches merged into one push up to this */
    char *spool;               /* file of the on-disk spool; NULL: none */
    uint64_t spool_limit;      /* bytes */
};

struct logs_cfg {
    struct sc_strv paths;
    char *db;
    int read_from; /* 0 head, 1 tail */
    bool stdin_input;
    uint64_t poll_interval_ms;
    uint64_t refresh_interval_ms;
    uint64_t rotate_wait_ms;
    int64_t max_rotated_open;
    int64_t max_files;
    uint64_t max_line_size;
    uint64_t commit_interval_ms;

    int parser; /* enum logs_parser */
    char *regex;
    char *time_key;
    char *time_format;
    bool keep_time_key;

    char *multiline_start;
    bool multiline_indent;
    uint64_t multiline_timeout_ms;

    struct sc_kvv fields;
    struct sc_kvv labels;
    char *host_field;
    char *file_field;
    char *stream_field;
    struct sc_kvv rename;
    struct sc_strv remove;
    struct sc_strv grep_keep;
    struct sc_strv grep_drop;

    struct sc_vec outputs;       /* struct logs_output_cfg */
    struct sc_strv output_flags; /* --output TYPE[=TARGET] */
};

/* ---- records (logs_ev.c) ---- */

/* Value types of a record's fields. STR holds decoded text; INT, REAL and RAW (a nested object
 * or array) hold canonical compact JSON text; DEL marks a removed field. */
enum logs_vt {
    LOGS_V_STR,
    LOGS_V_INT,
    LOGS_V_REAL,
    LOGS_V_TRUE,
    LOGS_V_FALSE,
    LOGS_V_NULL,
    LOGS_V_RAW,
    LOGS_V_DEL
};

/* String escaping of the encoders. FAST: \" \\ \n \r \t, other controls and DEL as \u00xx
 * (the flat-record encoder's historic form); JANSSON: jansson's (\b \f short, \u00XX, DEL as
 * is), used wherever records used to be printed by jansson. */
enum logs_esc { LOGS_ESC_FAST = SC_JSON_COMPACT, LOGS_ESC_JANSSON = SC_JSON_JANSSON };

struct logs_field {
    struct sc_str key; /* valid UTF-8 without NUL */
    struct sc_str val; /* see enum logs_vt; empty for TRUE, FALSE, NULL */
    uint8_t type;      /* enum logs_vt */
};

struct logs_arena_blk;

/* A record: fields in order. Keys and values borrow the line being processed, the config, or the
 * record's arena; everything is reused by the next record after logs_ev_reset. The field array
 * and the arena grow with the largest record, bounded by max_line_size, and shrink back after an
 * unusually large one. */
struct logs_ev {
    struct logs_field *f;
    size_t n, cap; /* slots used (removed ones included) and allocated */
    size_t live;   /* fields not removed */
    uint32_t *idx; /* open-addressing index (slot + 1) once a record has many fields */
    size_t idx_cap;
    bool indexed;
    struct logs_arena_blk *arena;
};

void logs_ev_init(struct logs_ev *ev);
void logs_ev_cleanup(struct logs_ev *ev);
/* Forgets every field and the arena's contents (views into them become invalid). */
void logs_ev_reset(struct logs_ev *ev);
/* Returns <n> bytes that live until the next reset. */
char *logs_ev_alloc(struct logs_ev *ev, size_t n);
/* Returns a NUL-terminated copy of <s> in the arena. */
struct sc_str logs_ev_copy(struct logs_ev *ev, struct sc_str s);
/* Returns <s> itself when it is valid UTF-8 without NUL, else a copy in the arena with every
 * invalid byte (and NUL) replaced by U+FFFD (at most 3x longer). */
struct sc_str logs_ev_clean(struct logs_ev *ev, struct sc_str s);
/* Sets <key> (borrowed until the next reset, valid UTF-8) to a value: in place when the key
 * exists, else as the last field. */
void logs_ev_set(struct logs_ev *ev, struct sc_str key, enum logs_vt type, struct sc_str val);
/* The live field <key>, or NULL. */
const struct logs_field *logs_ev_get(const struct logs_ev *ev, struct sc_str key);
/* Removes <key>; returns whether it was there. */
bool logs_ev_del(struct logs_ev *ev, struct sc_str key);
/* Moves the value of <from> to <to> (set, then <from> removed). No-op when <from> is absent. */
void logs_ev_rename(struct logs_ev *ev, struct sc_str from, struct sc_str to);
/* The style the flat encoder uses for <ev>: JANSSON when a REAL or RAW value is present (such
 * records were printed by jansson), else FAST. */
enum logs_esc logs_ev_style(const struct logs_ev *ev);
/* Appends <s> as a JSON string. Returns 0 or the buffer's error. */
int logs_json_quote(struct sc_buf *b, struct sc_str s, enum logs_esc style);
/* Decodes <q>, one JSON string with its quotes (as logs_json_quote writes it), into <out>, which
 * must have room for q.len bytes (decoding never grows the text). Returns the decoded length, or
 * -1 when <q> is not exactly one string that logs_ev_parse_json would accept (bad escapes, control
 * characters, invalid UTF-8, \u0000, trailing bytes); <out> is then undefined. */
ssize_t logs_json_unquote(char *out, struct sc_str q);
/* Appends <ev> as one compact JSON object. <first> (may be NULL) is put first, with the value
 * of a field of the same name when the record has one; <last> (may be NULL) is put last unless
 * the record has a field of that name. On error the buffer is left as it was. */
int logs_ev_dump(struct sc_buf *b, const struct logs_ev *ev, enum logs_esc style,
                 const struct logs_field *first, const struct logs_field *last);
/* Appends <ev>'s JSON (as logs_ev_dump in LOGS_ESC_JANSSON with no extra field writes it) quoted
 * as one JSON string in LOGS_ESC_JANSSON, byte for byte what logs_json_quote writes for that
 * text, in one pass (Loki's JSON push carries each line so). On error the buffer is left as it
 * was. */
int logs_ev_dump_quoted(struct sc_buf *b, const struct logs_ev *ev);
/* Parses <line> as one JSON object into <ev> (which must be empty), strictly as jansson's
 * json_loadb would accept it: valid UTF-8, no \u0000, integers within long long, finite reals,
 * at most 2048 levels; duplicate keys keep the first place and the last value. Returns 0, or
 * SC_EINVAL when the line is not such an object (<ev> then holds a prefix: reset it). */
int logs_ev_parse_json(struct logs_ev *ev, struct sc_str line);

/* One record on its way to the outputs: <ev> its fields; <raw> the original line(s) without the
 * newline; <ts_ns> the record time. */
struct logs_rec {
    struct logs_ev *ev;
    struct sc_str raw;
    int64_t ts_ns;
    uint64_t seq;
};

/* ---- parsers (logs_parse.c): pure functions, fuzzed ---- */

/* Compiled parser settings. */
struct logs_parse_cfg {
    enum logs_parser parser;
    pcre2_code *re; /* LOGS_P_REGEX */
    pcre2_match_data *md;
    const char *time_key;    /* may be NULL */
    const char *time_format; /* strptime format, "rfc3339", "unix", "unix_ms"; NULL: rfc3339 */
    bool keep_time_key;
};

/* Parses <line> (borrowed: the record's views may point into it) into <ev>, after resetting it,
 * with pc->parser (LOGS_P_CRI is treated as LOGS_P_NONE here: the tailer splits CRI framing
 * first with logs_cri_split). Invalid input never fails: the record is then
 * {"message": <line>, "parse_error": true} and <*parse_error> is set. Invalid UTF-8 is replaced
 * by U+FFFD in strings. Sets <*ts_ns> when a time was extracted (left unchanged otherwise). */
void logs_parse_line(const struct logs_parse_cfg *pc, struct sc_str line, struct logs_ev *ev,
                     int64_t *ts_ns, bool *parse_error);

/* Splits a CRI log line "TIME STREAM P|F MESSAGE" into views inside <line>. Returns 0, or
 * -EINVAL when the framing is wrong. */
int logs_cri_split(struct sc_str line, struct sc_str *time, struct sc_str *stream, bool *partial,
                   struct sc_str *msg);

/* Parses a timestamp <s> with <format> ("rfc3339" or NULL, "unix", "unix_ms", "unix_ns", or a
 * strptime format read as UTC). Returns 0 and sets <*ns>, or -EINVAL. */
int logs_parse_time(struct sc_str s, const char *format, int64_t *ns);

/* Parses logfmt <line> into <ev> (empty). Returns 0, or SC_EINVAL when it is not logfmt. */
int logs_parse_logfmt(struct sc_str line, struct logs_ev *ev);

/* Returns true when <line> continues the previous record by the built-in rule: it starts with a
 * space or a tab, or with "Caused by:" or "... N more" (Java). */
bool logs_is_continuation(struct sc_str line);

/* ---- positions database (logs_pos.c) ---- */

/* head_len bytes at the start of the file hash to head (FNV-1a 64; head_len 0: unknown). Inode
 * numbers are reused once a file is deleted: a stored position applies to a file with the same
 * (dev, ino) only when its head matches too. */
#define LOGS_POS_HEAD_MAX 1024

struct logs_pos {
    uint64_t dev, ino, offset;
    uint64_t head_len, head;
    char *path;
};

uint64_t logs_pos_head(const char *p, size_t n);

/* Loads the positions file at <path> (missing: empty). Returns 0 with a new array in <*out> and
 * its length in <*n>, or a negative error with a new message in <*err> (the file is corrupt). */
int logs_pos_load(const char *path, struct logs_pos **out, size_t *n, char **err);

/* Writes <n> positions to <path> atomically: a temporary file, fsync, rename, fsync of the
 * directory. Returns 0 or a negative errno (the old file is then untouched). */
int logs_pos_save(const char *path, const struct logs_pos *p, size_t n);

void logs_pos_free(struct logs_pos *p, size_t n);

/* ---- outputs (logs_out.c) ---- */

struct logs;
struct logs_out;

struct logs_out_metrics {
    struct sc_metric *shipped, *bytes, *retries, *queue_bytes;
    struct sc_metric *dropped_rejected, *dropped_retries, *dropped_oversize;
    struct sc_metric *concurrency, *in_flight;
};

/* loki: a record of a batch as encode_loki wrote it, "<labels>\t<ts>\t<line>\n". */
struct logs_loki_item {
    int64_t ts;          /* the time written, in nanoseconds (never negative) */
    uint32_t labels_len; /* the labels' JSON at the item's start */
    uint16_t ts_len;     /* the time's digits, after the labels and a tab */
    bool same;           /* the labels are the previous item's (in the same batch) */
};

/* A sealed batch: a body plus item boundaries, the highest sequence it holds, and its unit in the
 * output's acknowledgement state (logs_ack.h). Several may be in flight at once. */
struct logs_batch {
    struct sc_list node;
    struct logs_out *out;
    struct sc_buf body;
    size_t *items; /* end offset of each item in body */
    size_t nitems;
    /* loki: what encode_loki knew of each item, so that a batch built in memory is not parsed
     * back (NULL for a batch read from the spool, whose text is parsed) */
    struct logs_loki_item *loki;
    uint64_t last_seq;
    uint64_t unit; /* logs_ack unit; unused for batches read back from the spool */
    uint32_t attempts;
    bool from_spool;
    bool in_flight;
    uint64_t retry_at_ms; /* not sent again before this loop time (a failed attempt) */
    uint64_t spool_len;   /* bytes of its spool record */
    struct sc_egress_xfer *xfer;
    struct sc_buf send; /* the request body when it differs from body (encoded, gzipped) */
    uint64_t *streams;  /* loki: hashes of the batch's stream label sets, sorted, unique */
    size_t nstreams;
    /* loki, ordered: the next queued batch sent in this batch's request (a chain of followers
     * in queue order), and whether this batch is such a follower. A follower is in flight with
     * its leader but counts no request of its own; logs_out_done settles the chain. */
    struct logs_batch *merged;
    bool member;
};

struct logs_out {
    struct logs *lg;
    const struct logs_output_cfg *cfg;
    char *name;
    struct sc_list queue; /* struct logs_batch, oldest first; the head is in flight */
    struct logs_batch *building;
    size_t body_hint; /* the size of the last batches sealed (new ones start with room for it) */
    size_t queue_bytes;
    struct logs_ack ack; /* what positions may be committed past (the at-least-once invariant) */
    unsigned inflight;   /* batches whose request is running */
    bool closing;
    bool pumping, repump;
    struct logs_batch *spool_batch; /* reused for batches read back from the spool */
    int spool_fd;
    uint64_t spool_rd, spool_wr, spool_pending;
    uv_timer_t batch_timer;
    uv_timer_t retry_timer;
    int nhandles;
    int fd; /* file output */
    /* Adaptive concurrency (slow start, then AIMD): the current limit, the mean round-trip time,
     * when the limit last went down and up, whether sending waited for the limit since it last
     * went up, and whether the limit still grows by one per response (no sign of congestion yet).
     */
    double limit;
    double rtt_ms;
    uint64_t decreased_ms, increased_ms;
    bool limited;
    bool slow_start;
    char *labels_json; /* loki without label_fields: the labels' JSON, made once */
    size_t labels_json_len;
    /* loki: the seconds of the last record's time and their decimal digits (put_ts) */
    uint64_t loki_secs;
    char loki_secs_text[16];
    size_t loki_secs_len;
    char *es_index, *es_action; /* elasticsearch: the last index name and its action line */
    /* The last second formatted (RFC 3339 timestamps, elasticsearch index names): its broken-down
     * time and "YYYY-MM-DDTHH:MM:SS", so that gmtime and strftime run once a second. */
    int64_t ts_secs;
    bool ts_valid, es_index_stale;
    struct tm ts_tm;
    char ts_prefix[32];
    size_t ts_prefix_len;
    char *endpoint; /* owned copies: a reload frees the config while a request runs */
    char *bearer, *user, *password;
    struct sc_kv *hdrs;
    size_t nhdrs;
    struct logs_out_metrics m;
};

/* Creates the output for <cfg> (borrowed). Returns 0 and <*out>, or an error with a message. */
int logs_out_new(struct logs *lg, const struct logs_output_cfg *cfg, struct logs_out **out,
                 char **err);

/* Appends one record. Never fails: a record the output cannot encode is counted as dropped and
 * acknowledged in order. */
void logs_out_append(struct logs_out *o, const struct logs_rec *r);

/* Seals the building batch and starts sending if idle (drain, batch timer). */
void logs_out_flush(struct logs_out *o);

/* True when the output's memory queue is at buffer_limit and cannot overflow to its spool. */
bool logs_out_full(const struct logs_out *o);

/* True when nothing is queued or in flight. */
bool logs_out_idle(const struct logs_out *o);

/* Closes the output's handles and frees it once they have closed (cancels anything in flight). */
void logs_out_close(struct logs_out *o);

/* The on-disk spool (logs_spool.c). open: opens or recovers cfg->spool (0, or an error with a
 * message). has_room: whether <n> more bytes fit under spool_limit. append: writes and fsyncs a
 * sealed batch (0, SC_ETOOBIG when full, or an I/O error). read: loads the oldest spooled batch
 * into <b> (returns b, or NULL when the spool is empty or corrupt). consume: forgets the oldest
 * batch after its delivery (durably). reset: empties the spool (after corruption). */
int logs_spool_open(struct logs_out *o, char **err);
bool logs_spool_has_room(const struct logs_out *o, size_t n);
int logs_spool_append(struct logs_out *o, const struct logs_batch *b);
struct logs_batch *logs_spool_read(struct logs_out *o, struct logs_batch *b);
void logs_spool_consume(struct logs_out *o, const struct logs_batch *b);
void logs_spool_reset(struct logs_out *o);

/* Sends one batch for the HTTP-based outputs (logs_http.c): calls logs_out_done when finished. */
void logs_http_send(struct logs_out *o, struct logs_batch *b);

/* Cancels <b>'s transfer, if any (its callback never fires). */
void logs_http_cancel(struct logs_batch *b);

/* Reports the end of an attempt on <b>: <ok> acknowledges it; <retry> schedules a retry with
 * backoff, or after <retry_after_ms> when the backend asked for it (else it is dropped and counted
 * with <reason>). */
void logs_out_done(struct logs_out *o, struct logs_batch *b, bool ok, bool retry,
                   const char *reason, uint64_t retry_after_ms);

/* Feeds one response to the adaptive concurrency: its round-trip time, and whether the backend
 * pushed back (429, 503, a timeout or a transport error). */
void logs_out_feedback(struct logs_out *o, double rtt_s, bool pushed_back);

/* Appends a line to the output's dead-letter file (when configured). */
void logs_out_dead_letter(struct logs_out *o, const char *p, size_t n);

/* ---- the role (logs.c) ---- */

struct logs_file;

struct logs_metrics {
    struct sc_metric *lines_read, *parse_errors, *files_watched, *truncated, *rotations,
        *truncations, *grep_dropped, *skipped_bytes;
    struct sc_metric_family *shipped, *bytes, *retries, *dropped, *queue_bytes, *concurrency,
        *in_flight;
};

struct logs {
    struct sc_app *app;
    const struct logs_cfg *cfg;
    uv_loop_t *loop;
    struct logs_parse_cfg pc;
    pcre2_code *ml_start;
    pcre2_match_data *ml_md;
    struct grep_rule *grep;
    size_t ngrep;
    char hostname[256];
    struct logs_ev ev; /* the record being processed, reused */

    struct logs_out **outs;
    size_t nouts;
    struct sc_egress *egress;

    struct sc_list files; /* struct logs_file */
    size_t nfiles;
    size_t nrotated;
    struct logs_pos *known; /* positions loaded at start-up */
    size_t nknown;
    uint64_t seq; /* last sequence assigned */
    uint64_t committed_seq;
    bool paused; /* reading stopped for backpressure; written by logs_tail.c only */
    bool stopping;
    bool stopped;
    bool drain_read; /* the drain has read every file to its end and flushed partial records */
    bool db_dirty;
    bool scan_pending; /* an inotify event asked for a rescan: done once per loop pass */
    uint64_t last_commit_ms;

    uv_timer_t poll_timer;
    uv_timer_t scan_timer;
    uv_timer_t commit_timer;
    uv_timer_t ml_timer;
    uv_idle_t read_idle;
    struct sc_list watches; /* struct logs_watch, one per pattern with a plain directory */
    int inotify_fd;         /* -1: polling only; written by logs_tail.c only */
    uv_poll_t inotify_poll;
    uint32_t moved_cookie[16]; /* IN_MOVED_FROM of watched names, the latest ones */
    unsigned moved_next;
    struct logs_ident {
        uint64_t dev, ino, size;
        int64_t ctime_s, ctime_ns;
    } closed[64]; /* files read to their end and closed that still exist, the latest ones */
    unsigned closed_next;

    /* stdin input */
    uv_pipe_t stdin_pipe;
    bool stdin_open;
    struct logs_file *stdin_file;

    struct logs_metrics m;
};

/* Called by an output after acknowledging: advances committed positions, resumes reading when
 * the queues went below their limits. */
void logs_on_ack(struct logs *lg);

/* Returns true when some output's queue is at its memory limit. */
bool logs_backpressured(const struct logs *lg);

/* Drives a drain one step (from the read idle handle and after acknowledgements): reads files
 * towards their end, seals batches, and reports stopped once everything read is acknowledged. */
void logs_drain_step(struct logs *lg);

/* Tail (logs_tail.c). */
int logs_tail_start(struct logs *lg, char **err);
/* Begins a drain: stops timers, watches and stdin, rescans the paths once and notes each file's
 * size as the end the drain reads to. */
void logs_tail_stop(struct logs *lg);
/* Reads every file towards the end noted by logs_tail_stop, one budget per file per call. Returns
 * true once all are read and their partial lines and multiline/CRI groups were emitted; false
 * while more is to be read (the read idle handle is started, or an acknowledgement resumes it
 * when an output is full). */
bool logs_tail_drain(struct logs *lg);
/* Schedules the next read (during a drain: the next drain step) on the read idle handle, so an
 * acknowledgement that arrives from inside a read never reads again from there. */
void logs_tail_resume(struct logs *lg);
/* Clears the backpressure pause (the tailer owns <paused>: it sets it when outputs are full) and
 * schedules the next read. */
void logs_tail_unpause(struct logs *lg);
/* Prepares the tailer's state (no file, no watch, no inotify descriptor) so logs_tail_close is
 * safe even when logs_tail_start never ran. */
void logs_tail_init(struct logs *lg);
/* Bytes of the files that the drain has not handed to the outputs yet. */
uint64_t logs_tail_unread(struct logs *lg);
void logs_tail_read_all(struct logs *lg);
void logs_tail_commit(struct logs *lg, bool force);
void logs_tail_flush_multiline(struct logs *lg, bool all);
void logs_tail_close(struct logs *lg);
/* Applies lg->cfg's intervals after a reload and rescans the paths. */
void logs_tail_reconfigure(struct logs *lg);

/* Runs one complete record (raw text of a whole line or multiline group) from <file_path> through
 * parse, enrich and grep, then to every output. <stream> may be empty. <ts_ns> is the record time
 * from the framing (CRI), or 0 for the read time unless the parser extracts one. <flags> are
 * LOGS_REC_* bits, added to the record as truncated=true / parse_error=true. */
enum { LOGS_REC_TRUNCATED = 1, LOGS_REC_PARSE_ERROR = 2 };
void logs_emit(struct logs *lg, struct sc_str raw, const char *file_path, struct sc_str stream,
               unsigned flags, int64_t ts_ns);

#endif

// SPDX-License-Identifier: Apache-2.0
// Strict parser and writer for the Prometheus text exposition format 0.0.4 and OpenMetrics text
// 1.0. A parse copies the input once into the set's arena (or reads it in place when it is there
// already) and then only makes views into it (or, streamed, copies only the strings it keeps)
// (label values with escapes are unescaped into the arena), so a set owns everything it points to
// and stays valid after the caller's buffer is gone. The parser rejects, with line:col and a static
// reason, anything a Prometheus server would refuse: bad names, bad escapes, label values that are
// not UTF-8, duplicate labels, a second HELP/TYPE for a family, unknown types, buckets without
// "le", values that are not floats, samples of a typed family that are not contiguous with it.
// Exemplars are checked for shape and skipped. Every set is capped in samples and labels, so a
// target cannot grow memory past what the caller allows.
#ifndef SC_ROLES_METRICS_PROM_H
#define SC_ROLES_METRICS_PROM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/str.h"

enum metrics_prom_type {
    METRICS_PROM_UNTYPED = 0, /* "untyped" in 0.0.4, "unknown" in OpenMetrics */
    METRICS_PROM_COUNTER,
    METRICS_PROM_GAUGE,
    METRICS_PROM_HISTOGRAM,
    METRICS_PROM_SUMMARY,
    METRICS_PROM_GAUGEHISTOGRAM, /* OpenMetrics only */
    METRICS_PROM_INFO,           /* OpenMetrics only */
    METRICS_PROM_STATESET,       /* OpenMetrics only */
};

enum metrics_prom_format {
    METRICS_PROM_FMT_TEXT = 0,    /* text/plain; version=0.0.4 */
    METRICS_PROM_FMT_OPENMETRICS, /* application/openmetrics-text; version=1.0.0 */
};

struct metrics_prom_label {
    struct sc_str name;
    struct sc_str value;
};

struct metrics_prom_sample {
    struct sc_str name; /* the full sample name, e.g. "x_bucket" */
    struct metrics_prom_label *labels;
    uint32_t nlabels;
    bool has_ts;
    double value;
    int64_t ts_ms; /* milliseconds since the epoch when has_ts */
};

struct metrics_prom_family {
    struct sc_str name; /* as in the metadata; an OpenMetrics counter "x" is stored as "x_total"
                           so both formats share one name space */
    struct sc_str help;
    struct sc_str unit;
    bool has_help;
    bool has_type;
    enum metrics_prom_type type;
    struct metrics_prom_sample *samples;
    size_t nsamples, cap; /* cap 0 with samples: borrowed (metrics_prom_family_share) */
};

struct metrics_prom_arena_block;

/* A bump allocator: everything a set points to lives here and is freed at once. */
struct metrics_prom_arena {
    struct metrics_prom_arena_block *head;
    size_t used; /* bytes handed out, for caps */
};

struct metrics_prom_limits {
    size_t max_samples;  /* over it: the parse fails */
    size_t max_labels;   /* per sample */
    size_t extra_labels; /* free slots left after each sample's labels (its labels array holds
                            nlabels + extra_labels), so labels can be added later in place */
};

struct metrics_prom_set {
    struct metrics_prom_arena arena;
    struct metrics_prom_family **fams; /* in order of first appearance */
    size_t nfams, fcap;
    struct metrics_prom_family **index; /* open addressing on name, size a power of two */
    size_t icap;
    size_t nsamples;
};

struct metrics_prom_error {
    uint32_t line;   /* 1-based */
    uint32_t col;    /* 1-based, in bytes */
    const char *msg; /* static */
};

/* Prepares an empty set. */
void metrics_prom_set_init(struct metrics_prom_set *s);

/* Frees everything the set owns; the set is empty and reusable. NULL-safe. */
void metrics_prom_set_cleanup(struct metrics_prom_set *s);

/* Returns <n> bytes from the set's arena, aligned for any type; never NULL. */
void *metrics_prom_alloc(struct metrics_prom_set *s, size_t n);

/* Returns true when <p>[0..len) lies in the set's arena (metrics_prom_parse then reads it in place
 * instead of copying it: read a large input straight into metrics_prom_alloc'd memory). */
bool metrics_prom_owns(const struct metrics_prom_set *s, const char *p, size_t len);

/* Takes <p> (<len> bytes from sc_malloc) into the set's arena: freed with the set, and read in
 * place by metrics_prom_parse. */
void metrics_prom_adopt(struct metrics_prom_set *s, char *p, size_t len);

/* Returns a copy of <v> in the set's arena. */
struct sc_str metrics_prom_strdup(struct metrics_prom_set *s, struct sc_str v);

/* Parses <len> bytes of <fmt> exposition from <p> (borrowed for the call and copied, unless it
 * lies in <s>'s arena already) into <s>, adding its
 * families (a family already in <s> gets the new samples). Returns 0; SC_EINVAL with <err> set
 * (line and column of the offending byte, a static reason); or SC_ELIMIT when <lim> was exceeded.
 * On failure <s> may hold part of the input and must still be cleaned up. */
int metrics_prom_parse(struct metrics_prom_set *s, const char *p, size_t len,
                       enum metrics_prom_format fmt, const struct metrics_prom_limits *lim,
                       struct metrics_prom_error *err);

/* An incremental parse into a set, for input that arrives in pieces (a response body, a file read
 * in blocks): the same grammar, checks, limits and errors (line and column) as metrics_prom_parse,
 * but the strings the set keeps are copied (names interned) so each piece can be dropped after the
 * call, and memory holds the parsed samples plus one partial line instead of the whole input.
 * new: <lim> is copied; a line may be up to <max_line> bytes (longer: SC_ELIMIT "line too long").
 * feed: parses the complete lines of <p> (borrowed for the call) and keeps a partial last line.
 * end: parses what is left (a last line without a newline) and checks the end (# EOF).
 * Both return 0 or the error metrics_prom_parse would have returned, with <err> set; after an error
 * every later call returns it again. The set must be cleaned up even after an error. free:
 * NULL-safe. */
struct metrics_prom_stream;
struct metrics_prom_stream *metrics_prom_stream_new(struct metrics_prom_set *s,
                                                    enum metrics_prom_format fmt,
                                                    const struct metrics_prom_limits *lim,
                                                    size_t max_line);
int metrics_prom_stream_feed(struct metrics_prom_stream *st, const char *p, size_t len,
                             struct metrics_prom_error *err);
int metrics_prom_stream_end(struct metrics_prom_stream *st, struct metrics_prom_error *err);
void metrics_prom_stream_free(struct metrics_prom_stream *st);

/* Returns the family of <s> named <name>, or NULL. */
struct metrics_prom_family *metrics_prom_find(const struct metrics_prom_set *s, struct sc_str name);

/* Returns the family named <name>, creating it (with <type>, no samples) when absent. The name is
 * borrowed and must live as long as the set (arena or static). */
struct metrics_prom_family *metrics_prom_family_get(struct metrics_prom_set *s, struct sc_str name,
                                                    enum metrics_prom_type type);

/* Appends a sample to <f>; its name and labels are borrowed like the family's name. Returns the
 * new sample. */
struct metrics_prom_sample *metrics_prom_sample_add(struct metrics_prom_set *s,
                                                    struct metrics_prom_family *f);

/* Makes the empty family <dst> of <s> use <src>'s samples without copying them: <src>'s set must
 * outlive <s> or be unchanged until then. The first metrics_prom_sample_add on <dst> copies them.
 */
void metrics_prom_family_share(struct metrics_prom_set *s, struct metrics_prom_family *dst,
                               const struct metrics_prom_family *src);

/* Appends <f> (its samples may be empty) as <fmt> to <out>. Returns 0 or SC_ETOOBIG. */
int metrics_prom_render_family(const struct metrics_prom_family *f, enum metrics_prom_format fmt,
                               struct sc_buf *out);

/* Appends every family of <s> with at least one sample, then "# EOF" for OpenMetrics. Returns 0
 * or SC_ETOOBIG from <out>'s cap. */
int metrics_prom_render(const struct metrics_prom_set *s, enum metrics_prom_format fmt,
                        struct sc_buf *out);

/* Where a resumable rendering stands; zero it to start. */
struct metrics_prom_render_state {
    size_t fam, sample;
    bool in_family, skip_created, eof;
};

/* Renders <s> like metrics_prom_render, a piece at a time: appends until <out> holds at least
 * <chunk> bytes (a sample is never split) or the set is done. Returns 1 when done, 0 when more
 * remains, or SC_ETOOBIG when <out>'s cap is too small for the next line. <s> must not change
 * between calls. */
int metrics_prom_render_some(const struct metrics_prom_set *s, enum metrics_prom_format fmt,
                             struct metrics_prom_render_state *st, struct sc_buf *out,
                             size_t chunk);

/* Returns about how many bytes metrics_prom_render will write (a little more, to size a buffer
 * once). */
size_t metrics_prom_render_estimate(const struct metrics_prom_set *s);

/* Returns the type's name in <fmt> ("untyped" vs "unknown"). */
const char *metrics_prom_type_name(enum metrics_prom_type t, enum metrics_prom_format fmt);

/* Returns true when <n> is <base> followed by <suffix> ("x_total" is "x" + "_total"). */
static inline bool metrics_prom_has_suffix(struct sc_str n, struct sc_str base, const char *suffix)
{
    size_t sl = strlen(suffix);
    return n.len == base.len + sl && memcmp(n.p, base.p, base.len) == 0 &&
           memcmp(n.p + base.len, suffix, sl) == 0;
}

/* Returns true when <name> is a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*) or, with <label>,
 * a valid label name ([a-zA-Z_][a-zA-Z0-9_]*). */
bool metrics_prom_valid_name(struct sc_str name, bool label);

#endif

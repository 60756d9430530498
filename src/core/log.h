// SPDX-License-Identifier: Apache-2.0
// Structured logging to stderr: a message plus typed key/value fields, rendered as one JSON object
// per line or as "time level msg key=value" text. Each line goes out in one write(2), so lines from
// worker threads never interleave. Fields are passed by value and end with SC_LEND; the macros add
// the terminator:
//     sc_info("listener bound", SC_LS("addr", addr), SC_LI("workers", n));
#ifndef SC_CORE_LOG_H
#define SC_CORE_LOG_H

#include <stdbool.h>
#include <stddef.h>

#include "core/json.h" /* sc_json_escape, which the log writers of every layer use */

enum sc_log_level { SC_LOG_DEBUG, SC_LOG_INFO, SC_LOG_WARN, SC_LOG_ERROR, SC_LOG_OFF };
enum sc_log_format { SC_LOG_TEXT, SC_LOG_JSON };

enum sc_log_ftype {
    SC_LF_END,
    SC_LF_STR,
    SC_LF_STRN,
    SC_LF_INT,
    SC_LF_UINT,
    SC_LF_DBL,
    SC_LF_BOOL
};

struct sc_log_field {
    const char *key;
    enum sc_log_ftype type;
    size_t len; /* SC_LF_STRN only */
    union {
        const char *s;
        long long i;
        unsigned long long u;
        double d;
        bool b;
    } v;
};

#define SC_LS(k, val) ((struct sc_log_field){ .key = (k), .type = SC_LF_STR, .v.s = (val) })
#define SC_LSN(k, val, n)                                                                          \
    ((struct sc_log_field){ .key = (k), .type = SC_LF_STRN, .len = (n), .v.s = (val) })
#define SC_LI(k, val) ((struct sc_log_field){ .key = (k), .type = SC_LF_INT, .v.i = (val) })
#define SC_LU(k, val) ((struct sc_log_field){ .key = (k), .type = SC_LF_UINT, .v.u = (val) })
#define SC_LD(k, val) ((struct sc_log_field){ .key = (k), .type = SC_LF_DBL, .v.d = (val) })
#define SC_LB(k, val) ((struct sc_log_field){ .key = (k), .type = SC_LF_BOOL, .v.b = (val) })
/* An error code as its message. */
#define SC_LERR(err) SC_LS("error", sc_strerror(err))
#define SC_LEND ((struct sc_log_field){ .key = NULL, .type = SC_LF_END })

extern enum sc_log_level sc_log_min_level;

/* Sets the minimum level and the format; also the "role" field added to every line (borrowed,
 * must outlive logging; NULL for none). */
void sc_log_setup(enum sc_log_level level, enum sc_log_format format, const char *role);

/* Parses "debug|info|warn|error|off" and "json|text". Return 0 or -EINVAL. */
int sc_log_level_parse(const char *s, enum sc_log_level *out);
int sc_log_format_parse(const char *s, enum sc_log_format *out);

/* Writes one line at <level> with <msg> and the fields that follow, up to SC_LEND. Fields are
 * borrowed for the call only. Lines over 16 KiB are cut and marked truncated. */
void sc_log_at(enum sc_log_level level, const char *msg, ...);

#define sc_log_enabled(level) ((level) >= sc_log_min_level)
#define sc_debug(...)                                                                              \
    do {                                                                                           \
        if (sc_log_enabled(SC_LOG_DEBUG)) {                                                        \
            sc_log_at(SC_LOG_DEBUG, __VA_ARGS__, SC_LEND);                                         \
        }                                                                                          \
    } while (0)
#define sc_info(...) sc_log_at(SC_LOG_INFO, __VA_ARGS__, SC_LEND)
#define sc_warn(...) sc_log_at(SC_LOG_WARN, __VA_ARGS__, SC_LEND)
#define sc_error(...) sc_log_at(SC_LOG_ERROR, __VA_ARGS__, SC_LEND)

#endif

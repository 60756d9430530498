// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the log parsers. The first byte picks the parser (json, logfmt, none, cri
// framing, timestamp formats); the rest is one line. Beyond "no crash", it abort()s when an
// invariant breaks:
//   - every parser returns a JSON object that serializes (so every string in it is valid UTF-8);
//   - a parse error yields exactly {"message": ..., "parse_error": true}, and the message has the
//     input's length when the input was valid UTF-8 without NUL (nothing dropped silently);
//   - logfmt either fails or yields at least one key;
//   - CRI framing, when accepted, returns views inside the input, in order, and P/F matches;
//   - logs_json_str never grows a string more than 3x and always yields valid UTF-8.
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "roles/logs/logs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok)
{
    if (!ok) {
        abort();
    }
}

static bool inside(struct sc_str v, struct sc_str outer)
{
    return v.len == 0 || (v.p >= outer.p && v.p + v.len <= outer.p + outer.len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    unsigned sel = data[0] % 5;
    struct sc_str line = sc_str_n((const char *)data + 1, size - 1);

    json_t *s = logs_json_str(line);
    check(s && json_string_length(s) <= line.len * 3);
    char *d = json_dumps(s, JSON_ENCODE_ANY);
    check(d != NULL);
    json_t *back = json_loads(d, JSON_DECODE_ANY, NULL);
    check(back && json_equal(back, s));
    json_decref(back);
    sc_free(d);

    if (sel <= 2) {
        static const enum logs_parser ps[] = { LOGS_P_JSON, LOGS_P_LOGFMT, LOGS_P_NONE };
        struct logs_parse_cfg pc = { .parser = ps[sel], .time_key = "ts", .keep_time_key = true };
        int64_t ts = -1;
        bool perr = false;
        json_t *ev = logs_parse_line(&pc, line, &ts, &perr);
        check(json_is_object(ev));
        char *out = json_dumps(ev, 0);
        check(out != NULL);
        sc_free(out);
        if (perr) {
            check(json_object_size(ev) == 2);
            check(json_is_true(json_object_get(ev, "parse_error")));
            json_t *m = json_object_get(ev, "message");
            check(json_is_string(m));
            if (json_string_length(s) == line.len) {
                check(json_string_length(m) == line.len);
            }
        } else if (ps[sel] == LOGS_P_NONE) {
            check(json_object_size(ev) == 1);
        } else if (ps[sel] == LOGS_P_LOGFMT) {
            check(json_object_size(ev) >= 1);
        }
        json_decref(ev);
    } else if (sel == 3) {
        struct sc_str t, st, m;
        bool p;
        if (logs_cri_split(line, &t, &st, &p, &m) == 0) {
            check(inside(t, line) && inside(st, line) && inside(m, line));
            check(t.len > 0 && st.len > 0);
            check(t.p < st.p && (m.len == 0 || st.p < m.p));
        }
    } else {
        static const char *const fmts[] = { NULL, "unix", "unix_ms", "%Y-%m-%d %H:%M:%S" };
        int64_t ns = 0;
        logs_parse_time(line, fmts[line.len % 4], &ns);
    }
    json_decref(s);
    return 0;
}

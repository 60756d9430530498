// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the log parsers. The first byte picks the parser (json, logfmt, none, cri
// framing, timestamp formats); the rest is one line. Beyond "no crash", it abort()s when an
// invariant breaks:
//   - every parser yields a record that both encoders print as a JSON object jansson reads back
//     with as many keys (so every string in it is valid UTF-8);
//   - a parse error yields exactly {"message": ..., "parse_error": true}, and the message has the
//     input's length when the input was valid UTF-8 without NUL (nothing dropped silently);
//   - logfmt either fails or yields at least one key;
//   - CRI framing, when accepted, returns views inside the input, in order, and P/F matches;
//   - logs_ev_clean never grows a string more than 3x, always yields valid UTF-8 and leaves valid
//     text as it is; both string escapers print JSON strings that decode back to the input.
// The record is static and reused across inputs, as in the role (leaks would show at exit).
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/utf8.h"
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

/* Whether <s> is valid UTF-8 without NUL. */
static bool clean_utf8(struct sc_str s)
{
    for (size_t i = 0; i < s.len;) {
        size_t l = s.p[i] ? sc_utf8_seq((const unsigned char *)s.p + i, s.len - i) : 0;
        if (l == 0) {
            return false;
        }
        i += l;
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct logs_ev ev;
    static struct sc_buf b;
    static bool init;
    if (!init) {
        sc_buf_init(&b, 1u << 30);
        init = true;
    }
    if (size < 1) {
        return 0;
    }
    unsigned sel = data[0] % 5;
    struct sc_str line = sc_str_n((const char *)data + 1, size - 1);

    logs_ev_reset(&ev);
    struct sc_str s = logs_ev_clean(&ev, line);
    check(s.len <= line.len * 3 && clean_utf8(s));
    bool was_clean = s.len == line.len && (line.len == 0 || memcmp(s.p, line.p, s.len) == 0);
    check(was_clean == clean_utf8(line));
    for (int style = LOGS_ESC_FAST; style <= LOGS_ESC_JANSSON; style++) {
        /* Every quoted string is a JSON string that decodes back to itself. */
        sc_buf_reset(&b);
        check(logs_json_quote(&b, s, (enum logs_esc)style) == 0);
        json_error_t err;
        json_t *back = json_loadb(b.p, b.len, JSON_DECODE_ANY, &err);
        check(back && json_is_string(back) && json_string_length(back) == s.len &&
              (s.len == 0 || memcmp(json_string_value(back), s.p, s.len) == 0));
        json_decref(back);
    }

    if (sel <= 2) {
        static const enum logs_parser ps[] = { LOGS_P_JSON, LOGS_P_LOGFMT, LOGS_P_NONE };
        struct logs_parse_cfg pc = { .parser = ps[sel], .time_key = "ts", .keep_time_key = true };
        int64_t ts = -1;
        bool perr = false;
        logs_parse_line(&pc, line, &ev, &ts, &perr);
        /* Every record encodes to a JSON object, in both styles. */
        for (int style = LOGS_ESC_FAST; style <= LOGS_ESC_JANSSON; style++) {
            sc_buf_reset(&b);
            check(logs_ev_dump(&b, &ev, (enum logs_esc)style, NULL, NULL) == 0);
            json_error_t err;
            json_t *back = json_loadb(b.p, b.len, 0, &err);
            check(back && json_is_object(back) && json_object_size(back) == ev.live);
            json_decref(back);
        }
        if (perr) {
            check(ev.live == 2);
            const struct logs_field *pe = logs_ev_get(&ev, SC_STR("parse_error"));
            check(pe && pe->type == LOGS_V_TRUE);
            const struct logs_field *m = logs_ev_get(&ev, SC_STR("message"));
            check(m && m->type == LOGS_V_STR);
            if (was_clean) {
                check(m->val.len == line.len);
            }
        } else if (ps[sel] == LOGS_P_NONE) {
            check(ev.live == 1);
        } else if (ps[sel] == LOGS_P_LOGFMT) {
            check(ev.live >= 1);
        }
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
    logs_ev_reset(&ev);
    return 0;
}

// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the `json` log parser's object parser (logs_ev_parse_json), checked
// differentially against jansson, which it replaced on the hot path. It abort()s when:
//   - one accepts a line as a JSON object and the other does not (json_loadb with flags 0, which
//     the parser used to call, plus "is an object");
//   - for an accepted line, the fields differ: same keys in the same order, same types, same
//     string bytes, integers and reals of equal value, nested values equal (json_equal);
//   - the record printed in jansson's style is not byte for byte jansson's own compact,
//     order-preserving dump of the object (what the outputs wrote before);
//   - the record printed as one quoted JSON string (logs_ev_dump_quoted, Loki's JSON push) is not
//     byte for byte that dump quoted by logs_json_quote (what the Loki output wrote before).
// The same input is also decoded as one JSON string by logs_json_unquote (the Loki protobuf
// encoder's way back from the JSON text kept in a batch), which must accept exactly the inputs
// that are one JSON string to jansson (quote first and last) and give jansson's bytes.
// One known difference is allowed: jansson skips a NUL byte that directly follows a number or a
// literal (its stream takes a pushed-back NUL for an empty buffer), so it accepts {"a":1<NUL>}.
// No JSON text contains a raw NUL, so our parser must reject every line holding one.
// The input is the line itself; the corpus lives in tests/fuzz/corpus/logjson/.
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

static bool same_value(const struct logs_field *f, json_t *v)
{
    char tmp[512];
    size_t n = f->val.len < sizeof(tmp) - 1 ? f->val.len : sizeof(tmp) - 1;
    if (n) {
        memcpy(tmp, f->val.p, n);
    }
    tmp[n] = 0;
    switch (f->type) {
    case LOGS_V_STR:
        return json_is_string(v) && json_string_length(v) == f->val.len &&
               (f->val.len == 0 || memcmp(json_string_value(v), f->val.p, f->val.len) == 0);
    case LOGS_V_INT:
        return json_is_integer(v) && json_integer_value(v) == strtoll(tmp, NULL, 10);
    case LOGS_V_REAL:
        return json_is_real(v) && json_real_value(v) == strtod(tmp, NULL);
    case LOGS_V_TRUE:
        return json_is_true(v);
    case LOGS_V_FALSE:
        return json_is_false(v);
    case LOGS_V_NULL:
        return json_is_null(v);
    case LOGS_V_RAW: {
        json_error_t err;
        json_t *mine = json_loadb(f->val.p, f->val.len, JSON_DECODE_ANY, &err);
        bool eq = mine && (json_is_object(mine) || json_is_array(mine)) && json_equal(mine, v);
        json_decref(mine);
        return eq;
    }
    default:
        return false;
    }
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
    struct sc_str line = sc_str_n((const char *)data, size);
    json_error_t err;
    json_t *j = size ? json_loadb(line.p, line.len, 0, &err) : NULL;
    bool ok = j && json_is_object(j);
    logs_ev_reset(&ev);
    int rc = logs_ev_parse_json(&ev, line);
    static char *text;
    static size_t text_cap;
    if (size + 1 > text_cap) {
        text_cap = size + 1;
        text = sc_realloc(text, text_cap);
    }
    ssize_t un = logs_json_unquote(text, line);
    json_t *js = size ? json_loadb(line.p, line.len, JSON_DECODE_ANY, &err) : NULL;
    bool is_str = js && json_is_string(js) && data[0] == '"' && data[size - 1] == '"' &&
                  !memchr(data, 0, size);
    check((un >= 0) == is_str);
    check(!is_str || ((size_t)un == json_string_length(js) &&
                      memcmp(text, json_string_value(js), (size_t)un) == 0));
    json_decref(js);
    if (size && memchr(data, 0, size)) {
        check(rc < 0);
        json_decref(j);
        logs_ev_reset(&ev);
        return 0;
    }
    check((rc == 0) == ok);
    if (ok) {
        check(ev.live == json_object_size(j));
        size_t i = 0;
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v)
        {
            while (ev.f[i].type == LOGS_V_DEL) {
                i++;
            }
            const struct logs_field *f = &ev.f[i++];
            check(f->key.len == strlen(k) && memcmp(f->key.p, k, f->key.len) == 0);
            check(same_value(f, v));
        }
        sc_buf_reset(&b);
        check(logs_ev_dump(&b, &ev, LOGS_ESC_JANSSON, NULL, NULL) == 0);
        char *want = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
        check(want && strlen(want) == b.len && memcmp(want, b.p, b.len) == 0);
        free(want);
        /* Loki's JSON push: the record quoted as one string in one pass is the dump quoted. */
        static struct sc_buf q1, q2;
        if (!q1.max) {
            sc_buf_init(&q1, 1u << 30);
            sc_buf_init(&q2, 1u << 30);
        }
        sc_buf_reset(&q1);
        sc_buf_reset(&q2);
        check(logs_ev_dump_quoted(&q1, &ev) == 0);
        check(logs_json_quote(&q2, sc_buf_str(&b), LOGS_ESC_JANSSON) == 0);
        check(q1.len == q2.len && memcmp(q1.p, q2.p, q1.len) == 0);
    }
    json_decref(j);
    logs_ev_reset(&ev);
    return 0;
}

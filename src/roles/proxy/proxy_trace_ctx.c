// SPDX-License-Identifier: Apache-2.0
// Trace context parsers and writers (W3C Trace Context level 1, Zipkin B3). Everything a client
// sends through here is untrusted: each parser checks lengths before it reads, accepts lower-case
// hex only where the specifications say so, and fills its output only once the whole value is
// known to be valid.
#include <string.h>

#include "roles/proxy/proxy_trace_ctx.h"

static int hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

/* Decodes 2*<n> lower-case hex digits at <p> into <out>. Returns false on any other byte. */
static bool unhex(const char *p, size_t n, uint8_t *out)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(p[2 * i]), lo = hexval(p[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            return false;
        }
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i]) {
            return false;
        }
    }
    return true;
}

/* Every byte's two lower-case hex digits, one table lookup a byte: trace ids, span ids and request
 * ids are written on every request (proxy_trace_hex, proxy_headers.c). */
const char proxy_hex_pairs[513] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
    "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

int proxy_traceparent_parse(struct sc_str v, struct proxy_trace_ctx *out)
{
    const char *p = v.p;
    uint8_t ver, flags;
    struct proxy_trace_ctx c = { .has_ids = true };
    if (v.len < 55 || p[2] != '-' || p[35] != '-' || p[52] != '-' || !unhex(p, 1, &ver) ||
        ver == 0xff || !unhex(p + 3, 16, c.trace_id) || !unhex(p + 36, 8, c.span_id) ||
        !unhex(p + 53, 1, &flags)) {
        return -1;
    }
    /* Version 00 is exactly 55 bytes; a later version may append fields after a dash. */
    if ((ver == 0 && v.len != 55) || (ver != 0 && v.len > 55 && p[55] != '-')) {
        return -1;
    }
    if (all_zero(c.trace_id, 16) || all_zero(c.span_id, 8)) {
        return -1;
    }
    c.sampling = (flags & 1) ? PROXY_TRACE_ACCEPT : PROXY_TRACE_DENY;
    *out = c;
    return 0;
}

void proxy_traceparent_format(char out[55], const uint8_t trace_id[16], const uint8_t span_id[8],
                              bool sampled)
{
    memcpy(out, "00-", 3);
    proxy_trace_hex(out + 3, trace_id, 16);
    out[35] = '-';
    proxy_trace_hex(out + 36, span_id, 8);
    out[52] = '-';
    out[53] = '0';
    out[54] = sampled ? '1' : '0';
}

static bool key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '*' ||
           c == '/';
}

/* A tracestate key: simple-key, or tenant-id@system-id (tenant up to 241, system up to 14). */
static bool ts_key(struct sc_str k)
{
    if (k.len == 0 || k.len > 256) {
        return false;
    }
    const char *at = memchr(k.p, '@', k.len);
    if (!at) {
        if (!((k.p[0] >= 'a' && k.p[0] <= 'z') || (k.p[0] >= '0' && k.p[0] <= '9'))) {
            return false;
        }
        for (size_t i = 1; i < k.len; i++) {
            if (!key_char(k.p[i])) {
                return false;
            }
        }
        return true;
    }
    size_t tl = (size_t)(at - k.p), sl = k.len - tl - 1;
    if (tl == 0 || tl > 241 || sl == 0 || sl > 14 || !(k.p[tl + 1] >= 'a' && k.p[tl + 1] <= 'z')) {
        return false;
    }
    for (size_t i = 0; i < k.len; i++) {
        if (i != tl && !key_char(k.p[i])) {
            return false;
        }
    }
    return true;
}

/* A tracestate value: 1 to 256 printable ASCII bytes but ',' and '=', not ending in a space. */
static bool ts_value(struct sc_str v)
{
    if (v.len == 0 || v.len > 256 || v.p[v.len - 1] == ' ') {
        return false;
    }
    for (size_t i = 0; i < v.len; i++) {
        unsigned char c = (unsigned char)v.p[i];
        if (c < 0x20 || c > 0x7e || c == ',' || c == '=') {
            return false;
        }
    }
    return true;
}

bool proxy_tracestate_valid(struct sc_str v)
{
    if (v.len > 512) {
        return false;
    }
    size_t members = 0;
    struct sc_str rest = v;
    while (rest.p && rest.len > 0) {
        const char *comma = memchr(rest.p, ',', rest.len);
        struct sc_str m = sc_str_n(rest.p, comma ? (size_t)(comma - rest.p) : rest.len);
        if (comma) {
            rest = sc_str_n(comma + 1, rest.len - m.len - 1);
        } else {
            rest = sc_str_n(NULL, 0);
        }
        while (m.len && (m.p[0] == ' ' || m.p[0] == '\t')) {
            m.p++;
            m.len--;
        }
        while (m.len && (m.p[m.len - 1] == ' ' || m.p[m.len - 1] == '\t')) {
            m.len--;
        }
        if (m.len == 0) {
            continue; /* empty list members are allowed */
        }
        const char *eq = memchr(m.p, '=', m.len);
        if (!eq || ++members > 32) {
            return false;
        }
        struct sc_str k = sc_str_n(m.p, (size_t)(eq - m.p));
        struct sc_str val = sc_str_n(eq + 1, m.len - k.len - 1);
        if (!ts_key(k) || !ts_value(val)) {
            return false;
        }
    }
    return true;
}

/* A B3 trace id: 16 or 32 lower-case hex digits, not all zero; 64-bit ids are left-padded. */
static bool b3_trace_id(struct sc_str s, uint8_t out[16])
{
    uint8_t id[16] = { 0 };
    if (s.len == 32) {
        if (!unhex(s.p, 16, id)) {
            return false;
        }
    } else if (s.len == 16) {
        if (!unhex(s.p, 8, id + 8)) {
            return false;
        }
    } else {
        return false;
    }
    if (all_zero(id, 16)) {
        return false;
    }
    memcpy(out, id, 16);
    return true;
}

static bool b3_span_id(struct sc_str s, uint8_t out[8])
{
    uint8_t id[8];
    if (s.len != 16 || !unhex(s.p, 8, id) || all_zero(id, 8)) {
        return false;
    }
    memcpy(out, id, 8);
    return true;
}

/* A B3 sampling state: "0", "1" or "d". Returns PROXY_TRACE_* or -1. */
static int b3_state(struct sc_str s)
{
    if (s.len != 1) {
        return -1;
    }
    return s.p[0] == '0'   ? PROXY_TRACE_DENY
           : s.p[0] == '1' ? PROXY_TRACE_ACCEPT
           : s.p[0] == 'd' ? PROXY_TRACE_DEBUG
                           : -1;
}

int proxy_b3_parse(struct sc_str v, struct proxy_trace_ctx *out)
{
    struct proxy_trace_ctx c = { 0 };
    if (v.len == 1) {
        int st = b3_state(v);
        if (st < 0) {
            return -1;
        }
        c.sampling = st;
        *out = c;
        return 0;
    }
    struct sc_str f[4];
    size_t n = 0;
    struct sc_str rest = v;
    while (n < 4) {
        const char *dash = rest.len ? memchr(rest.p, '-', rest.len) : NULL;
        f[n++] = sc_str_n(rest.p, dash ? (size_t)(dash - rest.p) : rest.len);
        if (!dash) {
            rest.len = 0;
            break;
        }
        rest = sc_str_n(dash + 1, rest.len - (size_t)(dash - rest.p) - 1);
        if (n == 4) {
            return -1; /* a fifth field */
        }
    }
    if (n < 2 || !b3_trace_id(f[0], c.trace_id) || !b3_span_id(f[1], c.span_id)) {
        return -1;
    }
    c.has_ids = true;
    if (n >= 3) {
        int st = b3_state(f[2]);
        if (st < 0) {
            return -1;
        }
        c.sampling = st;
    }
    uint8_t parent[8];
    if (n == 4 && !b3_span_id(f[3], parent)) {
        return -1;
    }
    *out = c;
    return 0;
}

int proxy_b3_multi_parse(struct sc_str trace, struct sc_str span, struct sc_str sampled,
                         struct sc_str flags, struct proxy_trace_ctx *out)
{
    struct proxy_trace_ctx c = { 0 };
    if (trace.len || span.len) {
        if (!b3_trace_id(trace, c.trace_id) || !b3_span_id(span, c.span_id)) {
            return -1;
        }
        c.has_ids = true;
    }
    if (sampled.len) {
        if (sc_str_eq(sampled, SC_STR("1")) || sc_str_caseeq(sampled, SC_STR("true"))) {
            c.sampling = PROXY_TRACE_ACCEPT;
        } else if (sc_str_eq(sampled, SC_STR("0")) || sc_str_caseeq(sampled, SC_STR("false"))) {
            c.sampling = PROXY_TRACE_DENY;
        } else {
            return -1;
        }
    }
    if (sc_str_eq(flags, SC_STR("1"))) {
        c.sampling = PROXY_TRACE_DEBUG;
    }
    if (!c.has_ids && c.sampling == PROXY_TRACE_DEFER) {
        return -1;
    }
    *out = c;
    return 0;
}

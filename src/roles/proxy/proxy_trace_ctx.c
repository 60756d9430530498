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

/* Four bytes (big-endian in <x>) as eight lower-case hex digits at <out>: the nibbles are spread
 * one per byte, then turned into digits all at once ('0' + n, plus 39 more from 'a' up). Ids are
 * written on every traced request; this is a third of the cost of a digit per nibble. */
static void hex4(char *out, uint32_t x)
{
    uint64_t v = x;
    v = (v | v << 16) & 0x0000ffff0000ffffull;
    v = (v | v << 8) & 0x00ff00ff00ff00ffull;
    v = (v | v << 4) & 0x0f0f0f0f0f0f0f0full;
    uint64_t letters = ((v + 0x0606060606060606ull) >> 4) & 0x0101010101010101ull;
    v += 0x3030303030303030ull + letters * 39;
    v = __builtin_bswap64(v);
    memcpy(out, &v, 8);
}

void proxy_trace_hex(char *out, const uint8_t *in, size_t n)
{
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        hex4(out + 2 * i, (uint32_t)in[i] << 24 | (uint32_t)in[i + 1] << 16 |
                              (uint32_t)in[i + 2] << 8 | in[i + 3]);
    }
    static const char digits[] = "0123456789abcdef";
    char *o = out + 2 * i;
    for (const uint8_t *p = in + i; p < in + n; p++) {
        *o++ = digits[*p >> 4];
        *o++ = digits[*p & 15];
    }
}

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

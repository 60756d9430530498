// SPDX-License-Identifier: Apache-2.0
// The JSON string escaper, the one copy the log writer, the access log and the logs role's
// encoders use. Two spellings, byte for byte those the product has always written: COMPACT
// (\n \r \t, every other control byte and DEL as lowercase \u00xx) for our own log lines, and
// JANSSON (\b \f \n \r \t, other control bytes as uppercase \u00XX, DEL as is) for records that
// jansson used to print. Bytes that need no escape are copied eight at a time; the unbounded
// writers are inline because the logs role's encoder calls them for every key and value.
#ifndef SC_CORE_JSON_H
#define SC_CORE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum sc_json_style { SC_JSON_COMPACT, SC_JSON_JANSSON };

/* Per style and byte: 0 when the byte is copied as is, else the character after the backslash
 * ('u' for \u00XX). Bytes from 0x80 up are 0: the unbounded writers copy UTF-8 as it is. */
extern const unsigned char sc_json_esc[2][256];

/* Nonzero when a byte of the eight in <v> needs a closer look in <style>: a control byte, the
 * quote, the backslash, or (COMPACT) DEL. */
static inline uint64_t sc_json_word_special(uint64_t v, enum sc_json_style style)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t q = v ^ (ones * '"'), b = v ^ (ones * '\\');
    uint64_t m =
        ((v - ones * 0x20) & ~v & highs) | ((q - ones) & ~q & highs) | ((b - ones) & ~b & highs);
    if (style == SC_JSON_COMPACT) {
        /* JANSSON keeps DEL as it is. */
        uint64_t d = v ^ (ones * 0x7f);
        m |= (d - ones) & ~d & highs;
    }
    return m;
}

/* Writes the escape of byte <c>, whose table entry in <style> is nonzero, to <o> (room for 6
 * bytes). Returns its length: 2 (\n, \") or 6 (\u00XX). */
static inline size_t sc_json_put_escape(char *o, unsigned char c, enum sc_json_style style)
{
    const unsigned char e = sc_json_esc[style][c];
    o[0] = '\\';
    if (e != 'u') {
        o[1] = (char)e;
        return 2;
    }
    const char *hex = style == SC_JSON_JANSSON ? "0123456789ABCDEF" : "0123456789abcdef";
    memcpy(o + 1, "u00", 3);
    o[4] = hex[c >> 4];
    o[5] = hex[c & 15];
    return 6;
}

/* Writes the escape of byte <c>, whose table entry in JANSSON is nonzero, as it reads once quoted
 * again in JANSSON (its backslash doubled, a quote or backslash after it escaped: "\n" becomes
 * "\\n", "\"" becomes "\\\"") to <o> (room for 7 bytes). Returns its length: 3, 4 or 7. */
static inline size_t sc_json_put_escape2(char *o, unsigned char c)
{
    const unsigned char e = sc_json_esc[SC_JSON_JANSSON][c];
    o[0] = '\\';
    o[1] = '\\';
    if (e == '"' || e == '\\') {
        o[2] = '\\';
        o[3] = (char)e;
        return 4;
    }
    if (e != 'u') {
        o[2] = (char)e;
        return 3;
    }
    memcpy(o + 2, "u00", 3);
    o[5] = "0123456789ABCDEF"[c >> 4];
    o[6] = "0123456789ABCDEF"[c & 15];
    return 7;
}

/* The escaper behind sc_json_escape_to and sc_json_escape2_to: <twice> (JANSSON only) writes each
 * escape as sc_json_put_escape2 does. The bytes that need one are the same either way, since an
 * escape holds no control byte and every other byte stays as it is. */
static inline __attribute__((always_inline)) size_t
sc_json_escape_impl(char *out, const char *s, size_t n, enum sc_json_style style, bool twice)
{
    const unsigned char *t = sc_json_esc[style];
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    char *o = out;
    while (end - p >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        uint64_t m = sc_json_word_special(v, style);
        /* Eight bytes are stored even when fewer are kept: the room left (6 or 7 bytes for each
         * byte not read yet, at least 8 of them) holds them. */
        memcpy(o, p, 8);
        if (!m) {
            o += 8;
            p += 8;
            continue;
        }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        /* The lowest flagged byte is a real one (a borrow only flags bytes above a hit): keep
         * the bytes before it, escape it, and look at the next eight. */
        size_t k = (size_t)__builtin_ctzll(m) >> 3;
        o += k;
        p += k;
#endif
        unsigned char c = *p++;
        if (t[c]) {
            o += twice ? sc_json_put_escape2(o, c) : sc_json_put_escape(o, c, style);
        } else {
            *o++ = (char)c;
        }
    }
    while (p < end) {
        unsigned char c = *p++;
        if (!t[c]) {
            *o++ = (char)c;
            continue;
        }
        o += twice ? sc_json_put_escape2(o, c) : sc_json_put_escape(o, c, style);
    }
    return (size_t)(o - out);
}

/* Writes <s>[0..n), which must be valid UTF-8 (the caller validated or repaired it), escaped in
 * <style> but not quoted, to <out>, which has room for 6 * n bytes. Returns the bytes written. */
static inline size_t sc_json_escape_to(char *out, const char *s, size_t n, enum sc_json_style style)
{
    return sc_json_escape_impl(out, s, n, style, false);
}

/* Writes <s>[0..n) (valid UTF-8) escaped twice in JANSSON, unquoted: what escaping it and then
 * escaping the result would write (a JSON string inside a JSON text quoted as a JSON string), in
 * one pass, to <out>, which has room for 7 * n bytes. Returns the bytes written. */
static inline size_t sc_json_escape2_to(char *out, const char *s, size_t n)
{
    return sc_json_escape_impl(out, s, n, SC_JSON_JANSSON, true);
}

/* Writes <s>[0..n) (valid UTF-8) as a quoted JSON string in <style> to <out>, which has room for
 * 6 * n + 2 bytes. Returns the bytes written. */
static inline size_t sc_json_quote_to(char *out, const char *s, size_t n, enum sc_json_style style)
{
    out[0] = '"';
    size_t k = 1 + sc_json_escape_to(out + 1, s, n, style);
    out[k] = '"';
    return k + 1;
}

/* Appends <s> (<n> bytes, any bytes) to <out> (capacity <cap>, at <*len>) as the inside of a
 * COMPACT JSON string, each byte that starts no valid UTF-8 sequence replaced by U+FFFD. Stops at
 * the capacity without splitting an escape or a UTF-8 sequence (a run of plain bytes is filled up
 * to the last byte). Returns false when it had to stop. */
bool sc_json_escape(char *out, size_t cap, size_t *len, const char *s, size_t n);

#endif

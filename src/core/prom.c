// SPDX-License-Identifier: Apache-2.0
// The Prometheus text writer (prom.h has what it writes). The escapers share one scan: a table
// says which bytes may end a run of bytes copied as they are (backslash, newline, the quote, and
// bytes from 0x80 up, which are checked when the caller asks for UTF-8 repair), so ASCII text
// costs one lookup per byte and no call.
#include "core/prom.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/utf8.h"

size_t sc_prom_value_to(char *out, double v)
{
    if (isnan(v)) {
        memcpy(out, "NaN", 3);
        return 3;
    }
    if (isinf(v)) {
        memcpy(out, v > 0 ? "+Inf" : "-Inf", 4);
        return 4;
    }
    if (v == floor(v) && fabs(v) < 1e15) {
        /* The digits %.15g would print, without the printf machinery. */
        int64_t iv = (int64_t)v;
        uint64_t u = iv < 0 ? (uint64_t)-iv : (uint64_t)iv;
        char tmp[24];
        size_t k = 0, n = 0;
        do {
            tmp[k++] = (char)('0' + u % 10);
            u /= 10;
        } while (u);
        if (iv < 0 || (iv == 0 && signbit(v))) {
            out[n++] = '-';
        }
        while (k) {
            out[n++] = tmp[--k];
        }
        return n;
    }
    char buf[SC_PROM_VALUE_MAX + 1];
    int w = 0;
    for (int prec = 15; prec <= 17; prec++) {
        w = snprintf(buf, sizeof(buf), "%.*g", prec, v);
        if (strtod(buf, NULL) == v) {
            break;
        }
    }
    size_t n = w > 0 && (size_t)w < sizeof(buf) ? (size_t)w : 0;
    memcpy(out, buf, n);
    return n;
}

int sc_prom_value(struct sc_buf *b, double v)
{
    char num[SC_PROM_VALUE_MAX];
    return sc_buf_append(b, num, sc_prom_value_to(num, v));
}

void sc_prom_le(char *out, size_t n, double v)
{
    if (isnan(v) || isinf(v)) {
        size_t k = sc_prom_value_to(out, v);
        out[k] = 0;
        return;
    }
    int prec = 0;
    for (; prec < 17; prec++) {
        snprintf(out, n, "%.*e", prec, v);
        if (strtod(out, NULL) == v) {
            break;
        }
    }
    const char *e = strchr(out, 'e');
    int exp = e ? (int)strtol(e + 1, NULL, 10) : 0;
    if (exp < -4 || exp >= 6) {
        return; /* C's %e spelling ("1e+06", "1.5e-05") is the Go one */
    }
    /* Same rounding position as the %e above, so the same digits, laid out without exponent. */
    snprintf(out, n, "%.*f", prec - exp > 0 ? prec - exp : 0, v);
}

/* Per byte: 0 copied as is; 1 escaped in label values and HELP texts; 2 escaped in label values
 * only; 3 the start of a UTF-8 sequence to check. */
static const unsigned char klass[256] = {
    ['\n'] = 1, ['\\'] = 1, ['"'] = 2, [0x80 ... 0xff] = 3, /* a GNU range, as in gcc and clang */
};

/* The end of the run of bytes at <p>[i..n) copied as they are; *<rep>/<*replen> what replaces
 * the byte there (NULL at the end) and <*skip> how many bytes it stands for. */
static size_t scan_run(const unsigned char *p, size_t i, size_t n, unsigned flags, const char **rep,
                       size_t *replen, size_t *skip)
{
    unsigned limit = flags & SC_PROM_ESC_QUOTE ? 2 : 1;
    bool utf8 = flags & SC_PROM_ESC_UTF8;
    for (; i < n; i++) {
        unsigned k = klass[p[i]];
        if (k == 0 || (k == 2 && limit == 1) || (k == 3 && !utf8)) {
            continue;
        }
        if (k <= limit) {
            *rep = p[i] == '\n' ? "\\n" : p[i] == '\\' ? "\\\\" : "\\\"";
            *replen = 2;
            *skip = 1;
            return i;
        }
        size_t l = sc_utf8_seq(p + i, n - i);
        if (l == 0) {
            *rep = SC_UTF8_REPLACEMENT;
            *replen = 3;
            *skip = 1;
            return i;
        }
        i += l - 1;
    }
    *rep = NULL;
    *replen = 0;
    *skip = 0;
    return n;
}

char *sc_prom_escape_to(char *d, const char *s, size_t n, unsigned flags)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        const char *rep;
        size_t replen, skip;
        size_t e = scan_run(p, i, n, flags, &rep, &replen, &skip);
        memcpy(d, s + i, e - i);
        d += e - i;
        if (!rep) {
            break;
        }
        memcpy(d, rep, replen);
        d += replen;
        i = e + skip;
    }
    return d;
}

int sc_prom_escape(struct sc_buf *b, const char *s, size_t n, unsigned flags)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        const char *rep;
        size_t replen, skip;
        size_t e = scan_run(p, i, n, flags, &rep, &replen, &skip);
        if (sc_buf_append(b, s + i, e - i) < 0 || (rep && sc_buf_append(b, rep, replen) < 0)) {
            return SC_ETOOBIG;
        }
        if (!rep) {
            break;
        }
        i = e + skip;
    }
    return 0;
}

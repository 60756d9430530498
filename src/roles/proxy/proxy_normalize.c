// SPDX-License-Identifier: Apache-2.0
// Request-target and Host normalisation (see proxy_normalize.h). One scan decides whether a
// target needs any work (the common case does not, and costs only that scan: a table lookup per
// byte, stopping only at '/', '%', '?', '#' and '\\'); a target that does
// is percent-decoded into the caller's buffer and its segments are then resolved in place, the
// write position never passing the read position.
#include "roles/proxy/proxy_normalize.h"

#include <string.h>

const char *const proxy_pathnorm_names[] = { "none", "base", "merge_slashes",
                                             "decode_and_merge_slashes", NULL };
const char *const proxy_escslash_names[] = { "reject", "decode", "keep", NULL };
const char *const proxy_underscores_names[] = { "allow", "drop", "reject", NULL };

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c |= 0x20;
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

/* RFC 3986 2.3: ALPHA / DIGIT / "-" / "." / "_" / "~" */
static bool unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* The bytes scan() stops at; every other byte of a target needs no work at any level. */
static const unsigned char special[256] = {
    ['#'] = 1, ['\\'] = 1, ['%'] = 1, ['/'] = 1, ['?'] = 1
};

/* Checks the whole target for what every level refuses, finds where its path part ends (<*pl>:
 * the first '?', or its length) and tells whether that path part might change at <level>
 * (<*work>), in one pass. Returns NULL or the reason for a 400. */
static const char *scan(struct sc_str t, int level, int esc, size_t *pl, bool *work)
{
    const unsigned char *p = (const unsigned char *)t.p;
    bool query = false;
    *pl = t.len;
    *work = false;
    for (size_t i = 0; i < t.len; i++) {
        unsigned char c = p[i];
        if (__builtin_expect(!special[c], 1)) {
            continue;
        }
        if (c == '#') {
            return "fragment ('#') in the request target";
        }
        if (c == '\\') {
            return "backslash in the request target";
        }
        if (c == '?') {
            if (!query) {
                query = true;
                *pl = i;
            }
        } else if (c == '%') {
            int hi = i + 2 < t.len ? hexval(p[i + 1]) : -1;
            int lo = hi >= 0 ? hexval(p[i + 2]) : -1;
            if (lo < 0) {
                return "malformed percent-encoding in the request target";
            }
            int v = hi * 16 + lo;
            if (v == 0) {
                return "encoded NUL (%00) in the request target";
            }
            if (!query && level != PROXY_PN_NONE) {
                if ((v == '/' || v == '\\') && esc == PROXY_ES_REJECT) {
                    return "encoded slash (%2F or %5C) in the request path";
                }
                *work = true;
            }
            i += 2;
        } else if (!query && i + 1 < t.len && level != PROXY_PN_NONE) { /* '/' */
            if (p[i + 1] == '.' || (p[i + 1] == '/' && level >= PROXY_PN_MERGE)) {
                *work = true;
            }
        }
    }
    return NULL;
}

int proxy_normalize_target(struct sc_str t, int level, int esc, char *out, size_t cap, size_t *olen,
                           size_t *plen, const char **why)
{
    size_t pl;
    bool work;
    *why = scan(t, level, esc, &pl, &work);
    *plen = pl;
    if (*why) {
        return -1;
    }
    if (!work || pl == 0 || t.p[0] != '/') {
        return PROXY_NORM_SAME;
    }
    if (cap < t.len) {
        *why = "request target too long to normalise";
        return -1;
    }
    /* Decode: unreserved characters, and escaped slashes when asked; other escapes upper-cased
     * (RFC 3986 6.2.2.1) so that one spelling reaches policies and the application. */
    const unsigned char *p = (const unsigned char *)t.p;
    size_t n = 0;
    bool decode_slash = esc == PROXY_ES_DECODE;
    for (size_t i = 0; i < pl; i++) {
        if (p[i] != '%') {
            out[n++] = (char)p[i];
            continue;
        }
        int v = hexval(p[i + 1]) * 16 + hexval(p[i + 2]);
        if (unreserved((unsigned char)v)) {
            out[n++] = (char)v;
        } else if ((v == '/' || v == '\\') && decode_slash) {
            out[n++] = '/';
        } else {
            static const char hex[] = "0123456789ABCDEF";
            out[n++] = '%';
            out[n++] = hex[v >> 4];
            out[n++] = hex[v & 15];
        }
        i += 2;
    }
    /* Resolve segments in place (RFC 3986 5.2.4 for an absolute path): out[0..w) is the result
     * so far and always ends with '/'. */
    bool merge = level >= PROXY_PN_MERGE;
    size_t w = 1;
    for (size_t i = 1; i <= n;) {
        size_t e = i;
        while (e < n && out[e] != '/') {
            e++;
        }
        bool last = e >= n;
        size_t sl = e - i;
        const char *s = out + i;
        bool dot = sl >= 1 && s[0] == '.' && (sl == 1 || s[1] == ';');
        bool dotdot = sl >= 2 && s[0] == '.' && s[1] == '.' && (sl == 2 || s[2] == ';');
        if ((dot && sl > 1) || (dotdot && sl > 2)) {
            *why = "dot segment with parameters (';') in the request path";
            return -1;
        }
        if (dotdot) {
            if (w > 1) {
                w--;
                while (w > 0 && out[w - 1] != '/') {
                    w--;
                }
            }
        } else if (dot || (sl == 0 && (merge || last))) {
            /* dropped: the result already ends with '/' */
        } else {
            memmove(out + w, s, sl);
            w += sl;
            if (!last) {
                out[w++] = '/';
            }
        }
        if (last) {
            break;
        }
        i = e + 1;
    }
    if (w == pl && memcmp(out, t.p, pl) == 0) {
        return PROXY_NORM_SAME;
    }
    memcpy(out + w, t.p + pl, t.len - pl);
    *plen = w;
    *olen = w + (t.len - pl);
    return 0;
}

size_t proxy_host_normalize(struct sc_str h, char *out, size_t cap)
{
    size_t n = h.len;
    if (n && h.p[0] == '[') {
        const char *rb = memchr(h.p, ']', h.len);
        n = rb ? (size_t)(rb - h.p) + 1 : h.len;
    } else {
        for (size_t i = n; i > 0; i--) {
            if (h.p[i - 1] == ':') {
                n = i - 1;
                break;
            }
        }
    }
    if (n > 1 && h.p[n - 1] == '.') {
        n--;
    }
    if (n == 0 || n > cap) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char c = h.p[i];
        out[i] = (c >= 'A' && c <= 'Z') ? (char)(c | 0x20) : c;
    }
    return n;
}

// SPDX-License-Identifier: Apache-2.0
// Protocol detection (see proxy_detect.h). The bytes come from a client before anything about it
// is known, so every length is checked against what is there before it is used, nothing is
// allocated, and the only copy is of a ClientHello split across TLS records (bounded by
// PROXY_DETECT_MAX_HELLO). The HTTP/1 check follows RFC 9112's request-line grammar (a method
// token, one space, a target of visible characters, one space, "HTTP/1." and a digit); the TLS one
// RFC 8446's ClientHello (RFC 6066 server_name, RFC 7301 ALPN).
#include <string.h>
#include <strings.h>

#include "roles/proxy/proxy_detect.h"

static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define H2_PREFACE_LEN (sizeof(h2_preface) - 1)
#define MAX_METHOD 20

/* RFC 9110 tchar. */
static bool is_tchar(uint8_t c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
        return true;
    }
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* An HTTP/1 request line at <p>: HTTP1, TCP, or MORE while it could still become one. */
static enum proxy_proto detect_http1(const uint8_t *p, size_t n)
{
    size_t i = 0;
    /* RFC 9112 2.2: a server ignores empty lines before the request line. */
    while (i < n && i < 4 && (p[i] == '\r' || p[i] == '\n')) {
        i++;
    }
    size_t m = i;
    while (i < n && i - m <= MAX_METHOD && is_tchar(p[i])) {
        i++;
    }
    if (i == n) {
        return i - m <= MAX_METHOD ? PROXY_PROTO_MORE : PROXY_PROTO_TCP;
    }
    if (i == m || i - m > MAX_METHOD || p[i] != ' ') {
        return PROXY_PROTO_TCP;
    }
    size_t t = ++i;
    while (i < n && p[i] > 0x20 && p[i] < 0x7f) {
        i++;
    }
    if (i == n) {
        return n < PROXY_DETECT_MAX_LINE ? PROXY_PROTO_MORE : PROXY_PROTO_TCP;
    }
    if (i == t || p[i] != ' ') {
        return PROXY_PROTO_TCP;
    }
    i++;
    static const char ver[] = "HTTP/1.";
    for (size_t k = 0; k < sizeof(ver) - 1; k++, i++) {
        if (i == n) {
            return PROXY_PROTO_MORE;
        }
        if (p[i] != (uint8_t)ver[k]) {
            return PROXY_PROTO_TCP;
        }
    }
    if (i == n) {
        return PROXY_PROTO_MORE;
    }
    if (p[i] < '0' || p[i] > '9') {
        return PROXY_PROTO_TCP;
    }
    if (++i == n) {
        return PROXY_PROTO_MORE;
    }
    return p[i] == '\r' || p[i] == '\n' ? PROXY_PROTO_HTTP1 : PROXY_PROTO_TCP;
}

static unsigned get16(const uint8_t *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

/* Reads the server_name and ALPN extensions of the ClientHello body <b> (<n> bytes) into <h>.
 * Returns false when the body is malformed. */
static bool parse_hello(const uint8_t *b, size_t n, struct proxy_hello *h)
{
    size_t i = 2 + 32; /* legacy_version, random */
    if (i + 1 > n) {
        return false;
    }
    i += 1 + b[i]; /* legacy_session_id */
    if (i + 2 > n) {
        return false;
    }
    size_t cs = get16(b + i);
    if (cs < 2 || cs % 2) {
        return false;
    }
    i += 2 + cs; /* cipher_suites */
    if (i + 1 > n) {
        return false;
    }
    i += 1 + b[i]; /* legacy_compression_methods */
    if (i == n) {
        return true; /* no extensions (TLS 1.2 and older may omit them) */
    }
    if (i + 2 > n) {
        return false;
    }
    size_t end = i + 2 + get16(b + i);
    if (end > n) {
        return false;
    }
    i += 2;
    while (i < end) {
        if (i + 4 > end) {
            return false;
        }
        unsigned type = get16(b + i);
        size_t len = get16(b + i + 2);
        i += 4;
        if (i + len > end) {
            return false;
        }
        const uint8_t *e = b + i;
        if (type == 0 && len >= 2) { /* server_name */
            size_t le = 2 + get16(e);
            if (le > len) {
                return false;
            }
            for (size_t k = 2; k + 3 <= le;) {
                size_t nl = get16(e + k + 1);
                if (k + 3 + nl > le) {
                    return false;
                }
                if (e[k] == 0 && !h->sni[0] && nl > 0 && nl <= PROXY_SNI_MAX) {
                    for (size_t c = 0; c < nl; c++) {
                        uint8_t ch = e[k + 3 + c];
                        if (ch <= 0x20 || ch >= 0x7f) {
                            return false; /* a host name is printable ASCII */
                        }
                        h->sni[c] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
                    }
                    h->sni[nl] = 0;
                }
                k += 3 + nl;
            }
        } else if (type == 16 && len >= 2) { /* application_layer_protocol_negotiation */
            size_t le = 2 + get16(e);
            if (le > len) {
                return false;
            }
            for (size_t k = 2; k < le;) {
                size_t pl = e[k];
                if (pl == 0 || k + 1 + pl > le) {
                    return false;
                }
                if (pl < sizeof(h->alpn[0]) && h->nalpn < PROXY_ALPN_MAX) {
                    bool ok = true;
                    for (size_t c = 0; c < pl; c++) {
                        ok = ok && e[k + 1 + c] > 0x20 && e[k + 1 + c] < 0x7f;
                    }
                    if (ok) {
                        memcpy(h->alpn[h->nalpn], e + k + 1, pl);
                        h->alpn[h->nalpn][pl] = 0;
                        h->nalpn++;
                    }
                }
                k += 1 + pl;
            }
        }
        i += len;
    }
    return true;
}

/* A TLS ClientHello at <p>, possibly split across handshake records. */
static enum proxy_proto detect_tls(const uint8_t *p, size_t n, struct proxy_hello *h)
{
    uint8_t hs[PROXY_DETECT_MAX_HELLO];
    size_t hl = 0, off = 0;
    for (;;) {
        if (n - off < 5) {
            return off >= PROXY_DETECT_MAX_HELLO ? PROXY_PROTO_TCP : PROXY_PROTO_MORE;
        }
        const uint8_t *r = p + off;
        size_t rl = get16(r + 3);
        /* A handshake record of TLS 1.0 to 1.3 framing, 1 to 2^14 bytes (RFC 8446 5.1). */
        if (r[0] != 0x16 || r[1] != 3 || r[2] > 4 || rl == 0 || rl > 16384) {
            return PROXY_PROTO_TCP;
        }
        if (off == 0 && n - off > 5 && r[5] != 1) {
            return PROXY_PROTO_TCP; /* the first handshake message must be a ClientHello */
        }
        size_t have = n - off - 5 < rl ? n - off - 5 : rl;
        if (hl + have > sizeof(hs)) {
            return PROXY_PROTO_TCP;
        }
        memcpy(hs + hl, r + 5, have);
        hl += have;
        if (have < rl) {
            return PROXY_PROTO_MORE;
        }
        off += 5 + rl;
        if (hl >= 4) {
            size_t ml = (size_t)hs[1] << 16 | (size_t)hs[2] << 8 | hs[3];
            if (ml + 4 > sizeof(hs)) {
                return PROXY_PROTO_TCP;
            }
            if (hl >= ml + 4) {
                if (h) {
                    memset(h, 0, sizeof(*h));
                }
                struct proxy_hello scratch;
                if (!h) {
                    memset(&scratch, 0, sizeof(scratch));
                }
                return parse_hello(hs + 4, ml, h ? h : &scratch) ? PROXY_PROTO_TLS
                                                                 : PROXY_PROTO_TCP;
            }
        }
    }
}

enum proxy_proto proxy_detect(const uint8_t *p, size_t n, struct proxy_hello *hello)
{
    if (n == 0) {
        return PROXY_PROTO_MORE;
    }
    if (p[0] == 0x16) {
        return detect_tls(p, n, hello);
    }
    size_t k = n < H2_PREFACE_LEN ? n : H2_PREFACE_LEN;
    if (memcmp(p, h2_preface, k) == 0) {
        return k == H2_PREFACE_LEN ? PROXY_PROTO_H2C : PROXY_PROTO_MORE;
    }
    return detect_http1(p, n);
}

const char *proxy_proto_name(enum proxy_proto p)
{
    switch (p) {
    case PROXY_PROTO_HTTP1:
        return "http/1.1";
    case PROXY_PROTO_H2C:
        return "h2c";
    case PROXY_PROTO_TLS:
        return "tls";
    case PROXY_PROTO_TCP:
        return "tcp";
    default:
        return "";
    }
}

bool proxy_sni_match(const char *pat, const char *name)
{
    if (!name[0]) {
        return false;
    }
    if (strcmp(pat, "*") == 0) {
        return true;
    }
    if (pat[0] == '*' && pat[1] == '.') {
        size_t pl = strlen(pat) - 1, nl = strlen(name); /* pl: ".suffix" */
        return nl > pl && strcasecmp(name + nl - pl, pat + 1) == 0;
    }
    return strcasecmp(pat, name) == 0;
}

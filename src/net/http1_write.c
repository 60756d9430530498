// SPDX-License-Identifier: Apache-2.0
// HTTP/1.1 writers (RFC 9112): status and request lines, header fields, chunk sizes and a whole
// simple response, each validated before it is written (a token method and name, a visible-ASCII
// target, a field value without CR, LF or NUL) so that nothing the proxy writes can split a
// message. The contracts are in http1.h.
#include <string.h>

#include "core/error.h"
#include "net/http1.h"

/* Writers reserve the whole line first and then copy, so a failed write leaves <b> unchanged. */
struct wr {
    char *p;
};

static void put(struct wr *w, const void *p, size_t n)
{
    memcpy(w->p, p, n);
    w->p += n;
}

int sc_http1_write_status_line(struct sc_buf *b, int minor_version, int status)
{
    if (status < 100 || status > 999 || minor_version < 0 || minor_version > 1) {
        return SC_EINVAL;
    }
    const char *reason = sc_http1_reason(status);
    size_t rlen = strlen(reason);
    size_t n = 13 + rlen + 2; /* "HTTP/1.x ddd " reason CRLF */
    int rc = sc_buf_reserve(b, n);
    if (rc < 0) {
        return rc;
    }
    char line[13] = { 'H',
                      'T',
                      'T',
                      'P',
                      '/',
                      '1',
                      '.',
                      (char)('0' + minor_version),
                      ' ',
                      (char)('0' + status / 100),
                      (char)('0' + status / 10 % 10),
                      (char)('0' + status % 10),
                      ' ' };
    struct wr w = { b->p + b->len };
    put(&w, line, sizeof(line));
    put(&w, reason, rlen);
    put(&w, "\r\n", 2);
    b->len += n;
    return 0;
}

int sc_http1_write_request_line(struct sc_buf *b, struct sc_str method, struct sc_str target)
{
    if (!sc_http1_is_token(method) || target.len == 0) {
        return SC_EINVAL;
    }
    for (size_t i = 0; i < target.len; i++) {
        if ((unsigned char)target.p[i] < 0x21 || (unsigned char)target.p[i] > 0x7e) {
            return SC_EINVAL;
        }
    }
    size_t n = method.len + 1 + target.len + 11; /* SP target " HTTP/1.1\r\n" */
    int rc = sc_buf_reserve(b, n);
    if (rc < 0) {
        return rc;
    }
    struct wr w = { b->p + b->len };
    put(&w, method.p, method.len);
    put(&w, " ", 1);
    put(&w, target.p, target.len);
    put(&w, " HTTP/1.1\r\n", 11);
    b->len += n;
    return 0;
}

int sc_http1_write_header(struct sc_buf *b, struct sc_str name, struct sc_str value)
{
    /* A CR or LF here would let whoever supplied the value add fields of their own. */
    if (!sc_http1_is_token(name) || !sc_http1_is_field_value(value)) {
        return SC_EINVAL;
    }
    size_t n = name.len + 2 + value.len + 2;
    int rc = sc_buf_reserve(b, n);
    if (rc < 0) {
        return rc;
    }
    struct wr w = { b->p + b->len };
    put(&w, name.p, name.len);
    put(&w, ": ", 2);
    if (value.len > 0) {
        put(&w, value.p, value.len);
    }
    put(&w, "\r\n", 2);
    b->len += n;
    return 0;
}

/* Writes "<hex>\r\n". The CRLF that ends the previous chunk's data, and the trailer section and
 * final CRLF after a zero size, are the caller's. */
int sc_http1_write_chunk_size(struct sc_buf *b, uint64_t size)
{
    static const char digits[] = "0123456789abcdef";
    char tmp[18];
    size_t n = 0;
    do {
        tmp[sizeof(tmp) - 3 - n++] = digits[size & 0xf];
        size >>= 4;
    } while (size != 0);
    tmp[sizeof(tmp) - 2] = '\r';
    tmp[sizeof(tmp) - 1] = '\n';
    return sc_buf_append(b, tmp + sizeof(tmp) - 2 - n, n + 2);
}

/* 1xx, 204 and 304 responses carry no content and no Content-Length (RFC 9110 8.6, 15). */
int sc_http1_write_simple(struct sc_buf *b, int status, const char *content_type,
                          struct sc_str body, bool close)
{
    bool bodyless = status < 200 || status == 204 || status == 304;
    struct sc_str ct = sc_str_c(content_type);
    if ((bodyless && body.len > 0) || !sc_http1_is_field_value(ct)) {
        return SC_EINVAL;
    }
    size_t start = b->len;
    int rc = sc_http1_write_status_line(b, 1, status);
    if (rc == 0 && content_type != NULL) {
        rc = sc_http1_write_header(b, SC_STR("Content-Type"), ct);
    }
    if (rc == 0 && !bodyless) {
        char num[20];
        size_t n = 0;
        uint64_t v = body.len;
        do {
            num[sizeof(num) - 1 - n++] = (char)('0' + v % 10);
            v /= 10;
        } while (v != 0);
        rc = sc_http1_write_header(b, SC_STR("Content-Length"), sc_str_n(num + sizeof(num) - n, n));
    }
    if (rc == 0 && close) {
        rc = sc_http1_write_header(b, SC_STR("Connection"), SC_STR("close"));
    }
    if (rc == 0) {
        rc = sc_buf_append(b, "\r\n", 2);
    }
    if (rc == 0) {
        rc = sc_buf_append(b, body.p, body.len);
    }
    if (rc < 0) {
        b->len = start;
    }
    return rc;
}

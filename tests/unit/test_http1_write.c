// SPDX-License-Identifier: Apache-2.0
// Unit tests for the HTTP/1 writers (src/net/http1_write.c): each line written exactly, nothing
// that could split a message written at all (the buffer left unchanged), the cap honoured, and a
// simple response parsing back.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "core/buf.h"
#include "core/error.h"
#include "net/http1.h"

#define BIN(s) s, sizeof(s) - 1

static void expect_bytes(struct sc_buf *b, const char *exp, size_t len)
{
    assert_int_equal(b->len, len);
    assert_memory_equal(b->p, exp, b->len);
}

static void expect_buf(struct sc_buf *b, const char *exp)
{
    expect_bytes(b, exp, strlen(exp));
}

static void test_writers(void **state)
{
    (void)state;
    struct sc_buf b;
    sc_buf_init(&b, 4096);
    assert_int_equal(sc_http1_write_status_line(&b, 1, 200), 0);
    assert_int_equal(sc_http1_write_status_line(&b, 0, 404), 0);
    assert_int_equal(sc_http1_write_status_line(&b, 1, 799), 0);
    expect_buf(&b, "HTTP/1.1 200 OK\r\nHTTP/1.0 404 Not Found\r\nHTTP/1.1 799 Unknown\r\n");
    assert_int_equal(sc_http1_write_status_line(&b, 1, 99), SC_EINVAL);
    assert_int_equal(sc_http1_write_status_line(&b, 1, 1000), SC_EINVAL);
    assert_int_equal(sc_http1_write_status_line(&b, 2, 200), SC_EINVAL);

    sc_buf_reset(&b);
    assert_int_equal(sc_http1_write_request_line(&b, SC_STR("GET"), SC_STR("/a?b")), 0);
    assert_int_equal(sc_http1_write_header(&b, SC_STR("Host"), SC_STR("example.com")), 0);
    assert_int_equal(sc_http1_write_header(&b, SC_STR("X-Empty"), SC_STR("")), 0);
    assert_int_equal(sc_http1_write_header(&b, SC_STR("X-Bin"), SC_STR("caf\xc3\xa9\tx")), 0);
    expect_buf(&b,
               "GET /a?b HTTP/1.1\r\nHost: example.com\r\nX-Empty: \r\nX-Bin: caf\xc3\xa9\tx\r\n");
    /* nothing that would break the framing is written */
    size_t before = b.len;
    assert_int_equal(sc_http1_write_header(&b, SC_STR("X"), SC_STR("a\r\nEvil: 1")), SC_EINVAL);
    assert_int_equal(sc_http1_write_header(&b, SC_STR("X"), SC_STR("a\nb")), SC_EINVAL);
    assert_int_equal(sc_http1_write_header(&b, SC_STR("X"), sc_str_n("a\0b", 3)), SC_EINVAL);
    assert_int_equal(sc_http1_write_header(&b, SC_STR("X Y"), SC_STR("v")), SC_EINVAL);
    assert_int_equal(sc_http1_write_header(&b, SC_STR(""), SC_STR("v")), SC_EINVAL);
    assert_int_equal(sc_http1_write_request_line(&b, SC_STR("GET"), SC_STR("/a b")), SC_EINVAL);
    assert_int_equal(sc_http1_write_request_line(&b, SC_STR("G T"), SC_STR("/")), SC_EINVAL);
    assert_int_equal(sc_http1_write_request_line(&b, SC_STR("GET"), SC_STR("")), SC_EINVAL);
    assert_int_equal(b.len, before);

    sc_buf_reset(&b);
    assert_int_equal(sc_http1_write_chunk_size(&b, 0), 0);
    assert_int_equal(sc_http1_write_chunk_size(&b, 255), 0);
    assert_int_equal(sc_http1_write_chunk_size(&b, 0x10), 0);
    assert_int_equal(sc_http1_write_chunk_size(&b, UINT64_MAX), 0);
    expect_buf(&b, "0\r\nff\r\n10\r\nffffffffffffffff\r\n");

    sc_buf_reset(&b);
    assert_int_equal(sc_http1_write_simple(&b, 404, "text/plain", SC_STR("not found\n"), true), 0);
    expect_buf(&b, "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n"
                   "Connection: close\r\n\r\nnot found\n");
    sc_buf_reset(&b);
    /* the body is written exactly as given, binary included */
    assert_int_equal(sc_http1_write_simple(&b, 200, NULL, sc_str_n("a\0\r\n", 4), false), 0);
    expect_bytes(&b, BIN("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\na\0\r\n"));
    sc_buf_reset(&b);
    assert_int_equal(sc_http1_write_simple(&b, 204, NULL, SC_STR(""), false), 0);
    expect_buf(&b, "HTTP/1.1 204 No Content\r\n\r\n");
    assert_int_equal(sc_http1_write_simple(&b, 204, NULL, SC_STR("x"), false), SC_EINVAL);
    assert_int_equal(sc_http1_write_simple(&b, 200, "a\r\nb", SC_STR("x"), false), SC_EINVAL);

    /* what write_simple writes parses back */
    sc_buf_reset(&b);
    assert_int_equal(sc_http1_write_simple(&b, 503, "application/json", SC_STR("{}"), true), 0);
    struct sc_http_header hs[8];
    struct sc_http_msg msg = { .headers = hs };
    struct sc_http_error err;
    int head = sc_http1_parse_response(b.p, b.len, 0, NULL, 0, &msg, 8, &err);
    assert_true(head > 0);
    assert_int_equal(msg.status, 503);
    assert_int_equal(msg.body, SC_HTTP_BODY_LENGTH);
    assert_int_equal(msg.content_length, 2);
    assert_false(msg.keep_alive);
    assert_int_equal(b.len - (size_t)head, 2);
    sc_buf_cleanup(&b);

    /* at the cap: SC_ETOOBIG and the buffer unchanged */
    struct sc_buf small;
    sc_buf_init(&small, 40);
    assert_int_equal(sc_http1_write_status_line(&small, 1, 200), 0);
    assert_int_equal(sc_http1_write_simple(&small, 200, "text/plain", SC_STR("hello"), false),
                     SC_ETOOBIG);
    expect_buf(&small, "HTTP/1.1 200 OK\r\n");
    assert_int_equal(sc_http1_write_header(&small, SC_STR("X-Long"), SC_STR("0123456789abcdef")),
                     SC_ETOOBIG);
    assert_int_equal(sc_http1_write_request_line(&small, SC_STR("GET"), SC_STR("/0123456789ab")),
                     SC_ETOOBIG);
    assert_int_equal(sc_http1_write_chunk_size(&small, 1), 0);
    expect_buf(&small, "HTTP/1.1 200 OK\r\n1\r\n");
    sc_buf_cleanup(&small);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_writers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

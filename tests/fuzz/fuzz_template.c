// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the template parser and evaluator. The input's first line is JSON data
// (ignored when it does not parse), the rest is the template. Beyond "no crash", it checks
// invariants and abort()s when one breaks:
//   - parsing either succeeds or fails with "fuzz:<line>:<col>: <message>" on one line, with the
//     position inside the input;
//   - rendering the same template twice over the same data gives byte-identical output and the
//     same result code;
//   - rendering into a capped buffer never passes the cap, and a failure carries a positioned
//     message.
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/template.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_error(const char *err, size_t size)
{
    if (!err || strncmp(err, "fuzz:", 5) != 0 || strchr(err, '\n')) {
        abort();
    }
    char *end = NULL;
    long line = strtol(err + 5, &end, 10);
    if (line < 1 || *end != ':') {
        abort();
    }
    long col = strtol(end + 1, &end, 10);
    if (col < 1 || *end != ':' || end[1] != ' ' || end[2] == '\0') {
        abort();
    }
    if ((size_t)line > size + 1 || (size_t)col > size + 1) {
        abort();
    }
}

static int ext(void *arg, const char *name, json_t *const *args, size_t nargs, json_t **out,
               char **err)
{
    (void)arg;
    (void)name;
    if (nargs == 1 && json_is_string(args[0]) && strcmp(json_string_value(args[0]), "fail") == 0) {
        *err = sc_strdup("asked to fail");
        return SC_ECONFIG;
    }
    *out = json_pack("{s:{s:s}}", "Data", "username", "u");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    const char *nl = memchr(p, '\n', size);
    json_t *root = NULL;
    const char *tp = p;
    size_t tlen = size;
    if (nl) {
        json_error_t je;
        root = json_loadb(p, (size_t)(nl - p), JSON_DECODE_ANY, &je);
        tp = nl + 1;
        tlen = size - (size_t)(nl + 1 - p);
    }
    static const char *const extra[] = { "secret", NULL };
    char *err = NULL;
    struct sc_template *t = sc_template_parse("fuzz", tp, tlen, extra, &err);
    if (!t) {
        check_error(err, tlen);
        sc_free(err);
        json_decref(root);
        return 0;
    }
    if (err) {
        abort();
    }
    struct sc_buf a, b;
    sc_buf_init(&a, 64 * 1024);
    sc_buf_init(&b, 64 * 1024);
    char *e1 = NULL, *e2 = NULL;
    int r1 = sc_template_render(t, root, ext, NULL, &a, &e1);
    int r2 = sc_template_render(t, root, ext, NULL, &b, &e2);
    if (r1 != r2 || a.len != b.len || (a.len && memcmp(a.p, b.p, a.len) != 0)) {
        abort();
    }
    if (a.len > a.max) {
        abort();
    }
    if (r1 < 0) {
        if (!e1 || !e2 || strcmp(e1, e2) != 0 || strncmp(e1, "fuzz:", 5) != 0) {
            abort();
        }
    } else if (e1 || e2) {
        abort();
    }
    sc_free(e1);
    sc_free(e2);
    sc_buf_cleanup(&a);
    sc_buf_cleanup(&b);
    sc_template_free(t);
    json_decref(root);
    return 0;
}

// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the exposition parser (roles/metrics/prom.c). The first byte picks the
// format (even: 0.0.4, odd: OpenMetrics); the rest is the input. Beyond "no crash", it abort()s
// when an invariant breaks:
//   - the return is 0, SC_EINVAL with a 1-based line:col and a message, or SC_ELIMIT;
//   - a successful parse renders, in the same format, to text that parses back to the same
//     families and samples (names, labels in order, values with NaN equal to NaN, timestamps);
//   - rendering as 0.0.4 (whatever the input format) always yields text 0.0.4 accepts;
//   - the streamed parse (metrics_prom_stream), fed the input in pieces whose size the first byte
//   picks,
//     returns what metrics_prom_parse returns (the same error at the same line:col, or the same
//     families, units and samples), and its set stays valid after every piece is overwritten.
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "roles/metrics/prom.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_prom: invariant broken: %s\n", what);
        abort();
    }
}

static bool same_value(double a, double b)
{
    return (isnan(a) && isnan(b)) || a == b;
}

static size_t nonempty(const struct metrics_prom_set *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->nfams; i++) {
        n += s->fams[i]->nsamples > 0;
    }
    return n;
}

static void same_samples(const struct metrics_prom_set *a, const struct metrics_prom_set *b)
{
    check(nonempty(a) == nonempty(b), "family count");
    for (size_t i = 0; i < a->nfams; i++) {
        const struct metrics_prom_family *fa = a->fams[i];
        if (fa->nsamples == 0) {
            continue;
        }
        const struct metrics_prom_family *fb = metrics_prom_find(b, fa->name);
        check(fb != NULL, "family missing after round trip");
        check(fb->type == fa->type, "family type");
        check(fb->nsamples == fa->nsamples, "sample count");
        check(sc_str_eq(fa->help, fb->help), "help");
        for (size_t j = 0; j < fa->nsamples; j++) {
            const struct metrics_prom_sample *x = &fa->samples[j], *y = &fb->samples[j];
            check(sc_str_eq(x->name, y->name), "sample name");
            check(same_value(x->value, y->value), "sample value");
            check(x->has_ts == y->has_ts && x->ts_ms == y->ts_ms, "timestamp");
            check(x->nlabels == y->nlabels, "label count");
            for (uint32_t k = 0; k < x->nlabels; k++) {
                check(sc_str_eq(x->labels[k].name, y->labels[k].name), "label name");
                check(sc_str_eq(x->labels[k].value, y->labels[k].value), "label value");
            }
        }
    }
}

/* Parses <in> with metrics_prom_stream in pieces of <piece> bytes, each from a scratch buffer that
 * is scribbled over after the call, and compares with metrics_prom_parse's result <rc0>, <e0>,
 * <s0>. */
static void check_stream(const char *in, size_t len, enum metrics_prom_format fmt,
                         const struct metrics_prom_limits *lim, size_t piece, int rc0,
                         const struct metrics_prom_error *e0, const struct metrics_prom_set *s0)
{
    struct metrics_prom_set s;
    metrics_prom_set_init(&s);
    struct metrics_prom_stream *st = metrics_prom_stream_new(&s, fmt, lim, len + 1);
    struct metrics_prom_error e;
    int rc = 0;
    char *scratch = sc_malloc(piece);
    for (size_t off = 0; off < len && rc == 0; off += piece) {
        size_t n = len - off < piece ? len - off : piece;
        memcpy(scratch, in + off, n);
        rc = metrics_prom_stream_feed(st, scratch, n, &e);
        memset(scratch, 'x', n);
    }
    if (rc == 0) {
        rc = metrics_prom_stream_end(st, &e);
    }
    sc_free(scratch);
    metrics_prom_stream_free(st);
    check(rc == rc0, "streamed parse returns what metrics_prom_parse returns");
    if (rc != 0) {
        check(e.line == e0->line && e.col == e0->col && strcmp(e.msg, e0->msg) == 0,
              "streamed parse fails at the same place");
    } else {
        same_samples(s0, &s);
        for (size_t i = 0; i < s0->nfams; i++) {
            const struct metrics_prom_family *f = metrics_prom_find(&s, s0->fams[i]->name);
            check(!s0->fams[i]->nsamples || (f && sc_str_eq(f->unit, s0->fams[i]->unit)),
                  "streamed unit");
        }
    }
    metrics_prom_set_cleanup(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    enum metrics_prom_format fmt =
        (data[0] & 1) ? METRICS_PROM_FMT_OPENMETRICS : METRICS_PROM_FMT_TEXT;
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    struct metrics_prom_limits lim = { .max_samples = 10000, .max_labels = 64 };

    struct metrics_prom_set s;
    struct metrics_prom_error e;
    metrics_prom_set_init(&s);
    int rc = metrics_prom_parse(&s, in, len, fmt, &lim, &e);
    check(rc == 0 || rc == SC_EINVAL || rc == SC_ELIMIT, "return code");
    check_stream(in, len, fmt, &lim, 1 + (data[0] >> 1) % 97, rc, &e, &s);
    if (rc != 0) {
        check(e.line >= 1 && e.col >= 1 && e.msg && *e.msg, "error position and message");
        metrics_prom_set_cleanup(&s);
        return 0;
    }

    struct sc_buf out;
    sc_buf_init(&out, 64u << 20);
    check(metrics_prom_render(&s, fmt, &out) == 0, "render");
    struct metrics_prom_set t;
    metrics_prom_set_init(&t);
    rc = metrics_prom_parse(&t, out.p, out.len, fmt, &lim, &e);
    if (rc != 0) {
        fprintf(stderr, "reparse failed at %u:%u: %s\n%.*s\n", e.line, e.col, e.msg, (int)out.len,
                out.p);
    }
    check(rc == 0, "rendered output parses");
    same_samples(&s, &t);
    metrics_prom_set_cleanup(&t);

    sc_buf_reset(&out);
    check(metrics_prom_render(&s, METRICS_PROM_FMT_TEXT, &out) == 0, "render as text");
    metrics_prom_set_init(&t);
    rc = metrics_prom_parse(&t, out.p, out.len, METRICS_PROM_FMT_TEXT, &lim, &e);
    if (rc != 0) {
        fprintf(stderr, "text reparse failed at %u:%u: %s\n%.*s\n", e.line, e.col, e.msg,
                (int)out.len, out.p);
    }
    check(rc == 0, "rendered text parses");
    metrics_prom_set_cleanup(&t);

    sc_buf_cleanup(&out);
    metrics_prom_set_cleanup(&s);
    return 0;
}

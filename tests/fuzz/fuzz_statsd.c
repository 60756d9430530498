// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the StatsD / DogStatsD line parser (roles/metrics/metrics_statsd.c). The
// input is a datagram; each line is parsed. Beyond "no crash", it abort()s when an invariant
// breaks: a well-formed line has a non-empty name before the first ':', every view lies inside
// the line, tag names are non-empty and at most METRICS_STATSD_MAX_TAGS, the rate is in (0, 1],
// values are finite, and parsing the same bytes again gives the same result.
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "roles/metrics/metrics.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_statsd: invariant broken: %s\n", what);
        abort();
    }
}

static bool inside(struct sc_str v, struct sc_str line)
{
    return v.len == 0 || (v.p >= line.p && v.p + v.len <= line.p + line.len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sc_str rest = sc_str_n((const char *)data, size);
    while (rest.len) {
        struct sc_str line = sc_str_split(&rest, '\n');
        struct metrics_statsd_line a, b;
        bool ok = metrics_statsd_parse(line, &a);
        check(ok == metrics_statsd_parse(line, &b), "deterministic");
        if (!ok) {
            continue;
        }
        check(a.name.len > 0 && a.name.p == line.p && memchr(a.name.p, ':', a.name.len) == NULL,
              "name");
        check(inside(a.name, line) && inside(a.value, line), "views inside the line");
        check(a.rate > 0 && a.rate <= 1, "rate");
        check(a.type >= METRICS_STATSD_COUNTER && a.type <= METRICS_STATSD_SET, "type");
        check(a.type == METRICS_STATSD_SET || isfinite(a.v), "finite value");
        check(a.ntags <= METRICS_STATSD_MAX_TAGS, "tag count");
        for (size_t i = 0; i < a.ntags; i++) {
            check(a.tags[i].k.len > 0 && inside(a.tags[i].k, line) && inside(a.tags[i].v, line),
                  "tag");
        }
        check(a.v == b.v && a.ntags == b.ntags, "same result twice");
    }
    return 0;
}

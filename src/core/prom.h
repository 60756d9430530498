// SPDX-License-Identifier: Apache-2.0
// The Prometheus text writer, the one copy behind the registry's exposition (core/metrics.c) and
// the metrics role's re-exposition (roles/metrics/prom.c): sample values, bucket bounds and
// escaped label values and HELP texts, spelled as the Go client spells them so that a scrape of
// ours reads like any other. The registry's label values may come from peers, so its escaping
// also replaces each byte that starts no valid UTF-8 sequence by U+FFFD (one bad byte never makes
// a scrape unparsable); the metrics role writes back what its parser accepted, byte for byte.
#ifndef SC_CORE_PROM_H
#define SC_CORE_PROM_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

/* Longest text sc_prom_value_to writes. */
#define SC_PROM_VALUE_MAX 40

/* Writes <v> to <out> (room for SC_PROM_VALUE_MAX bytes, not NUL-terminated) as a sample value:
 * NaN, +Inf, -Inf, integers below 1e15 as plain digits, anything else as the shortest of %.15g,
 * %.16g and %.17g that reads back as <v> (the C locale's spelling). Returns the length. */
size_t sc_prom_value_to(char *out, double v);

/* Appends <v> as sc_prom_value_to spells it. Returns 0 or SC_ETOOBIG. */
int sc_prom_value(struct sc_buf *b, double v);

/* Formats the bucket bound <v> into <out> (<n> >= 32 bytes, NUL-terminated) the way the Go client
 * does: shortest round-trip digits, with an exponent below 1e-4 and from 1e6 up (le="0.005",
 * le="2.5", le="1e+06"). The le value is a label: another spelling of the same bound would be
 * another series. */
void sc_prom_le(char *out, size_t n, double v);

/* What the escapers do besides escaping backslash and newline. */
enum {
    SC_PROM_ESC_QUOTE = 1, /* escape the double quote too (label values, OpenMetrics HELP) */
    SC_PROM_ESC_UTF8 = 2,  /* replace each byte that starts no valid UTF-8 sequence by U+FFFD */
};

/* Writes <s>[0..n) escaped as <flags> (SC_PROM_ESC_*) say to <d>, which has room for 3 * n bytes.
 * Returns the end. */
char *sc_prom_escape_to(char *d, const char *s, size_t n, unsigned flags);

/* Appends <s>[0..n) escaped as sc_prom_escape_to does, piece by piece, so it fails only when the
 * text itself does not fit the cap. Returns 0 or SC_ETOOBIG (<b> then holds part of it). */
int sc_prom_escape(struct sc_buf *b, const char *s, size_t n, unsigned flags);

#endif

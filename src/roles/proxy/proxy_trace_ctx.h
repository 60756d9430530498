// SPDX-License-Identifier: Apache-2.0
// Trace context on the wire: the W3C Trace Context headers (traceparent, tracestate) and Zipkin's
// B3 headers (the single `b3` header and the multi-header x-b3-*), parsed from untrusted request
// heads and written for the next hop. Parsers borrow their input, never allocate, and accept only
// what the specifications allow: an invalid header leaves the context untouched (the request then
// starts a trace of its own), never half-filled.
#ifndef SC_ROLES_PROXY_PROXY_TRACE_CTX_H
#define SC_ROLES_PROXY_PROXY_TRACE_CTX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/str.h"

/* The sampling state a context carries: not said (the receiver decides), no, yes, or debug (B3's
 * `d` and x-b3-flags: 1, which also forces sampling). */
enum { PROXY_TRACE_DEFER = 0, PROXY_TRACE_DENY, PROXY_TRACE_ACCEPT, PROXY_TRACE_DEBUG };

/* A parent's context: the trace it belongs to and the span that called us. */
struct proxy_trace_ctx {
    uint8_t trace_id[16]; /* a 64-bit B3 trace id is left-padded with zeros */
    uint8_t span_id[8];
    bool has_ids; /* false: a B3 header carried only a sampling state */
    int sampling; /* PROXY_TRACE_* */
};

/* An exchange's own context: the trace, this hop's span id (the parent of the next hop), the
 * caller's span id, and the sampling decision. <on>: tracing is configured for the request. */
struct proxy_exch_trace {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t parent_id[8];
    bool on;
    bool sampled;
    bool has_parent;
    bool debug; /* B3 debug: written on as x-b3-flags: 1 */
};

/* Parses a W3C traceparent value (version 00 exactly 55 bytes; a later version at least that
 * long, its fields read as version 00's; version ff, all-zero ids and upper-case hex refused).
 * Returns 0 and fills <out>, or -1 and leaves it untouched. */
int proxy_traceparent_parse(struct sc_str v, struct proxy_trace_ctx *out);

/* Writes "00-<trace>-<span>-<flags>" (55 bytes) to <out>: flags 01 when <sampled>. */
void proxy_traceparent_format(char out[55], const uint8_t trace_id[16], const uint8_t span_id[8],
                              bool sampled);

/* Whether <v> is a valid W3C tracestate: at most 32 list members of key=value, keys
 * `[a-z0-9][a-z0-9_*-/]{0,255}` (or tenant@system), values of printable ASCII but ',' and '='
 * with no trailing space, up to 256 bytes each; empty members allowed; 512 bytes at most. */
bool proxy_tracestate_valid(struct sc_str v);

/* Parses a B3 single header: "{TraceId}-{SpanId}", optionally "-{SamplingState}" and
 * "-{ParentSpanId}", or a bare sampling state ("0", "1", "d"). Trace ids of 16 or 32 lower-case
 * hex digits, span ids of 16. Returns 0 and fills <out>, or -1 and leaves it untouched. */
int proxy_b3_parse(struct sc_str v, struct proxy_trace_ctx *out);

/* Parses B3 multi headers (any may be empty: absent): x-b3-traceid, x-b3-spanid, x-b3-sampled
 * ("1"/"0", also "true"/"false" as old clients send) and x-b3-flags ("1": debug). Ids need both
 * trace and span id; a sampling state alone is a context without ids. Returns 0 and fills <out>,
 * or -1 (nothing usable, or a malformed value) and leaves it untouched. */
int proxy_b3_multi_parse(struct sc_str trace, struct sc_str span, struct sc_str sampled,
                         struct sc_str flags, struct proxy_trace_ctx *out);

extern const char proxy_hex_pairs[513];

#if defined(__SSE2__)
#include <emmintrin.h>

/* The nibbles of the bytes in <x> (the low 8 when <hi> is false, else the high 8) as 16
 * lower-case hex digits at <out>: nibbles split and interleaved, then '0' added and 39 more for
 * those above 9. About ten instructions where a table takes three a byte. */
static inline void proxy_hex_sse2(char *out, __m128i x, bool hi)
{
    const __m128i m = _mm_set1_epi8(0x0f);
    __m128i h = _mm_and_si128(_mm_srli_epi16(x, 4), m), l = _mm_and_si128(x, m);
    __m128i n = hi ? _mm_unpackhi_epi8(h, l) : _mm_unpacklo_epi8(h, l);
    __m128i letters = _mm_and_si128(_mm_cmpgt_epi8(n, _mm_set1_epi8(9)), _mm_set1_epi8(39));
    n = _mm_add_epi8(_mm_add_epi8(n, _mm_set1_epi8('0')), letters);
    _mm_storeu_si128((__m128i *)(void *)out, n);
}
#endif

/* Writes <n> bytes of <in> as 2*<n> lower-case hex digits to <out>: ids (8 or 16 bytes) are
 * written on every traced request, with SSE2 where the machine has it (x86-64 always does), else
 * one table lookup a byte. */
static inline void proxy_trace_hex(char *out, const uint8_t *in, size_t n)
{
    size_t i = 0;
#if defined(__SSE2__)
    for (; i + 16 <= n; i += 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(in + i));
        proxy_hex_sse2(out + 2 * i, x, false);
        proxy_hex_sse2(out + 2 * i + 16, x, true);
    }
    for (; i + 8 <= n; i += 8) {
        proxy_hex_sse2(out + 2 * i, _mm_loadl_epi64((const __m128i *)(const void *)(in + i)),
                       false);
    }
#endif
    for (; i < n; i++) {
        memcpy(out + 2 * i, proxy_hex_pairs + 2 * in[i], 2);
    }
}

#endif

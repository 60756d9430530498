// SPDX-License-Identifier: Apache-2.0
// UTF-8 validation, the one copy every module uses. Valid means what Prometheus's parser and
// jansson accept (Go's utf8.ValidString): no overlong forms, no surrogates (U+D800..U+DFFF), no
// code points past U+10FFFF, no sequence cut short by the end of the input. NUL is valid UTF-8;
// callers that refuse it check for it themselves. Nothing here allocates.
#ifndef SC_CORE_UTF8_H
#define SC_CORE_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* The replacement character U+FFFD, which writers put in place of each invalid byte. */
#define SC_UTF8_REPLACEMENT "\xef\xbf\xbd"

/* Returns the length (1 to 4) of the valid UTF-8 sequence that starts at <p>, reading at most <n>
 * bytes (n >= 1), or 0 when the bytes there are not one. Reads a continuation byte only after the
 * ones before it matched, so a NUL-terminated string is never read past its NUL. */
size_t sc_utf8_seq(const unsigned char *p, size_t n);

/* Returns how many bytes at the start of <p>[0..n) are valid UTF-8: <n> when all of them are, else
 * the offset of the first byte that starts no valid sequence. ASCII is checked eight bytes at a
 * time. */
size_t sc_utf8_valid_prefix(const char *p, size_t n);

/* Returns true when <p>[0..n) is valid UTF-8 in whole. */
static inline bool sc_utf8_valid(const char *p, size_t n)
{
    return sc_utf8_valid_prefix(p, n) == n;
}

#endif

// SPDX-License-Identifier: Apache-2.0
// The syntax of configuration values (value.c), shared by config files, flags, defaults and the
// roles that parse values of their own: durations, sizes, ${NAME} expansion from the environment,
// and the did-you-mean suggestion for a misspelt name. Every formatter writes text its parser
// reads back to the same value; nothing here keeps state.
#ifndef SC_CORE_VALUE_H
#define SC_CORE_VALUE_H

#include <stddef.h>
#include <stdint.h>

/* Parses a duration ("250ms", "1h30m", "0") into milliseconds. Returns 0 or -EINVAL. */
int sc_value_parse_duration(const char *s, uint64_t *ms);

/* Writes the shortest exact rendering of <ms> ("250ms", "90s", "1h30s", "0") into <out>, which
 * holds at least SC_DURATION_MAX bytes: what sc_value_parse_duration reads back as <ms>. */
#define SC_DURATION_MAX 96
void sc_value_format_duration(uint64_t ms, char *out);

/* Parses a size ("64KiB", "1MiB", "100", "10MB") into bytes. Returns 0 or -EINVAL. */
int sc_value_parse_size(const char *s, uint64_t *bytes);

/* Expands ${NAME} / ${NAME:-default} / $$ in <s>. Returns a new string, or NULL with a new
 * message in <*err> (unset variable, unterminated reference). <*errpos> is the byte offset of the
 * offending reference. */
char *sc_value_env_expand(const char *s, char **err, size_t *errpos);

/* Returns the candidate closest to <word> by edit distance when it is close enough to be a likely
 * typo (distance <= 2, or <= a third of its length), else NULL. */
const char *sc_value_did_you_mean(const char *word, const char *const *candidates, size_t n);

#endif

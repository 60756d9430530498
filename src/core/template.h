// SPDX-License-Identifier: Apache-2.0
// Templates: a small subset of Go's text/template syntax, so Vault Agent and consul-template users
// can carry their templates over. A template is parsed once (every error, unknown functions
// included, reads "name:line:col: message") and rendered any number of times over a JSON value
// (jansson). Rendering is pure: no I/O beyond getenv for `env` and the caller's own functions,
// bounded output (the caller's capped buffer) and bounded nesting. docs/config.md has the
// language reference.
#ifndef SC_CORE_TEMPLATE_H
#define SC_CORE_TEMPLATE_H

#include <stddef.h>

#include <jansson.h>

#include "core/buf.h"

struct sc_template;

/* A caller-provided function (for example `secret "path"`): receives the evaluated arguments
 * (borrowed) and returns 0 with a new reference in <*out>, or a negative error with a new message
 * in <*err>. */
typedef int (*sc_template_func_cb)(void *arg, const char *name, json_t *const *args, size_t nargs,
                                   json_t **out, char **err);

/* Called for each call of a caller function whose first argument is a string literal. */
typedef void (*sc_template_call_cb)(void *arg, const char *func, const char *first);

/* Parses <len> bytes of <text> (named <name> in messages). <extra> is a NULL-terminated list of
 * caller function names allowed besides the built-ins (may be NULL). Returns a new template, or
 * NULL with a new "name:line:col: message" in <*err>. Input is capped at 1 MiB and nesting at 64
 * levels. */
struct sc_template *sc_template_parse(const char *name, const char *text, size_t len,
                                      const char *const *extra, char **err);

/* Renders <t> with <data> as the dot (borrowed; NULL means null), appending to <out>. Caller
 * functions go to <fn> (may be NULL when the template has none). Returns 0, or a negative error
 * (SC_ETOOBIG when <out> is full, SC_ECONFIG for a failed function) with a new "name:line:col:
 * message" in <*err>; <out> may then hold partial output. */
int sc_template_render(const struct sc_template *t, json_t *data, sc_template_func_cb fn, void *arg,
                       struct sc_buf *out, char **err);

/* Calls <cb> for each call of caller function <func> whose first argument is a string literal, in
 * source order (for example, to learn which secrets a template reads before rendering it). */
void sc_template_calls(const struct sc_template *t, const char *func, sc_template_call_cb cb,
                       void *arg);

/* Frees <t>. NULL-safe. */
void sc_template_free(struct sc_template *t);

/* Parses fetched text into the value a template sees: JSON when it parses as JSON, else the
 * mapping or sequence of a YAML document (scalars as strings), else the text as a string.
 * Returns a new reference (never NULL). YAML is bounded: 64 levels, 100,000 nodes with aliases
 * expanded; past that the text is kept as a string. */
json_t *sc_template_data_parse(const char *text, size_t len);

/* Appends the base64 (RFC 4648, padded) of <n> bytes at <p> to <out>. Returns 0 or SC_ETOOBIG. */
int sc_template_base64_encode(struct sc_buf *out, const void *p, size_t n);

/* Appends the decoded bytes of base64 text <s> (padded or not) to <out>. Returns 0, -EINVAL on a
 * character outside the alphabet, or SC_ETOOBIG. */
int sc_template_base64_decode(struct sc_buf *out, const char *s, size_t n);

#endif

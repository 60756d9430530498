// SPDX-License-Identifier: Apache-2.0
// Route query-parameter matches (match.query_parameters) and path rewriting by regular expression
// (regex_rewrite): their option tables, the check at load, the compiled form a route's traffic
// policy holds, and the per-request work. Query values are compared as they were sent (not
// percent-decoded), as Envoy does; the first occurrence of a name counts. A rewrite replaces every
// match of its pattern in the path (the query is kept) and is bounded by PROXY_REWRITE_MAX.
// Invariant: a route without either pays nothing (both hang off the route's policy, NULL when
// unused).
#ifndef SC_ROLES_PROXY_PROXY_ROUTE_QUERY_H
#define SC_ROLES_PROXY_PROXY_ROUTE_QUERY_H

#include <stdbool.h>
#include <stddef.h>

#include "core/config.h"
#include "core/regex.h"
#include "core/str.h"

#define PROXY_REWRITE_MAX 8192 /* longest rewritten path */
#define PROXY_QUERY_MAX 32     /* query_parameters per route */

struct proxy_query_match_cfg {
    char *name;
    char *exact;
    char *prefix;
    char *suffix;
    char *regex;
    bool present; /* false: the parameter must be absent */
};

struct proxy_regex_rewrite_cfg {
    char *pattern;
    char *substitution;
};

extern const struct sc_opt proxy_query_match_opts[];
extern const struct sc_opt proxy_regex_rewrite_opts[];

struct proxy_query_match;
struct proxy_regex_rewrite;

/* Checks route <where>'s query matches <q> (struct proxy_query_match_cfg) and rewrite <rw> (with
 * <has_prefix_rewrite>: they exclude each other). Returns 0 or SC_ECONFIG with a new <*err>. */
int proxy_route_query_check(const struct sc_vec *q, const struct proxy_regex_rewrite_cfg *rw,
                            bool has_prefix_rewrite, const char *where, char **err);

/* Checks regular expression <re> (<subst>: a regex_rewrite substitution for it; NULL: a query
 * value regex, anchored at both ends), for front ends that report at the user's position.
 * Returns 0 or SC_ECONFIG with the reason in a new <*why>. */
int proxy_route_regex_check(const char *re, const char *subst, char **why);

/* Compiles checked regular expression <re> to match a whole value. Returns it (the caller frees
 * it with sc_regex_code_free), or NULL when it does not compile. */
pcre2_code *proxy_route_regex_compile(const char *re);

/* The compiled matches of <q> (q->n of them; NULL when none) and their release. */
struct proxy_query_match *proxy_query_new(const struct sc_vec *q);
void proxy_query_free(struct proxy_query_match *v, size_t n);

/* The value of query parameter <name> in request target <target> (its first occurrence, as sent;
 * "" without "="), or p NULL. */
struct sc_str proxy_query_value(struct sc_str target, struct sc_str name);

/* Whether all <n> matches hold for request target <target>; <md> is the worker's match data. */
bool proxy_query_matches(const struct proxy_query_match *v, size_t n, struct sc_str target,
                         pcre2_match_data *md);

/* The compiled rewrite (NULL when <c> has no pattern) and its release. */
struct proxy_regex_rewrite *proxy_regex_rewrite_new(const struct proxy_regex_rewrite_cfg *c);
void proxy_regex_rewrite_free(struct proxy_regex_rewrite *rw);

/* Writes origin-form <origin> with its path rewritten (the query kept) into <out> of <cap> bytes.
 * Returns the length, or -1 when the result does not fit or the rewrite fails. */
long proxy_regex_rewrite_apply(const struct proxy_regex_rewrite *rw, struct sc_str origin,
                               char *out, size_t cap);

#endif

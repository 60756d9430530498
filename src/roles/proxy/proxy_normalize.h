// SPDX-License-Identifier: Apache-2.0
// The request as routing, authorization and the upstream all see it: the path of the request
// target normalised once (RFC 3986 dot segments, merged slashes, unreserved characters decoded,
// Istio's path_normalization levels) and the Host compared without case, port or trailing dot.
// Key invariant: normalising a normalised target changes nothing, and the result never holds a
// "." or ".." segment, so a policy cannot see one path and the application another. Pure
// functions: nothing here touches a connection.
#ifndef SC_ROLES_PROXY_PROXY_NORMALIZE_H
#define SC_ROLES_PROXY_PROXY_NORMALIZE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/str.h"

/* Istio's meshConfig.pathNormalization levels, in order of strength. */
enum proxy_pathnorm {
    PROXY_PN_NONE,        /* the target as received (refusals below still apply) */
    PROXY_PN_BASE,        /* RFC 3986: dot segments removed, unreserved %XX decoded, hex upper */
    PROXY_PN_MERGE,       /* BASE, and runs of '/' merged into one */
    PROXY_PN_DECODE_MERGE /* MERGE, and %2F / %5C decoded to '/' (unless refused) */
};

/* What becomes of %2F and %5C (an encoded '/' or '\') in the path. */
enum proxy_escslash {
    PROXY_ES_REJECT, /* 400 */
    PROXY_ES_DECODE, /* decoded to '/' before dot segments and slashes are handled */
    PROXY_ES_KEEP    /* left encoded (upper-case hex); the application decides */
};

/* Option values as written in the config: "none", "base", "merge_slashes",
 * "decode_and_merge_slashes" and "reject", "decode", "keep". */
extern const char *const proxy_pathnorm_names[];
extern const char *const proxy_escslash_names[];

/* What becomes of a request header whose name holds '_' (Envoy's
 * headers_with_underscores_action): an upstream that maps '_' to '-' (CGI, many frameworks)
 * would read "Content_Length" as the framing the proxy never saw. */
enum proxy_underscores {
    PROXY_US_ALLOW,  /* forwarded as it is */
    PROXY_US_DROP,   /* removed before routing, policies and the upstream see the request */
    PROXY_US_REJECT, /* 400 */
};
extern const char *const proxy_underscores_names[]; /* "allow", "drop", "reject" */

enum {
    PROXY_NORM_SAME = 1, /* the target is already normal: use it as it is */
};

/* Normalises origin-form request target <t> ("/path" with an optional "?query") at <level>
 * with escaped slashes handled by <esc>, writing the result to <out> (<cap> bytes; t.len always
 * suffices, since normalising never lengthens a target). The query is kept as it is. Refused
 * whatever the level: a '#' (a fragment never travels in a request), a '\' , %00, a '%' not
 * followed by two hex digits; from BASE up, a "." or ".." segment carrying ';' parameters, and
 * %2F/%5C with PROXY_ES_REJECT. Returns 0 with the result's length in <*olen> and the length of
 * its path part in <*plen>, PROXY_NORM_SAME when <t> is already normal (nothing written; <*plen>
 * still set), or -1 with a static reason in <*why> (answer 400). Borrows <t>. */
int proxy_normalize_target(struct sc_str t, int level, int esc, char *out, size_t cap, size_t *olen,
                           size_t *plen, const char **why);

/* The host of Host value or authority <h> as policies compare it: lower case, without its port
 * and without a trailing dot ("Example.COM.:8080" -> "example.com"; "[::1]:80" -> "[::1]").
 * Writes at most <cap> bytes to <out>; returns the length, or 0 when <h> is empty or does not
 * fit (callers treat that as no host). Borrows <h>. */
size_t proxy_host_normalize(struct sc_str h, char *out, size_t cap);

#endif

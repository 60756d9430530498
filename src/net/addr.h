// SPDX-License-Identifier: Apache-2.0
// Socket addresses as users write them: "127.0.0.1:8080", "[::1]:8080", ":8080" (all IPv4
// interfaces), "0.0.0.0:9001". Numeric only: names are resolved by the callers that allow them.
#ifndef SC_NET_ADDR_H
#define SC_NET_ADDR_H

#include <stddef.h>
#include <sys/socket.h>

/* Parses <s> into <ss>. Returns 0, or -EINVAL with a new message in <*err> (when err is not NULL).
 */
int sc_addr_parse(const char *s, struct sockaddr_storage *ss, char **err);

/* Formats <sa> as "ip:port" or "[ip6]:port" into <out> (at least 64 bytes). Returns <out>. */
const char *sc_addr_format(const struct sockaddr *sa, char *out, size_t outlen);

/* An option check (core/config.h sc_opt_check_cb) for a char * field holding an address. */
int sc_addr_check(void *field, char **err);

#endif

// SPDX-License-Identifier: Apache-2.0
// Consistent-hash load balancing (a cluster's lb_policy ring_hash or maglev): the hash_policy of
// a route or cluster names what a request is hashed by (a header, a cookie, a query parameter,
// the client's address), Envoy's way (each policy with a value mixes its hash in; terminal stops
// there; no value: the cluster's round robin). The endpoint is chosen by rendezvous hashing: the
// usable endpoint whose own key scores highest against the request's hash, so a key goes to the
// same endpoint while it is usable, and when endpoints come or go only the keys of those move
// (the property ring hash and maglev give; the exact assignment of keys is not Envoy's). O(n) in
// the cluster's (or subset's) endpoints, no tables. Invariant: nothing here runs for a request
// whose cluster does not hash.
#ifndef SC_ROLES_PROXY_PROXY_HASH_H
#define SC_ROLES_PROXY_PROXY_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "core/str.h"
#include "net/http1.h"

#define PROXY_HASH_MAX 8 /* hash policies per route or cluster */

struct proxy_hash_policy_cfg {
    char *header;
    char *cookie;
    char *query_parameter;
    bool source_ip;
    bool terminal;
};

extern const struct sc_opt proxy_hash_policy_opts[];

struct proxy_hash_policy;

/* Checks hash policies <v> of <where>: one of header, cookie, query_parameter and source_ip
 * each. Returns 0 or SC_ECONFIG with a new <*err>. */
int proxy_hash_check(const struct sc_vec *v, const char *where, char **err);

/* The compiled policies of <v> (NULL when none) and their release. */
struct proxy_hash_policy *proxy_hash_new(const struct sc_vec *v);
void proxy_hash_free(struct proxy_hash_policy *p, size_t n);

/* Request <m>'s hash by the <n> policies <p> (<client_ip>: the client's address) into <*out>.
 * Returns false when no policy found its value. */
bool proxy_hash_request(const struct proxy_hash_policy *p, size_t n, const struct sc_http_msg *m,
                        const char *client_ip, uint64_t *out);

/* 64-bit hash of <n> bytes (an endpoint's name makes its key), and an endpoint's score for a
 * request hash: the highest usable score wins. */
uint64_t proxy_hash_bytes(const char *p, size_t n);
static inline uint64_t proxy_hash_score(uint64_t hash, uint64_t key)
{
    uint64_t z = hash ^ key;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

#endif

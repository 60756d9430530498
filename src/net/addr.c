// SPDX-License-Identifier: Apache-2.0
// Address parsing and formatting shared by every listener and upstream.
#include "net/addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/str.h"

static int fail(char **err, const char *s, const char *why)
{
    if (err) {
        *err = sc_asprintf("invalid address \"%s\": %s (want host:port, e.g. 127.0.0.1:8080 or "
                           "[::1]:8080)",
                           s, why);
    }
    return -EINVAL;
}

int sc_addr_parse(const char *s, struct sockaddr_storage *ss, char **err)
{
    memset(ss, 0, sizeof(*ss));
    const char *colon = strrchr(s, ':');
    if (!colon) {
        return fail(err, s, "no port");
    }
    uint64_t port;
    if (sc_str_to_u64(sc_str_c(colon + 1), 65535, &port) < 0) {
        return fail(err, s, "port must be a number from 0 to 65535");
    }
    char host[64];
    size_t hlen = (size_t)(colon - s);
    if (hlen >= sizeof(host)) {
        return fail(err, s, "host too long");
    }
    memcpy(host, s, hlen);
    host[hlen] = '\0';

    if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
        host[hlen - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, &a6->sin6_addr) != 1) {
            return fail(err, s, "not an IPv6 address");
        }
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        return 0;
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    if (hlen == 0) {
        a4->sin_addr.s_addr = htonl(INADDR_ANY);
        return 0;
    }
    if (strcmp(host, "localhost") == 0) {
        a4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return 0;
    }
    if (inet_pton(AF_INET, host, &a4->sin_addr) != 1) {
        return fail(err, s,
                    strchr(host, ':') ? "IPv6 addresses need brackets"
                                      : "not a numeric IPv4 address");
    }
    return 0;
}

const char *sc_addr_format(const struct sockaddr *sa, char *out, size_t outlen)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &a6->sin6_addr, ip, sizeof(ip));
        snprintf(out, outlen, "[%s]:%u", ip, ntohs(a6->sin6_port));
    } else if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &a4->sin_addr, ip, sizeof(ip));
        snprintf(out, outlen, "%s:%u", ip, ntohs(a4->sin_port));
    } else {
        snprintf(out, outlen, "unknown");
    }
    return out;
}

int sc_addr_check(void *field, char **err)
{
    const char *s = *(char **)field;
    struct sockaddr_storage ss;
    return s ? sc_addr_parse(s, &ss, err) : 0;
}

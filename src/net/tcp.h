// SPDX-License-Identifier: Apache-2.0
// TCP helpers shared by everything that listens or connects on a libuv loop: a listener that can
// share its port with the listeners of other worker threads (SO_REUSEPORT, so the kernel spreads
// connections over the workers' loops), and socket options set once per accepted or connected
// socket. They hold no state: the caller owns every handle and closes it.
#ifndef SC_NET_TCP_H
#define SC_NET_TCP_H

#include <stdbool.h>
#include <sys/socket.h>

#include <uv.h>

/* Initialises <h> on <loop> and binds and listens on <addr> with <backlog>. With <reuseport>,
 * SO_REUSEPORT is set before bind so several handles (one per worker loop) may listen on the same
 * address. TCP_NODELAY is set on the listener, and the sockets accepted from it inherit it: they
 * need no sc_tcp_tune. <cb> is libuv's connection callback. Returns 0, or a negative libuv error
 * with a new message in <*err>; <h> is initialised either way, so the caller closes it (with
 * uv_close) on both paths. */
int sc_tcp_listen(uv_loop_t *loop, uv_tcp_t *h, const struct sockaddr *addr, int backlog,
                  bool reuseport, uv_connection_cb cb, char **err);

/* Sets TCP_NODELAY on <h> (request/response traffic is latency bound and every write is a whole
 * message or a large slice): on a connected socket, or a listener whose accepted sockets inherit
 * it. Errors are ignored: the socket still works. */
void sc_tcp_tune(uv_tcp_t *h);

/* Writes the local ("ip:port") address of <h> into <out> (at least 64 bytes). Returns 0 or a
 * negative libuv error. */
int sc_tcp_local_address(const uv_tcp_t *h, char *out, size_t outlen);

/* Reads the peer's address of <h> into <ss> (family AF_UNSPEC when it cannot be read) and writes
 * its IP (no port) into <out> (at least 46 bytes; empty when unknown): one getpeername for both.
 * Returns <out>. */
const char *sc_tcp_peer_ip(const uv_tcp_t *h, struct sockaddr_storage *ss, char *out,
                           size_t outlen);

#endif

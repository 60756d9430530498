// SPDX-License-Identifier: Apache-2.0
// The TLS unit tests' harness (tls_world.c): the test PKI from tests/certs.sh, contexts from
// options, and a "world": one libuv loop with a listener whose accepted connection gets a server
// TLS layer and a client end with a client TLS layer over TCP, with callbacks that run a request
// and reply, bulk transfers with backpressure, PERMISSIVE sniffing and lifecycle variations, and
// record what each end saw. Shared by test_tls.c and test_tls_store.c.
#ifndef SC_TESTS_TLS_WORLD_H
#define SC_TESTS_TLS_WORLD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "net/tcp.h"
#include "net/tls.h"

extern char pki[64];

#define RX_KEEP 8192

struct world;

struct end {
    struct sc_tcp_xport tcp;
    struct sc_xport *x; /* the top of the chain */
    struct world *w;
    bool server;
    bool used;
    char rbuf[65536];
    char got[RX_KEEP];
    size_t got_len;
    uint64_t rx;
    bool rx_ok; /* every byte matched the pattern (big mode) */
    int read_err;
    int nconnected, connected_rc;
    int nclosed;
    enum sc_tls_fail fail;
    char fail_text[160];
    /* big mode */
    uint64_t tx_done;
    bool tx_pending;
    int nwrite_ret1, nwrite_done;
    uint64_t paused_at;
    uv_timer_t resume;
    bool resume_init;
    /* what the end saw of the session once it was up */
    char alpn[32], sni[64], version[16], cipher[64], peer_id[128], peer_cn[64];
    bool resumed, tls;
    int cert_index; /* server: the certificate presented */
    char xfcc[512]; /* the XFCC element for the peer ("" when none) */
    bool mis_rsa, mis_wild,
        mis_none; /* server: misdirected for rsa.test, a.wild.test:443, nobody.test */
    bool replied;
    int last_write_status;
    char *big_heap;
    int alive_after_reply; /* -1: not checked; else sc_xport_alive once the reply was in */
    int alive_at_eof;
    char chunk[256 * 1024];
};

struct world {
    uv_loop_t loop;
    uv_tcp_t lis;
    int port;
    struct sc_tls_ctx *sctx, *cctx;
    struct end srv, cli;
    const char *cli_sni;
    const char *sess_key;
    struct sc_str cli_alpn; /* the client connection's own ALPN list (wire format; empty: none) */
    const char *request;    /* the client sends this once connected */
    const char *reply;      /* the server answers this once it has the request */
    uint64_t big;           /* big mode: each side sends this many pattern bytes */
    bool pause_reads;       /* big mode: receivers pause every 1 MiB */
    bool plain_client;      /* the client speaks no TLS */
    bool permissive;        /* the server sniffs the first bytes and serves TLS or plaintext */
    bool no_hs_cb;          /* the server layer reports a failed handshake through read */
    bool server_first;      /* the server writes <reply> at accept, before the handshake */
    bool srv_shutdown;      /* the server shuts its side down (close_notify) after replying */
    bool close_on_accept;   /* the client closes as soon as the server accepted */
    bool connect_null;    /* the client's TCP connects first; the TLS layer then gets a NULL addr */
    bool close_mid_write; /* the client writes 8 MiB at once and closes while it is queued */
    bool sniffed_tls;
    bool sniffed;
};

void assert_ok(struct world *w);
struct sc_tls_ctx *client_ctx(struct sc_tls_client_opts *o);
struct sc_tls_client_opts client_opts(void);
void end_close(struct end *e);
void exchange(struct world *w, struct sc_tls_ctx *sctx, struct sc_tls_ctx *cctx, const char *sni);
int group_setup(void **state);
int group_teardown(void **state);
void on_alloc(void *owner, uv_buf_t *buf);
void on_closed(void *owner);
void on_connected(void *owner, int status);
void on_lis_closed(uv_handle_t *h);
void on_timer_closed(uv_handle_t *h);
void on_write_done(void *owner, int status);
char *path_of(const char *name);
void run(const char *cmd);
struct sc_tls_ctx *server_ctx(struct sc_tls_server_opts *o);
struct sc_tls_server_opts server_opts(const char *cert, const char *key);
struct sc_strv strv(const char *a, const char *b);
void world_init(struct world *w);
void world_run(struct world *w);

#endif

// SPDX-License-Identifier: Apache-2.0
// The proxy's connection and request types, shared by the data-path files of src/roles/proxy/:
// proxy_worker.c (listeners, buffers), proxy_upstream.c (load balancing, upstream connections and
// pools), proxy_exchange.c (routing, policy, tries, local replies, timers), proxy_h1.c (the
// HTTP/1 codecs and pumps), proxy_headers.c (routing and the rules that rewrite heads) and
// proxy_log.c (access log and request metrics). A downstream connection embeds
// its current request; an upstream connection belongs to a request while active and to its
// endpoint's per-worker pool while idle. Nothing here is visible outside the proxy role.
#ifndef SC_ROLES_PROXY_PROXY_CONN_H
#define SC_ROLES_PROXY_PROXY_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "core/buf.h"
#include "core/list.h"
#include "net/http1.h"
#include "net/transport.h"
#include "roles/proxy/proxy.h"
#include "roles/proxy/proxy_authz.h"
#include "roles/proxy/proxy_trace_ctx.h"

#define BUF_INITIAL 16384
#define MAX_HEADERS 100
#define MAX_FREE 256
/* Recycled client connection structs kept (about 2.6 KiB each). */
#define MAX_FREE_DC 256
/* Recycled HTTP/2 stream structs kept (a bare proxy_dconn, about 1.5 KiB): a client with -m 10
 * on 50 connections has 500 streams in flight, and a shorter list frees and re-allocates (and
 * zeroes) one per request. Kept only after being in use at once, so the peak memory is
 * unchanged; what the list holds after a burst is bounded by this (about 0.75 MiB). */
#define MAX_FREE_STREAMS 512
#define MAX_IOV 8
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80 /* linux/netfilter_ipv4.h */
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80 /* linux/netfilter_ipv6/ip6_tables.h */
#endif
/* original_dst pooling, per worker: destinations with idle connections, and idle connections in
 * all (each destination also stops at its cluster's max_idle). */
#define ODST_MAX_DESTS 256
#define ODST_MAX_IDLE 1024

/* D_H2: an HTTP/2 connection (proxy_h2.c drives it), or a stream whose exchange is over. */
enum dstate { D_HEAD, D_REQ, D_TUNNEL, D_CLOSING, D_H2 };
enum ustate { U_CONNECTING, U_ACTIVE, U_IDLE, U_CLOSING };
enum body { B_NONE, B_LENGTH, B_CHUNKED, B_EOF, B_RAW };
/* What to do when the pending downstream write completes. */
enum dnext { DN_NONE, DN_LOCAL, DN_INTERIM, DN_BODY, DN_TUNNEL };

enum {
    F_UF = 1 << 0,    /* upstream connection failure */
    F_UT = 1 << 1,    /* upstream request timeout */
    F_URX = 1 << 2,   /* retry limit reached / not retriable */
    F_UH = 1 << 3,    /* no healthy upstream */
    F_UC = 1 << 4,    /* upstream connection termination */
    F_DC = 1 << 5,    /* downstream connection termination */
    F_NR = 1 << 6,    /* no route */
    F_UPE = 1 << 7,   /* upstream protocol error */
    F_DPE = 1 << 8,   /* downstream protocol error */
    F_SI = 1 << 9,    /* stream idle timeout */
    F_UO = 1 << 10,   /* upstream overflow: a circuit breaker refused the request */
    F_DI = 1 << 11,   /* fault injection: delayed */
    F_FI = 1 << 12,   /* fault injection: aborted */
    F_RL = 1 << 13,   /* rate limited */
    F_RBAC = 1 << 14, /* denied by an authorization policy (proxy_authz.c) */
    F_UAEX = 1 << 15, /* denied or failed by an external authorizer (proxy_extauthz.c) */
    F_DR = 1 << 16,   /* answered by the route's direct_response (proxy_route_action.c) */
    F_RD = 1 << 17,   /* answered by the route's redirect */
    F_LH = 1 << 18,   /* a health check failed locally (draining, too few healthy endpoints) */
    F_CORS = 1 << 19, /* a CORS preflight answered by the proxy (proxy_cors.c) */
};

/* COND_GRPC: a gRPC status (proxy_grpc.c); proxy_may_retry then says whether a retry is
 * possible at all, the status decides which. */
enum { COND_CONNECT = 1, COND_RESET, COND_TIMEOUT, COND_STATUS, COND_GRPC };

/* gRPC length-prefixed messages counted as their bytes pass (proxy_grpc.c). */
struct proxy_grpc_frames {
    uint64_t msgs; /* messages begun */
    uint32_t skip; /* payload bytes of the current message still to pass */
    uint32_t len;  /* the length prefix read so far */
    uint8_t hpos;  /* bytes of the 5-byte prefix seen (0: between messages) */
};

/* grpc-status matched in a trailer section as its bytes pass (proxy_grpc.c). */
struct proxy_grpc_tscan {
    uint8_t pos;  /* bytes of "\ngrpc-status:" matched; 13: in the value */
    int16_t val;  /* the value's digits so far (-1: none yet, -2: not a status) */
    uint8_t ndig; /* how many (a status has 1 or 2) */
    uint8_t code; /* the last complete, valid status + 1; 0: none */
};

struct rbuf {
    char *p;
    size_t start, end, cap;
};

struct proxy_uconn {
    struct sc_tcp_xport tx; /* the transport chain's bottom */
    struct sc_xport *x;     /* its top: every read, write and close goes through it */
    struct sc_xport *tls;   /* the TLS layer (== x) when the cluster originates TLS */
    uv_timer_t timer;
    struct sc_list node; /* the endpoint's idle pool, or the free list */
    struct proxy_worker *w;
    struct proxy_rt *rt; /* a reference while open */
    struct proxy_endpoint *ep;
    struct proxy_exch *ex; /* the exchange it carries while active */
    struct sc_metric *m_active;
    struct rbuf in;
    size_t last_len;
    size_t wconsume;
    int state;
    int closes;
    bool wpending;
    bool reused;
    bool got_bytes;
    bool eof;
    bool idle_timer;     /* the timer runs for the pool idle timeout (also while borrowed) */
    uint64_t idle_since; /* when it last went back to the pool */
    bool bk_cx;          /* counted in the cluster's connections (circuit breaker) */
    bool bk_pending;     /* counted in the cluster's pending requests until connected */
    /* ---- upstream HTTP/2 (proxy_h2_up.c) ---- */
    struct proxy_h2_conn *h2;    /* an HTTP/2 connection: its session and streams */
    struct proxy_h2_stream *h2s; /* one stream of an HTTP/2 connection: x is the stream */
    /* ---- tries waiting for a connecting HTTP/2 connection (proxy_h2_wait.c) ---- */
    struct sc_list h2cnode;     /* pool->h2conn while it connects */
    struct sc_list h2waiters;   /* the placeholders of the tries waiting for it */
    uint32_t nh2wait;           /* how many */
    struct proxy_uconn *h2wait; /* a placeholder: the connection its try waits for */
    bool h2ph;                  /* a placeholder (no transport, no handles) */
};

/* What an exchange knows of the client connection that carries it, whatever its protocol: set
 * when the connection is accepted, valid while it is open. */
struct proxy_client {
    char ip[48];                   /* the client's address (X-Forwarded-For, log, rate limits) */
    struct sockaddr_storage addr;  /* with its port (%DOWNSTREAM_REMOTE_ADDRESS%) */
    struct sc_xport *tls;          /* the connection's TLS layer (SNI, version, peer identity);
                                      NULL: plaintext */
    char *xfcc;                    /* the client certificate's XFCC element, made on first use */
    struct proxy_az_conn azc;      /* the rules this connection's attributes rule out */
    struct proxy_span_conn *trace; /* its span attributes, made on first use (proxy_trace.c) */
};

struct proxy_exch;

/* The downstream codec an exchange answers through: the HTTP/1 connection (proxy_h1.c) now, an
 * HTTP/2 stream next. The exchange decides what to answer and when it is over; the codec writes
 * and decides what becomes of its connection. */
struct proxy_down_ops {
    /* Whether a response of the proxy's own can be written now (nothing of another is in
     * flight); when not, the exchange aborts instead. */
    bool (*can_reply)(struct proxy_exch *ex);
    /* Writes the proxy's own response (<status>, text <body>, the exchange's rate-limit
     * headers); the exchange finishes once it is out. */
    void (*reply)(struct proxy_exch *ex, int status, struct sc_str body);
    /* The exchange is over and logged: read the next request, or close. */
    void (*finish)(struct proxy_exch *ex);
    /* Abandons the exchange: the client sees the connection (or stream) end, never a silently
     * short message. */
    void (*abort)(struct proxy_exch *ex);
    /* Backpressure or state changed: start or stop reading the client's bytes. */
    void (*read_update)(struct proxy_exch *ex);
    /* The exchange's deadlines moved: re-arm its timer. */
    void (*arm_timer)(struct proxy_exch *ex);
};

/* The exchange: one request and its response, from the parsed head to the log line. Routing,
 * policy, tries, timers and the access log act on it; the codec that carries it (proxy_h1.c) is
 * reached through <dc>. */
/* The most of a request's path the access log records. */
#define PROXY_LOG_PATH 256

/* The chunked decoders of an exchange, made when a body is first chunked (proxy_exch_chunked) and
 * kept by the dconn: most exchanges, HTTP/2 streams among them, never need them. */
struct proxy_chunked {
    struct sc_http1_chunked req;  /* the request body's */
    struct sc_http1_chunked resp; /* the response body's */
};

struct proxy_exch {
    struct proxy_worker *w;
    struct proxy_dconn *dc;  /* the downstream connection carrying it */
    struct proxy_client *cl; /* that connection's client */
    struct proxy_uconn *uc;  /* the upstream connection of the current try, while it has one */
    const struct proxy_down_ops *down;
    struct proxy_rt *rt; /* a reference while the request runs */
    struct proxy_listener *lsn;
    struct proxy_route *route;
    struct proxy_cluster *cluster; /* the destination: the route's or a weighted one */
    struct proxy_subset *subset;   /* NULL: all the cluster's endpoints */
    uint64_t hash;                 /* consistent hashing: the request's, when hashed */
    bool hashed;
    _Atomic(struct sc_metric *) *codes; /* sidecar_requests_total cache for the destination */
    struct proxy_req_pol pol;
    struct proxy_endpoint *ep;     /* the current or last try's endpoint */
    struct proxy_endpoint *active; /* counted in ep->active */
    struct sc_buf head;            /* the upstream request head, kept for retries */
    struct sc_buf copy;            /* request body bytes sent so far, while they fit */
    uint64_t remaining;
    uint64_t rremaining;
    uint64_t start_ns;
    uint64_t upstream_ns;
    uint64_t upstream_total_ns;
    uint64_t body_done_ms;
    uint64_t bytes_in;
    uint64_t bytes_out;
    unsigned flags;
    int body;
    int rbody;
    int status;
    int minor;
    int tries;
    int retries;
    bool keep_alive;
    bool close_after; /* the connection carries nothing after this exchange (its request body
                         cannot be skipped, the head was bad, ...) */
    bool body_done;
    bool retriable;
    bool is_head;
    bool is_connect;
    bool upgrade;
    bool resp_head_sent;
    bool resp_done;
    bool dechunk;
    bool free_retry_used;
    bool resp_keep_alive;
    bool expect;        /* the client sent Expect: 100-continue (HTTP/1.1): stripped upstream */
    bool sent_continue; /* the proxy answered it with its own 100 Continue */
    bool rq_held;       /* a max_requests slot of bst */
    bool retry_held;    /* a retry slot of bst */
    struct proxy_cluster_state *bst; /* the breakers the request holds slots of */
    char method[16];
    struct proxy_chunked *ch; /* with body or rbody B_CHUNKED: their decoders (kept by the dconn) */
    char *path; /* the access log's path, up to PROXY_LOG_PATH bytes: a block made when the access
                   log first needs it, kept by the dconn (none while the log is off) */
    size_t path_len;
    char request_id[64];
    size_t request_id_len;
    const char *authz_policy;  /* the policy that decided ("": none matched); NULL: none ran */
    const char *authz_audit;   /* the AUDIT policy that matched */
    const char *authz_dry_run; /* the dry-run policy that decided differently */
    bool authz_dry_denied;
    bool www_authenticate;           /* a 401 for an invalid token (proxy_jwt.c) */
    const struct sc_str *authn_drop; /* client headers dropped: the JWT rules' output names */
    size_t nauthn_drop;
    struct sc_str authn_strip; /* the header value that carried the token, not forwarded */
    struct sc_str authn_add;   /* header lines to add upstream */
    char *request_principal;   /* the verified identity ("<iss>/<sub>") for the access log, a copy
                                  (the token cache may reuse its slot before the line is written);
                                  NULL: none, or the access log is off */
    struct proxy_extauthz_call *authz_call; /* an external check in flight */
    struct sc_str reply_headers; /* header lines a local reply carries (ext_authz deny) */
    const char *reply_ctype;     /* a local reply's Content-Type (NULL: text/plain) */
    struct sc_str resp_add;      /* header lines every response carries, upstream's or local (a
                                    renewed login session's cookie) */
    struct proxy_exch_trace tr;  /* trace context, when the snapshot traces */
    struct proxy_span *span;     /* the span of a sampled request (proxy_trace.c) */
    struct proxy_oidc_call *oidc_call; /* a login's token request in flight */
    /* downstream HTTP/2 (proxy_h2.c) */
    bool down_h2;     /* the request came on an HTTP/2 stream (Via, access log, protocol) */
    bool te_trailers; /* the client sent TE with "trailers": kept toward HTTP/2 upstreams */
    /* gRPC (proxy_grpc.c): a request with content-type application/grpc on an HTTP/2 stream */
    bool grpc;
    uint8_t grpc_status;    /* the status the client was given + 1; 0: none (yet) */
    uint32_t grpc_to_off;   /* where the forwarded grpc-timeout's value is in <head>; 0: none */
    uint64_t grpc_deadline; /* loop time (ms) the call must end by; 0: none */
    struct proxy_grpc_frames greq, gresp;
    struct proxy_grpc_tscan tscan;
    uint8_t grpc_web; /* PROXY_GW_*: a gRPC-Web request on a grpc_web listener (local replies) */
};

/* original_dst clusters: the destination of a connection or of its current request, resolved
 * into a private endpoint. Separate from the connection so that listeners that never forward to
 * an original destination do not pay for it in every connection. */
struct proxy_odst {
    struct proxy_endpoint ep;
    uv_getaddrinfo_t gai;
    bool resolving;
    bool stale;   /* the lookup in flight is for a request that is over */
    bool checked; /* SO_ORIGINAL_DST was read for this connection */
    bool has_orig;
    uint16_t dport; /* with <checked>: the original destination's port, else the local port */
    struct sockaddr_storage dst; /* with <checked>: the original destination, else the local
                                    address (AF_UNSPEC when unknown) */
    struct sockaddr_storage orig;
    char name[264];
};

/* A downstream connection, or an HTTP/2 stream (which proxy_h2.c drives as one). The parts only
 * a client connection has (its socket layer, its client's address and identity) are in struct
 * proxy_dconn_conn around it, so that the hundreds of streams a few clients keep in flight do
 * not each carry them: <tx> is NULL on a stream, and <cl> is its connection's client. */
struct proxy_dconn {
    struct sc_tcp_xport *tx;  /* the transport chain's bottom (a connection's); NULL: a stream */
    struct sc_xport *x;       /* its top: every read, write and close goes through it */
    struct sc_tcp_xport *ext; /* an adopted chain's bottom (instead of tx), freed at the close */
    uv_timer_t timer;
    uv_timer_t *btimer; /* retry backoff and fault delay: allocated on first use (most connections
                           never wait so), closed with the connection */
    struct sc_list node;
    struct proxy_worker *w;
    size_t lidx;
    struct sc_metric *m_active;
    struct rbuf in;
    size_t last_len;
    struct sc_buf out;
    size_t wconsume; /* bytes of uc->in the pending write covers */
    int wnext;
    int state;
    int closes;
    bool wpending;
    bool rpaused;
    bool eof;     /* the client half-closed */
    bool tun_eof; /* in a tunnel: the client sent its FIN */
    bool shut_up; /* in a tunnel: the client's FIN was passed upstream */
    bool shut_dn; /* in a tunnel: the upstream's FIN was passed to the client */
    bool in_parse;
    bool reparse;
    bool sniff;       /* PERMISSIVE: the first bytes decide between TLS and plaintext */
    bool handshaking; /* the TLS handshake is under way (bounded by the head timeout) */
    uint64_t head_start_ms;
    uint64_t last_activity;
    uint64_t timer_due;      /* loop time the timer fires at; 0: not armed */
    struct proxy_odst *od;   /* original_dst state, allocated on first use, kept on recycling */
    struct proxy_client *cl; /* the client: the connection's own; a stream's connection's */
    struct proxy_exch ex;    /* the exchange the connection carries now */
    /* downstream HTTP/2 (proxy_h2.c): a connection that speaks HTTP/2 holds <h2>; each of its
     * streams is a proxy_dconn of its own holding <h2s>, over a stream transport, and is not
     * counted as a connection. */
    struct proxy_h2c *h2;
    struct proxy_h2s *h2s;
};

/* A client connection: its proxy_dconn (first: a pointer to either is a pointer to both) and what
 * only a connection has. */
struct proxy_dconn_conn {
    struct proxy_dconn dc;
    struct sc_tcp_xport tx;
    struct proxy_client cl;
};

/* ---- proxy_worker.c: buffers and busy polling ---- */

static inline uint64_t proxy_now_ns(void)
{
    return uv_hrtime();
}

/* Lends <b> a read buffer from the worker's pool when it has none. */
void proxy_rbuf_get(struct proxy_worker *w, struct rbuf *b);

/* Gives an empty read buffer back (a grown one is freed: big heads are rare). */
void proxy_rbuf_put(struct proxy_worker *w, struct rbuf *b);

/* proxy_rbuf_put and proxy_hbuf_put for an HTTP/2 stream's buffers: a small block of its own
 * (up to 1 KiB) is emptied and kept, to serve the next stream of the recycled dconn without a
 * malloc and a free per request; others are given back. */
void proxy_rbuf_keep(struct proxy_worker *w, struct rbuf *b);
void proxy_hbuf_keep(struct proxy_worker *w, struct sc_buf *b);

/* Makes room at the end of <b>: moves data to the front, or grows up to <max>. */
void proxy_rbuf_room(struct rbuf *b, size_t max);

/* Lends <b> a head buffer (upstream request head, response head, retry copy) while a request
 * runs; proxy_hbuf_put gives it back (one that grew is freed). */
void proxy_hbuf_get(struct proxy_worker *w, struct sc_buf *b);
/* The same for a head of about <size> bytes: a block of that size when it is smaller than the
 * pool's (freed by proxy_hbuf_put), so what many requests in flight hold is what they need. */
void proxy_hbuf_get_size(struct proxy_worker *w, struct sc_buf *b, size_t size);
void proxy_hbuf_put(struct proxy_worker *w, struct sc_buf *b);

/* Starts the worker's busy-polling idle handle (proxy_spin_on decides when). */
void proxy_spin_start(struct proxy_worker *w);

/* Called on every read: with busy_poll set, keeps the worker polling for that long after it. */
static inline void proxy_spin_on(struct proxy_worker *w)
{
    if (w->rt->busy_poll_ns) {
        w->spin_read = true;
        if (!uv_is_active((uv_handle_t *)&w->spin)) {
            proxy_spin_start(w);
        }
    }
}

/* Finishes the worker once it drains and nothing is left open. */
void proxy_check_done(struct proxy_worker *w);

/* ---- proxy_upstream.c: load balancing and upstream connections ---- */

/* The load balancer: an endpoint of <c> that proxy_endpoint_usable() admits now, by the cluster's
 * lb_policy, preferring one other than <avoid> (the last try's). NULL when none is usable. */
struct proxy_endpoint *proxy_pick_endpoint(struct proxy_worker *w, struct proxy_cluster *c,
                                           struct proxy_endpoint *avoid);

/* Starts a try of the exchange of <dc>: picks an endpoint (or the original destination), takes
 * an idle pooled connection or opens one; answers 503 itself when there is none to use. */
void proxy_attempt(struct proxy_exch *ex);

/* Stops counting the request on the endpoint it was sent to (least-request balancing). */
void proxy_endpoint_release(struct proxy_exch *r);

/* Closes <uc>, detaching it from its exchange or pool. Idempotent. */
void proxy_uconn_close(struct proxy_uconn *uc);

/* Returns <uc> to its endpoint's pool when <reusable> and it can carry another request, else
 * closes it. */
void proxy_uconn_release(struct proxy_uconn *uc, bool reusable);

/* Whether <dc> was redirected here by iptables; then dc->od->orig holds where the client meant
 * to go (SO_ORIGINAL_DST, IP6T_SO_ORIGINAL_DST for IPv6). Read once per connection; allocates
 * dc->od on first use. */
bool proxy_original_dst(struct proxy_dconn *dc);

/* Returns the port the client connected to: the original destination's when the connection was
 * redirected to the proxy, else the listener's own. Read once per connection. */
uint16_t proxy_dest_port(struct proxy_dconn *dc);

/* The original destination of accepted socket <fd> into <*out>, when iptables redirected it
 * (SO_ORIGINAL_DST, IP6T_SO_ORIGINAL_DST); false when it was not redirected. The socket's own
 * address, read on the way, goes to <*local> (family AF_UNSPEC when it cannot be read), so a
 * caller that needs it as well reads it once. */
bool proxy_sock_original_dst(int fd, struct sockaddr_storage *out, struct sockaddr_storage *local);

/* One address of endpoint <ep> (round robin over a DNS endpoint's addresses) into <*out>.
 * Returns 0, or -ENOENT when it has none (yet). */
int proxy_endpoint_addr(struct proxy_endpoint *ep, struct sockaddr_storage *out);

/* Closes the idle pooled connections of every cluster of snapshot <rt> on worker <w>. */
void proxy_close_pools(struct proxy_worker *w, struct proxy_rt *rt);

/* ---- upstream HTTP/2 hooks (proxy_h2_up.c; the rest is in proxy_h2.h) ---- */

/* The transport callbacks of HTTP/1 upstream connections (proxy_upstream.c), which a stream
 * reports to as a connection would. */
extern const struct sc_xport_cbs proxy_upstream_cbs;

/* A recycled or new upstream connection of <w>, counted in w->nuconns. */
struct proxy_uconn *proxy_uconn_new(struct proxy_worker *w);

/* One of the handles of a closing <uc> is closed; the last one recycles it. */
void proxy_uconn_closed_one(struct proxy_uconn *uc);

/* The worker's pool of <ep> (NULL for a request's own original destination). */
struct proxy_pool *proxy_ep_pool(struct proxy_endpoint *ep, struct proxy_worker *w);

/* The rest of a try begun on ex->ep (counted there): an idle pooled connection or a new one. */
void proxy_attempt_open(struct proxy_exch *ex);

/* ---- tries waiting for a connecting HTTP/2 connection (proxy_h2_wait.c) ---- */

/* Makes the try of <ex> wait for a connection of <pool> that is connecting and has room for it
 * (the cluster's max_concurrent_streams); false when there is none. */
bool proxy_h2_wait(struct proxy_exch *ex, struct proxy_endpoint *ep, struct proxy_pool *pool);

/* Takes connecting <uc> out of pool->h2conn: no more tries wait for it. */
void proxy_h2_wait_unlist(struct proxy_uconn *uc);

/* <uc> could not connect: each try waiting for it fails as its own connect would have. */
void proxy_h2_wait_fail(struct proxy_uconn *uc, const char *why);

/* <uc> connected (HTTP/2 or HTTP/1): each try waiting for it starts again, on a stream of it
 * while it has room. */
void proxy_h2_wait_flush(struct proxy_uconn *uc);

/* proxy_uconn_close of <uc> that waits or is waited for: takes a placeholder off its list; hands
 * a connecting connection whose try is over to its first waiting try (returns true: it stays
 * open); else fails the waiting tries. */
bool proxy_h2_wait_close(struct proxy_uconn *uc);

/* ---- proxy_exchange.c: the exchange (routing, policy, tries, local replies, timers, log) ---- */

/* Readies dc->ex for a new request (zeroed but for its buffers and links, on the worker's
 * current snapshot, routed nowhere yet). <pseudo>: for an answer to something that is not a
 * request (a malformed head, a head timeout), logged and counted as method "-". */
void proxy_exch_begin(struct proxy_dconn *dc, bool pseudo);

/* <r>'s chunked decoders, the block made on first use. */
struct proxy_chunked *proxy_exch_chunked(struct proxy_exch *r);

/* Starts the exchange for request head <m> (<headlen> bytes of dc->in) parsed on <dc>. */
void proxy_exchange_start(struct proxy_dconn *dc, const struct sc_http_msg *m, size_t headlen);

/* A try failed before its response head was forwarded (<cond> a COND_*, <flag> an F_*): retries
 * when the route allows, else answers 502/504 (or closes when the head is out). */
void proxy_attempt_failed(struct proxy_exch *ex, int cond, unsigned flag, const char *why);

/* Whether the route retries condition <cond> (with <status> for COND_STATUS) now. */
bool proxy_may_retry(struct proxy_exch *ex, int cond, int status);

/* Schedules the next try after the route's backoff. */
void proxy_schedule_retry(struct proxy_exch *ex);

/* The per-try timeout of the upstream connection of <t>. */
void proxy_on_per_try_timeout(uv_timer_t *t);

/* Answers the request from the proxy itself: <status> with <reason> as the body. */
void proxy_local_reply(struct proxy_exch *ex, int status, const char *reason, unsigned flags);

/* The same with <body> as it is (borrowed for the call), and ex->reply_headers when set. */
void proxy_local_reply_body(struct proxy_exch *ex, int status, struct sc_str body, unsigned flags);

/* The second half of proxy_exchange_start, once the request is authorized: routing, policy,
 * the upstream head (from <m> and the normalised <origin> and <path>) and the first try. */
void proxy_exchange_route(struct proxy_dconn *dc, const struct sc_http_msg *m, struct sc_str origin,
                          struct sc_str path);

/* The request body has been read whole: starts the route deadline and a mirror. */
void proxy_request_body_done(struct proxy_exch *ex);

/* The exchange is over: counts and logs it, releases what it holds, and readies the connection
 * for the next request (or closes it). */
void proxy_finish_request(struct proxy_exch *ex);

/* Arms the connection's one timer for its current state (an HTTP/2 stream's deadline, in
 * dc->timer_due, is kept by its connection: proxy_h2_stream_due). */
void proxy_arm_timer(struct proxy_dconn *dc);

/* The deadline in dc->timer_due has passed (or an earlier one it was armed for): times out what
 * is due for <dc>'s state, or arms the timer again. */
void proxy_dconn_timeout(struct proxy_dconn *dc);

/* The backoff/fault-delay timer: started for <ms>, or stopped. */
void proxy_btimer_start(struct proxy_exch *ex, uint64_t ms);
void proxy_btimer_stop(struct proxy_exch *ex);

/* ---- proxy_authz_req.c: the normalised request and its authorization ---- */

enum { PROXY_AUTHZ_PENDING = 1 };

/* Normalises the target of <ex> (<origin> and <path>, replaced by the normalised ones, valid
 * until the calling proxy_exchange_start returns; for an origin-form target of a request other
 * than CONNECT, <*path> is set from <*origin> whatever it held, so a caller may leave finding
 * the path part to the normaliser's scan) and runs the snapshot's authorization on it.
 * <raw> is the request head as received (kept by an external check). Returns 0 to go on,
 * PROXY_AUTHZ_PENDING when an external authorizer decides (proxy_exchange_route follows, or a
 * local reply), or the status of the local reply to send (400 for a refused target, 401 for an
 * invalid token, 403 when denied) with its static reason in <*why> and access-log flags in
 * <*flags>. */
int proxy_authz_request(struct proxy_exch *ex, const struct sc_http_msg *m, struct sc_str raw,
                        struct sc_str *origin, struct sc_str *path, const char **why,
                        unsigned *flags);

/* ---- proxy_extauthz.c: CUSTOM policies' external authorizer ---- */

struct proxy_extauthz;

/* Starts the check of <ex> (request <m>, head <head> as received, normalised <origin> whose path
 * is <path_len> bytes) with provider <p>; the JWT rules' results (<strip>, <add>, <drop>) are
 * kept for the upstream request; <then_deny>: the DENY/ALLOW policies deny it even if the
 * authorizer allows (403 after the check). Reading from the client stops until it answers. Returns
 * 0 or a negative error (then nothing is pending). */
int proxy_extauthz_start(struct proxy_exch *ex, const struct proxy_extauthz *p,
                         const struct sc_http_msg *m, struct sc_str head, struct sc_str origin,
                         size_t path_len, struct sc_str strip, struct sc_str add,
                         const struct sc_str *drop, size_t ndrop, bool then_deny);

/* Abandons the check of <ex> if one is running. */
void proxy_extauthz_cancel(struct proxy_exch *ex);

/* ---- proxy_oidc_flow.c: the OpenID Connect login ---- */

struct proxy_oidc;

/* Runs login <o> on request <m> (head <raw> as received, normalised <origin> and <path>).
 * Returns 0 to go on (identity headers and cookie stripping set on <ex>), PROXY_AUTHZ_PENDING
 * while a code is exchanged (a local reply follows) or a session is refreshed (the exchange goes
 * on from <raw> through proxy_authz_request again, a renewed cookie in ex->resp_add), or the
 * status of a local reply (302 to log in, 401, 403, 502, ...) with
 * its headers in ex->reply_headers and static reason in <*why>. With a session, <*auth> is the
 * user's identity for the authorization policies (principal "<iss>/<sub>"; claims sub, iss,
 * email, preferred_username and the groups claim), valid until the calling
 * proxy_exchange_start returns. */
struct proxy_az_auth;
int proxy_oidc_request(struct proxy_exch *ex, const struct proxy_oidc *o,
                       const struct sc_http_msg *m, struct sc_str raw, struct sc_str origin,
                       struct sc_str path, const char **why, const struct proxy_az_auth **auth);

/* Abandons the token request of <ex> if one is running. */
void proxy_oidc_cancel(struct proxy_exch *ex);

/* ---- proxy_h1.c: the HTTP/1 codecs ---- */

/* The HTTP/1 downstream codec's side of the exchange. */
extern const struct proxy_down_ops proxy_h1_down;

/* Accepts a client on listener <server> (a worker's uv_tcp_t). */
void proxy_h1_on_accept(uv_stream_t *server, int status);

/* Takes over a client socket <fd> of listener <lidx> whose first <n> bytes <p> (an HTTP/1
 * request line, told by proxy_tcp.c's detection) were read already: they are parsed as if read
 * here. <peer> and <peer_ip> (borrowed) are the client's address as the relay read it (NULL: read
 * from the socket). Closes <fd> on failure. */
void proxy_h1_adopt(struct proxy_worker *w, size_t lidx, uv_os_sock_t fd,
                    const struct sockaddr_storage *peer, const char *peer_ip, const char *p,
                    size_t n);
/* The same for a connection whose TLS a TCP listener terminated (mesh mTLS): the chain <top> over
 * <bottom> (allocated with sc_malloc, freed by the HTTP/1 connection once closed) becomes the
 * connection's transport, with the <n> decrypted bytes at <p> read so far. */
void proxy_h1_adopt_tls(struct proxy_worker *w, size_t lidx, struct sc_tcp_xport *bottom,
                        struct sc_xport *top, const struct sockaddr_storage *peer,
                        const char *peer_ip, const char *p, size_t n);

/* The upstream transport's callbacks (net/transport.h), owner a struct proxy_uconn. */
void proxy_h1_ualloc(void *owner, uv_buf_t *buf);
void proxy_h1_uread(void *owner, ssize_t nread);
void proxy_h1_uwrite(void *owner, int status);

/* The upstream connection of <dc> is ready: sends the head, any replayed body, then streams. */
void proxy_upstream_ready(struct proxy_dconn *dc);

/* Writes <iov> to the client; <consume> bytes of the upstream buffer are covered by it; <next>
 * (a DN_*) says what follows its completion. Returns 0, 1 (queued) or a negative error (the
 * connection is closed). */
int proxy_dwrite(struct proxy_dconn *dc, uv_buf_t *iov, unsigned n, size_t consume, int next);

/* Streams the request body (and <prefix>) upstream, and the response (and <prefix>) to the
 * client, as far as both sides take it. */
void proxy_pump_req(struct proxy_dconn *dc, uv_buf_t *prefix, unsigned nprefix);
void proxy_pump_resp(struct proxy_dconn *dc, uv_buf_t *prefix, unsigned nprefix);

/* Parses the upstream response head(s) buffered in dc->uc. */
void proxy_parse_resp_head(struct proxy_dconn *dc);

/* Starts or stops reading from the client, as the state wants. */
void proxy_dread_update(struct proxy_dconn *dc);

/* Parses and starts the requests buffered on <dc>. */
void proxy_parse_loop(struct proxy_dconn *dc);

/* Closes the client connection (and its upstream one), logging an unfinished request. */
void proxy_dconn_close(struct proxy_dconn *dc);

/* One of the handles of a closing <dc> is closed; the last one recycles it. */
void proxy_dconn_closed_one(struct proxy_dconn *dc);

/* ---- proxy_h1.c: what the HTTP/2 codec shares with it ---- */

/* The callbacks of a downstream connection's transport (the HTTP/1 codec's); a stream's
 * transport reports write completion and its close through them too. */
extern const struct sc_xport_cbs proxy_dconn_cbs;

/* A proxy_dconn of listener <lidx>, from the worker's free list or new: zeroed but for its
 * buffers, its exchange linked, its timer initialised, state D_HEAD, no transport, not counted.
 * <cl> NULL: a client connection (a struct proxy_dconn_conn, its own client); else an HTTP/2
 * stream of the connection whose client <cl> is (borrowed: the connection outlives its
 * streams), whose recycled exchange is not zeroed here: the caller runs proxy_exch_begin before
 * anything reads it. */
struct proxy_dconn *proxy_dconn_alloc(struct proxy_worker *w, size_t lidx, struct proxy_client *cl);

/* Gives the buffers of a closed <dc> back and keeps it on the free list (or frees it). */
void proxy_dconn_recycle(struct proxy_dconn *dc);

/* Frees <dc> (off every list) and what it still owns: buffers, policy state, trace context. */
void proxy_dconn_free(struct proxy_dconn *dc);

/* ---- proxy_h2.c: the downstream HTTP/2 codec ---- */

/* The HTTP/2 side of an exchange carried by a stream. */
extern const struct proxy_down_ops proxy_h2_down;

/* Whether the bytes buffered on <dc> (a connection of a plaintext listener that serves HTTP/2)
 * start the HTTP/2 connection preface: 1 (the whole preface), 0 (not HTTP/2), -1 (a prefix of it:
 * wait for more). */
int proxy_h2_preface(const struct proxy_dconn *dc);

/* Makes <dc> an HTTP/2 connection (the preface was seen, or ALPN chose h2): what it has buffered
 * and reads from now on go to an HTTP/2 server session. Closes <dc> on failure. */
void proxy_h2_start(struct proxy_dconn *dc);

/* The upstream response head <m> of the exchange on stream <dc>, rewritten by the head rules and
 * sent as HEADERS. Returns 0 or SC_ETOOBIG. */
int proxy_h2_resp_head(struct proxy_dconn *dc, const struct sc_http_msg *m);

/* An interim (1xx) response on stream <dc>: HEADERS without END_STREAM ahead of the final head
 * (RFC 9113 section 8.1). <m> borrows an upstream's 1xx head (rewritten as proxy_head_interim
 * does for HTTP/1 clients); NULL sends our own 100 Continue. Returns 0, or a negative code when
 * nothing was sent (the stream is gone, or the head does not fit): the caller drops it. */
int proxy_h2_interim(struct proxy_dconn *dc, const struct sc_http_msg *m);

/* Chunked framing bytes of the upstream response on stream <dc> (<data>: a span that ended in
 * body data, which restarts the collection): what follows the last data, the trailer section,
 * is sent as HTTP/2 trailers. */
void proxy_h2_resp_framing(struct proxy_dconn *dc, bool data, struct sc_str span);

/* The chunked response of HTTP/1.1 gRPC call <ex>, its upstream's framing passed on as it is,
 * ends with a last chunk of the proxy's and trailers grpc-status <code> and grpc-message <msg>
 * (the upstream connection closed, the exchange finished). False, with nothing done, when the
 * response is not chunked to the client, stands inside a chunk or a write is pending. */
bool proxy_h1_grpc_end(struct proxy_exch *ex, int code, const char *msg);

/* The response on stream <dc> ends with trailers grpc-status <code> and grpc-message <msg>
 * (printable ASCII without '%') instead of the upstream's, once what was written is sent. */
void proxy_h2_grpc_end(struct proxy_dconn *dc, int code, const char *msg);

/* The exchange's view of the stream: set up by proxy_exch_begin for a stream dconn. */
void proxy_h2_exch_begin(struct proxy_exch *ex);

/* Connection <dc> is closing: its streams are closed. Returns how many stream dconns are still
 * to be freed (each then calls proxy_dconn_closed_one on <dc>). */
int proxy_h2_conn_closing(struct proxy_dconn *dc);

/* The last handle of connection <dc> is closed: frees its session. */
void proxy_h2_conn_freed(struct proxy_dconn *dc);

/* The last handle of stream <dc> is closed: recycles <dc> with its stream struct (dc->h2s, whose
 * large buffers are freed), which the next stream_new on it reuses. */
void proxy_h2_stream_freed(struct proxy_dconn *dc);

/* Frees stream struct <s> (NULL: nothing) kept by a recycled dconn. */
void proxy_h2_stream_free(struct proxy_h2s *s);

/* Stream <dc>'s deadline (dc->timer_due, not 0) was set: its connection's timer fires no later
 * than it, and then calls proxy_dconn_timeout for each stream whose deadline passed. */
void proxy_h2_stream_due(struct proxy_dconn *dc);

/* Drain: GOAWAY to connection <dc>; it closes once its streams are done. */
void proxy_h2_drain(struct proxy_dconn *dc);

/* Frees the worker's HTTP/2 scratch (its spare header block and the head being sent). */
void proxy_h2_worker_free(struct proxy_worker *w);

/* ---- proxy_headers.c: routing and head rewriting (pure functions of the parsed head) ---- */

/* The room a head rebuilt from <m> reserves: its span in the received bytes plus what the proxy
 * adds (forwarding fields, request id, trace context). */
size_t proxy_head_room(const struct sc_http_msg *m);

/* True for GET, HEAD, OPTIONS, PUT, DELETE and TRACE (RFC 9110 section 9.2.2). */
bool proxy_idempotent(struct sc_str method);

/* Returns the path of target <t> for routing: origin-form up to '?', the path of an absolute-form
 * target, "/" otherwise. Sets <*origin> to the origin-form target to send upstream. Both borrow
 * <t>. */
struct sc_str proxy_target_path(struct sc_str t, struct sc_str *origin);

/* The authority of an absolute-form target ("http://user@host:port/p?q" -> "host:port"); sets
 * <*absolute> to whether <t> is in absolute form at all. Borrows <t>. */
struct sc_str proxy_target_authority(struct sc_str t, bool *absolute);

/* True when route <rt> takes request <m> with routing path <path>. <md> is PCRE2 match data
 * (the worker's, which exists once its table has a regex route; NULL: one is made for the
 * match). */
bool proxy_route_matches(const struct proxy_route *rt, const struct sc_http_msg *m,
                         struct sc_str path, pcre2_match_data *md);

/* The first route of <dc>'s listener that takes request <m> (routing path <path>): its
 * connection conditions (proxy_route_conn_takes), its match, and a pass-through health endpoint
 * only while draining. NULL: none. Inline: it is the data path's routing loop. */
static inline struct proxy_route *proxy_route_find(struct proxy_dconn *dc,
                                                   const struct sc_http_msg *m, struct sc_str path)
{
    struct proxy_worker *w = dc->w;
    struct proxy_listener *l = dc->ex.lsn;
    struct proxy_route *found = NULL;
    for (size_t i = 0; i < l->nroutes && !found; i++) {
        if (l->routes[i].conn_match && !proxy_route_conn_takes(&l->routes[i], dc)) {
            continue;
        }
        if (proxy_route_matches(&l->routes[i], m, path, w->md) &&
            !(l->routes[i].health_pass && !w->draining)) { /* proxy_route_health.c */
            found = &l->routes[i];
        }
    }
    return found;
}

/* Builds ex->head, the upstream request head for <m>: hop-by-hop headers (and the tokens named
 * in Connection) removed, Via, X-Forwarded-For (appended), X-Forwarded-Proto, X-Request-Id (kept
 * or a new UUID v4, also copied into the request for the log) and traceparent (same trace id, new
 * parent id) added, framing re-declared. <origin> is the target to send. Returns 0 or SC_ETOOBIG
 * (the head would pass its cap). */
int proxy_build_req_head(struct proxy_exch *ex, const struct sc_http_msg *m, struct sc_str origin);

/* Appends to <b> the head sent to the client for upstream response <m>: HTTP/1.1 status line,
 * hop-by-hop headers removed, Via appended, the route's response headers, framing re-declared and
 * `Connection: close` when <close> (the codec decides: draining, the client asked, the body ends
 * at close). Returns 0 or SC_ETOOBIG. */
int proxy_build_resp_head(struct proxy_exch *ex, const struct sc_http_msg *m, struct sc_buf *b,
                          bool close);

/* Appends to <b> an interim (1xx) head rebuilt from <m> as HTTP/1.1. Returns 0 or
 * SC_ETOOBIG. */
int proxy_build_interim_head(const struct sc_http_msg *m, struct sc_buf *b);

/* The same rules for any codec, through header sink <s> (proxy_hsink.h): the HTTP/1 builders
 * above are these with the HTTP/1 sink and the framing the exchange calls for. Each starts the
 * head, adds its fields and ends it. Return 0 or SC_ETOOBIG. */
struct proxy_hsink;
int proxy_head_request(struct proxy_exch *ex, const struct sc_http_msg *m, struct sc_str origin,
                       struct proxy_hsink *s);
int proxy_head_response(struct proxy_exch *ex, const struct sc_http_msg *m, struct proxy_hsink *s);
int proxy_head_interim(const struct sc_http_msg *m, struct proxy_hsink *s);

/* ---- proxy_grpc.c: gRPC calls on the exchange ---- */

/* The name of status <code> ("OK", "UNAVAILABLE", ...; "UNKNOWN" outside 0..16). */
const char *proxy_grpc_code_name(int code);

/* The grpc-status field of <m> (0..16), or -1 when absent or not a status. */
int proxy_grpc_status_of(const struct sc_http_msg *m);

/* Counts the messages that start in <p>/<n>, the next bytes of one direction of a call. */
void proxy_grpc_frames_feed(struct proxy_grpc_frames *f, const char *p, size_t n);

/* Feeds <span>, the next bytes of a chunked body's framing, to the grpc-status matcher. */
void proxy_grpc_tscan_feed(struct proxy_grpc_tscan *t, struct sc_str span);

/* The response body of gRPC exchange <ex> passes: <data> a span of message bytes (counted),
 * else chunked framing (its trailer section's grpc-status becomes the call's). */
void proxy_grpc_resp_framing(struct proxy_exch *ex, bool data, struct sc_str span);

/* Routing chose ex->route for gRPC request <m> and ex->head is built: a grpc-timeout field
 * becomes the call's deadline (ex->grpc_deadline, capped by the route's timeout), and the
 * forwarded field is rewritten to what remains (proxy_grpc_timeout_refresh at each try). */
void proxy_grpc_route(struct proxy_exch *ex, const struct sc_http_msg *m);

/* Rewrites the forwarded grpc-timeout in ex->head to the time left before the deadline. */
void proxy_grpc_timeout_refresh(struct proxy_exch *ex);

/* What to do with upstream response head <m> of gRPC exchange <ex> (<rest>: the bytes buffered
 * after it; <max_wait>: how many may be waited for). */
enum {
    PROXY_GRPC_PASS,  /* forward it (its grpc-status, if any, recorded) */
    PROXY_GRPC_WAIT,  /* a 200 whose trailers may carry a retriable status: read more first */
    PROXY_GRPC_RETRY, /* a retriable status: a retry slot is taken, schedule the retry */
    PROXY_GRPC_MAP,   /* an HTTP error without grpc-status: answer the mapped status instead */
};
int proxy_grpc_response(struct proxy_exch *ex, const struct sc_http_msg *m, struct sc_str rest,
                        uint32_t max_wait);

/* The deadline of gRPC exchange <ex> passed while its answer streams: when the client is on an
 * HTTP/2 stream and what it was sent ends on a message boundary, the answer is ended there with
 * DEADLINE_EXCEEDED trailers (the upstream's rest dropped) and the exchange finished. Returns
 * false when that cannot be done (the caller resets the stream). */
bool proxy_grpc_deadline_end(struct proxy_exch *ex);

/* Counts the finished call in the sidecar_grpc_* metrics. */
void proxy_grpc_finish(struct proxy_exch *ex);

/* ---- proxy_log.c: the access log and request metrics ---- */

/* Appends the request's JSON access-log line to the worker's buffer, written once per loop
 * iteration (or at once when the buffer is full). <dur> is the request's duration, seconds. */
void proxy_access_log(struct proxy_exch *ex, double dur);

/* Counts the request in sidecar_requests_total (series cached per route and status code) and
 * sidecar_request_duration_seconds. */
void proxy_count_request(struct proxy_exch *ex, double dur);

/* Appends a complete access-log line <line> (<n> bytes, its newline included) to the worker's
 * buffer, as proxy_access_log does (dropped and counted when the buffer is full). */
void proxy_log_line(struct proxy_worker *w, const char *line, size_t n);

/* Writes response flags <f> (F_*) as Envoy's short names ("UF,URX") into <out>. */
const char *proxy_log_flags(unsigned f, char *out, size_t cap);

/* Writes the worker's buffered access-log lines to stdout now, without blocking: what the
 * reader does not take stays buffered and is retried shortly (on the worker's logtimer). */
void proxy_log_flush(struct proxy_worker *w);

/* The worker is finishing: writes what is buffered, waiting for a slow reader up to a second,
 * then drops (and counts) the rest and closes the worker's log handles. */
void proxy_log_finish(struct proxy_worker *w);

#endif

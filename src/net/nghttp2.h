// SPDX-License-Identifier: Apache-2.0
// nghttp2, loaded at run time. The binary does not link nghttp2: a role, or a proxy that never
// sees an HTTP/2 connection, never maps it. The first HTTP/2 connection (a prior-knowledge
// preface, an "h2" ALPN, an upstream cluster speaking HTTP/2) loads it with
// sc_lazylib_nghttp2_load (core/lazylib.h), and a missing library refuses that connection.
//
// How it works, as net/ossl.h does for OpenSSL: a file that calls nghttp2 includes this header
// instead of <nghttp2/nghttp2.h>, and every nghttp2 function the code calls is redefined below as
// SC_NGHTTP2(name): a call through a pointer that each call site resolves once (dlsym, then one
// load and a well-predicted branch per call), typed from nghttp2's own declaration, so a call
// that does not match the prototype does not compile.
//
// Adding a function: one line, `#define NAME SC_NGHTTP2(NAME)`, in alphabetical order. A function
// called but not listed here is a link error ("undefined reference to NAME"), since nothing links
// nghttp2. Callers load the library first (sc_lazylib_nghttp2_load) where they can refuse cleanly:
// a call before that loads it, and ends the process with a logged reason if it cannot be loaded.
#ifndef SC_NET_NGHTTP2_H
#define SC_NET_NGHTTP2_H

#include <nghttp2/nghttp2.h>

#include "core/lazylib.h"

/* The function <f> of nghttp2, resolved on its first call from this call site. */
#define SC_NGHTTP2(f)                                                                              \
    (*({                                                                                           \
        static void *sc_nghttp2_fn_;                                                               \
        void *sc_nghttp2_p_ = __atomic_load_n(&sc_nghttp2_fn_, __ATOMIC_ACQUIRE);                  \
        if (__builtin_expect(sc_nghttp2_p_ == NULL, 0)) {                                          \
            sc_nghttp2_p_ = sc_lazylib_nghttp2_resolve(&sc_nghttp2_fn_, #f);                       \
        }                                                                                          \
        (__typeof__(&f))sc_nghttp2_p_;                                                             \
    }))

// clang-format off
#define nghttp2_hd_inflate_del SC_NGHTTP2(nghttp2_hd_inflate_del)
#define nghttp2_hd_inflate_end_headers SC_NGHTTP2(nghttp2_hd_inflate_end_headers)
#define nghttp2_hd_inflate_hd2 SC_NGHTTP2(nghttp2_hd_inflate_hd2)
#define nghttp2_hd_inflate_new SC_NGHTTP2(nghttp2_hd_inflate_new)
#define nghttp2_http2_strerror SC_NGHTTP2(nghttp2_http2_strerror)
#define nghttp2_option_del SC_NGHTTP2(nghttp2_option_del)
#define nghttp2_option_new SC_NGHTTP2(nghttp2_option_new)
#define nghttp2_option_set_max_continuations SC_NGHTTP2(nghttp2_option_set_max_continuations)
#define nghttp2_option_set_max_outbound_ack SC_NGHTTP2(nghttp2_option_set_max_outbound_ack)
#define nghttp2_option_set_max_send_header_block_length SC_NGHTTP2(nghttp2_option_set_max_send_header_block_length)
#define nghttp2_option_set_max_settings SC_NGHTTP2(nghttp2_option_set_max_settings)
#define nghttp2_option_set_no_auto_window_update SC_NGHTTP2(nghttp2_option_set_no_auto_window_update)
#define nghttp2_option_set_peer_max_concurrent_streams SC_NGHTTP2(nghttp2_option_set_peer_max_concurrent_streams)
#define nghttp2_option_set_stream_reset_rate_limit SC_NGHTTP2(nghttp2_option_set_stream_reset_rate_limit)
#define nghttp2_session_callbacks_del SC_NGHTTP2(nghttp2_session_callbacks_del)
#define nghttp2_session_callbacks_new SC_NGHTTP2(nghttp2_session_callbacks_new)
#define nghttp2_session_callbacks_set_on_begin_headers_callback SC_NGHTTP2(nghttp2_session_callbacks_set_on_begin_headers_callback)
#define nghttp2_session_callbacks_set_on_data_chunk_recv_callback SC_NGHTTP2(nghttp2_session_callbacks_set_on_data_chunk_recv_callback)
#define nghttp2_session_callbacks_set_on_frame_recv_callback SC_NGHTTP2(nghttp2_session_callbacks_set_on_frame_recv_callback)
#define nghttp2_session_callbacks_set_on_frame_send_callback SC_NGHTTP2(nghttp2_session_callbacks_set_on_frame_send_callback)
#define nghttp2_session_callbacks_set_on_header_callback SC_NGHTTP2(nghttp2_session_callbacks_set_on_header_callback)
#define nghttp2_session_callbacks_set_on_stream_close_callback SC_NGHTTP2(nghttp2_session_callbacks_set_on_stream_close_callback)
#define nghttp2_session_client_new SC_NGHTTP2(nghttp2_session_client_new)
#define nghttp2_session_client_new2 SC_NGHTTP2(nghttp2_session_client_new2)
#define nghttp2_session_client_new3 SC_NGHTTP2(nghttp2_session_client_new3)
#define nghttp2_session_consume SC_NGHTTP2(nghttp2_session_consume)
#define nghttp2_session_consume_connection SC_NGHTTP2(nghttp2_session_consume_connection)
#define nghttp2_session_consume_stream SC_NGHTTP2(nghttp2_session_consume_stream)
#define nghttp2_session_del SC_NGHTTP2(nghttp2_session_del)
#define nghttp2_session_get_last_proc_stream_id SC_NGHTTP2(nghttp2_session_get_last_proc_stream_id)
#define nghttp2_session_get_remote_settings SC_NGHTTP2(nghttp2_session_get_remote_settings)
#define nghttp2_session_get_stream_user_data SC_NGHTTP2(nghttp2_session_get_stream_user_data)
#define nghttp2_session_mem_recv SC_NGHTTP2(nghttp2_session_mem_recv)
#define nghttp2_session_mem_send SC_NGHTTP2(nghttp2_session_mem_send)
#define nghttp2_session_resume_data SC_NGHTTP2(nghttp2_session_resume_data)
#define nghttp2_session_server_new2 SC_NGHTTP2(nghttp2_session_server_new2)
#define nghttp2_session_server_new3 SC_NGHTTP2(nghttp2_session_server_new3)
#define nghttp2_session_set_local_window_size SC_NGHTTP2(nghttp2_session_set_local_window_size)
#define nghttp2_session_set_stream_user_data SC_NGHTTP2(nghttp2_session_set_stream_user_data)
#define nghttp2_session_terminate_session SC_NGHTTP2(nghttp2_session_terminate_session)
#define nghttp2_session_want_read SC_NGHTTP2(nghttp2_session_want_read)
#define nghttp2_session_want_write SC_NGHTTP2(nghttp2_session_want_write)
#define nghttp2_strerror SC_NGHTTP2(nghttp2_strerror)
#define nghttp2_submit_goaway SC_NGHTTP2(nghttp2_submit_goaway)
#define nghttp2_submit_headers SC_NGHTTP2(nghttp2_submit_headers)
#define nghttp2_submit_ping SC_NGHTTP2(nghttp2_submit_ping)
#define nghttp2_submit_request SC_NGHTTP2(nghttp2_submit_request)
#define nghttp2_submit_response SC_NGHTTP2(nghttp2_submit_response)
#define nghttp2_submit_rst_stream SC_NGHTTP2(nghttp2_submit_rst_stream)
#define nghttp2_submit_settings SC_NGHTTP2(nghttp2_submit_settings)
#define nghttp2_submit_trailer SC_NGHTTP2(nghttp2_submit_trailer)
// clang-format on

#endif

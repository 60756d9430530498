// SPDX-License-Identifier: Apache-2.0
// Signal glue for a role's loop: SIGTERM and SIGINT ask for a graceful drain (a second one asks to
// stop at once), SIGHUP asks for a reload, SIGPIPE is ignored so a closed peer is an ordinary
// error.
#ifndef SC_CORE_SIGNALS_H
#define SC_CORE_SIGNALS_H

#include <stdbool.h>

#include <uv.h>

/* <now> is false for the first SIGTERM/SIGINT (drain) and true for any later one (stop now). */
typedef void (*sc_stop_cb)(void *arg, bool now);
typedef void (*sc_reload_cb)(void *arg);

struct sc_signals {
    uv_signal_t term;
    uv_signal_t intr;
    uv_signal_t hup;
    sc_stop_cb on_stop;
    sc_reload_cb on_reload;
    void *arg;
    int stops; /* stop signals seen */
};

/* Starts watching signals on <loop>. <s> must stay valid until sc_signals_close's handles have
 * closed (the loop has run once more). Returns 0 or a negative libuv error. */
int sc_signals_start(struct sc_signals *s, uv_loop_t *loop, sc_stop_cb on_stop,
                     sc_reload_cb on_reload, void *arg);

/* Stops watching and closes the handles. NULL-safe, idempotent. */
void sc_signals_close(struct sc_signals *s);

#endif

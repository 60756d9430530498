// SPDX-License-Identifier: Apache-2.0
// Signal handling through libuv signal handles, so callbacks run on the loop, never in a handler.
#include "core/signals.h"

#include <signal.h>
#include <string.h>

#include "core/log.h"

static void on_signal(uv_signal_t *h, int signum)
{
    struct sc_signals *s = h->data;
    if (signum == SIGHUP) {
        sc_info("reload requested", SC_LS("signal", "SIGHUP"));
        if (s->on_reload) {
            s->on_reload(s->arg);
        }
        return;
    }
    s->stops++;
    sc_info(s->stops == 1 ? "drain requested" : "stop requested",
            SC_LS("signal", signum == SIGTERM ? "SIGTERM" : "SIGINT"));
    if (s->on_stop) {
        s->on_stop(s->arg, s->stops > 1);
    }
}

int sc_signals_start(struct sc_signals *s, uv_loop_t *loop, sc_stop_cb on_stop,
                     sc_reload_cb on_reload, void *arg)
{
    memset(s, 0, sizeof(*s));
    s->on_stop = on_stop;
    s->on_reload = on_reload;
    s->arg = arg;
    signal(SIGPIPE, SIG_IGN);

    uv_signal_t *hs[] = { &s->term, &s->intr, &s->hup };
    int nums[] = { SIGTERM, SIGINT, SIGHUP };
    for (int i = 0; i < 3; i++) {
        int rc = uv_signal_init(loop, hs[i]);
        if (rc == 0) {
            hs[i]->data = s;
            rc = uv_signal_start(hs[i], on_signal, nums[i]);
        }
        if (rc < 0) {
            sc_signals_close(s);
            return rc;
        }
    }
    return 0;
}

void sc_signals_close(struct sc_signals *s)
{
    if (!s) {
        return;
    }
    uv_signal_t *hs[] = { &s->term, &s->intr, &s->hup };
    for (int i = 0; i < 3; i++) {
        if (hs[i]->loop && !uv_is_closing((uv_handle_t *)hs[i])) {
            uv_close((uv_handle_t *)hs[i], NULL);
        }
    }
}

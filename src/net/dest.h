// SPDX-License-Identifier: Apache-2.0
// The back half of the config and secrets engine: a rendered file goes to its destination
// (optionally validated first by a command or a built-in syntax check, then written atomically,
// and only when its content changed), and a debounced reload action tells the app (an HTTP
// request with an expected status and retries, a signal to a process found by pid file or by
// name, or a command). Invariant: a destination is never opened for writing, so the app never
// reads a partial file, and a candidate that fails validation never replaces the old one.
#ifndef SC_NET_DEST_H
#define SC_NET_DEST_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <uv.h>

#include "core/config.h"
#include "core/metrics.h"
#include "net/egress.h"

/* The reload action, declared once (sc_dest_reload_opts) and embedded by both roles. */
struct sc_dest_reload_cfg {
    char *url;              /* HTTP reload: request URL */
    char *method;           /* default POST */
    int64_t expect_status;  /* 0: any 2xx */
    int64_t retries;        /* extra attempts after a failed HTTP request or command */
    char *signal;           /* signal name or number; default SIGHUP */
    char *pid_file;         /* signal the process whose pid this file holds */
    char *process;          /* or every process with this name (/proc/<pid>/comm or argv[0]) */
    struct sc_strv command; /* or run this command */
    uint64_t debounce_ms;   /* a burst of writes within this window gives one reload */
};

extern const struct sc_opt sc_dest_reload_opts[];
/* The same keys without command-line flags: a reload action of one source or template. */
extern const struct sc_opt sc_dest_reload_item_opts[];

/* Where and how one file is written (borrowed by sc_dest_write until its callback). */
struct sc_dest_spec {
    const char *path;
    mode_t mode;
    uid_t uid; /* (uid_t)-1: unchanged */
    gid_t gid;
    const struct sc_strv *validate; /* NULL/empty: none; ["json"] or ["yaml"]: built-in check;
                                       else a command whose "{{file}}" arguments name the
                                       candidate file; exit 0 accepts it */
    uint64_t validate_timeout_ms;   /* 0: 30 s */
};

enum sc_dest_result {
    SC_DEST_WRITTEN = 1,
    SC_DEST_UNCHANGED = 0,
    SC_DEST_INVALID = -1, /* validation rejected the candidate; the old file stays */
    SC_DEST_FAILED = -2,  /* the write failed; the old file stays */
};

/* Called once when a write has finished (on the loop, never from inside sc_dest_write). */
typedef void (*sc_dest_cb)(void *arg, enum sc_dest_result result);

/* Writes <len> bytes of <data> (copied) to <spec->path> as described above and calls <cb> with
 * the result. Failures are logged (never the content). Returns 0, or a negative error and then
 * <cb> is never called. */
int sc_dest_write(uv_loop_t *loop, const struct sc_dest_spec *spec, const void *data, size_t len,
                  sc_dest_cb cb, void *arg);

struct sc_dest_reloader;

/* Returns a new reloader for <cfg> (borrowed for its lifetime), or NULL when <cfg> names no
 * action. HTTP actions go through <egress> (borrowed). The counter <metric> (for example
 * "sidecar_config_reload_total") gets a {result} label: success or failure. */
struct sc_dest_reloader *sc_dest_reloader_new(uv_loop_t *loop, struct sc_egress *egress,
                                              const struct sc_dest_reload_cfg *cfg,
                                              struct sc_metrics *metrics, const char *metric);

/* Asks for a reload: runs the action once the debounce window has been quiet. NULL-safe. */
void sc_dest_reloader_trigger(struct sc_dest_reloader *r);

/* Returns true while a reload is pending or running. NULL-safe. */
bool sc_dest_reloader_busy(const struct sc_dest_reloader *r);

/* Cancels what is pending, closes the handles and frees <r> once they have closed. NULL-safe. */
void sc_dest_reloader_close(struct sc_dest_reloader *r);

/* Parses a signal name ("SIGHUP", "HUP", "hup") or number. Returns the number or -EINVAL. */
int sc_dest_signal_parse(const char *s);

/* Checks <cfg> (signal name). Returns 0 or SC_ECONFIG with a new message in <*err>. */
int sc_dest_reload_check(const struct sc_dest_reload_cfg *cfg, char **err);

#endif

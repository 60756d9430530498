// SPDX-License-Identifier: Apache-2.0
// The role runtime: what every `sidecar <role>` shares. It parses the common flags and the role's
// flags, loads and validates the YAML config (defaults, then the file, then flags), runs the admin
// server and the signal glue on the main loop, starts the role, and turns SIGTERM, SIGINT and
// POST /quitquitquit into a graceful drain and SIGHUP / POST /reload into a validated reload.
#ifndef SC_APP_H
#define SC_APP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <uv.h>

#include "core/config.h"
#include "core/metrics.h"
#include "net/admin.h"

struct sc_app;

/* A role: one subcommand. Listed in src/roles.c; each role's entry file defines its descriptor at
 * the bottom as `const struct sc_role sc_role_<name>`. */
struct sc_role {
    const char *name;
    const char *summary;       /* one line for `sidecar --help` */
    const char *usage;         /* extra usage text for `sidecar <role> --help`, may be NULL */
    const struct sc_opt *opts; /* the role's options; the common ones are added by the app */
    size_t cfg_size;           /* sizeof the struct <opts> describes */
    const char *admin_default; /* default admin address, e.g. "127.0.0.1:15000" */
    const char *drain_default; /* default drain_timeout when not 25s (the pod runner, whose drain
                                  is bounded by the manifest's grace period instead) */
    /* Checks a loaded config beyond what the table checks (cross references between keys).
     * Returns 0, or SC_ECONFIG with a new message in <*err>. May be NULL. */
    int (*check)(const void *cfg, char **err);
    /* Starts the role on sc_app_loop(app) with <cfg> (borrowed until cleanup). Returns 0 and sets
     * <*state>, or an error with a new message in <*err>; then nothing is left running. */
    int (*start)(struct sc_app *app, const void *cfg, void **state, char **err);
    /* Begins a drain: stop accepting, finish in-flight work, then call sc_app_stopped(). With
     * <now>, close everything at once instead (the drain timed out or a second signal came). May
     * be called twice (first without, then with <now>). */
    void (*stop)(struct sc_app *app, void *state, bool now);
    /* Applies a new, validated <cfg> (borrowed until the next reload or cleanup). Returns 0, or an
     * error with a new message in <*err>, in which case the old config keeps running. NULL when
     * the role does not reload. */
    int (*reload)(struct sc_app *app, void *state, const void *cfg, char **err);
    /* Frees <state> after the loop has ended. May be NULL. */
    void (*cleanup)(void *state);
    /* A one-shot command chosen by the config (typically a SC_OPT_POSITIONAL word such as
     * `status`): called after the config is loaded and checked, before the loop, the admin server
     * or the signals start. Returns the process exit code, or -1 to run the role as a service.
     * May be NULL. */
    int (*command)(const void *cfg);
    /* Completes the GET /config dump <j> (the object the option tables produced, role keys at its
     * top level) with what the role derives from <cfg> but the tables cannot show, such as
     * listeners and clusters synthesised from flags or defaults. May be NULL. */
    void (*dump)(const void *cfg, json_t *j);
    /* Loads the -c files <paths> (<npaths>, at least one, in the order given) into <blob> through
     * <table> in place of the plain YAML loader, for a role that also reads other people's
     * formats (the proxy: Envoy bootstraps, Istio resources) and joins several files into one
     * configuration. Appends to <notes> (new strings) what the files hold that has no effect
     * here; sets <*derived> to the native configuration a translation gave, as text (new), or
     * NULL for one file in the role's own format. Returns 0, or SC_ECONFIG with a new
     * "file:line:col: message" in <*err>. May be NULL: the role then takes one -c file. */
    int (*load_file)(const struct sc_opt *table, void *blob, const char *const *paths,
                     size_t npaths, struct sc_strv *notes, char **derived, char **err);
};

/* Runs <role> with the arguments after the role name. Returns the process exit code: 0 after a
 * clean drain or a successful --check, 1 when the config is invalid or start-up fails, 2 for a
 * usage error. */
int sc_app_main(const struct sc_role *role, int argc, char **argv);

/* Writes the Markdown reference of <role>'s options, the common ones included, to <out>. */
void sc_app_doc(const struct sc_role *role, FILE *out);

uv_loop_t *sc_app_loop(struct sc_app *app);
struct sc_metrics *sc_app_metrics(struct sc_app *app);
struct sc_admin *sc_app_admin(struct sc_app *app);

/* Registers GET /healthz and GET /ready, answered as on the admin port, on another server <a> of
 * the role's (a status port the kubelet may reach, where the admin port's other routes must not
 * be). */
void sc_app_serve_health(struct sc_app *app, struct sc_admin *a);

/* Sets the role's readiness; /ready answers 200 only while ready and not draining. */
void sc_app_set_ready(struct sc_app *app, bool ready);

/* Returns true once a drain has begun. */
bool sc_app_draining(const struct sc_app *app);

/* Called by the role when its drain has finished; the process then exits with <code>. */
void sc_app_stopped(struct sc_app *app, int code);

/* Begins a drain, as SIGTERM does. */
void sc_app_drain(struct sc_app *app);

#endif

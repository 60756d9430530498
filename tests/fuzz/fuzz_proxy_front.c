// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the proxy's configuration front end (proxy_front.c, proxy_envoy.c,
// proxy_istio.c): the input is read as a -c file that may be an Envoy bootstrap, a stream of
// Istio resources or the proxy's own YAML. Beyond "no crash", it checks invariants and abort()s
// when one breaks:
//   - the return is 0 or SC_ECONFIG, and an error is "fuzz:<line>:<col>: <message>" on one line;
//   - every note reads "fuzz:<line>:<col>: ..." too (nothing is dropped without a position);
//   - a translated tree is a mapping whose JSON form serializes and loads through the proxy's own
//     option table either cleanly or with a positioned error;
//   - everything is freeable (ASan reports leaks and double frees).
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/config.h"
#include "core/error.h"
#include "core/ytree.h"
#include "roles/proxy/proxy.h"
#include "roles/proxy/proxy_front.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* "fuzz:L:C: text" with L, C >= 1, no newline. */
static void check_msg(const char *m)
{
    unsigned line = 0, col = 0;
    int used = 0;
    if (strncmp(m, "fuzz:", 5) != 0 || sscanf(m + 5, "%u:%u: %n", &line, &col, &used) < 2 ||
        line == 0 || col == 0 || used == 0 || m[5 + used] == '\0' || strchr(m, '\n')) {
        fprintf(stderr, "malformed message: %s\n", m);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setenv("POD_NAMESPACE", "default", 1);
    struct sc_strv notes = { 0 };
    struct sc_ytree *out = NULL;
    struct sc_ynode *root = NULL;
    bool native = false;
    char *err = NULL;
    /* The first byte chooses a file or a directory's joined files. */
    bool joined = size > 0 && (data[0] & 1);
    int rc = proxy_front_translate("fuzz", (const char *)data, size, joined, &notes, &out, &root,
                                   &native, &err);
    if (rc != 0 && rc != SC_ECONFIG) {
        abort();
    }
    if (rc < 0) {
        check_msg(err);
    }
    for (size_t i = 0; i < notes.n; i++) {
        check_msg(notes.v[i]);
    }
    if (rc == 0 && !native) {
        if (!out || sc_ynode_kind(root) != SC_Y_MAP) {
            abort();
        }
        json_t *j = sc_ynode_json(root);
        char *s = json_dumps(j, JSON_COMPACT);
        if (!s) {
            abort();
        }
        sc_free(s);
        json_decref(j);
        struct proxy_cfg *cfg = sc_calloc(1, sizeof(*cfg));
        sc_config_defaults(proxy_opts, cfg);
        char *lerr = NULL;
        /* admin is the app's common option, not the proxy's: drop it by loading a copy without
         * it would hide nothing else, so an "unknown key admin" error is accepted as positioned. */
        if (sc_ytree_load(proxy_opts, cfg, "fuzz", root, &lerr) < 0) {
            check_msg(lerr);
        }
        sc_free(lerr);
        sc_config_free(proxy_opts, cfg);
        sc_free(cfg);
    }
    sc_free(err);
    sc_ytree_free(out);
    for (size_t i = 0; i < notes.n; i++) {
        sc_free(notes.v[i]);
    }
    sc_free(notes.v);
    return 0;
}

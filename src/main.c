// SPDX-License-Identifier: Apache-2.0
// sidecar: role dispatch. `sidecar <role> [options]` runs one role; the rest is in app.c.
#include <stdio.h>
#include <string.h>

#include <uv.h>

#include "app.h"
#include "core/config.h"
#include "roles.h"
#include "version.h"

static void usage(FILE *out)
{
    fprintf(out, "Usage: sidecar <role> [options]\n"
                 "       sidecar <role> --help\n"
                 "       sidecar version\n\n"
                 "One small binary for the work every service re-implements: traffic, logs, "
                 "metrics,\nconfiguration and lifecycle. Roles:\n\n");
    for (size_t i = 0; i < sc_nroles; i++) {
        fprintf(out, "  %-10s %s\n", sc_roles[i]->name, sc_roles[i]->summary);
    }
    fprintf(out, "\nCommon options: -c FILE, --check, --admin ADDR, --log-format json|text, "
                 "--log-level LEVEL.\nDocumentation: docs/ in the source tree.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("sidecar %s (%s) libuv %s\n", SC_VERSION, SC_VERSION_GIT, uv_version_string());
        return 0;
    }
    if (strcmp(cmd, "docs") == 0 && argc == 3) {
        /* Prints a role's option reference as Markdown; docs/ is generated from it. */
        const struct sc_role *r = sc_role_find(argv[2]);
        if (r) {
            sc_app_doc(r, stdout);
            return 0;
        }
    }
    const struct sc_role *role = sc_role_find(cmd);
    if (!role) {
        const char *names[32];
        size_t n = 0;
        for (size_t i = 0; i < sc_nroles && n < 32; i++) {
            names[n++] = sc_roles[i]->name;
        }
        const char *hint = sc_value_did_you_mean(cmd, names, n);
        fprintf(stderr, "sidecar: unknown role \"%s\"", cmd);
        if (hint) {
            fprintf(stderr, " (did you mean \"%s\"?)", hint);
        }
        fprintf(stderr, "; run \"sidecar --help\" for the list of roles\n");
        return 2;
    }
    return sc_app_main(role, argc - 2, argv + 2);
}

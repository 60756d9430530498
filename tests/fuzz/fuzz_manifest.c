// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the injector's manifest reader and writer (the YAML a user or a pipeline
// feeds `sidecar inject`). Beyond "no crash", it abort()s when an invariant breaks:
//   - parsing returns 0 with a JSON array, or an error "fuzz:<line>:<col>: <message>";
//   - what parses emits as YAML that parses back to equal JSON (the round trip is faithful);
//   - injecting every document returns a count or an error that names a document, and the
//     injected documents emit and parse back equal too (the output is valid YAML);
//   - a second injection of the output injects nothing (idempotence).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "roles/inject/inject.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static json_t *roundtrip(json_t *docs)
{
    struct sc_buf b;
    sc_buf_init(&b, 256u << 20);
    if (inject_yaml_emit(docs, &b) < 0) {
        abort();
    }
    json_t *back = NULL;
    char *err = NULL;
    if (inject_yaml_parse("out", b.p ? b.p : "", b.len, &back, &err) < 0) {
        fprintf(stderr, "emitted YAML does not parse: %s\n%.*s\n", err, (int)b.len, b.p);
        abort();
    }
    if (!json_equal(back, docs)) {
        fprintf(stderr, "round trip changed the documents\n%.*s\n", (int)b.len, b.p);
        abort();
    }
    sc_buf_cleanup(&b);
    return back;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct inject_mesh mesh;
    static bool loaded;
    if (!loaded) {
        static const char all[] = "roles: [proxy, logs, metrics, secrets]\nrewrite_probes: true\n";
        char *e = NULL;
        sc_config_defaults(inject_mesh_opts, &mesh);
        if (sc_config_load_string(inject_mesh_opts, &mesh, "mesh", all, sizeof(all) - 1, &e) < 0) {
            abort();
        }
        loaded = true;
    }
    json_t *docs = NULL;
    char *err = NULL;
    int rc = inject_yaml_parse("fuzz", (const char *)data, size, &docs, &err);
    if (rc < 0) {
        if ((rc != SC_ECONFIG && rc != SC_ETOOBIG) || !err || strncmp(err, "fuzz:", 5) != 0) {
            abort();
        }
        sc_free(err);
        return 0;
    }
    json_decref(roundtrip(docs));
    struct inject_opts o;
    inject_choose(&mesh, true, NULL, false, &o);
    size_t i;
    json_t *doc;
    json_array_foreach(docs, i, doc)
    {
        rc = inject_document(&o, doc, i + 1, &err);
        if (rc < 0) {
            if (!err || strncmp(err, "document ", 9) != 0) {
                abort();
            }
            sc_free(err);
            err = NULL;
            json_decref(docs);
            return 0;
        }
    }
    json_t *again = roundtrip(docs);
    json_array_foreach(again, i, doc)
    {
        if (inject_document(&o, doc, i + 1, &err) != 0) {
            abort();
        }
    }
    if (!json_equal(again, docs)) {
        abort();
    }
    json_decref(again);
    json_decref(docs);
    return 0;
}

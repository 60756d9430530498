// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the logs role's positions database as a crash may leave it (the file is
// replaced atomically, but a disk, a person or an older version may have written anything): the
// input is the file. Beyond "no crash", it abort()s when an invariant breaks:
//   - loading returns 0, SC_ECONFIG or SC_ETOOBIG, with a message naming the file exactly when it
//     fails;
//   - every position loaded has a head length within LOGS_POS_HEAD_MAX;
//   - what loads saves and loads back to the same positions (paths with '%', CR and LF included),
//     and saving that again writes the same bytes (the saved form is canonical).
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "core/file.h"
#include "roles/logs/logs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_logpos: invariant broken: %s\n", what);
        abort();
    }
}

static char dir[] = "/tmp/sc-fuzz-logpos-XXXXXX";
static char *in_path, *out_path, *out2_path;

static void cleanup(void)
{
    unlink(in_path);
    unlink(out_path);
    unlink(out2_path);
    rmdir(dir);
    sc_free(in_path);
    sc_free(out_path);
    sc_free(out2_path);
}

static void write_file(const char *path, const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    check(f != NULL, "temporary file opens");
    check(fwrite(data, 1, size, f) == size && fclose(f) == 0, "temporary file written");
}

static void read_file(const char *path, struct sc_buf *b)
{
    sc_buf_reset(b);
    check(sc_file_read(path, b) == 0, "saved file reads back");
}

static bool same_pos(const struct logs_pos *a, const struct logs_pos *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->offset == b->offset &&
           a->head_len == b->head_len && a->head == b->head &&
           strcmp(a->path ? a->path : "", b->path ? b->path : "") == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!in_path) {
        check(mkdtemp(dir) != NULL, "temporary directory");
        in_path = sc_asprintf("%s/in.db", dir);
        out_path = sc_asprintf("%s/out.db", dir);
        out2_path = sc_asprintf("%s/out2.db", dir);
        atexit(cleanup);
    }
    write_file(in_path, data, size);
    struct logs_pos *p = NULL;
    size_t n = 0;
    char *err = NULL;
    int rc = logs_pos_load(in_path, &p, &n, &err);
    check(rc == 0 || rc == SC_ECONFIG || rc == SC_ETOOBIG, "return code");
    if (rc < 0) {
        check(err && strncmp(err, in_path, strlen(in_path)) == 0, "an error names the file");
        check(p == NULL && n == 0, "nothing returned on error");
        sc_free(err);
        return 0;
    }
    check(err == NULL, "success leaves err alone");
    check(size != 0 || n == 0, "an empty file holds no position");
    for (size_t i = 0; i < n; i++) {
        check(p[i].head_len <= LOGS_POS_HEAD_MAX, "head length bound");
    }
    check(logs_pos_save(out_path, p, n) == 0, "loaded positions save");
    struct logs_pos *q = NULL;
    size_t m = 0;
    check(logs_pos_load(out_path, &q, &m, &err) == 0, "saved positions load");
    check(m == n, "as many positions after a round trip");
    for (size_t i = 0; i < n; i++) {
        check(same_pos(&p[i], &q[i]), "the same positions after a round trip");
    }
    check(logs_pos_save(out2_path, q, m) == 0, "positions save again");
    struct sc_buf a, b;
    sc_buf_init(&a, 64u << 20);
    sc_buf_init(&b, 64u << 20);
    read_file(out_path, &a);
    read_file(out2_path, &b);
    check(a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0), "saved form canonical");
    sc_buf_cleanup(&a);
    sc_buf_cleanup(&b);
    logs_pos_free(p, n);
    logs_pos_free(q, m);
    return 0;
}

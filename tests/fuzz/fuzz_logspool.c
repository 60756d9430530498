// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the recovery of an output's spool, the file a crash in the middle of an
// append leaves with a torn last record: the input is the spool file (layout in logs_spool.c: a
// 16-byte header "SCSPOOL1" + read offset, then records {u32 magic, u32 body length, u32 items,
// body, u32 item ends}). Beyond "no crash", it abort()s when an invariant breaks:
//   - opening returns 0, or an error with a message naming the output;
//   - after a successful open the file ends at the last complete record, read offset within it;
//   - every batch read is the record's bytes as they are in the file, with at most batch_count
//     items whose ends increase up to the end of the body (what the encoders rely on);
//   - reading and consuming (or, for an unreadable record, resetting) empties the spool to its
//     header, and opening it again finds nothing pending.
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/log.h"
#include "roles/logs/logs.h"

#define SPOOL_HDR 16u
#define REC_HDR 12u
#define BATCH_COUNT 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_logspool: invariant broken: %s\n", what);
        abort();
    }
}

static char dir[] = "/tmp/sc-fuzz-logspool-XXXXXX";
static char *path;

static void cleanup(void)
{
    unlink(path);
    rmdir(dir);
    sc_free(path);
}

static uint64_t file_size(void)
{
    struct stat st;
    check(stat(path, &st) == 0, "spool file exists");
    return (uint64_t)st.st_size;
}

static void close_out(struct logs_out *o)
{
    if (o->spool_fd >= 0) {
        close(o->spool_fd);
        o->spool_fd = -1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!path) {
        check(mkdtemp(dir) != NULL, "temporary directory");
        path = sc_asprintf("%s/out.spool", dir);
        atexit(cleanup);
        sc_log_setup(SC_LOG_OFF, SC_LOG_TEXT, "fuzz");
    }
    FILE *f = fopen(path, "wb");
    check(f != NULL && fwrite(data, 1, size, f) == size && fclose(f) == 0, "spool file written");

    struct logs_output_cfg cfg = { .batch_count = BATCH_COUNT, .spool_limit = 64u << 20 };
    cfg.spool = path;
    struct logs_out o = { .cfg = &cfg, .name = "fuzz", .spool_fd = -1 };
    char *err = NULL;
    int rc = logs_spool_open(&o, &err);
    if (rc < 0) {
        check(err && strncmp(err, "output fuzz: ", 13) == 0, "an error names the output");
        sc_free(err);
        close_out(&o);
        return 0;
    }
    check(err == NULL, "success leaves err alone");
    check(o.spool_rd >= SPOOL_HDR && o.spool_rd <= o.spool_wr, "read offset within the file");
    check(file_size() == o.spool_wr, "the file ends at the last complete record");
    check(size == 0 || o.spool_wr <= size, "recovery never grows the file");

    struct logs_batch b = { 0 };
    sc_buf_init(&b.body, 64u << 20);
    b.items = sc_calloc(BATCH_COUNT, sizeof(*b.items));
    uint64_t off = o.spool_rd;
    size_t left = o.spool_pending;
    while (o.spool_pending) {
        if (!logs_spool_read(&o, &b)) {
            logs_spool_reset(&o); /* what the output does with an unreadable record */
            break;
        }
        check(b.nitems <= BATCH_COUNT, "at most batch_count items");
        for (size_t i = 0; i < b.nitems; i++) {
            check(b.items[i] <= b.body.len && (i == 0 || b.items[i] > b.items[i - 1]),
                  "item ends increase within the body");
        }
        check(b.nitems == 0 || b.items[b.nitems - 1] == b.body.len, "the last item ends the body");
        check(off + REC_HDR + b.body.len <= size &&
                  (b.body.len == 0 || memcmp(b.body.p, data + off + REC_HDR, b.body.len) == 0),
              "a batch is the bytes of its record");
        check(b.spool_len == REC_HDR + b.body.len + 4 * b.nitems, "record length");
        off += b.spool_len;
        logs_spool_consume(&o, &b);
        check(o.spool_pending == --left, "one batch consumed");
    }
    check(o.spool_pending == 0 && file_size() == SPOOL_HDR, "an emptied spool is its header");
    close_out(&o);
    struct logs_out o2 = { .cfg = &cfg, .name = "fuzz", .spool_fd = -1 };
    check(logs_spool_open(&o2, &err) == 0 && o2.spool_pending == 0, "nothing left after a restart");
    close_out(&o2);
    sc_buf_cleanup(&b.body);
    sc_free(b.items);
    return 0;
}

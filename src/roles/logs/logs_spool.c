// SPDX-License-Identifier: Apache-2.0
// The optional on-disk spool of an output: when the output's memory queue is full, sealed batches
// are appended to one file (bounded by spool_limit) and fsynced instead of pausing the input, so
// stdin data and files rotated away during a long outage survive it. A spooled batch counts as
// acknowledged for the positions database (it is durable), and is sent after the memory queue,
// in order. Layout: a 16-byte header ("SCSPOOL1", then the read offset, rewritten and fsynced
// after each delivered batch), then records {u32 magic, u32 body length, u32 items, body,
// u32 item ends}. A torn last record (crash while appending) is cut off at start-up: its lines
// were never acknowledged, so they are read again from their files.
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "roles/logs/logs.h"

#define SPOOL_MAGIC "SCSPOOL1"
#define SPOOL_HDR 16u
#define REC_MAGIC 0x53434231u
#define REC_HDR 12u

static int pwrite_all(int fd, const void *p, size_t n, uint64_t off)
{
    const char *c = p;
    while (n) {
        ssize_t w = pwrite(fd, c, n, (off_t)off);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        c += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

static int pread_all(int fd, void *p, size_t n, uint64_t off)
{
    char *c = p;
    while (n) {
        ssize_t r = pread(fd, c, n, (off_t)off);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return r < 0 ? -errno : -EIO;
        }
        c += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

static int write_rd(struct logs_out *o)
{
    char hdr[SPOOL_HDR];
    memcpy(hdr, SPOOL_MAGIC, 8);
    memcpy(hdr + 8, &o->spool_rd, 8);
    int rc = pwrite_all(o->spool_fd, hdr, sizeof(hdr), 0);
    if (rc == 0 && fdatasync(o->spool_fd) < 0) {
        rc = -errno;
    }
    return rc;
}

int logs_spool_open(struct logs_out *o, char **err)
{
    const char *path = o->cfg->spool;
    o->spool_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (o->spool_fd < 0) {
        *err = sc_asprintf("output %s: spool %s: %s", o->name, path, strerror(errno));
        return -errno;
    }
    struct stat st;
    char hdr[SPOOL_HDR];
    if (fstat(o->spool_fd, &st) < 0) {
        *err = sc_asprintf("output %s: spool %s: %s", o->name, path, strerror(errno));
        return -errno;
    }
    uint64_t size = (uint64_t)st.st_size;
    o->spool_rd = o->spool_wr = SPOOL_HDR;
    if (size >= SPOOL_HDR && pread_all(o->spool_fd, hdr, SPOOL_HDR, 0) == 0 &&
        memcmp(hdr, SPOOL_MAGIC, 8) == 0) {
        memcpy(&o->spool_rd, hdr + 8, 8);
        if (o->spool_rd < SPOOL_HDR || o->spool_rd > size) {
            *err = sc_asprintf("output %s: spool %s: corrupt header", o->name, path);
            return SC_ECONFIG;
        }
        /* Walk the records to find the end of the last complete one. */
        uint64_t off = o->spool_rd;
        while (off + REC_HDR <= size) {
            uint32_t h[3];
            if (pread_all(o->spool_fd, h, sizeof(h), off) < 0 || h[0] != REC_MAGIC) {
                break;
            }
            uint64_t len = REC_HDR + (uint64_t)h[1] + 4ull * h[2];
            if (off + len > size) {
                break;
            }
            off += len;
            o->spool_pending++;
        }
        o->spool_wr = off;
        if (off < size) {
            sc_warn("spool: cutting a torn record", SC_LS("output", o->name), SC_LU("offset", off));
        }
        if (o->spool_pending == 0) {
            /* Everything in it was delivered: start again after the header, so delivered bytes
             * never count against spool_limit. */
            o->spool_rd = o->spool_wr = SPOOL_HDR;
        }
    } else if (size > 0) {
        *err = sc_asprintf("output %s: %s is not a sidecar spool file", o->name, path);
        return SC_ECONFIG;
    }
    if (ftruncate(o->spool_fd, (off_t)o->spool_wr) < 0 || write_rd(o) < 0) {
        *err = sc_asprintf("output %s: spool %s: %s", o->name, path, strerror(errno));
        return -EIO;
    }
    if (o->spool_pending) {
        sc_info("spool: batches left from the last run will be sent first",
                SC_LS("output", o->name), SC_LU("batches", o->spool_pending));
    }
    return 0;
}

bool logs_spool_has_room(const struct logs_out *o, size_t n)
{
    return o->spool_fd >= 0 && o->spool_wr + n + REC_HDR <= o->cfg->spool_limit;
}

int logs_spool_append(struct logs_out *o, const struct logs_batch *b)
{
    size_t n = REC_HDR + b->body.len + 4 * b->nitems;
    if (!logs_spool_has_room(o, n)) {
        return SC_ETOOBIG;
    }
    char *rec = sc_malloc(n);
    uint32_t h[3] = { REC_MAGIC, (uint32_t)b->body.len, (uint32_t)b->nitems };
    memcpy(rec, h, REC_HDR);
    memcpy(rec + REC_HDR, b->body.p, b->body.len);
    for (size_t i = 0; i < b->nitems; i++) {
        uint32_t e = (uint32_t)b->items[i];
        memcpy(rec + REC_HDR + b->body.len + 4 * i, &e, 4);
    }
    int rc = pwrite_all(o->spool_fd, rec, n, o->spool_wr);
    if (rc == 0 && fdatasync(o->spool_fd) < 0) {
        rc = -errno;
    }
    sc_free(rec);
    if (rc < 0) {
        sc_error("spool write failed", SC_LS("output", o->name), SC_LERR(rc));
        return rc;
    }
    o->spool_wr += n;
    o->spool_pending++;
    return 0;
}

struct logs_batch *logs_spool_read(struct logs_out *o, struct logs_batch *b)
{
    uint32_t h[3];
    if (o->spool_pending == 0 || pread_all(o->spool_fd, h, sizeof(h), o->spool_rd) < 0 ||
        h[0] != REC_MAGIC || h[2] > (uint32_t)o->cfg->batch_count) {
        return NULL;
    }
    if (sc_buf_reserve(&b->body, h[1]) < 0 ||
        pread_all(o->spool_fd, b->body.p, h[1], o->spool_rd + REC_HDR) < 0) {
        return NULL;
    }
    b->body.len = h[1];
    /* Item ends as the writer leaves them: increasing, the last one the end of the body (the
     * encoders take each item's length as the difference of two ends). */
    uint32_t prev = 0;
    for (uint32_t i = 0; i < h[2]; i++) {
        uint32_t e;
        if (pread_all(o->spool_fd, &e, 4, o->spool_rd + REC_HDR + h[1] + 4ull * i) < 0 ||
            e > h[1] || e <= prev || (i + 1 == h[2] && e != h[1])) {
            return NULL;
        }
        b->items[i] = e;
        prev = e;
    }
    b->nitems = h[2];
    b->spool_len = REC_HDR + h[1] + 4ull * h[2];
    return b;
}

void logs_spool_consume(struct logs_out *o, const struct logs_batch *b)
{
    o->spool_rd += b->spool_len;
    o->spool_pending--;
    if (o->spool_pending == 0) {
        o->spool_rd = o->spool_wr = SPOOL_HDR;
        if (ftruncate(o->spool_fd, SPOOL_HDR) < 0) {
            sc_warn("spool truncate failed", SC_LS("output", o->name),
                    SC_LS("error", strerror(errno)));
        }
    }
    int rc = write_rd(o);
    if (rc < 0) {
        sc_warn("spool header write failed", SC_LS("output", o->name), SC_LERR(rc));
    }
}

void logs_spool_reset(struct logs_out *o)
{
    o->spool_pending = 0;
    o->spool_rd = o->spool_wr = SPOOL_HDR;
    if (ftruncate(o->spool_fd, SPOOL_HDR) < 0 || write_rd(o) < 0) {
        sc_warn("spool reset failed", SC_LS("output", o->name), SC_LS("error", strerror(errno)));
    }
}

// SPDX-License-Identifier: Apache-2.0
// The positions database: one small text file, "sidecar-logs-positions 2" then one line per file,
// "DEV INO OFFSET HEADLEN HEAD PATH" (HEAD: hex FNV-1a 64 of the file's first HEADLEN bytes; path
// with '%' and newlines escaped; version 1 files, without HEADLEN and HEAD, are still read). It is
// replaced atomically (write a
// temporary file, fsync it, rename over the old one, fsync the directory), so after a crash or
// kill -9 the file holds either the previous or the new complete set of committed offsets.
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/file.h"
#include "core/buf.h"
#include "core/error.h"
#include "roles/logs/logs.h"

#define POS_MAGIC_V1 "sidecar-logs-positions 1\n"
#define POS_MAGIC "sidecar-logs-positions 2\n"
#define POS_MAX_FILE (64u << 20)

uint64_t logs_pos_head(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ (unsigned char)p[i]) * 0x100000001b3ull;
    }
    return h;
}

static int hex_u64(struct sc_str s, uint64_t *out)
{
    uint64_t v = 0;
    if (s.len == 0 || s.len > 16) {
        return -EINVAL;
    }
    for (size_t i = 0; i < s.len; i++) {
        char c = s.p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') {
            v |= (uint64_t)(c - '0');
        } else if (c >= 'a' && c <= 'f') {
            v |= (uint64_t)(c - 'a' + 10);
        } else {
            return -EINVAL;
        }
    }
    *out = v;
    return 0;
}

void logs_pos_free(struct logs_pos *p, size_t n)
{
    for (size_t i = 0; p && i < n; i++) {
        sc_free(p[i].path);
    }
    sc_free(p);
}

static int unescape(struct sc_str s, char **out)
{
    char *o = sc_malloc(s.len + 1);
    size_t n = 0;
    int rc = 0;
    for (size_t i = 0; i < s.len; i++) {
        if (s.p[i] == '%') {
            if (i + 2 >= s.len) {
                rc = -EINVAL;
                goto out;
            }
            unsigned v = 0;
            for (int k = 1; k <= 2; k++) {
                char c = s.p[i + k];
                v <<= 4;
                if (c >= '0' && c <= '9') {
                    v |= (unsigned)(c - '0');
                } else if (c >= 'A' && c <= 'F') {
                    v |= (unsigned)(c - 'A' + 10);
                } else {
                    rc = -EINVAL;
                    goto out;
                }
            }
            o[n++] = (char)v;
            i += 2;
        } else {
            o[n++] = s.p[i];
        }
    }
    o[n] = 0;
    *out = o;
    o = NULL;
out:
    sc_free(o);
    return rc;
}

int logs_pos_load(const char *path, struct logs_pos **out, size_t *nout, char **err)
{
    *out = NULL;
    *nout = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            return 0;
        }
        int e = -errno;
        *err = sc_asprintf("%s: %s", path, strerror(errno));
        return e;
    }
    struct sc_buf b;
    sc_buf_init(&b, POS_MAX_FILE);
    int rc = 0;
    for (;;) {
        if (sc_buf_reserve(&b, 65536) < 0) {
            rc = SC_ETOOBIG;
            *err = sc_asprintf("%s: positions file over %u bytes", path, POS_MAX_FILE);
            goto out;
        }
        ssize_t n = read(fd, b.p + b.len, 65536);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            rc = -errno;
            *err = sc_asprintf("%s: %s", path, strerror(errno));
            goto out;
        }
        if (n == 0) {
            break;
        }
        b.len += (size_t)n;
    }
    struct sc_str s = sc_buf_str(&b);
    if (s.len == 0) {
        goto out;
    }
    bool v1 = sc_str_startswith(s, SC_STR(POS_MAGIC_V1));
    if (!v1 && !sc_str_startswith(s, SC_STR(POS_MAGIC))) {
        rc = SC_ECONFIG;
        *err = sc_asprintf("%s: not a sidecar positions file", path);
        goto out;
    }
    s.p += strlen(POS_MAGIC);
    s.len -= strlen(POS_MAGIC);
    struct logs_pos *v = NULL;
    size_t n = 0, lineno = 1;
    while (s.len) {
        lineno++;
        struct sc_str line = sc_str_split(&s, '\n');
        if (line.len == 0) {
            continue;
        }
        struct sc_str a = sc_str_split(&line, ' ');
        struct sc_str bb = sc_str_split(&line, ' ');
        struct sc_str c = sc_str_split(&line, ' ');
        struct logs_pos p = { 0 };
        bool head_ok = true;
        if (!v1) {
            struct sc_str hl = sc_str_split(&line, ' ');
            struct sc_str h = sc_str_split(&line, ' ');
            head_ok =
                sc_str_to_u64(hl, LOGS_POS_HEAD_MAX, &p.head_len) == 0 && hex_u64(h, &p.head) == 0;
        }
        if (sc_str_to_u64(a, UINT64_MAX, &p.dev) < 0 || sc_str_to_u64(bb, UINT64_MAX, &p.ino) < 0 ||
            sc_str_to_u64(c, UINT64_MAX, &p.offset) < 0 || !head_ok ||
            unescape(line, &p.path) < 0) {
            logs_pos_free(v, n);
            rc = SC_ECONFIG;
            *err = sc_asprintf("%s:%zu: malformed position line", path, lineno);
            goto out;
        }
        v = sc_reallocarray(v, n + 1, sizeof(*v));
        v[n++] = p;
    }
    *out = v;
    *nout = n;
out:
    sc_buf_cleanup(&b);
    close(fd);
    return rc;
}

int logs_pos_save(const char *path, const struct logs_pos *p, size_t n)
{
    struct sc_buf b;
    sc_buf_init(&b, POS_MAX_FILE);
    int rc = sc_buf_append_cstr(&b, POS_MAGIC);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = sc_buf_appendf(&b, "%" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %016" PRIx64 " ",
                            p[i].dev, p[i].ino, p[i].offset, p[i].head_len, p[i].head);
        for (const char *c = p[i].path ? p[i].path : ""; rc == 0 && *c; c++) {
            if (*c == '%' || *c == '\n' || *c == '\r') {
                rc = sc_buf_appendf(&b, "%%%02X", (unsigned)(unsigned char)*c);
            } else {
                rc = sc_buf_append(&b, c, 1);
            }
        }
        if (rc == 0) {
            rc = sc_buf_append(&b, "\n", 1);
        }
    }
    if (rc == 0) {
        char *err = NULL; /* the caller logs the error code */
        rc = sc_file_write_atomic(path, b.p, b.len, 0600, (uid_t)-1, (gid_t)-1, &err);
        sc_free(err);
    }
    sc_buf_cleanup(&b);
    return rc;
}

// SPDX-License-Identifier: Apache-2.0
// Atomic file replacement (temp file, fsync, rename, fsync of the directory), content
// comparison, and the built-in json/yaml syntax checks used to validate a file before the swap.
// Nothing here ever opens the destination for writing, so a reader can never see it partial.
#include "core/file.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <yaml.h>

#include "core/alloc.h"
#include "core/error.h"

int sc_file_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int sc_file_write_atomic(const char *path, const void *data, size_t len, mode_t mode, uid_t uid,
                         gid_t gid, char **err)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? (slash == path ? sc_strdup("/") : sc_strndup(path, (size_t)(slash - path)))
                      : sc_strdup(".");
    const char *base = slash ? slash + 1 : path;
    char *tmp = sc_asprintf("%s/.%s.tmp.XXXXXX", dir, base);
    int fd = -1, dfd = -1, rc = 0;
    const char *step = "create a temporary file";
    fd = mkstemp(tmp);
    if (fd < 0) {
        rc = -errno;
        goto fail;
    }
    step = "set the mode";
    if (fchmod(fd, mode) < 0) {
        rc = -errno;
        goto fail;
    }
    if (uid != (uid_t)-1 || gid != (gid_t)-1) {
        step = "set the owner";
        if (fchown(fd, uid, gid) < 0) {
            rc = -errno;
            goto fail;
        }
    }
    step = "write";
    if ((rc = sc_file_write_all(fd, data, len)) < 0) {
        goto fail;
    }
    step = "fsync";
    if (fsync(fd) < 0) {
        rc = -errno;
        goto fail;
    }
    step = "close";
    if (close(fd) < 0) {
        fd = -1;
        rc = -errno;
        goto fail;
    }
    fd = -1;
    step = "rename";
    if (rename(tmp, path) < 0) {
        rc = -errno;
        goto fail;
    }
    /* The rename is done; a failed directory fsync only weakens durability across a crash. */
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    sc_free(tmp);
    sc_free(dir);
    return 0;
fail:
    *err = sc_asprintf("cannot %s for %s: %s", step, path, strerror(-rc));
    if (fd >= 0) {
        close(fd);
    }
    unlink(tmp);
    sc_free(tmp);
    sc_free(dir);
    return rc;
}

int sc_file_read(const char *path, struct sc_buf *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    int rc = 0;
    for (;;) {
        size_t want = out->max - out->len < 4096 ? out->max - out->len : 4096;
        if (want == 0) {
            /* Allow a file of exactly the cap: probe for one more byte. */
            char c;
            ssize_t n = read(fd, &c, 1);
            rc = n == 0 ? 0 : SC_ETOOBIG;
            break;
        }
        if ((rc = sc_buf_reserve(out, want)) < 0) {
            break;
        }
        ssize_t n = read(fd, out->p + out->len, want);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            rc = -errno;
            break;
        }
        if (n == 0) {
            break;
        }
        out->len += (size_t)n;
    }
    close(fd);
    return rc;
}

bool sc_file_same(const char *path, const void *data, size_t len)
{
    struct stat st;
    if (stat(path, &st) < 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size != len) {
        return false;
    }
    struct sc_buf b;
    sc_buf_init(&b, len + 1);
    b.sensitive = true; /* the file may hold secrets: zero the copy */
    bool same =
        sc_file_read(path, &b) == 0 && b.len == len && (len == 0 || memcmp(b.p, data, len) == 0);
    sc_buf_cleanup(&b);
    return same;
}

int sc_file_check_syntax(const char *kind, const void *data, size_t len, char **err)
{
    if (strcmp(kind, "json") == 0) {
        json_error_t je;
        json_t *j = json_loadb(data, len, JSON_DECODE_ANY, &je);
        if (!j) {
            *err = sc_asprintf("%d:%d: invalid JSON: %s", je.line, je.column, je.text);
            return SC_ECONFIG;
        }
        json_decref(j);
        return 0;
    }
    if (strcmp(kind, "yaml") != 0) {
        return -EINVAL;
    }
    yaml_parser_t p;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_string(&p, data, len);
    int rc = 0;
    for (size_t guard = 0; guard < 10000000; guard++) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            *err = sc_asprintf("%zu:%zu: invalid YAML: %s", p.problem_mark.line + 1,
                               p.problem_mark.column + 1, p.problem ? p.problem : "syntax error");
            rc = SC_ECONFIG;
            break;
        }
        bool end = ev.type == YAML_STREAM_END_EVENT;
        yaml_event_delete(&ev);
        if (end) {
            break;
        }
    }
    yaml_parser_delete(&p);
    return rc;
}

int sc_file_parse_mode(const char *s, mode_t *mode)
{
    if (!s || !*s) {
        return -EINVAL;
    }
    unsigned long v = 0;
    for (const char *c = s; *c; c++) {
        if (*c < '0' || *c > '7') {
            return -EINVAL;
        }
        v = v * 8 + (unsigned long)(*c - '0');
        if (v > 07777) {
            return -EINVAL;
        }
    }
    *mode = (mode_t)v;
    return 0;
}

static int parse_id(const char *s, bool group, unsigned *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (*s && *end == '\0' && errno == 0 && v < 0xffffffffUL) {
        *out = (unsigned)v;
        return 0;
    }
    char buf[4096];
    if (group) {
        struct group g, *res = NULL;
        if (getgrnam_r(s, &g, buf, sizeof(buf), &res) != 0 || !res) {
            return -EINVAL;
        }
        *out = res->gr_gid;
    } else {
        struct passwd pw, *res = NULL;
        if (getpwnam_r(s, &pw, buf, sizeof(buf), &res) != 0 || !res) {
            return -EINVAL;
        }
        *out = res->pw_uid;
    }
    return 0;
}

int sc_file_parse_owner(const char *s, uid_t *uid, gid_t *gid)
{
    *uid = (uid_t)-1;
    *gid = (gid_t)-1;
    if (!s || !*s) {
        return 0;
    }
    char *copy = sc_strdup(s);
    char *colon = strchr(copy, ':');
    int rc = 0;
    unsigned v;
    if (colon) {
        *colon = '\0';
        if (colon[1] && (rc = parse_id(colon + 1, true, &v)) == 0) {
            *gid = (gid_t)v;
        }
    }
    if (rc == 0 && copy[0] && (rc = parse_id(copy, false, &v)) == 0) {
        *uid = (uid_t)v;
    }
    sc_free(copy);
    return rc;
}

// SPDX-License-Identifier: Apache-2.0
// The config role's file and directory sources. A directory (a mounted ConfigMap) becomes one key
// per regular file, hidden entries skipped, at most CONFIG_MAX_DIR_KEYS; inotify on the directory
// sees the `..data` symlink swap, and events settle for a moment before one fetch.
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>

#include "app.h"
#include "core/alloc.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "core/template.h"
#include "net/dest.h"
#include "net/egress.h"
#include "roles/config/config.h"

/* ---- files and directories ---- */

static int key_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reads every visible key of a ConfigMap-style directory (entries starting with '.' such as
 * ..data and ..2024_* are Kubernetes' own; keys are symlinks through ..data, which stat
 * follows). Returns 0 and a new JSON object key -> content, or a negative errno. */
static int read_dir(const char *path, json_t **out)
{
    uv_fs_t req;
    int rc = uv_fs_scandir(NULL, &req, path, 0, NULL);
    if (rc < 0) {
        return rc;
    }
    char *names[CONFIG_MAX_DIR_KEYS];
    size_t n = 0;
    uv_dirent_t ent;
    while (uv_fs_scandir_next(&req, &ent) != UV_EOF) {
        if (ent.name[0] == '.' || n >= CONFIG_MAX_DIR_KEYS) {
            continue;
        }
        names[n++] = sc_strdup(ent.name);
    }
    uv_fs_req_cleanup(&req);
    qsort(names, n, sizeof(char *), key_cmp);
    json_t *obj = json_object();
    rc = 0;
    for (size_t i = 0; i < n; i++) {
        char *p = sc_asprintf("%s/%s", path, names[i]);
        struct stat st;
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
            struct sc_buf b;
            sc_buf_init(&b, CONFIG_MAX_BODY);
            int r = sc_file_read(p, &b);
            if (r < 0) {
                rc = r;
            } else {
                json_t *v = json_stringn(b.p ? b.p : "", b.len);
                json_object_set_new(obj, names[i], v ? v : json_string(""));
            }
            sc_buf_cleanup(&b);
        }
        sc_free(p);
        sc_free(names[i]);
    }
    if (rc < 0) {
        json_decref(obj);
        return rc;
    }
    *out = obj;
    return 0;
}

void config_files_fetch_file(struct config_source *s)
{
    struct sc_buf b;
    sc_buf_init(&b, CONFIG_MAX_BODY);
    int rc = sc_file_read(s->path, &b);
    if (rc < 0) {
        sc_buf_cleanup(&b);
        config_fetch_failed(s, sc_strerror(rc));
        return;
    }
    config_deliver(s, b.p ? b.p : "", b.len, NULL);
    sc_buf_cleanup(&b);
}

void config_files_fetch_dir(struct config_source *s)
{
    json_t *obj = NULL;
    int rc = read_dir(s->path, &obj);
    if (rc < 0) {
        config_fetch_failed(s, sc_strerror(rc));
        return;
    }
    char *all = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
    if (s->spec.path && !s->tmpl) {
        /* Mirror each key into the destination directory. */
        config_fetch_ok(s, s->m_ok);
        mkdir(s->spec.path, 0755);
        const char *k;
        json_t *v;
        s->writes++;
        json_object_foreach(obj, k, v)
        {
            char *p = sc_asprintf("%s/%s", s->spec.path, k);
            config_write_dest(s, p, json_string_value(v), json_string_length(v));
            sc_free(p);
        }
        s->writes--;
        if (s->writes == 0) {
            s->writes++;
            config_on_written(s, SC_DEST_UNCHANGED);
        }
    } else {
        config_deliver(s, all ? all : "", all ? strlen(all) : 0, obj);
    }
    sc_free(all);
    json_decref(obj);
}

static void on_fs_settled(uv_timer_t *t)
{
    struct config_source *s = t->data;
    if (s->cf->stopping) {
        return;
    }
    if (s->fetching) {
        s->refetch = true;
        return;
    }
    sc_debug("file change seen", SC_LS("source", s->name));
    config_source_schedule(s, 0);
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    struct config_source *s = h->data;
    (void)events;
    if (status < 0 || s->cf->stopping) {
        return;
    }
    if (s->kind == SRC_FILE && filename) {
        const char *base = strrchr(s->path, '/');
        base = base ? base + 1 : s->path;
        if (strcmp(filename, base) != 0 && strncmp(filename, "..", 2) != 0) {
            return;
        }
    }
    /* Settle: a ConfigMap update is several renames in a row. */
    uv_timer_start(&s->fs_timer, on_fs_settled, 10, 0);
}

void config_files_watch(struct config_source *s)
{
    char *dir;
    if (s->kind == SRC_DIR) {
        dir = sc_strdup(s->path);
    } else {
        const char *slash = strrchr(s->path, '/');
        dir = slash ? (slash == s->path ? sc_strdup("/")
                                        : sc_strndup(s->path, (size_t)(slash - s->path)))
                    : sc_strdup(".");
    }
    uv_fs_event_init(s->cf->loop, &s->fs_event);
    s->fs_event.data = s;
    s->fs_watching = true;
    int rc = uv_fs_event_start(&s->fs_event, on_fs_event, dir, 0);
    if (rc < 0) {
        sc_warn("cannot watch for changes; polling only", SC_LS("path", dir), SC_LERR(rc));
    }
    sc_free(dir);
}

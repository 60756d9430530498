// SPDX-License-Identifier: Apache-2.0
// Rendering of the secrets role's templates to files: the `secret` template function reads the
// last response of a path, a file is rendered once every path it reads has been read, and written
// atomically (mode 0600) only when its text changed, then its reload action runs. A file a reload
// replaced while its write was in flight is retired and freed when the write ends. Rendered text
// is secret: buffers are zeroed when freed.
#include <errno.h>
#include <stdlib.h>
#include <string.h>
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
#include "roles/secrets/secrets.h"
#include "roles/secrets/secrets_mem.h"

/* ---- rendering ---- */

struct secrets_path *secrets_find_path(struct secrets *sv, const char *path)
{
    for (size_t i = 0; i < sv->npaths; i++) {
        if (strcmp(sv->paths[i]->path, path) == 0) {
            return sv->paths[i];
        }
    }
    return NULL;
}

static int tmpl_secret(void *arg, const char *name, json_t *const *args, size_t nargs, json_t **out,
                       char **err)
{
    struct secrets *sv = arg;
    (void)name;
    if (nargs < 1 || !json_is_string(args[0])) {
        *err = sc_strdup("secret takes a path string");
        return SC_ECONFIG;
    }
    struct secrets_path *p = secrets_find_path(sv, json_string_value(args[0]));
    if (!p || !p->secret) {
        *err = sc_asprintf("secret %s has not been read", json_string_value(args[0]));
        return -EAGAIN;
    }
    *out = json_incref(p->secret);
    return 0;
}

struct sc_dest_reloader *secrets_file_reloader(const struct secrets_file *f)
{
    return f->reloader ? f->reloader : f->sv->reloader;
}

/* A file a reload replaced that still writes <dest>, or NULL. */
static struct secrets_file *retired_writing(struct secrets *sv, const char *dest)
{
    for (struct secrets_file *f = sv->retired; f; f = f->next) {
        if (strcmp(f->dest, dest) == 0) {
            return f;
        }
    }
    return NULL;
}

static struct secrets_file *current_file(struct secrets *sv, const char *dest)
{
    for (size_t i = 0; i < sv->nfiles; i++) {
        if (strcmp(sv->files[i]->dest, dest) == 0) {
            return sv->files[i];
        }
    }
    return NULL;
}

static void on_file_written(void *arg, enum sc_dest_result r);

static void render_file(struct secrets *sv, struct secrets_file *f)
{
    /* One write per destination at a time, or an older rename could land last. */
    if (f->writing || retired_writing(sv, f->dest)) {
        f->dirty = true;
        return;
    }
    struct sc_buf out;
    sc_buf_init(&out, SECRETS_MAX_OUT);
    out.sensitive = true;
    char *err = NULL;
    int rc = sc_template_render(f->tmpl, NULL, tmpl_secret, sv, &out, &err);
    if (rc < 0) {
        /* Not every secret read yet is ordinary at start; anything else is an error. */
        bool fatal = !strstr(err, "has not been read");
        if (fatal) {
            sc_error("template failed; the last good file stays", SC_LS("file", f->name),
                     SC_LS("reason", err));
        }
        sc_free(err);
        if (fatal && sv->cfg->once) {
            secrets_give_up(sv, f->name, "the template failed");
        }
    } else {
        f->writing = true;
        sv->writes++;
        sc_dest_write(sv->loop, &f->spec, out.p ? out.p : "", out.len, on_file_written, f);
    }
    sc_buf_cleanup(&out);
}

void secrets_file_free(struct secrets_file *f)
{
    if (!f) {
        return;
    }
    sc_dest_reloader_close(f->reloader);
    sc_free(f->name);
    sc_free(f->dest);
    sc_template_free(f->tmpl);
    if (f->has_own_reload) {
        sc_config_free(sc_dest_reload_item_opts, &f->own_reload);
    }
    sc_free(f);
}

/* The write of a file that a reload replaced has ended: the file goes, and the file that now
 * owns the destination renders (it waited) and, when the write changed the file, reloads. */
static void retired_written(struct secrets *sv, struct secrets_file *f, enum sc_dest_result r)
{
    for (struct secrets_file **pp = &sv->retired; *pp; pp = &(*pp)->next) {
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    }
    struct secrets_file *cur = sv->stopping ? NULL : current_file(sv, f->dest);
    secrets_file_free(f);
    if (sv->stopping) {
        secrets_finish(sv, sv->gave_up ? 1 : 0);
        return;
    }
    if (r == SC_DEST_WRITTEN) {
        sc_dest_reloader_trigger(cur ? secrets_file_reloader(cur) : sv->reloader);
    }
    if (cur && cur->dirty && !retired_writing(sv, cur->dest)) {
        cur->dirty = false;
        render_file(sv, cur);
    }
}

static void on_file_written(void *arg, enum sc_dest_result r)
{
    struct secrets_file *f = arg;
    struct secrets *sv = f->sv;
    f->writing = false;
    sv->writes--;
    if (f->retired) {
        retired_written(sv, f, r);
        return;
    }
    if (r >= 0) {
        f->written = true;
    }
    if (r == SC_DEST_WRITTEN && !sv->cfg->once) {
        sc_dest_reloader_trigger(secrets_file_reloader(f));
    }
    if (sv->stopping) {
        secrets_finish(sv, sv->gave_up ? 1 : 0);
        return;
    }
    if (f->dirty) {
        f->dirty = false;
        render_file(sv, f);
    }
    bool all = true;
    for (size_t i = 0; i < sv->nfiles; i++) {
        all = all && sv->files[i]->written;
    }
    if (all) {
        sc_app_set_ready(sv->app, true);
        if (sv->cfg->once && sv->writes == 0) {
            sc_info("all secrets rendered", SC_LU("files", sv->nfiles));
            secrets_finish(sv, 0);
        }
    } else if (r < 0 && sv->cfg->once) {
        secrets_give_up(sv, f->name, "the file could not be written or failed validation");
    }
}

void secrets_render_all(struct secrets *sv)
{
    for (size_t i = 0; i < sv->nfiles; i++) {
        render_file(sv, sv->files[i]);
    }
}

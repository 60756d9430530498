// SPDX-License-Identifier: Apache-2.0
// Preparing a pod before anything runs (see pod_run.h): volume directories under the pod
// directory, each container's environment (envFrom, env with $(VAR) expansion and fieldRef), its
// command line, working directory and cgroup. As root, a container with volumeMounts runs inside
// unshare(1) + sh, which bind-mounts each volume at its mountPath in a private mount namespace and
// then execs the command (same PID, so signals and the process group are the container's);
// without root, mountPaths are rewritten into the pod directory. Nothing here touches the loop.
#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "roles/pod/pod_run.h"

/* ---- command lines ---- */

void pod_strv_free(char **v)
{
    for (size_t i = 0; v && v[i]; i++) {
        sc_free(v[i]);
    }
    sc_free(v);
}

static const char *unshare_bin(void)
{
    return access("/usr/bin/unshare", X_OK) == 0 ? "/usr/bin/unshare" : "/bin/unshare";
}

/* The wrapper that gives a container its private mount namespace with its volumes bound at their
 * mountPath: unshare(1) then sh, which binds and execs the command (same PID, same group). */
static const char mount_script[] =
    "while [ \"$1\" != -- ]; do mkdir -p \"$2\" && mount --bind \"$1\" \"$2\" || exit 126; "
    "if [ \"$3\" = ro ]; then mount -o remount,bind,ro \"$2\" || exit 126; fi; shift 3; done; "
    "shift; exec \"$@\"";

/* Returns a new argv running <cmd> (the container's expanded words) in <c>'s mounts. */
static char **wrap_argv(struct pod_ctr *c, char **cmd, size_t ncmd)
{
    size_t n = 0, cap = ncmd + 3 * c->nmnts + 32;
    char **v = sc_calloc(cap, sizeof(char *));
    /* in order: the pod's network namespace, the mounts, then the user and capabilities */
    n += pod_net_words(c->pod, c->spec, true, v + n);
    if (c->nmnts > 0) {
        v[n++] = sc_strdup(unshare_bin());
        v[n++] = sc_strdup("--mount");
        v[n++] = sc_strdup("--propagation");
        v[n++] = sc_strdup("private");
        v[n++] = sc_strdup("/bin/sh");
        v[n++] = sc_strdup("-c");
        v[n++] = sc_strdup(mount_script);
        v[n++] = sc_strdup("sidecar-mount");
        for (size_t i = 0; i < c->nmnts; i++) {
            v[n++] = sc_strdup(c->mnts[i].src);
            v[n++] = sc_strdup(c->mnts[i].dst);
            v[n++] = sc_strdup(c->mnts[i].ro ? "ro" : "rw");
        }
        v[n++] = sc_strdup("--");
    }
    n += pod_net_words(c->pod, c->spec, false, v + n);
    for (size_t i = 0; i < ncmd; i++) {
        v[n++] = sc_strdup(cmd[i]);
    }
    return v;
}

static const char *env_lookup(void *arg, const char *name, size_t len)
{
    char **envp = arg;
    for (size_t i = 0; envp && envp[i]; i++) {
        if (strncmp(envp[i], name, len) == 0 && envp[i][len] == '=') {
            return envp[i] + len + 1;
        }
    }
    return NULL;
}

char **pod_exec_argv(struct pod_ctr *c, const struct sc_strv *cmd)
{
    char **words = sc_calloc(cmd->n + 1, sizeof(char *));
    for (size_t i = 0; i < cmd->n; i++) {
        words[i] = sc_strdup(cmd->v[i]);
    }
    char **v = wrap_argv(c, words, cmd->n);
    pod_strv_free(words);
    return v;
}

void pod_cgroup_add(struct pod_ctr *c)
{
    if (!c->cgroup) {
        return;
    }
    char *p = sc_asprintf("%s/cgroup.procs", c->cgroup);
    int fd = open(p, O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        char pid[32];
        int n = snprintf(pid, sizeof(pid), "%d\n", c->pid);
        if (write(fd, pid, (size_t)n) < 0) {
            sc_warn("cannot move the container into its cgroup", SC_LS("cgroup", c->cgroup),
                    SC_LERR(-errno));
        }
        close(fd);
    }
    sc_free(p);
}

/* ---- set-up: volumes, environment, commands ---- */

int pod_mkdirs(const char *path, mode_t mode)
{
    char *p = sc_strdup(path);
    int rc = 0;
    for (char *s = p + 1; *s; s++) {
        if (*s == '/') {
            *s = '\0';
            if (mkdir(p, mode) < 0 && errno != EEXIST) {
                rc = -errno;
            }
            *s = '/';
        }
    }
    if (rc == 0 && mkdir(p, mode) < 0 && errno != EEXIST) {
        rc = -errno;
    }
    sc_free(p);
    return rc;
}

static char *read_file(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return NULL;
    }
    struct sc_buf b;
    sc_buf_init(&b, 1 << 20);
    char tmp[4096];
    ssize_t n;
    while ((n = read(fd, tmp, sizeof(tmp))) > 0) {
        if (sc_buf_append(&b, tmp, (size_t)n) < 0) {
            break;
        }
    }
    close(fd);
    char *s = sc_strndup(b.p ? b.p : "", b.len);
    sc_buf_cleanup(&b);
    return s;
}

/* Copies the regular files of <from> into <to> with <mode>. */
static int copy_dir(const char *from, const char *to, int mode, char **err)
{
    DIR *d = opendir(from);
    if (!d) {
        *err = sc_asprintf("cannot open %s: %s", from, strerror(errno));
        return SC_ECONFIG;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') {
            continue;
        }
        char *src = sc_asprintf("%s/%s", from, e->d_name);
        char *dst = sc_asprintf("%s/%s", to, e->d_name);
        struct stat st;
        if (stat(src, &st) == 0 && S_ISREG(st.st_mode)) {
            char *data = read_file(src);
            int fd = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
            if (fd >= 0 && data) {
                ssize_t w = write(fd, data, strlen(data));
                (void)w;
                fchmod(fd, (mode_t)mode);
            }
            if (fd >= 0) {
                close(fd);
            }
            sc_free(data);
        }
        sc_free(src);
        sc_free(dst);
    }
    closedir(d);
    return 0;
}

static const char *volume_dir(struct pod *pod, const char *name, char **owned)
{
    const struct pod_spec *s = pod->m->spec;
    for (size_t i = 0; i < s->volumes.n; i++) {
        const struct pod_volume *v = (const struct pod_volume *)s->volumes.v + i;
        if (strcmp(v->name, name) == 0) {
            if (v->host_path.set) {
                *owned = NULL;
                return v->host_path.path;
            }
        }
    }
    *owned = sc_asprintf("%s/volumes/%s", pod->dir, name);
    return *owned;
}

int pod_setup_volumes(struct pod *pod, char **err)
{
    const struct pod_spec *s = pod->m->spec;
    for (size_t i = 0; i < s->volumes.n; i++) {
        const struct pod_volume *v = (const struct pod_volume *)s->volumes.v + i;
        if (v->host_path.set) {
            const char *t = v->host_path.type ? v->host_path.type : "";
            if (strcmp(t, "DirectoryOrCreate") == 0) {
                pod_mkdirs(v->host_path.path, 0755);
            } else if (access(v->host_path.path, F_OK) < 0 && *t) {
                *err = sc_asprintf("volume %s: hostPath %s does not exist (type %s)", v->name,
                                   v->host_path.path, t);
                return SC_ECONFIG;
            }
            continue;
        }
        char *dir = sc_asprintf("%s/volumes/%s", pod->dir, v->name);
        pod_mkdirs(dir, 0777);
        chmod(dir, 0777); /* emptyDir is world-writable, as the kubelet makes it */
        if (v->empty_dir.set && v->empty_dir.medium && strcmp(v->empty_dir.medium, "Memory") == 0) {
            uint64_t size = 0;
            if (v->empty_dir.size_limit) {
                pod_parse_memory(v->empty_dir.size_limit, &size);
            }
            char opts[64];
            snprintf(opts, sizeof(opts), size ? "mode=1777,size=%llu" : "mode=1777",
                     (unsigned long long)size);
            if (geteuid() != 0 || mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0) {
                sc_warn("emptyDir medium Memory: cannot mount a tmpfs here; using a directory",
                        SC_LS("volume", v->name));
            } else {
                pod->tmpfs = sc_reallocarray(pod->tmpfs, pod->ntmpfs + 1, sizeof(char *));
                pod->tmpfs[pod->ntmpfs++] = sc_strdup(dir);
            }
        }
        if (v->config_map.set || v->secret.set) {
            const struct pod_config_volume *cv = v->config_map.set ? &v->config_map : &v->secret;
            const char *name = v->config_map.set ? cv->name : cv->secret_name;
            char *src = sc_asprintf("%s/%s", pod->config_dir, name);
            char *e = NULL;
            if (copy_dir(src, dir, (int)cv->default_mode, &e) < 0 && !cv->optional) {
                *err =
                    sc_asprintf("volume %s: %s %s is read from the directory %s (set "
                                "--config-dir): %s",
                                v->name, v->config_map.set ? "configMap" : "secret", name, src, e);
                sc_free(e);
                sc_free(src);
                sc_free(dir);
                return SC_ECONFIG;
            }
            sc_free(e);
            sc_free(src);
        }
        sc_free(dir);
    }
    return 0;
}

struct envl {
    char **v; /* "K=V", NULL-terminated */
    size_t n;
};

static void env_set(struct envl *e, const char *k, const char *val)
{
    size_t kl = strlen(k);
    char *kv = sc_asprintf("%s=%s", k, val);
    for (size_t i = 0; i < e->n; i++) {
        if (strncmp(e->v[i], k, kl) == 0 && e->v[i][kl] == '=') {
            sc_free(e->v[i]);
            e->v[i] = kv;
            return;
        }
    }
    e->v = sc_reallocarray(e->v, e->n + 2, sizeof(char *));
    e->v[e->n++] = kv;
    e->v[e->n] = NULL;
}

static const char *kv_get(const struct sc_kvv *kv, const char *k, size_t len)
{
    for (size_t i = 0; i < kv->n; i++) {
        if (strlen(kv->v[i].key) == len && strncmp(kv->v[i].key, k, len) == 0) {
            return kv->v[i].value;
        }
    }
    return NULL;
}

static const char *field_value(struct pod *pod, const char *fp)
{
    const struct pod_meta *m = pod->m->meta;
    if (strcmp(fp, "metadata.name") == 0) {
        return pod->m->name;
    }
    if (strcmp(fp, "metadata.namespace") == 0) {
        return m->namespace_ ? m->namespace_ : "default";
    }
    if (strcmp(fp, "metadata.uid") == 0) {
        return pod->dir;
    }
    if (strcmp(fp, "spec.nodeName") == 0) {
        return pod->hostname;
    }
    if (strcmp(fp, "spec.serviceAccountName") == 0) {
        return pod->m->spec->service_account_name ? pod->m->spec->service_account_name : "default";
    }
    if (strcmp(fp, "status.hostIP") == 0) {
        return pod_net_host_ip(pod);
    }
    if (strcmp(fp, "status.podIPs") == 0) {
        return pod_net_pod_ips(pod);
    }
    if (strncmp(fp, "status.", 7) == 0) {
        return pod_net_pod_ip(pod);
    }
    bool labels = strncmp(fp, "metadata.labels['", 17) == 0;
    const char *k = fp + (labels ? 17 : 22);
    const char *end = strstr(k, "']");
    if (!end) {
        return "";
    }
    const char *v = kv_get(labels ? &m->labels : &m->annotations, k, (size_t)(end - k));
    return v ? v : "";
}

static bool path_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
}

/* Without root, rewrites every mountPath in <s> (a whole path component: "/data" matches
 * "/data/x" but not "/database") into its volume's directory. Returns a new string. */
static char *rewrite(struct pod_ctr *c, const char *s)
{
    if (geteuid() == 0 || c->spec->mounts.n == 0) {
        return sc_strdup(s);
    }
    struct sc_buf b;
    sc_buf_init(&b, SIZE_MAX / 2);
    for (size_t i = 0; s[i];) {
        const struct pod_mount *best = NULL;
        size_t blen = 0;
        for (size_t k = 0; k < c->spec->mounts.n; k++) {
            const struct pod_mount *m = (const struct pod_mount *)c->spec->mounts.v + k;
            size_t n = strlen(m->mount_path);
            while (n > 1 && m->mount_path[n - 1] == '/') {
                n--;
            }
            if (n > blen && strncmp(s + i, m->mount_path, n) == 0 && !path_char(s[i + n]) &&
                (i == 0 || !path_char(s[i - 1]))) {
                best = m;
                blen = n;
            }
        }
        if (!best) {
            sc_buf_append(&b, s + i, 1);
            i++;
            continue;
        }
        char *own = NULL;
        const char *dir = volume_dir(c->pod, best->name, &own);
        sc_buf_append_cstr(&b, dir);
        if (best->sub_path) {
            sc_buf_appendf(&b, "/%s", best->sub_path);
        }
        sc_free(own);
        i += blen;
    }
    char *out = sc_strndup(b.p ? b.p : "", b.len);
    sc_buf_cleanup(&b);
    return out;
}

int pod_setup_ctr(struct pod *pod, struct pod_ctr *c, char **err)
{
    const struct pod_container *s = c->spec;
    struct envl e = { 0 };
    e.v = sc_calloc(1, sizeof(char *));
    const char *inherit[] = { "PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "TERM", NULL };
    for (size_t i = 0; inherit[i]; i++) {
        const char *v = getenv(inherit[i]);
        if (v) {
            env_set(&e, inherit[i], v);
        }
    }
    if (!getenv("PATH")) {
        env_set(&e, "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    }
    env_set(&e, "HOSTNAME", pod->m->spec->hostname ? pod->m->spec->hostname : pod->m->name);
    env_set(&e, "SIDECAR_POD_DIR", pod->dir);
    int rc = 0;
    for (size_t i = 0; i < s->env_from.n && rc == 0; i++) {
        const struct pod_env_from *f = (const struct pod_env_from *)s->env_from.v + i;
        const struct pod_name_ref *r = f->config_map_ref.set ? &f->config_map_ref : &f->secret_ref;
        char *dir = sc_asprintf("%s/%s", pod->config_dir, r->name);
        DIR *d = opendir(dir);
        char *envfile = sc_asprintf("%s.env", dir);
        char *text = d ? NULL : read_file(envfile);
        sc_free(envfile);
        if (text) {
            /* NAME.env: KEY=VALUE lines; blank lines and # comments skipped */
            struct sc_str rest = sc_str_c(text);
            while (rest.len > 0) {
                struct sc_str line = sc_str_trim(sc_str_split(&rest, '\n'));
                const char *eq = line.len ? memchr(line.p, '=', line.len) : NULL;
                if (line.len == 0 || line.p[0] == '#' || !eq || eq == line.p) {
                    continue;
                }
                struct sc_str key = sc_str_trim(sc_str_n(line.p, (size_t)(eq - line.p)));
                struct sc_str v =
                    sc_str_trim(sc_str_n(eq + 1, (size_t)(line.p + line.len - eq - 1)));
                char *k = sc_asprintf("%s%.*s", f->prefix ? f->prefix : "", SC_STR_FMT(key));
                char *val = sc_strndup(v.p, v.len);
                env_set(&e, k, val);
                sc_free(k);
                sc_free(val);
            }
            sc_free(text);
            sc_free(dir);
            continue;
        }
        if (!d && !r->optional) {
            *err = sc_asprintf("container %s: envFrom %s is read from the directory %s or the "
                               "file %s.env (set --config-dir): %s",
                               s->name, r->name, dir, dir, strerror(errno));
            rc = SC_ECONFIG;
        }
        struct dirent *de;
        while (d && (de = readdir(d))) {
            if (de->d_name[0] == '.') {
                continue;
            }
            char *p = sc_asprintf("%s/%s", dir, de->d_name);
            char *val = read_file(p);
            char *k = sc_asprintf("%s%s", f->prefix ? f->prefix : "", de->d_name);
            if (val) {
                env_set(&e, k, val);
            }
            sc_free(k);
            sc_free(val);
            sc_free(p);
        }
        if (d) {
            closedir(d);
        }
        sc_free(dir);
    }
    for (size_t i = 0; i < s->env.n && rc == 0; i++) {
        const struct pod_env *v = (const struct pod_env *)s->env.v + i;
        const struct pod_env_source *vf = &v->value_from;
        if (vf->field_ref.set) {
            env_set(&e, v->name, field_value(pod, vf->field_ref.field_path));
        } else if (vf->config_map_key_ref.set || vf->secret_key_ref.set) {
            const struct pod_key_ref *kr =
                vf->config_map_key_ref.set ? &vf->config_map_key_ref : &vf->secret_key_ref;
            char *p = sc_asprintf("%s/%s/%s", pod->config_dir, kr->name, kr->key);
            char *val = read_file(p);
            if (val) {
                env_set(&e, v->name, val);
            } else if (!kr->optional) {
                *err = sc_asprintf("container %s: env %s: cannot read %s (set --config-dir)",
                                   s->name, v->name, p);
                rc = SC_ECONFIG;
            }
            sc_free(val);
            sc_free(p);
        } else {
            char *x = pod_expand(v->value ? v->value : "", env_lookup, e.v);
            char *y = rewrite(c, x);
            env_set(&e, v->name, y);
            sc_free(x);
            sc_free(y);
        }
    }
    /* volumes: bind mounts as root, else rewritten paths */
    bool root = geteuid() == 0;
    for (size_t i = 0; i < s->mounts.n && rc == 0; i++) {
        const struct pod_mount *m = (const struct pod_mount *)s->mounts.v + i;
        char *own = NULL;
        const char *dir = volume_dir(pod, m->name, &own);
        char *src = m->sub_path ? sc_asprintf("%s/%s", dir, m->sub_path) : sc_strdup(dir);
        if (m->sub_path) {
            pod_mkdirs(src, 0777);
        }
        sc_free(own);
        if (root) {
            c->mnts = sc_reallocarray(c->mnts, c->nmnts + 1, sizeof(*c->mnts));
            c->mnts[c->nmnts++] = (struct pod_mnt){ src, sc_strdup(m->mount_path), m->read_only };
        } else {
            char name[128] = "SIDECAR_MOUNT_";
            size_t n = strlen(name);
            for (const char *p = m->mount_path + 1; *p && n + 1 < sizeof(name); p++) {
                name[n++] = (*p >= 'a' && *p <= 'z') ? (char)(*p - 32)
                            : ((*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')) ? *p
                                                                                     : '_';
            }
            name[n] = '\0';
            env_set(&e, name, src);
            sc_warn("not root: mountPath is rewritten into the pod directory",
                    SC_LS("container", s->name), SC_LS("mountPath", m->mount_path),
                    SC_LS("path", src), SC_LS("env", name));
            sc_free(src);
        }
    }
    c->envp = e.v;
    if (rc < 0) {
        return rc;
    }
    if (pod_sec_check(pod, s, err) < 0) {
        return SC_ECONFIG;
    }
    /* command and args, expanded against the container's environment */
    size_t n = s->command.n + s->args.n;
    char **words = sc_calloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        const char *w = i < s->command.n ? s->command.v[i] : s->args.v[i - s->command.n];
        char *x = pod_expand(w, env_lookup, c->envp);
        words[i] = rewrite(c, x);
        sc_free(x);
    }
    c->argv = wrap_argv(c, words, n);
    pod_strv_free(words);
    if (s->working_dir) {
        c->cwd = rewrite(c, s->working_dir);
        if (root && c->nmnts == 0) {
            pod_mkdirs(c->cwd, 0755);
        } else if (!root) {
            pod_mkdirs(c->cwd, 0755);
        }
    }
    if (s->image) {
        sc_info("image is not pulled: the command runs on the host", SC_LS("container", s->name),
                SC_LS("image", s->image));
    }
    /* resources.limits through cgroup v2 */
    if (s->resources.set && s->resources.limits.n > 0) {
        if (access("/sys/fs/cgroup/cgroup.controllers", F_OK) < 0 ||
            access("/sys/fs/cgroup", W_OK) < 0) {
            sc_warn("resources.limits not enforced: cgroup v2 is not available or not writable "
                    "here",
                    SC_LS("container", s->name));
        } else {
            char *cg = sc_asprintf("/sys/fs/cgroup/sidecar-pod-%d-%s", (int)getpid(), s->name);
            if (mkdir(cg, 0755) < 0 && errno != EEXIST) {
                sc_warn("resources.limits not enforced: cannot create a cgroup",
                        SC_LS("cgroup", cg), SC_LERR(-errno));
                sc_free(cg);
            } else {
                c->cgroup = cg;
                for (size_t i = 0; i < s->resources.limits.n; i++) {
                    const struct sc_kv *q = &s->resources.limits.v[i];
                    uint64_t v = 0;
                    char val[64];
                    const char *file;
                    if (strcmp(q->key, "cpu") == 0 && pod_parse_cpu(q->value, &v) == 0) {
                        snprintf(val, sizeof(val), "%llu 100000", (unsigned long long)(v * 100));
                        file = "cpu.max";
                    } else if (pod_parse_memory(q->value, &v) == 0) {
                        snprintf(val, sizeof(val), "%llu", (unsigned long long)v);
                        file = "memory.max";
                    } else {
                        continue;
                    }
                    char *p = sc_asprintf("%s/%s", cg, file);
                    int fd = open(p, O_WRONLY | O_CLOEXEC);
                    if (fd < 0 || write(fd, val, strlen(val)) < 0) {
                        sc_warn("resources.limits: cannot set", SC_LS("file", p), SC_LERR(-errno));
                    }
                    if (fd >= 0) {
                        close(fd);
                    }
                    sc_free(p);
                }
            }
        }
    }
    return 0;
}

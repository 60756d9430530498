// SPDX-License-Identifier: Apache-2.0
// Collection: one pass over every source (scrape targets concurrently, the textfile directory,
// the sidecar's own registry), then one merge into an immutable snapshot. A plain http:// target
// (no proxy in the environment) is scraped through net/h1client, gzip-compressed bodies inflated
// here, so a role that scrapes only such targets never loads libcurl; https targets and proxies go
// through the egress client (libcurl), which then decompresses itself. Either way the body is
// parsed as it arrives and never held whole, and max_scrape_bytes bounds the received bytes and,
// separately, the decompressed ones.
// Requests that arrive while a pass runs wait for it, and a finished snapshot is reused for
// cache_ms, so any number of concurrent scrapes of our endpoint cost one scrape of each target.
// A source that fails (timeout, refused, non-200, malformed, too big) contributes no samples and
// sidecar_scrape_up 0, and the reason goes to the log: the output is never partial or broken.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "net/h1client.h"
#include "roles/metrics/metrics.h"

struct source_info {
    char *name;
    bool up;
    double seconds;
    size_t samples;
    bool honor;
    bool no_rules; /* the health families: static labels only, as Prometheus leaves "up" alone */
    const struct metrics_prom_label *lbls; /* the labels added to its samples */
    size_t nlbls;
    const struct metrics_relabel *rules; /* its own metric_relabel_configs, before the global */
    size_t extra; /* free label slots the parser left after each sample's labels */
};

struct scrape {
    struct metrics_collection *c;
    size_t idx; /* of its set */
    struct metrics_target *t;
    struct sc_egress_xfer *xfer;
    struct sc_h1cli_named *h1;
    struct sc_list link; /* in metrics_role.h1_scrapes while <h1> is in flight */
    z_stream *z;         /* a gzip body being inflated (h1 only) */
    bool z_end;          /* the gzip stream ended (more members may follow) */
    int status;          /* the final status, from the head (h1 only) */
    const char *bad;     /* why the body cannot be read (h1 only): an encoding, a broken gzip */
    uint64_t start_ns;
    struct metrics_prom_stream *stream; /* the body is parsed as it arrives and never held whole */
    uint64_t bytes;
    bool toobig;
    bool malformed;
    struct metrics_prom_error perr;
};

struct metrics_collection {
    struct metrics_role *m;
    struct metrics_conf *conf; /* the configuration it started with (a reference) */
    struct sc_list waiters;
    struct metrics_snapshot *snap;
    struct scrape *scrapes;
    struct source_info *info; /* parallel to snap->sets */
    size_t pending;
};

#define SCRAPE_ACCEPT                                                                              \
    "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=1,*/*;q=0.1"

static const struct sc_kv scrape_headers[] = {
    { .key = "Accept", .value = SCRAPE_ACCEPT },
};

/* Adds a source with the global static labels. */
static struct metrics_prom_set *add_set(struct metrics_collection *c, const char *name, bool honor)
{
    struct metrics_snapshot *s = c->snap;
    s->sets = sc_reallocarray(s->sets, s->nsets + 1, sizeof(*s->sets));
    c->info = sc_reallocarray(c->info, s->nsets + 1, sizeof(*c->info));
    metrics_prom_set_init(&s->sets[s->nsets]);
    c->info[s->nsets] = (struct source_info){
        .name = sc_strdup(name), .honor = honor, .lbls = c->conf->lbls, .nlbls = c->conf->nlbls
    };
    return &s->sets[s->nsets++];
}

static void fail_set(struct metrics_collection *c, size_t i)
{
    metrics_prom_set_cleanup(&c->snap->sets[i]);
    metrics_prom_set_init(&c->snap->sets[i]);
    c->info[i].up = false;
    c->info[i].samples = 0;
}

static struct metrics_prom_limits limits_of(const struct metrics_conf *conf)
{
    return (struct metrics_prom_limits){ .max_samples = (size_t)conf->cfg.max_series,
                                         .max_labels = 128 };
}

/* The limits for parsing source <i>, with room left for its static labels so that adding them
 * needs no second labels array. */
static struct metrics_prom_limits source_limits(struct metrics_collection *c, size_t i)
{
    struct metrics_prom_limits lim = limits_of(c->conf);
    lim.extra_labels = c->info[i].nlbls < 64 ? c->info[i].nlbls : 0;
    c->info[i].extra = lim.extra_labels;
    return lim;
}

/* Records the outcome of parsing source <i> (<rc>, <e>); on failure the set is emptied and the
 * reason logged. */
static void parsed(struct metrics_collection *c, size_t i, int rc,
                   const struct metrics_prom_error *e, const char *what)
{
    if (rc) {
        sc_warn("source malformed", SC_LS("source", c->info[i].name), SC_LS("what", what),
                SC_LU("line", e->line), SC_LU("col", e->col), SC_LS("reason", e->msg));
        fail_set(c, i);
        return;
    }
    c->info[i].up = true;
    c->info[i].samples = c->snap->sets[i].nsamples;
}

/* Parses <body> into set <i> at once (the small, in-memory registry). */
static void parse_into(struct metrics_collection *c, size_t i, const char *p, size_t len,
                       enum metrics_prom_format fmt, const char *what)
{
    struct metrics_prom_limits lim = source_limits(c, i);
    struct metrics_prom_error e;
    int rc = metrics_prom_parse(&c->snap->sets[i], p, len, fmt, &lim, &e);
    parsed(c, i, rc, &e, what);
}

static enum metrics_prom_format format_of(struct sc_str ct)
{
    return ct.len >= 28 && sc_str_caseeq(sc_str_n(ct.p, 28), SC_STR("application/openmetrics-text"))
               ? METRICS_PROM_FMT_OPENMETRICS
               : METRICS_PROM_FMT_TEXT;
}

static void scrape_stream(struct scrape *s, enum metrics_prom_format fmt)
{
    struct metrics_collection *c = s->c;
    struct metrics_prom_limits lim = source_limits(c, s->idx);
    s->stream = metrics_prom_stream_new(&c->snap->sets[s->idx], fmt, &lim,
                                        (size_t)c->conf->cfg.max_scrape_bytes);
}

static void finish(struct metrics_collection *c);

/* Parses <len> decoded body bytes. Returns false when reading should stop: over
 * max_scrape_bytes, or malformed. */
static bool scrape_feed(struct scrape *s, const char *p, size_t len)
{
    s->bytes += len;
    if (s->bytes > s->c->conf->cfg.max_scrape_bytes) {
        s->toobig = true;
        return false;
    }
    if (metrics_prom_stream_feed(s->stream, p, len, &s->perr) != 0) {
        s->malformed = true; /* no use reading the rest */
        return false;
    }
    return true;
}

static bool on_body(void *arg, const char *p, size_t len)
{
    struct scrape *s = arg;
    if (!s->stream) {
        /* The headers are complete once the body starts: the format is known. */
        scrape_stream(s, format_of(sc_egress_xfer_header(s->xfer, "Content-Type")));
    }
    return scrape_feed(s, p, len);
}

/* The outcome of a scrape through either client: <error> (with <reason>) when the exchange
 * failed, else <status>; <ctype> tells the format when no body byte came. */
static void scrape_done(struct scrape *s, int error, const char *reason, int status,
                        struct sc_str ctype)
{
    struct metrics_collection *c = s->c;
    c->info[s->idx].seconds = (double)(uv_hrtime() - s->start_ns) / 1e9;
    if (error && !s->toobig && !s->malformed) {
        sc_warn("scrape failed", SC_LS("source", c->info[s->idx].name), SC_LERR(error),
                SC_LS("reason", reason ? reason : ""));
        fail_set(c, s->idx);
    } else if (status != 200) {
        sc_warn("scrape failed", SC_LS("source", c->info[s->idx].name), SC_LI("status", status),
                SC_LS("reason", "HTTP status is not 200"));
        fail_set(c, s->idx);
    } else if (s->toobig) {
        sc_warn("scrape failed", SC_LS("source", c->info[s->idx].name),
                SC_LS("reason", "response over max_scrape_bytes"));
        fail_set(c, s->idx);
    } else if (s->malformed) {
        parsed(c, s->idx, SC_EINVAL, &s->perr, "response");
    } else {
        if (!s->stream) {
            scrape_stream(s, format_of(ctype));
        }
        struct metrics_prom_error e;
        int rc = metrics_prom_stream_end(s->stream, &e);
        parsed(c, s->idx, rc, &e, "response");
    }
    metrics_prom_stream_free(s->stream);
    s->stream = NULL;
    if (s->z) {
        inflateEnd(s->z);
        sc_free(s->z);
        s->z = NULL;
    }
    if (--c->pending == 0) {
        finish(c);
    }
}

static void on_scrape(void *arg, const struct sc_egress_resp *resp)
{
    struct scrape *s = arg;
    s->xfer = NULL;
    scrape_done(s, resp->error, resp->error_msg, resp->status,
                sc_egress_resp_header(resp, "Content-Type"));
}

/* ---- plain http:// targets through net/h1client ---- */

/* The final head: anything but 200 ends the exchange (reported from <status>); the body's format
 * and content coding are known from here on. */
static int on_h1_head(void *arg, const struct sc_http_msg *head)
{
    struct scrape *s = arg;
    s->status = head->status;
    if (head->status != 200) {
        return SC_EHTTP;
    }
    const struct sc_http_header *ce = sc_http1_find(head, SC_STR("Content-Encoding"), NULL);
    struct sc_str coding = ce ? sc_str_trim(ce->value) : SC_STR_NULL;
    if (sc_str_caseeq(coding, SC_STR("gzip")) || sc_str_caseeq(coding, SC_STR("x-gzip"))) {
        s->z = SC_NEW(z_stream);
        if (inflateInit2(s->z, 16 + MAX_WBITS) != Z_OK) { /* gzip framing only */
            sc_free(s->z);
            s->z = NULL;
            s->bad = "cannot start decompressing";
            return SC_EHTTP;
        }
    } else if (coding.len && !sc_str_caseeq(coding, SC_STR("identity"))) {
        s->bad = "unsupported Content-Encoding";
        return SC_EHTTP;
    }
    const struct sc_http_header *ct = sc_http1_find(head, SC_STR("Content-Type"), NULL);
    scrape_stream(s, format_of(ct ? ct->value : SC_STR_NULL));
    return 0;
}

/* Inflates <n> gzip bytes into the parser. Members may follow one another (as gzip -c a b > c
 * writes, and Go's reader accepts); anything else after the end is malformed. */
static int inflate_feed(struct scrape *s, const char *p, size_t n)
{
    char out[16384];
    s->z->next_in = (Bytef *)(uintptr_t)p;
    s->z->avail_in = (uInt)n;
    for (;;) {
        if (s->z_end) {
            if (s->z->avail_in == 0) {
                break;
            }
            inflateReset(s->z); /* the next member */
            s->z_end = false;
        }
        s->z->next_out = (Bytef *)out;
        s->z->avail_out = sizeof(out);
        int zr = inflate(s->z, Z_NO_FLUSH);
        if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR) {
            s->bad = "malformed gzip body";
            return SC_EHTTP;
        }
        size_t got = sizeof(out) - s->z->avail_out;
        if (got && !scrape_feed(s, out, got)) {
            return -ECANCELED;
        }
        s->z_end = zr == Z_STREAM_END;
        /* Done when the input is used up and the output did not fill (a full buffer may leave
         * output pending in zlib), or when nothing moved. */
        if ((s->z->avail_in == 0 && s->z->avail_out > 0) || (zr == Z_BUF_ERROR && got == 0)) {
            break;
        }
    }
    return 0;
}

static int on_h1_body(void *arg, const char *p, size_t n)
{
    struct scrape *s = arg;
    if (s->z) {
        return inflate_feed(s, p, n);
    }
    return scrape_feed(s, p, n) ? 0 : -ECANCELED;
}

static void on_h1_done(void *arg, const struct sc_h1cli_resp *resp)
{
    struct scrape *s = arg;
    s->h1 = NULL;
    sc_list_remove(&s->link);
    int error = resp->error;
    const char *reason = resp->reason;
    if (error == SC_ETOOBIG) {
        s->toobig = true; /* the received bytes passed max_scrape_bytes */
    }
    if (s->bad) {
        error = SC_EHTTP;
        reason = s->bad;
    } else if (!error && s->z && !s->z_end) {
        error = SC_EHTTP;
        reason = "truncated gzip body";
    } else if (s->status && s->status != 200) {
        error = 0; /* the head ended it: reported as the status */
    }
    scrape_done(s, error, reason, s->status, SC_STR_NULL);
}

/* Starts <s> through net/h1client when its URL is plain http:// without a proxy in the
 * environment. Returns false when libcurl must scrape it; otherwise 0 or an error in <*rc>. */
static bool h1_scrape(struct metrics_role *m, struct scrape *s, int *rc)
{
    const struct metrics_target_cfg *tc = s->t->cfg;
    struct sc_h1cli_url u;
    if (!sc_h1cli_url_parse(s->t->url, &u)) {
        return false;
    }
    struct sc_buf auth; /* the Authorization value, zeroed when freed */
    sc_buf_init(&auth, 65536);
    auth.sensitive = true;
    *rc = metrics_auth_header(&auth, tc->bearer_token, tc->basic_user, tc->basic_password);
    const struct sc_http_header h[] = {
        { SC_STR("Host"), sc_str_c(u.authority) },
        { SC_STR("Accept"), SC_STR(SCRAPE_ACCEPT) },
        { SC_STR("Accept-Encoding"), SC_STR("gzip") },
        { SC_STR("Authorization"), sc_buf_str(&auth) },
    };
    struct sc_h1cli_req req = {
        .method = SC_STR("GET"),
        .target = sc_str_c(u.target),
        .headers = h,
        .nheaders = auth.len ? 4 : 3,
        .timeout_ms = tc->timeout_ms,
        .max_body = m->conf->cfg.max_scrape_bytes,
        .sensitive = auth.len > 0,
        .on_head = on_h1_head,
        .on_body = on_h1_body,
        .stream_arg = s,
    };
    if (*rc == 0) {
        *rc = m->finished
                  ? SC_ECLOSED
                  : sc_h1cli_send_host(m->loop, u.host, u.port, &req, on_h1_done, s, &s->h1);
    }
    if (*rc == 0) {
        sc_list_append(&m->h1_scrapes, &s->link);
    }
    sc_buf_cleanup(&auth);
    sc_h1cli_url_free(&u);
    return true;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reads the *.prom files of the textfile directory, in name order, one source each. Files being
 * written are expected under another name and renamed in place; a .prom file that does not end
 * in a newline is taken as partly written and reported like a malformed one. */
static void read_textfiles(struct metrics_collection *c)
{
    static char block[64 * 1024]; /* the loop is single-threaded and this is not reentrant */
    const char *dir = c->conf->cfg.textfile_dir;
    DIR *d = opendir(dir);
    if (!d) {
        sc_warn("textfile directory unreadable", SC_LS("dir", dir), SC_LERR(-errno));
        return;
    }
    char **names = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && n < 4096) {
        size_t l = strlen(de->d_name);
        if (de->d_name[0] == '.' || l < 6 || strcmp(de->d_name + l - 5, ".prom") != 0) {
            continue;
        }
        names = sc_reallocarray(names, n + 1, sizeof(*names));
        names[n++] = sc_strdup(de->d_name);
    }
    closedir(d);
    if (n > 1) {
        qsort(names, n, sizeof(*names), cmp_names);
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t t0 = uv_hrtime();
        char *src = sc_asprintf("textfile:%s", names[i]);
        add_set(c, src, c->conf->cfg.honor_labels);
        size_t idx = c->snap->nsets - 1;
        sc_free(src);
        char *path = sc_asprintf("%s/%s", dir, names[i]);
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        const char *reason = NULL;
        int err = 0;
        int prc = 0;
        struct metrics_prom_error pe = { 0 };
        struct stat st;
        if (fd < 0) {
            err = -errno;
            reason = "cannot open";
        } else if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            reason = "not a regular file";
        } else if ((uint64_t)st.st_size > c->conf->cfg.max_scrape_bytes) {
            reason = "file over max_scrape_bytes";
        } else {
            /* Parsed block by block: the file is never held whole. After a parse error the
             * rest is still read, for the partly-written check below. */
            struct metrics_prom_limits lim = source_limits(c, idx);
            struct metrics_prom_stream *ps =
                metrics_prom_stream_new(&c->snap->sets[idx], METRICS_PROM_FMT_TEXT, &lim,
                                        (size_t)c->conf->cfg.max_scrape_bytes);
            size_t cap = (size_t)st.st_size, len = 0;
            char last = '\n';
            while (len < cap) {
                size_t want = cap - len < sizeof(block) ? cap - len : sizeof(block);
                ssize_t r = read(fd, block, want);
                if (r < 0 && errno == EINTR) {
                    continue;
                }
                if (r < 0) {
                    err = -errno;
                    reason = "read failed";
                    break;
                }
                if (r == 0) {
                    break;
                }
                len += (size_t)r;
                last = block[r - 1];
                if (prc == 0) {
                    prc = metrics_prom_stream_feed(ps, block, (size_t)r, &pe);
                }
            }
            if (!reason && last != '\n') {
                reason = "does not end in a newline (partly written? write to another name and "
                         "rename)";
            }
            if (!reason && prc == 0) {
                prc = metrics_prom_stream_end(ps, &pe);
            }
            metrics_prom_stream_free(ps);
        }
        if (fd >= 0) {
            close(fd);
        }
        if (reason) {
            sc_warn("textfile unusable", SC_LS("file", path), SC_LS("reason", reason),
                    SC_LS("error", err ? sc_strerror(err) : ""));
            fail_set(c, idx);
        } else {
            parsed(c, idx, prc, &pe, path);
        }
        c->info[idx].seconds = (double)(uv_hrtime() - t0) / 1e9;
        sc_free(path);
        sc_free(names[i]);
    }
    sc_free(names);
}

static void read_self(struct metrics_collection *c)
{
    uint64_t t0 = uv_hrtime();
    add_set(c, "sidecar", c->conf->cfg.honor_labels);
    size_t idx = c->snap->nsets - 1;
    struct sc_buf b;
    sc_buf_init(&b, 16u << 20);
    if (sc_metrics_render(sc_app_metrics(c->m->app), &b) == 0) {
        parse_into(c, idx, b.p, b.len, METRICS_PROM_FMT_TEXT, "registry");
    } else {
        fail_set(c, idx);
    }
    sc_buf_cleanup(&b);
    c->info[idx].seconds = (double)(uv_hrtime() - t0) / 1e9;
}

static struct metrics_prom_family *meta_family(struct metrics_prom_set *s, const char *name,
                                               const char *help)
{
    struct metrics_prom_family *f = metrics_prom_family_get(s, sc_str_c(name), METRICS_PROM_GAUGE);
    f->has_type = true;
    f->has_help = true;
    f->help = sc_str_c(help);
    return f;
}

static void meta_sample(struct metrics_prom_set *s, struct metrics_prom_family *f,
                        const char *source, double v)
{
    struct metrics_prom_sample *sm = metrics_prom_sample_add(s, f);
    sm->name = f->name;
    sm->value = v;
    sm->labels = metrics_prom_alloc(s, sizeof(*sm->labels));
    sm->labels[0].name = SC_STR("source");
    sm->labels[0].value = sc_str_c(source);
    sm->nlabels = 1;
}

/* The per-source health families, built last so they describe every other source. */
static void add_meta(struct metrics_collection *c)
{
    size_t nsrc = c->snap->nsets;
    struct metrics_prom_set *s = add_set(c, "meta", false);
    c->info[c->snap->nsets - 1].no_rules = true;
    struct metrics_prom_family *up =
        meta_family(s, "sidecar_scrape_up", "1 when the source was collected and parsed, else 0.");
    struct metrics_prom_family *du = meta_family(s, "sidecar_scrape_duration_seconds",
                                                 "Time the source took to collect and parse.");
    struct metrics_prom_family *sa = meta_family(
        s, "sidecar_scrape_samples", "Samples the source contributed before relabeling.");
    for (size_t i = 0; i < nsrc; i++) {
        const char *name = metrics_prom_strdup(s, sc_str_c(c->info[i].name)).p;
        meta_sample(s, up, name, c->info[i].up ? 1 : 0);
        meta_sample(s, du, name, c->info[i].seconds);
        meta_sample(s, sa, name, (double)c->info[i].samples);
    }
}

/* Adds our static labels: a scraped label of the same name is kept as exported_<name> unless the
 * source honors its labels, in which case the scraped one wins. */
static void add_static(const struct source_info *si, struct metrics_lbls *l, bool honor)
{
    for (size_t i = 0; i < si->nlbls; i++) {
        struct sc_str k = si->lbls[i].name;
        struct sc_str v = si->lbls[i].value;
        struct sc_str have = metrics_lbls_get(l, k);
        if (have.p) {
            if (honor) {
                continue;
            }
            struct sc_str en = k;
            do {
                char *t = sc_asprintf("exported_%.*s", SC_STR_FMT(en));
                en = metrics_prom_strdup(l->arena_set, sc_str_c(t));
                sc_free(t);
            } while (metrics_lbls_get(l, en).p);
            metrics_lbls_set(l, en, have);
        }
        metrics_lbls_set(l, k, v);
    }
}

/* Relabels sample <sm> of a source (static labels, the source's rules, the global rules) and
 * writes the result back into it: into its own labels array when the result fits in <cap> slots
 * (the parser leaves room for the static labels), else into a new one in <out>'s arena. Returns
 * false when the rules drop it or leave it without a valid name. */
static bool relabel_sample(const struct metrics_conf *conf, const struct source_info *info,
                           struct metrics_lbls *l, struct metrics_prom_sample *sm, size_t cap,
                           struct metrics_prom_set *out)
{
    bool rules = !info->no_rules && (info->rules || conf->relabel);
    if (!rules && sm->nlabels + info->nlbls <= cap) {
        /* Static labels only, and room for them: append them unless one clashes with a
         * scraped label (exported_<name> or honor_labels) or a scraped label is reserved (__x,
         * removed): the general path below handles those. */
        bool clash = false;
        for (uint32_t j = 0; j < sm->nlabels && !clash; j++) {
            struct sc_str n = sm->labels[j].name;
            clash = n.len >= 2 && n.p[0] == '_' && n.p[1] == '_';
            for (size_t i = 0; i < info->nlbls && !clash; i++) {
                clash = sc_str_eq(n, info->lbls[i].name);
            }
        }
        if (!clash) {
            for (size_t i = 0; i < info->nlbls; i++) {
                if (info->lbls[i].value.len) { /* an empty value is an absent label */
                    sm->labels[sm->nlabels++] = info->lbls[i];
                }
            }
            return true;
        }
    }
    l->n = 0;
    metrics_lbls_set(l, SC_STR("__name__"), sm->name);
    for (uint32_t j = 0; j < sm->nlabels; j++) {
        metrics_lbls_set(l, sm->labels[j].name, sm->labels[j].value);
    }
    add_static(info, l, info->honor);
    if (!info->no_rules && ((info->rules && !metrics_relabel_apply(info->rules, l)) ||
                            (conf->relabel && !metrics_relabel_apply(conf->relabel, l)))) {
        return false;
    }
    struct sc_str name = metrics_lbls_get(l, SC_STR("__name__"));
    if (!name.p || !metrics_prom_valid_name(name, false)) {
        return false;
    }
    size_t nl = 0;
    for (size_t j = 0; j < l->n; j++) {
        nl += !(l->v[j].name.len >= 2 && l->v[j].name.p[0] == '_' && l->v[j].name.p[1] == '_');
    }
    if (nl > cap) {
        sm->labels = metrics_prom_alloc(out, nl * sizeof(*sm->labels));
    }
    uint32_t k = 0;
    for (size_t j = 0; j < l->n; j++) {
        if (l->v[j].name.len >= 2 && l->v[j].name.p[0] == '_' && l->v[j].name.p[1] == '_') {
            continue; /* __name__ and other reserved labels go after relabeling */
        }
        sm->labels[k++] = l->v[j];
    }
    sm->nlabels = k;
    sm->name = name;
    return true;
}

/* Merges every source into snap->out. A source's samples are rewritten in place (the snapshot
 * owns its sources and nothing else reads them), and the output family shares the source's
 * array when it is the family's first, so a relabeled output costs no second copy of the
 * samples. */
static void merge(struct metrics_collection *c)
{
    struct metrics_role *m = c->m;
    const struct metrics_conf *conf = c->conf;
    const size_t max_series = (size_t)conf->cfg.max_series;
    struct metrics_snapshot *snap = c->snap;
    struct metrics_prom_set *out = &snap->out;
    struct metrics_lbls l = { .arena_set = out };
    size_t total = 0;
    uint64_t dropped = 0;
    for (size_t si = 0; si < snap->nsets; si++) {
        struct metrics_prom_set *s = &snap->sets[si];
        const struct source_info *info = &c->info[si];
        bool plain =
            info->nlbls == 0 && (info->no_rules || (conf->relabel == NULL && !info->rules));
        for (size_t fi = 0; fi < s->nfams; fi++) {
            struct metrics_prom_family *f = s->fams[fi];
            if (f->nsamples == 0) {
                continue;
            }
            struct metrics_prom_family *of = metrics_prom_find(out, f->name);
            if (of && of->type != f->type && of->nsamples) {
                sc_warn("metric family type conflict: dropping the later source's family",
                        SC_LSN("family", f->name.p, f->name.len), SC_LS("source", info->name),
                        SC_LS("type", metrics_prom_type_name(f->type, 0)),
                        SC_LS("kept_type", metrics_prom_type_name(of->type, 0)));
                sc_metrics_counter_inc(m->m_conflicts);
                continue;
            }
            if (!of) {
                of = metrics_prom_family_get(out, f->name, f->type);
            }
            of->type = f->type;
            of->has_type = of->has_type || f->has_type;
            if (!of->has_help && f->has_help) {
                of->has_help = true;
                of->help = f->help;
            }
            if (!of->unit.len) {
                of->unit = f->unit;
            }
            bool fresh = of->nsamples == 0;
            if (plain && fresh && total + f->nsamples <= max_series) {
                /* Nothing to change: the output shares the source's samples. */
                metrics_prom_family_share(out, of, f);
                total += f->nsamples;
                continue;
            }
            /* Kept samples move down in f's own array; those a rule renames into another
             * family are copied there. */
            size_t kept = 0;
            for (size_t k = 0; k < f->nsamples; k++) {
                struct metrics_prom_sample sm = f->samples[k];
                if (total >= max_series) {
                    dropped++;
                    continue;
                }
                if (!plain && !relabel_sample(conf, info, &l, &sm, sm.nlabels + info->extra, out)) {
                    continue;
                }
                total++;
                struct metrics_prom_family *tf = of;
                if (!sc_str_eq(sm.name, f->samples[k].name)) {
                    /* Renamed by a rule: it joins the family of its new name. */
                    tf = metrics_prom_family_get(out, sm.name, METRICS_PROM_UNTYPED);
                }
                if (tf == of) {
                    f->samples[kept++] = sm;
                } else {
                    *metrics_prom_sample_add(out, tf) = sm;
                }
            }
            s->nsamples -= f->nsamples - kept;
            f->nsamples = kept;
            if (kept == 0) {
                continue;
            }
            if (of->nsamples == 0) {
                metrics_prom_family_share(out, of, f);
            } else {
                for (size_t k = 0; k < kept; k++) {
                    *metrics_prom_sample_add(out, of) = f->samples[k];
                }
            }
        }
    }
    if (dropped) {
        sc_warn("series cap reached: samples dropped", SC_LU("dropped", dropped),
                SC_LI("max_series", conf->cfg.max_series));
        sc_metrics_counter_add(m->m_dropped_series, dropped);
    }
    sc_free(l.v);
}

static void on_cache_expired(uv_timer_t *t)
{
    struct metrics_role *m = t->data;
    metrics_snapshot_unref(m->last);
    m->last = NULL;
}

void metrics_collect_start(struct metrics_role *m)
{
    uv_timer_init(m->loop, &m->cache_timer);
    m->cache_timer.data = m;
    m->cache_timer_on = true;
}

void metrics_collect_stop(struct metrics_role *m)
{
    if (m->cache_timer_on) {
        m->cache_timer_on = false;
        uv_close((uv_handle_t *)&m->cache_timer, NULL);
    }
    /* Scrapes still under way end as the egress client ends its own at close: each reports
     * SC_ECLOSED, and a collection with nothing left pending finishes. */
    while (!sc_list_empty(&m->h1_scrapes)) {
        struct scrape *s = sc_list_entry(m->h1_scrapes.next, struct scrape, link);
        sc_list_remove(&s->link);
        sc_h1cli_named_cancel(s->h1);
        s->h1 = NULL;
        scrape_done(s, SC_ECLOSED, "the role is stopping", 0, SC_STR_NULL);
    }
}

static void finish(struct metrics_collection *c)
{
    struct metrics_role *m = c->m;
    const struct metrics_conf *conf = c->conf;
    if (conf->cfg.textfile_dir) {
        read_textfiles(c);
    }
    if (m->statsd) {
        uint64_t t0 = uv_hrtime();
        struct metrics_prom_set *set = add_set(c, "statsd", conf->cfg.honor_labels);
        size_t idx = c->snap->nsets - 1;
        metrics_statsd_collect(m->statsd, set);
        c->info[idx].up = true;
        c->info[idx].samples = set->nsamples;
        c->info[idx].seconds = (double)(uv_hrtime() - t0) / 1e9;
    }
    if (conf->cfg.self_metrics) {
        read_self(c);
    }
    add_meta(c);
    merge(c);
    uv_update_time(m->loop);
    c->snap->done_ms = uv_now(m->loop);
    uv_timeval64_t tv;
    uv_gettimeofday(&tv);
    c->snap->wall_ms = tv.tv_sec * 1000 + tv.tv_usec / 1000;
    sc_metrics_counter_inc(m->m_collections);

    /* The snapshot keeps the configuration its samples borrow labels from. */
    struct metrics_snapshot *snap = c->snap;
    snap->conf = c->conf;
    c->conf = NULL;
    if (m->running == c) {
        /* Still the current configuration: the snapshot answers scrapes for cache_ms, then is
         * released. A collection a reload left behind only answers those that waited for it. */
        metrics_snapshot_unref(m->last);
        m->last = NULL;
        if (conf->cfg.cache_ms > 0 && m->cache_timer_on) {
            m->last = snap;
            metrics_snapshot_ref(snap);
            uv_timer_start(&m->cache_timer, on_cache_expired, conf->cfg.cache_ms, 0);
        }
        m->running = NULL;
    }
    for (size_t i = 0; i < snap->nsets; i++) {
        sc_free(c->info[i].name);
    }
    sc_free(c->info);
    sc_free(c->scrapes);

    /* Callbacks may start another collection (and so link new waiters elsewhere): take the list
     * first. */
    struct sc_list ready;
    sc_list_init(&ready);
    while (!sc_list_empty(&c->waiters)) {
        struct sc_list *n = c->waiters.next;
        sc_list_remove(n);
        sc_list_append(&ready, n);
    }
    sc_free(c);
    while (!sc_list_empty(&ready)) {
        struct metrics_waiter *w = sc_list_entry(ready.next, struct metrics_waiter, link);
        sc_list_remove(&w->link);
        w->cb(w->arg, snap);
    }
    metrics_snapshot_unref(snap);
}

/* Starts <s> through the egress client (libcurl, loaded on first use), which decompresses gzip
 * itself. Returns 0 or an error. */
static int egress_scrape(struct metrics_role *m, struct scrape *s)
{
    const struct metrics_target_cfg *tc = s->t->cfg;
    struct sc_egress_req req = {
        .method = "GET",
        .url = s->t->url,
        .headers = scrape_headers,
        .nheaders = SC_ARRAY_LEN(scrape_headers),
        .accept_encoding = "gzip",
        .timeout_ms = tc->timeout_ms,
        .connect_timeout_ms = tc->timeout_ms < 5000 ? tc->timeout_ms : 5000,
        .max_response = m->conf->cfg.max_scrape_bytes,
        .bearer_token = tc->bearer_token,
        .basic_user = tc->basic_user,
        .basic_password = tc->basic_password,
        .tls = &s->t->tls,
        .on_data = on_body,
    };
    return sc_egress_send(metrics_egress(m), &req, on_scrape, s, &s->xfer);
}

static struct metrics_collection *start_collection(struct metrics_role *m)
{
    /* The cached snapshot is stale: let it go now rather than after the new one is built, so
     * two full snapshots are not held at once (readers still writing it keep their reference). */
    metrics_snapshot_unref(m->last);
    m->last = NULL;
    struct metrics_conf *conf = m->conf;
    struct metrics_collection *c = SC_NEW(struct metrics_collection);
    c->m = m;
    c->conf = conf;
    metrics_conf_ref(conf);
    sc_list_init(&c->waiters);
    c->snap = SC_NEW(struct metrics_snapshot);
    c->snap->refs = 1;
    metrics_prom_set_init(&c->snap->out);
    m->running = c;
    c->scrapes = sc_calloc(conf->ntargets ? conf->ntargets : 1, sizeof(*c->scrapes));
    size_t nscrapes = 0;
    for (size_t i = 0; i < conf->ntargets; i++) {
        struct metrics_target *t = &conf->targets[i];
        if (t->dropped) {
            continue;
        }
        add_set(c, t->source, t->cfg->honor_labels);
        struct source_info *si = &c->info[c->snap->nsets - 1];
        si->lbls = t->lbls;
        si->nlbls = t->nlbls;
        si->rules = t->metric_relabel;
        c->scrapes[nscrapes++] = (struct scrape){ .c = c, .idx = c->snap->nsets - 1, .t = t };
    }
    c->pending = nscrapes + 1;
    for (size_t i = 0; i < nscrapes; i++) {
        struct scrape *s = &c->scrapes[i];
        s->start_ns = uv_hrtime();
        sc_list_init(&s->link);
        int rc = 0;
        if (!h1_scrape(m, s, &rc)) {
            rc = egress_scrape(m, s);
        }
        if (rc) {
            sc_warn("scrape not started", SC_LS("source", s->t->source), SC_LERR(rc));
            fail_set(c, s->idx);
            c->pending--;
        }
    }
    return c;
}

void metrics_collect(struct metrics_role *m, struct metrics_waiter *w, metrics_snapshot_cb cb,
                     void *arg)
{
    w->cb = cb;
    w->arg = arg;
    sc_list_init(&w->link);
    uv_update_time(m->loop);
    if (m->last && m->cfg->cache_ms > 0 && uv_now(m->loop) - m->last->done_ms < m->cfg->cache_ms) {
        struct metrics_snapshot *snap = m->last;
        metrics_snapshot_ref(snap);
        cb(arg, snap);
        metrics_snapshot_unref(snap);
        return;
    }
    if (m->running) {
        sc_list_append(&m->running->waiters, &w->link);
        return;
    }
    struct metrics_collection *c = start_collection(m);
    sc_list_append(&c->waiters, &w->link);
    if (--c->pending == 0) {
        finish(c);
    }
}

void metrics_collect_cancel(struct metrics_waiter *w)
{
    sc_list_remove(&w->link);
}

void metrics_collect_forget(struct metrics_role *m)
{
    metrics_snapshot_unref(m->last);
    m->last = NULL;
    m->running = NULL;
}

void metrics_snapshot_ref(struct metrics_snapshot *snap)
{
    if (snap) {
        snap->refs++;
    }
}

void metrics_snapshot_unref(struct metrics_snapshot *snap)
{
    if (!snap || --snap->refs > 0) {
        return;
    }
    metrics_prom_set_cleanup(&snap->out);
    for (size_t i = 0; i < snap->nsets; i++) {
        metrics_prom_set_cleanup(&snap->sets[i]);
    }
    sc_free(snap->sets);
    metrics_conf_unref(snap->conf);
    bool big = snap->out.nsamples >= 10000;
    sc_free(snap);
#ifdef __GLIBC__
    if (big) {
        /* glibc keeps freed heap pages mapped: give a large snapshot's memory back, so the
         * resident size between scrapes is that of an idle sidecar. */
        malloc_trim(0);
    }
#else
    (void)big;
#endif
}

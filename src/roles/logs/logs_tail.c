// SPDX-License-Identifier: Apache-2.0
// The tail input: glob paths rescanned on a timer and on inotify events (uv_fs_event on each
// pattern's directory), files followed by (device, inode) with a descriptor kept open, so a file
// renamed away is read to its end before it is closed and a deleted file is drained first.
// A size below the read offset means copytruncate: reading restarts at 0. Each file keeps a FIFO of
// marks (sequence, offset): offset O is committed only when every output acknowledged sequence S,
// the highest sequence assigned when O was reached. Reads stop while an output queue is full.
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <glob.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "roles/logs/logs.h"

#define READ_CHUNK 65536
/* What one file may read in one loop turn: about half a millisecond of parsing, so that the
 * outputs' sockets, timers and the admin port are served between turns (a request body goes out
 * a socket buffer per turn; at 1 MiB a turn, a batch's round trip grew by tens of ms). */
#define FILE_BUDGET (256u << 10)

struct mark {
    uint64_t seq, off;
};

struct logs_file {
    struct sc_list node;
    char *path;
    uint64_t dev, ino;
    int fd;
    bool is_stdin;
    bool rotated;
    bool done; /* fd closed, waiting for its marks to be committed */
    bool seen;
    bool skipping;
    bool at_eof;
    bool drain_done;      /* drain: read to drain_end (or closed) */
    uint64_t drain_end;   /* drain: the file's size when the drain began */
    uint64_t read_off;    /* file offset of the end of buf */
    uint64_t emitted_off; /* every line before this offset was handed to the outputs */
    uint64_t committed_off;
    uint64_t head_len, head; /* logs_pos_head of the first head_len bytes (stored with offsets) */
    uint64_t last_data_ms;
    uint64_t rotated_ms;
    struct sc_buf buf; /* bytes after the last complete line */
    struct mark *marks;
    size_t nmarks, mhead, mcap;
    /* multiline / CRI partial aggregation */
    struct sc_buf agg;
    bool agg_active;
    bool agg_truncated;
    uint64_t agg_end_off;
    uint64_t agg_since_ms;
    int64_t agg_ts; /* CRI: the time of the record's first partial */
    char stream[16];
};

/* One watched pattern: the inotify watch of its directory and the glob of its file names. */
struct logs_watch {
    struct sc_list node;
    int wd;
    char *dir;
    char *base;
};

static void stdin_resume(struct logs *lg);
static void scan(struct logs *lg, bool initial);

static uint64_t now_ms(struct logs *lg)
{
    return uv_now(lg->loop);
}

/* Records that the file's lines before emitted_off went out with sequences up to lg->seq. */
static void stamp_mark(struct logs *lg, struct logs_file *f)
{
    if (f->is_stdin) {
        return;
    }
    if (f->nmarks) {
        struct mark *last = &f->marks[(f->mhead + f->nmarks - 1) % f->mcap];
        if (last->off >= f->emitted_off) {
            return;
        }
        if (last->seq == lg->seq) {
            last->off = f->emitted_off;
            return;
        }
    } else if (f->emitted_off == f->committed_off) {
        return;
    }
    if (f->nmarks == f->mcap) {
        size_t ncap = f->mcap ? f->mcap * 2 : 16;
        struct mark *nm = sc_calloc(ncap, sizeof(*nm));
        for (size_t i = 0; i < f->nmarks; i++) {
            nm[i] = f->marks[(f->mhead + i) % f->mcap];
        }
        sc_free(f->marks);
        f->marks = nm;
        f->mcap = ncap;
        f->mhead = 0;
    }
    f->marks[(f->mhead + f->nmarks) % f->mcap] = (struct mark){ lg->seq, f->emitted_off };
    f->nmarks++;
}

static void agg_flush(struct logs *lg, struct logs_file *f)
{
    if (!f->agg_active) {
        return;
    }
    logs_emit(lg, sc_buf_str(&f->agg), f->path, sc_str_c(f->stream),
              f->agg_truncated ? LOGS_REC_TRUNCATED : 0, f->agg_ts);
    f->emitted_off = f->agg_end_off;
    sc_buf_reset(&f->agg);
    f->agg_active = false;
    f->agg_truncated = false;
    f->agg_ts = 0;
}

static void agg_add(struct logs *lg, struct logs_file *f, struct sc_str s, bool sep, bool truncated,
                    uint64_t end_off)
{
    size_t max = lg->cfg->max_line_size;
    if (!f->agg_active) {
        f->agg_active = true;
        f->agg_since_ms = now_ms(lg);
        f->agg_truncated = false;
        sep = false;
    }
    size_t room = max > f->agg.len ? max - f->agg.len : 0;
    size_t need = s.len + (sep ? 1 : 0);
    if (need > room) {
        f->agg_truncated = true;
        need = room;
    }
    if (sep && need > 0) {
        sc_buf_append(&f->agg, "\n", 1);
        need--;
    }
    sc_buf_append(&f->agg, s.p, need < s.len ? need : s.len);
    f->agg_truncated |= truncated;
    f->agg_end_off = end_off;
}

/* One complete line (no newline, no CR) that ends at file offset <end_off>. */
static void on_line(struct logs *lg, struct logs_file *f, struct sc_str line, bool truncated,
                    uint64_t end_off)
{
    const struct logs_cfg *c = lg->cfg;
    sc_metrics_counter_inc(lg->m.lines_read);
    if (c->parser == LOGS_P_CRI) {
        struct sc_str t, stream, msg;
        bool partial = false;
        if (logs_cri_split(line, &t, &stream, &partial, &msg) < 0) {
            agg_flush(lg, f);
            sc_metrics_counter_inc(lg->m.parse_errors);
            logs_emit(lg, line, f->path, SC_STR_NULL,
                      LOGS_REC_PARSE_ERROR | (truncated ? LOGS_REC_TRUNCATED : 0), 0);
            f->emitted_off = end_off;
            return;
        }
        if (!f->agg_active) {
            int64_t ts = 0;
            f->agg_ts = logs_parse_time(t, NULL, &ts) == 0 ? ts : 0;
        }
        size_t sl = stream.len < sizeof(f->stream) - 1 ? stream.len : sizeof(f->stream) - 1;
        memcpy(f->stream, stream.p, sl);
        f->stream[sl] = 0;
        agg_add(lg, f, msg, false, truncated, end_off);
        if (!partial) {
            agg_flush(lg, f);
        }
        return;
    }
    if (lg->ml_start || c->multiline_indent) {
        bool cont;
        if (lg->ml_start) {
            int rc = pcre2_match(lg->ml_start, (PCRE2_SPTR)(line.len ? line.p : ""), line.len, 0, 0,
                                 lg->ml_md, NULL);
            cont = rc < 0 && (f->agg_active);
        } else {
            cont = f->agg_active && logs_is_continuation(line);
        }
        if (!cont) {
            agg_flush(lg, f);
        }
        agg_add(lg, f, line, true, truncated, end_off);
        return;
    }
    logs_emit(lg, line, f->path, SC_STR_NULL, truncated ? LOGS_REC_TRUNCATED : 0, 0);
    f->emitted_off = end_off;
}

static struct sc_str strip_cr(struct sc_str s)
{
    if (s.len && s.p[s.len - 1] == '\r') {
        s.len--;
    }
    return s;
}

/* Splits buf into lines; keeps the partial tail. */
static void process_buf(struct logs *lg, struct logs_file *f)
{
    size_t max = lg->cfg->max_line_size;
    uint64_t base = f->read_off - f->buf.len;
    size_t pos = 0;
    while (pos < f->buf.len) {
        const char *nl = memchr(f->buf.p + pos, '\n', f->buf.len - pos);
        if (!nl) {
            break;
        }
        size_t end = (size_t)(nl - f->buf.p);
        if (f->skipping) {
            f->skipping = false;
            f->emitted_off = base + end + 1;
        } else {
            struct sc_str line = strip_cr(sc_str_n(f->buf.p + pos, end - pos));
            bool trunc = false;
            if (line.len > max) {
                line.len = max;
                trunc = true;
                sc_metrics_counter_inc(lg->m.truncated);
            }
            on_line(lg, f, line, trunc, base + end + 1);
        }
        pos = end + 1;
    }
    sc_buf_consume(&f->buf, pos);
    if (f->buf.len >= max && !f->skipping) {
        /* An over-long line: ship its head now, flagged, and skip to its newline. */
        sc_metrics_counter_inc(lg->m.truncated);
        sc_warn("line over max_line_size truncated", SC_LS("file", f->path),
                SC_LU("max_line_size", max));
        /* Its offset stays at the line's start until the newline is found, so a restart in
         * between reads the whole line again rather than shipping its tail as a line. */
        on_line(lg, f, sc_str_n(f->buf.p, max), true, f->read_off - f->buf.len);
        f->skipping = true;
        sc_buf_reset(&f->buf);
    } else if (f->skipping) {
        sc_buf_reset(&f->buf);
    }
}

/* Hashes the first <len> bytes of <fd> into <*head>; false when the file holds fewer. */
static bool read_head(int fd, uint64_t len, uint64_t *head)
{
    char b[LOGS_POS_HEAD_MAX];
    size_t got = 0;
    while (got < len) {
        ssize_t n = pread(fd, b + got, (size_t)len - got, (off_t)got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        got += (size_t)n;
    }
    *head = logs_pos_head(b, (size_t)len);
    return true;
}

/* Brings the file's head fingerprint up to LOGS_POS_HEAD_MAX bytes as the file grows (files only
 * grow, so a prefix never changes; a truncation resets it). */
static void update_head(struct logs_file *f)
{
    uint64_t want = f->read_off < LOGS_POS_HEAD_MAX ? f->read_off : LOGS_POS_HEAD_MAX;
    if (f->fd >= 0 && f->head_len < want && read_head(f->fd, want, &f->head)) {
        f->head_len = want;
    }
}

/* Notes a file about to be closed, so that a late event about it does not read it again. Its
 * inode number alone does not name it: once the file is deleted the number goes to the next file
 * created (at once on ext4), which may be renamed away before we see it. A deleted file is not
 * noted, and a noted one matches only while its size and ctime are unchanged. */
static void remember_closed(struct logs *lg, const struct logs_file *f)
{
    struct stat st;
    if (f->is_stdin || fstat(f->fd, &st) < 0 || st.st_nlink == 0) {
        return;
    }
    lg->closed[lg->closed_next++ % SC_ARRAY_LEN(lg->closed)] =
        (struct logs_ident){ f->dev, f->ino, (uint64_t)st.st_size, (int64_t)st.st_ctim.tv_sec,
                             (int64_t)st.st_ctim.tv_nsec };
}

static bool closed_already(const struct logs *lg, const struct stat *st)
{
    for (size_t i = 0; i < SC_ARRAY_LEN(lg->closed); i++) {
        const struct logs_ident *c = &lg->closed[i];
        if (c->dev == (uint64_t)st->st_dev && c->ino == (uint64_t)st->st_ino &&
            c->size == (uint64_t)st->st_size && c->ctime_s == (int64_t)st->st_ctim.tv_sec &&
            c->ctime_ns == (int64_t)st->st_ctim.tv_nsec) {
            return true;
        }
    }
    return false;
}

/* Emits what is left of a file that will not grow any more (rotated or deleted, at its end). */
static void finish_file(struct logs *lg, struct logs_file *f)
{
    if (f->buf.len && !f->skipping) {
        struct sc_str line = strip_cr(sc_buf_str(&f->buf));
        on_line(lg, f, line, false, f->read_off);
    }
    sc_buf_reset(&f->buf);
    f->skipping = false;
    agg_flush(lg, f);
    f->emitted_off = f->read_off;
    stamp_mark(lg, f);
    if (f->fd >= 0) {
        update_head(f);
        remember_closed(lg, f);
        close(f->fd);
        f->fd = -1;
        if (f->rotated && lg->nrotated) {
            lg->nrotated--;
        }
    }
    f->done = true;
    if (!f->is_stdin) {
        lg->nfiles--;
        sc_metrics_gauge_set(lg->m.files_watched, (double)lg->nfiles);
    }
    sc_info("file closed", SC_LS("file", f->path), SC_LU("offset", f->read_off));
}

/* Reads up to the budget. Returns true when more data may be waiting. */
static bool read_file(struct logs *lg, struct logs_file *f)
{
    if (f->fd < 0 || f->done) {
        return false;
    }
    struct stat st;
    if (fstat(f->fd, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size < f->read_off) {
        sc_warn("file truncated: reading from the start", SC_LS("file", f->path),
                SC_LU("size", (uint64_t)st.st_size), SC_LU("offset", f->read_off));
        sc_metrics_counter_inc(lg->m.truncations);
        agg_flush(lg, f);
        sc_buf_reset(&f->buf);
        f->skipping = false;
        f->read_off = 0;
        f->emitted_off = 0;
        f->nmarks = 0;
        f->mhead = 0;
        f->committed_off = 0;
        f->head_len = 0;
        lg->db_dirty = true;
    }
    size_t budget = FILE_BUDGET;
    bool more = false;
    while (budget) {
        if (logs_backpressured(lg)) {
            more = false;
            break;
        }
        if (sc_buf_reserve(&f->buf, READ_CHUNK) < 0) {
            break; /* cannot happen: process_buf keeps buf under max_line_size */
        }
        ssize_t n = pread(f->fd, f->buf.p + f->buf.len, READ_CHUNK, (off_t)f->read_off);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            sc_warn("read failed", SC_LS("file", f->path), SC_LS("error", strerror(errno)));
            break;
        }
        if (n == 0) {
            f->at_eof = true;
            break;
        }
        f->at_eof = false;
        f->last_data_ms = now_ms(lg);
        f->buf.len += (size_t)n;
        f->read_off += (uint64_t)n;
        budget = budget > (size_t)n ? budget - (size_t)n : 0;
        process_buf(lg, f);
        stamp_mark(lg, f);
        if (budget == 0) {
            more = true;
        }
    }
    if (f->at_eof && !more) {
        bool deleted = fstat(f->fd, &st) == 0 && st.st_nlink == 0;
        if (deleted || (f->rotated && now_ms(lg) - f->last_data_ms >= lg->cfg->rotate_wait_ms &&
                        now_ms(lg) - f->rotated_ms >= lg->cfg->rotate_wait_ms)) {
            finish_file(lg, f);
        }
    }
    return more;
}

static void on_read_idle(uv_idle_t *h)
{
    struct logs *lg = h->data;
    uv_idle_stop(h);
    if (lg->stopping) {
        logs_drain_step(lg);
        return;
    }
    if (lg->scan_pending) {
        lg->scan_pending = false;
        scan(lg, false);
    }
    logs_tail_read_all(lg);
}

void logs_tail_read_all(struct logs *lg)
{
    if (lg->stopping) {
        return;
    }
    bool more = false;
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &lg->files)
    {
        struct logs_file *f = sc_list_entry(pos, struct logs_file, node);
        if (logs_backpressured(lg)) {
            lg->paused = true;
            return;
        }
        more |= read_file(lg, f);
    }
    if (logs_backpressured(lg)) {
        /* A file read stopped at the limit: the acknowledgement that makes room resumes
         * reading (logs_on_ack). Left unpaused, nothing but the next poll tick would. */
        lg->paused = true;
        logs_tail_commit(lg, false);
        return;
    }
    lg->paused = false;
    stdin_resume(lg);
    if (more) {
        uv_idle_start(&lg->read_idle, on_read_idle);
    }
    logs_tail_commit(lg, false);
}

static struct logs_file *file_new(struct logs *lg, const char *path, int fd, const struct stat *st)
{
    struct logs_file *f = SC_NEW(struct logs_file);
    f->path = sc_strdup(path);
    f->fd = fd;
    f->dev = (uint64_t)st->st_dev;
    f->ino = (uint64_t)st->st_ino;
    sc_buf_init(&f->buf, lg->cfg->max_line_size + READ_CHUNK);
    sc_buf_init(&f->agg, lg->cfg->max_line_size + 1);
    f->last_data_ms = now_ms(lg);
    sc_list_append(&lg->files, &f->node);
    lg->nfiles++;
    sc_metrics_gauge_set(lg->m.files_watched, (double)lg->nfiles);
    return f;
}

static void file_free(struct logs_file *f)
{
    if (f->fd >= 0) {
        close(f->fd);
    }
    sc_list_remove(&f->node);
    sc_buf_cleanup(&f->buf);
    sc_buf_cleanup(&f->agg);
    sc_free(f->marks);
    sc_free(f->path);
    sc_free(f);
}

static struct logs_file *find_file(struct logs *lg, uint64_t dev, uint64_t ino)
{
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &lg->files)
    {
        struct logs_file *f = sc_list_entry(pos, struct logs_file, node);
        if (!f->done && f->dev == dev && f->ino == ino && !f->is_stdin) {
            return f;
        }
    }
    return NULL;
}

/* Returns the stored position of (dev, ino) and forgets it: a stored position applies only to
 * the first file opened with that identity, since inode numbers are reused after deletion. */
static bool take_known(struct logs *lg, uint64_t dev, uint64_t ino, struct logs_pos *out)
{
    for (size_t i = 0; i < lg->nknown; i++) {
        if (lg->known[i].dev == dev && lg->known[i].ino == ino && lg->known[i].path) {
            *out = lg->known[i];
            out->path = NULL;
            sc_free(lg->known[i].path);
            lg->known[i].path = NULL;
            return true;
        }
    }
    return false;
}

/* Opens <path> to follow; <initial> is true during the first scan (read_from applies). */
static struct logs_file *open_file(struct logs *lg, const char *path, bool initial, bool rotated)
{
    if (lg->nfiles >= (size_t)lg->cfg->max_files) {
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return NULL;
    }
    struct logs_file *f = file_new(lg, path, fd, &st);
    uint64_t off = 0, head = 0;
    struct logs_pos known;
    bool resumed = take_known(lg, f->dev, f->ino, &known);
    if (resumed) {
        off = known.offset <= (uint64_t)st.st_size ? known.offset : 0;
        if (off && known.head_len &&
            (!read_head(fd, known.head_len, &head) || head != known.head)) {
            /* Another file under a reused inode number (or rewritten in place). */
            sc_warn("stored position is for another file with this inode number: reading from the "
                    "head",
                    SC_LS("file", path), SC_LU("stored_offset", known.offset));
            off = 0;
            resumed = false;
        }
    } else if (initial && lg->cfg->read_from == 1) {
        off = (uint64_t)st.st_size;
    }
    f->read_off = f->emitted_off = f->committed_off = off;
    f->rotated = rotated;
    if (rotated) {
        f->rotated_ms = now_ms(lg);
        lg->nrotated++;
    }
    lg->db_dirty = true;
    sc_info("file opened", SC_LS("file", f->path), SC_LU("offset", off), SC_LB("resumed", resumed));
    return f;
}

static void bound_rotated(struct logs *lg)
{
    while (lg->nrotated > (size_t)lg->cfg->max_rotated_open) {
        struct sc_list *pos, *tmp;
        struct logs_file *old = NULL;
        sc_list_foreach(pos, tmp, &lg->files)
        {
            struct logs_file *f = sc_list_entry(pos, struct logs_file, node);
            if (f->rotated && f->fd >= 0 && !f->done) {
                old = f;
                break;
            }
        }
        if (!old) {
            break;
        }
        struct stat st;
        uint64_t unread = fstat(old->fd, &st) == 0 && (uint64_t)st.st_size > old->read_off
                              ? (uint64_t)st.st_size - old->read_off
                              : 0;
        sc_metrics_counter_add(lg->m.skipped_bytes, unread);
        sc_warn("too many rotated files open: closing the oldest before its end",
                SC_LS("file", old->path), SC_LI("max_rotated_open", lg->cfg->max_rotated_open),
                SC_LU("bytes_unread", unread));
        finish_file(lg, old);
    }
}

static void scan(struct logs *lg, bool initial)
{
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &lg->files)
    {
        sc_list_entry(pos, struct logs_file, node)->seen = false;
    }
    for (size_t i = 0; i < lg->cfg->paths.n; i++) {
        glob_t g;
        memset(&g, 0, sizeof(g));
        if (glob(lg->cfg->paths.v[i], GLOB_NOSORT, NULL, &g) != 0) {
            globfree(&g);
            continue;
        }
        for (size_t j = 0; j < g.gl_pathc; j++) {
            struct stat st;
            if (stat(g.gl_pathv[j], &st) < 0 || !S_ISREG(st.st_mode)) {
                continue;
            }
            struct logs_file *f = find_file(lg, (uint64_t)st.st_dev, (uint64_t)st.st_ino);
            if (!f) {
                f = open_file(lg, g.gl_pathv[j], initial, false);
            } else if (strcmp(f->path, g.gl_pathv[j]) != 0 && !f->seen) {
                sc_free(f->path);
                f->path = sc_strdup(g.gl_pathv[j]);
            }
            if (f) {
                f->seen = true;
                if (f->rotated) {
                    /* renamed back under a watched name */
                    f->rotated = false;
                    if (lg->nrotated) {
                        lg->nrotated--;
                    }
                }
            }
        }
        globfree(&g);
    }
    sc_list_foreach(pos, tmp, &lg->files)
    {
        struct logs_file *f = sc_list_entry(pos, struct logs_file, node);
        if (!f->seen && !f->rotated && !f->done && !f->is_stdin) {
            f->rotated = true;
            f->rotated_ms = now_ms(lg);
            lg->nrotated++;
            sc_metrics_counter_inc(lg->m.rotations);
            sc_info("file rotated or removed: reading it to its end", SC_LS("file", f->path));
        }
    }
    bound_rotated(lg);
}

static void on_scan_timer(uv_timer_t *t)
{
    struct logs *lg = t->data;
    scan(lg, false);
    logs_tail_read_all(lg);
}

static void on_poll_timer(uv_timer_t *t)
{
    logs_tail_read_all(t->data);
}

/* Follows <dir>/<name> at once, if it is a regular file not followed yet. <rotated>: it was
 * renamed away from a watched name before we saw it under that name. */
static void follow_now(struct logs *lg, const char *dir, const char *name, bool rotated)
{
    char path[4096];
    struct stat st;
    int n = snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= sizeof(path) || stat(path, &st) < 0 || !S_ISREG(st.st_mode) ||
        find_file(lg, (uint64_t)st.st_dev, (uint64_t)st.st_ino)) {
        return;
    }
    if (rotated && closed_already(lg, &st)) {
        return; /* read to its end and closed already: the event came late */
    }
    if (rotated) {
        sc_info("file renamed away before it was followed: reading it", SC_LS("file", path));
    }
    if (open_file(lg, path, false, rotated) && rotated) {
        bound_rotated(lg);
    }
}

/* Handles one inotify event. A new file under a watched name is opened at once (not at the next
 * scan), and a watched name renamed to an unwatched one in the same directory (IN_MOVED_FROM and
 * IN_MOVED_TO share a cookie) is followed under its new name when we did not follow it yet:
 * either way a file created and rotated away faster than a scan is not missed. */
static void on_inotify_event(struct logs *lg, const struct inotify_event *ev)
{
    if (ev->mask & IN_Q_OVERFLOW) {
        lg->scan_pending = true;
        return;
    }
    if (!(ev->mask & (IN_CREATE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE)) || ev->len == 0) {
        return;
    }
    /* Coalesced: a burst of events costs one glob pass, on the next loop iteration. */
    lg->scan_pending = true;
    const char *dir = NULL;
    bool match = false;
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &lg->watches)
    {
        struct logs_watch *w = sc_list_entry(pos, struct logs_watch, node);
        if (w->wd == ev->wd) {
            dir = w->dir;
            match |= fnmatch(w->base, ev->name, FNM_PERIOD) == 0;
        }
    }
    if (!dir) {
        return;
    }
    if (ev->mask & IN_MOVED_FROM) {
        if (match) {
            lg->moved_cookie[lg->moved_next++ % SC_ARRAY_LEN(lg->moved_cookie)] = ev->cookie;
        }
        return;
    }
    bool renamed_away = false;
    if (!match && (ev->mask & IN_MOVED_TO) && ev->cookie) {
        for (size_t i = 0; i < SC_ARRAY_LEN(lg->moved_cookie); i++) {
            renamed_away |= lg->moved_cookie[i] == ev->cookie;
        }
    }
    if ((ev->mask & (IN_CREATE | IN_MOVED_TO)) && (match || renamed_away)) {
        follow_now(lg, dir, ev->name, renamed_away);
    }
}

static void on_inotify(uv_poll_t *h, int status, int events)
{
    struct logs *lg = h->data;
    (void)events;
    if (status < 0 || lg->stopping) {
        return;
    }
    char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = read(lg->inotify_fd, buf, sizeof(buf));
        if (n <= 0) {
            break; /* EAGAIN: drained */
        }
        for (char *p = buf; p + sizeof(struct inotify_event) <= buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)(void *)p;
            on_inotify_event(lg, ev);
            p += sizeof(struct inotify_event) + ev->len;
        }
    }
    if (!uv_is_active((uv_handle_t *)&lg->read_idle)) {
        uv_idle_start(&lg->read_idle, on_read_idle);
    }
}

static void on_ml_timer(uv_timer_t *t)
{
    logs_tail_flush_multiline(t->data, false);
}

void logs_tail_flush_multiline(struct logs *lg, bool all)
{
    struct sc_list *pos, *tmp;
    uint64_t now = now_ms(lg);
    sc_list_foreach(pos, tmp, &lg->files)
    {
        struct logs_file *f = sc_list_entry(pos, struct logs_file, node);
        if (f->agg_active && lg->cfg->parser != LOGS_P_CRI &&
            (all || now - f->agg_since_ms >= lg->cfg->multiline_timeout_ms)) {
            agg_flush(lg, f);
            stamp_mark(lg, f);
        }
    }
}

static void on_handle_closed(uv_handle_t *h)
{
    struct logs *l = h->data;
    if (h->type == UV_POLL && l->inotify_fd >= 0) {
        close(l->inotify_fd);
        l->inotify_fd = -1;
    }
}

static void watches_free(struct logs *lg)
{
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &lg->watches)
    {
        struct logs_watch *w = sc_list_entry(pos, struct logs_watch, node);
        sc_list_remove(&w->node);
        if (lg->inotify_fd >= 0 && w->wd >= 0) {
            inotify_rm_watch(lg->inotify_fd, w->wd); /* fails harmlessly when shared */
        }
        sc_free(w->dir);
        sc_free(w->base);
        sc_free(w);
    }
}

/* Watches the directory of <pattern> when it has no glob characters (else polling only). */
static void add_watch(struct logs *lg, const char *pattern)
{
    const char *slash = strrchr(pattern, '/');
    char *dir = slash ? sc_strndup(pattern, (size_t)(slash - pattern)) : sc_strdup(".");
    if (slash && !dir[0]) {
        sc_free(dir);
        dir = sc_strdup("/");
    }
    if (lg->inotify_fd < 0 || strpbrk(dir, "*?[") != NULL) {
        goto out;
    }
    int wd = inotify_add_watch(lg->inotify_fd, dir,
                               IN_CREATE | IN_MOVED_FROM | IN_MOVED_TO | IN_MODIFY | IN_DELETE |
                                   IN_ONLYDIR);
    if (wd < 0) {
        sc_warn("inotify unavailable for directory: polling only", SC_LS("dir", dir),
                SC_LS("error", strerror(errno)));
        goto out;
    }
    struct logs_watch *w = SC_NEW(struct logs_watch);
    w->wd = wd;
    w->dir = dir;
    dir = NULL; /* the watch owns it */
    w->base = sc_strdup(slash ? slash + 1 : pattern);
    sc_list_append(&lg->watches, &w->node);
out:
    sc_free(dir);
}

static void watch_paths(struct logs *lg)
{
    watches_free(lg);
    for (size_t i = 0; i < lg->cfg->paths.n; i++) {
        add_watch(lg, lg->cfg->paths.v[i]);
    }
}

static void on_stdin_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    static char slab[READ_CHUNK];
    (void)h;
    (void)hint;
    *buf = uv_buf_init(slab, sizeof(slab));
}

static void stdin_stop(struct logs *lg)
{
    if (lg->stdin_open) {
        lg->stdin_open = false;
        uv_read_stop((uv_stream_t *)&lg->stdin_pipe);
        uv_close((uv_handle_t *)&lg->stdin_pipe, on_handle_closed);
    }
}

static void on_stdin_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct logs *lg = s->data;
    struct logs_file *f = lg->stdin_file;
    if (n < 0) {
        if (n != UV_EOF) {
            sc_warn("stdin read failed", SC_LERR((int)n));
        }
        finish_file(lg, f);
        lg->stdin_file = NULL; /* freed by the next commit */
        stdin_stop(lg);
        if (lg->cfg->paths.n == 0) {
            sc_info("end of stdin: draining");
            sc_app_drain(lg->app);
        }
        return;
    }
    if (n == 0) {
        return;
    }
    sc_buf_append(&f->buf, buf->base, (size_t)n);
    f->read_off += (uint64_t)n;
    process_buf(lg, f);
    if (logs_backpressured(lg)) {
        uv_read_stop(s);
        lg->paused = true;
    }
}

/* Resumes stdin after backpressure. */
static void stdin_resume(struct logs *lg)
{
    if (lg->stdin_open && !logs_backpressured(lg)) {
        uv_read_start((uv_stream_t *)&lg->stdin_pipe, on_stdin_alloc, on_stdin_read);
    }
}

static int stdin_start(struct logs *lg, char **err)
{
    int rc = uv_pipe_init(lg->loop, &lg->stdin_pipe, 0);
    if (rc == 0) {
        lg->stdin_pipe.data = lg;
        rc = uv_pipe_open(&lg->stdin_pipe, 0);
        lg->stdin_open = true;
    }
    if (rc == 0) {
        rc = uv_read_start((uv_stream_t *)&lg->stdin_pipe, on_stdin_alloc, on_stdin_read);
    }
    if (rc < 0) {
        stdin_stop(lg);
        *err = sc_asprintf("stdin: %s (a pipe is expected)", uv_strerror(rc));
        return rc;
    }
    struct logs_file *f = SC_NEW(struct logs_file);
    f->path = sc_strdup("-");
    f->fd = -1;
    f->is_stdin = true;
    sc_buf_init(&f->buf, lg->cfg->max_line_size + READ_CHUNK);
    sc_buf_init(&f->agg, lg->cfg->max_line_size + 1);
    sc_list_append(&lg->files, &f->node);
    lg->stdin_file = f;
    return 0;
}

int logs_tail_start(struct logs *lg, char **err)
{
    const struct logs_cfg *c = lg->cfg;
    if (c->db) {
        int rc = logs_pos_load(c->db, &lg->known, &lg->nknown, err);
        if (rc < 0) {
            return rc;
        }
    }
    uv_timer_init(lg->loop, &lg->poll_timer);
    uv_timer_init(lg->loop, &lg->scan_timer);
    uv_timer_init(lg->loop, &lg->commit_timer);
    uv_timer_init(lg->loop, &lg->ml_timer);
    uv_idle_init(lg->loop, &lg->read_idle);
    lg->poll_timer.data = lg->scan_timer.data = lg->commit_timer.data = lg->ml_timer.data =
        lg->read_idle.data = lg;

    /* Files from the positions database that moved away from the watched names (rotated while we
     * were down) are finished first, so nothing written before the restart is lost. */
    for (size_t i = 0; i < lg->nknown; i++) {
        struct stat st;
        const struct logs_pos *k = &lg->known[i];
        if (!k->path || stat(k->path, &st) < 0 || (uint64_t)st.st_dev != k->dev ||
            (uint64_t)st.st_ino != k->ino) {
            continue;
        }
        bool matched = false;
        for (size_t j = 0; j < c->paths.n && !matched; j++) {
            glob_t g;
            memset(&g, 0, sizeof(g));
            if (glob(c->paths.v[j], GLOB_NOSORT, NULL, &g) == 0) {
                for (size_t m = 0; m < g.gl_pathc; m++) {
                    if (strcmp(g.gl_pathv[m], k->path) == 0) {
                        matched = true;
                        break;
                    }
                }
            }
            globfree(&g);
        }
        if (!matched && !find_file(lg, k->dev, k->ino)) {
            open_file(lg, k->path, true, true);
        }
    }
    scan(lg, true);
    if (c->stdin_input) {
        int rc = stdin_start(lg, err);
        if (rc < 0) {
            return rc;
        }
    }
    lg->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (lg->inotify_fd < 0) {
        sc_warn("inotify unavailable: polling only", SC_LS("error", strerror(errno)));
    } else if (uv_poll_init(lg->loop, &lg->inotify_poll, lg->inotify_fd) == 0) {
        lg->inotify_poll.data = lg;
        uv_poll_start(&lg->inotify_poll, UV_READABLE, on_inotify);
    } else {
        close(lg->inotify_fd);
        lg->inotify_fd = -1;
    }
    watch_paths(lg);
    uv_timer_start(&lg->scan_timer, on_scan_timer, c->refresh_interval_ms, c->refresh_interval_ms);
    uv_timer_start(&lg->poll_timer, on_poll_timer, c->poll_interval_ms, c->poll_interval_ms);
    if (lg->ml_start || c->multiline_indent) {
        uint64_t iv = c->multiline_timeout_ms / 2 ? c->multiline_timeout_ms / 2 : 1;
        uv_timer_start(&lg->ml_timer, on_ml_timer, iv, iv);
    }
    uv_idle_start(&lg->read_idle, on_read_idle);
    return 0;
}

void logs_tail_reconfigure(struct logs *lg)
{
    const struct logs_cfg *c = lg->cfg;
    if (lg->stopping) {
        return;
    }
    uv_timer_start(&lg->scan_timer, on_scan_timer, c->refresh_interval_ms, c->refresh_interval_ms);
    uv_timer_start(&lg->poll_timer, on_poll_timer, c->poll_interval_ms, c->poll_interval_ms);
    uv_timer_stop(&lg->ml_timer);
    if (lg->ml_start || c->multiline_indent) {
        uint64_t iv = c->multiline_timeout_ms / 2 ? c->multiline_timeout_ms / 2 : 1;
        uv_timer_start(&lg->ml_timer, on_ml_timer, iv, iv);
    }
    watch_paths(lg);
    scan(lg, false);
    logs_tail_read_all(lg);
}

void logs_tail_stop(struct logs *lg)
{
    uv_timer_stop(&lg->poll_timer);
    uv_timer_stop(&lg->scan_timer);
    uv_timer_stop(&lg->ml_timer);
    uv_idle_stop(&lg->read_idle);
    struct sc_list *pos, *tmp;
    watches_free(lg);
    if (lg->inotify_fd >= 0 && !uv_is_closing((uv_handle_t *)&lg->inotify_poll)) {
        uv_poll_stop(&lg->inotify_poll);
        uv_close((uv_handle_t *)&lg->inotify_poll, on_handle_closed);
    }
    stdin_stop(lg);
    /* Files created since the last scan are part of what the drain reads; each file is read up
     * to its size now (what is written later waits for the next run). */
    scan(lg, false);
    sc_list_foreach(pos, tmp, &lg->files)
    {
        struct logs_file *f = sc_list_entry(pos, struct logs_file, node);
        struct stat st;
        f->drain_end = f->read_off;
        if (f->fd >= 0 && fstat(f->fd, &st) == 0 && (uint64_t)st.st_size > f->read_off) {
            f->drain_end = (uint64_t)st.st_size;
        }
    }
}

/* Ships what a file holds after its last newline and any pending multiline or CRI partial group:
 * at the end of a drain the file is not going to be read again by this process. */
static void flush_partial(struct logs *lg, struct logs_file *f)
{
    if (f->done) {
        return;
    }
    if (f->buf.len && !f->skipping) {
        struct sc_str line = strip_cr(sc_buf_str(&f->buf));
        on_line(lg, f, line, false, f->read_off);
        sc_buf_reset(&f->buf);
    }
    agg_flush(lg, f);
    stamp_mark(lg, f);
}

bool logs_tail_drain(struct logs *lg)
{
    if (lg->drain_read) {
        return true;
    }
    bool pending = false;
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &lg->files)
    {
        struct logs_file *f = sc_list_entry(pos, struct logs_file, node);
        if (f->done || f->drain_done || f->is_stdin) {
            continue;
        }
        if (logs_backpressured(lg)) {
            return false; /* an acknowledgement resumes the drain */
        }
        read_file(lg, f);
        if (f->done || f->fd < 0 || f->at_eof || f->read_off >= f->drain_end) {
            f->drain_done = true;
        } else {
            pending = true;
        }
    }
    if (pending) {
        uv_idle_start(&lg->read_idle, on_read_idle);
        return false;
    }
    sc_list_foreach(pos, tmp, &lg->files)
    {
        flush_partial(lg, sc_list_entry(pos, struct logs_file, node));
    }
    lg->drain_read = true;
    return true;
}

void logs_tail_init(struct logs *lg)
{
    sc_list_init(&lg->files);
    sc_list_init(&lg->watches);
    lg->inotify_fd = -1;
}

void logs_tail_unpause(struct logs *lg)
{
    lg->paused = false;
    logs_tail_resume(lg);
}

void logs_tail_resume(struct logs *lg)
{
    if (!lg->stopped && !uv_is_closing((uv_handle_t *)&lg->read_idle)) {
        uv_idle_start(&lg->read_idle, on_read_idle);
    }
}

uint64_t logs_tail_unread(struct logs *lg)
{
    uint64_t n = 0;
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &lg->files)
    {
        struct logs_file *f = sc_list_entry(pos, struct logs_file, node);
        if (!f->done && !f->is_stdin) {
            n += f->drain_end > f->emitted_off ? f->drain_end - f->emitted_off : 0;
        }
    }
    return n;
}

static void on_commit_timer(uv_timer_t *t)
{
    logs_tail_commit(t->data, true);
}

/* Advances committed offsets from the marks and writes the database when it changed. */
void logs_tail_commit(struct logs *lg, bool force)
{
    uint64_t acked = UINT64_MAX;
    for (size_t i = 0; i < lg->nouts; i++) {
        if (lg->outs[i]->ack.acked < acked) {
            acked = lg->outs[i]->ack.acked;
        }
    }
    if (lg->nouts == 0) {
        acked = lg->seq;
    }
    lg->committed_seq = acked;
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &lg->files)
    {
        struct logs_file *f = sc_list_entry(pos, struct logs_file, node);
        while (f->nmarks && f->marks[f->mhead].seq <= acked) {
            if (f->marks[f->mhead].off != f->committed_off) {
                f->committed_off = f->marks[f->mhead].off;
                lg->db_dirty = true;
            }
            f->mhead = (f->mhead + 1) % f->mcap;
            f->nmarks--;
        }
        if (f->done && f->nmarks == 0) {
            lg->db_dirty = true;
            file_free(f);
        }
    }
    if (!lg->db_dirty || !lg->cfg->db) {
        return;
    }
    uint64_t now = now_ms(lg);
    if (!force && lg->cfg->commit_interval_ms &&
        now - lg->last_commit_ms < lg->cfg->commit_interval_ms) {
        if (!uv_is_active((uv_handle_t *)&lg->commit_timer)) {
            uv_timer_start(&lg->commit_timer, on_commit_timer,
                           lg->cfg->commit_interval_ms - (now - lg->last_commit_ms), 0);
        }
        return;
    }
    size_t n = 0;
    struct logs_pos *v = sc_calloc(lg->nfiles + lg->nknown + 1 + 64, sizeof(*v));
    size_t cap = lg->nfiles + lg->nknown + 1 + 64;
    sc_list_foreach(pos, tmp, &lg->files)
    {
        struct logs_file *f = sc_list_entry(pos, struct logs_file, node);
        if (f->is_stdin) {
            continue;
        }
        if (n == cap) {
            cap *= 2;
            v = sc_reallocarray(v, cap, sizeof(*v));
        }
        char *path = NULL;
        if (f->fd >= 0) {
            /* The file's current name, so a file renamed away is found again after a restart. */
            char link[64], target[4096];
            snprintf(link, sizeof(link), "/proc/self/fd/%d", f->fd);
            ssize_t l = readlink(link, target, sizeof(target) - 1);
            if (l > 0 && target[0] == '/') {
                target[l] = 0;
                if (!strstr(target, " (deleted)")) {
                    path = sc_strdup(target);
                }
            }
        }
        update_head(f);
        v[n++] = (struct logs_pos){ f->dev,      f->ino,  f->committed_off,
                                    f->head_len, f->head, path ? path : sc_strdup(f->path) };
    }
    int rc = logs_pos_save(lg->cfg->db, v, n);
    logs_pos_free(v, n);
    if (rc < 0) {
        sc_error("cannot write the positions database", SC_LS("path", lg->cfg->db), SC_LERR(rc));
        return;
    }
    lg->db_dirty = false;
    lg->last_commit_ms = now;
}

void logs_tail_close(struct logs *lg)
{
    struct sc_list *pos, *tmp;
    sc_list_foreach(pos, tmp, &lg->files)
    {
        file_free(sc_list_entry(pos, struct logs_file, node));
    }
    lg->nfiles = 0;
    watches_free(lg);
    if (lg->inotify_fd >= 0 && !uv_is_closing((uv_handle_t *)&lg->inotify_poll)) {
        uv_poll_stop(&lg->inotify_poll);
        uv_close((uv_handle_t *)&lg->inotify_poll, on_handle_closed);
    }
    uv_handle_t *hs[] = { (uv_handle_t *)&lg->poll_timer, (uv_handle_t *)&lg->scan_timer,
                          (uv_handle_t *)&lg->commit_timer, (uv_handle_t *)&lg->ml_timer,
                          (uv_handle_t *)&lg->read_idle };
    for (size_t i = 0; i < SC_ARRAY_LEN(hs); i++) {
        if (hs[i]->loop && !uv_is_closing(hs[i])) {
            uv_close(hs[i], on_handle_closed);
        }
    }
}

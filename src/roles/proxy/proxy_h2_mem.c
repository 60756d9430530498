// SPDX-License-Identifier: Apache-2.0
// nghttp2's memory on a worker. A worker's HTTP/2 sessions (client connections and upstream
// connections) allocate several small blocks per request (the stream, the frame's header list,
// the outbound item) and free them when it ends. With hundreds of streams in flight, glibc's
// per-thread cache (seven blocks of a size) overflows and most of these went through its bins,
// a few hundred instructions each. Blocks up to 1 KiB are kept instead on the worker's free
// lists, one per 64-byte size class, bounded in count and in bytes; larger ones, and everything
// past the bounds, go to malloc. Only the worker's thread uses its lists (sessions never move
// between workers). Sanitized builds pass everything to malloc, so ASan still sees how nghttp2
// uses its memory.
//
// Large blocks are nghttp2's frame buffer (16 KiB and a few bytes per session, one chunk of its
// outbound buffer chain, allocated with the session and written from its start), and rarely big
// header blocks. A frame buffer is only written as far as the largest frame sent: with small
// heads and bodies that is its first page. malloc hands out memory that other blocks wrote
// before, so each session's buffer used to be resident whole: 12 KiB of pages per connection
// that held nothing. A fresh large block has the pages past its first given back to the kernel
// (madvise MADV_DONTNEED: they read as zero and are backed again only when written), so a
// session costs the pages its frames use.
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "net/nghttp2.h"

#include "core/alloc.h"
#include "roles/proxy/proxy_conn.h"
#include "roles/proxy/proxy_h2.h"

#if defined(__SANITIZE_ADDRESS__)
#define H2MEM_CACHE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define H2MEM_CACHE 0
#endif
#endif
#ifndef H2MEM_CACHE
#define H2MEM_CACHE 1
#endif

#define STEP 64
#define CLASSES 16 /* blocks of up to 1 KiB, their header included */
#define LARGE UINT32_MAX
/* Kept at most: per class, and in all. */
#define PER_CLASS 1024
#define MAX_BYTES (1024 * 1024)
/* Blocks from this size on have their untouched pages left unbacked (see above). */
#define LAZY_MIN 16384

/* In front of every block: its size class (LARGE: malloc's own), 16 bytes to keep alignment. */
struct blk {
    uint32_t cls;
    uint32_t pad[3];
};

struct free_blk {
    struct free_blk *next;
};

struct proxy_h2_mem {
    nghttp2_mem mem;
    struct free_blk *free[CLASSES];
    uint32_t n[CLASSES];
    size_t bytes;
};

/* Gives back the whole pages of fresh block <b> (<total> bytes) past its first page. */
static void unback(struct blk *b, size_t total)
{
    static size_t page;
    if (!page) {
        long ps = sysconf(_SC_PAGESIZE);
        page = ps > 0 ? (size_t)ps : 4096;
    }
    uintptr_t lo = ((uintptr_t)b + page) & ~(uintptr_t)(page - 1);
    uintptr_t hi = ((uintptr_t)b + total) & ~(uintptr_t)(page - 1);
    if (hi > lo) {
        (void)madvise((void *)lo, hi - lo, MADV_DONTNEED); /* advice: nothing to do if refused */
    }
}

/* A block of <size> bytes; <lazy>: its contents may be anything (not calloc's zeroes), so a
 * large one may leave pages unbacked. */
static void *take(size_t size, bool lazy, void *ud)
{
    struct proxy_h2_mem *m = ud;
    size_t total = size + sizeof(struct blk);
    uint32_t cls = LARGE;
    if (H2MEM_CACHE && total <= STEP * CLASSES) {
        cls = (uint32_t)((total - 1) / STEP);
        struct free_blk *f = m->free[cls];
        if (f) {
            m->free[cls] = f->next;
            m->n[cls]--;
            m->bytes -= (cls + 1) * STEP;
            struct blk *b = (struct blk *)(void *)f;
            b->cls = cls;
            return b + 1;
        }
        total = (cls + 1) * STEP;
    }
    struct blk *b = sc_malloc(total);
    b->cls = cls;
    if (H2MEM_CACHE && lazy && total >= LAZY_MIN) {
        unback(b, total);
    }
    return b + 1;
}

static void *mem_malloc(size_t size, void *ud)
{
    return take(size, true, ud);
}

static void mem_free(void *p, void *ud)
{
    struct proxy_h2_mem *m = ud;
    if (!p) {
        return;
    }
    struct blk *b = (struct blk *)p - 1;
    uint32_t cls = b->cls;
    size_t size = (cls + 1) * (size_t)STEP;
    if (cls != LARGE && m->n[cls] < PER_CLASS && m->bytes + size <= MAX_BYTES) {
        struct free_blk *f = (struct free_blk *)(void *)b;
        f->next = m->free[cls];
        m->free[cls] = f;
        m->n[cls]++;
        m->bytes += size;
        return;
    }
    sc_free(b);
}

static void *mem_calloc(size_t nmemb, size_t size, void *ud)
{
    if (size && nmemb > SIZE_MAX / size) {
        return NULL;
    }
    void *p = take(nmemb * size, false, ud);
    memset(p, 0, nmemb * size);
    return p;
}

static void *mem_realloc(void *p, size_t size, void *ud)
{
    if (!p) {
        return mem_malloc(size, ud);
    }
    struct blk *b = (struct blk *)p - 1;
    if (b->cls == LARGE) {
        b = sc_realloc(b, size + sizeof(struct blk));
        return b + 1;
    }
    size_t have = (b->cls + 1) * (size_t)STEP - sizeof(struct blk);
    if (size <= have) {
        return p;
    }
    void *q = mem_malloc(size, ud);
    memcpy(q, p, have);
    mem_free(p, ud);
    return q;
}

nghttp2_mem *proxy_h2_mem(struct proxy_worker *w)
{
    struct proxy_h2_mem *m = w->h2mem;
    if (m) {
        return &m->mem;
    }
    m = w->h2mem = SC_NEW(struct proxy_h2_mem);
    m->mem = (nghttp2_mem){
        .mem_user_data = m,
        .malloc = mem_malloc,
        .free = mem_free,
        .calloc = mem_calloc,
        .realloc = mem_realloc,
    };
    return &m->mem;
}

void proxy_h2_mem_free(struct proxy_worker *w)
{
    struct proxy_h2_mem *m = w->h2mem;
    if (!m) {
        return;
    }
    for (size_t i = 0; i < CLASSES; i++) {
        while (m->free[i]) {
            struct free_blk *f = m->free[i];
            m->free[i] = f->next;
            sc_free(f);
        }
    }
    sc_free(m);
    w->h2mem = NULL;
}

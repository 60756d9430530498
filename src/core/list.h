// SPDX-License-Identifier: Apache-2.0
// Intrusive doubly linked lists: the node lives inside the element, so linking never allocates.
// A head is a node whose next/prev point to itself when the list is empty.
#ifndef SC_CORE_LIST_H
#define SC_CORE_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct sc_list {
    struct sc_list *next;
    struct sc_list *prev;
};

static inline void sc_list_init(struct sc_list *h)
{
    h->next = h;
    h->prev = h;
}

static inline bool sc_list_empty(const struct sc_list *h)
{
    return h->next == h;
}

/* Links <n> before <at>: with <at> a head, appends to the list. */
static inline void sc_list_insert_before(struct sc_list *at, struct sc_list *n)
{
    n->prev = at->prev;
    n->next = at;
    at->prev->next = n;
    at->prev = n;
}

static inline void sc_list_append(struct sc_list *h, struct sc_list *n)
{
    sc_list_insert_before(h, n);
}

static inline void sc_list_prepend(struct sc_list *h, struct sc_list *n)
{
    sc_list_insert_before(h->next, n);
}

/* Unlinks <n> and leaves it pointing at itself, so removing twice is harmless. */
static inline void sc_list_remove(struct sc_list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->next = n;
    n->prev = n;
}

/* Returns true when <n> (initialised or removed) is not on any list. */
static inline bool sc_list_unlinked(const struct sc_list *n)
{
    return n->next == n;
}

#define sc_list_entry(node, type, member) ((type *)((char *)(node)-offsetof(type, member)))

/* Iterates <pos> (a struct sc_list *) over <head>; <tmp> makes removing <pos> safe. */
#define sc_list_foreach(pos, tmp, head)                                                            \
    for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head);                               \
         (pos) = (tmp), (tmp) = (pos)->next)

#endif

// SPDX-License-Identifier: Apache-2.0
// Cumulative acknowledgement of an output's units: a ring of open units in sequence order; the
// acknowledged sequence moves over the contiguous prefix of done units. See logs_ack.h.
#include "roles/logs/logs_ack.h"

#include <string.h>

#include "core/alloc.h"

void logs_ack_init(struct logs_ack *a)
{
    memset(a, 0, sizeof(*a));
}

void logs_ack_cleanup(struct logs_ack *a)
{
    sc_free(a->ring);
    memset(a, 0, sizeof(*a));
}

static struct logs_ack_unit *unit(const struct logs_ack *a, size_t i)
{
    return &a->ring[(a->head + i) % a->cap];
}

uint64_t logs_ack_open(struct logs_ack *a)
{
    if (a->n == a->cap) {
        /* Grows with the output's queue, which buffer_limit bounds. */
        size_t cap = a->cap ? a->cap * 2 : 16;
        struct logs_ack_unit *v = sc_calloc(cap, sizeof(*v));
        for (size_t i = 0; i < a->n; i++) {
            v[i] = *unit(a, i);
        }
        sc_free(a->ring);
        a->ring = v;
        a->cap = cap;
        a->head = 0;
    }
    *unit(a, a->n) = (struct logs_ack_unit){ .end = a->last, .done = false };
    a->n++;
    return a->first_id + a->n - 1;
}

void logs_ack_extend(struct logs_ack *a, uint64_t seq)
{
    if (seq > a->last) {
        a->last = seq;
    }
    if (a->n) {
        unit(a, a->n - 1)->end = a->last;
    }
}

void logs_ack_skip(struct logs_ack *a, uint64_t seq)
{
    if (seq > a->last) {
        a->last = seq;
    }
    if (a->n) {
        unit(a, a->n - 1)->end = a->last;
    } else {
        a->acked = a->last;
    }
}

bool logs_ack_done(struct logs_ack *a, uint64_t id)
{
    if (id < a->first_id || id - a->first_id >= a->n) {
        return false; /* not open: acknowledged twice, or never opened */
    }
    unit(a, (size_t)(id - a->first_id))->done = true;
    bool moved = false;
    while (a->n && unit(a, 0)->done) {
        if (unit(a, 0)->end > a->acked) {
            a->acked = unit(a, 0)->end;
            moved = true;
        }
        a->head = (a->head + 1) % a->cap;
        a->n--;
        a->first_id++;
    }
    if (a->n == 0 && a->last > a->acked) {
        /* Records skipped after the last unit was extended: nothing holds them back. */
        a->acked = a->last;
        moved = true;
    }
    return moved;
}

size_t logs_ack_open_units(const struct logs_ack *a)
{
    return a->n;
}

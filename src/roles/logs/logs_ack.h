// SPDX-License-Identifier: Apache-2.0
// The at-least-once invariant of one output, in one place: records get increasing sequence
// numbers; the output groups them into units (batches) in sequence order and may deliver units in
// any order (several in flight, retries); the acknowledged sequence only ever covers a contiguous
// prefix of delivered (or durably spooled) units, so positions committed from it never pass a
// record that could still be lost. A record that is not shipped (it cannot be encoded) belongs to
// the newest open unit, or is acknowledged at once when none is open.
#ifndef SC_ROLES_LOGS_ACK_H
#define SC_ROLES_LOGS_ACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct logs_ack {
    uint64_t acked;    /* every record with a sequence <= acked is delivered or durable */
    uint64_t last;     /* highest sequence noted */
    uint64_t first_id; /* id of the oldest open unit (ring[head]) */
    struct logs_ack_unit {
        uint64_t end; /* highest sequence of the unit */
        bool done;
    } * ring;
    size_t head, n, cap;
};

void logs_ack_init(struct logs_ack *a);
void logs_ack_cleanup(struct logs_ack *a);
/* Opens a unit after every open one; returns its id. It covers nothing until extended. */
uint64_t logs_ack_open(struct logs_ack *a);
/* Record <seq> joins the newest open unit (which must exist). */
void logs_ack_extend(struct logs_ack *a, uint64_t seq);
/* Record <seq> is not shipped: it is acknowledged with the newest open unit, or now. */
void logs_ack_skip(struct logs_ack *a, uint64_t seq);
/* Unit <id> is delivered (or durable). Returns true when the acknowledged sequence advanced. */
bool logs_ack_done(struct logs_ack *a, uint64_t id);
/* Open units (not yet covered by the acknowledged sequence). */
size_t logs_ack_open_units(const struct logs_ack *a);

#endif

// SPDX-License-Identifier: Apache-2.0
// A spin lock for sections shorter than a futex call: a few loads and stores between workers (a
// rate limiter's bucket, the span queue). An uncontended pthread mutex costs more than such a
// section; this costs one atomic exchange and one store. A waiter yields its CPU after a few
// rounds, so a holder that lost its CPU gets it back. Never hold one across a call that may
// block or take long.
#ifndef SC_CORE_SPIN_H
#define SC_CORE_SPIN_H

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>

static inline void sc_spin_lock(atomic_bool *l)
{
    while (atomic_exchange_explicit(l, true, memory_order_acquire)) {
        for (unsigned i = 0; atomic_load_explicit(l, memory_order_relaxed); i++) {
            if (i >= 100) {
                sched_yield();
                i = 0;
            }
        }
    }
}

static inline void sc_spin_unlock(atomic_bool *l)
{
    atomic_store_explicit(l, false, memory_order_release);
}

#endif

// SPDX-License-Identifier: Apache-2.0
// Metrics registry: counters, gauges and histograms with labels, rendered in the Prometheus text
// exposition format 0.0.4. Updating a series is lock-free (atomics), so worker threads share one
// registry; creating a series takes the family's lock and is meant for set-up time: hot paths look
// a series up once and keep the pointer. Every family has a cap on its number of series; past it
// sc_metrics_get() returns NULL (updates on NULL are no-ops) and the overflow is counted in
// sidecar_metrics_series_dropped_total, so a label a peer controls cannot grow memory without
// bound.
#ifndef SC_CORE_METRICS_H
#define SC_CORE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

enum sc_metric_type { SC_METRIC_COUNTER, SC_METRIC_GAUGE, SC_METRIC_HISTOGRAM };

struct sc_metrics;
struct sc_metric_family;
struct sc_metric;

/* Returns a new empty registry. The default series cap per family is 10,000. */
struct sc_metrics *sc_metrics_new(void);

/* Frees the registry, its families and series; series pointers become invalid. NULL-safe. */
void sc_metrics_free(struct sc_metrics *r);

/* Registers a family (or returns the existing one of the same name, type and labels; a clash of
 * type or labels aborts, being a programming error). <name> and <help> are copied. <labels> is a
 * NULL-terminated array of label names (NULL for none). For histograms, <buckets> holds <nbuckets>
 * increasing upper bounds without +Inf (NULL: the default latency buckets, in seconds). */
struct sc_metric_family *sc_metrics_family(struct sc_metrics *r, enum sc_metric_type type,
                                           const char *name, const char *help,
                                           const char *const *labels, const double *buckets,
                                           size_t nbuckets);

/* Returns the series of <f> with label <values> (as many as the family has labels, in order;
 * copied), creating it at zero. Returns NULL when the family's series cap is reached. */
struct sc_metric *sc_metrics_get(struct sc_metric_family *f, const char *const *values);

/* Removes the series with label <values> from <f> (for endpoints and sources that went away): it
 * no longer renders. Its memory stays allocated until the registry is freed, but serves the next
 * new series of <f>: the caller stops updating through its pointer once it removed the series
 * (an update that races the removal is harmless, one much later counts for another series). */
void sc_metrics_remove(struct sc_metric_family *f, const char *const *values);

/* Shorthand for a label-less family and its single series. */
struct sc_metric *sc_metrics_counter(struct sc_metrics *r, const char *name, const char *help);
struct sc_metric *sc_metrics_gauge(struct sc_metrics *r, const char *name, const char *help);

/* Updates. All are NULL-safe and thread-safe. Counters only go up. */
void sc_metrics_counter_add(struct sc_metric *m, uint64_t n);
static inline void sc_metrics_counter_inc(struct sc_metric *m)
{
    sc_metrics_counter_add(m, 1);
}
void sc_metrics_gauge_set(struct sc_metric *m, double v);
void sc_metrics_gauge_add(struct sc_metric *m, double delta);
void sc_metrics_histogram_observe(struct sc_metric *m, double v);

/* Reads a counter or gauge value (tests, admin). 0 for NULL. */
double sc_metrics_value(const struct sc_metric *m);

/* Called at the start of each render, to refresh gauges computed on demand. */
typedef void (*sc_metrics_collect_cb)(struct sc_metrics *r, void *arg);

/* Adds <cb> to the callbacks run by each render, in order of registration. */
void sc_metrics_on_collect(struct sc_metrics *r, sc_metrics_collect_cb cb, void *arg);

/* Registers the standard process_* metrics (resident memory, virtual memory, CPU seconds, open
 * fds, max fds, start time), refreshed from /proc at each render. */
void sc_metrics_add_process(struct sc_metrics *r);

/* Appends the Prometheus text format 0.0.4 of every family with at least one series to <out>, in
 * registration order. Returns 0 or SC_ETOOBIG when <out>'s cap was reached. */
int sc_metrics_render(struct sc_metrics *r, struct sc_buf *out);

#endif

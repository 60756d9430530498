// SPDX-License-Identifier: Apache-2.0
// The exposition writer of the metrics role: a metrics_prom_set rendered as text 0.0.4 or
// OpenMetrics, in one go or a piece at a time (metrics_prom_render_some, for a scrape streamed out
// under a cap), with the values and escapes of core/prom.c. Invariant: whatever it writes,
// metrics_prom_parse reads back to the same samples in the same format.
#include "roles/metrics/prom.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/prom.h"

static int render_sample(const struct metrics_prom_sample *sm, enum metrics_prom_format fmt,
                         struct sc_buf *out)
{
    /* The common case in one reservation: name and labels (escapes at most double a value)
     * written straight into the buffer. Near the cap, the piecewise path below decides. */
    size_t need = sm->name.len + 2;
    for (uint32_t i = 0; i < sm->nlabels; i++) {
        need += sm->labels[i].name.len + 4 + 2 * sm->labels[i].value.len;
    }
    if (!sm->has_ts && sc_buf_reserve(out, need + 48) == 0) {
        char *d = out->p + out->len;
        memcpy(d, sm->name.p, sm->name.len);
        d += sm->name.len;
        if (sm->nlabels) {
            *d++ = '{';
            for (uint32_t i = 0; i < sm->nlabels; i++) {
                if (i) {
                    *d++ = ',';
                }
                memcpy(d, sm->labels[i].name.p, sm->labels[i].name.len);
                d += sm->labels[i].name.len;
                *d++ = '=';
                *d++ = '"';
                d = sc_prom_escape_to(d, sm->labels[i].value.p, sm->labels[i].value.len,
                                      SC_PROM_ESC_QUOTE);
                *d++ = '"';
            }
            *d++ = '}';
        }
        *d++ = ' ';
        out->len = (size_t)(d - out->p);
        int rc = sc_prom_value(out, sm->value); /* at most SC_PROM_VALUE_MAX bytes: reserved */
        rc |= sc_buf_append(out, "\n", 1);
        return rc ? SC_ETOOBIG : 0;
    }
    int rc = sc_buf_append_str(out, sm->name);
    if (sm->nlabels) {
        rc |= sc_buf_append(out, "{", 1);
        for (uint32_t i = 0; i < sm->nlabels; i++) {
            if (i) {
                rc |= sc_buf_append(out, ",", 1);
            }
            rc |= sc_buf_append_str(out, sm->labels[i].name);
            rc |= sc_buf_append(out, "=\"", 2);
            rc |= sc_prom_escape(out, sm->labels[i].value.p, sm->labels[i].value.len,
                                 SC_PROM_ESC_QUOTE);
            rc |= sc_buf_append(out, "\"", 1);
        }
        rc |= sc_buf_append(out, "}", 1);
    }
    rc |= sc_buf_append(out, " ", 1);
    rc |= sc_prom_value(out, sm->value);
    if (sm->has_ts) {
        if (fmt == METRICS_PROM_FMT_OPENMETRICS) {
            uint64_t a = sm->ts_ms < 0 ? (uint64_t)0 - (uint64_t)sm->ts_ms : (uint64_t)sm->ts_ms;
            rc |= sc_buf_appendf(out, " %s%llu.%03u", sm->ts_ms < 0 ? "-" : "",
                                 (unsigned long long)(a / 1000), (unsigned)(a % 1000));
        } else {
            rc |= sc_buf_appendf(out, " %lld", (long long)sm->ts_ms);
        }
    }
    rc |= sc_buf_append(out, "\n", 1);
    return rc ? SC_ETOOBIG : 0;
}

static bool ends_with(struct sc_str s, const char *suffix)
{
    size_t n = strlen(suffix);
    return s.len >= n && memcmp(s.p + s.len - n, suffix, n) == 0;
}

/* Appends <f>'s metadata lines; sets <*skip_created> when its _created samples are left out. */
static int render_meta(const struct metrics_prom_family *f, enum metrics_prom_format fmt,
                       struct sc_buf *out, bool *skip_created_out)
{
    bool om = fmt == METRICS_PROM_FMT_OPENMETRICS;
    struct sc_str mname = f->name;
    const char *msuffix = ""; /* appended to the name in metadata lines */
    enum metrics_prom_type t = f->type;
    bool meta = true;
    bool skip_created = false;
    if (om) {
        if (t == METRICS_PROM_COUNTER) {
            /* An OpenMetrics counter "x" has samples x_total; a 0.0.4 counter is named x_total. */
            struct sc_str base = mname;
            if (ends_with(mname, "_total")) {
                base.len -= 6;
            }
            bool all_total = base.len > 0;
            for (size_t i = 0; i < f->nsamples && all_total; i++) {
                all_total = metrics_prom_has_suffix(f->samples[i].name, base, "_total") ||
                            metrics_prom_has_suffix(f->samples[i].name, base, "_created");
            }
            if (all_total) {
                mname = base;
            } else {
                t = METRICS_PROM_UNTYPED;
            }
        }
    } else {
        switch (t) {
        case METRICS_PROM_COUNTER: {
            /* A family from OpenMetrics is "x" with samples x_total (and x_created, dropped). */
            bool plain = true, total = true;
            for (size_t i = 0; i < f->nsamples; i++) {
                struct sc_str n = f->samples[i].name;
                if (metrics_prom_has_suffix(n, f->name, "_created")) {
                    continue;
                }
                plain = plain && sc_str_eq(n, f->name);
                total = total && metrics_prom_has_suffix(n, f->name, "_total");
            }
            if (!plain && total) {
                msuffix = "_total";
            } else if (!plain) {
                meta = false;
            }
            skip_created = true;
            break;
        }
        case METRICS_PROM_HISTOGRAM:
        case METRICS_PROM_SUMMARY:
            skip_created = true;
            break;
        case METRICS_PROM_GAUGEHISTOGRAM:
        case METRICS_PROM_INFO:
        case METRICS_PROM_STATESET:
            meta = false;
            break;
        default:
            break;
        }
    }
    int rc = 0;
    if (meta && f->has_help) {
        rc |= sc_buf_appendf(out, "# HELP %.*s%s ", SC_STR_FMT(mname), msuffix);
        rc |= sc_prom_escape(out, f->help.p, f->help.len, om ? SC_PROM_ESC_QUOTE : 0);
        rc |= sc_buf_append(out, "\n", 1);
    }
    if (meta && (f->has_type || t != f->type)) {
        rc |= sc_buf_appendf(out, "# TYPE %.*s%s %s\n", SC_STR_FMT(mname), msuffix,
                             metrics_prom_type_name(t, fmt));
    }
    if (om && meta && f->unit.len && mname.len > f->unit.len + 1 &&
        mname.p[mname.len - f->unit.len - 1] == '_' &&
        memcmp(mname.p + mname.len - f->unit.len, f->unit.p, f->unit.len) == 0) {
        rc |= sc_buf_appendf(out, "# UNIT %.*s %.*s\n", SC_STR_FMT(mname), SC_STR_FMT(f->unit));
    }
    *skip_created_out = skip_created;
    return rc ? SC_ETOOBIG : 0;
}

int metrics_prom_render_family(const struct metrics_prom_family *f, enum metrics_prom_format fmt,
                               struct sc_buf *out)
{
    bool skip_created;
    if (render_meta(f, fmt, out, &skip_created)) {
        return SC_ETOOBIG;
    }
    for (size_t i = 0; i < f->nsamples; i++) {
        const struct metrics_prom_sample *sm = &f->samples[i];
        if (skip_created && metrics_prom_has_suffix(sm->name, f->name, "_created")) {
            continue;
        }
        if (render_sample(sm, fmt, out)) {
            return SC_ETOOBIG;
        }
    }
    return 0;
}

int metrics_prom_render_some(const struct metrics_prom_set *s, enum metrics_prom_format fmt,
                             struct metrics_prom_render_state *st, struct sc_buf *out, size_t chunk)
{
    while (st->fam < s->nfams) {
        const struct metrics_prom_family *f = s->fams[st->fam];
        if (f->nsamples == 0) {
            st->fam++;
            continue;
        }
        if (!st->in_family) {
            if (render_meta(f, fmt, out, &st->skip_created)) {
                return SC_ETOOBIG;
            }
            st->in_family = true;
            st->sample = 0;
        }
        while (st->sample < f->nsamples) {
            if (out->len >= chunk) {
                return 0;
            }
            const struct metrics_prom_sample *sm = &f->samples[st->sample++];
            if (st->skip_created && metrics_prom_has_suffix(sm->name, f->name, "_created")) {
                continue;
            }
            if (render_sample(sm, fmt, out)) {
                return SC_ETOOBIG;
            }
        }
        st->in_family = false;
        st->fam++;
    }
    if (fmt == METRICS_PROM_FMT_OPENMETRICS && !st->eof) {
        if (sc_buf_append(out, "# EOF\n", 6)) {
            return SC_ETOOBIG;
        }
        st->eof = true;
    }
    return 1;
}

size_t metrics_prom_render_estimate(const struct metrics_prom_set *s)
{
    size_t n = 64;
    for (size_t i = 0; i < s->nfams; i++) {
        const struct metrics_prom_family *f = s->fams[i];
        n += 2 * f->name.len + f->help.len + 40;
        for (size_t k = 0; k < f->nsamples; k++) {
            const struct metrics_prom_sample *sm = &f->samples[k];
            n += sm->name.len + 48; /* braces, value, timestamp, newline */
            for (uint32_t j = 0; j < sm->nlabels; j++) {
                n += sm->labels[j].name.len + sm->labels[j].value.len + 4;
            }
        }
    }
    return n + n / 32; /* room for a few escapes */
}

int metrics_prom_render(const struct metrics_prom_set *s, enum metrics_prom_format fmt,
                        struct sc_buf *out)
{
    for (size_t i = 0; i < s->nfams; i++) {
        if (s->fams[i]->nsamples == 0) {
            continue;
        }
        int rc = metrics_prom_render_family(s->fams[i], fmt, out);
        if (rc) {
            return rc;
        }
    }
    if (fmt == METRICS_PROM_FMT_OPENMETRICS) {
        return sc_buf_append(out, "# EOF\n", 6);
    }
    return 0;
}

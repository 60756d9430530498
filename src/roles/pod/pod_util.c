// SPDX-License-Identifier: Apache-2.0
// Pure helpers of the pod runner (see pod.h): restart backoff arithmetic, Kubernetes' $(VAR)
// expansion, CRI log line formatting and resource quantities. No I/O and no loop, so the unit
// tests cover them exactly; every function is total over its input.
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "roles/pod/pod.h"

uint64_t pod_backoff_ms(uint64_t base, uint64_t max, unsigned restarts)
{
    uint64_t d = base;
    for (unsigned i = 0; i < restarts && d < max; i++) {
        d = d > UINT64_MAX / 2 ? UINT64_MAX : d * 2;
    }
    return d > max ? max : d;
}

static bool is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
}

char *pod_expand(const char *s, pod_lookup_cb lookup, void *arg)
{
    struct sc_buf b;
    sc_buf_init(&b, SIZE_MAX / 2);
    for (size_t i = 0; s[i];) {
        if (s[i] == '$' && s[i + 1] == '$') {
            sc_buf_append(&b, "$", 1);
            i += 2;
            continue;
        }
        if (s[i] == '$' && s[i + 1] == '(') {
            size_t j = i + 2;
            while (s[j] && is_name_char(s[j])) {
                j++;
            }
            if (s[j] == ')' && j > i + 2) {
                const char *v = lookup ? lookup(arg, s + i + 2, j - i - 2) : NULL;
                if (v) {
                    sc_buf_append_cstr(&b, v);
                } else {
                    sc_buf_append(&b, s + i, j + 1 - i);
                }
                i = j + 1;
                continue;
            }
        }
        sc_buf_append(&b, s + i, 1);
        i++;
    }
    char *out = sc_strndup(b.p ? b.p : "", b.len);
    sc_buf_cleanup(&b);
    return out;
}

int pod_cri_line(struct sc_buf *out, int64_t sec, long nsec, const char *stream, bool partial,
                 const char *msg, size_t len)
{
    struct tm tm;
    time_t t = (time_t)sec;
    char ts[40];
    if (!gmtime_r(&t, &tm) || strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
        return SC_EINVAL;
    }
    size_t keep = out->len;
    if (sc_buf_appendf(out, "%s.%09ldZ %s %s ", ts, nsec, stream, partial ? "P" : "F") < 0 ||
        sc_buf_append(out, msg, len) < 0 || sc_buf_append(out, "\n", 1) < 0) {
        out->len = keep;
        return SC_ETOOBIG;
    }
    return 0;
}

/* Parses a non-negative decimal number with an optional fraction; <*end> is what follows. */
static int parse_decimal(const char *s, double *v, const char **end)
{
    if (!((s[0] >= '0' && s[0] <= '9') || (s[0] == '.' && s[1] >= '0' && s[1] <= '9'))) {
        return -EINVAL;
    }
    char *e = NULL;
    errno = 0;
    double d = strtod(s, &e);
    if (errno || !isfinite(d) || d < 0 || e == s) {
        return -EINVAL;
    }
    /* strtod also accepts exponents and hex; quantities here are plain decimals */
    for (const char *p = s; p < e; p++) {
        if (!((*p >= '0' && *p <= '9') || *p == '.')) {
            return -EINVAL;
        }
    }
    *v = d;
    *end = e;
    return 0;
}

/* ceil() for the non-negative values parse_decimal returns, without libm: a release build that
 * calls ceil maps libm into every role (about 270 KiB of resident memory) for these two lines. */
static double ceil_nonneg(double v)
{
    if (v >= 9.0e18) {
        return v; /* past 2^53 every double is an integer */
    }
    uint64_t i = (uint64_t)v;
    return (double)i < v ? (double)(i + 1) : (double)i;
}

int pod_parse_cpu(const char *s, uint64_t *millis)
{
    double v;
    const char *e;
    if (!s || parse_decimal(s, &v, &e) < 0) {
        return -EINVAL;
    }
    if (strcmp(e, "m") == 0) {
        *millis = (uint64_t)ceil_nonneg(v);
    } else if (*e == '\0') {
        *millis = (uint64_t)ceil_nonneg(v * 1000);
    } else {
        return -EINVAL;
    }
    return 0;
}

int pod_parse_memory(const char *s, uint64_t *bytes)
{
    static const struct {
        const char *suffix;
        double mult;
    } units[] = {
        { "", 1 },
        { "k", 1e3 },
        { "M", 1e6 },
        { "G", 1e9 },
        { "T", 1e12 },
        { "Ki", 1024.0 },
        { "Mi", 1024.0 * 1024 },
        { "Gi", 1024.0 * 1024 * 1024 },
        { "Ti", 1024.0 * 1024 * 1024 * 1024 },
    };
    double v;
    const char *e;
    if (!s || parse_decimal(s, &v, &e) < 0) {
        return -EINVAL;
    }
    for (size_t i = 0; i < SC_ARRAY_LEN(units); i++) {
        if (strcmp(e, units[i].suffix) == 0) {
            double b = ceil_nonneg(v * units[i].mult);
            if (b >= 1.8e19) {
                return -EINVAL;
            }
            *bytes = (uint64_t)b;
            return 0;
        }
    }
    return -EINVAL;
}

bool pod_is_true(const char *s)
{
    return s && strcasecmp(s, "true") == 0;
}

bool pod_is_false(const char *s)
{
    return s && strcasecmp(s, "false") == 0;
}

/* Linux capabilities by number (linux/capability.h), as setpriv(1) names them. */
static const char *const cap_names[] = {
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
};

int pod_cap_number(const char *name)
{
    if (!name) {
        return -1;
    }
    if (strncasecmp(name, "CAP_", 4) == 0) {
        name += 4;
    }
    for (size_t i = 0; i < sizeof(cap_names) / sizeof(cap_names[0]); i++) {
        if (strcasecmp(cap_names[i], name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

const char *pod_cap_name(int n)
{
    return n >= 0 && (size_t)n < sizeof(cap_names) / sizeof(cap_names[0]) ? cap_names[n] : NULL;
}

// SPDX-License-Identifier: Apache-2.0
// `sidecar wait --url http://127.0.0.1:15000/ready [--timeout 120s]`: exits 0 once the URL
// answers 2xx, 1 when the timeout passes first. The injector uses it as the sidecars' exec startup
// probe and as the classic-mode proxy's postStart hook (the app starts after the proxy is ready),
// so the sidecars' admin ports can stay on loopback and the image needs no shell or curl.
// Invariant: plain HTTP to a numeric loopback-style address only (what an admin port is), one
// bounded request per attempt, never longer than the timeout.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "app.h"
#include "core/alloc.h"
#include "core/error.h"
#include "net/addr.h"

struct wait_cfg {
    char *url;
    uint64_t timeout_ms;
    uint64_t interval_ms;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Splits "http://ip:port/path" into a socket address and the path. */
static int parse_url(const char *url, struct sockaddr_storage *ss, const char **path)
{
    if (strncmp(url, "http://", 7) != 0) {
        return SC_EINVAL;
    }
    const char *host = url + 7;
    const char *slash = strchr(host, '/');
    *path = slash ? slash : "/";
    size_t n = slash ? (size_t)(slash - host) : strlen(host);
    char hp[128];
    if (n == 0 || n >= sizeof(hp)) {
        return SC_EINVAL;
    }
    memcpy(hp, host, n);
    hp[n] = '\0';
    char *err = NULL;
    int rc = sc_addr_parse(hp, ss, &err);
    sc_free(err);
    return rc;
}

static int check_url(void *field, char **err)
{
    struct sockaddr_storage ss;
    const char *path;
    if (parse_url(*(char **)field, &ss, &path) < 0) {
        *err = sc_asprintf("\"%s\" is not http://IP:PORT/PATH", *(char **)field);
        return SC_ECONFIG;
    }
    return 0;
}

/* One attempt: connect, send a GET, read the status line. Returns the status or a negative
 * error; never blocks past <deadline>. */
static int attempt(const struct sockaddr_storage *ss, const char *path, uint64_t deadline)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    int status = -ECONNREFUSED;
    socklen_t len =
        ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    char req[512];
    int reqlen =
        snprintf(req, sizeof(req),
                 "GET %.400s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", path);
    char resp[64];
    size_t got = 0;
    size_t sent = 0;
    bool connected = connect(fd, (const struct sockaddr *)ss, len) == 0;
    if (!connected && errno != EINPROGRESS) {
        goto out;
    }
    while (now_ms() < deadline) {
        struct pollfd p = { .fd = fd, .events = sent < (size_t)reqlen ? POLLOUT : POLLIN };
        int r = poll(&p, 1, (int)(deadline - now_ms()));
        if (r <= 0) {
            continue;
        }
        if (sent < (size_t)reqlen) {
            ssize_t w = send(fd, req + sent, (size_t)reqlen - sent, MSG_NOSIGNAL);
            if (w < 0 && errno != EAGAIN) {
                goto out;
            }
            sent += w > 0 ? (size_t)w : 0;
            continue;
        }
        ssize_t rd = recv(fd, resp + got, sizeof(resp) - 1 - got, 0);
        if (rd <= 0 && !(rd < 0 && errno == EAGAIN)) {
            break;
        }
        got += rd > 0 ? (size_t)rd : 0;
        if (got >= 12 || got == sizeof(resp) - 1) {
            break;
        }
    }
    resp[got] = '\0';
    int code;
    if (got >= 12 && sscanf(resp, "HTTP/1.%*c %3d", &code) == 1) {
        status = code;
    }
out:
    close(fd);
    return status;
}

static int wait_command(const void *cfgp)
{
    const struct wait_cfg *cfg = cfgp;
    struct sockaddr_storage ss;
    const char *path;
    if (parse_url(cfg->url, &ss, &path) < 0) {
        return 2;
    }
    uint64_t end = now_ms() + cfg->timeout_ms;
    int last = 0;
    for (;;) {
        uint64_t t = now_ms();
        uint64_t deadline = t + (end > t ? end - t : 0);
        if (deadline > t + 2000) {
            deadline = t + 2000;
        }
        last = attempt(&ss, path, deadline);
        if (last >= 200 && last < 300) {
            return 0;
        }
        if (now_ms() + cfg->interval_ms >= end) {
            break;
        }
        struct timespec ts = { (time_t)(cfg->interval_ms / 1000),
                               (long)(cfg->interval_ms % 1000) * 1000000 };
        nanosleep(&ts, NULL);
    }
    if (last > 0) {
        fprintf(stderr, "sidecar wait: %s answered %d\n", cfg->url, last);
    } else {
        fprintf(stderr, "sidecar wait: %s: %s\n", cfg->url, sc_strerror(last));
    }
    return 1;
}

static int wait_start(struct sc_app *app, const void *cfg, void **state, char **err)
{
    (void)app;
    (void)cfg;
    (void)state;
    *err = sc_asprintf("sidecar wait is a command: it runs once and exits");
    return SC_ECONFIG;
}

static const struct sc_opt wait_opts[] = {
    { .name = "url",
      .type = SC_OPT_STR,
      .offset = offsetof(struct wait_cfg, url),
      .help = "http://IP:PORT/PATH to wait for (a 2xx answer)",
      .flags = SC_OPT_FLAG | SC_OPT_POSITIONAL | SC_OPT_REQUIRED,
      .check = check_url },
    { .name = "timeout",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct wait_cfg, timeout_ms),
      .def = "60s",
      .help = "give up (exit 1) after this long",
      .flags = SC_OPT_FLAG },
    { .name = "interval",
      .type = SC_OPT_DURATION,
      .offset = offsetof(struct wait_cfg, interval_ms),
      .def = "200ms",
      .help = "pause between attempts",
      .flags = SC_OPT_FLAG,
      .min = 1,
      .max = 60000 },
    { 0 },
};

const struct sc_role sc_role_wait = {
    .name = "wait",
    .summary = "waits until a sidecar's readiness URL answers 2xx (probes, postStart hooks)",
    .opts = wait_opts,
    .cfg_size = sizeof(struct wait_cfg),
    .admin_default = "127.0.0.1:0",
    .start = wait_start,
    .command = wait_command,
};

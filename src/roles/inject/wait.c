// SPDX-License-Identifier: Apache-2.0
// `sidecar wait --url http://127.0.0.1:15000/ready [--timeout 120s]`: exits 0 once the URL
// answers 2xx, 1 when the timeout passes first. The injector uses it as the sidecars' exec startup
// probe and as the classic-mode proxy's postStart hook (the app starts after the proxy is ready),
// so the sidecars' admin ports can stay on loopback and the image needs no shell or curl.
// Invariant: plain HTTP to a numeric loopback-style address only (what an admin port is), one
// bounded request per attempt (the HTTP/1 client of net/h1client.h on a loop of its own), never
// longer than the timeout.
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <uv.h>

#include "app.h"
#include "core/alloc.h"
#include "core/error.h"
#include "net/addr.h"
#include "net/h1client.h"

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

struct
try {
    int status; /* the answer's status, or a negative error */
};

static void on_answer(void *arg, const struct sc_h1cli_resp *r)
{
    struct try *t = arg;
    t->status = r->error ? r->error : r->status;
}

/* One attempt with the HTTP/1 client of net/h1client.h on <loop>: a GET whose status line is all
 * that is read. Returns the status or a negative error; never runs past <timeout_ms>. */
static int attempt(uv_loop_t *loop, const struct sockaddr_storage *ss, const char *path,
                   uint64_t timeout_ms)
{
    static const struct sc_http_header host = { SC_STR("Host"), SC_STR("localhost") };
    const struct sc_h1cli_req req = {
        .method = SC_STR("GET"),
        .target = sc_str_c(path),
        .headers = &host,
        .nheaders = 1,
        .timeout_ms = timeout_ms ? timeout_ms : 1,
        .max_head = 4096,
        .head_only = true,
    };
    struct try t = { .status = SC_ECLOSED };
    uv_update_time(loop); /* the loop slept between attempts: the deadline counts from now */
    int rc = sc_h1cli_send(loop, (const struct sockaddr *)ss, &req, on_answer, &t, NULL);
    if (rc < 0) {
        return rc;
    }
    uv_run(loop, UV_RUN_DEFAULT); /* until the answer, and the connection closed */
    return t.status;
}

static int wait_command(const void *cfgp)
{
    const struct wait_cfg *cfg = cfgp;
    struct sockaddr_storage ss;
    const char *path;
    if (parse_url(cfg->url, &ss, &path) < 0) {
        return 2;
    }
    uv_loop_t loop;
    if (uv_loop_init(&loop) < 0) {
        return 2;
    }
    uint64_t end = now_ms() + cfg->timeout_ms;
    int last = 0;
    for (;;) {
        uint64_t t = now_ms();
        uint64_t left = end > t ? end - t : 0;
        last = attempt(&loop, &ss, path, left < 2000 ? left : 2000);
        if (last >= 200 && last < 300) {
            break;
        }
        if (now_ms() + cfg->interval_ms >= end) {
            break;
        }
        struct timespec ts = { (time_t)(cfg->interval_ms / 1000),
                               (long)(cfg->interval_ms % 1000) * 1000000 };
        nanosleep(&ts, NULL);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    if (last >= 200 && last < 300) {
        return 0;
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

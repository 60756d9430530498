// SPDX-License-Identifier: Apache-2.0
// The config role's etcd source, over the v3 JSON gateway: a range read of a key or a prefix, then
// a watch stream from the revision after the one read, so a change arrives between polls; a watch
// that ends restarts with backoff, after a read that catches up on what it missed.
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>

#include "app.h"
#include "core/alloc.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "core/template.h"
#include "net/dest.h"
#include "net/egress.h"
#include "roles/config/config.h"

/* ---- etcd ---- */

static char *b64(const char *s, size_t n)
{
    struct sc_buf b;
    sc_buf_init(&b, 1u << 20);
    sc_template_base64_encode(&b, s, n);
    char *r = sc_strndup(b.p ? b.p : "", b.len);
    sc_buf_cleanup(&b);
    return r;
}

static char *b64dec(const char *s, size_t *len)
{
    struct sc_buf b;
    sc_buf_init(&b, CONFIG_MAX_BODY);
    if (sc_template_base64_decode(&b, s, strlen(s)) < 0) {
        sc_buf_cleanup(&b);
        return NULL;
    }
    *len = b.len;
    char *r = sc_strndup(b.p ? b.p : "", b.len);
    sc_buf_cleanup(&b);
    return r;
}

/* The range_end that selects every key starting with <key>: the key with its last byte that is
 * not 0xff incremented (etcd's convention). */
static char *prefix_end(const char *key)
{
    size_t n = strlen(key);
    char *e = sc_strndup(key, n);
    while (n > 0) {
        if ((unsigned char)e[n - 1] < 0xff) {
            e[n - 1]++;
            e[n] = '\0';
            return e;
        }
        n--;
    }
    e[0] = '\0';
    return e; /* "\0": every key */
}

static char *etcd_range_body(struct config_source *s, bool watch)
{
    char *k = b64(s->path, strlen(s->path));
    char *end = NULL;
    if (s->prefix) {
        char *pe = prefix_end(s->path);
        end = pe[0] ? b64(pe, strlen(pe)) : sc_strdup("AA==");
        sc_free(pe);
    }
    json_t *o = json_object();
    json_object_set_new(o, "key", json_string(k));
    if (end) {
        json_object_set_new(o, "range_end", json_string(end));
    }
    json_t *root = o;
    if (watch) {
        char rev[32];
        snprintf(rev, sizeof(rev), "%lld", (long long)(s->etcd_revision + 1));
        json_object_set_new(o, "start_revision", json_string(rev));
        root = json_pack("{s:o}", "create_request", o);
    }
    char *body = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    sc_free(k);
    sc_free(end);
    return body;
}

static int64_t json_int_str(json_t *v)
{
    if (json_is_integer(v)) {
        return json_integer_value(v);
    }
    if (json_is_string(v)) {
        return strtoll(json_string_value(v), NULL, 10);
    }
    return 0;
}

static void start_watch(struct config_source *s);

static void on_etcd_range(void *arg, const struct sc_egress_resp *resp)
{
    struct config_source *s = arg;
    s->xfer = NULL;
    sc_free(s->req_body);
    s->req_body = NULL;
    if (resp->error) {
        config_fetch_failed(s, resp->error_msg ? resp->error_msg : sc_strerror(resp->error));
        return;
    }
    if (resp->status != 200) {
        char why[64];
        snprintf(why, sizeof(why), "etcd answered HTTP status %d", resp->status);
        config_fetch_failed(s, why);
        return;
    }
    json_error_t je;
    json_t *j = json_loadb(resp->body.p, resp->body.len, 0, &je);
    if (!j) {
        config_fetch_failed(s, "etcd answered invalid JSON");
        return;
    }
    s->etcd_revision = json_int_str(json_object_get(json_object_get(j, "header"), "revision"));
    json_t *kvs = json_object_get(j, "kvs");
    size_t i;
    json_t *kv;
    if (!s->prefix) {
        kv = json_array_get(kvs, 0);
        const char *v = json_string_value(json_object_get(kv, "value"));
        size_t len = 0;
        char *val = kv ? b64dec(v ? v : "", &len) : NULL;
        json_decref(j);
        if (!val) {
            config_fetch_failed(s, kv ? "etcd value is not base64" : "etcd key not found");
            return;
        }
        config_deliver(s, val, len, NULL);
        sc_free(val);
    } else {
        json_t *obj = json_object();
        size_t plen = strlen(s->path);
        json_array_foreach(kvs, i, kv)
        {
            size_t kl = 0, vl = 0;
            const char *ks = json_string_value(json_object_get(kv, "key"));
            const char *vs = json_string_value(json_object_get(kv, "value"));
            char *key = b64dec(ks ? ks : "", &kl);
            char *val = b64dec(vs ? vs : "", &vl);
            if (key && val && kl >= plen) {
                json_t *jv = json_stringn(val, vl);
                json_object_set_new(obj, key + plen, jv ? jv : json_string(""));
            }
            sc_free(key);
            sc_free(val);
        }
        json_decref(j);
        char *all = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS | JSON_INDENT(0));
        config_deliver(s, all ? all : "{}", all ? strlen(all) : 2, obj);
        sc_free(all);
        json_decref(obj);
    }
    if (s->cfg->watch && !s->watch_xfer && !s->cf->cfg->once && !s->cf->stopping) {
        start_watch(s);
    }
}

void config_etcd_fetch(struct config_source *s)
{
    sc_free(s->req_body);
    s->req_body = etcd_range_body(s, false);
    char *url = sc_asprintf("%s/v3/kv/range", s->base_url);
    struct sc_egress_req req = {
        .method = "POST",
        .url = url,
        .body = s->req_body,
        .body_len = strlen(s->req_body),
        .timeout_ms = s->cf->cfg->timeout_ms,
        .max_response = CONFIG_MAX_BODY,
        .basic_user = s->cfg->basic_user,
        .basic_password = s->cfg->basic_password,
        .tls = &s->tls,
    };
    int rc = sc_egress_send(config_egress(s->cf), &req, on_etcd_range, s, &s->xfer);
    sc_free(url);
    if (rc < 0) {
        config_fetch_failed(s, sc_strerror(rc));
    }
}

/* Each watch message is one JSON object; any event means "fetch again". */
static bool on_watch_data(void *arg, const char *p, size_t len)
{
    struct config_source *s = arg;
    if (sc_buf_append(&s->watch_buf, p, len) < 0) {
        sc_warn("etcd watch message too large; restarting the watch", SC_LS("source", s->name));
        return false;
    }
    for (;;) {
        size_t off = 0;
        while (off < s->watch_buf.len &&
               (s->watch_buf.p[off] == '\n' || s->watch_buf.p[off] == '\r' ||
                s->watch_buf.p[off] == ' ')) {
            off++;
        }
        sc_buf_consume(&s->watch_buf, off);
        if (s->watch_buf.len == 0) {
            return true;
        }
        json_error_t je;
        json_t *m = json_loadb(s->watch_buf.p, s->watch_buf.len, JSON_DISABLE_EOF_CHECK, &je);
        if (!m) {
            return true; /* incomplete: wait for more */
        }
        sc_buf_consume(&s->watch_buf, (size_t)je.position);
        json_t *res = json_object_get(m, "result");
        json_t *ev = json_object_get(res, "events");
        if (json_array_size(ev) > 0) {
            s->watch_failures = 0;
            sc_debug("etcd watch event", SC_LS("source", s->name));
            if (s->fetching) {
                s->refetch = true;
            } else {
                config_source_schedule(s, 0);
            }
        }
        json_decref(m);
    }
}

static void on_watch_retry(uv_timer_t *t)
{
    struct config_source *s = t->data;
    if (!s->cf->stopping && !s->watch_xfer) {
        start_watch(s);
    }
}

static void on_watch_end(void *arg, const struct sc_egress_resp *resp)
{
    struct config_source *s = arg;
    s->watch_xfer = NULL;
    if (s->cf->stopping) {
        return;
    }
    s->watch_failures++;
    uint64_t b = 500u << (s->watch_failures < 6 ? s->watch_failures : 6);
    sc_warn("etcd watch ended; polling continues and the watch restarts", SC_LS("source", s->name),
            SC_LS("reason", resp->error ? sc_strerror(resp->error) : "stream closed"),
            SC_LU("retry_in_ms", b));
    /* Catch up on what the stream may have missed. */
    if (!s->fetching) {
        config_source_schedule(s, b);
    }
    uv_timer_start(&s->watch_timer, on_watch_retry, b, 0);
}

static void start_watch(struct config_source *s)
{
    char *body = etcd_range_body(s, true);
    char *url = sc_asprintf("%s/v3/watch", s->base_url);
    sc_buf_reset(&s->watch_buf);
    struct sc_egress_req req = {
        .method = "POST",
        .url = url,
        .body = body,
        .body_len = strlen(body),
        .timeout_ms = 24ull * 3600 * 1000,
        .basic_user = s->cfg->basic_user,
        .basic_password = s->cfg->basic_password,
        .tls = &s->tls,
        .on_data = on_watch_data,
    };
    int rc = sc_egress_send(config_egress(s->cf), &req, on_watch_end, s, &s->watch_xfer);
    sc_free(url);
    if (rc < 0) {
        sc_free(body);
        sc_warn("cannot start the etcd watch; polling only", SC_LS("source", s->name), SC_LERR(rc));
        return;
    }
    /* The body is borrowed until the stream ends. */
    sc_free(s->watch_body);
    s->watch_body = body;
    sc_debug("etcd watch started", SC_LS("source", s->name));
}

// SPDX-License-Identifier: Apache-2.0
// The admission webhook's review handler, apart from any server so that unit tests and the fuzz
// target drive it directly; and the HTTPS server the webhook serves it on (webhook_https.c), whose
// API mirrors the admin server's so either carries the webhook's routes.
#ifndef SC_ROLES_INJECT_WEBHOOK_H
#define SC_ROLES_INJECT_WEBHOOK_H

#include <uv.h>

#include "core/buf.h"
#include "net/admin.h"
#include "roles/inject/inject.h"

/* Answers one AdmissionReview request body (<len> bytes, borrowed) with the injection settings
 * <o>: appends the response body to <out> and returns the HTTP status (200 with an
 * AdmissionReview response; 400 with a text reason when the review is malformed; 500 when <out>'s
 * cap was reached). <*result> is set to a static metric label: "injected", "skipped", "denied"
 * (an injection error, answered with allowed: false and the reason), "invalid" or "error". */
int webhook_review(const struct inject_opts *o, const char *body, size_t len, struct sc_buf *out,
                   const char **result);

/* An HTTPS server on <loop> with the certificate <cert> and key <key> (PEM files, polled every
 * second and reloaded when they change: new connections get the new pair, a broken pair keeps the
 * old one). Returns a new server, or NULL with a new message in <*err> naming the file. */
struct webhook_https *webhook_https_new(uv_loop_t *loop, const char *cert, const char *key,
                                        char **err);

/* Routes <method> <path> (exact match; both borrowed, static) to <cb>, as sc_admin_handle does;
 * at most 16 routes. Other paths answer 404, other methods 405. */
void webhook_https_handle(struct webhook_https *s, const char *method, const char *path,
                          sc_admin_handler_cb cb, void *arg);

/* Binds and listens on <addr> ("0.0.0.0:9443"; port 0 picks one) and starts watching the
 * certificate files. Call once. Returns 0, or a negative error with a new message in <*err>. */
int webhook_https_listen(struct webhook_https *s, const char *addr, char **err);

/* Writes the bound address as "ip:port" into <out>. Returns 0 or a negative libuv error. */
int webhook_https_address(struct webhook_https *s, char *out, size_t outlen);

/* Stops listening, closes every connection and frees the server once all have closed.
 * NULL-safe. */
void webhook_https_close(struct webhook_https *s);

#endif

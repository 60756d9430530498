// SPDX-License-Identifier: Apache-2.0
// The admission webhook's review handler, apart from any server so that unit tests and the fuzz
// target drive it directly.
#ifndef SC_ROLES_INJECT_WEBHOOK_H
#define SC_ROLES_INJECT_WEBHOOK_H

#include "core/buf.h"
#include "roles/inject/inject.h"

/* Answers one AdmissionReview request body (<len> bytes, borrowed) with the injection settings
 * <o>: appends the response body to <out> and returns the HTTP status (200 with an
 * AdmissionReview response; 400 with a text reason when the review is malformed; 500 when <out>'s
 * cap was reached). <*result> is set to a static metric label: "injected", "skipped", "denied"
 * (an injection error, answered with allowed: false and the reason), "invalid" or "error". */
int webhook_review(const struct inject_opts *o, const char *body, size_t len, struct sc_buf *out,
                   const char **result);

#endif

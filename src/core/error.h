// SPDX-License-Identifier: Apache-2.0
// Error codes. Functions return 0 or a negative number: a negative errno (-ENOMEM, or libuv's
// UV_E* which are the same on Unix) or a project code below -4000 from the table in error.c.
#ifndef SC_CORE_ERROR_H
#define SC_CORE_ERROR_H

#include <errno.h>

#define SC_EINVAL (-EINVAL)

enum {
    SC_ETOOBIG = -4001,      /* a capped buffer, queue or table is full */
    SC_ECONFIG = -4002,      /* the configuration is invalid */
    SC_EHTTP = -4003,        /* malformed HTTP message */
    SC_ETIMEDOUT = -4004,    /* a deadline passed */
    SC_ECLOSED = -4005,      /* the peer or the object was closed */
    SC_EUNSUPPORTED = -4006, /* valid input this build does not handle */
    SC_ELIMIT = -4007,       /* a configured limit was reached (series, connections, ...) */
};

/* Returns a static message for <err>, which may be a negative errno or a project code. */
const char *sc_strerror(int err);

#endif

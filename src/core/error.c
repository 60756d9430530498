// SPDX-License-Identifier: Apache-2.0
// The table of project error codes and their messages.
#include "core/error.h"

#include <string.h>

static const struct {
    int code;
    const char *msg;
} codes[] = {
    { SC_ETOOBIG, "limit exceeded: buffer or queue full" },
    { SC_ECONFIG, "invalid configuration" },
    { SC_EHTTP, "malformed HTTP message" },
    { SC_ETIMEDOUT, "timed out" },
    { SC_ECLOSED, "closed" },
    { SC_EUNSUPPORTED, "not supported" },
    { SC_ELIMIT, "configured limit reached" },
};

const char *sc_strerror(int err)
{
    if (err == 0) {
        return "success";
    }
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        if (codes[i].code == err) {
            return codes[i].msg;
        }
    }
    if (err < 0 && err > -4000) {
        const char *m = strerrordesc_np(-err);
        if (m) {
            return m;
        }
    }
    return "unknown error";
}

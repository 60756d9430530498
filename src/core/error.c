// SPDX-License-Identifier: Apache-2.0
// The table of project error codes and their messages. Negative errno values are described by the
// C library, and libuv's own codes (its resolver's UV_EAI_*, outside the errno range) by libuv.
#include "core/error.h"

#include <string.h>

#include <uv.h>

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
    switch (err) {
#define SC_UV_ONLY(name, msg)                                                                      \
    case UV_##name:                                                                                \
        if (UV_##name <= -3000) { /* a code libuv has no errno for */                              \
            return msg;                                                                            \
        }                                                                                          \
        break;
        UV_ERRNO_MAP(SC_UV_ONLY)
#undef SC_UV_ONLY
    default:
        break;
    }
    if (err < 0 && err > -4000) {
        const char *m = strerrordesc_np(-err);
        if (m) {
            return m;
        }
    }
    return "unknown error";
}

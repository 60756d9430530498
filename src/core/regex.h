// SPDX-License-Identifier: Apache-2.0
// PCRE2 (8-bit), loaded at run time. The binary does not link PCRE2: a role whose configuration
// holds no regular expression never maps it (about 0.15 MiB of resident memory), and the first
// pattern compiled loads it. Files that use PCRE2 include this header instead of <pcre2.h>.
//
// How it works, as net/ossl.h does for OpenSSL: every PCRE2 function the code calls is redefined
// below (by its 8-bit name, pcre2_compile_8 for pcre2_compile) as SC_REGEX(name): a call through
// a pointer that each call site resolves once, typed from PCRE2's own declaration. The two free
// functions stay NULL-safe without loading the library, so cleanups of a role that never
// compiled a pattern do not map it. Code that compiles a pattern calls sc_lazylib_pcre2_load
// (core/lazylib.h) first and fails with its message when the library cannot be loaded; a call
// before that loads it, and ends the process with a logged reason if it cannot.
//
// Adding a function: one line, `#define NAME_8 SC_REGEX(NAME_8)`, in alphabetical order; one not
// listed is a link error naming it.
#ifndef SC_CORE_REGEX_H
#define SC_CORE_REGEX_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/lazylib.h"

/* The function <f> of PCRE2, resolved on its first call from this call site. */
#define SC_REGEX(f)                                                                                \
    (*({                                                                                           \
        static void *sc_regex_fn_;                                                                 \
        void *sc_regex_p_ = __atomic_load_n(&sc_regex_fn_, __ATOMIC_ACQUIRE);                      \
        if (__builtin_expect(sc_regex_p_ == NULL, 0)) {                                            \
            sc_regex_p_ = sc_lazylib_pcre2_resolve(&sc_regex_fn_, #f);                             \
        }                                                                                          \
        (__typeof__(&f))sc_regex_p_;                                                               \
    }))

/* pcre2_code_free and pcre2_match_data_free: NULL is nothing to free, and loads nothing. */
static inline void sc_regex_code_free(pcre2_code *c)
{
    if (c) {
        SC_REGEX(pcre2_code_free_8)(c);
    }
}

static inline void sc_regex_match_data_free(pcre2_match_data *md)
{
    if (md) {
        SC_REGEX(pcre2_match_data_free_8)(md);
    }
}

// clang-format off
#define pcre2_code_free_8 sc_regex_code_free
#define pcre2_compile_8 SC_REGEX(pcre2_compile_8)
#define pcre2_get_error_message_8 SC_REGEX(pcre2_get_error_message_8)
#define pcre2_get_ovector_count_8 SC_REGEX(pcre2_get_ovector_count_8)
#define pcre2_get_ovector_pointer_8 SC_REGEX(pcre2_get_ovector_pointer_8)
#define pcre2_jit_compile_8 SC_REGEX(pcre2_jit_compile_8)
#define pcre2_match_8 SC_REGEX(pcre2_match_8)
#define pcre2_match_data_create_8 SC_REGEX(pcre2_match_data_create_8)
#define pcre2_match_data_create_from_pattern_8 SC_REGEX(pcre2_match_data_create_from_pattern_8)
#define pcre2_match_data_free_8 sc_regex_match_data_free
#define pcre2_pattern_info_8 SC_REGEX(pcre2_pattern_info_8)
#define pcre2_substitute_8 SC_REGEX(pcre2_substitute_8)
#define pcre2_substring_number_from_name_8 SC_REGEX(pcre2_substring_number_from_name_8)
// clang-format on

#endif

// SPDX-License-Identifier: Apache-2.0
// See secrets_mem.h. The free function needs no size header: sc_free_zeroed asks the allocator
// for the block's usable size, which is what makes the switch safe after jansson has already
// allocated with plain malloc (the admin server's /config dump, the config loader).
#include "roles/secrets/secrets_mem.h"

#include <jansson.h>

#include "core/alloc.h"

void secrets_mem_protect(void)
{
    json_malloc_t m = NULL;
    json_free_t f = NULL;
    json_get_alloc_funcs(&m, &f);
    if (f != sc_free_zeroed) {
        json_set_alloc_funcs(sc_malloc, sc_free_zeroed);
    }
}

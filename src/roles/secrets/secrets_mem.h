// SPDX-License-Identifier: Apache-2.0
// Secrets in memory: Vault responses are parsed by jansson, whose values (the secret strings
// among them) are freed by jansson itself with a bare pointer. secrets_mem_protect() swaps
// jansson's free for one that zeroes the whole block first, for the rest of the process.
#ifndef SC_SECRETS_MEM_H
#define SC_SECRETS_MEM_H

/* Makes every block jansson frees from now on zeroed first (sc_free_zeroed); idempotent. The
 * allocation side stays the C allocator (sc_malloc), so blocks jansson allocated earlier, and
 * strings it returned that callers free with sc_free, stay compatible: the switch may happen at
 * any time. Process-global: only the secrets role calls it. */
void secrets_mem_protect(void);

#endif

// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the snappy encoder (core/snappy.c): it compresses the input and abort()s
// unless libsnappy's decompressor gives the input back byte for byte from a block within
// sc_snappy_bound, whose elements are all what the encoder promises (snappy_check.h). An input
// whose first byte is odd is also repeated up to 80 KiB (with a byte changed every 4 KiB), so that
// matches reach past the 64 KiB window and long copies and literals are exercised.
// The corpus lives in tests/fuzz/corpus/snappy/.
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "snappy_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!snappy_check(data, size, NULL)) {
        abort();
    }
    if (size > 1 && (data[0] & 1)) {
        size_t n = 80 * 1024;
        uint8_t *big = malloc(n);
        if (!big) {
            return 0;
        }
        for (size_t i = 0; i < n; i++) {
            big[i] = data[1 + i % (size - 1)];
            if (i % 4096 == 0) {
                big[i] ^= (uint8_t)(i >> 12);
            }
        }
        if (!snappy_check(big, n, NULL)) {
            abort();
        }
        free(big);
    }
    return 0;
}

/* libFuzzer harness for kcz_decode. The first two bytes give the skeleton length (mod the
 * input size); the rest is skeleton then sidecar. Build and run (clang):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I.. ../kcz_decode.c kcz_fuzz.c -o kcz_fuzz
 *   ./kcz_fuzz -max_total_time=60 corpus/
 * Add -DKCZ_FUZZ_NO_CRC to a second build so that changed bytes get past the CRC-32 checks and
 * exercise the payload (Huffman, arithmetic) and DEFLATE decoders; never ship such a build.
 * Seed the corpus with real skeleton+sidecar pairs (see tests/test_c_decoder.py). */
#include <stddef.h>
#include <stdint.h>

#include "kcz_decode.h"

static int discard(void *ctx, const uint8_t *data, size_t len) {
    (void)ctx;
    (void)data;
    (void)len;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static kcz_workspace ws;
    size_t skeleton_size;
    if (size < 2) return 0;
    skeleton_size = (size_t)(data[0] | (data[1] << 8)) % (size - 1);
    kcz_decode(data + 2, skeleton_size, data + 2 + skeleton_size, size - 2 - skeleton_size, discard,
               NULL, &ws);
    return 0;
}

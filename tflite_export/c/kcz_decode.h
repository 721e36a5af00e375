/* kcz_decode.h - streaming decoder of keras-compress .kcz sidecars (format v1).
 *
 * Rebuilds the original .tflite from its skeleton and sidecar, byte for byte, for
 * TensorFlow Lite Micro targets: C99, no malloc, no globals, caller-provided memory, every
 * read bounds-checked. Inputs are plain byte arrays (flash or RAM); the model is produced in
 * order through a write callback (to flash, in chunks). The format is tflite_export/FORMAT.md.
 *
 * Usage:
 *   kcz_workspace ws;
 *   int rc = kcz_decode(sidecar, sidecar_len, skeleton, skeleton_len, write_fn, ctx, &ws);
 *   if (rc != KCZ_OK) { puts(kcz_error_name(rc)); }
 *
 * On an error the callback may already have received part of the model: treat the output as
 * invalid unless kcz_decode returns KCZ_OK (it checks the SHA-256 of everything written).
 */
#ifndef KCZ_DECODE_H
#define KCZ_DECODE_H

#include <stddef.h>
#include <stdint.h>

/* Largest codebook accepted; 4096 is the format's limit. Microcontroller builds can pass
 * -DKCZ_MAX_CODEBOOK=256 to shrink the workspace to about 1.4 KB. */
#ifndef KCZ_MAX_CODEBOOK
#define KCZ_MAX_CODEBOOK 4096u
#endif
#define KCZ_MAX_GAP_BITS 8u
#define KCZ_MAX_CODE_LEN 16u
#define KCZ_CHUNK 64u

enum {
    KCZ_OK = 0,
    KCZ_E_TRUNCATED = 1,   /* a read past the end of the sidecar */
    KCZ_E_MAGIC = 2,       /* not a .kcz file */
    KCZ_E_VERSION = 3,     /* a version this decoder does not know */
    KCZ_E_CRC = 4,         /* a section's CRC-32 does not match */
    KCZ_E_TABLE = 5,       /* inconsistent entry table (ranges, sizes, order) */
    KCZ_E_SKELETON = 6,    /* skeleton size differs from the header's */
    KCZ_E_PAYLOAD = 7,     /* a malformed tensor payload */
    KCZ_E_HUFFMAN = 8,     /* an invalid code, bad code lengths, or a stream of wrong size */
    KCZ_E_WORKSPACE = 9,   /* codebook or gap alphabet larger than the workspace allows */
    KCZ_E_HASH = 10,       /* the rebuilt model's SHA-256 differs (wrong skeleton?) */
    KCZ_E_WRITE = 11       /* the write callback reported an error */
};

/* Returns 0 on success, non-zero to abort decoding. */
typedef int (*kcz_write_fn)(void *ctx, const uint8_t *data, size_t len);

typedef struct {
    uint32_t h[8];
    uint64_t length;
    uint8_t block[64];
    uint32_t used;
} kcz_sha256;

/* All the memory the decoder uses besides a few hundred bytes of stack: canonical Huffman
 * state (code counts per length, symbols in code order) for the value and gap streams, the
 * running SHA-256 and the output chunk. */
typedef struct {
    uint16_t value_count[KCZ_MAX_CODE_LEN + 1];
    uint16_t value_symbol[KCZ_MAX_CODEBOOK + 1];
    uint16_t gap_count[KCZ_MAX_CODE_LEN + 1];
    uint16_t gap_symbol[1u << KCZ_MAX_GAP_BITS];
    kcz_sha256 sha;
    uint8_t out[KCZ_CHUNK];
    uint32_t out_used;
} kcz_workspace;

int kcz_decode(const uint8_t *sidecar, size_t sidecar_size, const uint8_t *skeleton,
               size_t skeleton_size, kcz_write_fn write, void *ctx, kcz_workspace *ws);

const char *kcz_error_name(int code);

#endif

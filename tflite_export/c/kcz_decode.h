/* kcz_decode.h - streaming decoder of keras-compress .kcz sidecars (format v2 to v5).
 *
 * Rebuilds the original .tflite from its skeleton and sidecar, byte for byte, for
 * TensorFlow Lite Micro targets: C99, no malloc, no globals, caller-provided memory, every
 * read bounds-checked. Inputs are plain byte arrays (flash or RAM); the model is produced in
 * order through a write callback (to flash, in chunks). The format is tflite_export/FORMAT.md.
 *
 * Usage (skeleton first, then sidecar, as in every decoder and CLI of the project):
 *   kcz_workspace ws;
 *   int rc = kcz_decode(skeleton, skeleton_len, sidecar, sidecar_len, write_fn, ctx, &ws);
 *   if (rc != KCZ_OK) { puts(kcz_error_name(rc)); }
 *
 * Every input byte is checked (CRC-32 of the header, entry table, each payload and the
 * skeleton) before the first byte is written, so a corrupted or mismatched input is rejected
 * without output. Only a payload that passes its CRC yet is malformed (a buggy encoder) can fail
 * after part of the model was written: treat the output as invalid unless this returns KCZ_OK.
 *
 * Builds: KCZ_LUT_BITS (below) chooses between decoding Huffman codes bit by bit (about 1.8 KB
 * of Cortex-M4 code and a few hundred bytes of stack: microcontrollers) and lookup tables on
 * the stack plus in-place output (several times faster on hosts).
 * KCZ_WINDOW_BITS sets the RAM for a DEFLATE-coded skeleton (format v3); its decoder adds about
 * 1.2 KB of Cortex-M4 code (benchmarks/results/codec.json has the measured sizes).
 * KCZ_MAX_CODEBOOK, KCZ_CHUNK and KCZ_WINDOW_BITS change kcz_workspace: define them the same way
 * everywhere.
 */
#ifndef KCZ_DECODE_H
#define KCZ_DECODE_H

#include <stddef.h>
#include <stdint.h>

/* Largest codebook accepted; 4096 is the format's limit. Microcontroller builds can pass
 * -DKCZ_MAX_CODEBOOK=256 to shrink the workspace to about 1.4 KB (8-bit shared weights). */
#ifndef KCZ_MAX_CODEBOOK
#define KCZ_MAX_CODEBOOK 4096u
#endif
#define KCZ_MAX_GAP_BITS 8u

/* Huffman lookup tables: each KCZ_LUT_BITS-bit prefix decoded at once, from two tables of
 * 4 << KCZ_LUT_BITS bytes on the stack (8 KB at 10). 0 decodes bit by bit: the smallest code
 * and stack, for microcontrollers. Default: 0 where the compiler says it optimises for size
 * (gcc and clang -Os define __OPTIMIZE_SIZE__), else 10. Compilers that never define
 * __OPTIMIZE_SIZE__ (IAR, Keil, MSVC) get the tables unless you pass -DKCZ_LUT_BITS=0.
 * Allowed: 0, or 8 to 16. */
#ifndef KCZ_LUT_BITS
#ifdef __OPTIMIZE_SIZE__
#define KCZ_LUT_BITS 0
#else
#define KCZ_LUT_BITS 10
#endif
#endif
#if KCZ_LUT_BITS != 0 && (KCZ_LUT_BITS < 8 || KCZ_LUT_BITS > 16)
#error "KCZ_LUT_BITS must be 0 or from 8 to 16"
#endif
#define KCZ_MAX_CODE_LEN 16u
/* The skeleton's DEFLATE window kept in the workspace, 2^KCZ_WINDOW_BITS bytes: sidecars whose
 * skeleton was coded with a larger window (kc.export's window_bits, 15 by default) are refused
 * with KCZ_E_WORKSPACE. 0 leaves the DEFLATE decoder out (raw skeletons only: export with
 * window_bits=None). Default: 10 (1 KB) where the compiler optimises for size, else 15. */
#ifndef KCZ_WINDOW_BITS
#ifdef __OPTIMIZE_SIZE__
#define KCZ_WINDOW_BITS 10
#else
#define KCZ_WINDOW_BITS 15
#endif
#endif
#if KCZ_WINDOW_BITS != 0 && (KCZ_WINDOW_BITS < 9 || KCZ_WINDOW_BITS > 15)
#error "KCZ_WINDOW_BITS must be 0 or from 9 to 15"
#endif
/* Scaled copies (format v5, encoding 4: float32 vectors stored as a factor times skeleton bytes
 * before them, such as per-channel int8 bias scales). 0 leaves them out (about 240 bytes of
 * Cortex-M4 code) and refuses v5 files: export with scaled_copies=False for such a build. */
#ifndef KCZ_SCALED_COPY
#define KCZ_SCALED_COPY 1
#endif

/* Bytes handed to the write callback at a time (the last piece may be shorter): a common flash
 * page size. Host builds can pass e.g. -DKCZ_CHUNK=4096 for fewer callbacks. */
#ifndef KCZ_CHUNK
#define KCZ_CHUNK 256u
#endif

enum {
    KCZ_OK = 0,
    KCZ_E_TRUNCATED = 1,   /* a read past the end of the sidecar */
    KCZ_E_MAGIC = 2,       /* not a .kcz file */
    KCZ_E_VERSION = 3,     /* a version this decoder does not know */
    KCZ_E_CRC = 4,         /* a section's CRC-32 does not match */
    KCZ_E_TABLE = 5,       /* inconsistent entry table (ranges, sizes, order) */
    KCZ_E_SKELETON = 6,    /* the skeleton's size or CRC-32 differs from the header's */
    KCZ_E_PAYLOAD = 7,     /* a malformed tensor payload */
    KCZ_E_HUFFMAN = 8,     /* an invalid code, bad code lengths, or a stream of wrong size */
    KCZ_E_WORKSPACE = 9,   /* codebook or gap alphabet larger than the workspace allows */
    KCZ_E_WRITE = 10,      /* the write callback reported an error */
    KCZ_E_DEFLATE = 11     /* a malformed DEFLATE-coded skeleton */
};

/* Returns 0 on success, non-zero to abort decoding. */
typedef int (*kcz_write_fn)(void *ctx, const uint8_t *data, size_t len);

/* A bit stream: bytes, their number of bits, the next bit; flip 7 reads each byte's most
 * significant bit first (tensor payloads), 0 its least significant first (DEFLATE). */
typedef struct {
    const uint8_t *p;
    uint32_t nbits, pos, flip;
} kcz_bits;

#if KCZ_WINDOW_BITS > 0
/* DEFLATE state of the skeleton, which is decoded a byte at a time between the tensors. */
typedef struct {
    kcz_bits in;
    uint16_t lcount[KCZ_MAX_CODE_LEN + 1], lsym[288]; /* literal/length code */
    uint16_t dcount[KCZ_MAX_CODE_LEN + 1], dsym[32];  /* distance code */
    uint32_t mode, last, copy, dist, stored, wpos, filled, wsize;
    uint8_t window[1u << KCZ_WINDOW_BITS];
} kcz_inflate;
#endif

/* State of one arithmetic-coded tensor (format v4, encoding 3): the range decoder, each
 * context's probability and bit count, and the classes of the last `stride` elements. */
typedef struct {
    const uint8_t *p;
    uint32_t size, pos, range, code;
    uint16_t prob[285];
    uint8_t seen[285], ring[256];
} kcz_range;

/* All the memory the decoder uses besides a few hundred bytes of stack: canonical Huffman
 * state (code counts per length, symbols in code order) for the value and gap streams, the
 * skeleton's DEFLATE state, the output chunk and the write callback. */
typedef struct {
    union { /* one tensor at a time: Huffman-coded (h) or arithmetic-coded (a) */
        struct {
            uint16_t count[2][KCZ_MAX_CODE_LEN + 1];                         /* value, gap */
            uint16_t symbol[KCZ_MAX_CODEBOOK + 1 + (1u << KCZ_MAX_GAP_BITS)]; /* value, gap */
        } h;
        kcz_range a;
    } t;
#if KCZ_WINDOW_BITS > 0
    kcz_inflate z;
#endif
    uint8_t out[KCZ_CHUNK];
    uint32_t out_used;
    kcz_write_fn write;
    void *ctx;
} kcz_workspace;

int kcz_decode(const uint8_t *skeleton, size_t skeleton_size, const uint8_t *sidecar,
               size_t sidecar_size, kcz_write_fn write, void *ctx, kcz_workspace *ws);

const char *kcz_error_name(int code);

#endif

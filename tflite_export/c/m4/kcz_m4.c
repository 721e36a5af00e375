/* kcz_m4.c - the C decoder on a Cortex-M4: decode the skeleton and sidecar linked into flash.
 *
 * Built by emulate.py (next to this file) with arm-none-eabi-gcc and run under QEMU
 * (-M mps2-an386 -icount shift=0). It decodes twice with the caller-provided workspace
 * (a static kcz_workspace) and the streaming write callback:
 *   1. into a callback that only counts bytes: the SysTick ticks and the peak stack (painted
 *      before the call) are the decoder's own;
 *   2. into a callback that streams the model to the host file kcz_out.bin (semihosting) and
 *      computes its CRC-32 on the device.
 * It prints "key=value" lines: the sizes, the result (0, or the error's number and name),
 * the output's size and CRC-32, the ticks, a calibration (ticks of a loop of known
 * instruction count) and the stack in bytes. Exit status: 0 decoded, 2 rejected, 3 fault
 * (startup.c), 4 no semihosting file output. */
#include <stddef.h>
#include <stdint.h>

#include "board.h"
#include "kcz_decode.h"

extern const uint8_t kcz_skeleton[], kcz_skeleton_end[], kcz_sidecar[], kcz_sidecar_end[];

static kcz_workspace ws;

#define PAINT 0x5AC35AC3u
#define CALIBRATION_LOOPS 5000000u /* two instructions each: subs, bne */

typedef struct {
    uint32_t bytes, crc;
    int handle;
} sink;

static int count_only(void *ctx, const uint8_t *data, size_t len) {
    (void)data;
    ((sink *)ctx)->bytes += (uint32_t)len;
    return 0;
}

static int to_host(void *ctx, const uint8_t *data, size_t len) {
    sink *s = ctx;
    size_t i;
    int bit;
    for (i = 0; i < len; i++) { /* CRC-32 (zlib's), bit by bit: no table in RAM */
        s->crc ^= data[i];
        for (bit = 0; bit < 8; bit++) s->crc = (s->crc >> 1) ^ (0xEDB88320u & (0u - (s->crc & 1u)));
    }
    s->bytes += (uint32_t)len;
    return board_write(s->handle, data, (uint32_t)len);
}

static inline uint32_t stack_pointer(void) {
    uint32_t sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    return sp;
}

/* Paint the free stack below this function's frame; a leaf, so it pushes nothing further. */
static __attribute__((noinline)) void paint_stack(void) {
    volatile uint32_t *p = &_sstack;
    uint32_t limit = stack_pointer() - 16u;
    while ((uint32_t)p < limit) *p++ = PAINT;
}

/* Bytes of stack used below `top` since paint_stack: down to the lowest overwritten word. */
static uint32_t stack_used(uint32_t top) {
    const volatile uint32_t *p = &_sstack;
    while (p < &_estack && *p == PAINT) p++;
    return top - (uint32_t)p;
}

static __attribute__((noinline)) void spin(uint32_t loops) {
    __asm__ volatile("1: subs %0, %0, #1\n bne 1b\n" : "+r"(loops) : : "cc");
}

int main(void) {
    const size_t skeleton_size = (size_t)(kcz_skeleton_end - kcz_skeleton);
    const size_t sidecar_size = (size_t)(kcz_sidecar_end - kcz_sidecar);
    sink counted = {0, 0, -1}, written = {0, 0xFFFFFFFFu, -1};
    uint64_t start;
    uint32_t top, ticks;
    int rc;

    board_print_u32("skeleton_bytes", (uint32_t)skeleton_size);
    board_print_u32("sidecar_bytes", (uint32_t)sidecar_size);
    board_print_hex("sidecar_address", (uint32_t)kcz_sidecar);
    board_print_u32("workspace_bytes", (uint32_t)sizeof ws);
    board_ticks_start();
    start = board_ticks();
    spin(CALIBRATION_LOOPS);
    board_print_u32("calibration_ticks", (uint32_t)(board_ticks() - start));
    board_print_u32("calibration_instructions", 2u * CALIBRATION_LOOPS);

    top = stack_pointer();
    paint_stack();
    start = board_ticks();
    rc = kcz_decode(kcz_skeleton, skeleton_size, kcz_sidecar, sidecar_size, count_only, &counted,
                    &ws);
    ticks = (uint32_t)(board_ticks() - start);
    board_print_u32("stack_bytes", stack_used(top));
    board_print_u32("result", (uint32_t)rc);
    if (rc != KCZ_OK) {
        board_print("error=");
        board_print(kcz_error_name(rc));
        board_print("\n");
        return 2;
    }
    board_print_u32("decode_ticks", ticks);
    board_print_u32("counted_bytes", counted.bytes);

    written.handle = board_open_write("kcz_out.bin");
    if (written.handle == -1) {
        board_print("error=semihosting cannot open kcz_out.bin\n");
        return 4;
    }
    paint_stack();
    rc = kcz_decode(kcz_skeleton, skeleton_size, kcz_sidecar, sidecar_size, to_host, &written,
                    &ws);
    board_print_u32("stack_with_output_bytes", stack_used(top));
    board_close(written.handle);
    board_print_u32("output_result", (uint32_t)rc);
    board_print_u32("output_bytes", written.bytes);
    board_print_hex("crc32", written.crc ^ 0xFFFFFFFFu);
    return rc == KCZ_OK ? 0 : 2;
}

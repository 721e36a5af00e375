/* board.h - what the bare-metal test program needs from the (emulated) board: Arm semihosting
 * for output and exit, a SysTick-based counter of elapsed ticks, and the linker's stack bounds.
 * Written from the Arm semihosting specification (ARM DUI 0471/IHI 0082) and the Armv7-M
 * Architecture Reference Manual (SysTick, SCB registers). */
#ifndef KCZ_BOARD_H
#define KCZ_BOARD_H

#include <stdint.h>

/* Semihosting: a line of text, a decimal "key=value" line, a host file written in binary. */
void board_print(const char *text);
void board_print_u32(const char *key, uint32_t value);
void board_print_hex(const char *key, uint32_t value);
int board_open_write(const char *path); /* a host file handle, or -1 */
int board_write(int handle, const void *data, uint32_t len); /* 0 when all was written */
void board_close(int handle);
__attribute__((noreturn)) void board_exit(int status); /* ends the emulation with status */

/* SysTick on the processor clock from 0, 2^24 ticks per wrap, wraps counted by its interrupt.
 * Under QEMU's -icount shift=0 each instruction advances the clock by 1 ns, so ticks count
 * instructions in units of one clock period (calibrated against a loop of known length). */
void board_ticks_start(void);
uint64_t board_ticks(void);

/* The stack region the linker script reserves (grows down from stack_top). */
extern uint32_t _sstack, _estack;

#endif

/* startup.c - vector table, reset, faults, semihosting and SysTick for the Cortex-M4 test
 * program (QEMU mps2-an386). No RTOS and no C library start-up code: reset copies .data,
 * clears .bss, turns on the fault traps and calls main(); main's return value ends the
 * emulation through semihosting. */
#include <stdint.h>

#include "board.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss;
int main(void);

#define REG(addr) (*(volatile uint32_t *)(addr))
#define SCB_CCR REG(0xE000ED14u)   /* configuration and control */
#define SCB_SHCSR REG(0xE000ED24u) /* system handler control and state */
#define SCB_CFSR REG(0xE000ED28u)  /* configurable fault status */
#define SCB_HFSR REG(0xE000ED2Cu)  /* hard fault status */
#define SCB_BFAR REG(0xE000ED38u)  /* bus fault address */
#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)

/* Semihosting operations (Arm semihosting specification, section 6). */
enum { SYS_OPEN = 0x01, SYS_CLOSE = 0x02, SYS_WRITE0 = 0x04, SYS_WRITE = 0x05,
       SYS_EXIT_EXTENDED = 0x20 };
#define ADP_STOPPED_APPLICATION_EXIT 0x20026u

static uint32_t semihost(uint32_t op, const void *arg) {
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void board_print(const char *text) { semihost(SYS_WRITE0, text); }

static void print_number(const char *key, uint32_t value, uint32_t base) {
    char line[48], digits[12];
    uint32_t n = 0, i = 0;
    while (key[n] && n < sizeof line - 16) {
        line[n] = key[n];
        n++;
    }
    line[n++] = '=';
    do {
        digits[i++] = "0123456789abcdef"[value % base];
        value /= base;
    } while (value);
    while (i) line[n++] = digits[--i];
    line[n++] = '\n';
    line[n] = 0;
    board_print(line);
}

void board_print_u32(const char *key, uint32_t value) { print_number(key, value, 10); }
void board_print_hex(const char *key, uint32_t value) { print_number(key, value, 16); }

int board_open_write(const char *path) {
    uint32_t len = 0, args[3];
    while (path[len]) len++;
    args[0] = (uint32_t)path;
    args[1] = 5; /* "wb" */
    args[2] = len;
    return (int)semihost(SYS_OPEN, args);
}

int board_write(int handle, const void *data, uint32_t len) {
    uint32_t args[3] = {(uint32_t)handle, (uint32_t)data, len};
    return semihost(SYS_WRITE, args) != 0; /* returns the bytes not written */
}

void board_close(int handle) {
    uint32_t args[1] = {(uint32_t)handle};
    semihost(SYS_CLOSE, args);
}

void board_exit(int status) {
    uint32_t args[2] = {ADP_STOPPED_APPLICATION_EXIT, (uint32_t)status};
    for (;;) semihost(SYS_EXIT_EXTENDED, args);
}

static volatile uint32_t wraps;

void systick_handler(void) { wraps++; }

void board_ticks_start(void) {
    SYST_CSR = 0;
    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0;
    SYST_CSR = 7u; /* enable, interrupt on wrap, processor clock */
    while (SYST_CVR == 0) continue; /* the first reload: counting starts from 0xFFFFFF */
    wraps = 0;
}

uint64_t board_ticks(void) {
    uint32_t high, low;
    do {
        high = wraps;
        low = SYST_CVR;
    } while (high != wraps);
    return ((uint64_t)high << 24) + (0xFFFFFFu - low);
}

/* A fault ends the run with its status registers and the faulting instruction's address. */
void fault_report(const uint32_t *frame) {
    board_print("fault\n");
    board_print_hex("cfsr", SCB_CFSR);
    board_print_hex("hfsr", SCB_HFSR);
    board_print_hex("bfar", SCB_BFAR);
    board_print_hex("pc", frame[6]);
    board_exit(3);
}

__attribute__((naked)) void fault_handler(void) {
    __asm__ volatile(
        "tst lr, #4\n"
        "ite eq\n"
        "mrseq r0, msp\n"
        "mrsne r0, psp\n"
        "b fault_report\n");
}

__attribute__((noreturn)) void reset_handler(void) {
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss; dst++) *dst = 0;
    /* Trap divisions by zero. Unaligned single loads and stores are legal on the M4 (gcc uses
     * them for byte-wise reads it merges); a build with -mno-unaligned-access has none, so it
     * also traps them (KCZ_TRAP_UNALIGNED): then an unaligned access can only come from C
     * code that casts byte pointers to wider types, which strict-alignment cores (Cortex-M0)
     * cannot run. */
    SCB_CCR |= 1u << 4;
#ifdef KCZ_TRAP_UNALIGNED
    SCB_CCR |= 1u << 3;
#endif
    SCB_SHCSR |= (1u << 16) | (1u << 17) | (1u << 18); /* own handlers for mem/bus/usage */
    board_exit(main());
}

/* Cortex-M4 vector table: initial stack pointer, then the exception handlers. */
__attribute__((section(".vectors"), used)) static void *const vectors[16] = {
    &_estack,      reset_handler, fault_handler, fault_handler, fault_handler, fault_handler,
    fault_handler, 0,             0,             0,             0,             fault_handler,
    fault_handler, 0,             fault_handler, systick_handler,
};

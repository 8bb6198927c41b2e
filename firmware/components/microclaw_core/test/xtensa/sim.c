/* Runtime for test binaries on the QEMU Xtensa sim machine: bss clearing, output and exit through
 * the simulator call (QEMU's Xtensa ISS semihosting: a2 = call number, a3.. = arguments), and
 * the integer helpers Debian's lx106 libgcc lacks. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

extern char __bss_start[], __bss_end[];
int main(void);

static int simcall(int nr, int a, int b, int c) {
    register int a2 __asm__("a2") = nr;
    register int a3 __asm__("a3") = a;
    register int a4 __asm__("a4") = b;
    register int a5 __asm__("a5") = c;
    __asm__ volatile("simcall" : "+r"(a2), "+r"(a3) : "r"(a4), "r"(a5) : "memory");
    return a2;
}

void sim_write(const char *s, size_t n) { simcall(4, 1, (int)(uintptr_t)s, (int)n); }

void sim_exit(int code) {
    simcall(1, code, 0, 0);
    for (;;) {
    }
}

static char line[256];
static size_t fill;

void sim_putchar(int c) {
    line[fill++] = (char)c;
    if (c == '\n' || fill == sizeof line) {
        sim_write(line, fill);
        fill = 0;
    }
}

void sim_flush(void) {
    if (fill) sim_write(line, fill);
    fill = 0;
}

void sim_main(void) {
    memset(__bss_start, 0, (size_t)(__bss_end - __bss_start));
    int rc = main();
    sim_flush();
    sim_exit(rc);
}

/* Integer division and 64-bit helpers (shift-subtract; speed is not the point here). */
static uint64_t udivmod64(uint64_t n, uint64_t d, uint64_t *rem) {
    uint64_t q = 0, r = 0;
    if (d == 0) {
        if (rem) *rem = n;
        return ~(uint64_t)0;
    }
    for (int i = 63; i >= 0; i--) {
        r = (r << 1) | ((n >> i) & 1u);
        if (r >= d) {
            r -= d;
            q |= (uint64_t)1 << i;
        }
    }
    if (rem) *rem = r;
    return q;
}

static uint32_t udivmod32(uint32_t n, uint32_t d, uint32_t *rem) {
    uint32_t q = 0, r = 0;
    if (d == 0) {
        if (rem) *rem = n;
        return ~(uint32_t)0;
    }
    for (int i = 31; i >= 0; i--) {
        r = (r << 1) | ((n >> i) & 1u);
        if (r >= d) {
            r -= d;
            q |= (uint32_t)1 << i;
        }
    }
    if (rem) *rem = r;
    return q;
}

uint32_t __udivsi3(uint32_t n, uint32_t d) { return udivmod32(n, d, NULL); }
uint32_t __umodsi3(uint32_t n, uint32_t d) {
    uint32_t r;
    udivmod32(n, d, &r);
    return r;
}
int32_t __divsi3(int32_t a, int32_t b) {
    uint32_t q = udivmod32(a < 0 ? 0u - (uint32_t)a : (uint32_t)a, b < 0 ? 0u - (uint32_t)b : (uint32_t)b, NULL);
    return (a < 0) != (b < 0) ? (int32_t)(0u - q) : (int32_t)q;
}
int32_t __modsi3(int32_t a, int32_t b) {
    uint32_t r;
    udivmod32(a < 0 ? 0u - (uint32_t)a : (uint32_t)a, b < 0 ? 0u - (uint32_t)b : (uint32_t)b, &r);
    return a < 0 ? (int32_t)(0u - r) : (int32_t)r;
}
uint64_t __udivdi3(uint64_t n, uint64_t d) { return udivmod64(n, d, NULL); }
uint64_t __umoddi3(uint64_t n, uint64_t d) {
    uint64_t r;
    udivmod64(n, d, &r);
    return r;
}
int64_t __divdi3(int64_t a, int64_t b) {
    uint64_t q = udivmod64(a < 0 ? 0u - (uint64_t)a : (uint64_t)a, b < 0 ? 0u - (uint64_t)b : (uint64_t)b, NULL);
    return (a < 0) != (b < 0) ? (int64_t)(0u - q) : (int64_t)q;
}
int64_t __moddi3(int64_t a, int64_t b) {
    uint64_t r;
    udivmod64(a < 0 ? 0u - (uint64_t)a : (uint64_t)a, b < 0 ? 0u - (uint64_t)b : (uint64_t)b, &r);
    return a < 0 ? (int64_t)(0u - r) : (int64_t)r;
}
/* 64-bit multiply from 32-bit MULL only (the lx106 has MUL32 but no high-half multiply), built
 * like libgcc's: four 16x16 partial products for the low words' full product, plus the cross
 * terms' low halves. Monocypher's field arithmetic spends its time here. */
static uint64_t mul32x32(uint32_t x, uint32_t y) {
    uint32_t xl = x & 0xFFFFu, xh = x >> 16, yl = y & 0xFFFFu, yh = y >> 16;
    uint32_t ll = xl * yl, lh = xl * yh, hl = xh * yl, hh = xh * yh;
    uint32_t mid = (ll >> 16) + (lh & 0xFFFFu) + (hl & 0xFFFFu);
    uint32_t lo = (ll & 0xFFFFu) | (mid << 16);
    uint32_t hi = hh + (lh >> 16) + (hl >> 16) + (mid >> 16);
    return (uint64_t)hi << 32 | lo;
}

uint64_t __muldi3(uint64_t a, uint64_t b) {
    uint32_t a0 = (uint32_t)a, a1 = (uint32_t)(a >> 32), b0 = (uint32_t)b, b1 = (uint32_t)(b >> 32);
    uint64_t r = mul32x32(a0, b0);
    return r + ((uint64_t)(a0 * b1 + a1 * b0) << 32);
}

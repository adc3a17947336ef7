#include "wide_kernels.h"

#include <cpuid.h>
#include <stdlib.h>
#include <string.h>

/* CPUID leaf 7 EBX: AVX-512 F (16), DQ (17), VL (31); leaf 1 ECX: OSXSAVE (27).
 * XCR0 must enable the SSE, AVX and the three AVX-512 state components
 * (bits 1, 2, 5, 6, 7): without them the kernel would fault. Valgrind hides
 * AVX-512 from CPUID, so it runs the AVX2 path. */
static int detect(void) {
    const char *forced = getenv("MLORC_KERNELS");
    if (forced && strcmp(forced, "avx2") == 0) return 0;
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 0xE6u) != 0xE6u) return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    const unsigned need = (1u << 16) | (1u << 17) | (1u << 31);
    return (b & need) == need;
}

int wide_kernels_available(void) {
    /* Racing first calls compute the same answer. */
    static volatile int state = -1;
    int s = state;
    if (s < 0) state = s = detect();
    return s;
}

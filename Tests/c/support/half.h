/*
 * half.h - scalar reference conversions of bf16 and binary16 for the C
 * tests (the library's own conversions are what the tests check).
 */
#ifndef MLORC_TESTS_HALF_H
#define MLORC_TESTS_HALF_H

#include <stdint.h>
#include <string.h>

static inline float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Round to nearest even; a NaN stays a (quiet) NaN. */
static inline uint16_t f32_to_bf16_rne(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40);
    return (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

/* The compiler's binary16 (gcc and clang on x86-64): conversions round to nearest even. */
__extension__ typedef _Float16 binary16;

static inline float f16_to_f32(uint16_t h) {
    binary16 x;
    memcpy(&x, &h, 2);
    return (float)x;
}

static inline uint16_t f32_to_f16(float f) {
    binary16 x = (binary16)f;
    uint16_t h;
    memcpy(&h, &x, 2);
    return h;
}

#endif

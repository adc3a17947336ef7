/* Vector math that Swift's SIMD types lower to scalar libm calls: exposed as
 * clang builtins on 8-lane float vectors (Swift's SIMD8<Float>), which the
 * importer inlines into the Swift kernels as single AVX instructions. */
#ifndef MLORC_VECTOR_MATH_H
#define MLORC_VECTOR_MATH_H

typedef float mlorc_float8 __attribute__((ext_vector_type(8)));

/* Correctly rounded square root of each lane (vsqrtps). */
static inline mlorc_float8 mlorc_sqrt8(mlorc_float8 x) {
    return __builtin_elementwise_sqrt(x);
}

#endif

/*
 * state_checksum.h - the state checksum of libmlorc, re-implemented from the
 * documented format (Sources/MlorcCore/StateFormat.swift) for tests only.
 *
 * Tests need it to forge states that are *consistent* but semantically bad
 * (a future layout version, a huge step counter, odd dtypes): without a
 * matching checksum such a state is refused as corrupted before the check
 * under test is ever reached. Header: bytes 0..87 summed into 88..95;
 * low-rank payload: bytes 128.. summed into 72..79.
 */
#ifndef MLORC_TEST_STATE_CHECKSUM_H
#define MLORC_TEST_STATE_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint64_t mlorc_test_rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t mlorc_test_checksum(const unsigned char *p, size_t count) {
    const uint64_t prime1 = 0x9E3779B185EBCA87ull, prime2 = 0xC2B2AE3D27D4EB4Full;
    uint64_t lanes[4] = {0x6A09E667F3BCC908ull, 0xBB67AE8584CAA73Bull, 0x3C6EF372FE94F82Bull,
                         0xA54FF53A5F1D36F1ull};
    uint64_t h, w;
    size_t i = 0;
    int k;
    for (; i + 32 <= count; i += 32)
        for (k = 0; k < 4; ++k) {
            memcpy(&w, p + i + 8 * (size_t)k, 8);
            lanes[k] = mlorc_test_rotl(lanes[k] + w * prime2, 31) * prime1;
        }
    h = (uint64_t)count * prime1;
    for (k = 0; k < 4; ++k) h = mlorc_test_rotl((h ^ lanes[k]) * prime2, 27);
    for (; i < count; ++i) h = (h ^ p[i]) * prime1;
    h ^= h >> 33;
    h *= prime2;
    h ^= h >> 29;
    h *= prime1;
    h ^= h >> 32;
    return h;
}

/* Rewrites the header checksum of a state of at least 96 bytes. */
static inline void mlorc_test_fix_header(unsigned char *state) {
    uint64_t sum = mlorc_test_checksum(state, 88);
    memcpy(state + 88, &sum, 8);
}

/* Rewrites the payload checksum from the header's payload size, if the
 * buffer (of `bytes`) holds that payload; returns 1 if it did. */
static inline int mlorc_test_fix_payload(unsigned char *state, size_t bytes) {
    uint64_t payload, sum;
    if (bytes < 128) return 0;
    memcpy(&payload, state + 64, 8);
    if (payload > bytes - 128) return 0;
    sum = mlorc_test_checksum(state + 128, (size_t)payload);
    memcpy(state + 72, &sum, 8);
    return 1;
}

#endif

/*
 * dropout_ref.c — portable C dropout kernels (the path every CPU can run, and the one
 * the SIMD paths are checked against bit for bit).  RNG contract: csrc/rng.h.
 */
#include <string.h>

#include "internal.h"
#include "rng.h"

/* keep ? v : +0.0f without a branch (keep is 0 or 1; a branch on random bits
 * mispredicts half the time), bitwise the same as the SIMD paths' masked multiply. */
static inline float keep_or_zero(uint32_t keep, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    u &= 0u - keep;
    memcpy(&v, &u, 4);
    return v;
}

/* One block of len <= FD_DROPOUT_BLOCK elements starting at element 0 of out/x/mask.
 * out/x may be NULL (mask only); mask may be NULL. */
static void dropout_block_ref(int64_t len, float *out, const float *x, uint64_t key,
                              int64_t block, uint64_t thr64, float scale, uint8_t *mask) {
    uint64_t w[4][FD_DROPOUT_LANES];
    fd_rng_seed_block(w, key, block);
    for (int64_t j0 = 0; j0 < len; j0 += FD_DROPOUT_LANES) {
        /* xoshiro256+ (fd_rng_next) written over the lanes so compilers vectorise it */
        uint32_t keep[FD_DROPOUT_LANES];
        for (int lane = 0; lane < FD_DROPOUT_LANES; lane++) {
            const uint64_t r = w[0][lane] + w[3][lane];
            const uint64_t t = w[1][lane] << 17;
            w[2][lane] ^= w[0][lane];
            w[3][lane] ^= w[1][lane];
            w[1][lane] ^= w[2][lane];
            w[0][lane] ^= w[3][lane];
            w[2][lane] ^= t;
            w[3][lane] = fd_rotl64(w[3][lane], 45);
            keep[lane] = r >= thr64; /* (r >> 32) >= threshold <=> r >= threshold << 32 */
        }
        const int m = len - j0 < FD_DROPOUT_LANES ? (int)(len - j0) : FD_DROPOUT_LANES;
        uint32_t bits = 0;
        for (int e = 0; e < m; e++) bits |= keep[e] << e; /* pad bits stay 0 */
        if (mask) {
            mask[j0 / 8] = (uint8_t)bits;
            if (m > 8) mask[j0 / 8 + 1] = (uint8_t)(bits >> 8);
        }
        if (out)
            for (int e = 0; e < m; e++) out[j0 + e] = keep_or_zero(keep[e], x[j0 + e] * scale);
    }
}

void fd_dropout_blocks_ref(int64_t n, int64_t b0, int64_t b1, float *out, const float *x,
                           uint64_t seed, uint32_t threshold, float scale, uint8_t *mask) {
    const uint64_t key = fd_rng_key(seed);
    const uint64_t thr64 = (uint64_t)threshold << 32;
    for (int64_t b = b0; b < b1; b++) {
        const int64_t off = b * FD_DROPOUT_BLOCK;
        const int64_t len = n - off < FD_DROPOUT_BLOCK ? n - off : FD_DROPOUT_BLOCK;
        dropout_block_ref(len, out ? out + off : NULL, out ? x + off : NULL, key, b, thr64,
                          scale, mask ? mask + off / 8 : NULL);
    }
}

void fd_dropout_apply_ref(int64_t n, float *out, const float *x, const uint8_t *mask,
                          float scale) {
    for (int64_t j = 0; j < n; j++)
        out[j] = keep_or_zero((mask[j >> 3] >> (j & 7)) & 1u, x[j] * scale);
}

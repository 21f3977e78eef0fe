/*
 * dropout_avx2.c — AVX2 dropout kernels.  RNG contract: csrc/rng.h.
 *
 * The 16 lanes of a block live in four ymm state sets of 4 lanes.  The sets hold lanes
 * {0,1,4,5} {2,3,6,7} {8,9,12,13} {10,11,14,15}: then one in-lane vshufps of the high
 * 32-bit halves of two sets' outputs gives u for 8 consecutive elements in element
 * order, with no cross-lane permute.  AVX2 has no unsigned compare, so keep = (u >= t)
 * is max_epu32(u, t) == u; vmovmskps of that gives the mask byte directly, and the same
 * all-ones lanes select x * scale.
 */
#include <immintrin.h>
#include <string.h>

#include "internal.h"
#include "rng.h"

#define FD_DROPOUT_NT_BYTES (INT64_C(64) << 20) /* see dropout_avx512.c */

/* xoshiro256+ on 4 lanes: returns s0 + s3, then advances the state. */
static inline __attribute__((always_inline)) __m256i xoshiro4(__m256i s[4]) {
    const __m256i r = _mm256_add_epi64(s[0], s[3]);
    const __m256i t = _mm256_slli_epi64(s[1], 17);
    s[2] = _mm256_xor_si256(s[2], s[0]);
    s[3] = _mm256_xor_si256(s[3], s[1]);
    s[1] = _mm256_xor_si256(s[1], s[2]);
    s[0] = _mm256_xor_si256(s[0], s[3]);
    s[2] = _mm256_xor_si256(s[2], t);
    s[3] = _mm256_or_si256(_mm256_slli_epi64(s[3], 45), _mm256_srli_epi64(s[3], 19));
    return r;
}

/* All-ones in 32-bit lane e iff element e of the 8 drawn from sets p, q is kept. */
static inline __attribute__((always_inline)) __m256 keep8(__m256i p[4], __m256i q[4],
                                                          __m256i thr) {
    const __m256i rp = xoshiro4(p), rq = xoshiro4(q);
    const __m256i u = _mm256_castps_si256(_mm256_shuffle_ps(
        _mm256_castsi256_ps(rp), _mm256_castsi256_ps(rq), _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_max_epu32(u, thr), u));
}

/* Steps per pass over one half of the lanes: 64 steps = 1024 elements, so a pass's x and
 * out (4 KB each) are still in L1 when the other half's pass comes over them. */
#define FD_AVX2_PASS 64

static inline __attribute__((always_inline)) void
dropout_block_avx2(int64_t len, float *out, const float *x, uint64_t key, int64_t block,
                   uint32_t threshold, float scale, uint8_t *mask, const int do_out,
                   const int do_mask, const int stream) {
    /* lanes of state set v, in vector element order */
    static const int set_lane[4][4] = {{0, 1, 4, 5}, {2, 3, 6, 7}, {8, 9, 12, 13},
                                       {10, 11, 14, 15}};
    uint64_t w[4][FD_DROPOUT_LANES];
    FD_ALIGN(32) uint64_t st[2][2][4][4]; /* [half][set][word][element] */
    fd_rng_seed_block(w, key, block);
    for (int v = 0; v < 4; v++)
        for (int i = 0; i < 4; i++)
            for (int e = 0; e < 4; e++) st[v / 2][v % 2][i][e] = w[i][set_lane[v][e]];
    const __m256i thr = _mm256_set1_epi32((int)threshold);
    const __m256 vscale = _mm256_set1_ps(scale);
    const int64_t steps = (len + FD_DROPOUT_LANES - 1) / FD_DROPOUT_LANES;
    const int64_t full = len / FD_DROPOUT_LANES; /* steps with all 16 elements present */
    /* 16 state registers plus temporaries do not fit in 16 ymm: run lanes 0-7 (even mask
     * bytes, elements 16k..16k+7) and lanes 8-15 (odd bytes, 16k+8..16k+15) in turns. */
    for (int64_t k0 = 0; k0 < steps; k0 += FD_AVX2_PASS) {
        const int64_t k1 = k0 + FD_AVX2_PASS < steps ? k0 + FD_AVX2_PASS : steps;
        const int64_t kf = k1 < full ? k1 : full;
        for (int h = 0; h < 2; h++) {
            __m256i p[4], q[4];
            for (int i = 0; i < 4; i++) {
                p[i] = _mm256_load_si256((const __m256i *)st[h][0][i]);
                q[i] = _mm256_load_si256((const __m256i *)st[h][1][i]);
            }
            int64_t k = k0;
            for (; k < kf; k++) {
                const __m256 keep = keep8(p, q, thr);
                if (do_mask) mask[2 * k + h] = (uint8_t)_mm256_movemask_ps(keep);
                if (do_out) {
                    const int64_t j = 16 * k + 8 * h;
                    const __m256 y =
                        _mm256_and_ps(keep, _mm256_mul_ps(_mm256_loadu_ps(x + j), vscale));
                    if (stream)
                        _mm256_stream_ps(out + j, y);
                    else
                        _mm256_storeu_ps(out + j, y);
                }
            }
            if (k < k1) { /* the partial last step of the tensor's last block */
                const int rem = (int)(len - 16 * k - 8 * h); /* elements of this half */
                const unsigned bits = (unsigned)_mm256_movemask_ps(keep8(p, q, thr)) &
                                      (rem >= 8 ? 0xffu : rem > 0 ? (1u << rem) - 1u : 0u);
                if (do_mask && rem > 0) mask[2 * k + h] = (uint8_t)bits;
                if (do_out)
                    for (int e = 0; e < rem && e < 8; e++)
                        out[16 * k + 8 * h + e] =
                            ((bits >> e) & 1u) ? x[16 * k + 8 * h + e] * scale : 0.0f;
            }
            for (int i = 0; i < 4; i++) {
                _mm256_store_si256((__m256i *)st[h][0][i], p[i]);
                _mm256_store_si256((__m256i *)st[h][1][i], q[i]);
            }
        }
    }
}

void fd_dropout_blocks_avx2(int64_t n, int64_t b0, int64_t b1, float *out, const float *x,
                            uint64_t seed, uint32_t threshold, float scale, uint8_t *mask) {
    const uint64_t key = fd_rng_key(seed);
    const int stream = out && n * (int64_t)sizeof(float) >= FD_DROPOUT_NT_BYTES &&
                       ((uintptr_t)out & 31) == 0;
    for (int64_t b = b0; b < b1; b++) {
        const int64_t off = b * FD_DROPOUT_BLOCK;
        const int64_t len = n - off < FD_DROPOUT_BLOCK ? n - off : FD_DROPOUT_BLOCK;
        float *o = out ? out + off : NULL;
        const float *xi = out ? x + off : NULL;
        uint8_t *m = mask ? mask + off / 8 : NULL;
        if (out && mask && stream)
            dropout_block_avx2(len, o, xi, key, b, threshold, scale, m, 1, 1, 1);
        else if (out && mask)
            dropout_block_avx2(len, o, xi, key, b, threshold, scale, m, 1, 1, 0);
        else if (out && stream)
            dropout_block_avx2(len, o, xi, key, b, threshold, scale, NULL, 1, 0, 1);
        else if (out)
            dropout_block_avx2(len, o, xi, key, b, threshold, scale, NULL, 1, 0, 0);
        else if (mask)
            dropout_block_avx2(len, NULL, NULL, key, b, threshold, scale, m, 0, 1, 0);
    }
    if (stream) _mm_sfence();
}

/* Bit e of an 8-bit mask byte -> all-ones in 32-bit lane e. */
static inline __attribute__((always_inline)) __m256 expand8(unsigned byte, __m256i sel) {
    const __m256i v = _mm256_and_si256(_mm256_set1_epi32((int)byte), sel);
    return _mm256_castsi256_ps(_mm256_cmpeq_epi32(v, sel));
}

void fd_dropout_apply_avx2(int64_t n, float *out, const float *x, const uint8_t *mask,
                           float scale) {
    const __m256 vscale = _mm256_set1_ps(scale);
    const __m256i sel = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const int stream = n * (int64_t)sizeof(float) >= FD_DROPOUT_NT_BYTES &&
                       ((uintptr_t)out & 31) == 0;
    int64_t j = 0;
    for (; j + 32 <= n; j += 32) {
        uint32_t m;
        memcpy(&m, mask + j / 8, 4);
        __m256 y[4];
        for (int q = 0; q < 4; q++)
            y[q] = _mm256_and_ps(expand8((m >> (8 * q)) & 0xffu, sel),
                                 _mm256_mul_ps(_mm256_loadu_ps(x + j + 8 * q), vscale));
        for (int q = 0; q < 4; q++) {
            if (stream)
                _mm256_stream_ps(out + j + 8 * q, y[q]);
            else
                _mm256_storeu_ps(out + j + 8 * q, y[q]);
        }
    }
    if (stream) _mm_sfence();
    for (; j + 8 <= n; j += 8)
        _mm256_storeu_ps(out + j, _mm256_and_ps(expand8(mask[j / 8], sel),
                                                _mm256_mul_ps(_mm256_loadu_ps(x + j), vscale)));
    for (; j < n; j++)
        out[j] = ((mask[j >> 3] >> (j & 7)) & 1) ? x[j] * scale : 0.0f;
}

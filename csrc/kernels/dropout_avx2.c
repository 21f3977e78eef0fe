/*
 * dropout_avx2.c — AVX2 dropout kernels.  RNG contract: csrc/rng.h.
 *
 * The 16 lanes of a block live in four ymm state sets of 4 lanes.  The sets hold lanes
 * {0,1,4,5} {2,3,6,7} {8,9,12,13} {10,11,14,15}: then one in-lane vshufps of the high
 * 32-bit halves of two sets' outputs gives u for 8 consecutive elements in element
 * order, with no cross-lane permute.  AVX2 has no unsigned compare, so keep = (u >= t)
 * is max_epu32(u, t) == u (cheaper than shifting each 64-bit output down and using the
 * signed 64-bit compare); vmovmskps of that gives the mask byte directly, and the same
 * all-ones lanes select x * scale.  16 state registers do not fit beside the
 * temporaries in 16 ymm, so lanes 0-7 and 8-15 run in alternating passes of 64 steps
 * (2.6 -> 4.0 G elements/s per core from cache, against one pass with spills).
 */
#include <immintrin.h>
#include <string.h>

#include "internal.h"
#include "rng.h"

/* dropout_apply calls of at least this many output bytes use non-temporal stores (see
 * dropout_avx512.c).  The forward kernel does not stream: its passes write half lines,
 * which defeats write combining, and staging through a buffer measured no faster. */
#ifndef FD_DROPOUT_APPLY_NT_BYTES
#define FD_DROPOUT_APPLY_NT_BYTES (INT64_C(16) << 20)
#endif

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
                   const int do_mask) {
    FD_ALIGN(32) uint64_t w[4][FD_DROPOUT_LANES];
    FD_ALIGN(32) uint64_t st[2][2][4][4]; /* [half][set][word][element] */
    fd_rng_seed_block(w, key, block);
    /* set v holds lanes f, f+1, f+4, f+5 (f = 8*(v/2) + 2*(v%2)).  Explicit 128-bit moves:
     * gcc 12 -O3 miscompiled the same permutation written as a table-driven copy loop in
     * dropout_avx512.c (right at -O2, with -fno-tree-vectorize, and under ASan/UBSan). */
    for (int v = 0; v < 4; v++) {
        const int f = 8 * (v / 2) + 2 * (v % 2);
        for (int i = 0; i < 4; i++) {
            memcpy(&st[v / 2][v % 2][i][0], &w[i][f], 2 * sizeof(uint64_t));
            memcpy(&st[v / 2][v % 2][i][2], &w[i][f + 4], 2 * sizeof(uint64_t));
        }
    }
    const __m256i thr = _mm256_set1_epi32((int)threshold);
    const __m256 vscale = _mm256_set1_ps(scale);
    const int64_t steps = (len + FD_DROPOUT_LANES - 1) / FD_DROPOUT_LANES;
    const int64_t full = len / FD_DROPOUT_LANES; /* steps with all 16 elements present */
    /* lanes 0-7 (even mask bytes, elements 16k..16k+7) and lanes 8-15 (odd bytes,
     * 16k+8..16k+15) in turns */
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
                    _mm256_storeu_ps(out + j, _mm256_and_ps(keep, _mm256_mul_ps(
                                                             _mm256_loadu_ps(x + j), vscale)));
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
    for (int64_t b = b0; b < b1; b++) {
        const int64_t off = b * FD_DROPOUT_BLOCK;
        const int64_t len = n - off < FD_DROPOUT_BLOCK ? n - off : FD_DROPOUT_BLOCK;
        float *o = out ? out + off : NULL;
        const float *xi = out ? x + off : NULL;
        uint8_t *m = mask ? mask + off / 8 : NULL;
        if (out && mask)
            dropout_block_avx2(len, o, xi, key, b, threshold, scale, m, 1, 1);
        else if (out)
            dropout_block_avx2(len, o, xi, key, b, threshold, scale, NULL, 1, 0);
        else if (mask)
            dropout_block_avx2(len, NULL, NULL, key, b, threshold, scale, m, 0, 1);
    }
}

/* Bit e of an 8-bit mask byte -> all-ones in 32-bit lane e. */
static inline __attribute__((always_inline)) __m256 expand8(unsigned byte, __m256i sel) {
    const __m256i v = _mm256_and_si256(_mm256_set1_epi32((int)byte), sel);
    return _mm256_castsi256_ps(_mm256_cmpeq_epi32(v, sel));
}

static void apply_avx2(int64_t n, float *out, const float *x, const uint8_t *mask,
                       float scale) {
    const __m256 vscale = _mm256_set1_ps(scale);
    const __m256i sel = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    int64_t j = 0;
    for (; j + 32 <= n; j += 32) {
        uint32_t m;
        memcpy(&m, mask + j / 8, 4);
        for (int q = 0; q < 4; q++)
            _mm256_storeu_ps(out + j + 8 * q,
                             _mm256_and_ps(expand8((m >> (8 * q)) & 0xffu, sel),
                                           _mm256_mul_ps(_mm256_loadu_ps(x + j + 8 * q), vscale)));
    }
    for (; j + 8 <= n; j += 8)
        _mm256_storeu_ps(out + j, _mm256_and_ps(expand8(mask[j / 8], sel),
                                                _mm256_mul_ps(_mm256_loadu_ps(x + j), vscale)));
    for (; j < n; j++)
        out[j] = ((mask[j >> 3] >> (j & 7)) & 1) ? x[j] * scale : 0.0f;
}

void fd_dropout_apply_avx2(int64_t n, float *out, const float *x, const uint8_t *mask,
                           float scale) {
    if (n * (int64_t)sizeof(float) < FD_DROPOUT_APPLY_NT_BYTES || ((uintptr_t)out & 3)) {
        apply_avx2(n, out, x, mask, scale);
        return;
    }
    /* Non-temporal stores need 64-byte aligned lines: the first h elements go the
     * ordinary way, then element j's 16 mask bits sit at bit offset j % 8 (constant). */
    const int64_t h = (int64_t)(((64 - ((uintptr_t)out & 63)) & 63) / sizeof(float));
    apply_avx2(h, out, x, mask, scale);
    const __m256 vscale = _mm256_set1_ps(scale);
    const __m256i sel = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const int shift = (int)(h & 7);
    int64_t j = h;
    for (; j + 32 <= n; j += 16) { /* + 32: the 4-byte mask load stays inside the mask */
        uint32_t m;
        memcpy(&m, mask + j / 8, 4);
        m >>= shift;
        _mm256_stream_ps(out + j, _mm256_and_ps(expand8(m & 0xffu, sel),
                                                _mm256_mul_ps(_mm256_loadu_ps(x + j), vscale)));
        _mm256_stream_ps(out + j + 8,
                         _mm256_and_ps(expand8((m >> 8) & 0xffu, sel),
                                       _mm256_mul_ps(_mm256_loadu_ps(x + j + 8), vscale)));
    }
    _mm_sfence();
    for (; j < n; j++)
        out[j] = ((mask[j >> 3] >> (j & 7)) & 1) ? x[j] * scale : 0.0f;
}

/*
 * dropout_avx512.c — AVX-512 (F+DQ+BW+VL) dropout kernels.  RNG contract: csrc/rng.h.
 *
 * The 16 lanes of a block live in four ymm state sets of 4 lanes, holding lanes
 * {0,1,4,5} {2,3,6,7} {8,9,12,13} {10,11,14,15}: one in-lane vshufps of the high halves
 * of two sets' outputs gives u for 8 consecutive elements in element order, one vpcmpud
 * turns them into a mask byte in a k register, and that k drives the masked multiply of
 * those 8 floats and is stored as the mask byte.  xoshiro256+ is 7 ops per 4 lanes (the
 * five xors become two vpternlogq and two vpxor; the rotate is one vprolq).
 *
 * 256-bit, not 512-bit, vectors: Zen 4 splits zmm ops in two anyway, and measured here
 * the zmm form (2 × 8 lanes, vpcmpuq zmm, one 16-bit k) ran 5.2 G elements/s per core
 * against 6.3 for this one (mask only: 5.6 against 6.8).
 */
#include <immintrin.h>
#include <string.h>

#include "internal.h"
#include "rng.h"

/* Non-temporal stores pay once the output cannot stay cached anyway: they save the
 * read-for-ownership of every output line.  Measured here (Zen 4, 32 MB L3, 1 thread,
 * 16-byte aligned NumPy buffers, best of 6-10 on a shared machine): forward ~3.0 -> ~3.5
 * G elements/s at 32 and 128 MB (a smaller, noisier gain at 16 MB, where a consumer
 * could still find the output in L3); apply 20-23 -> 31-37 GB/s at 32-128 MB and
 * 30 -> 40 GB/s at 16 MB.  The forward test is on the whole tensor; apply only sees its
 * thread's part. */
#ifndef FD_DROPOUT_NT_BYTES
#define FD_DROPOUT_NT_BYTES (INT64_C(32) << 20)
#endif
#ifndef FD_DROPOUT_APPLY_NT_BYTES
#define FD_DROPOUT_APPLY_NT_BYTES (INT64_C(16) << 20)
#endif

/* Streaming writer of consecutive 16-float vectors v_0, v_1, ... to dst, which NumPy
 * aligns to 16 bytes only: with a = misalignment in floats, each whole 64-byte line
 * (v_{k-1}[16-a..15], v_k[0..15-a]) is assembled by one vpermt2ps and written with a
 * non-temporal store; the partial lines at either end get ordinary masked stores (a
 * neighbouring block, maybe another thread's, owns the rest of those lines). */
typedef struct {
    float *line;     /* the aligned line that v_k completes */
    __m512 prev;     /* v_{k-1} */
    __m512i idx;     /* i + 16 - a */
    int a, started;
} nt_writer;

static inline __attribute__((always_inline)) void nt_begin(nt_writer *w, float *dst) {
    w->a = (int)(((uintptr_t)dst & 63) / sizeof(float));
    w->line = dst - w->a;
    w->idx = _mm512_add_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
                                                 14, 15),
                              _mm512_set1_epi32(16 - w->a));
    w->prev = _mm512_setzero_ps();
    w->started = 0;
}

static inline __attribute__((always_inline)) void nt_put(nt_writer *w, __m512 v) {
    if (__builtin_expect(w->started, 1))
        _mm512_stream_ps(w->line, _mm512_permutex2var_ps(w->prev, w->idx, v));
    else if (w->a) /* head: only v_0[0..15-a] is ours */
        _mm512_mask_storeu_ps(w->line + w->a, (__mmask16)(0xFFFFu >> w->a), v);
    else
        _mm512_stream_ps(w->line, v);
    w->started = 1;
    w->prev = v;
    w->line += 16;
}

/* Write the a floats still held (the last vector's v[16-a..15]); the caller's next store
 * (if any) starts right after them. */
static inline __attribute__((always_inline)) void nt_end(nt_writer *w) {
    if (w->started && w->a)
        _mm512_mask_storeu_ps(w->line, (__mmask16)((1u << w->a) - 1u),
                              _mm512_permutex2var_ps(w->prev, w->idx, w->prev));
}

/* xoshiro256+ on 4 lanes: returns s0 + s3, then advances the state.  In terms of the old
 * words the update (fd_rng_next) is s1' = s1^s2^s0, s2' = s2^s0^(s1 << 17),
 * s0' = s0^s3^s1, s3' = rotl(s3^s1, 45): the three-way xors are one vpternlogq each
 * (gcc does not fold them by itself). */
#define XOR3(a, b, c) _mm256_ternarylogic_epi64((a), (b), (c), 0x96)
static inline __attribute__((always_inline)) __m256i xoshiro4(__m256i s[4]) {
    const __m256i r = _mm256_add_epi64(s[0], s[3]);
    const __m256i t = _mm256_slli_epi64(s[1], 17);
    const __m256i d = _mm256_xor_si256(s[3], s[1]);
    s[1] = XOR3(s[1], s[2], s[0]); /* in this order each vpternlogq overwrites a dead value */
    s[2] = XOR3(s[2], s[0], t);
    s[0] = _mm256_xor_si256(s[0], d);
    s[3] = _mm256_rol_epi64(d, 45);
    return r;
}

/* Keep bits of the 8 elements drawn by state sets p, q (bit e = element e). */
static inline __attribute__((always_inline)) __mmask8 keep8(__m256i p[4], __m256i q[4],
                                                            __m256i thr) {
    const __m256i rp = xoshiro4(p), rq = xoshiro4(q);
    const __m256i u = _mm256_castps_si256(_mm256_shuffle_ps(
        _mm256_castsi256_ps(rp), _mm256_castsi256_ps(rq), _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm256_cmpge_epu32_mask(u, thr); /* u = r >> 32 */
}

static inline __attribute__((always_inline)) void
dropout_block_avx512(int64_t len, float *out, const float *x, uint64_t key, int64_t block,
                     uint32_t threshold, float scale, uint8_t *mask, const int do_out,
                     const int do_mask, const int stream) {
    FD_ALIGN(64) uint64_t w[4][FD_DROPOUT_LANES];
    fd_rng_seed_block(w, key, block);
    /* s[set][word]: set v holds lanes f, f+1, f+4, f+5.  Explicit 128-bit loads: gcc 12
     * -O3 miscompiled this permutation written as a table-driven copy into an aligned
     * array (wrong bits; right at -O2, with -fno-tree-vectorize, and under ASan/UBSan). */
    __m256i s[4][4];
    for (int v = 0; v < 4; v++) {
        const int f = 8 * (v / 2) + 2 * (v % 2);
        for (int i = 0; i < 4; i++)
            s[v][i] = _mm256_inserti128_si256(
                _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)&w[i][f])),
                _mm_loadu_si128((const __m128i *)&w[i][f + 4]), 1);
    }
    const __m256i thr = _mm256_set1_epi32((int)threshold);
    const __m256 vscale = _mm256_set1_ps(scale);
    const int64_t steps = len / FD_DROPOUT_LANES;
    int64_t k = 0;
    nt_writer nw;
    if (stream) nt_begin(&nw, out);
    for (; k < steps; k++) {
        const __mmask8 k0 = keep8(s[0], s[1], thr), k1 = keep8(s[2], s[3], thr);
        if (do_mask) {
            _store_mask8((__mmask8 *)(mask + 2 * k), k0);
            _store_mask8((__mmask8 *)(mask + 2 * k + 1), k1);
        }
        if (do_out) {
            const __m256 y0 = _mm256_maskz_mul_ps(k0, _mm256_loadu_ps(x + 16 * k), vscale);
            const __m256 y1 = _mm256_maskz_mul_ps(k1, _mm256_loadu_ps(x + 16 * k + 8), vscale);
            if (stream) {
                nt_put(&nw, _mm512_insertf32x8(_mm512_castps256_ps512(y0), y1, 1));
            } else {
                _mm256_storeu_ps(out + 16 * k, y0);
                _mm256_storeu_ps(out + 16 * k + 8, y1);
            }
        }
    }
    if (stream) nt_end(&nw);
    const int rem = (int)(len - steps * FD_DROPOUT_LANES);
    if (rem) { /* the partial last step of a tensor's last block */
        const __mmask8 k0 = keep8(s[0], s[1], thr), k1 = keep8(s[2], s[3], thr);
        const __mmask16 tail = (__mmask16)((1u << rem) - 1u);
        const __mmask16 keep = (__mmask16)(((unsigned)k0 | ((unsigned)k1 << 8)) & tail);
        if (do_mask) {
            mask[2 * k] = (uint8_t)keep;
            if (rem > 8) mask[2 * k + 1] = (uint8_t)(keep >> 8);
        }
        if (do_out) {
            const __m512 xt = _mm512_maskz_loadu_ps(tail, x + 16 * k);
            _mm512_mask_storeu_ps(out + 16 * k, tail,
                                  _mm512_maskz_mul_ps(keep, xt, _mm512_set1_ps(scale)));
        }
    }
}

void fd_dropout_blocks_avx512(int64_t n, int64_t b0, int64_t b1, float *out, const float *x,
                              uint64_t seed, uint32_t threshold, float scale, uint8_t *mask) {
    const uint64_t key = fd_rng_key(seed);
    const int stream = out && n * (int64_t)sizeof(float) >= FD_DROPOUT_NT_BYTES &&
                       ((uintptr_t)out & 3) == 0;
    for (int64_t b = b0; b < b1; b++) {
        const int64_t off = b * FD_DROPOUT_BLOCK;
        const int64_t len = n - off < FD_DROPOUT_BLOCK ? n - off : FD_DROPOUT_BLOCK;
        float *o = out ? out + off : NULL;
        const float *xi = out ? x + off : NULL;
        uint8_t *m = mask ? mask + off / 8 : NULL;
        if (out && mask && stream)
            dropout_block_avx512(len, o, xi, key, b, threshold, scale, m, 1, 1, 1);
        else if (out && mask)
            dropout_block_avx512(len, o, xi, key, b, threshold, scale, m, 1, 1, 0);
        else if (out && stream)
            dropout_block_avx512(len, o, xi, key, b, threshold, scale, NULL, 1, 0, 1);
        else if (out)
            dropout_block_avx512(len, o, xi, key, b, threshold, scale, NULL, 1, 0, 0);
        else if (mask)
            dropout_block_avx512(len, NULL, NULL, key, b, threshold, scale, m, 0, 1, 0);
    }
    if (stream) _mm_sfence();
}

static void apply_avx512(int64_t n, float *out, const float *x, const uint8_t *mask,
                         float scale) {
    const __m512 vscale = _mm512_set1_ps(scale);
    int64_t j = 0;
    for (; j + 64 <= n; j += 64) {
        __mmask64 keep;
        memcpy(&keep, mask + j / 8, 8);
        const __m512 x0 = _mm512_loadu_ps(x + j), x1 = _mm512_loadu_ps(x + j + 16);
        const __m512 x2 = _mm512_loadu_ps(x + j + 32), x3 = _mm512_loadu_ps(x + j + 48);
        _mm512_storeu_ps(out + j, _mm512_maskz_mul_ps((__mmask16)keep, x0, vscale));
        _mm512_storeu_ps(out + j + 16, _mm512_maskz_mul_ps((__mmask16)(keep >> 16), x1, vscale));
        _mm512_storeu_ps(out + j + 32, _mm512_maskz_mul_ps((__mmask16)(keep >> 32), x2, vscale));
        _mm512_storeu_ps(out + j + 48, _mm512_maskz_mul_ps((__mmask16)(keep >> 48), x3, vscale));
    }
    for (; j + 16 <= n; j += 16) {
        __mmask16 keep;
        memcpy(&keep, mask + j / 8, 2);
        _mm512_storeu_ps(out + j, _mm512_maskz_mul_ps(keep, _mm512_loadu_ps(x + j), vscale));
    }
    if (j < n) { /* fewer than 16 left: read only the mask bytes that exist */
        const int rem = (int)(n - j);
        const __mmask16 tail = (__mmask16)((1u << rem) - 1u);
        unsigned bits = mask[j / 8];
        if (rem > 8) bits |= (unsigned)mask[j / 8 + 1] << 8;
        const __mmask16 keep = (__mmask16)bits & tail;
        const __m512 xt = _mm512_maskz_loadu_ps(tail, x + j);
        _mm512_mask_storeu_ps(out + j, tail, _mm512_maskz_mul_ps(keep, xt, vscale));
    }
}

void fd_dropout_apply_avx512(int64_t n, float *out, const float *x, const uint8_t *mask,
                             float scale) {
    if (n * (int64_t)sizeof(float) < FD_DROPOUT_APPLY_NT_BYTES || ((uintptr_t)out & 3)) {
        apply_avx512(n, out, x, mask, scale);
        return;
    }
    const __m512 vscale = _mm512_set1_ps(scale);
    nt_writer w;
    nt_begin(&w, out);
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        __mmask16 keep;
        memcpy(&keep, mask + j / 8, 2);
        nt_put(&w, _mm512_maskz_mul_ps(keep, _mm512_loadu_ps(x + j), vscale));
    }
    nt_end(&w);
    _mm_sfence();
    if (j < n) apply_avx512(n - j, out + j, x + j, mask + j / 8, scale);
}

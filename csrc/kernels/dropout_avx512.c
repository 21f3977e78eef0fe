/*
 * dropout_avx512.c — AVX-512 (F+DQ+BW+VL) dropout kernels.  RNG contract: csrc/rng.h.
 *
 * The 16 lanes of a block live in two zmm state sets (lanes 0-7 and 8-15), so one
 * step draws 16 consecutive elements: two unsigned 64-bit compares against
 * threshold << 32 give two 8-bit kmasks = the two mask bytes of the step, and one
 * masked multiply writes the 16 outputs.  xoshiro256+ costs 8 ops per 8 lanes
 * (the five xors fold into three vpternlogq, the rotate is one vprolq).
 */
#include <immintrin.h>
#include <string.h>

#include "internal.h"
#include "rng.h"

/* Outputs of at least this many bytes use non-temporal stores when `out` is 64-byte
 * aligned: beyond the last-level cache the result cannot stay cached anyway, and
 * streaming saves the read-for-ownership of every output line. */
#define FD_DROPOUT_NT_BYTES (INT64_C(64) << 20)

/* xoshiro256+ on 8 lanes: returns s0 + s3, then advances the state.  With d = s3 ^ s1
 * and c = s2 ^ s0 the reference update is s1 ^= c, s0 ^= d, s2 = c ^ (s1 << 17),
 * s3 = rotl(d, 45): the three-way xors are one vpternlogq each (gcc does not fold them). */
#define XOR3(a, b, c) _mm512_ternarylogic_epi64((a), (b), (c), 0x96)
static inline __attribute__((always_inline)) __m512i xoshiro8(__m512i *s0, __m512i *s1,
                                                              __m512i *s2, __m512i *s3) {
    const __m512i r = _mm512_add_epi64(*s0, *s3);
    const __m512i t = _mm512_slli_epi64(*s1, 17);
    const __m512i d = _mm512_xor_si512(*s3, *s1);
    const __m512i s2_new = XOR3(*s2, *s0, t);
    *s1 = XOR3(*s1, *s2, *s0);
    *s0 = _mm512_xor_si512(*s0, d);
    *s2 = s2_new;
    *s3 = _mm512_rol_epi64(d, 45);
    return r;
}

/* Keep bits of one step: bit e set iff element 16k+e is kept (lanes 0-7 in a, 8-15 in b). */
static inline __attribute__((always_inline)) __mmask16 step16(__m512i a[4], __m512i b[4],
                                                              __m512i thr) {
    const __m512i ra = xoshiro8(&a[0], &a[1], &a[2], &a[3]);
    const __m512i rb = xoshiro8(&b[0], &b[1], &b[2], &b[3]);
    /* (r >> 32) >= threshold  <=>  r >= threshold << 32  (unsigned) */
    return _mm512_kunpackb(_mm512_cmpge_epu64_mask(rb, thr), _mm512_cmpge_epu64_mask(ra, thr));
}

static inline __attribute__((always_inline)) void
dropout_block_avx512(int64_t len, float *out, const float *x, uint64_t key, int64_t block,
                     uint32_t threshold, float scale, uint8_t *mask, const int do_out,
                     const int do_mask, const int stream) {
    FD_ALIGN(64) uint64_t w[4][FD_DROPOUT_LANES];
    fd_rng_seed_block(w, key, block);
    __m512i a[4], b[4];
    for (int i = 0; i < 4; i++) {
        a[i] = _mm512_load_si512(&w[i][0]);
        b[i] = _mm512_load_si512(&w[i][8]);
    }
    const __m512i thr = _mm512_set1_epi64((long long)((uint64_t)threshold << 32));
    const __m512 vscale = _mm512_set1_ps(scale);
    const int64_t steps = len / FD_DROPOUT_LANES;
    int64_t k = 0;

    for (; k < steps; k++) {
        const __mmask16 keep = step16(a, b, thr);
        if (do_mask) memcpy(mask + 2 * k, &keep, 2);
        if (do_out) {
            const __m512 y =
                _mm512_maskz_mul_ps(keep, _mm512_loadu_ps(x + 16 * k), vscale);
            if (stream)
                _mm512_stream_ps(out + 16 * k, y);
            else
                _mm512_storeu_ps(out + 16 * k, y);
        }
    }
    const int rem = (int)(len - steps * FD_DROPOUT_LANES);
    if (rem) { /* the partial last step of a tensor's last block */
        const __mmask16 tail = (__mmask16)((1u << rem) - 1u);
        const __mmask16 keep = step16(a, b, thr) & tail;
        if (do_mask) {
            mask[2 * k] = (uint8_t)keep;
            if (rem > 8) mask[2 * k + 1] = (uint8_t)(keep >> 8);
        }
        if (do_out) {
            const __m512 y =
                _mm512_maskz_mul_ps(keep, _mm512_maskz_loadu_ps(tail, x + 16 * k), vscale);
            _mm512_mask_storeu_ps(out + 16 * k, tail, y);
        }
    }
}

void fd_dropout_blocks_avx512(int64_t n, int64_t b0, int64_t b1, float *out, const float *x,
                              uint64_t seed, uint32_t threshold, float scale, uint8_t *mask) {
    const uint64_t key = fd_rng_key(seed);
    const int stream = out && n * (int64_t)sizeof(float) >= FD_DROPOUT_NT_BYTES &&
                       ((uintptr_t)out & 63) == 0;
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

void fd_dropout_apply_avx512(int64_t n, float *out, const float *x, const uint8_t *mask,
                             float scale) {
    const __m512 vscale = _mm512_set1_ps(scale);
    const int stream = n * (int64_t)sizeof(float) >= FD_DROPOUT_NT_BYTES &&
                       ((uintptr_t)out & 63) == 0;
    int64_t j = 0;
    if (stream) {
        for (; j + 16 <= n; j += 16) {
            __mmask16 keep;
            memcpy(&keep, mask + j / 8, 2);
            _mm512_stream_ps(out + j, _mm512_maskz_mul_ps(keep, _mm512_loadu_ps(x + j), vscale));
        }
        _mm_sfence();
    } else {
        for (; j + 64 <= n; j += 64) {
            __mmask64 keep;
            memcpy(&keep, mask + j / 8, 8);
            __m512 x0 = _mm512_loadu_ps(x + j), x1 = _mm512_loadu_ps(x + j + 16);
            __m512 x2 = _mm512_loadu_ps(x + j + 32), x3 = _mm512_loadu_ps(x + j + 48);
            _mm512_storeu_ps(out + j, _mm512_maskz_mul_ps((__mmask16)keep, x0, vscale));
            _mm512_storeu_ps(out + j + 16,
                             _mm512_maskz_mul_ps((__mmask16)(keep >> 16), x1, vscale));
            _mm512_storeu_ps(out + j + 32,
                             _mm512_maskz_mul_ps((__mmask16)(keep >> 32), x2, vscale));
            _mm512_storeu_ps(out + j + 48,
                             _mm512_maskz_mul_ps((__mmask16)(keep >> 48), x3, vscale));
        }
        for (; j + 16 <= n; j += 16) {
            __mmask16 keep;
            memcpy(&keep, mask + j / 8, 2);
            _mm512_storeu_ps(out + j, _mm512_maskz_mul_ps(keep, _mm512_loadu_ps(x + j), vscale));
        }
    }
    if (j < n) { /* fewer than 16 left: read only the mask bytes that exist */
        const int rem = (int)(n - j);
        const __mmask16 tail = (__mmask16)((1u << rem) - 1u);
        unsigned bits = mask[j / 8];
        if (rem > 8) bits |= (unsigned)mask[j / 8 + 1] << 8;
        const __mmask16 keep = (__mmask16)bits & tail;
        _mm512_mask_storeu_ps(out + j, tail,
                              _mm512_maskz_mul_ps(keep, _mm512_maskz_loadu_ps(tail, x + j), vscale));
    }
}

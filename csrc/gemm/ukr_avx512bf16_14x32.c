/* ukr_avx512bf16_14x32.c — the AVX512-BF16 bf16 GEMM micro-kernel (vdpbf16ps) and the
 * fp32 -> bf16 conversion (vcvtne2ps2bf16).  Compiled with -mavx512bf16 on top of the
 * AVX-512 flags; chosen at run time (bf16.c).  14 × 32 register block: 28 accumulators,
 * 2 B vectors, 1 broadcast A pair = 31 of the 32 zmm registers.  Each vdpbf16ps adds
 * two exact bf16 products to an fp32 lane (denormals flushed, round to nearest even). */
#include "bf16.h"

#ifdef FD_HAVE_AVX512BF16 /* setup.py defines it when it compiles this file with its flags */

#include <immintrin.h>

#define MR 14
#define NR 32

void fd_bf16_cvt_avx512bf16(int64_t n, const float *src, uint16_t *dst)
{
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m512 lo = _mm512_loadu_ps(src + i), hi = _mm512_loadu_ps(src + i + 16);
        const __m512bh v = _mm512_cvtne2ps_pbh(hi, lo);
        _mm512_storeu_si512((void *)(dst + i), (__m512i)v);
    }
    for (; i < n; i += 16) {
        const int64_t r = n - i < 16 ? n - i : 16;
        const __mmask16 mk = (__mmask16)((1u << r) - 1u);
        const __m256bh v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mk, src + i));
        _mm256_mask_storeu_epi16((void *)(dst + i), mk, (__m256i)v);
    }
}

static void ukr_14x32(int64_t kcp, float alpha, const void *ap_, const void *bp_, float beta,
                      float *c, int64_t rs_c, int64_t mr, int64_t nr)
{
    const uint32_t *ap = ap_;
    const uint32_t *bp = bp_;
    __m512 acc[MR][2];
#pragma GCC unroll 14
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    const int64_t k2 = kcp / 2;
    for (int64_t q = 0; q < k2; q++) {
        const __m512bh b0 = (__m512bh)_mm512_load_si512((const void *)(bp + q * NR));
        const __m512bh b1 = (__m512bh)_mm512_load_si512((const void *)(bp + q * NR + 16));
        const uint32_t *a = ap + q * MR;
#pragma GCC unroll 14
        for (int i = 0; i < MR; i++) {
            const __m512bh av = (__m512bh)_mm512_set1_epi32((int)a[i]);
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], av, b0);
            acc[i][1] = _mm512_dpbf16_ps(acc[i][1], av, b1);
        }
    }
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    const __mmask16 m0 = nr >= 16 ? 0xFFFF : (__mmask16)((1u << nr) - 1u);
    const __mmask16 m1 = nr >= 32 ? 0xFFFF : nr <= 16 ? 0 : (__mmask16)((1u << (nr - 16)) - 1u);
#pragma GCC unroll 14
    for (int i = 0; i < MR; i++) {
        if (i >= mr) break;
        float *ci = c + i * rs_c;
        __m512 z0 = _mm512_mul_ps(va, acc[i][0]), z1 = _mm512_mul_ps(va, acc[i][1]);
        if (beta != 0.0f) {
            z0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, ci), z0);
            z1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, ci + 16), z1);
        }
        _mm512_mask_storeu_ps(ci, m0, z0);
        _mm512_mask_storeu_ps(ci + 16, m1, z1);
    }
}

/* Blocks (Sapphire Rapids, 48 KiB L1d, 2 MiB L2): a KC×NR sliver of B in bf16 is
 * 512×32×2 = 32 KiB (L1), the MC×KC block of A 336×512×2 = 336 KiB (L2). */
const fd_bf16_kernel fd_bf16_kernel_avx512bf16 = {
    "avx512bf16", MR, NR, 2, 0, 336, 512, 2048, ukr_14x32, fd_bf16_cvt_avx512bf16, NULL, NULL};

#endif /* FD_HAVE_AVX512BF16 */

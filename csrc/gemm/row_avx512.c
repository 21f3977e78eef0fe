/* one-row GEMM kernel, AVX-512 path: the contract and the arithmetic of row_impl.h
 * (acc from 0, fused acc = a_p·b_pj + acc in p order, then alpha·acc (+ beta·c)), with
 * up to 16 zmm accumulators held in registers across the k loop (256 columns per pass:
 * whole rows of B stream in order for the usual layer widths). */
#include <immintrin.h>

#include "gemm_ext.h"

static inline __attribute__((always_inline)) void
row_block(const int nv, int64_t k, float alpha, const float *FD_RESTRICT a,
          const float *FD_RESTRICT b, int64_t rs_b, float beta, float *FD_RESTRICT c,
          __mmask16 last)
{
    __m512 acc[16];
#pragma GCC unroll 16
    for (int v = 0; v < nv; v++) acc[v] = _mm512_setzero_ps();
    for (int64_t p = 0; p < k; p++) {
        const __m512 ap = _mm512_set1_ps(a[p]);
        const float *bp = b + p * rs_b;
#pragma GCC unroll 16
        for (int v = 0; v < nv; v++) {
            const __mmask16 mk = v == nv - 1 ? last : 0xFFFF;
            acc[v] = _mm512_fmadd_ps(ap, _mm512_maskz_loadu_ps(mk, bp + 16 * v), acc[v]);
        }
    }
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 16
    for (int v = 0; v < nv; v++) {
        const __mmask16 mk = v == nv - 1 ? last : 0xFFFF;
        __m512 z = _mm512_mul_ps(va, acc[v]);
        if (beta != 0.0f) z = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mk, c + 16 * v), z);
        _mm512_mask_storeu_ps(c + 16 * v, mk, z);
    }
}

void fd_gemm_row_avx512(int64_t k, float alpha, const float *a, const float *b, int64_t rs_b,
                        float beta, float *c, int64_t n)
{
    for (int64_t j0 = 0; j0 < n; j0 += 256) {
        const int64_t w = n - j0 < 256 ? n - j0 : 256;
        const int nv = (int)((w + 15) / 16);
        const int rem = (int)(w - 16 * (nv - 1));
        const __mmask16 last = (__mmask16)(rem == 16 ? 0xFFFF : (1u << rem) - 1);
        switch (nv) {
#define FD_ROW_CASE(q) \
        case q: row_block(q, k, alpha, a, b + j0, rs_b, beta, c + j0, last); break;
        FD_ROW_CASE(1) FD_ROW_CASE(2) FD_ROW_CASE(3) FD_ROW_CASE(4)
        FD_ROW_CASE(5) FD_ROW_CASE(6) FD_ROW_CASE(7) FD_ROW_CASE(8)
        FD_ROW_CASE(9) FD_ROW_CASE(10) FD_ROW_CASE(11) FD_ROW_CASE(12)
        FD_ROW_CASE(13) FD_ROW_CASE(14) FD_ROW_CASE(15) default: FD_ROW_CASE(16)
#undef FD_ROW_CASE
        }
    }
}

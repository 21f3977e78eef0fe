/* one-row GEMM kernel, AVX2 path: the contract and the arithmetic of row_impl.h with
 * 8 ymm accumulators in registers (64 columns per pass); the column tail goes through
 * a zero-padded copy so no load or store crosses the end of a row. */
#include <immintrin.h>
#include <math.h>

#include "gemm_ext.h"

static inline __attribute__((always_inline)) void
row_block(const int nv, int64_t k, float alpha, const float *FD_RESTRICT a,
          const float *FD_RESTRICT b, int64_t rs_b, float beta, float *FD_RESTRICT c)
{
    __m256 acc[8];
#pragma GCC unroll 8
    for (int v = 0; v < nv; v++) acc[v] = _mm256_setzero_ps();
    for (int64_t p = 0; p < k; p++) {
        const __m256 ap = _mm256_set1_ps(a[p]);
        const float *bp = b + p * rs_b;
#pragma GCC unroll 8
        for (int v = 0; v < nv; v++)
            acc[v] = _mm256_fmadd_ps(ap, _mm256_loadu_ps(bp + 8 * v), acc[v]);
    }
    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
#pragma GCC unroll 8
    for (int v = 0; v < nv; v++) {
        __m256 z = _mm256_mul_ps(va, acc[v]);
        if (beta != 0.0f) z = _mm256_fmadd_ps(vb, _mm256_loadu_ps(c + 8 * v), z);
        _mm256_storeu_ps(c + 8 * v, z);
    }
}

void fd_gemm_row_avx2(int64_t k, float alpha, const float *a, const float *b, int64_t rs_b,
                      float beta, float *c, int64_t n)
{
    const int64_t full = n / 8 * 8;
    for (int64_t j0 = 0; j0 < full; j0 += 64) {
        const int nv = (int)((full - j0 < 64 ? full - j0 : 64) / 8);
        switch (nv) {
#define FD_ROW_CASE(q) \
        case q: row_block(q, k, alpha, a, b + j0, rs_b, beta, c + j0); break;
        FD_ROW_CASE(1) FD_ROW_CASE(2) FD_ROW_CASE(3) FD_ROW_CASE(4)
        FD_ROW_CASE(5) FD_ROW_CASE(6) FD_ROW_CASE(7) default: FD_ROW_CASE(8)
#undef FD_ROW_CASE
        }
    }
    if (full < n) { /* < 8 columns: same arithmetic, scalar fused multiply-adds */
        const int64_t w = n - full;
        float acc[8] = {0};
        for (int64_t p = 0; p < k; p++)
            for (int64_t j = 0; j < w; j++) acc[j] = fmaf(a[p], b[p * rs_b + full + j], acc[j]);
        for (int64_t j = 0; j < w; j++) {
            const float z = alpha * acc[j];
            c[full + j] = beta == 0.0f ? z : fmaf(beta, c[full + j], z);
        }
    }
}

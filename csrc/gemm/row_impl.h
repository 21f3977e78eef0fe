/* row_impl.h — the one-row GEMM kernel (batch-1 inference, m == 1) in plain C: the
 * portable path (row_ref.c); row_avx2.c and row_avx512.c implement the same contract
 * with intrinsics and register-held accumulators.  C(1×n) := alpha·a(1×k)·B(k×n) + beta·C with B read in place (row
 * stride rs_b), one KC block at a time, with exactly the micro-kernels' arithmetic for
 * every element — acc from 0, acc = a_p·b_pj + acc in p order (fused on the AVX paths,
 * as their micro-kernels are), then alpha·acc (+ beta·c) — so a row computed here is
 * bitwise equal to the same row computed in a larger batch.  Many independent columns per
 * step make it throughput- rather than latency-bound (a 1-row micro-kernel tile has only
 * NR/16 accumulator chains). */
#include "gemm_ext.h"

#include <math.h>

#define FD_CAT_(a, b) a##_##b
#define FD_CAT(a, b) FD_CAT_(a, b)

#ifdef FD_ROW_FMA
#define FD_MADD(x, y, z) fmaf((x), (y), (z))
#else
#define FD_MADD(x, y, z) ((x) * (y) + (z))
#endif

#define FD_ROW_CHUNK 256

void FD_CAT(fd_gemm_row, FD_SFX)(int64_t k, float alpha, const float *FD_RESTRICT a,
                                 const float *FD_RESTRICT b, int64_t rs_b, float beta,
                                 float *FD_RESTRICT c, int64_t n) {
    float acc[FD_ROW_CHUNK] FD_ALIGN(64);
    for (int64_t j0 = 0; j0 < n; j0 += FD_ROW_CHUNK) {
        const int64_t w = n - j0 < FD_ROW_CHUNK ? n - j0 : FD_ROW_CHUNK;
        for (int64_t j = 0; j < w; j++) acc[j] = 0.0f;
        for (int64_t p = 0; p < k; p++) {
            const float ap = a[p];
            const float *FD_RESTRICT bp = b + p * rs_b + j0;
            for (int64_t j = 0; j < w; j++) acc[j] = FD_MADD(ap, bp[j], acc[j]);
        }
        float *FD_RESTRICT cj = c + j0;
        if (beta == 0.0f) {
            for (int64_t j = 0; j < w; j++) cj[j] = alpha * acc[j];
        } else {
            for (int64_t j = 0; j < w; j++) cj[j] = FD_MADD(beta, cj[j], alpha * acc[j]);
        }
    }
}

/* ukr_ref_4x16.c — portable C SGEMM micro-kernel (4×16 register block) and the skinny-n
 * dot kernel, plus the block-size table of the portable path.
 *
 * Plain C that compilers vectorise for the baseline ISA (SSE2 on x86-64: the 4×16 block
 * is 16 xmm accumulators' worth, which the compiler keeps in registers and L1).  The full
 * MR×NR block is always computed (packed panels are zero-padded); only the mr×nr corner
 * of C is read and written, with the same expression for every element. */
#include "internal.h"

#define MR 4
#define NR 16
#define DOT_LANES 8 /* dot kernel: partial sums per dot product */

static void ukr_4x16(int64_t k, float alpha, const float *FD_RESTRICT ap,
                     const float *FD_RESTRICT bp, float beta, float *c, int64_t rs_c,
                     int64_t mr, int64_t nr)
{
    float acc[MR][NR] = {{0.0f}};
    for (int64_t p = 0; p < k; p++) {
        for (int i = 0; i < MR; i++) {
            const float a = ap[i];
            for (int j = 0; j < NR; j++) acc[i][j] += a * bp[j];
        }
        ap += MR;
        bp += NR;
    }
    for (int64_t i = 0; i < mr; i++) {
        float *ci = c + i * rs_c;
        if (beta == 0.0f)
            for (int64_t j = 0; j < nr; j++) ci[j] = alpha * acc[i][j];
        else
            for (int64_t j = 0; j < nr; j++) ci[j] = alpha * acc[i][j] + beta * ci[j];
    }
}

/* D(m×n) = A(m×k)·Bt(n×k)ᵀ: each dot product in DOT_LANES interleaved partial sums
 * (vectorisable without reassociation), added pairwise at the end. */
void fd_gemm_dot_ref(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                     const float *bt, int64_t ldbt, float *d, int64_t ldd)
{
    for (int64_t r = 0; r < m; r++) {
        const float *FD_RESTRICT ar = a + r * lda;
        for (int64_t j = 0; j < n; j++) {
            const float *FD_RESTRICT bj = bt + j * ldbt;
            float s[DOT_LANES] = {0.0f};
            int64_t p = 0;
            for (; p + DOT_LANES <= k; p += DOT_LANES)
                for (int l = 0; l < DOT_LANES; l++) s[l] += ar[p + l] * bj[p + l];
            for (int l = 0; p + l < k; l++) s[l] += ar[p + l] * bj[p + l];
            d[r * ldd + j] = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
        }
    }
}

const fd_gemm_params fd_gemm_params_ref = {MR, NR, 128, 256, 2048, ukr_4x16};

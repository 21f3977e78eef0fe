/* ukr_ref_6x8.c — portable C SGEMM kernels and the portable path's block-size table:
 *   ukr_6x8     the BLIS micro-kernel (fd_gemm_ukr_fn) on packed A and B panels;
 *   ukr_ub_6x8  the same with B read in place (gemm_ext.h: small-m products);
 *   dot_kernel  skinny-n dot products (gemm_ext.h).
 *
 * Plain C that compilers vectorise for the baseline ISA (SSE2 on x86-64: 6×8 is 12 xmm
 * accumulators + 2 of B + 1 broadcast, the most the 16 registers hold; 4×16 spills and
 * runs 5× slower).  The full MR×NR block is always computed (packed panels are
 * zero-padded); only the mr×nr corner of C is read and written, with the same expression
 * for every element. */
#include "gemm_ext.h"

#define MR 6
#define NR 8
#define DOT_LANES 8 /* dot kernel: partial sums per dot product */

/* acc += Ap column · B row (one k step, constant trip counts: kept in registers) */
static inline void step(float acc[MR][NR], const float *FD_RESTRICT ap,
                        const float *FD_RESTRICT b)
{
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++) acc[i][j] += ap[i] * b[j];
}

/* C(mr × nr) := alpha·acc + beta·C, the same expression for every element */
static void store(float acc[MR][NR], float alpha, float beta, float *c, int64_t rs_c,
                  int64_t mr, int64_t nr)
{
    for (int64_t i = 0; i < mr; i++) {
        float *ci = c + i * rs_c;
        if (beta == 0.0f)
            for (int64_t j = 0; j < nr; j++) ci[j] = alpha * acc[i][j];
        else
            for (int64_t j = 0; j < nr; j++) ci[j] = alpha * acc[i][j] + beta * ci[j];
    }
}

static void ukr_6x8(int64_t k, float alpha, const float *ap, const float *bp, float beta,
                    float *c, int64_t rs_c, int64_t mr, int64_t nr)
{
    float acc[MR][NR] = {{0.0f}};
    for (int64_t p = 0; p < k; p++) step(acc, ap + p * MR, bp + p * NR);
    store(acc, alpha, beta, c, rs_c, mr, nr);
}

/* B read in place: a partial row is copied into a zero-padded NR-wide row first */
static void ukr_ub_6x8(int64_t k, float alpha, const float *ap, const float *bp,
                       int64_t rs_b, float beta, float *c, int64_t rs_c, int64_t mr,
                       int64_t nr)
{
    float acc[MR][NR] = {{0.0f}};
    if (nr == NR) {
        for (int64_t p = 0; p < k; p++) step(acc, ap + p * MR, bp + p * rs_b);
    } else {
        float row[NR] = {0.0f};
        for (int64_t p = 0; p < k; p++) {
            for (int64_t j = 0; j < nr; j++) row[j] = bp[p * rs_b + j];
            step(acc, ap + p * MR, row);
        }
    }
    store(acc, alpha, beta, c, rs_c, mr, nr);
}

/* D(m×n) = A(m×k)·Bt(n×k)ᵀ: each dot product in DOT_LANES (8) interleaved partial sums
 * (vectorisable without reassociation), added pairwise at the end. */
static void dot_kernel(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
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

const fd_gemm_params fd_gemm_params_ref = {MR, NR, 120, 256, 2048, ukr_6x8};
const fd_gemm_ext fd_gemm_ext_ref = {dot_kernel, ukr_ub_6x8, fd_gemm_row_ref};

/* gemm_ext.h — the GEMM frame's per-ISA kernels beyond fd_gemm_params (internal.h).
 * Defined beside each ISA's micro-kernel (ukr_<isa>_<MR>x<NR>.c), looked up by frame.c. */
#ifndef FD_GEMM_EXT_H
#define FD_GEMM_EXT_H

#include "internal.h"

/* D(m×n) = A(m×k)·Btᵀ, Bt n×k; rows of A and Bt are contiguous along k (strides lda,
 * ldbt); D row stride ldd; n <= 16.  The skinny-n "dot" path: no lane wasted on narrow n. */
typedef void (*fd_gemm_dot_fn)(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                               const float *bt, int64_t ldbt, float *d, int64_t ldd);

/* The micro-kernel (fd_gemm_ukr_fn contract) with B read in place instead of packed:
 * B(p, j) at b[p*rs_b + j] for j < nr (nothing past column nr is read). */
typedef void (*fd_gemm_ukr_ub_fn)(int64_t k, float alpha, const float *ap, const float *b,
                                  int64_t rs_b, float beta, float *c, int64_t rs_c, int64_t mr,
                                  int64_t nr);

/* One row: C(1×n) := alpha·a·B + beta·C over k, a contiguous, B in place (row_impl.h). */
typedef void (*fd_gemm_row_fn)(int64_t k, float alpha, const float *a, const float *b,
                               int64_t rs_b, float beta, float *c, int64_t n);

typedef struct {
    fd_gemm_dot_fn dot;
    fd_gemm_ukr_ub_fn ukr_ub;
    fd_gemm_row_fn row;
} fd_gemm_ext;

extern const fd_gemm_ext fd_gemm_ext_ref;
void fd_gemm_row_ref(int64_t k, float alpha, const float *a, const float *b, int64_t rs_b,
                     float beta, float *c, int64_t n);
#ifdef FD_HAVE_AVX2
extern const fd_gemm_ext fd_gemm_ext_avx2;
void fd_gemm_row_avx2(int64_t k, float alpha, const float *a, const float *b, int64_t rs_b,
                      float beta, float *c, int64_t n);
#endif
#ifdef FD_HAVE_AVX512
extern const fd_gemm_ext fd_gemm_ext_avx512;
void fd_gemm_row_avx512(int64_t k, float alpha, const float *a, const float *b, int64_t rs_b,
                        float beta, float *c, int64_t n);
#endif

#endif

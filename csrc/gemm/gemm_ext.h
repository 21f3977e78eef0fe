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

/* The register epilogue of one micro-tile: fd_epilogue applied to the tile's values in
 * registers, between the last KC block's sum and the store (no second pass over C).
 * Same operations in the same order as the frame's generic epilogue (bitwise equal). */
typedef struct {
    const fd_epilogue *ep;
    int64_t r0, c0; /* C coordinates of the tile's element (0, 0) */
    int64_t n;      /* full width of C: the mask's bit row stride */
} fd_tile_ep;

/* The micro-kernel (packed B, or direct: B in place with row stride rs_b) with the
 * register epilogue te (fd_gemm_ukr_fn / fd_gemm_ukr_ub_fn contracts otherwise). */
typedef void (*fd_gemm_ukr_ep_fn)(int64_t k, float alpha, const float *ap, const float *bp,
                                  int64_t rs_b, int direct, float beta, float *c, int64_t rs_c,
                                  int64_t mr, int64_t nr, const fd_tile_ep *te);

/* Bits [b, b + cnt) of a little-bit-order mask (cnt <= 25), reading only the bytes that
 * hold them (never past the last needed byte). */
static inline uint32_t fd_mask_bits(const uint8_t *mask, uint64_t b, int cnt)
{
    const uint8_t *p = mask + (b >> 3);
    const int sh = (int)(b & 7), nbytes = (sh + cnt + 7) >> 3;
    uint32_t w = p[0];
    if (nbytes > 1) w |= (uint32_t)p[1] << 8;
    if (nbytes > 2) w |= (uint32_t)p[2] << 16;
    if (nbytes > 3) w |= (uint32_t)p[3] << 24;
    return (w >> sh) & (cnt >= 32 ? 0xFFFFFFFFu : ((1u << cnt) - 1));
}

/* Bit index of element (row, c0) of the tile (row relative to the tile). */
static inline uint64_t fd_tile_row_bit(const fd_tile_ep *te, int64_t row)
{
    const int64_t g = te->ep->mask_row_group, r = te->r0 + row;
    return (uint64_t)te->ep->mask_bit0 + (uint64_t)(g > 0 ? r / g : r) * (uint64_t)te->n +
           (uint64_t)te->c0;
}

typedef struct {
    fd_gemm_dot_fn dot;
    fd_gemm_ukr_ub_fn ukr_ub;
    fd_gemm_row_fn row;
    fd_gemm_ukr_ep_fn ukr_ep; /* NULL: the frame applies the epilogue after the store */
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

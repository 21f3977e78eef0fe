/* conv_infer.h — the inference-only direct convolution (INFER mode: no masks, no backward),
 * internal to csrc/nn.  One output row of a convolution whose input is an (already
 * zero-padded) image: every output pixel's window lies inside it, neighbouring pixels'
 * windows are S = sw*c floats apart, taps are at fixed offsets off[k] from a window's
 * origin (k = (ki, kj, ci), the im2col order).  Register tiles of up to 14 pixels × 32
 * output channels read x in place (a broadcast per tap and pixel, as from a packed A
 * panel) against prepacked weights (per 32-column block: K × 32, zero padded).
 *
 * Arithmetic — bitwise that of the path the training forward takes (conv.c):
 *   mode FD_CI_GEMM   (K > FD_CONV_DIRECT_K): as fd_sgemm's micro-kernels: acc from 0,
 *                     acc = x·w + acc (fused) in k order within each KC block, the blocks
 *                     added in order (C = acc, then C = acc + C), then + bias (if any),
 *                     then relu (+0 for z <= 0, NaN kept);
 *   mode FD_CI_DIRECT (K <= FD_CONV_DIRECT_K): as conv_direct_impl.h: acc from the
 *                     (zero-padded) bias, fused in k order, relu = max(z, 0). */
#ifndef FD_CONV_INFER_H
#define FD_CONV_INFER_H

#include "nn/conv.h"

#define FD_CI_GEMM 0
#define FD_CI_DIRECT 1
#define FD_CI_PB 14 /* output pixels per register tile */
#define FD_CI_NB 32 /* output channels per packed weight block */

typedef struct {
    const int64_t *off; /* K tap offsets from a window's origin */
    int64_t K, S, oc;
    int64_t kcb;        /* KC block of the GEMM order (FD_CI_GEMM) */
    const float *wpk;   /* ceil(oc/32) blocks of K × 32 */
    const float *bias;  /* FD_CI_GEMM: NULL or oc floats; FD_CI_DIRECT: padded, never NULL */
    int mode, relu;
} fd_ci_geom;

/* y[ox*oc + j] for ox < ow and j in the 32-wide column blocks [jb0, jb1): the output row
 * whose pixel 0 has its window at x0. */
typedef void (*fd_ci_row_fn)(const fd_ci_geom *g, const float *x0, int64_t ow, float *y,
                             int64_t jb0, int64_t jb1);
/* y (oh × ow × c) = max pooling of z (h × w × c) over output rows [oy0, oy1) and
 * channels [j0, j1) (the semantics of pool.c without argmax: first cell, then
 * s > y ? s : y in row-major order) */
typedef void (*fd_ci_pool_fn)(const fd_pool2d_desc *p, const float *z, float *y, int64_t oy0,
                              int64_t oy1, int64_t j0, int64_t j1);

#ifdef FD_HAVE_AVX512
void fd_conv_infer_row_avx512(const fd_ci_geom *g, const float *x0, int64_t ow, float *y,
                              int64_t jb0, int64_t jb1);
void fd_conv_infer_maxpool_avx512(const fd_pool2d_desc *p, const float *z, float *y,
                                  int64_t oy0, int64_t oy1, int64_t j0, int64_t j1);
#endif

#endif

/* conv_direct.h — small-K convolution kernels (K = kh*kw*c <= FD_CONV_DIRECT_K), one
 * implementation (conv_direct_impl.h) compiled per ISA.  Internal to csrc/nn.
 *
 *   fwd: y rows [r0, r0+rows) = bias + Σ_k patch(r, k)·wt[k, :] (then relu), patches
 *        gathered straight from x (no packing pass); wp is wt with rows padded to ocp
 *        floats (ocp a multiple of 16), bp the bias padded the same way (zeros if none).
 *   dw:  dwp (K × oc) = beta·dwp + Σ_r patch(r, k)·dz[r, :] over rows [r0, r0+rows) in
 *        order (dz points at row 0); h != NULL: the gradient is h > 0 ? dz*scale : 0
 *        (ReLU backward folded in, dz = dy); dbp != NULL: (beta·dbp +) column sums.
 * Output pixels whose window lies inside the image read x in place through a table of
 * tap offsets (a broadcast per tap, as from a packed panel); the others gather their
 * patch into a small local array first. */
#ifndef FD_CONV_DIRECT_H
#define FD_CONV_DIRECT_H

#include "nn/conv.h"

#define FD_CONV_DIRECT_K 32

typedef void (*fd_conv_direct_fwd_fn)(const fd_conv2d_desc *d, const float *x,
                                      const float *wp, const float *bp, int64_t ocp,
                                      int relu, float *y, int64_t r0, int64_t rows);
typedef void (*fd_conv_direct_dw_fn)(const fd_conv2d_desc *d, const float *x,
                                     const float *dz, const float *h, float scale,
                                     int64_t r0, int64_t rows, float beta, float *dwp,
                                     float *dbp);

#define FD_CONV_DIRECT_DECLARE(isa)                                                        \
    void fd_conv_direct_fwd_##isa(const fd_conv2d_desc *d, const float *x, const float *wp, \
                                  const float *bp, int64_t ocp, int relu, float *y,         \
                                  int64_t r0, int64_t rows);                                \
    void fd_conv_direct_dw_##isa(const fd_conv2d_desc *d, const float *x, const float *dz,  \
                                 const float *h, float scale, int64_t r0, int64_t rows,     \
                                 float beta, float *dwp, float *dbp);

FD_CONV_DIRECT_DECLARE(ref)
#ifdef FD_HAVE_AVX2
FD_CONV_DIRECT_DECLARE(avx2)
#endif
#ifdef FD_HAVE_AVX512
FD_CONV_DIRECT_DECLARE(avx512)
#endif

#endif

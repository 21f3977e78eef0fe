/* conv.h — convolution, pooling and batch-normalisation kernels (NHWC, channels last).
 *
 * Layouts (all row-major, C-contiguous):
 *   x   (n, h, w, c)                      input images
 *   y   (n, oh, ow, oc) = (n*oh*ow) × oc  conv output ("rows" = output pixels)
 *   wt  (kh, kw, c, oc) = K × oc          conv kernel, Keras layout, K = kh*kw*c
 * The convolution is an implicit GEMM: each bounded chunk of output rows has its patches
 * packed (im2col of that chunk only, sized to stay in L2) and goes through fd_sgemm with
 * the fused epilogue.  Chunks, units and sums depend on the shapes only, never on the
 * thread count: results are bitwise identical for any number of threads.
 * Kernels that need workspace use per-thread buffers grown on demand (freed by
 * fd_conv_release_buffers) and return 0, or -1 when memory runs out. */
#ifndef FD_NN_CONV_H
#define FD_NN_CONV_H

#include <stdint.h>

#include "fastdrop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int64_t n, h, w, c;        /* input: n images of h × w × c                        */
    int64_t kh, kw;            /* kernel                                               */
    int64_t sh, sw;            /* strides                                              */
    int64_t dh, dw;            /* dilation                                             */
    int64_t pt, pl;            /* padding top / left (bottom / right follow oh, ow)    */
    int64_t oh, ow, oc;        /* output                                               */
} fd_conv2d_desc;

/* y = conv(x, wt) (+ bias) (relu) then, if given, * (keep ? scale : 0) with
 *   mask:   one bit per element of y (bit r*oc + j, little bit order), or
 *   chmask: one bit per (image, output channel) (bit img*oc + j: SpatialDropout2D).
 * bias may be NULL.  Returns 0, -1 out of memory. */
int fd_conv2d_forward_f32(const fd_conv2d_desc *d, float *y, const float *x,
                          const float *wt, const float *bias, int relu,
                          const uint8_t *mask, const uint8_t *chmask, float scale);

/* Backward from dz (n*oh*ow × oc), the gradient at the pre-activation output:
 *   dwt (K × oc) = patchesᵀ·dz, db (oc) = column sums of dz, dx = col2im(dz·wtᵀ);
 * each output overwritten, skipped when NULL.  Returns 0, -1 out of memory. */
int fd_conv2d_backward_f32(const fd_conv2d_desc *d, const float *dz, const float *x,
                           const float *wt, float *dwt, float *db, float *dx);

/* The same, from dy at the layer output through the fused epilogue: dz (n*oh*ow × oc,
 * workspace, may alias dy) = (relu ? h > 0 : mask bit | chmask bit) ? dy * scale : 0
 * (h: the layer output, after any mask; neither relu nor a mask: dz = dy * scale). */
int fd_conv2d_backward_act_f32(const fd_conv2d_desc *d, float *dz, const float *dy,
                               const float *h, const uint8_t *mask, const uint8_t *chmask,
                               float scale, int relu, const float *x, const float *wt,
                               float *dwt, float *db, float *dx);

/* out[i, p, j] = bit (i*c + j) of chmask ? x[i, p, j] * scale : 0 for n images of
 * p pixels × c channels (SpatialDropout2D forward and backward).  out may alias x. */
void fd_channel_mask_apply_f32(int64_t n, int64_t p, int64_t c, float *out, const float *x,
                               const uint8_t *chmask, float scale);

/* dz[i] = (relu ? h[i] > 0 : mask bit i) ? dy[i] * scale : dy-free 0, over n elements
 * (the backward of the fused relu / dropout epilogue; h is the layer output, after the
 * mask).  relu = 0 and mask NULL: dz = dy * scale.  dz may alias dy. */
void fd_conv_act_backward_f32(int64_t n, float *dz, const float *dy, const float *h,
                              const uint8_t *mask, float scale, int relu);

void fd_conv_release_buffers(void);

/* ------------------------------------------------------------------ pooling */
typedef struct {
    int64_t n, h, w, c;        /* input                                                */
    int64_t ph, pw;            /* pool size                                            */
    int64_t sh, sw;            /* strides                                              */
    int64_t pt, pl;            /* padding top / left ('same'); padded cells are ignored */
    int64_t oh, ow;            /* output                                               */
} fd_pool2d_desc;

/* Inference only (conv_infer.c): y = conv(x, wt) (+ bias) (relu), then max pooling with
 * pool (NULL: none; its input is the conv output: n, oh, ow, oc), the pooled output
 * written without argmax.  Bitwise equal to fd_conv2d_forward_f32 (then
 * fd_maxpool2d_forward_f32) for any thread count.  Returns 0, -1 out of memory, 1 when
 * this path does not handle the shape / CPU (nothing written: take the general path). */
int fd_conv2d_infer_f32(const fd_conv2d_desc *d, const fd_pool2d_desc *pool,
                        float *y, const float *x, const float *wt, const float *bias,
                        int relu);
void fd_conv_infer_release_buffers(void);

/* Max pooling; arg (n*oh*ow*c, may be NULL) = index iy*w + ix of the chosen input
 * pixel in its image (the first maximum in row-major window order wins ties). */
void fd_maxpool2d_forward_f32(const fd_pool2d_desc *d, float *y, int32_t *arg,
                              const float *x);
/* dx (overwritten) = scatter-add of dy to the argmax pixels. */
void fd_maxpool2d_backward_f32(const fd_pool2d_desc *d, float *dx, const float *dy,
                               const int32_t *arg);
/* Average pooling, dividing by the count of valid (unpadded) cells, as Keras/TF. */
void fd_avgpool2d_forward_f32(const fd_pool2d_desc *d, float *y, const float *x);
void fd_avgpool2d_backward_f32(const fd_pool2d_desc *d, float *dx, const float *dy);
/* Global pooling over the p pixels of each of n images (c channels): y (n × c).
 * max: arg (n × c, may be NULL) = pixel index of the first maximum. */
void fd_global_pool_forward_f32(int64_t n, int64_t p, int64_t c, int max, float *y,
                                int32_t *arg, const float *x);
void fd_global_pool_backward_f32(int64_t n, int64_t p, int64_t c, int max, float *dx,
                                 const float *dy, const int32_t *arg);

/* --------------------------------------------------------- batch normalisation */
/* m rows × c features (every axis but the last flattened into rows).
 * TRAIN forward: batch mean and biased variance per feature (sums over fixed row blocks
 * in double, blocks added in order), y = (x - mean) * rsqrt(var + eps) * gamma + beta;
 * mean and invstd (c) written for backward; moving stats (if non-NULL) updated as
 * moving = moving*momentum + batch*(1 - momentum).  gamma / beta may be NULL (1 / 0).
 * Returns 0, -1 out of memory. */
int fd_batchnorm_train_forward_f32(int64_t m, int64_t c, float *y, float *mean,
                                   float *invstd, const float *x, const float *gamma,
                                   const float *beta, float eps, float *moving_mean,
                                   float *moving_var, float momentum);
/* INFER forward with given statistics: y = (x - mean) * rsqrt(var + eps) * gamma + beta;
 * invstd (c, may be NULL) receives rsqrt(var + eps). */
void fd_batchnorm_infer_forward_f32(int64_t m, int64_t c, float *y, float *invstd,
                                    const float *x, const float *gamma, const float *beta,
                                    const float *mean, const float *var, float eps);
/* Backward.  batch_stats = 1: through the batch statistics (TRAIN); 0: statistics held
 * constant (inference-mode layer).  xhat = (x - mean) * invstd.
 *   dgamma = Σ dy·xhat, dbeta = Σ dy (each may be NULL; overwritten)
 *   dx = gamma·invstd·(dy - [Σdy + xhat·Σdy·xhat]/m)   (batch_stats)
 *   dx = gamma·invstd·dy                                 (constant statistics)
 * Returns 0, -1 out of memory. */
int fd_batchnorm_backward_f32(int64_t m, int64_t c, float *dx, float *dgamma, float *dbeta,
                              const float *dy, const float *x, const float *mean,
                              const float *invstd, const float *gamma, int batch_stats);

#ifdef __cplusplus
}
#endif
#endif

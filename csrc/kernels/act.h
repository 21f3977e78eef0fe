/* act.h — activation kernels (forward and backward) and the losses built on them
 * (binary cross-entropy on logits or probabilities, weighted softmax cross-entropy,
 * MSE / MAE / Huber), float32.
 *
 * Activations are elementwise: out = f(x) forward; out = grad * f'(.) backward, where
 * f' is evaluated from the pre-activation z or from the output y, whichever the
 * activation needs (fd_act_needs; pass NULL for the other one):
 *
 *   act          forward                               backward uses   f'
 *   linear       x                                     nothing         1
 *   relu         max(x, 0)                             y               y > 0
 *   relu6        min(max(x, 0), 6)                     y               0 < y < 6
 *   leaky_relu   x > 0 ? x : param * x  (param >= 0)   y               y > 0 ? 1 : param
 *   elu          x > 0 ? x : param * expm1(x) (p > 0)  y               y > 0 ? 1 : y + param
 *   tanh         tanh(x)                               y               (1 - y)(1 + y)
 *   sigmoid      1 / (1 + exp(-x))                     y               y (1 - y)
 *   softplus     log(1 + exp(x))                       y               -expm1(-y) = sigmoid(z)
 *   silu         x * sigmoid(x)                        z               s + z s (1 - s)
 *   gelu         x * Phi(x)   (exact, erf form)        z               Phi(z) + z phi(z)
 *   gelu_tanh    x * sigmoid(2 sqrt(2/pi)(x + 0.044715 x^3))  z        (Keras approximate=True)
 *   hard_sigmoid min(max(x + 3, 0), 6) / 6 (Keras 3)       y               0 < y < 1 ? 1/6 : 0
 *   softsign     x / (1 + |x|)                         y               (1 - |y|)^2
 *   mish         x * tanh(softplus(x))                 z               t + z s (1 - t^2),
 *                                                                      t = tanh(softplus z)
 *   celu         x >= 0 ? x : p0 expm1(x / p0) (p0 > 0)  y             y > 0 ? 1 : y/p0 + 1
 *   hard_silu    x relu6(x + 3) / 6                    z               0 | 1 | x/3 + 1/2
 *   hard_tanh    clip(x, -1, 1)                        y               -1 < y < 1
 *   soft_shrink  x > p0 ? x - p0 : x < -p0 ? x + p0 : 0  z             |x| > p0 (both sides)
 *   hard_shrink  |x| > p0 ? x : 0                      z               |x| > p0
 *   tanh_shrink  x - tanh(x)                           z               tanh(z)^2
 *   log_sigmoid  min(x, 0) - log1p(exp(-|x|))          y               -expm1(y) = sigmoid(-z)
 *   exponential  exp(x)                                y               y
 *   sparse_plus  0 (x <= -1), x (x >= 1), (x + 1)^2/4  z               0 | 1 | (x + 1)/2
 *   squareplus   (x + sqrt(x^2 + p0)) / 2 (p0 >= 0)    z               (1 + x/sqrt(x^2 + p0))/2
 *   threshold    x > p0 ? x : p1                       z               x > p0
 *   relu_args    Keras relu(x, negative_slope=p0, max_value=p1 (inf: none), threshold=p2):
 *                a = x > p2 ? x : 0; clip(a, 0, p1) if p1 < inf; a - p0 max(p2 - x, 0)   z
 *   sparse_sigmoid  0 (x <= -1), 1 (x >= 1), (x + 1)/2 y               0 < y < 1 ? 1/2 : 0
 *   selu         s (x >= 0 ? x : a expm1(x)), Keras's a, s  y          y > 0 ? s : y + s a
 *
 * Relative error against float64 is below ~1e-6 (a few ulp; tanh_shrink 2e-6 just above
 * |x| = 0.625, where x - tanh x cancels) everywhere the result is a normal float, tails included (gelu's lower tail, sigmoid of large negative x, expm1 of
 * small x); derivatives from y are exact functions of the float32 y (their error relative
 * to the true f'(z) is bounded by the rounding of y: ~6e-8 absolute near saturation).
 * NaN propagates; limits at +-inf are the mathematical ones (silu(-inf) = gelu(-inf) = -0).
 * The same operations run in the same order on every ISA path (no FMA contraction):
 * results are bitwise identical across ISAs and thread counts.  out may equal x (or grad).
 *
 * Entry points validate their arguments (unknown activation, negative n, a NULL pointer
 * that is needed): -1, nothing written; 0 on success.  They never abort. */
#ifndef FD_ACT_H
#define FD_ACT_H

#include <stdint.h>

enum {
    FD_ACT_LINEAR = 0,
    FD_ACT_RELU = 1,
    FD_ACT_RELU6 = 2,
    FD_ACT_LEAKY_RELU = 3,
    FD_ACT_ELU = 4,
    FD_ACT_TANH = 5,
    FD_ACT_SIGMOID = 6,
    FD_ACT_SOFTPLUS = 7,
    FD_ACT_SILU = 8,
    FD_ACT_GELU = 9,
    FD_ACT_GELU_TANH = 10,
    FD_ACT_HARD_SIGMOID = 11,
    FD_ACT_SOFTSIGN = 12,
    FD_ACT_MISH = 13,
    FD_ACT_CELU = 14,
    FD_ACT_HARD_SILU = 15,
    FD_ACT_HARD_TANH = 16,
    FD_ACT_SOFT_SHRINK = 17,
    FD_ACT_HARD_SHRINK = 18,
    FD_ACT_TANH_SHRINK = 19,
    FD_ACT_LOG_SIGMOID = 20,
    FD_ACT_EXPONENTIAL = 21,
    FD_ACT_SPARSE_PLUS = 22,
    FD_ACT_SQUAREPLUS = 23,
    FD_ACT_THRESHOLD = 24,
    FD_ACT_RELU_ARGS = 25,
    FD_ACT_SPARSE_SIGMOID = 26,
    FD_ACT_SELU = 27,
    FD_ACT_COUNT = 28
};

/* Activations with more than one parameter take them as p[FD_ACT_NPARAMS] (p0, p1, p2 in
 * the table above); the single-parameter entry points pass {param, inf, 0}. */
#define FD_ACT_NPARAMS 3

enum { FD_ACT_NEEDS_NONE = 0, FD_ACT_NEEDS_Z = 1, FD_ACT_NEEDS_Y = 2 };

/* FD_ACT_NEEDS_* for act (what backward reads), -1 for an unknown act. */
int fd_act_needs(int act);

/* Threaded (OpenMP over contiguous chunks; grain per activation cost). */
int fd_act_forward_f32(int act, int64_t n, float *out, const float *x, float param);
int fd_act_backward_f32(int act, int64_t n, float *out, const float *grad, const float *z,
                        const float *y, float param);
/* The same with all parameters (p: FD_ACT_NPARAMS floats). */
int fd_act_forward_p_f32(int act, int64_t n, float *out, const float *x, const float *p);
int fd_act_backward_p_f32(int act, int64_t n, float *out, const float *grad, const float *z,
                          const float *y, const float *p);
/* The same on the calling thread only (for use inside another kernel's parallel
 * region, e.g. a GEMM epilogue on a tile); still sets FTZ/DAZ for its duration. */
int fd_act_forward_serial_f32(int act, int64_t n, float *out, const float *x, float param);
int fd_act_backward_serial_f32(int act, int64_t n, float *out, const float *grad,
                               const float *z, const float *y, float param);

/* The current ISA path's raw kernels (no checks, no FTZ setup, no threads), for fusing an
 * activation into another kernel's inner loop (e.g. a GEMM epilogue on a tile): the
 * caller has validated act and the pointers and runs between fd_fp_enter/fd_fp_exit. */
typedef void (*fd_act_fwd_fn)(int act, int64_t n, float *out, const float *x,
                              const float *p);
typedef void (*fd_act_bwd_fn)(int act, int64_t n, float *out, const float *grad,
                              const float *z, const float *y, const float *p);
fd_act_fwd_fn fd_act_forward_kernel(void);
fd_act_bwd_fn fd_act_backward_kernel(void);

/* ------------------------------------------------------ row-wise activations
 * Activations over the last axis of an (n, c) row-major matrix (act_rows.c), for any rank
 * seen as rows = product of the leading axes:
 *   FD_ACT_ROWS_SOFTMAX      y = exp(x - max) / sum           backward reads y:
 *                            dx = y (g - sum_j g_j y_j)
 *   FD_ACT_ROWS_LOG_SOFTMAX  y = x - max - log(sum exp(x - max))   reads y:
 *                            dx = g - exp(y) sum_j g_j
 *   FD_ACT_ROWS_SPARSEMAX    y = max(x - tau, 0), sum y = 1 (Martins & Astudillo, 2016;
 *                            tau by Michelot's fixed point, exact)   reads y:
 *                            dx = [y > 0] (g - mean of g over {y > 0})
 *   FD_ACT_ROWS_GLU          c even; y (n, c/2) = a sigmoid(b), [a | b] = x   reads x:
 *                            dx = [g s | g a s (1 - s)], s = sigmoid(b)
 * out (forward) and dx (backward) may alias x / g only for softmax, log_softmax and
 * sparsemax.  Each row's result depends only on that row (any thread count, any ISA).
 * 0 on success; -1 on bad arguments (unknown kind, negative n or c, odd c for glu, a NULL
 * pointer that is needed), nothing written. */
enum {
    FD_ACT_ROWS_SOFTMAX = 0,
    FD_ACT_ROWS_LOG_SOFTMAX = 1,
    FD_ACT_ROWS_SPARSEMAX = 2,
    FD_ACT_ROWS_GLU = 3,
    FD_ACT_ROWS_COUNT = 4
};
int fd_act_rows_forward_f32(int kind, int64_t n, int64_t c, float *out, const float *x);
/* g has the output's columns (c/2 for glu), dx the input's (c). */
int fd_act_rows_backward_f32(int kind, int64_t n, int64_t c, float *dx, const float *g,
                             const float *x, const float *y);

/* ------------------------------------------------------------------ losses
 * All losses: n rows of c outputs; the row loss is the mean over the c outputs (Keras:
 * mean over the last axis); w (may be NULL = all ones) weights rows.  The return value is
 * sum_r w_r * loss_r in double, summed in row order (the same for any thread count);
 * grad (may be NULL) = scale * d(sum_r w_r loss_r)/d(input); loss_rows (may be NULL)
 * receives w_r * loss_r as float.  Negative n or c, or NULL inputs: returns NaN. */

/* Sigmoid binary cross-entropy on logits z, targets t smoothed as t*(1-ls) + ls/2:
 *   loss = max(z,0) - z t + log1p(exp(-|z|)),  d/dz = sigmoid(z) - t. */
double fd_bce_logits_f32(int64_t n, int64_t c, const float *z, const float *t,
                         const float *w, float label_smoothing, float scale, float *grad,
                         float *loss_rows);
/* Binary cross-entropy on probabilities p clipped to [eps, 1 - eps] (Keras, eps = 1e-7):
 *   loss = -(t log pc + (1 - t) log(1 - pc)),  d/dp = (pc - t) / (pc (1 - pc)) inside the
 *   clip range, 0 outside. */
double fd_bce_probs_f32(int64_t n, int64_t c, const float *p, const float *t,
                        const float *w, float label_smoothing, float eps, float scale,
                        float *grad, float *loss_rows);

/* Softmax cross-entropy with row weights: labels (int64) or dense targets (exactly one
 * non-NULL), as fd_softmax_xent_{labels,targets}_f32 with grad rows scaled by w_r. */
double fd_softmax_xent_weighted_f32(int64_t n, int64_t c, const float *logits,
                                    const int64_t *labels, const float *targets,
                                    const float *w, float scale, float *grad,
                                    float *loss_rows);

/* Regression losses on e = pred - t, in double per element:
 *   FD_LOSS_MSE   e^2                                   d/dpred 2 e
 *   FD_LOSS_MAE   |e|                                   sign(e) (0 at e = 0)
 *   FD_LOSS_HUBER 0.5 q^2 + delta (|e| - q), q = min(|e|, delta)   clip(e, -delta, delta) */
enum { FD_LOSS_MSE = 0, FD_LOSS_MAE = 1, FD_LOSS_HUBER = 2 };
double fd_regression_loss_f32(int kind, int64_t n, int64_t c, const float *pred,
                              const float *t, const float *w, float delta, float scale,
                              float *grad, float *loss_rows);

/* --------------------------------------------- per-ISA kernels (act_impl.h) */
#define FD_ACT_DECLARE_ISA(isa)                                                          \
    void fd_act_fwd_##isa(int act, int64_t n, float *out, const float *x,                \
                          const float *p);                                               \
    void fd_act_bwd_##isa(int act, int64_t n, float *out, const float *grad,             \
                          const float *z, const float *y, const float *p);               \
    void fd_bce_logits_rows_##isa(int64_t r0, int64_t r1, int64_t c, const float *z,     \
                                  const float *t, const float *w, float ls, float gscale,\
                                  float *grad, double *loss_rows);                       \
    void fd_bce_probs_rows_##isa(int64_t r0, int64_t r1, int64_t c, const float *p,      \
                                 const float *t, const float *w, float ls, float eps,    \
                                 float gscale, float *grad, double *loss_rows);

FD_ACT_DECLARE_ISA(ref)
#ifdef FD_HAVE_AVX2
FD_ACT_DECLARE_ISA(avx2)
#endif
#ifdef FD_HAVE_AVX512
FD_ACT_DECLARE_ISA(avx512)
#endif

#endif

/* optim.h — fused optimizer update kernels (RMSprop, Adagrad, Adadelta, Nadam, and SGD /
 * Adam with gradient clipping) and the deterministic sum of squares used by clipnorm /
 * global_clipnorm.  Keras 3 update formulas; see fastdrop/optimizers.py.
 *
 * Every update is one elementwise pass over a flat float32 block [0, n): the parameters
 * w, the gradients g (read only, never modified) and the optimizer's state slots.  The
 * gradient each update uses is
 *
 *     gi = g[i] * gscale;  gi = clamp(gi, -clip, clip)      (clip <= 0 or inf: no clamp)
 *
 * so clipnorm / global_clipnorm (a scale) and clipvalue (a clamp) cost no extra pass and
 * no scratch copy.  NaN gradients stay NaN.  wd_lr = learning_rate * weight_decay:
 * decoupled weight decay w -= wd_lr * w before the update (Keras applies it first).
 *
 * Threads: large n is cut into contiguous chunks across OpenMP threads; every element is
 * computed by the same expression whatever the chunking, so results are bitwise
 * identical for any thread count.  FTZ/DAZ inside (fpenv.h).  No allocation. */
#ifndef FD_KERNELS_OPTIM_H
#define FD_KERNELS_OPTIM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Sum of squares of x[0..n) in double: fixed blocks of FD_SUMSQ_BLOCK elements, each
 * summed in a fixed order (8 interleaved partial sums), block sums added in order:
 * the same bits for any thread count and kernel path. */
#define FD_SUMSQ_BLOCK 8192
double fd_sumsq_f32(int64_t n, const float *x);

/* out[k] = fd_sumsq_f32(bounds[2k+1] - bounds[2k], x + bounds[2k]) for k < nseg (the same
 * bits as one call per segment; one entry point for all the variables of a model). */
void fd_sumsq_segments_f32(int64_t nseg, const int64_t *bounds, const float *x, double *out);

/* RMSprop: vel = rho*vel + (1-rho)*g²;
 *   centered (avg != NULL): avg = rho*avg + (1-rho)*g;  den = vel - avg² + eps
 *   else den = vel + eps;
 *   inc = lr*g / sqrt(den);  momentum > 0 (mom != NULL): mom = momentum*mom + inc; w -= mom
 *   else w -= inc. */
void fd_rmsprop_update_f32(int64_t n, float *w, const float *g, float *vel, float *mom,
                           float *avg, float lr, float rho, float momentum, float eps,
                           float wd_lr, float gscale, float clip);

/* Adagrad: acc += g²;  w -= lr*g / sqrt(acc + eps). */
void fd_adagrad_update_f32(int64_t n, float *w, const float *g, float *acc, float lr,
                           float eps, float wd_lr, float gscale, float clip);

/* Adadelta: ag = rho*ag + (1-rho)*g²;  d = -sqrt(ad + eps)*g / sqrt(ag + eps);
 *   ad = rho*ad + (1-rho)*d²;  w += lr*d. */
void fd_adadelta_update_f32(int64_t n, float *w, const float *g, float *ag, float *ad,
                            float lr, float rho, float eps, float wd_lr, float gscale,
                            float clip);

/* Nadam (Keras 3): m += (g-m)(1-b1);  v += (g²-v)(1-b2);
 *   m_hat = cm*m + cg*g;  v_hat = v*cv;  w -= lr*m_hat / (sqrt(v_hat) + eps)
 * with the step's scalars computed by the caller in double:
 *   cm = u_{t+1} / (1 - prod_{s<=t+1} u_s),  cg = (1 - u_t) / (1 - prod_{s<=t} u_s),
 *   cv = 1 / (1 - b2^t),  u_s = b1 (1 - 0.5 * 0.96^s),  t = iterations after the step. */
void fd_nadam_update_f32(int64_t n, float *w, const float *g, float *m, float *v, float lr,
                         float beta1, float beta2, float eps, float cm, float cg, float cv,
                         float wd_lr, float gscale, float clip);

/* SGD with clipping (the same arithmetic as fd_sgd_update_f32 when gscale == 1 and no
 * clip): v = momentum*v - lr*g; w += v (nesterov: w += momentum*v - lr*g).  vel may be
 * NULL when momentum == 0. */
void fd_sgd_clip_update_f32(int64_t n, float *w, const float *g, float *vel, float lr,
                            float momentum, int nesterov, float wd_lr, float gscale,
                            float clip);

/* Adam with clipping (the same arithmetic as fd_adam_update_f32 when gscale == 1 and no
 * clip): m += (g-m)(1-b1); v += (g²-v)(1-b2); w -= lr_t*m / (sqrt(v) + eps),
 * lr_t = lr*sqrt(1-b2^t)/(1-b1^t) computed by the caller. */
void fd_adam_clip_update_f32(int64_t n, float *w, const float *g, float *m, float *v,
                             float lr_t, float beta1, float beta2, float eps, float wd_lr,
                             float gscale, float clip);

#ifdef __cplusplus
}
#endif

#endif

/* optim.c — fused optimizer update kernels; see optim.h for the formulas.
 *
 * Portable C compiled with the baseline flags (SSE2 on x86-64): the loops vectorize, and
 * these kernels are bound by memory traffic (16-28 bytes per parameter), not arithmetic.
 * ISO C (-std=c11) keeps a*b+c unfused, so every build computes the same bits. */
#include "../internal.h"
#include "../fpenv.h"
#include "optim.h"

#include <math.h>

#define FD_OPT_GRAIN (1 << 15) /* elements per thread below which we stay serial */

#ifdef _OPENMP
#define FD_OPT_IDS(t, T) (t = omp_get_thread_num(), T = omp_get_num_threads())
#else
#define FD_OPT_IDS(t, T) ((void)0)
#endif

/* Run body over [lo, hi) chunks of [0, n): one chunk when small, else one contiguous
 * chunk (a multiple of 16 elements) per thread.  FTZ/DAZ on every thread. */
#define FD_OPT_CHUNKS(n, body)                                                      \
    do {                                                                            \
        int nt_ = fd_threads_for((n), FD_OPT_GRAIN);                                \
        if (nt_ <= 1) {                                                             \
            int64_t lo = 0, hi = (n);                                               \
            body;                                                                   \
        } else {                                                                    \
            _Pragma("omp parallel num_threads(nt_)") {                              \
                unsigned fp_ = fd_fp_enter();                                       \
                int t_ = 0, T_ = 1;                                                 \
                FD_OPT_IDS(t_, T_);                                                 \
                int64_t per_ = (((n) + T_ - 1) / T_ + 15) & ~(int64_t)15;           \
                int64_t lo = per_ * t_, hi = lo + per_ < (n) ? lo + per_ : (n);     \
                if (lo < hi) { body; }                                              \
                fd_fp_exit(fp_);                                                    \
            }                                                                       \
        }                                                                           \
    } while (0)

/* The gradient an update uses: scaled (clipnorm), then clamped (clipvalue).  Comparisons
 * keep NaN as NaN; c = +inf makes the clamp the identity. */
static inline float fd_opt_grad(float g, float gscale, float c) {
    float x = g * gscale;
    x = x < -c ? -c : x;
    x = x > c ? c : x;
    return x;
}

static inline float fd_opt_clip_bound(float clip) {
    return (clip > 0.0f) ? clip : INFINITY;
}

/* --------------------------------------------------------------- sum of squares */
static double fd_sumsq_block(const float *FD_RESTRICT x, int64_t n) {
    double a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) {
            double v = (double)x[i + j];
            a[j] += v * v;
        }
    for (int j = 0; i + j < n; j++) {
        double v = (double)x[i + j];
        a[j] += v * v;
    }
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

double fd_sumsq_f32(int64_t n, const float *x) {
    if (n <= 0) return 0.0;
    unsigned fp = fd_fp_enter();
    const int64_t B = FD_SUMSQ_BLOCK;
    const int64_t nb = (n + B - 1) / B;
    enum { ROUND = 256 };        /* block sums per round, kept on the stack */
    double part[ROUND];
    double total = 0.0;
    for (int64_t b0 = 0; b0 < nb; b0 += ROUND) {
        int64_t b1 = b0 + ROUND < nb ? b0 + ROUND : nb;
        int nt = fd_threads_for((b1 - b0) * B, FD_OPT_GRAIN);
        if (nt > (int)(b1 - b0)) nt = (int)(b1 - b0);
        (void)nt;
#pragma omp parallel num_threads(nt) if (nt > 1)
        {
            unsigned fp2 = fd_fp_enter();
#pragma omp for schedule(static)
            for (int64_t b = b0; b < b1; b++) {
                int64_t lo = b * B, hi = lo + B < n ? lo + B : n;
                part[b - b0] = fd_sumsq_block(x + lo, hi - lo);
            }
            fd_fp_exit(fp2);
        }
        for (int64_t b = b0; b < b1; b++) total += part[b - b0];
    }
    fd_fp_exit(fp);
    return total;
}

/* ---------------------------------------------------------------------- RMSprop */
static void rmsprop_plain(int64_t n, float *FD_RESTRICT w, const float *FD_RESTRICT g,
                          float *FD_RESTRICT vel, float lr, float rho, float eps, float wd_lr,
                          float gscale, float c) {
    const float r1 = 1.0f - rho;
    for (int64_t i = 0; i < n; i++) {
        float gi = fd_opt_grad(g[i], gscale, c);
        float wi = w[i] - w[i] * wd_lr;
        float v = rho * vel[i] + r1 * (gi * gi);
        vel[i] = v;
        w[i] = wi - (lr * gi) / sqrtf(v + eps);
    }
}

static void rmsprop_general(int64_t n, float *FD_RESTRICT w, const float *FD_RESTRICT g,
                            float *FD_RESTRICT vel, float *FD_RESTRICT mom,
                            float *FD_RESTRICT avg, float lr, float rho, float momentum,
                            float eps, float wd_lr, float gscale, float c) {
    const float r1 = 1.0f - rho;
    for (int64_t i = 0; i < n; i++) {
        float gi = fd_opt_grad(g[i], gscale, c);
        float wi = w[i] - w[i] * wd_lr;
        float v = rho * vel[i] + r1 * (gi * gi);
        vel[i] = v;
        float den;
        if (avg) {
            float a = rho * avg[i] + r1 * gi;
            avg[i] = a;
            den = v - a * a + eps;
        } else {
            den = v + eps;
        }
        float inc = (lr * gi) / sqrtf(den);
        if (mom) {
            float mm = momentum * mom[i] + inc;
            mom[i] = mm;
            w[i] = wi - mm;
        } else {
            w[i] = wi - inc;
        }
    }
}

void fd_rmsprop_update_f32(int64_t n, float *w, const float *g, float *vel, float *mom,
                           float *avg, float lr, float rho, float momentum, float eps,
                           float wd_lr, float gscale, float clip) {
    if (n <= 0) return;
    unsigned fp = fd_fp_enter();
    const float c = fd_opt_clip_bound(clip);
    if (!mom && !avg)
        FD_OPT_CHUNKS(n, rmsprop_plain(hi - lo, w + lo, g + lo, vel + lo, lr, rho, eps, wd_lr,
                                       gscale, c));
    else
        FD_OPT_CHUNKS(n, rmsprop_general(hi - lo, w + lo, g + lo, vel + lo,
                                         mom ? mom + lo : NULL, avg ? avg + lo : NULL, lr,
                                         rho, momentum, eps, wd_lr, gscale, c));
    fd_fp_exit(fp);
}

/* ---------------------------------------------------------------------- Adagrad */
static void adagrad_range(int64_t n, float *FD_RESTRICT w, const float *FD_RESTRICT g,
                          float *FD_RESTRICT acc, float lr, float eps, float wd_lr,
                          float gscale, float c) {
    for (int64_t i = 0; i < n; i++) {
        float gi = fd_opt_grad(g[i], gscale, c);
        float wi = w[i] - w[i] * wd_lr;
        float a = acc[i] + gi * gi;
        acc[i] = a;
        w[i] = wi - (lr * gi) / sqrtf(a + eps);
    }
}

void fd_adagrad_update_f32(int64_t n, float *w, const float *g, float *acc, float lr,
                           float eps, float wd_lr, float gscale, float clip) {
    if (n <= 0) return;
    unsigned fp = fd_fp_enter();
    const float c = fd_opt_clip_bound(clip);
    FD_OPT_CHUNKS(n, adagrad_range(hi - lo, w + lo, g + lo, acc + lo, lr, eps, wd_lr, gscale,
                                   c));
    fd_fp_exit(fp);
}

/* --------------------------------------------------------------------- Adadelta */
static void adadelta_range(int64_t n, float *FD_RESTRICT w, const float *FD_RESTRICT g,
                           float *FD_RESTRICT ag, float *FD_RESTRICT ad, float lr, float rho,
                           float eps, float wd_lr, float gscale, float c) {
    const float r1 = 1.0f - rho;
    for (int64_t i = 0; i < n; i++) {
        float gi = fd_opt_grad(g[i], gscale, c);
        float wi = w[i] - w[i] * wd_lr;
        float a = rho * ag[i] + r1 * (gi * gi);
        ag[i] = a;
        float d = -((sqrtf(ad[i] + eps) * gi) / sqrtf(a + eps));
        ad[i] = rho * ad[i] + r1 * (d * d);
        w[i] = wi + lr * d;
    }
}

void fd_adadelta_update_f32(int64_t n, float *w, const float *g, float *ag, float *ad,
                            float lr, float rho, float eps, float wd_lr, float gscale,
                            float clip) {
    if (n <= 0) return;
    unsigned fp = fd_fp_enter();
    const float c = fd_opt_clip_bound(clip);
    FD_OPT_CHUNKS(n, adadelta_range(hi - lo, w + lo, g + lo, ag + lo, ad + lo, lr, rho, eps,
                                    wd_lr, gscale, c));
    fd_fp_exit(fp);
}

/* ------------------------------------------------------------------------ Nadam */
static void nadam_range(int64_t n, float *FD_RESTRICT w, const float *FD_RESTRICT g,
                        float *FD_RESTRICT m, float *FD_RESTRICT v, float lr, float beta1,
                        float beta2, float eps, float cm, float cg, float cv, float wd_lr,
                        float gscale, float c) {
    const float c1 = 1.0f - beta1, c2 = 1.0f - beta2;
    for (int64_t i = 0; i < n; i++) {
        float gi = fd_opt_grad(g[i], gscale, c);
        float wi = w[i] - w[i] * wd_lr;
        float mi = m[i] + (gi - m[i]) * c1;
        float vi = v[i] + (gi * gi - v[i]) * c2;
        m[i] = mi;
        v[i] = vi;
        float mh = cm * mi + cg * gi;
        float vh = vi * cv;
        w[i] = wi - (mh * lr) / (sqrtf(vh) + eps);
    }
}

void fd_nadam_update_f32(int64_t n, float *w, const float *g, float *m, float *v, float lr,
                         float beta1, float beta2, float eps, float cm, float cg, float cv,
                         float wd_lr, float gscale, float clip) {
    if (n <= 0) return;
    unsigned fp = fd_fp_enter();
    const float c = fd_opt_clip_bound(clip);
    FD_OPT_CHUNKS(n, nadam_range(hi - lo, w + lo, g + lo, m + lo, v + lo, lr, beta1, beta2,
                                 eps, cm, cg, cv, wd_lr, gscale, c));
    fd_fp_exit(fp);
}

/* -------------------------------------------------------- SGD / Adam, clipped */
static void sgd_plain(int64_t n, float *FD_RESTRICT w, const float *FD_RESTRICT g, float lr,
                      float wd_lr, float gscale, float c) {
    for (int64_t i = 0; i < n; i++) {
        float gi = fd_opt_grad(g[i], gscale, c);
        w[i] = w[i] - wd_lr * w[i] - lr * gi;
    }
}

static void sgd_momentum(int64_t n, float *FD_RESTRICT w, const float *FD_RESTRICT g,
                         float *FD_RESTRICT vel, float lr, float momentum, int nesterov,
                         float wd_lr, float gscale, float c) {
    for (int64_t i = 0; i < n; i++) {
        float gi = fd_opt_grad(g[i], gscale, c);
        float wi = w[i] - wd_lr * w[i];
        float v = momentum * vel[i] - lr * gi;
        vel[i] = v;
        w[i] = nesterov ? wi + momentum * v - lr * gi : wi + v;
    }
}

void fd_sgd_clip_update_f32(int64_t n, float *w, const float *g, float *vel, float lr,
                            float momentum, int nesterov, float wd_lr, float gscale,
                            float clip) {
    if (n <= 0) return;
    unsigned fp = fd_fp_enter();
    const float c = fd_opt_clip_bound(clip);
    if (momentum == 0.0f || !vel)
        FD_OPT_CHUNKS(n, sgd_plain(hi - lo, w + lo, g + lo, lr, wd_lr, gscale, c));
    else
        FD_OPT_CHUNKS(n, sgd_momentum(hi - lo, w + lo, g + lo, vel + lo, lr, momentum,
                                      nesterov, wd_lr, gscale, c));
    fd_fp_exit(fp);
}

static void adam_range(int64_t n, float *FD_RESTRICT w, const float *FD_RESTRICT g,
                       float *FD_RESTRICT m, float *FD_RESTRICT v, float lr_t, float beta1,
                       float beta2, float eps, float wd_lr, float gscale, float c) {
    const float c1 = 1.0f - beta1, c2 = 1.0f - beta2;
    for (int64_t i = 0; i < n; i++) {
        float gi = fd_opt_grad(g[i], gscale, c);
        float mi = m[i] + (gi - m[i]) * c1;
        float vi = v[i] + (gi * gi - v[i]) * c2;
        m[i] = mi;
        v[i] = vi;
        w[i] = w[i] - wd_lr * w[i] - lr_t * mi / (sqrtf(vi) + eps);
    }
}

void fd_adam_clip_update_f32(int64_t n, float *w, const float *g, float *m, float *v,
                             float lr_t, float beta1, float beta2, float eps, float wd_lr,
                             float gscale, float clip) {
    if (n <= 0) return;
    unsigned fp = fd_fp_enter();
    const float c = fd_opt_clip_bound(clip);
    FD_OPT_CHUNKS(n, adam_range(hi - lo, w + lo, g + lo, m + lo, v + lo, lr_t, beta1, beta2,
                                eps, wd_lr, gscale, c));
    fd_fp_exit(fp);
}

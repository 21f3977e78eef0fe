/* optim_impl.h — the per-element loops of the optimizer kernels (optim.h), written once
 * in plain C and compiled once per ISA (optim_ref.c / optim_avx2.c / optim_avx512.c include
 * this with FD_SFX set), so the compiler vectorizes each copy for that ISA's registers.
 * ISO C (-std=c11) keeps a*b+c unfused and sqrtf / division are correctly rounded, so every
 * path computes the same bits (tests/test_optimizers.py checks it).  Each copy exports one
 * fd_optim_table_<isa>; optim.c picks the table of the chosen path. */
#include "../internal.h"
#include "optim_internal.h"

#include <math.h>

#define FD_OPT_CAT_(a, b) a##_##b
#define FD_OPT_CAT(a, b) FD_OPT_CAT_(a, b)

/* The gradient an update uses: scaled (clipnorm), then clamped (clipvalue).  Comparisons
 * keep NaN as NaN; c = +inf makes the clamp the identity. */
static inline float fd_opt_grad(float g, float gscale, float c) {
    float x = g * gscale;
    x = x < -c ? -c : x;
    x = x > c ? c : x;
    return x;
}

static double sumsq_block(const float *FD_RESTRICT x, int64_t n) {
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

const fd_optim_table FD_OPT_CAT(fd_optim_table, FD_SFX) = {
    sumsq_block, rmsprop_plain, rmsprop_general, adagrad_range, adadelta_range,
    nadam_range, sgd_plain, sgd_momentum, adam_range,
};

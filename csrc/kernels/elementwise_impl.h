/* elementwise_impl.h — elementwise kernels written once in plain C, compiled once per
 * ISA (elementwise_ref.c / _avx2.c / _avx512.c include this with FD_SFX set), so the
 * compiler vectorizes each copy for that ISA's registers.  Loops are simple, restrict-
 * qualified and branch-free so they vectorize; semantics are identical on every path
 * (same operations in the same order per element: results are bitwise equal). */
#include "../internal.h"
#include <math.h>

#define FD_CAT_(a, b) a##_##b
#define FD_CAT(a, b) FD_CAT_(a, b)
#define FD_FN(name) FD_CAT(name, FD_SFX)

void FD_FN(fd_relu)(int64_t n, float *out, const float *x) {
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        out[i] = v > 0.0f ? v : 0.0f;
    }
}

void FD_FN(fd_relu_backward)(int64_t n, float *FD_RESTRICT out, const float *FD_RESTRICT g,
                             const float *FD_RESTRICT y) {
    for (int64_t i = 0; i < n; i++) out[i] = y[i] > 0.0f ? g[i] : 0.0f;
}

void FD_FN(fd_relu_dropout_backward)(int64_t n, float *FD_RESTRICT out,
                                     const float *FD_RESTRICT g, const float *FD_RESTRICT h,
                                     float scale) {
    for (int64_t i = 0; i < n; i++) out[i] = h[i] > 0.0f ? g[i] * scale : 0.0f;
}

/* Adam/AdamW, Keras form.  lr_t includes the bias corrections; wd_lr = lr * weight_decay
 * (decoupled, AdamW; 0 for Adam). */
void FD_FN(fd_adam)(int64_t n, float *FD_RESTRICT w, const float *FD_RESTRICT g,
                    float *FD_RESTRICT m, float *FD_RESTRICT v, float lr_t, float beta1,
                    float beta2, float eps, float wd_lr) {
    const float c1 = 1.0f - beta1, c2 = 1.0f - beta2;
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i];
        float mi = m[i] + (gi - m[i]) * c1;
        float vi = v[i] + (gi * gi - v[i]) * c2;
        m[i] = mi;
        v[i] = vi;
        w[i] = w[i] - wd_lr * w[i] - lr_t * mi / (sqrtf(vi) + eps);
    }
}

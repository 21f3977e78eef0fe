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
        /* +0 for x <= 0 (also -0); NaN propagates, as numpy.maximum and PyTorch do */
        out[i] = v > 0.0f ? v : (v != v ? v : 0.0f);
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

/* Fused Dense backward on columns [c0, c1) (at most FD_DB_CB wide), every row in order:
 *   relu: dz = h > 0 ? grad*scale : 0;  else dz = mask bit (r*n + c) ? grad*scale : 0;
 *   db[c] = column sums of dz in row order (== fd_colsum_f32).
 * Mask bits are expanded 32 at a time from one 32-bit word (per-lane variable shifts,
 * vectorised for the ISA), never reading a byte past the last bit needed. */
#define FD_DB_CB 256
static inline uint32_t FD_FN(db_bits)(const uint8_t *mask, uint64_t b, int cnt) {
    const uint8_t *p = mask + (b >> 3);
    const int sh = (int)(b & 7), nbytes = (sh + cnt + 7) >> 3;
    uint64_t w = 0;
    for (int i = 0; i < nbytes; i++) w |= (uint64_t)p[i] << (8 * i);
    return (uint32_t)(w >> sh);
}

void FD_FN(fd_dense_backward_cols)(int64_t m, int64_t n, int64_t c0, int64_t c1,
                                   float *FD_RESTRICT dz, float *FD_RESTRICT db,
                                   const float *FD_RESTRICT grad, const float *FD_RESTRICT h,
                                   const uint8_t *FD_RESTRICT mask, float scale, int relu) {
    float acc[FD_DB_CB];
    const int64_t w = c1 - c0;
    for (int64_t j = 0; j < w; j++) acc[j] = 0.0f;
    for (int64_t r = 0; r < m; r++) {
        const float *FD_RESTRICT g = grad + r * n + c0;
        float *FD_RESTRICT d = dz + r * n + c0;
        if (relu) {
            const float *FD_RESTRICT hr = h + r * n + c0;
            for (int64_t j = 0; j < w; j++) {
                const float v = hr[j] > 0.0f ? g[j] * scale : 0.0f;
                d[j] = v;
                acc[j] += v;
            }
            continue;
        }
        const uint64_t bit0 = (uint64_t)r * (uint64_t)n + (uint64_t)c0;
        int64_t j = 0;
        for (; j + 32 <= w; j += 32) {
            const uint32_t bits = FD_FN(db_bits)(mask, bit0 + (uint64_t)j, 32);
            for (int q = 0; q < 32; q++) {
                const float v = (bits >> q) & 1u ? g[j + q] * scale : 0.0f;
                d[j + q] = v;
                acc[j + q] += v;
            }
        }
        if (j < w) {
            const int cnt = (int)(w - j);
            const uint32_t bits = FD_FN(db_bits)(mask, bit0 + (uint64_t)j, cnt);
            for (int q = 0; q < cnt; q++) {
                const float v = (bits >> q) & 1u ? g[j + q] * scale : 0.0f;
                d[j + q] = v;
                acc[j + q] += v;
            }
        }
    }
    if (db)
        for (int64_t j = 0; j < w; j++) db[c0 + j] = acc[j];
}

/* ------------------------------------------------------------ exp and softmax */
/* exp(x) for x <= 0 (max-subtracted logits), branch-free so that it vectorizes on every
 * ISA: Cody–Waite reduction x = n·ln2 + r, |r| <= ln2/2, a degree-6 polynomial for e^r
 * (max relative error ~2e-7), and 2^n built in the exponent bits.  x < -87 gives 0.
 * Plain float operations in a fixed order: the same bits on every path. */
static inline float fd_exp_nonpos(float x) {
    const float xc = x < -87.0f ? -87.0f : x;
    const float t = xc * 1.44269504088896341f;
    const float n = (t + 12582912.0f) - 12582912.0f; /* round to nearest (|t| < 2^22) */
    const float r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;
    float p = 1.3888949e-3f;
    p = p * r + 8.3333404e-3f;
    p = p * r + 4.1666672e-2f;
    p = p * r + 1.6666666e-1f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union { int32_t i; float f; } s;
    s.i = ((int32_t)n + 127) << 23;
    const float e = p * s.f;
    return x < -87.0f ? 0.0f : e;
}

#define FD_LANES 8

/* Softmax cross-entropy of rows [r0, r1): loss_rows[r] = row loss; grad (may be NULL)
 * = scale * (softmax - target).  labels (>= 0) or dense targets.  Sums use 8 fixed
 * partial accumulators combined in a fixed order (deterministic, vectorizable). */
/* Few classes (c <= FD_XENT_NARROW): 16 rows at a time with the rows in the vector lanes
 * (a 10-wide row cannot fill a vector; 16 rows can).  Per row the same operations as the
 * row-wise code below, in lane-independent order, so results depend only on the row. */
#define FD_XENT_NARROW 16
#define FD_XG 16
static void FD_FN(xent_narrow)(int64_t r0, int64_t rn, int64_t c, const float *logits,
                               const int64_t *labels, float scale, float *grad,
                               double *loss_rows) {
    float zt[FD_XENT_NARROW][FD_XG], et[FD_XENT_NARROW][FD_XG];
    float mx[FD_XG], sum[FD_XG], zl[FD_XG];
    for (int64_t j = 0; j < c; j++)
        for (int l = 0; l < FD_XG; l++) zt[j][l] = l < rn ? logits[(r0 + l) * c + j] : 0.0f;
    for (int l = 0; l < FD_XG; l++) mx[l] = -INFINITY;
    for (int64_t j = 0; j < c; j++)
        for (int l = 0; l < FD_XG; l++) mx[l] = zt[j][l] > mx[l] ? zt[j][l] : mx[l];
    for (int l = 0; l < FD_XG; l++) {
        if (!(mx[l] > -INFINITY && mx[l] < INFINITY)) mx[l] = 0.0f;
        sum[l] = 0.0f;
    }
    for (int64_t j = 0; j < c; j++)
        for (int l = 0; l < FD_XG; l++) {
            const float e = fd_exp_nonpos(zt[j][l] - mx[l]);
            et[j][l] = e;
            sum[l] += e;
        }
    for (int l = 0; l < rn; l++) {
        const int64_t y = labels[r0 + l];
        zl[l] = zt[y][l];
        const float log_sum = logf(sum[l]);
        loss_rows[r0 + l] = (double)(mx[l] - zl[l]) + (double)log_sum;
    }
    if (!grad) return;
    for (int l = 0; l < FD_XG; l++) sum[l] = scale / sum[l];
    for (int l = 0; l < rn; l++) {
        float *g = grad + (r0 + l) * c;
        const int64_t y = labels[r0 + l];
        for (int64_t j = 0; j < c; j++) g[j] = et[j][l] * sum[l];
        g[y] -= scale;
    }
}

void FD_FN(fd_xent_rows)(int64_t r0, int64_t r1, int64_t c, const float *logits,
                         const int64_t *labels, const float *targets, float scale, float *grad,
                         double *loss_rows) {
    if (labels && c <= FD_XENT_NARROW) {
        for (int64_t r = r0; r < r1; r += FD_XG)
            FD_FN(xent_narrow)(r, r1 - r < FD_XG ? r1 - r : FD_XG, c, logits, labels, scale,
                               grad, loss_rows);
        return;
    }
    for (int64_t r = r0; r < r1; r++) {
        const float *z = logits + r * c;
        float *g = grad ? grad + r * c : NULL;
        float mxl[FD_LANES];
        for (int l = 0; l < FD_LANES; l++) mxl[l] = -INFINITY;
        int64_t j = 0;
        for (; j + FD_LANES <= c; j += FD_LANES)
            for (int l = 0; l < FD_LANES; l++) mxl[l] = z[j + l] > mxl[l] ? z[j + l] : mxl[l];
        float mx = -INFINITY;
        for (int l = 0; l < FD_LANES; l++) mx = mxl[l] > mx ? mxl[l] : mx;
        for (; j < c; j++) mx = z[j] > mx ? z[j] : mx;
        if (!(mx > -INFINITY && mx < INFINITY)) mx = 0.0f; /* inf/nan rows give nan */
        float acc[FD_LANES] = {0};
        j = 0;
        if (g) {
            for (; j + FD_LANES <= c; j += FD_LANES)
                for (int l = 0; l < FD_LANES; l++) {
                    const float e = fd_exp_nonpos(z[j + l] - mx);
                    g[j + l] = e;
                    acc[l] += e;
                }
        } else {
            for (; j + FD_LANES <= c; j += FD_LANES)
                for (int l = 0; l < FD_LANES; l++) acc[l] += fd_exp_nonpos(z[j + l] - mx);
        }
        float sum = 0.0f;
        for (int l = 0; l < FD_LANES; l++) sum += acc[l];
        for (; j < c; j++) {
            const float e = fd_exp_nonpos(z[j] - mx);
            if (g) g[j] = e;
            sum += e;
        }
        const float log_sum = logf(sum); /* sum in [1, c]: float log is exact enough */
        const double lse = (double)mx + (double)log_sum;
        double loss;
        if (labels) {
            loss = (double)(mx - z[labels[r]]) + (double)log_sum; /* no cancellation */
        } else {
            const float *t = targets + r * c;
            loss = 0.0;
            for (int64_t k = 0; k < c; k++)
                if (t[k] != 0.0f) loss += (double)t[k] * (lse - (double)z[k]);
        }
        loss_rows[r] = loss;
        if (g) {
            const float inv = 1.0f / sum;
            if (labels) {
                const int64_t y = labels[r];
                for (int64_t k = 0; k < c; k++) g[k] = g[k] * inv * scale;
                g[y] = (g[y] - scale);  /* p*scale - 1*scale */
            } else {
                const float *t = targets + r * c;
                for (int64_t k = 0; k < c; k++) g[k] = (g[k] * inv - t[k]) * scale;
            }
        }
    }
}

/* Row-wise softmax of rows [r0, r1). */
void FD_FN(fd_softmax_rows)(int64_t r0, int64_t r1, int64_t c, float *out, const float *x) {
    for (int64_t r = r0; r < r1; r++) {
        const float *z = x + r * c;
        float *o = out + r * c;
        float mx = -INFINITY;
        for (int64_t j = 0; j < c; j++) mx = z[j] > mx ? z[j] : mx;
        if (!(mx > -INFINITY && mx < INFINITY)) mx = 0.0f;
        float acc[FD_LANES] = {0};
        int64_t j = 0;
        for (; j + FD_LANES <= c; j += FD_LANES)
            for (int l = 0; l < FD_LANES; l++) {
                const float e = fd_exp_nonpos(z[j + l] - mx);
                o[j + l] = e;
                acc[l] += e;
            }
        float sum = 0.0f;
        for (int l = 0; l < FD_LANES; l++) sum += acc[l];
        for (; j < c; j++) {
            const float e = fd_exp_nonpos(z[j] - mx);
            o[j] = e;
            sum += e;
        }
        const float inv = 1.0f / sum;
        for (j = 0; j < c; j++) o[j] *= inv;
    }
}

/* ops.c — public entry points of the elementwise, loss and optimizer kernels.
 * Elementwise work is cut into contiguous chunks across OpenMP threads (no reductions
 * cross threads); losses reduce per row in parallel and then sum rows in order, so every
 * result is bitwise identical for any thread count. */
#include "../internal.h"

#include <float.h>
#include <math.h>
#include <string.h>

#define FD_EW_GRAIN (1 << 15) /* elements per thread below which we stay serial */

/* Run body(lo, hi) over [0, n) in per-thread chunks aligned to 16 elements. */
#define FD_PARALLEL_CHUNKS(n, grain, body)                                          \
    do {                                                                            \
        int nt_ = fd_threads_for((n), (grain));                                     \
        if (nt_ <= 1) {                                                             \
            int64_t lo = 0, hi = (n);                                               \
            body;                                                                   \
        } else {                                                                    \
            _Pragma("omp parallel num_threads(nt_)") {                              \
                int t_ = 0, T_ = 1;                                                 \
                FD_OMP_IDS(t_, T_);                                                 \
                int64_t per_ = (((n) + T_ - 1) / T_ + 15) & ~(int64_t)15;           \
                int64_t lo = per_ * t_, hi = lo + per_ < (n) ? lo + per_ : (n);     \
                if (lo < hi) { body; }                                              \
            }                                                                       \
        }                                                                           \
    } while (0)

#ifdef _OPENMP
#define FD_OMP_IDS(t, T) (t = omp_get_thread_num(), T = omp_get_num_threads())
#else
#define FD_OMP_IDS(t, T) ((void)0)
#endif

void fd_relu_f32(int64_t n, float *out, const float *x) {
    fd_init();
    FD_PARALLEL_CHUNKS(n, FD_EW_GRAIN, fd_kt->relu(hi - lo, out + lo, x + lo));
}

void fd_relu_backward_f32(int64_t n, float *out, const float *grad, const float *y) {
    fd_init();
    FD_PARALLEL_CHUNKS(n, FD_EW_GRAIN, fd_kt->relu_backward(hi - lo, out + lo, grad + lo, y + lo));
}

void fd_relu_dropout_backward_f32(int64_t n, float *out, const float *grad, const float *h,
                                  float scale) {
    fd_init();
    FD_PARALLEL_CHUNKS(n, FD_EW_GRAIN,
                       fd_kt->relu_dropout_backward(hi - lo, out + lo, grad + lo, h + lo, scale));
}

void fd_bias_add_f32(int64_t m, int64_t n, float *out, const float *x, const float *bias) {
    int nt = fd_threads_for(m * n, FD_EW_GRAIN);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t r = 0; r < m; r++) {
        const float *xr = x + r * n;
        float *orow = out + r * n;
        for (int64_t c = 0; c < n; c++) orow[c] = xr[c] + bias[c];
    }
}

/* Column sums: threads split the columns; each column is summed over rows in order. */
void fd_colsum_f32(int64_t m, int64_t n, float *out, const float *x, float alpha, float beta) {
    const int64_t CB = 256; /* columns per task: a row segment of 1 KiB */
    int64_t tasks = (n + CB - 1) / CB;
    int nt = fd_threads_for(m * n, FD_EW_GRAIN);
    if (nt > tasks) nt = (int)tasks;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t c0 = t * CB, c1 = c0 + CB < n ? c0 + CB : n;
        float acc[256];
        for (int64_t c = c0; c < c1; c++) acc[c - c0] = 0.0f;
        for (int64_t r = 0; r < m; r++) {
            const float *xr = x + r * n;
            for (int64_t c = c0; c < c1; c++) acc[c - c0] += xr[c];
        }
        for (int64_t c = c0; c < c1; c++)
            out[c] = beta == 0.0f ? alpha * acc[c - c0] : alpha * acc[c - c0] + beta * out[c];
    }
}

/* Fused backward of (bias) -> ReLU -> dropout given the layer output h:
 *   dz = grad*scale where h > 0 else 0 (relu = 1), or dz = mask ? grad*scale : 0 (relu = 0,
 *   mask given), and db = column sums of dz — in one pass over grad.  Threads split the
 *   columns; each column is summed in row order (bitwise equal to fd_colsum_f32). */
void fd_dense_backward_act_f32(int64_t m, int64_t n, float *dz, float *db, const float *grad,
                               const float *h, const uint8_t *mask, float scale, int relu) {
    const int64_t CB = 256;
    int64_t tasks = (n + CB - 1) / CB;
    int nt = fd_threads_for(m * n, FD_EW_GRAIN);
    if (nt > tasks) nt = (int)tasks;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t c0 = t * CB, c1 = c0 + CB < n ? c0 + CB : n;
        float acc[256];
        for (int64_t c = c0; c < c1; c++) acc[c - c0] = 0.0f;
        for (int64_t r = 0; r < m; r++) {
            const float *g = grad + r * n;
            float *d = dz + r * n;
            if (relu) {
                const float *hr = h + r * n;
                for (int64_t c = c0; c < c1; c++) {
                    float v = hr[c] > 0.0f ? g[c] * scale : 0.0f;
                    d[c] = v;
                    acc[c - c0] += v;
                }
            } else {
                for (int64_t c = c0; c < c1; c++) {
                    int64_t i = r * n + c;
                    float v = (mask[i >> 3] >> (i & 7)) & 1 ? g[c] * scale : 0.0f;
                    d[c] = v;
                    acc[c - c0] += v;
                }
            }
        }
        if (db)
            for (int64_t c = c0; c < c1; c++) db[c] = acc[c - c0];
    }
}

/* ------------------------------------------------------------------- losses */
/* Rows go in chunks of XENT_CHUNK through a stack buffer of per-row losses: the rows of a
 * chunk are computed in parallel (contiguous ranges per thread, per-ISA row kernel), then
 * summed in row order — deterministic for any thread count, and no allocation. */
#define XENT_CHUNK 1024
static double xent(int64_t n, int64_t c, const float *logits, const int64_t *labels,
                   const float *targets, float scale, float *grad, float *loss_rows) {
    fd_init();
    const fd_kernel_table *kt = fd_kt;
    double rows[XENT_CHUNK];
    double total = 0.0;
    for (int64_t c0 = 0; c0 < n; c0 += XENT_CHUNK) {
        const int64_t len = n - c0 < XENT_CHUNK ? n - c0 : XENT_CHUNK;
        const float *z = logits + c0 * c;
        const int64_t *y = labels ? labels + c0 : NULL;
        const float *t = targets ? targets + c0 * c : NULL;
        float *g = grad ? grad + c0 * c : NULL;
        int nt = fd_threads_for(len * c, 1 << 15);
        if (nt <= 1) {
            kt->xent_rows(0, len, c, z, y, t, scale, g, rows);
        } else {
#pragma omp parallel num_threads(nt)
            {
                int ti = 0, T = 1;
                FD_OMP_IDS(ti, T);
                int64_t r0 = len * ti / T, r1 = len * (ti + 1) / T;
                if (r1 > r0) kt->xent_rows(r0, r1, c, z, y, t, scale, g, rows);
            }
        }
        for (int64_t r = 0; r < len; r++) {
            total += rows[r];
            if (loss_rows) loss_rows[c0 + r] = (float)rows[r];
        }
    }
    return total;
}

double fd_softmax_xent_labels_f32(int64_t n, int64_t c, const float *logits,
                                  const int64_t *labels, float scale, float *grad,
                                  float *loss_rows) {
    return xent(n, c, logits, labels, NULL, scale, grad, loss_rows);
}

double fd_softmax_xent_targets_f32(int64_t n, int64_t c, const float *logits,
                                   const float *targets, float scale, float *grad,
                                   float *loss_rows) {
    return xent(n, c, logits, NULL, targets, scale, grad, loss_rows);
}

void fd_softmax_f32(int64_t n, int64_t c, float *out, const float *x) {
    fd_init();
    const fd_kernel_table *kt = fd_kt;
    int nt = fd_threads_for(n * c, 1 << 15);
    if (nt > n) nt = (int)n;
    if (nt <= 1) {
        kt->softmax_rows(0, n, c, out, x);
        return;
    }
#pragma omp parallel num_threads(nt)
    {
        int t = 0, T = 1;
        FD_OMP_IDS(t, T);
        int64_t r0 = n * t / T, r1 = n * (t + 1) / T;
        if (r1 > r0) kt->softmax_rows(r0, r1, c, out, x);
    }
}

double fd_mse_f32(int64_t n, const float *pred, const float *target, float scale, float *grad) {
    double total = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)pred[i] - (double)target[i];
        total += d * d;
        if (grad) grad[i] = (float)(d * (double)scale);
    }
    return total;
}

/* --------------------------------------------------------------- optimizers */
void fd_regularize_grad_f32(int64_t n, float *g, const float *w, float l1, float l2) {
    int nt = fd_threads_for(n, FD_EW_GRAIN);
    const float two_l2 = 2.0f * l2;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t i = 0; i < n; i++) {
        float s = (w[i] > 0.0f) - (w[i] < 0.0f);
        g[i] = g[i] + l1 * s + two_l2 * w[i];
    }
}

void fd_sgd_update_f32(int64_t n, float *w, const float *g, float *vel, float lr,
                       float momentum, int nesterov, float weight_decay) {
    int nt = fd_threads_for(n, FD_EW_GRAIN);
    /* Keras SGD: v = momentum*v - lr*g; w += v (nesterov: w += momentum*v - lr*g).
     * weight_decay is decoupled: w -= lr*wd*w first. */
    const float wd_lr = lr * weight_decay;
    if (momentum == 0.0f || !vel) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t i = 0; i < n; i++) w[i] = w[i] - wd_lr * w[i] - lr * g[i];
        return;
    }
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t i = 0; i < n; i++) {
        float wi = w[i] - wd_lr * w[i];
        float v = momentum * vel[i] - lr * g[i];
        vel[i] = v;
        w[i] = nesterov ? wi + momentum * v - lr * g[i] : wi + v;
    }
}

void fd_adam_update_f32(int64_t n, float *w, const float *g, float *m, float *v, float lr,
                        float beta1, float beta2, float eps, float weight_decay, int64_t t) {
    fd_init();
    double b1t = pow((double)beta1, (double)t), b2t = pow((double)beta2, (double)t);
    float lr_t = (float)((double)lr * sqrt(1.0 - b2t) / (1.0 - b1t));
    float wd_lr = lr * weight_decay;
    FD_PARALLEL_CHUNKS(n, FD_EW_GRAIN,
                       fd_kt->adam(hi - lo, w + lo, g + lo, m + lo, v + lo, lr_t, beta1, beta2,
                                   eps, wd_lr));
}

void fd_maxnorm_f32(int64_t rows, int64_t cols, float *w, float max_value) {
    const int64_t CB = 256;
    int64_t tasks = (cols + CB - 1) / CB;
    int nt = fd_threads_for(rows * cols, FD_EW_GRAIN);
    if (nt > tasks) nt = (int)tasks;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t c0 = t * CB, c1 = c0 + CB < cols ? c0 + CB : cols;
        float acc[256];
        for (int64_t c = c0; c < c1; c++) acc[c - c0] = 0.0f;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = c0; c < c1; c++) acc[c - c0] += w[r * cols + c] * w[r * cols + c];
        for (int64_t c = c0; c < c1; c++) {
            float norm = sqrtf(acc[c - c0]);
            /* Keras MaxNorm: w * clip(norm, 0, max) / (eps + norm) */
            float desired = norm < max_value ? norm : max_value;
            acc[c - c0] = desired / (1e-7f + norm);
        }
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = c0; c < c1; c++) w[r * cols + c] *= acc[c - c0];
    }
}

/* ops.c — public entry points of the elementwise, loss and optimizer kernels.
 * Elementwise work is cut into contiguous chunks across threads (fd_parallel_range) (no reductions
 * cross threads); losses reduce per row in parallel and then sum rows in order, so every
 * result is bitwise identical for any thread count. */
#include "../internal.h"
#include "../fpenv.h"

#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#define FD_EW_GRAIN (1 << 15) /* elements per thread below which we stay serial */

/* Public entry: the kernel table, then the kernels' floating-point mode (fpenv.h). */
#define FD_ENTER() \
    fd_init();     \
    const unsigned fp_ = fd_fp_enter()
#define FD_EXIT() fd_fp_exit(fp_)

static int64_t grain_units(int64_t unit_work) /* units of unit_work elements per grain */
{
    if (unit_work < 1) unit_work = 1;
    return (FD_EW_GRAIN + unit_work - 1) / unit_work;
}

/* Argument block of the elementwise range functions below. */
typedef struct {
    const fd_kernel_table *kt;
    float *out, *m, *v;
    const float *x, *y;
    const uint8_t *mask;
    int64_t rows, cols;
    float s0, s1, s2, s3, s4;
    int flag;
    float *db;
} fd_ew;

static void relu_range(void *c_, int64_t lo, int64_t hi) {
    const fd_ew *c = c_;
    c->kt->relu(hi - lo, c->out + lo, c->x + lo);
}

void fd_relu_f32(int64_t n, float *out, const float *x) {
    FD_ENTER();
    fd_ew c = {.kt = fd_kt, .out = out, .x = x};
    fd_parallel_range(n, FD_EW_GRAIN, 16, relu_range, &c);
    FD_EXIT();
}

static void relu_backward_range(void *c_, int64_t lo, int64_t hi) {
    const fd_ew *c = c_;
    c->kt->relu_backward(hi - lo, c->out + lo, c->x + lo, c->y + lo);
}

void fd_relu_backward_f32(int64_t n, float *out, const float *grad, const float *y) {
    FD_ENTER();
    fd_ew c = {.kt = fd_kt, .out = out, .x = grad, .y = y};
    fd_parallel_range(n, FD_EW_GRAIN, 16, relu_backward_range, &c);
    FD_EXIT();
}

static void relu_dropout_backward_range(void *c_, int64_t lo, int64_t hi) {
    const fd_ew *c = c_;
    c->kt->relu_dropout_backward(hi - lo, c->out + lo, c->x + lo, c->y + lo, c->s0);
}

void fd_relu_dropout_backward_f32(int64_t n, float *out, const float *grad, const float *h,
                                  float scale) {
    FD_ENTER();
    fd_ew c = {.kt = fd_kt, .out = out, .x = grad, .y = h, .s0 = scale};
    fd_parallel_range(n, FD_EW_GRAIN, 16, relu_dropout_backward_range, &c);
    FD_EXIT();
}

static void bias_add_rows(void *c_, int64_t r0, int64_t r1) {
    const fd_ew *c = c_;
    const int64_t n = c->cols;
    for (int64_t r = r0; r < r1; r++) {
        const float *FD_RESTRICT xr = c->x + r * n;
        float *orow = c->out + r * n;
        const float *FD_RESTRICT bias = c->y;
        for (int64_t j = 0; j < n; j++) orow[j] = xr[j] + bias[j];
    }
}

void fd_bias_add_f32(int64_t m, int64_t n, float *out, const float *x, const float *bias) {
    FD_ENTER();
    fd_ew c = {.out = out, .x = x, .y = bias, .cols = n};
    fd_parallel_range(m, grain_units(n), 1, bias_add_rows, &c);
    FD_EXIT();
}

/* Column sums: threads split the columns; each column is summed over rows in order. */
#define FD_CB 256 /* columns per task: a row segment of 1 KiB */
static void colsum_tasks(void *c_, int64_t t0, int64_t t1) {
    const fd_ew *c = c_;
    const int64_t m = c->rows, n = c->cols;
    const float alpha = c->s0, beta = c->s1;
    for (int64_t t = t0; t < t1; t++) {
        int64_t c0 = t * FD_CB, c1 = c0 + FD_CB < n ? c0 + FD_CB : n;
        float acc[FD_CB];
        for (int64_t j = c0; j < c1; j++) acc[j - c0] = 0.0f;
        for (int64_t r = 0; r < m; r++) {
            const float *xr = c->x + r * n;
            for (int64_t j = c0; j < c1; j++) acc[j - c0] += xr[j];
        }
        for (int64_t j = c0; j < c1; j++)
            c->out[j] = beta == 0.0f ? alpha * acc[j - c0] : alpha * acc[j - c0] + beta * c->out[j];
    }
}

void fd_colsum_f32(int64_t m, int64_t n, float *out, const float *x, float alpha, float beta) {
    FD_ENTER();
    fd_ew c = {.out = out, .x = x, .rows = m, .cols = n, .s0 = alpha, .s1 = beta};
    fd_parallel_range((n + FD_CB - 1) / FD_CB, grain_units(m * FD_CB), 1, colsum_tasks, &c);
    FD_EXIT();
}

/* Fused backward of (bias) -> ReLU -> dropout given the layer output h:
 *   dz = grad*scale where h > 0 else 0 (relu = 1), or dz = mask ? grad*scale : 0 (relu = 0,
 *   mask given), and db = column sums of dz — in one pass over grad.  Threads split the
 *   columns; each column is summed in row order (bitwise equal to fd_colsum_f32). */
static void dense_backward_tasks(void *c_, int64_t t0, int64_t t1) {
    const fd_ew *c = c_;
    const int64_t n = c->cols;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t c0 = t * FD_CB, c1 = c0 + FD_CB < n ? c0 + FD_CB : n;
        c->kt->dense_backward_cols(c->rows, n, c0, c1, c->out, c->db, c->x, c->y, c->mask,
                                   c->s0, c->flag);
    }
}

void fd_dense_backward_act_f32(int64_t m, int64_t n, float *dz, float *db, const float *grad,
                               const float *h, const uint8_t *mask, float scale, int relu) {
    FD_ENTER();
    fd_ew c = {.kt = fd_kt, .out = dz, .db = db, .x = grad, .y = h, .mask = mask, .rows = m,
               .cols = n, .s0 = scale, .flag = relu};
    fd_parallel_range((n + FD_CB - 1) / FD_CB, grain_units(m * FD_CB), 1, dense_backward_tasks,
                      &c);
    FD_EXIT();
}

/* ------------------------------------------------------------------- losses */
/* Rows go in chunks of XENT_CHUNK through a stack buffer of per-row losses: the rows of a
 * chunk are computed in parallel (contiguous ranges, per-ISA row kernel), then summed in
 * row order — deterministic for any thread count, and no allocation. */
#define XENT_CHUNK 1024
typedef struct {
    const fd_kernel_table *kt;
    int64_t c;
    const float *z, *t;
    const int64_t *y;
    float scale;
    float *g;
    double *rows;
    float *out;
} fd_rows_job;

static void xent_range(void *j_, int64_t r0, int64_t r1) {
    const fd_rows_job *j = j_;
    j->kt->xent_rows(r0, r1, j->c, j->z, j->y, j->t, j->scale, j->g, j->rows);
}

static double xent(int64_t n, int64_t c, const float *logits, const int64_t *labels,
                   const float *targets, float scale, float *grad, float *loss_rows) {
    FD_ENTER();
    const fd_kernel_table *kt = fd_kt;
    double rows[XENT_CHUNK];
    double total = 0.0;
    for (int64_t c0 = 0; c0 < n; c0 += XENT_CHUNK) {
        const int64_t len = n - c0 < XENT_CHUNK ? n - c0 : XENT_CHUNK;
        fd_rows_job j = {kt, c, logits + c0 * c, targets ? targets + c0 * c : NULL,
                         labels ? labels + c0 : NULL, scale, grad ? grad + c0 * c : NULL, rows,
                         NULL};
        fd_parallel_range(len, grain_units(c), 16, xent_range, &j);
        for (int64_t r = 0; r < len; r++) {
            total += rows[r];
            if (loss_rows) loss_rows[c0 + r] = (float)rows[r];
        }
    }
    FD_EXIT();
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

static void softmax_range(void *j_, int64_t r0, int64_t r1) {
    const fd_rows_job *j = j_;
    j->kt->softmax_rows(r0, r1, j->c, j->out, j->z);
}

void fd_softmax_f32(int64_t n, int64_t c, float *out, const float *x) {
    FD_ENTER();
    fd_rows_job j = {fd_kt, c, x, NULL, NULL, 0.0f, NULL, NULL, out};
    fd_parallel_range(n, grain_units(c), 1, softmax_range, &j);
    FD_EXIT();
}

double fd_mse_f32(int64_t n, const float *pred, const float *target, float scale, float *grad) {
    FD_ENTER();
    double total = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)pred[i] - (double)target[i];
        total += d * d;
        if (grad) grad[i] = (float)(d * (double)scale);
    }
    FD_EXIT();
    return total;
}

/* --------------------------------------------------------------- optimizers */
static void regularize_range(void *c_, int64_t lo, int64_t hi) {
    const fd_ew *c = c_;
    float *FD_RESTRICT g = c->out;
    const float *FD_RESTRICT w = c->x;
    const float l1 = c->s0, two_l2 = c->s1;
    for (int64_t i = lo; i < hi; i++) {
        float s = (w[i] > 0.0f) - (w[i] < 0.0f);
        g[i] = g[i] + l1 * s + two_l2 * w[i];
    }
}

void fd_regularize_grad_f32(int64_t n, float *g, const float *w, float l1, float l2) {
    FD_ENTER();
    fd_ew c = {.out = g, .x = w, .s0 = l1, .s1 = 2.0f * l2};
    fd_parallel_range(n, FD_EW_GRAIN, 16, regularize_range, &c);
    FD_EXIT();
}

/* Keras SGD: v = momentum*v - lr*g; w += v (nesterov: w += momentum*v - lr*g).
 * weight_decay is decoupled: w -= lr*wd*w first. */
static void sgd_range(void *c_, int64_t lo, int64_t hi) {
    const fd_ew *c = c_;
    float *FD_RESTRICT w = c->out, *FD_RESTRICT vel = c->v;
    const float *FD_RESTRICT g = c->x;
    const float lr = c->s0, momentum = c->s1, wd_lr = c->s2;
    if (momentum == 0.0f || !vel) {
        for (int64_t i = lo; i < hi; i++) w[i] = w[i] - wd_lr * w[i] - lr * g[i];
        return;
    }
    for (int64_t i = lo; i < hi; i++) {
        float wi = w[i] - wd_lr * w[i];
        float v = momentum * vel[i] - lr * g[i];
        vel[i] = v;
        w[i] = c->flag ? wi + momentum * v - lr * g[i] : wi + v;
    }
}

void fd_sgd_update_f32(int64_t n, float *w, const float *g, float *vel, float lr,
                       float momentum, int nesterov, float weight_decay) {
    FD_ENTER();
    fd_ew c = {.out = w, .x = g, .v = vel, .s0 = lr, .s1 = momentum, .s2 = lr * weight_decay,
               .flag = nesterov};
    fd_parallel_range(n, FD_EW_GRAIN, 16, sgd_range, &c);
    FD_EXIT();
}

static void adam_range(void *c_, int64_t lo, int64_t hi) {
    const fd_ew *c = c_;
    c->kt->adam(hi - lo, c->out + lo, c->x + lo, c->m + lo, c->v + lo, c->s0, c->s1, c->s2,
                c->s3, c->s4);
}

void fd_adam_update_f32(int64_t n, float *w, const float *g, float *m, float *v, float lr,
                        float beta1, float beta2, float eps, float weight_decay, int64_t t) {
    FD_ENTER();
    double b1t = pow((double)beta1, (double)t), b2t = pow((double)beta2, (double)t);
    float lr_t = (float)((double)lr * sqrt(1.0 - b2t) / (1.0 - b1t));
    fd_ew c = {.kt = fd_kt, .out = w, .x = g, .m = m, .v = v, .s0 = lr_t, .s1 = beta1,
               .s2 = beta2, .s3 = eps, .s4 = lr * weight_decay};
    fd_parallel_range(n, FD_EW_GRAIN, 16, adam_range, &c);
    FD_EXIT();
}

/* Magnitude check of a block (the gradients of a training step, before the update): the
 * sign-less bits of every element against those of the bound, OR-reduced per range
 * (integer ops: vectorizes at the baseline ISA, memory-bound; NaN's bits exceed
 * infinity's, so a bound of +inf is the finite check).  A range that sees an element
 * at or above the bound sets the flag. */
typedef struct {
    const uint32_t *x;
    uint32_t limit;
    atomic_int bad;
} fd_bound_ctx;

static void bound_range(void *c_, int64_t lo, int64_t hi) {
    fd_bound_ctx *c = c_;
    const uint32_t *FD_RESTRICT x = c->x;
    const uint32_t limit = c->limit;
    if (atomic_load_explicit(&c->bad, memory_order_relaxed)) return;
    uint32_t acc = 0;
    for (int64_t i = lo; i < hi; i++) acc |= (uint32_t)((x[i] & 0x7fffffffu) >= limit);
    if (acc) atomic_store_explicit(&c->bad, 1, memory_order_relaxed);
}

int fd_all_below_f32(int64_t n, const float *x, float bound) {
    if (!(bound > 0.0f)) return n == 0;
    FD_ENTER();
    fd_bound_ctx c = {.x = (const uint32_t *)(const void *)x};
    memcpy(&c.limit, &bound, sizeof c.limit);
    atomic_init(&c.bad, 0);
    fd_parallel_range(n, 4 * FD_EW_GRAIN, 16, bound_range, &c);
    FD_EXIT();
    return !atomic_load(&c.bad);
}

static void maxnorm_tasks(void *c_, int64_t t0, int64_t t1) {
    const fd_ew *c = c_;
    const int64_t rows = c->rows, cols = c->cols;
    float *w = c->out;
    const float max_value = c->s0;
    for (int64_t t = t0; t < t1; t++) {
        int64_t c0 = t * FD_CB, c1 = c0 + FD_CB < cols ? c0 + FD_CB : cols;
        float acc[FD_CB];
        for (int64_t j = c0; j < c1; j++) acc[j - c0] = 0.0f;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = c0; j < c1; j++) acc[j - c0] += w[r * cols + j] * w[r * cols + j];
        for (int64_t j = c0; j < c1; j++) {
            float norm = sqrtf(acc[j - c0]);
            /* Keras MaxNorm: w * clip(norm, 0, max) / (eps + norm) */
            float desired = norm < max_value ? norm : max_value;
            acc[j - c0] = desired / (1e-7f + norm);
        }
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = c0; j < c1; j++) w[r * cols + j] *= acc[j - c0];
    }
}

void fd_maxnorm_f32(int64_t rows, int64_t cols, float *w, float max_value) {
    FD_ENTER();
    fd_ew c = {.out = w, .rows = rows, .cols = cols, .s0 = max_value};
    fd_parallel_range((cols + FD_CB - 1) / FD_CB, grain_units(rows * FD_CB), 1, maxnorm_tasks,
                      &c);
    FD_EXIT();
}

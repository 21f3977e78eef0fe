/* loss2.c — binary cross-entropy (logits / probabilities), weighted softmax
 * cross-entropy and the regression losses (MSE, MAE, Huber); see act.h.
 *
 * Rows go in chunks of LOSS_CHUNK through a stack buffer of per-row losses: the rows of a
 * chunk are computed in parallel (contiguous row ranges per thread), then summed in row
 * order — the same result for any thread count, and no allocation. */
#include "../internal.h"
#include "../fpenv.h"
#include "act.h"

#include <math.h>

#define LOSS_CHUNK 1024
#define LOSS_GRAIN (1 << 14)   /* elements per thread below which a chunk stays serial */

#ifdef _OPENMP
#define FDL_OMP_IDS(t, T) (t = omp_get_thread_num(), T = omp_get_num_threads())
#else
#define FDL_OMP_IDS(t, T) ((void)0)
#endif

/* fn(args, base, r0, r1, rows): rows base + [r0, r1) of the problem; rows[r] for r in
 * [r0, r1) (indices local to the chunk that starts at row base) */
typedef void (*rows_fn)(const void *args, int64_t base, int64_t r0, int64_t r1, double *rows);

/* run fn over rows [0, n) in chunks; returns the row-order sum; float copies of the
 * (weighted) row losses to loss_rows if given */
static double run_rows(int64_t n, int64_t c, rows_fn fn, const void *args,
                       float *loss_rows) {
    double rows[LOSS_CHUNK];
    double total = 0.0;
    for (int64_t c0 = 0; c0 < n; c0 += LOSS_CHUNK) {
        const int64_t len = n - c0 < LOSS_CHUNK ? n - c0 : LOSS_CHUNK;
        int nt = fd_threads_for(len * (c > 0 ? c : 1), LOSS_GRAIN);
        if (nt <= 1) {
            fn(args, c0, 0, len, rows);
        } else {
#pragma omp parallel num_threads(nt)
            {
                unsigned fpt = fd_fp_enter();
                int ti = 0, T = 1;
                FDL_OMP_IDS(ti, T);
                const int64_t r0 = len * ti / T, r1 = len * (ti + 1) / T;
                if (r1 > r0) fn(args, c0, r0, r1, rows);
                fd_fp_exit(fpt);
            }
        }
        for (int64_t r = 0; r < len; r++) {
            total += rows[r];
            if (loss_rows) loss_rows[c0 + r] = (float)rows[r];
        }
    }
    return total;
}

/* -------------------------------------------------------------- BCE, per ISA */
typedef struct {
    int64_t c;
    const float *x, *t, *w;
    float ls, eps, gscale;
    float *grad;
    int probs;
    void (*logits_rows)(int64_t, int64_t, int64_t, const float *, const float *,
                        const float *, float, float, float *, double *);
    void (*probs_rows)(int64_t, int64_t, int64_t, const float *, const float *,
                       const float *, float, float, float, float *, double *);
} bce_args;

static void bce_rows(const void *vp, int64_t base, int64_t r0, int64_t r1, double *rows) {
    const bce_args *a = (const bce_args *)vp;
    const int64_t off = base * a->c;
    const float *w = a->w ? a->w + base : NULL;
    float *g = a->grad ? a->grad + off : NULL;
    if (a->probs)
        a->probs_rows(r0, r1, a->c, a->x + off, a->t + off, w, a->ls, a->eps, a->gscale, g,
                      rows);
    else
        a->logits_rows(r0, r1, a->c, a->x + off, a->t + off, w, a->ls, a->gscale, g, rows);
}

static void bce_pick(bce_args *a) {
    a->logits_rows = fd_bce_logits_rows_ref;
    a->probs_rows = fd_bce_probs_rows_ref;
    switch (fd_isa_get()) {
#ifdef FD_HAVE_AVX512
    case FD_ISA_AVX512:
        a->logits_rows = fd_bce_logits_rows_avx512;
        a->probs_rows = fd_bce_probs_rows_avx512;
        break;
#endif
#ifdef FD_HAVE_AVX2
    case FD_ISA_AVX2:
        a->logits_rows = fd_bce_logits_rows_avx2;
        a->probs_rows = fd_bce_probs_rows_avx2;
        break;
#endif
    default:
        break;
    }
}

static double bce(int probs, int64_t n, int64_t c, const float *x, const float *t,
                  const float *w, float ls, float eps, float scale, float *grad,
                  float *loss_rows) {
    if (n < 0 || c < 0 || (n > 0 && c > 0 && (!x || !t))) return NAN;
    if (n == 0) return 0.0;
    if (c == 0) {
        if (loss_rows)
            for (int64_t r = 0; r < n; r++) loss_rows[r] = 0.0f;
        return 0.0;
    }
    bce_args a = {c, x, t, w, ls, eps, (float)((double)scale / (double)c), grad, probs,
                  NULL, NULL};
    bce_pick(&a);
    unsigned fp = fd_fp_enter();
    const double total = run_rows(n, c, bce_rows, &a, loss_rows);
    fd_fp_exit(fp);
    return total;
}

double fd_bce_logits_f32(int64_t n, int64_t c, const float *z, const float *t,
                         const float *w, float label_smoothing, float scale, float *grad,
                         float *loss_rows) {
    return bce(0, n, c, z, t, w, label_smoothing, 0.0f, scale, grad, loss_rows);
}

double fd_bce_probs_f32(int64_t n, int64_t c, const float *p, const float *t,
                        const float *w, float label_smoothing, float eps, float scale,
                        float *grad, float *loss_rows) {
    return bce(1, n, c, p, t, w, label_smoothing, eps, scale, grad, loss_rows);
}

/* ------------------------------------------------- weighted softmax cross-entropy */
double fd_softmax_xent_weighted_f32(int64_t n, int64_t c, const float *logits,
                                    const int64_t *labels, const float *targets,
                                    const float *w, float scale, float *grad,
                                    float *loss_rows) {
    if (n < 0 || c <= 0 || !logits || (!labels) == (!targets)) return NAN;
    if (n == 0) return 0.0;
    if (!w) {
        return labels ? fd_softmax_xent_labels_f32(n, c, logits, labels, scale, grad,
                                                   loss_rows)
                      : fd_softmax_xent_targets_f32(n, c, logits, targets, scale, grad,
                                                    loss_rows);
    }
    unsigned fp = fd_fp_enter();
    float rows[LOSS_CHUNK];
    double total = 0.0;
    for (int64_t c0 = 0; c0 < n; c0 += LOSS_CHUNK) {
        const int64_t len = n - c0 < LOSS_CHUNK ? n - c0 : LOSS_CHUNK;
        float *g = grad ? grad + c0 * c : NULL;
        if (labels)
            fd_softmax_xent_labels_f32(len, c, logits + c0 * c, labels + c0, scale, g, rows);
        else
            fd_softmax_xent_targets_f32(len, c, logits + c0 * c, targets + c0 * c, scale, g,
                                        rows);
        for (int64_t r = 0; r < len; r++) {
            const float wr = w[c0 + r];
            const double lr = (double)rows[r] * (double)wr;
            total += lr;
            if (loss_rows) loss_rows[c0 + r] = (float)lr;
            if (g)
                for (int64_t j = 0; j < c; j++) g[r * c + j] *= wr;
        }
    }
    fd_fp_exit(fp);
    return total;
}

/* ---------------------------------------------------------- regression losses */
typedef struct {
    int kind;
    int64_t c;
    const float *p, *t, *w;
    double delta, gscale;
    float *grad;
} reg_args;

static void reg_rows(const void *vp, int64_t base, int64_t r0, int64_t r1, double *rows) {
    const reg_args *a = (const reg_args *)vp;
    const int64_t c = a->c;
    const double delta = a->delta;
    for (int64_t r = r0; r < r1; r++) {
        const int64_t gr_ = base + r;
        const float *pr = a->p + gr_ * c, *tr = a->t + gr_ * c;
        float *gr = a->grad ? a->grad + gr_ * c : NULL;
        const double wr = a->w ? (double)a->w[gr_] : 1.0;
        const double gs = a->gscale * wr;
        double sum = 0.0;
        switch (a->kind) {
        case FD_LOSS_MSE:
            for (int64_t j = 0; j < c; j++) {
                const double e = (double)pr[j] - (double)tr[j];
                sum += e * e;
                if (gr) gr[j] = (float)(2.0 * e * gs);
            }
            break;
        case FD_LOSS_MAE:
            for (int64_t j = 0; j < c; j++) {
                const double e = (double)pr[j] - (double)tr[j];
                sum += fabs(e);
                if (gr) gr[j] = (float)((double)((e > 0.0) - (e < 0.0)) * gs +
                                        (e != e ? e : 0.0));
            }
            break;
        default: /* Huber */
            for (int64_t j = 0; j < c; j++) {
                const double e = (double)pr[j] - (double)tr[j];
                const double ae = fabs(e);
                const double q = ae < delta ? ae : delta;
                sum += 0.5 * q * q + delta * (ae - q);
                const double ce = e < -delta ? -delta : (e > delta ? delta : e);
                if (gr) gr[j] = (float)(ce * gs);
            }
            break;
        }
        rows[r] = sum / (double)c * wr;
    }
}

double fd_regression_loss_f32(int kind, int64_t n, int64_t c, const float *pred,
                              const float *t, const float *w, float delta, float scale,
                              float *grad, float *loss_rows) {
    if (kind < FD_LOSS_MSE || kind > FD_LOSS_HUBER || n < 0 || c < 0 ||
        (n > 0 && c > 0 && (!pred || !t)))
        return NAN;
    if (n == 0) return 0.0;
    if (c == 0) {
        if (loss_rows)
            for (int64_t r = 0; r < n; r++) loss_rows[r] = 0.0f;
        return 0.0;
    }
    reg_args a = {kind, c, pred, t, w, (double)delta, (double)scale / (double)c, grad};
    unsigned fp = fd_fp_enter();
    const double total = run_rows(n, c, reg_rows, &a, loss_rows);
    fd_fp_exit(fp);
    return total;
}

/* optim.c — public entry points of the fused optimizer kernels; see optim.h for the
 * formulas.  The loops live in optim_impl.h, compiled once per ISA (optim_ref.c,
 * optim_avx2.c, optim_avx512.c); the table of the path fd_isa_get() names is used, and
 * every path computes the same bits.  On 2 cores of AMD Zen 5, one thread, Nadam over
 * 100k parameters (cache-resident): 0.82 ns/element (baseline SSE2), 0.46 (AVX2), 0.30
 * (AVX-512); over 1.86M parameters (DRAM-bound) 1.08 / 0.94 / 0.95. */
#include "../internal.h"
#include "../fpenv.h"
#include "optim.h"
#include "optim_internal.h"

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

static inline float fd_opt_clip_bound(float clip) {
    return (clip > 0.0f) ? clip : INFINITY;
}

static const fd_optim_table *fd_opt_table(void) {
    fd_init();
    switch (fd_isa_get()) {
#ifdef FD_HAVE_AVX512
    case FD_ISA_AVX512: return &fd_optim_table_avx512;
#endif
#ifdef FD_HAVE_AVX2
    case FD_ISA_AVX2: return &fd_optim_table_avx2;
#endif
    default: return &fd_optim_table_ref;
    }
}

/* --------------------------------------------------------------- sum of squares */

double fd_sumsq_f32(int64_t n, const float *x) {
    if (n <= 0) return 0.0;
    const fd_optim_table *k = fd_opt_table();
    unsigned fp = fd_fp_enter();
    const int64_t B = FD_SUMSQ_BLOCK;
    const int64_t nb = (n + B - 1) / B;
    double total = 0.0;
    if (fd_threads_for(n, FD_OPT_GRAIN) <= 1) {      /* small: no parallel region */
        for (int64_t b = 0; b < nb; b++) {
            int64_t lo = b * B, hi = lo + B < n ? lo + B : n;
            total += k->sumsq_block(x + lo, hi - lo);
        }
        fd_fp_exit(fp);
        return total;
    }
    enum { ROUND = 256 };        /* block sums per round, kept on the stack */
    double part[ROUND];
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
                part[b - b0] = k->sumsq_block(x + lo, hi - lo);
            }
            fd_fp_exit(fp2);
        }
        for (int64_t b = b0; b < b1; b++) total += part[b - b0];
    }
    fd_fp_exit(fp);
    return total;
}

void fd_sumsq_segments_f32(int64_t nseg, const int64_t *bounds, const float *x, double *out) {
    for (int64_t k = 0; k < nseg; k++)
        out[k] = fd_sumsq_f32(bounds[2 * k + 1] - bounds[2 * k], x + bounds[2 * k]);
}

/* ---------------------------------------------------------------------- RMSprop */

void fd_rmsprop_update_f32(int64_t n, float *w, const float *g, float *vel, float *mom,
                           float *avg, float lr, float rho, float momentum, float eps,
                           float wd_lr, float gscale, float clip) {
    if (n <= 0) return;
    const fd_optim_table *k = fd_opt_table();
    unsigned fp = fd_fp_enter();
    const float c = fd_opt_clip_bound(clip);
    if (!mom && !avg)
        FD_OPT_CHUNKS(n, k->rmsprop_plain(hi - lo, w + lo, g + lo, vel + lo, lr, rho, eps, wd_lr,
                                       gscale, c));
    else
        FD_OPT_CHUNKS(n, k->rmsprop_general(hi - lo, w + lo, g + lo, vel + lo,
                                         mom ? mom + lo : NULL, avg ? avg + lo : NULL, lr,
                                         rho, momentum, eps, wd_lr, gscale, c));
    fd_fp_exit(fp);
}

/* ---------------------------------------------------------------------- Adagrad */

void fd_adagrad_update_f32(int64_t n, float *w, const float *g, float *acc, float lr,
                           float eps, float wd_lr, float gscale, float clip) {
    if (n <= 0) return;
    const fd_optim_table *k = fd_opt_table();
    unsigned fp = fd_fp_enter();
    const float c = fd_opt_clip_bound(clip);
    FD_OPT_CHUNKS(n, k->adagrad(hi - lo, w + lo, g + lo, acc + lo, lr, eps, wd_lr, gscale,
                                   c));
    fd_fp_exit(fp);
}

/* --------------------------------------------------------------------- Adadelta */

void fd_adadelta_update_f32(int64_t n, float *w, const float *g, float *ag, float *ad,
                            float lr, float rho, float eps, float wd_lr, float gscale,
                            float clip) {
    if (n <= 0) return;
    const fd_optim_table *k = fd_opt_table();
    unsigned fp = fd_fp_enter();
    const float c = fd_opt_clip_bound(clip);
    FD_OPT_CHUNKS(n, k->adadelta(hi - lo, w + lo, g + lo, ag + lo, ad + lo, lr, rho, eps,
                                    wd_lr, gscale, c));
    fd_fp_exit(fp);
}

/* ------------------------------------------------------------------------ Nadam */

void fd_nadam_update_f32(int64_t n, float *w, const float *g, float *m, float *v, float lr,
                         float beta1, float beta2, float eps, float cm, float cg, float cv,
                         float wd_lr, float gscale, float clip) {
    if (n <= 0) return;
    const fd_optim_table *k = fd_opt_table();
    unsigned fp = fd_fp_enter();
    const float c = fd_opt_clip_bound(clip);
    FD_OPT_CHUNKS(n, k->nadam(hi - lo, w + lo, g + lo, m + lo, v + lo, lr, beta1, beta2,
                                 eps, cm, cg, cv, wd_lr, gscale, c));
    fd_fp_exit(fp);
}

/* -------------------------------------------------------- SGD / Adam, clipped */

void fd_sgd_clip_update_f32(int64_t n, float *w, const float *g, float *vel, float lr,
                            float momentum, int nesterov, float wd_lr, float gscale,
                            float clip) {
    if (n <= 0) return;
    const fd_optim_table *k = fd_opt_table();
    unsigned fp = fd_fp_enter();
    const float c = fd_opt_clip_bound(clip);
    if (momentum == 0.0f || !vel)
        FD_OPT_CHUNKS(n, k->sgd_plain(hi - lo, w + lo, g + lo, lr, wd_lr, gscale, c));
    else
        FD_OPT_CHUNKS(n, k->sgd_momentum(hi - lo, w + lo, g + lo, vel + lo, lr, momentum,
                                      nesterov, wd_lr, gscale, c));
    fd_fp_exit(fp);
}

void fd_adam_clip_update_f32(int64_t n, float *w, const float *g, float *m, float *v,
                             float lr_t, float beta1, float beta2, float eps, float wd_lr,
                             float gscale, float clip) {
    if (n <= 0) return;
    const fd_optim_table *k = fd_opt_table();
    unsigned fp = fd_fp_enter();
    const float c = fd_opt_clip_bound(clip);
    FD_OPT_CHUNKS(n, k->adam(hi - lo, w + lo, g + lo, m + lo, v + lo, lr_t, beta1, beta2,
                                eps, wd_lr, gscale, c));
    fd_fp_exit(fp);
}

/* act_rows.c — activations over the last axis (act.h: fd_act_rows_*): softmax backward,
 * log_softmax, sparsemax and glu, forward and backward, on an (n, c) row-major view of a
 * tensor of any rank.  Portable C (these are rare in hot paths; the loops are simple and
 * vectorize with the baseline flags); softmax forward is the ISA kernel of fd_softmax_f32.
 * Threads take whole rows (fd_parallel_range); every row is computed in one fixed order
 * (8 lane partial sums combined in lane order), so results do not depend on the thread
 * count. */
#include "../internal.h"
#include "../fpenv.h"
#include "act.h"

#pragma GCC optimize("no-trapping-math")

#include "act_math.h"

#include <math.h>
#include <string.h>

#define FDR_L 8
#define FDR_GRAIN (1 << 14)   /* elements per thread below which a call stays serial */

typedef struct {
    int kind;
    int64_t c;
    float *out;
    const float *x, *g, *y;
} fdr_job;

/* sum of v[0..c) with 8 lane partial sums (fixed order) */
static float fdr_sum(const float *v, int64_t c) {
    float acc[FDR_L] = {0};
    int64_t j = 0;
    for (; j + FDR_L <= c; j += FDR_L)
        for (int l = 0; l < FDR_L; l++) acc[l] += v[j + l];
    float s = 0.0f;
    for (int l = 0; l < FDR_L; l++) s += acc[l];
    for (; j < c; j++) s += v[j];
    return s;
}

static float fdr_dot(const float *a, const float *b, int64_t c) {
    float acc[FDR_L] = {0};
    int64_t j = 0;
    for (; j + FDR_L <= c; j += FDR_L)
        for (int l = 0; l < FDR_L; l++) acc[l] += a[j + l] * b[j + l];
    float s = 0.0f;
    for (int l = 0; l < FDR_L; l++) s += acc[l];
    for (; j < c; j++) s += a[j] * b[j];
    return s;
}

static float fdr_max(const float *v, int64_t c) {
    float m = -INFINITY;
    for (int64_t j = 0; j < c; j++) m = v[j] > m ? v[j] : m;
    return m;
}

static void log_softmax_row(int64_t c, float *o, const float *z) {
    float mx = fdr_max(z, c);
    if (!(mx > -INFINITY && mx < INFINITY)) mx = 0.0f;
    float acc[FDR_L] = {0};
    int64_t j = 0;
    for (; j + FDR_L <= c; j += FDR_L)
        for (int l = 0; l < FDR_L; l++) acc[l] += fda_exp(z[j + l] - mx);
    float s = 0.0f;
    for (int l = 0; l < FDR_L; l++) s += acc[l];
    for (; j < c; j++) s += fda_exp(z[j] - mx);
    /* s >= 1 when the row is finite; 0 (all -inf) or NaN propagate through log */
    const float ls = (s > 0.0f && s < INFINITY) ? fda_log(s) : (s == 0.0f ? -INFINITY : NAN);
    for (j = 0; j < c; j++) o[j] = (z[j] - mx) - ls;   /* not z - (mx + ls): keeps ls */
}

/* tau with sum_j max(z_j - tau, 0) = 1: Michelot's fixed point from tau = max - 1 (every
 * element of the support exceeds it); tau grows at every pass until the support stops
 * shrinking (at most c passes, usually 2-4).  Sums in double. */
static void sparsemax_row(int64_t c, float *o, const float *z) {
    const float mx = fdr_max(z, c);
    if (!(mx > -INFINITY && mx < INFINITY)) {     /* NaN or inf in the row: NaN out */
        for (int64_t j = 0; j < c; j++) o[j] = NAN;
        return;
    }
    double tau = (double)mx - 1.0;
    for (int64_t it = 0; it <= c; it++) {
        double s = 0.0;
        int64_t k = 0;
        for (int64_t j = 0; j < c; j++)
            if ((double)z[j] > tau) {
                s += (double)z[j];
                k++;
            }
        const double nt = (s - 1.0) / (double)k;
        if (!(nt > tau)) break;
        tau = nt;
    }
    for (int64_t j = 0; j < c; j++) {
        const double d = (double)z[j] - tau;
        o[j] = d > 0.0 ? (float)d : 0.0f;
    }
}

static void glu_row(int64_t c, float *o, const float *x) {
    const int64_t h = c / 2;
    for (int64_t j = 0; j < h; j++) o[j] = x[j] * fda_sigmoid(x[h + j]);
}

static void rows_fwd(void *j_, int64_t r0, int64_t r1) {
    const fdr_job *jb = j_;
    const int64_t c = jb->c;
    const int64_t co = jb->kind == FD_ACT_ROWS_GLU ? c / 2 : c;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = jb->x + r * c;
        float *o = jb->out + r * co;
        switch (jb->kind) {
        case FD_ACT_ROWS_LOG_SOFTMAX: log_softmax_row(c, o, x); break;
        case FD_ACT_ROWS_SPARSEMAX: sparsemax_row(c, o, x); break;
        case FD_ACT_ROWS_GLU: glu_row(c, o, x); break;
        default: break;
        }
    }
}

static void rows_bwd(void *j_, int64_t r0, int64_t r1) {
    const fdr_job *jb = j_;
    const int64_t c = jb->c;
    for (int64_t r = r0; r < r1; r++) {
        float *dx = jb->out + r * c;
        switch (jb->kind) {
        case FD_ACT_ROWS_SOFTMAX: {
            const float *g = jb->g + r * c, *y = jb->y + r * c;
            const float d = fdr_dot(g, y, c);
            for (int64_t j = 0; j < c; j++) dx[j] = y[j] * (g[j] - d);
            break;
        }
        case FD_ACT_ROWS_LOG_SOFTMAX: {
            const float *g = jb->g + r * c, *y = jb->y + r * c;
            const float s = fdr_sum(g, c);
            for (int64_t j = 0; j < c; j++) dx[j] = g[j] - fda_exp(y[j]) * s;
            break;
        }
        case FD_ACT_ROWS_SPARSEMAX: {
            const float *g = jb->g + r * c, *y = jb->y + r * c;
            double s = 0.0;
            int64_t k = 0;
            for (int64_t j = 0; j < c; j++)
                if (y[j] > 0.0f) {
                    s += (double)g[j];
                    k++;
                }
            const float v = k > 0 ? (float)(s / (double)k) : 0.0f;
            for (int64_t j = 0; j < c; j++) dx[j] = y[j] > 0.0f ? g[j] - v : 0.0f;
            break;
        }
        case FD_ACT_ROWS_GLU: {
            const int64_t h = c / 2;
            const float *g = jb->g + r * h, *x = jb->x + r * c;
            for (int64_t j = 0; j < h; j++) {
                const float b = x[h + j];
                const float e = fda_exp(-fabsf(b));
                const float s1 = 1.0f / (1.0f + e);
                const float s = b >= 0.0f ? s1 : e * s1;
                const float gj = g[j];
                dx[j] = gj * s;
                dx[h + j] = (gj * x[j]) * (e * (s1 * s1));
            }
            break;
        }
        default: break;
        }
    }
}

static int64_t rows_grain(int64_t c) {
    const int64_t cc = c < 1 ? 1 : c;
    const int64_t g = FDR_GRAIN / cc;
    return g < 1 ? 1 : g;
}

int fd_act_rows_forward_f32(int kind, int64_t n, int64_t c, float *out, const float *x) {
    if (kind < 0 || kind >= FD_ACT_ROWS_COUNT || n < 0 || c < 0) return -1;
    if (kind == FD_ACT_ROWS_GLU && (c % 2) != 0) return -1;
    if (n == 0 || c == 0) return 0;
    if (!out || !x) return -1;
    if (kind == FD_ACT_ROWS_SOFTMAX) {
        fd_softmax_f32(n, c, out, x);
        return 0;
    }
    fd_init();
    const unsigned fp = fd_fp_enter();
    fdr_job j = {kind, c, out, x, NULL, NULL};
    fd_parallel_range(n, rows_grain(c), 1, rows_fwd, &j);
    fd_fp_exit(fp);
    return 0;
}

int fd_act_rows_backward_f32(int kind, int64_t n, int64_t c, float *dx, const float *g,
                             const float *x, const float *y) {
    if (kind < 0 || kind >= FD_ACT_ROWS_COUNT || n < 0 || c < 0) return -1;
    if (kind == FD_ACT_ROWS_GLU && (c % 2) != 0) return -1;
    if (n == 0 || c == 0) return 0;
    if (!dx || !g) return -1;
    if (kind == FD_ACT_ROWS_GLU ? !x : !y) return -1;
    fd_init();
    const unsigned fp = fd_fp_enter();
    fdr_job j = {kind, c, dx, x, g, y};
    fd_parallel_range(n, rows_grain(c), 1, rows_bwd, &j);
    fd_fp_exit(fp);
    return 0;
}

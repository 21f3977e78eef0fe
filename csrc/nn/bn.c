/* bn.c — batch normalisation over the last axis (m rows × c features).
 * Per-feature sums run over fixed blocks of FD_BN_ROWS rows (float within a block,
 * rows in order), the block sums are added in block order in double: the blocks are
 * fixed by m alone, so results are bitwise identical for any thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fpenv.h"
#include "internal.h"
#include "nn/conv.h"

#define FD_BN_ROWS 256

static int64_t mini(int64_t a, int64_t b) { return a < b ? a : b; }

/* part[b*c + j] = Σ_{rows of block b} f(row, j) for two fields at once (a, b may be
 * NULL-free), computed in parallel over blocks.  kind 0: Σx; 1: Σ(x-mean)²;
 * 2: Σdy and Σdy·(x-mean)·invstd. */
static void block_sums(int kind, int64_t m, int64_t c, const float *x, const float *dy,
                       const float *mean, const float *invstd, float *p1, float *p2)
{
    const int64_t nb = (m + FD_BN_ROWS - 1) / FD_BN_ROWS;
    const int nt = fd_threads_for(m * c, 1 << 15);
    (void)nt; /* unused without OpenMP */
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t b = 0; b < nb; b++) {
        unsigned fpt = fd_fp_enter();
        const int64_t r0 = b * FD_BN_ROWS, r1 = mini(m, r0 + FD_BN_ROWS);
        float *s1 = p1 + b * c;
        float *s2 = p2 ? p2 + b * c : NULL;
        for (int64_t j = 0; j < c; j++) s1[j] = 0.0f;
        if (s2)
            for (int64_t j = 0; j < c; j++) s2[j] = 0.0f;
        for (int64_t r = r0; r < r1; r++) {
            const float *xr = x + r * c;
            if (kind == 0) {
                for (int64_t j = 0; j < c; j++) s1[j] += xr[j];
            } else if (kind == 1) {
                for (int64_t j = 0; j < c; j++) {
                    const float t = xr[j] - mean[j];
                    s1[j] += t * t;
                }
            } else {
                const float *g = dy + r * c;
                for (int64_t j = 0; j < c; j++) {
                    s1[j] += g[j];
                    s2[j] += g[j] * ((xr[j] - mean[j]) * invstd[j]);
                }
            }
        }
        fd_fp_exit(fpt);
    }
}

/* out[j] = Σ_b part[b*c + j] in block order (double) */
static void reduce_blocks(int64_t nb, int64_t c, const float *part, double *out)
{
    for (int64_t j = 0; j < c; j++) out[j] = 0.0;
    for (int64_t b = 0; b < nb; b++)
        for (int64_t j = 0; j < c; j++) out[j] += (double)part[b * c + j];
}

/* y = x*a + s per feature, parallel over rows */
static void affine_rows(int64_t m, int64_t c, float *y, const float *x, const float *a,
                        const float *s)
{
    const int nt = fd_threads_for(m * c, 1 << 15);
    (void)nt; /* unused without OpenMP */
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t b = 0; b < (m + 63) / 64; b++) {
        unsigned fpt = fd_fp_enter();
        for (int64_t r = b * 64; r < mini(m, b * 64 + 64); r++) {
            const float *xr = x + r * c;
            float *yr = y + r * c;
            for (int64_t j = 0; j < c; j++) yr[j] = xr[j] * a[j] + s[j];
        }
        fd_fp_exit(fpt);
    }
}

int fd_batchnorm_train_forward_f32(int64_t m, int64_t c, float *y, float *mean,
                                   float *invstd, const float *x, const float *gamma,
                                   const float *beta, float eps, float *moving_mean,
                                   float *moving_var, float momentum)
{
    if (m <= 0 || c <= 0) return 0;
    const int64_t nb = (m + FD_BN_ROWS - 1) / FD_BN_ROWS;
    float *part = malloc((size_t)(nb * c) * sizeof(float));
    double *acc = malloc((size_t)c * sizeof(double));
    float *coef = malloc((size_t)(2 * c) * sizeof(float));
    if (!part || !acc || !coef) {
        free(part);
        free(acc);
        free(coef);
        return -1;
    }
    unsigned fp = fd_fp_enter();
    block_sums(0, m, c, x, NULL, NULL, NULL, part, NULL);
    reduce_blocks(nb, c, part, acc);
    for (int64_t j = 0; j < c; j++) mean[j] = (float)(acc[j] / (double)m);
    block_sums(1, m, c, x, NULL, mean, NULL, part, NULL);
    reduce_blocks(nb, c, part, acc);
    for (int64_t j = 0; j < c; j++) {
        const float var = (float)(acc[j] / (double)m);
        const float inv = (float)(1.0 / sqrt((double)var + (double)eps));
        invstd[j] = inv;
        const float a = gamma ? gamma[j] * inv : inv;
        coef[j] = a;
        coef[c + j] = (beta ? beta[j] : 0.0f) - mean[j] * a;
        if (moving_mean) moving_mean[j] = moving_mean[j] * momentum + mean[j] * (1.0f - momentum);
        if (moving_var) moving_var[j] = moving_var[j] * momentum + var * (1.0f - momentum);
    }
    affine_rows(m, c, y, x, coef, coef + c);
    fd_fp_exit(fp);
    free(part);
    free(acc);
    free(coef);
    return 0;
}

void fd_batchnorm_infer_forward_f32(int64_t m, int64_t c, float *y, float *invstd,
                                    const float *x, const float *gamma, const float *beta,
                                    const float *mean, const float *var, float eps)
{
    if (c <= 0) return;
    unsigned fp = fd_fp_enter();
    float coefs[512];
    for (int64_t j0 = 0; j0 < c; j0 += 256) {
        const int64_t cw = mini(256, c - j0);
        for (int64_t j = 0; j < cw; j++) {
            const int64_t q = j0 + j;
            const float inv = (float)(1.0 / sqrt((double)var[q] + (double)eps));
            if (invstd) invstd[q] = inv;
            const float a = gamma ? gamma[q] * inv : inv;
            coefs[j] = a;
            coefs[256 + j] = (beta ? beta[q] : 0.0f) - mean[q] * a;
        }
        if (m <= 0) continue;
        if (cw == c) {
            affine_rows(m, c, y, x, coefs, coefs + 256);
        } else { /* wide: one 256-feature slab at a time */
            for (int64_t r = 0; r < m; r++) {
                const float *xr = x + r * c + j0;
                float *yr = y + r * c + j0;
                for (int64_t j = 0; j < cw; j++) yr[j] = xr[j] * coefs[j] + coefs[256 + j];
            }
        }
    }
    fd_fp_exit(fp);
}

int fd_batchnorm_backward_f32(int64_t m, int64_t c, float *dx, float *dgamma, float *dbeta,
                              const float *dy, const float *x, const float *mean,
                              const float *invstd, const float *gamma, int batch_stats)
{
    if (m <= 0 || c <= 0) {
        if (c > 0 && dgamma) memset(dgamma, 0, (size_t)c * sizeof(float));
        if (c > 0 && dbeta) memset(dbeta, 0, (size_t)c * sizeof(float));
        return 0;
    }
    const int64_t nb = (m + FD_BN_ROWS - 1) / FD_BN_ROWS;
    const int need_sums = batch_stats || dgamma || dbeta;
    float *part = need_sums ? malloc((size_t)(2 * nb * c) * sizeof(float)) : NULL;
    double *acc = malloc((size_t)(2 * c) * sizeof(double));
    float *coef = malloc((size_t)(3 * c) * sizeof(float));
    if ((need_sums && !part) || !acc || !coef) {
        free(part);
        free(acc);
        free(coef);
        return -1;
    }
    unsigned fp = fd_fp_enter();
    float *sdy = coef + c, *sdyx = coef + 2 * c;
    if (need_sums) {
        block_sums(2, m, c, x, dy, mean, invstd, part, part + nb * c);
        reduce_blocks(nb, c, part, acc);
        reduce_blocks(nb, c, part + nb * c, acc + c);
        for (int64_t j = 0; j < c; j++) {
            sdy[j] = (float)acc[j];
            sdyx[j] = (float)acc[c + j];
            if (dbeta) dbeta[j] = sdy[j];
            if (dgamma) dgamma[j] = sdyx[j];
        }
    }
    if (dx) {
        for (int64_t j = 0; j < c; j++) coef[j] = (gamma ? gamma[j] : 1.0f) * invstd[j];
        const float invm = (float)(1.0 / (double)m);
        const int nt = fd_threads_for(m * c, 1 << 15);
        (void)nt; /* unused without OpenMP */
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t b = 0; b < (m + 63) / 64; b++) {
            unsigned fpt = fd_fp_enter();
            for (int64_t r = b * 64; r < mini(m, b * 64 + 64); r++) {
                const float *g = dy + r * c, *xr = x + r * c;
                float *o = dx + r * c;
                if (batch_stats) {
                    for (int64_t j = 0; j < c; j++) {
                        const float xh = (xr[j] - mean[j]) * invstd[j];
                        o[j] = coef[j] * (g[j] - (sdy[j] + xh * sdyx[j]) * invm);
                    }
                } else {
                    for (int64_t j = 0; j < c; j++) o[j] = coef[j] * g[j];
                }
            }
            fd_fp_exit(fpt);
        }
    }
    fd_fp_exit(fp);
    free(part);
    free(acc);
    free(coef);
    return 0;
}

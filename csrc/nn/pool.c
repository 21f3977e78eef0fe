/* pool.c — max / average pooling (2-D windows and global), NHWC, parallel over images.
 * Channels are the inner, contiguous axis: every loop runs over c.  Each image is
 * handled by one thread, in a fixed order, so results do not depend on the thread count. */
#include <string.h>

#include "fpenv.h"
#include "internal.h"
#include "nn/conv.h"

static int64_t maxi(int64_t a, int64_t b) { return a > b ? a : b; }

/* best[j], arg[j] = s[j], pix where s[j] > best[j] (ties keep the first): branch-free
 * bit selects, so the loop vectorises and random data costs no mispredictions. */
static inline void max_arg_update(int64_t n, float *FD_RESTRICT best, int32_t *FD_RESTRICT arg,
                                  const float *FD_RESTRICT s, int32_t pix)
{
    for (int64_t j = 0; j < n; j++) {
        const float v = s[j], b = best[j];
        const uint32_t m = (uint32_t)0 - (uint32_t)(v > b);
        uint32_t ub, uv;
        memcpy(&ub, &b, 4);
        memcpy(&uv, &v, 4);
        const uint32_t r = ub ^ ((ub ^ uv) & m);
        float f;
        memcpy(&f, &r, 4);
        best[j] = f;
        arg[j] = (int32_t)((uint32_t)arg[j] ^ (((uint32_t)arg[j] ^ (uint32_t)pix) & m));
    }
}
static int64_t mini(int64_t a, int64_t b) { return a < b ? a : b; }

void fd_maxpool2d_forward_f32(const fd_pool2d_desc *d, float *y, int32_t *arg,
                              const float *x)
{
    const int64_t C = d->c, img_in = d->h * d->w * C, img_out = d->oh * d->ow * C;
    if (d->n <= 0 || img_out <= 0) return;
    unsigned fp = fd_fp_enter();
    const int nt = fd_threads_for(d->n * img_out * d->ph * d->pw, 1 << 15);
    (void)nt; /* unused without OpenMP */
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t i = 0; i < d->n; i++) {
        unsigned fpt = fd_fp_enter();
        const float *xi = x + i * img_in;
        for (int64_t oy = 0; oy < d->oh; oy++) {
            const int64_t y0 = maxi(oy * d->sh - d->pt, 0),
                          y1 = mini(oy * d->sh - d->pt + d->ph, d->h);
            for (int64_t ox = 0; ox < d->ow; ox++) {
                const int64_t x0 = maxi(ox * d->sw - d->pl, 0),
                              x1 = mini(ox * d->sw - d->pl + d->pw, d->w);
                float *yo = y + i * img_out + (oy * d->ow + ox) * C;
                int32_t *ao = arg ? arg + i * img_out + (oy * d->ow + ox) * C : NULL;
                const int32_t first = (int32_t)(y0 * d->w + x0);
                const float *s0 = xi + first * C;
                for (int64_t j = 0; j < C; j++) yo[j] = s0[j];
                if (ao)
                    for (int64_t j = 0; j < C; j++) ao[j] = first;
                for (int64_t iy = y0; iy < y1; iy++)
                    for (int64_t ix = (iy == y0 ? x0 + 1 : x0); ix < x1; ix++) {
                        const int32_t pix = (int32_t)(iy * d->w + ix);
                        const float *s = xi + pix * C;
                        if (ao) {
                            max_arg_update(C, yo, ao, s, pix);
                        } else {
                            for (int64_t j = 0; j < C; j++) yo[j] = s[j] > yo[j] ? s[j] : yo[j];
                        }
                    }
            }
        }
        fd_fp_exit(fpt);
    }
    fd_fp_exit(fp);
}

void fd_maxpool2d_backward_f32(const fd_pool2d_desc *d, float *dx, const float *dy,
                               const int32_t *arg)
{
    const int64_t C = d->c, img_in = d->h * d->w * C, img_out = d->oh * d->ow * C;
    if (d->n <= 0) return;
    unsigned fp = fd_fp_enter();
    const int nt = fd_threads_for(d->n * (img_in + img_out), 1 << 15);
    (void)nt; /* unused without OpenMP */
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t i = 0; i < d->n; i++) {
        unsigned fpt = fd_fp_enter();
        float *di = dx + i * img_in;
        memset(di, 0, (size_t)img_in * sizeof(float));
        const float *g = dy + i * img_out;
        const int32_t *a = arg + i * img_out;
        const int64_t P = d->oh * d->ow;
        const uint32_t npix = (uint32_t)(d->h * d->w);
        for (int64_t q = 0; q < P; q++)
            for (int64_t j = 0; j < C; j++) {
                const uint32_t pix = (uint32_t)a[q * C + j]; /* out-of-range: skipped */
                if (pix < npix) di[(int64_t)pix * C + j] += g[q * C + j];
            }
        fd_fp_exit(fpt);
    }
    fd_fp_exit(fp);
}

void fd_avgpool2d_forward_f32(const fd_pool2d_desc *d, float *y, const float *x)
{
    const int64_t C = d->c, img_in = d->h * d->w * C, img_out = d->oh * d->ow * C;
    if (d->n <= 0 || img_out <= 0) return;
    unsigned fp = fd_fp_enter();
    const int nt = fd_threads_for(d->n * img_out * d->ph * d->pw, 1 << 15);
    (void)nt; /* unused without OpenMP */
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t i = 0; i < d->n; i++) {
        unsigned fpt = fd_fp_enter();
        const float *xi = x + i * img_in;
        for (int64_t oy = 0; oy < d->oh; oy++) {
            const int64_t y0 = maxi(oy * d->sh - d->pt, 0),
                          y1 = mini(oy * d->sh - d->pt + d->ph, d->h);
            for (int64_t ox = 0; ox < d->ow; ox++) {
                const int64_t x0 = maxi(ox * d->sw - d->pl, 0),
                              x1 = mini(ox * d->sw - d->pl + d->pw, d->w);
                float *yo = y + i * img_out + (oy * d->ow + ox) * C;
                for (int64_t j = 0; j < C; j++) yo[j] = 0.0f;
                for (int64_t iy = y0; iy < y1; iy++)
                    for (int64_t ix = x0; ix < x1; ix++) {
                        const float *s = xi + (iy * d->w + ix) * C;
                        for (int64_t j = 0; j < C; j++) yo[j] += s[j];
                    }
                const float inv = 1.0f / (float)((y1 - y0) * (x1 - x0));
                for (int64_t j = 0; j < C; j++) yo[j] *= inv;
            }
        }
        fd_fp_exit(fpt);
    }
    fd_fp_exit(fp);
}

void fd_avgpool2d_backward_f32(const fd_pool2d_desc *d, float *dx, const float *dy)
{
    const int64_t C = d->c, img_in = d->h * d->w * C, img_out = d->oh * d->ow * C;
    if (d->n <= 0) return;
    unsigned fp = fd_fp_enter();
    const int nt = fd_threads_for(d->n * (img_in + img_out * d->ph * d->pw), 1 << 15);
    (void)nt; /* unused without OpenMP */
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t i = 0; i < d->n; i++) {
        unsigned fpt = fd_fp_enter();
        float *di = dx + i * img_in;
        memset(di, 0, (size_t)img_in * sizeof(float));
        for (int64_t oy = 0; oy < d->oh; oy++) {
            const int64_t y0 = maxi(oy * d->sh - d->pt, 0),
                          y1 = mini(oy * d->sh - d->pt + d->ph, d->h);
            for (int64_t ox = 0; ox < d->ow; ox++) {
                const int64_t x0 = maxi(ox * d->sw - d->pl, 0),
                              x1 = mini(ox * d->sw - d->pl + d->pw, d->w);
                const float *g = dy + i * img_out + (oy * d->ow + ox) * C;
                const float inv = 1.0f / (float)((y1 - y0) * (x1 - x0));
                for (int64_t iy = y0; iy < y1; iy++)
                    for (int64_t ix = x0; ix < x1; ix++) {
                        float *s = di + (iy * d->w + ix) * C;
                        for (int64_t j = 0; j < C; j++) s[j] += g[j] * inv;
                    }
            }
        }
        fd_fp_exit(fpt);
    }
    fd_fp_exit(fp);
}

void fd_global_pool_forward_f32(int64_t n, int64_t p, int64_t c, int max, float *y,
                                int32_t *arg, const float *x)
{
    if (n <= 0 || p <= 0 || c <= 0) return;
    unsigned fp = fd_fp_enter();
    const int nt = fd_threads_for(n * p * c, 1 << 15);
    (void)nt; /* unused without OpenMP */
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t i = 0; i < n; i++) {
        unsigned fpt = fd_fp_enter();
        const float *xi = x + i * p * c;
        float *yo = y + i * c;
        int32_t *ao = arg && max ? arg + i * c : NULL;
        for (int64_t j = 0; j < c; j++) yo[j] = max ? xi[j] : 0.0f;
        if (ao)
            for (int64_t j = 0; j < c; j++) ao[j] = 0;
        for (int64_t q = max ? 1 : 0; q < p; q++) {
            const float *s = xi + q * c;
            if (!max) {
                for (int64_t j = 0; j < c; j++) yo[j] += s[j];
            } else if (ao) {
                max_arg_update(c, yo, ao, s, (int32_t)q);
            } else {
                for (int64_t j = 0; j < c; j++) yo[j] = s[j] > yo[j] ? s[j] : yo[j];
            }
        }
        if (!max) {
            const float inv = 1.0f / (float)p;
            for (int64_t j = 0; j < c; j++) yo[j] *= inv;
        }
        fd_fp_exit(fpt);
    }
    fd_fp_exit(fp);
}

void fd_global_pool_backward_f32(int64_t n, int64_t p, int64_t c, int max, float *dx,
                                 const float *dy, const int32_t *arg)
{
    if (n <= 0 || p <= 0 || c <= 0) return;
    unsigned fp = fd_fp_enter();
    const int nt = fd_threads_for(n * p * c, 1 << 15);
    (void)nt; /* unused without OpenMP */
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t i = 0; i < n; i++) {
        unsigned fpt = fd_fp_enter();
        float *di = dx + i * p * c;
        const float *g = dy + i * c;
        if (max) {
            memset(di, 0, (size_t)(p * c) * sizeof(float));
            const int32_t *a = arg + i * c;
            for (int64_t j = 0; j < c; j++)
                if ((uint32_t)a[j] < (uint32_t)p) di[(int64_t)a[j] * c + j] = g[j];
        } else {
            const float inv = 1.0f / (float)p;
            for (int64_t q = 0; q < p; q++)
                for (int64_t j = 0; j < c; j++) di[q * c + j] = g[j] * inv;
        }
        fd_fp_exit(fpt);
    }
    fd_fp_exit(fp);
}

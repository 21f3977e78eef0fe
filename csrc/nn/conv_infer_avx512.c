/* conv_infer_avx512.c — the inference-only direct convolution row kernel and the max
 * pooling of its output (conv_infer.h), AVX-512. */
#ifdef FD_HAVE_AVX512
#include <immintrin.h>
#include <stdint.h>

#include "nn/conv_infer.h"

static inline __mmask16 lanes(int64_t n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u); }

/* R pixels × nv zmm columns (output channels j .. j + 16nv of the 32-wide block wb);
 * S: the pixel stride (compile-time when > 0, else g->S). */
static inline __attribute__((always_inline)) void
tile(const int R, const int nv, const int64_t S_ct, const fd_ci_geom *g, const float *x0,
     const float *wb, int64_t j, float *y)
{
    const int64_t S = S_ct > 0 ? S_ct : g->S;
    const int64_t K = g->K, oc = g->oc;
    const __mmask16 m0 = lanes(oc - j), m1 = nv > 1 ? lanes(oc - j - 16) : 0;
    const int direct = g->mode == FD_CI_DIRECT;
    __m512 acc[FD_CI_PB][2];
    const __m512 bz0 = direct ? _mm512_loadu_ps(g->bias + j) : _mm512_setzero_ps();
    const __m512 bz1 = direct && nv > 1 ? _mm512_loadu_ps(g->bias + j + 16) : bz0;
#pragma GCC unroll 14
    for (int i = 0; i < R; i++) {
        acc[i][0] = bz0;
        acc[i][1] = bz1;
    }
    const int64_t kcb = direct ? K : g->kcb;
    const int64_t *off = g->off;
    int blocks = 0;
    for (int64_t pc = 0; pc < K; pc += kcb) {
        const int64_t pe = pc + kcb < K ? pc + kcb : K;
        const float *wk = wb + pc * FD_CI_NB;
        for (int64_t k = pc; k < pe; k++, wk += FD_CI_NB) {
            const float *q = x0 + off[k];
            const __m512 w0 = _mm512_load_ps(wk);
            const __m512 w1 = nv > 1 ? _mm512_load_ps(wk + 16) : w0;
#pragma GCC unroll 14
            for (int i = 0; i < R; i++) {
                const __m512 a = _mm512_set1_ps(q[i * S]);
                acc[i][0] = _mm512_fmadd_ps(a, w0, acc[i][0]);
                if (nv > 1) acc[i][1] = _mm512_fmadd_ps(a, w1, acc[i][1]);
            }
        }
        if (pe < K) { /* GEMM order: C = acc (first block) or acc + C; acc from 0 again */
#pragma GCC unroll 14
            for (int i = 0; i < R; i++) {
                float *yi = y + i * oc + j;
                __m512 z0 = acc[i][0], z1 = acc[i][1];
                if (blocks) {
                    z0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, yi), z0);
                    if (nv > 1) z1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, yi + 16), z1);
                }
                _mm512_mask_storeu_ps(yi, m0, z0);
                if (nv > 1) _mm512_mask_storeu_ps(yi + 16, m1, z1);
                acc[i][0] = acc[i][1] = _mm512_setzero_ps();
            }
        }
        blocks++;
    }
    const __m512 b0 = !direct && g->bias ? _mm512_maskz_loadu_ps(m0, g->bias + j) : _mm512_setzero_ps();
    const __m512 b1 = !direct && g->bias && nv > 1 ? _mm512_maskz_loadu_ps(m1, g->bias + j + 16) : b0;
#pragma GCC unroll 14
    for (int i = 0; i < R; i++) {
        float *yi = y + i * oc + j;
#pragma GCC unroll 2
        for (int v = 0; v < nv; v++) {
            const __mmask16 mk = v ? m1 : m0;
            __m512 z = acc[i][v];
            if (direct) {
                if (g->relu) z = _mm512_max_ps(z, _mm512_setzero_ps());
            } else {
                if (blocks > 1) z = _mm512_add_ps(_mm512_maskz_loadu_ps(mk, yi + 16 * v), z);
                if (g->bias) z = _mm512_add_ps(z, v ? b1 : b0);
                if (g->relu) {
                    const __mmask16 keep = _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_GT_OQ) |
                                           _mm512_cmp_ps_mask(z, z, _CMP_UNORD_Q);
                    z = _mm512_maskz_mov_ps(keep, z);
                }
            }
            _mm512_mask_storeu_ps(yi + 16 * v, mk, z);
        }
    }
}

#define FD_CI_CASE(r, s)                                                                   \
    case r:                                                                                \
        if (nv > 1) tile(r, 2, s, g, x0, wb, j, y);                                        \
        else tile(r, 1, s, g, x0, wb, j, y);                                               \
        break;

#define FD_CI_ROW(s)                                                                       \
    static void row_##s(const fd_ci_geom *g, const float *x0, int64_t ow, float *y,        \
                        int64_t jb0, int64_t jb1)                                          \
    {                                                                                      \
        const int64_t oc = g->oc, S = (s) > 0 ? (s) : g->S;                                \
        const int64_t nb = (ow + FD_CI_PB - 1) / FD_CI_PB;                                 \
        for (int64_t b = 0; b < nb; b++) {                                                 \
            const int64_t p0 = ow * b / nb, p1 = ow * (b + 1) / nb;                        \
            const float *xb = x0 + p0 * S;                                                 \
            float *yb = y + p0 * oc;                                                       \
            for (int64_t j = jb0 * FD_CI_NB; j < oc && j < jb1 * FD_CI_NB; j += FD_CI_NB) { \
                const float *wb = g->wpk + (j / FD_CI_NB) * g->K * FD_CI_NB;               \
                const int nv = oc - j > 16 ? 2 : 1;                                        \
                const float *x0_ = xb;                                                     \
                float *y_ = yb;                                                            \
                {                                                                          \
                    const float *x0 = x0_;                                                 \
                    float *y = y_;                                                         \
                    switch ((int)(p1 - p0)) {                                              \
                    FD_CI_CASE(1, s) FD_CI_CASE(2, s) FD_CI_CASE(3, s) FD_CI_CASE(4, s)    \
                    FD_CI_CASE(5, s) FD_CI_CASE(6, s) FD_CI_CASE(7, s) FD_CI_CASE(8, s)    \
                    FD_CI_CASE(9, s) FD_CI_CASE(10, s) FD_CI_CASE(11, s)                   \
                    FD_CI_CASE(12, s) FD_CI_CASE(13, s) FD_CI_CASE(14, s)                  \
                    default: break;                                                        \
                    }                                                                      \
                }                                                                          \
            }                                                                              \
        }                                                                                  \
    }

FD_CI_ROW(0)
FD_CI_ROW(1)
FD_CI_ROW(2)
FD_CI_ROW(3)
FD_CI_ROW(4)
FD_CI_ROW(8)
FD_CI_ROW(16)
FD_CI_ROW(32)
FD_CI_ROW(64)

void fd_conv_infer_row_avx512(const fd_ci_geom *g, const float *x0, int64_t ow, float *y,
                              int64_t jb0, int64_t jb1)
{
    switch (g->S) {
    case 1: row_1(g, x0, ow, y, jb0, jb1); break;
    case 2: row_2(g, x0, ow, y, jb0, jb1); break;
    case 3: row_3(g, x0, ow, y, jb0, jb1); break;
    case 4: row_4(g, x0, ow, y, jb0, jb1); break;
    case 8: row_8(g, x0, ow, y, jb0, jb1); break;
    case 16: row_16(g, x0, ow, y, jb0, jb1); break;
    case 32: row_32(g, x0, ow, y, jb0, jb1); break;
    case 64: row_64(g, x0, ow, y, jb0, jb1); break;
    default: row_0(g, x0, ow, y, jb0, jb1); break;
    }
}

void fd_conv_infer_maxpool_avx512(const fd_pool2d_desc *p, const float *z, float *y,
                                  int64_t oy0, int64_t oy1, int64_t j0, int64_t j1)
{
    const int64_t C = p->c;
    for (int64_t oy = oy0; oy < oy1; oy++) {
        int64_t y0 = oy * p->sh - p->pt, y1 = oy * p->sh - p->pt + p->ph;
        if (y0 < 0) y0 = 0;
        if (y1 > p->h) y1 = p->h;
        for (int64_t ox = 0; ox < p->ow; ox++) {
            int64_t x0 = ox * p->sw - p->pl, x1 = ox * p->sw - p->pl + p->pw;
            if (x0 < 0) x0 = 0;
            if (x1 > p->w) x1 = p->w;
            float *yo = y + (oy * p->ow + ox) * C;
            for (int64_t j = j0; j < j1; j += 16) {
                const __mmask16 mk = lanes(j1 - j);
                __m512 b = _mm512_maskz_loadu_ps(mk, z + (y0 * p->w + x0) * C + j);
                for (int64_t iy = y0; iy < y1; iy++)
                    for (int64_t ix = (iy == y0 ? x0 + 1 : x0); ix < x1; ix++) {
                        const __m512 s = _mm512_maskz_loadu_ps(mk, z + (iy * p->w + ix) * C + j);
                        b = _mm512_mask_mov_ps(b, _mm512_cmp_ps_mask(s, b, _CMP_GT_OQ), s);
                    }
                _mm512_mask_storeu_ps(yo + j, mk, b);
            }
        }
    }
}
#endif

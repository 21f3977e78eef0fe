/* conv_direct_impl.h — the small-K direct convolution kernels (conv_direct.h), written
 * once on a vector abstraction and compiled per ISA.  The including file defines:
 *   FD_SFX(name)  name##_<isa>;  VL  lanes;  vf  vector type;
 *   VZERO() VSET1(s) VLOADU(p) VSTOREU(p, v) VFMA(a, b, c)=a*b+c  VMAX0(v)
 *   VLOADN(p, n) / VSTOREN(p, v, n)  first n lanes (0 < n < VL)
 *   VPOS(h, v)  v where h > 0, else 0  VADD(a, b)  VMUL(a, b) */
#include <string.h>

#include "nn/conv_direct.h"

#define PB 8  /* output pixels per block of the forward kernel */
#define KB 12 /* taps per register block of the dW kernel      */

typedef struct {
    int64_t img, oy, ox;
} fd_pix;

static inline void pix_next(const fd_conv2d_desc *d, fd_pix *q)
{
    if (++q->ox == d->ow) {
        q->ox = 0;
        if (++q->oy == d->oh) {
            q->oy = 0;
            q->img++;
        }
    }
}

static inline fd_pix pix_of(const fd_conv2d_desc *d, int64_t r)
{
    const int64_t P = d->oh * d->ow, rem = r % P;
    fd_pix q = {r / P, rem / d->ow, rem % d->ow};
    return q;
}

/* tap offsets relative to a window's top-left cell: off[k], k = (ki, kj, ci) */
static inline void tap_offsets(const fd_conv2d_desc *d, int64_t *off)
{
    int64_t k = 0;
    for (int64_t ki = 0; ki < d->kh; ki++)
        for (int64_t kj = 0; kj < d->kw; kj++)
            for (int64_t ci = 0; ci < d->c; ci++) off[k++] = (ki * d->dh * d->w + kj * d->dw) * d->c + ci;
}

/* The window of pixel q: its top-left cell in x (NULL if the window leaves the image;
 * then its patch is gathered into pk). */
static inline const float *window(const fd_conv2d_desc *d, const float *x, fd_pix q,
                                  float *pk)
{
    const int64_t iy0 = q.oy * d->sh - d->pt, ix0 = q.ox * d->sw - d->pl, C = d->c;
    const float *xi = x + q.img * d->h * d->w * C;
    if (iy0 >= 0 && iy0 + (d->kh - 1) * d->dh < d->h && ix0 >= 0 &&
        ix0 + (d->kw - 1) * d->dw < d->w)
        return xi + (iy0 * d->w + ix0) * C;
    float *dst = pk;
    for (int64_t ki = 0; ki < d->kh; ki++) {
        const int64_t iy = iy0 + ki * d->dh;
        for (int64_t kj = 0; kj < d->kw; kj++) {
            const int64_t ix = ix0 + kj * d->dw;
            if (iy < 0 || iy >= d->h || ix < 0 || ix >= d->w) {
                for (int64_t q2 = 0; q2 < C; q2++) dst[q2] = 0.0f;
            } else {
                const float *s = xi + (iy * d->w + ix) * C;
                for (int64_t q2 = 0; q2 < C; q2++) dst[q2] = s[q2];
            }
            dst += C;
        }
    }
    return NULL;
}

/* gathered: a = pk[p][k]; in place: a = src[p][off[k]] */
static inline __attribute__((always_inline)) void
fwd_block(const int two, const int inplace, const int64_t K, const float *const *src,
          const int64_t *off, float pk[PB][FD_CONV_DIRECT_K], const float *wk, int64_t ocp,
          vf *acc0, vf *acc1)
{
    for (int64_t k = 0; k < K; k++, wk += ocp) {
        const vf w0 = VLOADU(wk);
        const vf w1 = two ? VLOADU(wk + VL) : w0;
        const int64_t o = inplace ? off[k] : 0;
#pragma GCC unroll 8
        for (int p = 0; p < PB; p++) {
            const vf a = VSET1(inplace ? src[p][o] : pk[p][k]);
            acc0[p] = VFMA(a, w0, acc0[p]);
            if (two) acc1[p] = VFMA(a, w1, acc1[p]);
        }
    }
}

void FD_SFX(fd_conv_direct_fwd)(const fd_conv2d_desc *d, const float *x, const float *wp,
                                const float *bp, int64_t ocp, int relu, float *y, int64_t r0,
                                int64_t rows)
{
    const int64_t K = d->kh * d->kw * d->c, oc = d->oc;
    int64_t off[FD_CONV_DIRECT_K];
    tap_offsets(d, off);
    float pk[PB][FD_CONV_DIRECT_K];
    const float *src[PB];
    fd_pix q = pix_of(d, r0);
    for (int64_t r = r0; r < r0 + rows; r += PB) {
        const int np = (int)(r0 + rows - r < PB ? r0 + rows - r : PB);
        int inplace = 1;
        fd_pix q0 = q;
        for (int p = 0; p < np; p++) {
            src[p] = window(d, x, q, pk[p]);
            if (!src[p]) inplace = 0;
            pix_next(d, &q);
        }
        for (int p = np; p < PB; p++) src[p] = src[0]; /* computed, not stored */
        if (!inplace) { /* gather every pixel of the block */
            fd_pix q1 = q0;
            for (int p = 0; p < PB; p++) {
                if (p < np) {
                    const float *s = window(d, x, q1, pk[p]);
                    if (s)
                        for (int64_t k = 0; k < K; k++) pk[p][k] = s[off[k]];
                    pix_next(d, &q1);
                } else {
                    for (int64_t k = 0; k < K; k++) pk[p][k] = 0.0f;
                }
            }
        }
        for (int64_t ob = 0; ob < oc; ob += 2 * VL) {
            const int two = ob + VL < oc;
            vf acc0[PB], acc1[PB];
            const vf b0 = VLOADU(bp + ob), b1 = two ? VLOADU(bp + ob + VL) : b0;
            for (int p = 0; p < PB; p++) {
                acc0[p] = b0;
                acc1[p] = b1;
            }
            if (two && inplace)
                fwd_block(1, 1, K, src, off, pk, wp + ob, ocp, acc0, acc1);
            else if (two)
                fwd_block(1, 0, K, src, off, pk, wp + ob, ocp, acc0, acc1);
            else if (inplace)
                fwd_block(0, 1, K, src, off, pk, wp + ob, ocp, acc0, acc1);
            else
                fwd_block(0, 0, K, src, off, pk, wp + ob, ocp, acc0, acc1);
            const int64_t n0 = oc - ob < VL ? oc - ob : VL;
            const int64_t n1 = two ? (oc - ob - VL < VL ? oc - ob - VL : VL) : 0;
            for (int p = 0; p < np; p++) {
                float *yr = y + (r + p) * oc + ob;
                vf v0 = acc0[p], v1 = acc1[p];
                if (relu) {
                    v0 = VMAX0(v0);
                    v1 = VMAX0(v1);
                }
                if (n0 == VL) VSTOREU(yr, v0); else VSTOREN(yr, v0, n0);
                if (n1 == VL) VSTOREU(yr + VL, v1); else if (n1 > 0) VSTOREN(yr + VL, v1, n1);
            }
        }
    }
}

/* one register block of nb taps (compile-time; taps past kb read tap k0's value and are
 * not stored) */
/* one register block of nb taps (compile-time; taps past kb read tap k0's value and are
 * not stored).  h != NULL: the gradient row is dz = h > 0 ? dz*scale : 0 (relu backward
 * folded in: dz is dy).  dbp != NULL: column sums of the gradient rows added too. */
static inline __attribute__((always_inline)) void
dw_block(const int nb, const fd_conv2d_desc *d, const float *x, const float *dz,
         const float *h, float scale, int64_t r0, int64_t rows, float beta, float *dwp,
         float *dbp, int64_t ob, int64_t n0, int64_t n1, int64_t k0, int kb,
         const int64_t *off, const int64_t *ident)
{
    const int64_t oc = d->oc;
    int64_t o_in[KB], o_pk[KB];
    for (int t = 0; t < nb; t++) {
        o_in[t] = off[k0 + (t < kb ? t : 0)];
        o_pk[t] = ident[k0 + (t < kb ? t : 0)];
    }
    vf acc0[KB], acc1[KB];
#pragma GCC unroll 12
    for (int t = 0; t < nb; t++) {
        acc0[t] = VZERO();
        acc1[t] = VZERO();
    }
    vf sb0 = VZERO(), sb1 = VZERO();
    if (beta != 0.0f) {
        for (int t = 0; t < kb; t++) {
            const float *dr = dwp + (k0 + t) * oc + ob;
            acc0[t] = n0 == VL ? VLOADU(dr) : VLOADN(dr, n0);
            acc1[t] = n1 == VL ? VLOADU(dr + VL) : (n1 > 0 ? VLOADN(dr + VL, n1) : VZERO());
        }
        if (dbp) {
            sb0 = n0 == VL ? VLOADU(dbp + ob) : VLOADN(dbp + ob, n0);
            sb1 = n1 == VL ? VLOADU(dbp + ob + VL) : (n1 > 0 ? VLOADN(dbp + ob + VL, n1) : VZERO());
        }
    }
    const vf vs = VSET1(scale);
    float pk[FD_CONV_DIRECT_K];
    fd_pix q = pix_of(d, r0);
    const float *zr = dz + r0 * oc + ob;
    const float *hr = h ? h + r0 * oc + ob : NULL;
    for (int64_t r = 0; r < rows; r++, zr += oc) {
        const float *s = window(d, x, q, pk);
        const int64_t *o = s ? o_in : o_pk;
        if (!s) s = pk;
        pix_next(d, &q);
        vf z0 = n0 == VL ? VLOADU(zr) : VLOADN(zr, n0);
        vf z1 = n1 == VL ? VLOADU(zr + VL) : (n1 > 0 ? VLOADN(zr + VL, n1) : VZERO());
        if (hr) {
            const vf h0 = n0 == VL ? VLOADU(hr) : VLOADN(hr, n0);
            const vf h1 = n1 == VL ? VLOADU(hr + VL) : (n1 > 0 ? VLOADN(hr + VL, n1) : VZERO());
            z0 = VPOS(h0, VMUL(z0, vs));
            z1 = VPOS(h1, VMUL(z1, vs));
            hr += oc;
        }
        if (dbp) {
            sb0 = VADD(sb0, z0);
            sb1 = VADD(sb1, z1);
        }
#pragma GCC unroll 12
        for (int t = 0; t < nb; t++) {
            const vf a = VSET1(s[o[t]]);
            acc0[t] = VFMA(a, z0, acc0[t]);
            acc1[t] = VFMA(a, z1, acc1[t]);
        }
    }
    for (int t = 0; t < kb; t++) {
        float *dr = dwp + (k0 + t) * oc + ob;
        if (n0 == VL) VSTOREU(dr, acc0[t]); else VSTOREN(dr, acc0[t], n0);
        if (n1 == VL) VSTOREU(dr + VL, acc1[t]); else if (n1 > 0) VSTOREN(dr + VL, acc1[t], n1);
    }
    if (dbp) {
        if (n0 == VL) VSTOREU(dbp + ob, sb0); else VSTOREN(dbp + ob, sb0, n0);
        if (n1 == VL) VSTOREU(dbp + ob + VL, sb1); else if (n1 > 0) VSTOREN(dbp + ob + VL, sb1, n1);
    }
}

void FD_SFX(fd_conv_direct_dw)(const fd_conv2d_desc *d, const float *x, const float *dz,
                               const float *h, float scale, int64_t r0, int64_t rows,
                               float beta, float *dwp, float *dbp)
{
    const int64_t K = d->kh * d->kw * d->c, oc = d->oc;
    int64_t off[FD_CONV_DIRECT_K], ident[FD_CONV_DIRECT_K];
    tap_offsets(d, off);
    for (int64_t k = 0; k < K; k++) ident[k] = k;
    for (int64_t ob = 0; ob < oc; ob += 2 * VL) {
        const int64_t n0 = oc - ob < VL ? oc - ob : VL;
        const int64_t n1 = oc - ob - VL <= 0 ? 0 : (oc - ob - VL < VL ? oc - ob - VL : VL);
        for (int64_t k0 = 0; k0 < K; k0 += KB) {
            const int kb = (int)(K - k0 < KB ? K - k0 : KB);
            float *db = k0 == 0 ? dbp : NULL; /* column sums once per column block */
            switch ((kb + 2) / 3) {
            case 1: dw_block(3, d, x, dz, h, scale, r0, rows, beta, dwp, db, ob, n0, n1, k0, kb, off, ident); break;
            case 2: dw_block(6, d, x, dz, h, scale, r0, rows, beta, dwp, db, ob, n0, n1, k0, kb, off, ident); break;
            case 3: dw_block(9, d, x, dz, h, scale, r0, rows, beta, dwp, db, ob, n0, n1, k0, kb, off, ident); break;
            default: dw_block(12, d, x, dz, h, scale, r0, rows, beta, dwp, db, ob, n0, n1, k0, kb, off, ident); break;
            }
        }
    }
}

#undef PB
#undef KB

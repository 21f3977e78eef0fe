/* conv.c — Conv2D forward/backward (NHWC) as an implicit GEMM on fd_sgemm.
 *
 * Forward: the n*oh*ow output rows are cut into chunks of FD_CONV_CHUNK_FLOATS / K rows
 * (a multiple of 8, so every chunk's element-mask bits start on a byte: the GEMM epilogue
 * applies them).  Each thread packs the patches of its chunk (im2col of that chunk only,
 * L2-sized) into its own buffer and runs one single-threaded fd_sgemm with the epilogue
 * (bias, relu, mask).  A 1×1 stride-1 unpadded convolution is one plain GEMM on x.
 * The first layer of an MNIST-like net (c = 1, K = 9) takes the same path: its patch
 * rows are 9 floats against 32+ output floats, so packing is a small part of the time.
 *
 * Backward: the images are cut into U = min(n, FD_CONV_UNITS) contiguous units (fixed by
 * the shape).  One thread handles a unit in order: per chunk, patches, dW_u += patchesᵀ·dz
 * (beta = 1 after the unit's first chunk), dcols = dz·wtᵀ and col2im into the unit's dx
 * (each image's dx written by one thread).  dW = Σ_u dW_u and db = Σ_u db_u are then
 * added in unit order.  GEMMs never split K, so nothing depends on the thread count. */
#include "nn/conv.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "fpenv.h"
#include "internal.h"
#include "nn/conv_direct.h"

#define FD_CONV_CHUNK_FLOATS 49152 /* patch floats per chunk (192 KiB: L2-resident)  */
#define FD_CONV_CHUNK_OUT 32768   /* output floats per chunk (128 KiB)              */
#define FD_CONV_UNITS 16           /* backward units (partial dW sums) at most        */

/* ------------------------------------------------------------ workspace */
typedef struct fd_conv_buf {
    float *p;
    size_t cap;
    struct fd_conv_buf *next;
} fd_conv_buf;

#define FD_CONV_SLOTS 2
static _Atomic(fd_conv_buf *) conv_bufs = NULL;
static _Thread_local fd_conv_buf *my_bufs[FD_CONV_SLOTS];

/* A 64-byte aligned per-thread buffer of >= floats floats (slot 0: chunk workspace of a
 * worker; slot 1: the caller's partial sums).  NULL when memory runs out. */
static float *conv_buffer(int slot, size_t floats)
{
    fd_conv_buf *b = my_bufs[slot];
    if (!b) {
        b = calloc(1, sizeof *b);
        if (!b) return NULL;
        b->next = atomic_load(&conv_bufs);
        while (!atomic_compare_exchange_weak(&conv_bufs, &b->next, b)) {
        }
        my_bufs[slot] = b;
    }
    if (b->cap < floats) {
        free(b->p);
        b->p = NULL;
        b->cap = 0;
        size_t bytes = (floats * sizeof(float) + 63) & ~(size_t)63;
        b->p = aligned_alloc(64, bytes ? bytes : 64);
        if (!b->p) return NULL;
        b->cap = floats;
    }
    return b->p;
}

void fd_conv_release_buffers(void)
{
    fd_conv_infer_release_buffers();
    for (fd_conv_buf *b = atomic_load(&conv_bufs); b; b = b->next) {
        free(b->p);
        b->p = NULL;
        b->cap = 0;
    }
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

static fd_conv_direct_fwd_fn direct_fwd(void)
{
    switch (fd_isa_get()) {
#ifdef FD_HAVE_AVX512
    case FD_ISA_AVX512: return fd_conv_direct_fwd_avx512;
#endif
#ifdef FD_HAVE_AVX2
    case FD_ISA_AVX2: return fd_conv_direct_fwd_avx2;
#endif
    default: return fd_conv_direct_fwd_ref;
    }
}

static fd_conv_direct_dw_fn direct_dw(void)
{
    switch (fd_isa_get()) {
#ifdef FD_HAVE_AVX512
    case FD_ISA_AVX512: return fd_conv_direct_dw_avx512;
#endif
#ifdef FD_HAVE_AVX2
    case FD_ISA_AVX2: return fd_conv_direct_dw_avx2;
#endif
    default: return fd_conv_direct_dw_ref;
    }
}

static int64_t conv_k(const fd_conv2d_desc *d) { return d->kh * d->kw * d->c; }

/* 1×1, stride 1, no padding: the patches are x itself. */
static int is_pointwise(const fd_conv2d_desc *d)
{
    return d->kh == 1 && d->kw == 1 && d->sh == 1 && d->sw == 1 && d->pt == 0 && d->pl == 0 &&
           d->oh == d->h && d->ow == d->w;
}

/* Output rows per chunk: about FD_CONV_CHUNK_FLOATS patch floats, a multiple of 8. */
static int64_t chunk_rows(const fd_conv2d_desc *d)
{
    int64_t r = FD_CONV_CHUNK_FLOATS / conv_k(d);
    /* and about FD_CONV_CHUNK_OUT floats of output / dz: the backward's dy, h and dz of a
     * chunk stay in L2 between the epilogue's backward and the GEMMs */
    if (r > FD_CONV_CHUNK_OUT / d->oc) r = FD_CONV_CHUNK_OUT / d->oc;
    r &= ~(int64_t)7;
    return r < 8 ? 8 : r;
}

/* ------------------------------------------------------------ im2col / col2im */
/* Patches of output rows [r0, r0 + rows) (global row = (img*oh + oy)*ow + ox) into
 * cols (rows × K). */
static void im2col(const fd_conv2d_desc *d, const float *FD_RESTRICT x, int64_t r0,
                   int64_t rows, float *FD_RESTRICT cols)
{
    const int64_t P = d->oh * d->ow, K = conv_k(d), C = d->c;
    const int64_t rowlen = d->kw * C;
    const int contig = d->dw == 1; /* kw taps of a row are adjacent pixels */
    int64_t img = r0 / P, rem = r0 % P, oy = rem / d->ow, ox = rem % d->ow;
    for (int64_t r = 0; r < rows; r++) {
        float *dst = cols + r * K;
        const float *xi = x + img * d->h * d->w * C;
        const int64_t ix0 = ox * d->sw - d->pl;
        const int full = contig && ix0 >= 0 && ix0 + d->kw <= d->w;
        for (int64_t ki = 0; ki < d->kh; ki++) {
            const int64_t iy = oy * d->sh - d->pt + ki * d->dh;
            if (iy < 0 || iy >= d->h) {
                for (int64_t q = 0; q < rowlen; q++) dst[q] = 0.0f;
            } else if (full) {
                const float *s = xi + (iy * d->w + ix0) * C;
                for (int64_t q = 0; q < rowlen; q++) dst[q] = s[q];
            } else {
                for (int64_t kj = 0; kj < d->kw; kj++) {
                    const int64_t ix = ix0 + kj * d->dw;
                    float *dd = dst + kj * C;
                    if (ix < 0 || ix >= d->w) {
                        for (int64_t q = 0; q < C; q++) dd[q] = 0.0f;
                    } else {
                        const float *s = xi + (iy * d->w + ix) * C;
                        for (int64_t q = 0; q < C; q++) dd[q] = s[q];
                    }
                }
            }
            dst += rowlen;
        }
        if (++ox == d->ow) {
            ox = 0;
            if (++oy == d->oh) {
                oy = 0;
                img++;
            }
        }
    }
}

/* dx += col2im(cols) for output rows [r0, r0 + rows) (dx of those images pre-zeroed). */
static void col2im(const fd_conv2d_desc *d, float *FD_RESTRICT dx, int64_t r0, int64_t rows,
                   const float *FD_RESTRICT cols)
{
    const int64_t P = d->oh * d->ow, K = conv_k(d), C = d->c;
    const int64_t rowlen = d->kw * C;
    const int contig = d->dw == 1;
    int64_t img = r0 / P, rem = r0 % P, oy = rem / d->ow, ox = rem % d->ow;
    for (int64_t r = 0; r < rows; r++) {
        const float *src = cols + r * K;
        float *xi = dx + img * d->h * d->w * C;
        const int64_t ix0 = ox * d->sw - d->pl;
        const int full = contig && ix0 >= 0 && ix0 + d->kw <= d->w;
        for (int64_t ki = 0; ki < d->kh; ki++) {
            const int64_t iy = oy * d->sh - d->pt + ki * d->dh;
            if (iy >= 0 && iy < d->h) {
                if (full) {
                    float *s = xi + (iy * d->w + ix0) * C;
                    for (int64_t q = 0; q < rowlen; q++) s[q] += src[q];
                } else {
                    for (int64_t kj = 0; kj < d->kw; kj++) {
                        const int64_t ix = ix0 + kj * d->dw;
                        if (ix < 0 || ix >= d->w) continue;
                        float *s = xi + (iy * d->w + ix) * C;
                        const float *ss = src + kj * C;
                        for (int64_t q = 0; q < C; q++) s[q] += ss[q];
                    }
                }
            }
            src += rowlen;
        }
        if (++ox == d->ow) {
            ox = 0;
            if (++oy == d->oh) {
                oy = 0;
                img++;
            }
        }
    }
}

/* out[j] = keep[j] ? x[j] * scale : 0 (keep[j] all ones or zero bits): branch-free, so
 * a dropped NaN/inf becomes 0 as in dropout and the loop vectorises. */
static inline void masked_scale(int64_t n, float *out, const float *x, const uint32_t *keep,
                                float scale)
{
    for (int64_t j = 0; j < n; j++) {
        const float v = x[j] * scale;
        uint32_t u;
        memcpy(&u, &v, 4);
        u &= keep[j];
        float r;
        memcpy(&r, &u, 4);
        out[j] = r;
    }
}

/* keep[j] = all ones if bit (base + j) of bits is set, else 0, j < n */
static inline void expand_bits(int64_t n, const uint8_t *bits, uint64_t base, uint32_t *keep)
{
    for (int64_t j = 0; j < n; j++) {
        const uint64_t b = base + (uint64_t)j;
        keep[j] = (uint32_t)0 - (uint32_t)((bits[b >> 3] >> (b & 7)) & 1);
    }
}

/* rows [r0, r0+rows) of y (oc wide) *= chmask bit of (img, j) ? scale : 0 */
static void apply_chmask_rows(const fd_conv2d_desc *d, float *y, int64_t r0, int64_t rows,
                              const uint8_t *chmask, float scale)
{
    const int64_t P = d->oh * d->ow, oc = d->oc;
    uint32_t keep[256];
    for (int64_t j0 = 0; j0 < oc; j0 += 256) {
        const int64_t cw = min64(256, oc - j0);
        int64_t img = -1;
        for (int64_t r = r0; r < r0 + rows; r++) {
            if (r / P != img) {
                img = r / P;
                expand_bits(cw, chmask, (uint64_t)(img * oc + j0), keep);
            }
            masked_scale(cw, y + r * oc + j0, y + r * oc + j0, keep, scale);
        }
    }
}

/* ------------------------------------------------------------ forward */
int fd_conv2d_forward_f32(const fd_conv2d_desc *d, float *y, const float *x,
                          const float *wt, const float *bias, int relu,
                          const uint8_t *mask, const uint8_t *chmask, float scale)
{
    const int64_t M = d->n * d->oh * d->ow, K = conv_k(d), oc = d->oc;
    if (M <= 0 || oc <= 0) return 0;
    fd_init();
    unsigned fp = fd_fp_enter();
    const fd_epilogue ep = {bias, relu, mask, scale};
    const fd_epilogue *pep = (bias || relu || mask) ? &ep : NULL;
    if (is_pointwise(d)) {
        fd_sgemm(0, 0, M, oc, K, 1.0f, x, K, wt, oc, 0.0f, y, oc, pep);
        if (chmask) {
            const int nt = fd_threads_for(M * oc, 1 << 15);
            (void)nt; /* unused without OpenMP */
            const int64_t nimg = d->n;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
            for (int64_t i = 0; i < nimg; i++) {
                unsigned fpt = fd_fp_enter();
                apply_chmask_rows(d, y, i * d->oh * d->ow, d->oh * d->ow, chmask, scale);
                fd_fp_exit(fpt);
            }
        }
        fd_fp_exit(fp);
        return 0;
    }
    const int64_t R = chunk_rows(d);
    const int64_t chunks = (M + R - 1) / R;
    int nt = fd_threads_for(M * K * oc, 1 << 18);
    if (nt > chunks) nt = (int)chunks;
    int status = 0;
    if (K <= FD_CONV_DIRECT_K) { /* small K (first layers): direct kernel, no packing */
        const int64_t ocp = (oc + 15) & ~(int64_t)15;
        float *wp = conv_buffer(1, (size_t)((K + 1) * ocp));
        if (!wp) {
            fd_fp_exit(fp);
            return -1;
        }
        float *bp = wp + K * ocp;
        for (int64_t k = 0; k < K; k++)
            for (int64_t j = 0; j < ocp; j++) wp[k * ocp + j] = j < oc ? wt[k * oc + j] : 0.0f;
        for (int64_t j = 0; j < ocp; j++) bp[j] = bias && j < oc ? bias[j] : 0.0f;
        const fd_conv_direct_fwd_fn f = direct_fwd();
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t q = 0; q < chunks; q++) {
            unsigned fpt = fd_fp_enter();
            const int64_t r0 = q * R, rows = min64(R, M - r0);
            f(d, x, wp, bp, ocp, relu, y, r0, rows);
            if (mask) /* r0 % 8 == 0: byte aligned */
                fd_kt->dropout_apply(rows * oc, y + r0 * oc, y + r0 * oc, mask + (r0 * oc) / 8,
                                     scale);
            if (chmask) apply_chmask_rows(d, y, r0, rows, chmask, scale);
            fd_fp_exit(fpt);
        }
        fd_fp_exit(fp);
        return 0;
    }
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        unsigned fpt = fd_fp_enter();
        float *cols = conv_buffer(0, (size_t)(R * K));
        if (!cols) {
#pragma omp atomic write
            status = -1;
        }
#pragma omp for schedule(static)
        for (int64_t q = 0; q < chunks; q++) {
            if (!cols) continue;
            const int64_t r0 = q * R, rows = min64(R, M - r0);
            im2col(d, x, r0, rows, cols);
            fd_epilogue e = ep;
            if (mask) e.mask = mask + (r0 * oc) / 8; /* r0 % 8 == 0: byte aligned */
            fd_sgemm(0, 0, rows, oc, K, 1.0f, cols, K, wt, oc, 0.0f, y + r0 * oc, oc,
                     pep ? &e : NULL);
            if (chmask) apply_chmask_rows(d, y, r0, rows, chmask, scale);
        }
        fd_fp_exit(fpt);
    }
    fd_fp_exit(fp);
    return status;
}

/* ------------------------------------------------------------ backward */
/* The backward of the fused epilogue (relu / mask / channel mask) on dz rows [r0, r0+rows). */
typedef struct {
    float *dz;
    const float *dy, *h;
    const uint8_t *mask, *chmask;
    float scale;
    int relu;
} fd_conv_act;

static void act_rows(const fd_conv2d_desc *d, const fd_conv_act *A, int64_t r0, int64_t rows)
{
    const int64_t oc = d->oc, n = rows * oc, P = d->oh * d->ow;
    float *dz = A->dz + r0 * oc;
    const float *dy = A->dy + r0 * oc;
    if (A->relu) { /* h > 0 iff kept and z > 0 */
        fd_kt->relu_dropout_backward(n, dz, dy, A->h + r0 * oc, A->scale);
        return;
    }
    if (A->mask && ((uint64_t)(r0 * oc) & 7) == 0) {
        fd_kt->dropout_apply(n, dz, dy, A->mask + (r0 * oc) / 8, A->scale);
        return;
    }
    if (A->mask || A->chmask) {
        uint32_t keep[256];
        for (int64_t r = r0; r < r0 + rows; r++)
            for (int64_t j0 = 0; j0 < oc; j0 += 256) {
                const int64_t cw = min64(256, oc - j0);
                if (A->mask)
                    expand_bits(cw, A->mask, (uint64_t)(r * oc + j0), keep);
                else
                    expand_bits(cw, A->chmask, (uint64_t)((r / P) * oc + j0), keep);
                masked_scale(cw, A->dz + r * oc + j0, A->dy + r * oc + j0, keep, A->scale);
            }
        return;
    }
    for (int64_t i = 0; i < n; i++) dz[i] = dy[i] * A->scale;
}

static int conv_backward(const fd_conv2d_desc *d, const float *dz, const fd_conv_act *act,
                         const float *x, const float *wt, float *dwt, float *db, float *dx)
{
    const int64_t N = d->n, P = d->oh * d->ow, K = conv_k(d), oc = d->oc;
    const int64_t M = N * P;
    const int64_t img_in = d->h * d->w * d->c;
    if (N <= 0) return 0;
    fd_init();
    unsigned fp = fd_fp_enter();
    if (M == 0 || oc == 0) { /* degenerate: zero gradients */
        if (dwt) memset(dwt, 0, (size_t)(K * oc) * sizeof(float));
        if (db) memset(db, 0, (size_t)oc * sizeof(float));
        if (dx) memset(dx, 0, (size_t)(N * img_in) * sizeof(float));
        fd_fp_exit(fp);
        return 0;
    }
    const int pw = is_pointwise(d);
    /* ReLU conv without dx on the small-K path (a first layer): the direct dW kernel
     * reads dy and h and forms dz in registers (with db): dz is never written */
    const int fold = act && act->relu && dwt && !dx && !pw && K <= FD_CONV_DIRECT_K;
    if (act && !fold) { /* the whole dz first, in parallel (measured faster than chunk by chunk
                * inside the units: 1.6 vs 1.85 ms on the seed-003 conv backward) */
        const int nt0 = fd_threads_for(M * oc, 1 << 16);
        (void)nt0; /* unused without OpenMP */
        const int64_t nb = (M + 255) / 256;
#pragma omp parallel for num_threads(nt0) schedule(static) if (nt0 > 1)
        for (int64_t b = 0; b < nb; b++) {
            unsigned fpt = fd_fp_enter();
            act_rows(d, act, b * 256, min64(256, M - b * 256));
            fd_fp_exit(fpt);
        }
        act = NULL;
    }
    if (pw && dx) /* dx = dz·wtᵀ as one GEMM */
        fd_sgemm(0, 1, M, K, oc, 1.0f, dz, oc, wt, oc, 0.0f, dx, K, NULL);
    const int need_dx = dx && !pw;
    if (!dwt && !db && !need_dx) {
        fd_fp_exit(fp);
        return 0;
    }
    const int64_t U = min64(N, FD_CONV_UNITS);
    const int64_t R = chunk_rows(d);
    /* partials: U × (K*oc + oc) */
    const int64_t part = K * oc + oc;
    float *parts = NULL;
    if (dwt || db) {
        parts = conv_buffer(1, (size_t)(U * part));
        if (!parts) {
            fd_fp_exit(fp);
            return -1;
        }
    }
    int nt = fd_threads_for(M * K * oc, 1 << 18);
    if (nt > U) nt = (int)U;
    int status = 0;
    const int small = !pw && K <= FD_CONV_DIRECT_K; /* dW by the direct kernel */
    const fd_conv_direct_dw_fn dwf = direct_dw();
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        unsigned fpt = fd_fp_enter();
        float *work = conv_buffer(0, (size_t)((pw || small ? 0 : R * K) + (need_dx ? R * K : 0)) + 16);
        if (!work) {
#pragma omp atomic write
            status = -1;
        }
#pragma omp for schedule(static)
        for (int64_t u = 0; u < U; u++) {
            if (!work) continue;
            const int64_t i0 = N * u / U, i1 = N * (u + 1) / U;
            const int64_t ra = i0 * P, rb = i1 * P;
            float *cols = work;
            float *dcols = pw || small ? work : work + R * K;
            float *pdw = parts ? parts + u * part : NULL;
            float *pdb = pdw ? pdw + K * oc : NULL;
            if (need_dx) memset(dx + i0 * img_in, 0, (size_t)((i1 - i0) * img_in) * sizeof(float));
            if (pdb)
                for (int64_t j = 0; j < oc; j++) pdb[j] = 0.0f;
            for (int64_t r0 = ra; r0 < rb; r0 += R) {
                const int64_t rows = min64(R, rb - r0);
                const float *dzc = dz + r0 * oc;
                if (fold) {
                    dwf(d, x, act->dy, act->h, act->scale, r0, rows, r0 == ra ? 0.0f : 1.0f,
                        pdw, pdb);
                    continue;
                }
                if (dwt && small) {
                    dwf(d, x, dz, NULL, 1.0f, r0, rows, r0 == ra ? 0.0f : 1.0f, pdw, NULL);
                } else if (dwt) {
                    const float *pc = pw ? x + r0 * K : cols;
                    if (!pw) im2col(d, x, r0, rows, cols);
                    fd_sgemm(1, 0, K, oc, rows, 1.0f, pc, K, dzc, oc, r0 == ra ? 0.0f : 1.0f,
                             pdw, oc, NULL);
                }
                if (pdb)
                    for (int64_t r = 0; r < rows; r++)
                        for (int64_t j = 0; j < oc; j++) pdb[j] += dzc[r * oc + j];
                if (need_dx) {
                    fd_sgemm(0, 1, rows, K, oc, 1.0f, dzc, oc, wt, oc, 0.0f, dcols, K, NULL);
                    col2im(d, dx, r0, rows, dcols);
                }
            }
        }
        fd_fp_exit(fpt);
    }
    if (status == 0 && parts) { /* dW, db = Σ_u partials in unit order */
        const int64_t tot = K * oc;
        const int nt2 = fd_threads_for(tot * U, 1 << 16);
        (void)nt2; /* unused without OpenMP */
#pragma omp parallel for num_threads(nt2) schedule(static) if (nt2 > 1)
        for (int64_t e0 = 0; e0 < part; e0 += 256) {
            const int64_t e1 = min64(part, e0 + 256);
            for (int64_t e = e0; e < e1; e++) {
                float s = parts[e];
                for (int64_t u = 1; u < U; u++) s += parts[u * part + e];
                if (e < tot) {
                    if (dwt) dwt[e] = s;
                } else if (db) {
                    db[e - tot] = s;
                }
            }
        }
    }
    fd_fp_exit(fp);
    return status;
}

int fd_conv2d_backward_f32(const fd_conv2d_desc *d, const float *dz, const float *x,
                           const float *wt, float *dwt, float *db, float *dx)
{
    return conv_backward(d, dz, NULL, x, wt, dwt, db, dx);
}

int fd_conv2d_backward_act_f32(const fd_conv2d_desc *d, float *dz, const float *dy,
                               const float *h, const uint8_t *mask, const uint8_t *chmask,
                               float scale, int relu, const float *x, const float *wt,
                               float *dwt, float *db, float *dx)
{
    const fd_conv_act A = {dz, dy, h, mask, chmask, scale, relu};
    return conv_backward(d, dz, &A, x, wt, dwt, db, dx);
}

/* ------------------------------------------------------------ channel mask */
void fd_channel_mask_apply_f32(int64_t n, int64_t p, int64_t c, float *out, const float *x,
                               const uint8_t *chmask, float scale)
{
    if (n <= 0 || p <= 0 || c <= 0) return;
    unsigned fp = fd_fp_enter();
    const int nt = fd_threads_for(n * p * c, 1 << 15);
    (void)nt; /* unused without OpenMP */
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t i = 0; i < n; i++) {
        unsigned fpt = fd_fp_enter();
        uint32_t keep[256];
        for (int64_t j0 = 0; j0 < c; j0 += 256) {
            const int64_t cw = min64(256, c - j0);
            expand_bits(cw, chmask, (uint64_t)(i * c + j0), keep);
            for (int64_t q = 0; q < p; q++)
                masked_scale(cw, out + (i * p + q) * c + j0, x + (i * p + q) * c + j0, keep, scale);
        }
        fd_fp_exit(fpt);
    }
    fd_fp_exit(fp);
}

/* ------------------------------------------------------------ act backward */
void fd_conv_act_backward_f32(int64_t n, float *dz, const float *dy, const float *h,
                              const uint8_t *mask, float scale, int relu)
{
    if (n <= 0) return;
    unsigned fp = fd_fp_enter();
    const int64_t B = 1 << 14; /* elements per block (a multiple of 8: whole mask bytes) */
    const int64_t nb = (n + B - 1) / B;
    const int nt = fd_threads_for(n, 1 << 16);
    (void)nt; /* unused without OpenMP */
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t b = 0; b < nb; b++) {
        unsigned fpt = fd_fp_enter();
        const int64_t i0 = b * B, i1 = min64(n, i0 + B);
        if (relu) {
            fd_kt->relu_dropout_backward(i1 - i0, dz + i0, dy + i0, h + i0, scale);
        } else if (mask) {
            fd_kt->dropout_apply(i1 - i0, dz + i0, dy + i0, mask + i0 / 8, scale);
        } else {
            for (int64_t i = i0; i < i1; i++) dz[i] = dy[i] * scale;
        }
        fd_fp_exit(fpt);
    }
    fd_fp_exit(fp);
}

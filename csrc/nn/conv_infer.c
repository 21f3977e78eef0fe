/* conv_infer.c — Conv2D (+ bias, relu) [+ max pooling] for inference (no masks, no
 * backward): the direct kernel of conv_infer.h on prepacked weights, each image padded
 * once into a per-thread buffer, the conv output of an image pooled while it is in L2
 * (the conv output never reaches memory when a max pooling follows; rows and columns no
 * pooling window reads are not computed).  Every output is
 * computed with the arithmetic of fd_conv2d_forward_f32 (bitwise equal, see
 * conv_infer.h), whoever computes it: results do not depend on the thread count.
 * Work units: images (one per unit), or parts of the output rows of one image when there
 * are fewer images than threads (batch 1); tiny jobs stay on the calling thread. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "fpenv.h"
#include "internal.h"
#include "nn/conv.h"
#include "nn/conv_direct.h"
#include "nn/conv_infer.h"

/* per-thread 64-byte aligned buffers (slot 0: padded image, 1: conv output of an image,
 * 2: the caller's packed weights) */
#define FD_CI_SLOTS 3
typedef struct fd_ci_buf {
    float *p;
    size_t cap;
    struct fd_ci_buf *next;
} fd_ci_buf;
static _Atomic(fd_ci_buf *) ci_bufs = NULL;
#ifdef FD_HAVE_AVX512
static _Thread_local fd_ci_buf *my_ci[FD_CI_SLOTS];

static float *ci_buffer(int slot, size_t floats)
{
    fd_ci_buf *b = my_ci[slot];
    if (!b) {
        b = calloc(1, sizeof *b);
        if (!b) return NULL;
        b->next = atomic_load(&ci_bufs);
        while (!atomic_compare_exchange_weak(&ci_bufs, &b->next, b)) {
        }
        my_ci[slot] = b;
    }
    if (b->cap < floats) {
        free(b->p);
        b->cap = 0;
        size_t bytes = (floats * sizeof(float) + 63) & ~(size_t)63;
        b->p = aligned_alloc(64, bytes ? bytes : 64);
        if (!b->p) return NULL;
        b->cap = floats;
    }
    return b->p;
}

#endif

void fd_conv_infer_release_buffers(void)
{
    for (fd_ci_buf *b = atomic_load(&ci_bufs); b; b = b->next) {
        free(b->p);
        b->p = NULL;
        b->cap = 0;
    }
}

#ifdef FD_HAVE_AVX512
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

typedef struct {
    const fd_conv2d_desc *d;
    const fd_pool2d_desc *p;
    const fd_ci_geom *g;
    fd_ci_row_fn row;
    fd_ci_pool_fn pool;
    const float *x;
    float *y;
    int64_t parts, cparts, nblk, Hp, Wp;
    int pad;
    _Atomic int status;
} fd_ci_job;

static void ci_unit(void *vj, int64_t u)
{
    fd_ci_job *J = vj;
    const fd_conv2d_desc *d = J->d;
    const fd_pool2d_desc *p = J->p;
    const int64_t C = d->c, per = J->parts * J->cparts, img = u / per;
    const int64_t part = u % per / J->cparts, cp = u % J->cparts;
    const int64_t jb0 = J->nblk * cp / J->cparts, jb1 = J->nblk * (cp + 1) / J->cparts;
    const int64_t rows_out = p ? p->oh : d->oh;
    const int64_t a = rows_out * part / J->parts, b = rows_out * (part + 1) / J->parts;
    if (a >= b) return;
    int64_t c0 = a, c1 = b; /* conv rows this unit needs */
    if (p) {
        c0 = max64(0, a * p->sh - p->pt);
        c1 = min64(d->oh, (b - 1) * p->sh - p->pt + p->ph);
    }
    const float *xi = J->x + img * d->h * d->w * C;
    const float *xp = xi;
    int64_t Wp = d->w;
    if (J->pad) { /* zero-padded copy of the image (the rows this unit reads) */
        Wp = J->Wp;
        float *pb = ci_buffer(0, (size_t)(J->Hp * Wp * C));
        if (!pb) {
            atomic_store(&J->status, -1);
            return;
        }
        const int64_t py0 = c0 * d->sh, py1 = (c1 - 1) * d->sh + (d->kh - 1) * d->dh + 1;
        for (int64_t py = py0; py < py1; py++) {
            float *dst = pb + py * Wp * C;
            const int64_t iy = py - d->pt;
            if (iy < 0 || iy >= d->h) {
                memset(dst, 0, (size_t)(Wp * C) * sizeof(float));
                continue;
            }
            const int64_t l = min64(d->pl, Wp), r = min64(Wp, d->pl + d->w);
            memset(dst, 0, (size_t)(l * C) * sizeof(float));
            if (r > l) memcpy(dst + l * C, xi + (iy * d->w + (l - d->pl)) * C, (size_t)((r - l) * C) * sizeof(float));
            if (Wp > r) memset(dst + max64(r, l) * C, 0, (size_t)((Wp - max64(r, l)) * C) * sizeof(float));
        }
        xp = pb;
    }
    const int64_t orow = d->ow * d->oc;
    float *z = J->y + img * d->oh * orow;
    if (p) {
        z = ci_buffer(1, (size_t)(d->oh * orow));
        if (!z) {
            atomic_store(&J->status, -1);
            return;
        }
    }
    /* with a pooling, only the columns its windows read (mnist_convnet's conv2: 10 of 11) */
    const int64_t owc = p ? min64(d->ow, (p->ow - 1) * p->sw - p->pl + p->pw) : d->ow;
    for (int64_t oy = c0; oy < c1; oy++)
        J->row(J->g, xp + oy * d->sh * Wp * C, owc, z + oy * orow, jb0, jb1);
    if (p)
        J->pool(p, z, J->y + img * p->oh * p->ow * p->c, a, b, jb0 * FD_CI_NB,
                min64(d->oc, jb1 * FD_CI_NB));
}

static int is_pointwise(const fd_conv2d_desc *d)
{
    return d->kh == 1 && d->kw == 1 && d->sh == 1 && d->sw == 1 && d->pt == 0 && d->pl == 0 &&
           d->oh == d->h && d->ow == d->w;
}

#endif

int fd_conv2d_infer_f32(const fd_conv2d_desc *d, const fd_pool2d_desc *p, float *y,
                        const float *x, const float *wt, const float *bias, int relu)
{
    fd_init();
    if (fd_isa_get() != FD_ISA_AVX512) return 1;
#ifndef FD_HAVE_AVX512
    return 1;
#else
    const int64_t K = d->kh * d->kw * d->c, oc = d->oc;
    if (d->n <= 0 || K <= 0 || oc <= 0 || is_pointwise(d)) return 1;
    const int direct = K <= FD_CONV_DIRECT_K;
    if (!direct && oc <= 16) return 1; /* fd_sgemm's dot path: another summation order */
    if (p && (p->n != d->n || p->h != d->oh || p->w != d->ow || p->c != oc)) return 1;
    unsigned fp = fd_fp_enter();
    const int64_t nblk = (oc + FD_CI_NB - 1) / FD_CI_NB, ocp = nblk * FD_CI_NB;
    /* packed weights (nblk × K × 32), padded bias, tap offsets */
    float *wpk = ci_buffer(2, (size_t)(nblk * K * FD_CI_NB + ocp + K * 2 + 16));
    if (!wpk) {
        fd_fp_exit(fp);
        return -1;
    }
    for (int64_t jb = 0; jb < nblk; jb++) {
        float *dst = wpk + jb * K * FD_CI_NB;
        const int64_t j0 = jb * FD_CI_NB, w = min64(FD_CI_NB, oc - j0);
        for (int64_t k = 0; k < K; k++) {
            memcpy(dst + k * FD_CI_NB, wt + k * oc + j0, (size_t)w * sizeof(float));
            for (int64_t q = w; q < FD_CI_NB; q++) dst[k * FD_CI_NB + q] = 0.0f;
        }
    }
    float *bp = wpk + nblk * K * FD_CI_NB;
    for (int64_t j = 0; j < ocp; j++) bp[j] = bias && j < oc ? bias[j] : 0.0f;
    int64_t *off = (int64_t *)(bp + ocp);
    const int64_t Hp = (d->oh - 1) * d->sh + (d->kh - 1) * d->dh + 1;
    const int64_t Wp = (d->ow - 1) * d->sw + (d->kw - 1) * d->dw + 1;
    const int pad = d->pt > 0 || d->pl > 0 || Hp > d->h || Wp > d->w;
    const int64_t rs = pad ? Wp : d->w; /* pixels per (padded) input row */
    {
        int64_t k = 0;
        for (int64_t ki = 0; ki < d->kh; ki++)
            for (int64_t kj = 0; kj < d->kw; kj++)
                for (int64_t ci = 0; ci < d->c; ci++)
                    off[k++] = (ki * d->dh * rs + kj * d->dw) * d->c + ci;
    }
    /* the KC blocks fd_sgemm sums over (frame.c kc_block) */
    const int64_t kc = fd_kt->gemm.kc;
    const int64_t nkb = (K + kc - 1) / kc;
    int64_t kcb = (((K + nkb - 1) / nkb) + 7) & ~(int64_t)7;
    if (kcb > kc) kcb = kc;
    const fd_ci_geom g = {off, K, d->sw * d->c, oc, kcb, wpk,
                          direct ? bp : bias, direct ? FD_CI_DIRECT : FD_CI_GEMM, relu != 0};
    /* a second thread only for >= 4M multiply-adds (~40 us): waking a helper measured
     * ~15 us on the shared 2-core Zen 4 (batch-1 mnist_convnet conv2, 2.2M: 41 us on one
     * thread, 57 us on two) */
    int nt = fd_threads_for(d->n * d->oh * d->ow * K * oc, 1 << 22);
    const int64_t rows_out = p ? p->oh : d->oh;
    /* units: whole images; with fewer images than 2 threads' worth, images split by
     * 32-channel blocks first (no work repeated), then by output rows, into about 4 units
     * per thread (a helper that starts late or is preempted delays the call by one small
     * unit at most: the machine may be shared) */
    int64_t parts = 1, cparts = 1;
    if (nt > 1 && d->n < 2 * (int64_t)nt) {
        const int64_t want = (4 * (int64_t)nt + d->n - 1) / d->n;
        cparts = min64(nblk, want);
        parts = min64(rows_out, (want + cparts - 1) / cparts);
    }
    fd_ci_job J = {d, p, &g, fd_conv_infer_row_avx512, fd_conv_infer_maxpool_avx512,
                   x, y, parts, cparts, nblk, Hp, Wp, pad, 0};
    fd_parallel(nt, d->n * parts * cparts, ci_unit, &J);
    fd_fp_exit(fp);
    return atomic_load(&J.status);
#endif
}

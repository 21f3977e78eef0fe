/* frame.c — the portable SGEMM frame (BLIS / Goto): paths, packing, MC/KC/NC blocking,
 * threads.  Only the micro-kernels (ukr_<isa>_<MR>x<NR>.c) are ISA-specific.
 *
 * Paths, chosen from the shape alone (never from the thread count):
 *   dot      n <= 16, op(A) rows contiguous (trans_a = 0), k >= 16: every C element is a
 *            k-vectorised dot product of an A row with a B column (B packed n×k once);
 *            A is read in place, no lane is wasted on the narrow n.
 *   swapped  n <= 16 otherwise (m > n): Cᵀ = op(B)ᵀ·op(A)ᵀ through the micro-kernel, so
 *            the long m side fills the vector lanes; tiles are written back transposed.
 *   generic  the Goto loop nest jc(NC) → pc(KC) → ic(MC) → jr(NR) → ir(MR).
 *
 * Threads own disjoint rectangles of C (a tm × tn grid of whole MR×NR tiles) and pack
 * their own panels: no barriers, no shared buffers, and K is never split.  Every C
 * element is summed over the same KC blocks in the same order by the same kernel code
 * whichever thread computes it, so results are bitwise identical for any thread count. */
#include "internal.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FD_SKINNY_N 16          /* n at or below which the dot / swapped paths run   */
#define FD_DOT_MIN_K 16         /* shorter dot products waste lanes: use swapped      */
#define FD_GEMM_GRAIN (1 << 19) /* multiply-adds per thread before a 2nd thread helps */
#define FD_DOT_ROWS 16          /* rows per dot-kernel call (local result tile)       */

/* ---------------------------------------------------- skinny-n dot kernels */
/* D(m×n) = A(m×k)·Btᵀ, Bt n×k; rows of A and Bt are contiguous along k (strides lda,
 * ldbt); D row stride ldd; n <= FD_SKINNY_N.  Defined beside each ISA's micro-kernel;
 * kept out of fd_gemm_params (internal.h) and looked up here by ISA. */
typedef void (*fd_gemm_dot_fn)(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                               const float *bt, int64_t ldbt, float *d, int64_t ldd);
void fd_gemm_dot_ref(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                     const float *bt, int64_t ldbt, float *d, int64_t ldd);
#ifdef FD_HAVE_AVX2
void fd_gemm_dot_avx2(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                      const float *bt, int64_t ldbt, float *d, int64_t ldd);
#endif
#ifdef FD_HAVE_AVX512
void fd_gemm_dot_avx512(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                        const float *bt, int64_t ldbt, float *d, int64_t ldd);
#endif

static fd_gemm_dot_fn dot_kernel(int isa)
{
    switch (isa) {
#ifdef FD_HAVE_AVX512
    case FD_ISA_AVX512: return fd_gemm_dot_avx512;
#endif
#ifdef FD_HAVE_AVX2
    case FD_ISA_AVX2: return fd_gemm_dot_avx2;
#endif
    default: return fd_gemm_dot_ref;
    }
}

/* ---------------------------------------------------------- packing buffers */
/* One 64-byte-aligned buffer per thread, grown on demand.  Every buffer is listed in
 * `all_bufs` so fd_release_buffers() can free them all; it must not run while a GEMM is
 * running.  The list nodes (a few bytes per thread ever seen) are never freed. */
typedef struct fd_pack_buf {
    float *p;
    size_t cap; /* floats */
    struct fd_pack_buf *next;
} fd_pack_buf;

static _Atomic(fd_pack_buf *) all_bufs = NULL;
static _Thread_local fd_pack_buf *my_buf = NULL;

static void out_of_memory(size_t floats)
{
    fprintf(stderr, "fastdrop: cannot allocate %zu bytes of GEMM packing buffer\n",
            floats * sizeof(float));
    abort();
}

static float *pack_buffer(size_t floats)
{
    fd_pack_buf *b = my_buf;
    if (!b) {
        b = calloc(1, sizeof *b);
        if (!b) out_of_memory(0);
        b->next = atomic_load(&all_bufs);
        while (!atomic_compare_exchange_weak(&all_bufs, &b->next, b)) {
        }
        my_buf = b;
    }
    if (b->cap < floats) {
        free(b->p);
        size_t bytes = (floats * sizeof(float) + 63) & ~(size_t)63;
        b->p = aligned_alloc(64, bytes);
        if (!b->p) out_of_memory(floats);
        b->cap = floats;
    }
    return b->p;
}

void fd_release_buffers(void)
{
    for (fd_pack_buf *b = atomic_load(&all_bufs); b; b = b->next) {
        free(b->p);
        b->p = NULL;
        b->cap = 0;
    }
}

/* ------------------------------------------------------------------ packing */
#if defined(__GNUC__)
typedef float fd_v4 __attribute__((vector_size(16)));
typedef int fd_v4i __attribute__((vector_size(16)));

/* dst[q*w + r] = src[r*ss + q] for r, q < 4 (a 4×4 transpose; rows of dst w apart). */
static inline void transpose4(const float *src, int64_t ss, float *dst, int64_t w)
{
    fd_v4 r0, r1, r2, r3;
    memcpy(&r0, src, 16);
    memcpy(&r1, src + ss, 16);
    memcpy(&r2, src + 2 * ss, 16);
    memcpy(&r3, src + 3 * ss, 16);
    const fd_v4 t0 = __builtin_shuffle(r0, r1, (fd_v4i){0, 4, 1, 5});
    const fd_v4 t1 = __builtin_shuffle(r0, r1, (fd_v4i){2, 6, 3, 7});
    const fd_v4 t2 = __builtin_shuffle(r2, r3, (fd_v4i){0, 4, 1, 5});
    const fd_v4 t3 = __builtin_shuffle(r2, r3, (fd_v4i){2, 6, 3, 7});
    const fd_v4 o0 = __builtin_shuffle(t0, t2, (fd_v4i){0, 1, 4, 5});
    const fd_v4 o1 = __builtin_shuffle(t0, t2, (fd_v4i){2, 3, 6, 7});
    const fd_v4 o2 = __builtin_shuffle(t1, t3, (fd_v4i){0, 1, 4, 5});
    const fd_v4 o3 = __builtin_shuffle(t1, t3, (fd_v4i){2, 3, 6, 7});
    memcpy(dst, &o0, 16);
    memcpy(dst + w, &o1, 16);
    memcpy(dst + 2 * w, &o2, 16);
    memcpy(dst + 3 * w, &o3, 16);
}
#else
static inline void transpose4(const float *src, int64_t ss, float *dst, int64_t w)
{
    for (int q = 0; q < 4; q++)
        for (int r = 0; r < 4; r++) dst[q * w + r] = src[r * ss + q];
}
#endif

/* Panel dst(kc × W), row p = dst + p*W: dst[p*W + i] = src[p*sk + i*sw] for i < w, zero
 * for w <= i < W.  A panels are (k × MR) = op(A)ᵀ slivers, B panels (k × NR). */
static void pack_panel(int64_t kc, int64_t w, int W, const float *FD_RESTRICT src, int64_t sk,
                       int64_t sw, float *FD_RESTRICT dst)
{
    if (sw == 1) { /* rows of the panel are contiguous in src */
        if (w == W) {
            for (int64_t p = 0; p < kc; p++)
                for (int i = 0; i < W; i++) dst[p * W + i] = src[p * sk + i];
        } else {
            for (int64_t p = 0; p < kc; p++) {
                for (int64_t i = 0; i < w; i++) dst[p * W + i] = src[p * sk + i];
                for (int64_t i = w; i < W; i++) dst[p * W + i] = 0.0f;
            }
        }
        return;
    }
    if (sk == 1) { /* columns of the panel are contiguous in src: transpose 4×4 blocks */
        int64_t w4 = w & ~(int64_t)3, p = 0;
        for (; p + 4 <= kc; p += 4)
            for (int64_t i = 0; i < w4; i += 4) transpose4(src + i * sw + p, sw, dst + p * W + i, W);
        for (; p < kc; p++)
            for (int64_t i = 0; i < w4; i++) dst[p * W + i] = src[i * sw + p];
        for (int64_t i = w4; i < w; i++)
            for (int64_t q = 0; q < kc; q++) dst[q * W + i] = src[i * sw + q];
    } else {
        for (int64_t p = 0; p < kc; p++)
            for (int64_t i = 0; i < w; i++) dst[p * W + i] = src[p * sk + i * sw];
    }
    for (int64_t p = 0; p < kc; p++)
        for (int64_t i = w; i < W; i++) dst[p * W + i] = 0.0f;
}

/* ---------------------------------------------------------------- epilogue */
static int epilogue_active(const fd_epilogue *ep)
{
    return ep && (ep->bias || ep->relu || ep->mask);
}

/* C(r0.., c0..) rows × cols, already alpha·acc + beta·C: + bias[c], relu, mask.
 * n is the full width of C (mask bit of (r, c) is r*n + c). */
static void apply_epilogue(float *c, int64_t ldc, int64_t r0, int64_t c0, int64_t rows,
                           int64_t cols, int64_t n, const fd_epilogue *ep)
{
    for (int64_t r = 0; r < rows; r++) {
        float *FD_RESTRICT row = c + r * ldc;
        if (ep->bias) {
            const float *FD_RESTRICT bias = ep->bias + c0;
            for (int64_t j = 0; j < cols; j++) row[j] += bias[j];
        }
        if (ep->relu)
            for (int64_t j = 0; j < cols; j++) row[j] = row[j] < 0.0f ? 0.0f : row[j];
        if (ep->mask) {
            const uint64_t bit0 = (uint64_t)(r0 + r) * (uint64_t)n + (uint64_t)c0;
            for (int64_t j = 0; j < cols; j++) {
                const uint64_t bit = bit0 + (uint64_t)j;
                row[j] *= (ep->mask[bit >> 3] >> (bit & 7)) & 1 ? ep->mask_scale : 0.0f;
            }
        }
    }
}

/* C(rows × cols) := alpha·D + beta·C, D(i, j) at d[i*rs_d + j*cs_d]; beta == 0 never
 * reads C.  Then the epilogue.  (Used by the dot and swapped paths.) */
static void store_tile(float *c, int64_t ldc, int64_t r0, int64_t c0, int64_t rows,
                       int64_t cols, const float *d, int64_t rs_d, int64_t cs_d, float alpha,
                       float beta, int64_t n, const fd_epilogue *ep)
{
    for (int64_t r = 0; r < rows; r++) {
        float *FD_RESTRICT row = c + r * ldc;
        const float *dr = d + r * rs_d;
        if (beta == 0.0f)
            for (int64_t j = 0; j < cols; j++) row[j] = alpha * dr[j * cs_d];
        else
            for (int64_t j = 0; j < cols; j++) row[j] = alpha * dr[j * cs_d] + beta * row[j];
    }
    if (epilogue_active(ep)) apply_epilogue(c, ldc, r0, c0, rows, cols, n, ep);
}

/* ------------------------------------------------------------ generic path */
typedef struct {
    const float *p;
    int64_t rs, cs; /* element (i, j) at p[i*rs + j*cs] */
} fd_view;

typedef struct {
    int64_t m, n, k;   /* computed output: m × n, sum over k                     */
    fd_view a, b;      /* op(A) m×k and op(B) k×n in computed coordinates         */
    float alpha, beta;
    float *c;
    int64_t ldc;
    int transposed;    /* computed (i, j) is C(j, i): the swapped path            */
    int64_t c_n;       /* n of the real C (mask bit stride)                       */
    const fd_epilogue *ep;
} fd_gemm_job;

static int64_t div_up(int64_t a, int64_t b) { return (a + b - 1) / b; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* KC blocks of near-equal size (a multiple of 8, at most P->kc): same for every thread. */
static int64_t kc_block(const fd_gemm_params *P, int64_t k)
{
    int64_t nb = div_up(k, P->kc);
    int64_t kc = (div_up(k, nb) + 7) & ~(int64_t)7;
    return kc < P->kc ? kc : P->kc;
}

/* Computed-space rectangle [i0, i1) × [j0, j1), all k: the Goto loop nest. */
static void run_block(const fd_gemm_params *P, const fd_gemm_job *J, int64_t i0, int64_t i1,
                      int64_t j0, int64_t j1)
{
    const int MR = P->mr, NR = P->nr;
    const int64_t KC = kc_block(P, J->k);
    const int64_t kc_max = min64(J->k, KC);
    const int64_t mc_max = min64(div_up(i1 - i0, MR) * MR, P->mc);
    const int64_t nc_max = min64(div_up(j1 - j0, NR) * NR, P->nc);
    const int64_t a_size = (mc_max * kc_max + 15) & ~(int64_t)15; /* 64-byte multiples */
    const int64_t b_size = (kc_max * nc_max + 15) & ~(int64_t)15;
    float *abuf = pack_buffer((size_t)(a_size + b_size + MR * NR));
    float *bbuf = abuf + a_size;
    float *tbuf = bbuf + b_size; /* transposed path: the MR×NR result tile */
    const int ep = epilogue_active(J->ep);

    for (int64_t jc = j0; jc < j1; jc += P->nc) {
        const int64_t nc = min64(P->nc, j1 - jc);
        for (int64_t pc = 0; pc < J->k; pc += KC) {
            const int64_t kc = min64(KC, J->k - pc);
            const int first = pc == 0, last = pc + kc == J->k;
            /* B(pc.., jc..) kc × nc → NR-wide panels, kc×NR each */
            for (int64_t jr = 0; jr < nc; jr += NR)
                pack_panel(kc, min64(NR, nc - jr), NR,
                           J->b.p + pc * J->b.rs + (jc + jr) * J->b.cs, J->b.rs, J->b.cs,
                           bbuf + jr * kc);
            for (int64_t ic = i0; ic < i1; ic += P->mc) {
                const int64_t mc = min64(P->mc, i1 - ic);
                /* A(ic.., pc..) mc × kc → MR-tall panels, kc×MR each */
                for (int64_t ir = 0; ir < mc; ir += MR)
                    pack_panel(kc, min64(MR, mc - ir), MR,
                               J->a.p + (ic + ir) * J->a.rs + pc * J->a.cs, J->a.cs, J->a.rs,
                               abuf + ir * kc);
                for (int64_t jr = 0; jr < nc; jr += NR) {
                    const int64_t nr = min64(NR, nc - jr), j = jc + jr;
                    const float *bp = bbuf + jr * kc;
                    for (int64_t ir = 0; ir < mc; ir += MR) {
                        const int64_t mr = min64(MR, mc - ir), i = ic + ir;
                        const float *ap = abuf + ir * kc;
                        if (!J->transposed) {
                            float *ct = J->c + i * J->ldc + j;
                            P->ukr(kc, J->alpha, ap, bp, first ? J->beta : 1.0f, ct, J->ldc,
                                   mr, nr);
                            if (last && ep) apply_epilogue(ct, J->ldc, i, j, mr, nr, J->c_n, J->ep);
                        } else {
                            /* tile (mr × nr) lands in C as nr × mr at C(j, i) */
                            P->ukr(kc, 1.0f, ap, bp, 0.0f, tbuf, NR, mr, nr);
                            float *ct = J->c + j * J->ldc + i;
                            if (first) {
                                store_tile(ct, J->ldc, j, i, nr, mr, tbuf, 1, NR, J->alpha,
                                           J->beta, J->c_n, last ? J->ep : NULL);
                            } else {
                                for (int64_t r = 0; r < nr; r++)
                                    for (int64_t q = 0; q < mr; q++)
                                        ct[r * J->ldc + q] += J->alpha * tbuf[q * NR + r];
                                if (last && ep) apply_epilogue(ct, J->ldc, j, i, nr, mr, J->c_n, J->ep);
                            }
                        }
                    }
                }
            }
        }
    }
}

/* Split nt threads into a tm × tn grid over the computed output; minimise the slowest
 * thread's multiply-adds plus its packing (a packed element costs ~8 multiply-adds). */
static void thread_grid(const fd_gemm_params *P, const fd_gemm_job *J, int nt, int *tm, int *tn)
{
    const int64_t mt = div_up(J->m, P->mr), ntl = div_up(J->n, P->nr);
    double best = -1.0;
    for (int a = 1; a <= nt; a++) {
        if (nt % a) continue;
        const int b = nt / a;
        if (a > mt || b > ntl) continue;
        const int64_t rows = div_up(mt, a) * P->mr, cols = div_up(ntl, b) * P->nr;
        const double macs = (double)rows * (double)cols * (double)J->k;
        const double pack = (double)J->k * ((double)rows * (double)div_up(cols, P->nc) + (double)cols);
        const double cost = macs + 8.0 * pack;
        if (best < 0 || cost < best) {
            best = cost;
            *tm = a;
            *tn = b;
        }
    }
}

static void run_job(const fd_gemm_params *P, const fd_gemm_job *J)
{
    int nt = fd_threads_for(J->m * J->n * J->k, FD_GEMM_GRAIN);
    const int64_t tiles = div_up(J->m, P->mr) * div_up(J->n, P->nr);
    if (nt > tiles) nt = (int)tiles;
    int tm = 1, tn = 1;
    while (nt > 1) { /* a count with no grid that fits (e.g. a prime > the tile rows) steps down */
        tm = 0;
        thread_grid(P, J, nt, &tm, &tn);
        if (tm) break;
        nt--;
    }
    if (nt <= 1) {
        run_block(P, J, 0, J->m, 0, J->n);
        return;
    }
    const int64_t mt = div_up(J->m, P->mr), ntl = div_up(J->n, P->nr);
#pragma omp parallel num_threads(nt)
    {
#ifdef _OPENMP
        const int t = omp_get_thread_num();
#else
        const int t = 0;
#endif
        const int ti = t / tn, tj = t % tn;
        const int64_t i0 = min64(J->m, mt * ti / tm * P->mr), i1 = min64(J->m, mt * (ti + 1) / tm * P->mr);
        const int64_t j0 = min64(J->n, ntl * tj / tn * P->nr), j1 = min64(J->n, ntl * (tj + 1) / tn * P->nr);
        if (i0 < i1 && j0 < j1) run_block(P, J, i0, i1, j0, j1);
    }
}

/* ---------------------------------------------------------------- dot path */
static void run_dot(int trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                    int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc,
                    const fd_epilogue *ep)
{
    const fd_gemm_dot_fn dot = dot_kernel(fd_kt->isa);
    const float *bt = b;
    int64_t ldbt = ldb;
    if (!trans_b) { /* B(k×n) → Bt(n×k); rows 64-byte aligned, an odd number of lines
                     * apart so they do not share L1 sets */
        ldbt = ((k + 15) & ~(int64_t)15) | 16;
        float *t = pack_buffer((size_t)(n * ldbt));
        for (int64_t p = 0; p < k; p++)
            for (int64_t j = 0; j < n; j++) t[j * ldbt + p] = b[p * ldb + j];
        bt = t;
    }
    const int64_t blocks = div_up(m, FD_DOT_ROWS);
    int nt = fd_threads_for(m * n * k, FD_GEMM_GRAIN);
    if (nt > blocks) nt = (int)blocks;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
#ifdef _OPENMP
        const int t = omp_get_thread_num(), tcount = omp_get_num_threads();
#else
        const int t = 0, tcount = 1;
#endif
        float d[FD_DOT_ROWS * FD_SKINNY_N];
        for (int64_t blk = blocks * t / tcount; blk < blocks * (t + 1) / tcount; blk++) {
            const int64_t r0 = blk * FD_DOT_ROWS, rows = min64(FD_DOT_ROWS, m - r0);
            dot(rows, n, k, a + r0 * lda, lda, bt, ldbt, d, FD_SKINNY_N);
            store_tile(c + r0 * ldc, ldc, r0, 0, rows, n, d, FD_SKINNY_N, 1, alpha, beta, n, ep);
        }
    }
}

/* ---------------------------------------------------------------- entry */
/* C = beta·C (+ epilogue): k == 0 or alpha == 0, A and B are not read. */
static void scale_only(int64_t m, int64_t n, float beta, float *c, int64_t ldc,
                       const fd_epilogue *ep)
{
    const int nt = fd_threads_for(m * n, 1 << 16);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t r = 0; r < m; r++) {
        float *row = c + r * ldc;
        if (beta == 0.0f)
            for (int64_t j = 0; j < n; j++) row[j] = 0.0f;
        else if (beta != 1.0f)
            for (int64_t j = 0; j < n; j++) row[j] *= beta;
        if (epilogue_active(ep)) apply_epilogue(row, ldc, r, 0, 1, n, n, ep);
    }
}

void fd_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
              const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
              int64_t ldc, const fd_epilogue *ep)
{
    if (m <= 0 || n <= 0) return;
    fd_init();
    if (k <= 0 || alpha == 0.0f) {
        scale_only(m, n, beta, c, ldc, ep);
        return;
    }
    if (n <= FD_SKINNY_N && !trans_a && k >= FD_DOT_MIN_K) {
        run_dot(trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, ep);
        return;
    }
    /* op(A)(i, p) and op(B)(p, j) as strided views */
    const fd_view va = trans_a ? (fd_view){a, 1, lda} : (fd_view){a, lda, 1};
    const fd_view vb = trans_b ? (fd_view){b, 1, ldb} : (fd_view){b, ldb, 1};
    fd_gemm_job J = {m, n, k, va, vb, alpha, beta, c, ldc, 0, n, ep};
    if (n <= FD_SKINNY_N && m > n) { /* Cᵀ = op(B)ᵀ·op(A)ᵀ */
        J.m = n;
        J.n = m;
        J.a = (fd_view){vb.p, vb.cs, vb.rs};
        J.b = (fd_view){va.p, va.cs, va.rs};
        J.transposed = 1;
    }
    run_job(&fd_kt->gemm, &J);
}

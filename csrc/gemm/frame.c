/* frame.c — the portable SGEMM frame (BLIS / Goto): paths, packing, MC/KC/NC blocking,
 * threads.  Only the micro-kernels (ukr_<isa>_<MR>x<NR>.c) are ISA-specific.
 *
 * Paths, chosen from the shape alone (never from the thread count):
 *   dot      trans_a = 0, k >= 16, and n <= 16 or (trans_b and m <= 32): every C element
 *            is a k-vectorised dot product of an A row and a row of Bt = op(B)ᵀ (B itself
 *            when trans_b, else a small n×k transpose made by each thread).  A is read
 *            in place, no lane is wasted on a narrow n, small batches skip packing Bᵀ.
 *   swapped  n <= 16 otherwise (m > n): Cᵀ = op(B)ᵀ·op(A)ᵀ through the micro-kernel, so
 *            the long m side fills the vector lanes; tiles are written back transposed.
 *   generic  the Goto loop nest jc(NC) → pc(KC) → ic(MC) → jr(NR) → ir(MR).
 * In the last two, when the computed A has <= 32 rows and op(B) rows are contiguous,
 * packing B would not pay: the ukr_ub kernel (gemm_ext.h) reads B in place.
 *
 * Threads own disjoint rectangles of C (a tm × tn grid of whole MR×NR tiles) and pack
 * their own panels: no barriers, no shared buffers, and K is never split.  Every C
 * element is summed over the same KC blocks in the same order by the same kernel code
 * whichever thread computes it, so results are bitwise identical for any thread count. */
#include "gemm_ext.h"

#include <stdatomic.h>
#include "../fpenv.h"
#include <stdlib.h>
#include <string.h>

#define FD_SKINNY_N 16          /* n at or below which the dot / swapped paths run   */
#define FD_DOT_MIN_K 16         /* shorter dot products waste lanes: use swapped      */
#define FD_DOT_MAX_M 32         /* trans_b with m <= this: dot path (no B transpose)  */
#define FD_DIRECT_B_MAX_M 32    /* computed m <= this: B read in place, not packed    */
#define FD_GEMM_GRAIN (1 << 18) /* multiply-adds per thread before a 2nd thread helps */
#define FD_DOT_ROWS 24          /* rows per dot-kernel call (local result tile)       */

static const fd_gemm_ext *ext_kernels(int isa)
{
    switch (isa) {
#ifdef FD_HAVE_AVX512
    case FD_ISA_AVX512: return &fd_gemm_ext_avx512;
#endif
#ifdef FD_HAVE_AVX2
    case FD_ISA_AVX2: return &fd_gemm_ext_avx2;
#endif
    default: return &fd_gemm_ext_ref;
    }
}

/* ---------------------------------------------------------- packing buffers */
/* One 64-byte-aligned buffer per thread, grown on demand; only its own thread ever
 * allocates or frees it.  fd_release_buffers() frees the caller's buffer and bumps
 * release_gen: every other thread frees its own at its next GEMM (pool helpers at once
 * if idle, see fd_pool_kick), so no buffer is freed under a running GEMM.  Allocation
 * failure is reported (NULL), never fatal. */
typedef struct {
    float *p;
    size_t cap; /* floats */
    uint32_t gen;
} fd_pack_buf;

static _Atomic uint32_t release_gen = 0;
static _Thread_local fd_pack_buf my_buf = {NULL, 0, 0};

void fd_bf16_release_thread_buffer(void); /* bf16.c */

void fd_release_thread_buffers(void)
{
    fd_bf16_release_thread_buffer();
    free(my_buf.p);
    my_buf.p = NULL;
    my_buf.cap = 0;
    my_buf.gen = atomic_load(&release_gen);
}

static float *pack_buffer(size_t floats)
{
    const uint32_t g = atomic_load_explicit(&release_gen, memory_order_relaxed);
    if (my_buf.gen != g) fd_release_thread_buffers();
    if (my_buf.cap < floats) {
        static _Atomic int hooked = 0;
        if (!atomic_load_explicit(&hooked, memory_order_relaxed)) {
            fd_pool_set_thread_cleanup(fd_release_thread_buffers);
            atomic_store(&hooked, 1);
        }
        free(my_buf.p);
        my_buf.p = NULL;
        my_buf.cap = 0;
        if (floats > (SIZE_MAX - 63) / sizeof(float)) return NULL;
        const size_t bytes = (floats * sizeof(float) + 63) & ~(size_t)63;
        float *p = aligned_alloc(64, bytes);
        if (!p) return NULL;
        my_buf.p = p;
        my_buf.cap = floats;
    }
    return my_buf.p;
}

void fd_release_buffers(void)
{
    atomic_fetch_add(&release_gen, 1);
    fd_release_thread_buffers();
    fd_pool_kick();
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

/* GCC turns short copy/zero loops into memcpy/memset calls: one call per 56–128-byte
 * panel row costs as much as the copy itself. */
#if defined(__GNUC__) && !defined(__clang__)
#define FD_NO_LIBCALLS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define FD_NO_LIBCALLS
#endif

/* Panels are kc × W, one cache line more apart than their size: with a power-of-two
 * size, the rows a copy writes across the panels would all land in the same L1 sets.
 * (With NR a multiple of 16, B panels stay 64-byte aligned for aligned vector loads.) */
static int64_t panel_stride(int64_t kc, int W) { return kc * W + 16; }

/* Panels of a block of op(X) (extent × kc, element (i, p) at src[p*sk + i*sw]), W wide:
 * panel q at dst + q*panel_stride, dst[q*panel_stride + p*W + i] = X(q*W + i, p), zero
 * past extent.  A blocks give MR-wide panels (op(A) slivers), B blocks NR-wide ones. */
FD_NO_LIBCALLS static void pack_block(int64_t kc, int64_t extent, int W,
                                      const float *FD_RESTRICT src, int64_t sk, int64_t sw,
                                      float *FD_RESTRICT dst)
{
    const int64_t full = extent / W, rem = extent % W, pstride = panel_stride(kc, W);
    if (sw == 1) { /* source rows run across the panels: read each one once, in order */
        for (int64_t p = 0; p < kc; p++) {
            const float *s = src + p * sk;
            float *d = dst + p * W;
            for (int64_t q = 0; q < full; q++)
                for (int i = 0; i < W; i++) d[q * pstride + i] = s[q * W + i];
            if (rem) {
                for (int64_t i = 0; i < rem; i++) d[full * pstride + i] = s[full * W + i];
                for (int64_t i = rem; i < W; i++) d[full * pstride + i] = 0.0f;
            }
        }
        return;
    }
    for (int64_t q = 0; q * W < extent; q++) {
        const float *s = src + q * W * sw;
        float *d = dst + q * pstride;
        const int64_t w = q < full ? W : rem;
        if (sk == 1) { /* each panel column is contiguous in src: transpose 4×4 blocks,
                        * a whole 64-byte line of each source row at a time (rows 4 KiB
                        * apart share L1 sets: a line must not be needed twice) */
            const int64_t w4 = w & ~(int64_t)3;
            int64_t p = 0;
            for (; p + 16 <= kc; p += 16)
                for (int64_t i = 0; i < w4; i += 4)
                    for (int u = 0; u < 16; u += 4)
                        transpose4(s + i * sw + p + u, sw, d + (p + u) * W + i, W);
            for (; p + 4 <= kc; p += 4)
                for (int64_t i = 0; i < w4; i += 4) transpose4(s + i * sw + p, sw, d + p * W + i, W);
            for (; p < kc; p++)
                for (int64_t i = 0; i < w4; i++) d[p * W + i] = s[i * sw + p];
            for (int64_t i = w4; i < w; i++)
                for (int64_t r = 0; r < kc; r++) d[r * W + i] = s[i * sw + r];
        } else {
            for (int64_t p = 0; p < kc; p++)
                for (int64_t i = 0; i < w; i++) d[p * W + i] = s[p * sk + i * sw];
        }
        for (int64_t p = 0; p < kc; p++)
            for (int64_t i = w; i < W; i++) d[p * W + i] = 0.0f;
    }
}

/* ---------------------------------------------------------------- epilogue */
static int epilogue_active(const fd_epilogue *ep)
{
    return ep && (ep->bias || ep->relu || ep->mask || ep->scale || ep->shift);
}

/* C(r0.., c0..) rows × cols, already alpha·acc + beta·C: + bias[c], *scale[c] + shift[c],
 * relu, mask.  n is the full width of C (mask bit of (r, c): mask_bit0 + R*n + c, R = r or
 * r / mask_row_group). */
void fd_gemm_apply_epilogue(float *c, int64_t ldc, int64_t r0, int64_t c0, int64_t rows,
                            int64_t cols, int64_t n, const fd_epilogue *ep);
#define apply_epilogue fd_gemm_apply_epilogue
void fd_gemm_apply_epilogue(float *c, int64_t ldc, int64_t r0, int64_t c0, int64_t rows,
                            int64_t cols, int64_t n, const fd_epilogue *ep)
{
    const int64_t g = ep->mask_row_group;
    for (int64_t r = 0; r < rows; r++) {
        float *FD_RESTRICT row = c + r * ldc;
        if (ep->bias) {
            const float *FD_RESTRICT bias = ep->bias + c0;
            for (int64_t j = 0; j < cols; j++) row[j] += bias[j];
        }
        if (ep->scale) {
            const float *FD_RESTRICT sc = ep->scale + c0;
            for (int64_t j = 0; j < cols; j++) row[j] *= sc[j];
        }
        if (ep->shift) {
            const float *FD_RESTRICT sh = ep->shift + c0;
            for (int64_t j = 0; j < cols; j++) row[j] += sh[j];
        }
        if (ep->relu)
            for (int64_t j = 0; j < cols; j++) /* as fd_relu_f32: +0 for x <= 0, NaN kept */
                row[j] = row[j] > 0.0f ? row[j] : (row[j] != row[j] ? row[j] : 0.0f);
        if (ep->mask) {
            const uint64_t R = (uint64_t)(g > 0 ? (r0 + r) / g : r0 + r);
            const uint64_t bit0 = (uint64_t)ep->mask_bit0 + R * (uint64_t)n + (uint64_t)c0;
            if ((bit0 & 7) == 0) { /* byte-aligned run: the ISA's vector mask kernel */
                fd_kt->dropout_apply(cols, row, row, ep->mask + (bit0 >> 3), ep->mask_scale);
                continue;
            }
            for (int64_t j = 0; j < cols; j++) {
                const uint64_t bit = bit0 + (uint64_t)j;
                row[j] = (ep->mask[bit >> 3] >> (bit & 7)) & 1 ? row[j] * ep->mask_scale : 0.0f;
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
    int direct_b;      /* op(B) rows contiguous and too few rows of A to pay for
                          packing B: x->ukr_ub reads B in place                  */
    const fd_gemm_ext *x;
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

/* One B panel (kc × NR, computed columns [j, j+nr); packed, or B itself when direct_b)
 * against the packed A panels of
 * computed rows [ic, ic+mc).  Transposed jobs go through the local tile tbuf (MR4 × NR,
 * MR4 = MR rounded up to 4) and its transpose tt (NR × MR4). */
static void panel_tiles(const fd_gemm_params *P, const fd_gemm_job *J, const float *abuf,
                        const float *bp, int64_t ic, int64_t mc, int64_t j, int64_t nr,
                        int64_t kc, int first, int last, float *tbuf)
{
    const fd_gemm_ukr_ub_fn ukr_ub = J->direct_b ? J->x->ukr_ub : NULL;
    const int MR = P->mr, NR = P->nr, MR4 = (P->mr + 3) & ~3;
    const int ep = last && epilogue_active(J->ep);
    for (int64_t ir = 0; ir < mc; ir += MR) {
        const int64_t mr = min64(MR, mc - ir), i = ic + ir;
        const float *ap = abuf + ir / MR * panel_stride(kc, MR);
        if (!J->transposed) {
            float *ct = J->c + i * J->ldc + j;
            if (ep && J->x->ukr_ep) { /* bias, scale/shift, relu, mask in registers */
                const fd_tile_ep te = {J->ep, i, j, J->c_n};
                J->x->ukr_ep(kc, J->alpha, ap, bp, ukr_ub ? J->b.rs : 0, ukr_ub != NULL,
                             first ? J->beta : 1.0f, ct, J->ldc, mr, nr, &te);
                continue;
            }
            if (ukr_ub)
                ukr_ub(kc, J->alpha, ap, bp, J->b.rs, first ? J->beta : 1.0f, ct, J->ldc, mr, nr);
            else
                P->ukr(kc, J->alpha, ap, bp, first ? J->beta : 1.0f, ct, J->ldc, mr, nr);
            if (ep) apply_epilogue(ct, J->ldc, i, j, mr, nr, J->c_n, J->ep);
            continue;
        }
        /* computed tile (mr × nr) is C(j.., i..) transposed: nr × mr */
        float *tt = tbuf + MR4 * NR;
        if (ukr_ub)
            ukr_ub(kc, 1.0f, ap, bp, J->b.rs, 0.0f, tbuf, NR, mr, nr);
        else
            P->ukr(kc, 1.0f, ap, bp, 0.0f, tbuf, NR, mr, nr);
        for (int64_t q = 0; q < mr; q += 4)
            for (int64_t r = 0; r < nr; r += 4) transpose4(tbuf + q * NR + r, NR, tt + r * MR4 + q, MR4);
        float *ct = J->c + j * J->ldc + i;
        if (first) {
            store_tile(ct, J->ldc, j, i, nr, mr, tt, MR4, 1, J->alpha, J->beta, J->c_n,
                       last ? J->ep : NULL);
        } else {
            for (int64_t r = 0; r < nr; r++)
                for (int64_t q = 0; q < mr; q++) ct[r * J->ldc + q] += J->alpha * tt[r * MR4 + q];
            if (ep) apply_epilogue(ct, J->ldc, j, i, nr, mr, J->c_n, J->ep);
        }
    }
}

/* Computed-space rectangle [i0, i1) × [j0, j1), all k: the Goto loop nest. */
static int run_block(const fd_gemm_params *P, const fd_gemm_job *J, int64_t i0, int64_t i1,
                      int64_t j0, int64_t j1)
{
    const int MR = P->mr, NR = P->nr, MR4 = (P->mr + 3) & ~3;
    const int64_t KC = kc_block(P, J->k);
    const int64_t kc_max = min64(J->k, KC);
    const int64_t mc_max = min64(div_up(i1 - i0, MR) * MR, P->mc);
    const int64_t nc_max = min64(div_up(j1 - j0, NR) * NR, P->nc);
    const int64_t a_size = (mc_max / MR * panel_stride(kc_max, MR) + 15) & ~(int64_t)15;
    const int64_t b_size = J->direct_b ? 0 : nc_max / NR * panel_stride(kc_max, NR);
    float *abuf = pack_buffer((size_t)(a_size + b_size + 2 * MR4 * NR));
    if (!abuf) return -1;
    float *bbuf = abuf + a_size;
    float *tbuf = bbuf + b_size;

    for (int64_t jc = j0; jc < j1; jc += P->nc) {
        const int64_t nc = min64(P->nc, j1 - jc);
        for (int64_t pc = 0; pc < J->k; pc += KC) {
            const int64_t kc = min64(KC, J->k - pc);
            const int first = pc == 0, last = pc + kc == J->k;
            const float *bsrc = J->b.p + pc * J->b.rs + jc; /* direct_b: cs == 1 */
            /* B(pc.., jc..) kc × nc → NR-wide panels, kc×NR each */
            if (!J->direct_b)
                pack_block(kc, nc, NR, J->b.p + pc * J->b.rs + jc * J->b.cs, J->b.rs, J->b.cs, bbuf);
            for (int64_t ic = i0; ic < i1; ic += P->mc) {
                const int64_t mc = min64(P->mc, i1 - ic);
                /* A(ic.., pc..) mc × kc → MR-tall panels, kc×MR each */
                pack_block(kc, mc, MR, J->a.p + ic * J->a.rs + pc * J->a.cs, J->a.cs, J->a.rs, abuf);
                for (int64_t jr = 0; jr < nc; jr += NR)
                    panel_tiles(P, J, abuf,
                                J->direct_b ? bsrc + jr : bbuf + jr / NR * panel_stride(kc, NR),
                                ic, mc, jc + jr, min64(NR, nc - jr), kc, first, last, tbuf);
            }
        }
    }
    return 0;
}

/* Split nt threads into a tm × tn grid over the computed output; minimise the slowest
 * thread's multiply-adds plus its packing (a packed element costs ~8 multiply-adds). */
static double thread_grid(const fd_gemm_params *P, const fd_gemm_job *J, int nt, int *tm, int *tn)
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
    return best;
}

typedef struct {
    const fd_gemm_params *P;
    const fd_gemm_job *J;
    int tm, tn;
    int err;
} fd_cells;

static void cell_chunk(void *vc, int64_t cell)
{
    fd_cells *C = vc;
    const fd_gemm_params *P = C->P;
    const fd_gemm_job *J = C->J;
    const int64_t mt = div_up(J->m, P->mr), ntl = div_up(J->n, P->nr);
    const int64_t ti = cell / C->tn, tj = cell % C->tn;
    const int64_t i0 = min64(J->m, mt * ti / C->tm * P->mr);
    const int64_t i1 = min64(J->m, mt * (ti + 1) / C->tm * P->mr);
    const int64_t j0 = min64(J->n, ntl * tj / C->tn * P->nr);
    const int64_t j1 = min64(J->n, ntl * (tj + 1) / C->tn * P->nr);
    if (i0 < i1 && j0 < j1 && run_block(P, J, i0, i1, j0, j1))
        __atomic_store_n(&C->err, 1, __ATOMIC_RELAXED);
}

/* The output is cut into a grid of cells (whole MR×NR tiles), a few per thread so that a
 * thread that starts late is not waited for (fd_parallel); cells are independent. */
static int run_job(const fd_gemm_params *P, const fd_gemm_job *J)
{
    int nt = fd_threads_for(J->m * J->n * J->k, FD_GEMM_GRAIN);
    const int64_t tiles = div_up(J->m, P->mr) * div_up(J->n, P->nr);
    if (nt > tiles) nt = (int)tiles;
    if (nt <= 1) return run_block(P, J, 0, J->m, 0, J->n);
    int tm = 1, tn = 1;
    double cost = -1.0;
    while (nt > 1) { /* a count with no grid that fits (e.g. a prime > the tile rows) steps down */
        tm = 0;
        cost = thread_grid(P, J, nt, &tm, &tn);
        if (tm) break;
        nt--;
    }
    if (nt <= 1) return run_block(P, J, 0, J->m, 0, J->n);
    /* A few cells per thread, so that a thread that starts late (another pool holds its
     * core) costs at most a cell: taken when the extra packing keeps the slowest thread
     * within 4% of one cell per thread (the cost model of thread_grid). */
    const double work = (double)J->m * (double)J->n * (double)J->k;
    for (int mult = 4; mult >= 2; mult /= 2) {
        const int cells = nt * mult;
        if ((int64_t)cells > tiles || work / cells < FD_GEMM_GRAIN / 2) continue;
        int a = 0, b = 0;
        const double c = thread_grid(P, J, cells, &a, &b);
        if (a && c * mult <= 1.04 * cost) {
            tm = a;
            tn = b;
            break;
        }
    }
    fd_cells C = {P, J, tm, tn, 0};
    fd_parallel(nt, (int64_t)tm * tn, cell_chunk, &C);
    return C.err ? -1 : 0;
}

/* ---------------------------------------------------------------- dot path */
/* Rows [r0, r1) × columns [c0, c1) of C through the dot kernel, in tiles of FD_DOT_ROWS
 * rows × FD_SKINNY_N columns (one column chunk of Bt stays in cache across the rows). */
static void dot_range(fd_gemm_dot_fn dot, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                      int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
                      const float *bt, int64_t ldbt, float beta, float *c, int64_t ldc,
                      const fd_epilogue *ep)
{
    float d[FD_DOT_ROWS * FD_SKINNY_N];
    for (int64_t j = c0; j < c1; j += FD_SKINNY_N) {
        const int64_t cols = min64(FD_SKINNY_N, c1 - j);
        for (int64_t r = r0; r < r1; r += FD_DOT_ROWS) {
            const int64_t rows = min64(FD_DOT_ROWS, r1 - r);
            dot(rows, cols, k, a + r * lda, lda, bt + j * ldbt, ldbt, d, FD_SKINNY_N);
            store_tile(c + r * ldc + j, ldc, r, j, rows, cols, d, FD_SKINNY_N, 1, alpha, beta, n, ep);
        }
    }
}

/* t[j*ldt + p] = b[p*ldb + j] for j < n, p < k */
static void transpose_rows(const float *b, int64_t ldb, int64_t n, int64_t k, float *t,
                           int64_t ldt)
{
    const int64_t n4 = n & ~(int64_t)3, k4 = k & ~(int64_t)3;
    for (int64_t p = 0; p < k4; p += 4)
        for (int64_t j = 0; j < n4; j += 4) transpose4(b + p * ldb + j, ldb, t + j * ldt + p, ldt);
    for (int64_t j = 0; j < n; j++)
        for (int64_t p = j < n4 ? k4 : 0; p < k; p++) t[j * ldt + p] = b[p * ldb + j];
}

/* C = alpha·A·op(B) + beta·C with every element a dot product of an A row and a row of
 * Bt = op(B)ᵀ (B itself when trans_b; else each thread transposes B into its own buffer,
 * once per call, n <= 16 here: cheaper than sharing one, which costs a barrier and
 * cross-core reads).  Chunks are runs of rows (in sixes, n <= 16) or of 16-column chunks. */
typedef struct {
    fd_gemm_dot_fn dot;
    int trans_b, split_rows;
    int64_t m, n, k, units, nchunks;
    float alpha, beta;
    const float *a, *b;
    int64_t lda, ldb, ldc;
    float *c;
    const fd_epilogue *ep;
    uint64_t id;
    int err;
} fd_dot_job;

static _Atomic uint64_t dot_job_ids = 1;
static _Thread_local uint64_t dot_bt_id = 0; /* the job whose Bt this thread holds */
static _Thread_local const float *dot_bt_ptr = NULL; /* ... and where */

static void dot_chunk(void *vj, int64_t q)
{
    fd_dot_job *D = vj;
    const float *bt = D->b;
    int64_t ldbt = D->ldb;
    if (!D->trans_b) { /* Bt rows 64-byte aligned, an odd number of lines apart (no L1
                        * set shared by all of them) */
        ldbt = ((D->k + 15) & ~(int64_t)15) | 16;
        float *t = pack_buffer((size_t)(D->n * ldbt));
        if (!t) {
            dot_bt_id = 0;
            __atomic_store_n(&D->err, 1, __ATOMIC_RELAXED);
            return;
        }
        if (dot_bt_id != D->id || dot_bt_ptr != t) {
            transpose_rows(D->b, D->ldb, D->n, D->k, t, ldbt);
            dot_bt_id = D->id;
            dot_bt_ptr = t;
        }
        bt = t;
    }
    const int64_t u0 = D->units * q / D->nchunks, u1 = D->units * (q + 1) / D->nchunks;
    if (u0 >= u1) return;
    if (D->split_rows)
        dot_range(D->dot, u0 * 6, min64(D->m, u1 * 6), 0, D->n, D->n, D->k, D->alpha, D->a,
                  D->lda, bt, ldbt, D->beta, D->c, D->ldc, D->ep);
    else
        dot_range(D->dot, 0, D->m, u0 * FD_SKINNY_N, min64(D->n, u1 * FD_SKINNY_N), D->n, D->k,
                  D->alpha, D->a, D->lda, bt, ldbt, D->beta, D->c, D->ldc, D->ep);
}

static int run_dot(fd_gemm_dot_fn dot, int trans_b, int64_t m, int64_t n, int64_t k,
                   float alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
                   float beta, float *c, int64_t ldc, const fd_epilogue *ep)
{
    const int split_rows = n <= FD_SKINNY_N;
    const int64_t units = split_rows ? div_up(m, 6) : div_up(n, FD_SKINNY_N);
    int nt = fd_threads_for(m * n * k, FD_GEMM_GRAIN);
    if (nt > units) nt = (int)units;
    /* chunks: a few per thread, but a transposed B is made once per thread anyway */
    int64_t nchunks = nt > 1 ? min64(units, 4 * (int64_t)nt) : 1;
    fd_dot_job D = {dot, trans_b, split_rows, m, n, k, units, nchunks, alpha, beta, a, b,
                    lda, ldb, ldc, c, ep, atomic_fetch_add(&dot_job_ids, 1), 0};
    fd_parallel(nt, nchunks, dot_chunk, &D);
    dot_bt_id = 0;
    return D.err ? -1 : 0;
}

/* ---------------------------------------------------------------- entry */
/* C = beta·C (+ epilogue): k == 0 or alpha == 0, A and B are not read. */
typedef struct {
    int64_t n, ldc;
    float beta;
    float *c;
    const fd_epilogue *ep;
} fd_scale_job;

static void scale_rows(void *vj, int64_t r0, int64_t r1)
{
    const fd_scale_job *S = vj;
    for (int64_t r = r0; r < r1; r++) {
        float *row = S->c + r * S->ldc;
        if (S->beta == 0.0f)
            for (int64_t j = 0; j < S->n; j++) row[j] = 0.0f;
        else if (S->beta != 1.0f)
            for (int64_t j = 0; j < S->n; j++) row[j] *= S->beta;
        if (epilogue_active(S->ep)) apply_epilogue(row, S->ldc, r, 0, 1, S->n, S->n, S->ep);
    }
}

static void scale_only(int64_t m, int64_t n, float beta, float *c, int64_t ldc,
                       const fd_epilogue *ep)
{
    fd_scale_job S = {n, ldc, beta, c, ep};
    fd_parallel_range(m, div_up(1 << 16, n), 1, scale_rows, &S);
}

/* m == 1 (batch-1 inference): the row kernel over the same KC blocks as the micro-kernel
 * path — bitwise equal to that row in any batch.  Columns split across threads in
 * FD_ROW_COLS chunks when the job is large enough (columns are independent). */
#define FD_ROW_COLS 256
typedef struct {
    const fd_gemm_params *P;
    const fd_gemm_job *J;
    int64_t KC;
} fd_row_job;

static void row_chunk(void *vj, int64_t q)
{
    const fd_row_job *R = vj;
    const fd_gemm_job *J = R->J;
    const int64_t j0 = q * FD_ROW_COLS, w = min64(FD_ROW_COLS, J->n - j0);
    for (int64_t pc = 0; pc < J->k; pc += R->KC) {
        const int64_t kc = min64(R->KC, J->k - pc);
        J->x->row(kc, J->alpha, J->a.p + pc, J->b.p + pc * J->b.rs + j0, J->b.rs,
                  pc == 0 ? J->beta : 1.0f, J->c + j0, w);
    }
    if (epilogue_active(J->ep)) apply_epilogue(J->c + j0, J->ldc, 0, j0, 1, w, J->c_n, J->ep);
}

static void run_row(const fd_gemm_params *P, const fd_gemm_job *J)
{
    const int64_t chunks = div_up(J->n, FD_ROW_COLS);
    int nt = fd_threads_for(J->k * J->n, FD_GEMM_GRAIN);
    fd_row_job R = {P, J, kc_block(P, J->k)};
    fd_parallel(nt, chunks, row_chunk, &R);
}

static int sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                 const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                 int64_t ldc, const fd_epilogue *ep)
{
    if (k <= 0 || alpha == 0.0f) {
        scale_only(m, n, beta, c, ldc, ep);
        return 0;
    }
    const fd_kernel_table *kt = fd_kt;
    const fd_gemm_ext *x = ext_kernels(kt->isa);
    if (!trans_a && k >= FD_DOT_MIN_K && (n <= FD_SKINNY_N || (trans_b && m <= FD_DOT_MAX_M)))
        return run_dot(x->dot, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, ep);
    /* op(A)(i, p) and op(B)(p, j) as strided views */
    const fd_view va = trans_a ? (fd_view){a, 1, lda} : (fd_view){a, lda, 1};
    const fd_view vb = trans_b ? (fd_view){b, 1, ldb} : (fd_view){b, ldb, 1};
    fd_gemm_job J = {m, n, k, va, vb, alpha, beta, c, ldc, 0, 0, x, n, ep};
    if (n <= FD_SKINNY_N && m > n) { /* Cᵀ = op(B)ᵀ·op(A)ᵀ */
        J.m = n;
        J.n = m;
        J.a = (fd_view){vb.p, vb.cs, vb.rs};
        J.b = (fd_view){va.p, va.cs, va.rs};
        J.transposed = 1;
    }
    J.direct_b = J.m <= FD_DIRECT_B_MAX_M && J.b.cs == 1;
    if (!J.transposed && J.m == 1 && J.a.cs == 1 && J.b.cs == 1) {
        run_row(&kt->gemm, &J);
        return 0;
    }
    return run_job(&kt->gemm, &J);
}

int fd_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
             const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
             int64_t ldc, const fd_epilogue *ep)
{
    if (m <= 0 || n <= 0) return 0;
    fd_init();
    const unsigned fp = fd_fp_enter();
    const int rc = sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, ep);
    fd_fp_exit(fp);
    return rc;
}

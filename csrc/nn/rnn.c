/* rnn.c — SimpleRNN / LSTM / GRU forward and backward through time (see rnn.h).
 *
 * The time loop runs per chunk of batch rows: a sample's recurrence never reads another
 * sample, so chunks are independent and run in parallel with no barrier.  The chunking
 * depends on m only (never on the thread count) and every GEMM's path depends only on its
 * shape, so results are bitwise identical for any thread count.  The per-step products
 * call the GEMM micro-kernel directly (fd_kt->gemm.ukr) on operands packed here, one
 * thread per chunk.
 *
 * Workspace (floats, time-major, row (t, b) = t*m + b):
 *   xt    [Gi][T][m][F]  inputs in processing order (reversed if go_backwards), times the
 *                        input dropout mask of part k; backward reuses it for dx parts
 *   gates [T][m][G*u]    pre-activations -> gate values (forward) -> dz (backward)
 *   hs    [T][m][u]      h_t (a masked step carries h_{t-1})
 *   cs    [T][m][u]      LSTM c_t
 *   rh    [T][m][u]      GRU: reset_after: h_{t-1}·U_h + b_rh (-> d rh in backward);
 *                        reset_before: A3 = r ⊙ h̃_{t-1} (the input of the U_h GEMM)
 *   hd    [Gr][T][m][u]  GRU: h_{t-1} ⊙ recurrent mask g (scaled), recurrent dropout only
 *   dwc   [chunk][KB][G*u]  LSTM / SimpleRNN: the chunk's [dW; db; dU] (KB = F + 1 + u),
 *                        summed in the time loop (below); dwb [KB][G*u] their sum
 *   wa, wb, rowb [chunk] the step's packed [x̃_t | 1 | h̃_{t-1}]ᵀ and dz_t panels, a row
 *   dm    [Gr][m][u]     the recurrent masks as floats (0 or 1/(1-rate))
 *   beff  [G*u]          the bias row of the packed weights (GRU reset_after: b_in +
 *                        [b_rz, b_rr, 0])
 *   bpack [G+1]          packed micro-kernel panels: forward [W_g; b_g; U_g] per gate (the
 *                        input projection is fused into each step's product; slot G: GRU's
 *                        [b_rh; U_h] or U_h); backward U_gᵀ per gate, or (LSTM, SimpleRNN
 *                        without recurrent masks) Uᵀ as one (G·u) × u operand
 *   apack [chunk]        the packed [x_t | 1 | h̃_{t-1}] (forward) or dz_t (backward) rows
 *   dh, dhp, dc, tmp [m][u], rt [m][4u]   backward carries and row scratch
 * Backward runs dh_{t-1} = dz_t·Uᵀ per step; LSTM / SimpleRNN add the step's
 * [x̃_t | 1 | h̃_{t-1}]ᵀ·dz_t to the chunk's [dW; db; dU] in the same loop (step_wgrad),
 * GRU keeps dz_t in gates for dW, dU as GEMMs over all T·m rows after the loop, db their
 * column sums. */
#include "rnn.h"
#include "rnn_gates_impl.h"
#include "../internal.h"
#include "../fpenv.h"

#include <string.h>

#define FD_RNN_RB 64   /* target rows per chunk */

typedef struct {
    float *xt, *gates, *hs, *cs, *rh, *hd, *dm, *beff, *dh, *dhp, *dc, *tmp, *rt;
    float *dwc, *dwb;   /* LSTM / SimpleRNN: per chunk / summed (KB × G·u) [dW; db; dU] */
    float *wa, *wb, *rowb;   /* [chunk] weight-gradient panels of the step, a row       */
    float *bpack;   /* [G] packed U_g (forward) or U_gᵀ (backward) micro-kernel panels  */
    float *apack;   /* [chunk] packed A panels of the step's recurrent product          */
    int64_t bstride, astride;
} rnn_ws;

/* Packed panels of r rows take ceil(r / mr) * mr rows for the micro-kernel in use
 * (14x32 on AVX-512, 6x16 on AVX2, 6x8 portable); the workspace is sized for any of them
 * (the path may change between allocation and call): rows padded to pad_mr, columns to
 * multiples of 32 (every nr divides 32). */
#define FD_RNN_MR_BOUND 16
#define FD_RNN_NR_ALL 32
static inline int64_t round_up(int64_t x, int64_t q) { return (x + q - 1) / q * q; }
static inline int64_t pad_mr(int64_t x) { return round_up(x, FD_RNN_MR_BOUND) + FD_RNN_MR_BOUND; }

static int gates_of(int cell) { return cell == FD_RNN_LSTM ? 4 : cell == FD_RNN_GRU ? 3 : 1; }

/* LSTM / SimpleRNN: backward adds each step's A_gᵀ · dz_g to the chunk's [dW; db; dU],
 * A_g = [x̃_t | 1 | h̃_{t-1}] the step's product rows: one A for all gates without masks
 * per gate, else one per gate (Gw = G). */
static int64_t xh_parts(const fd_rnn_desc *d)
{
    if (d->cell == FD_RNN_GRU) return 0;
    return (d->n_in_masks > 1 || d->n_rec_masks > 0) ? gates_of(d->cell) : 1;
}

static void chunking(int64_t m, int64_t *nchunks, int64_t *rows)
{
    int64_t nc = (m + FD_RNN_RB - 1) / FD_RNN_RB;
    if (nc < 1) nc = 1;
    int64_t r = (m + nc - 1) / nc;
    r = (r + 7) / 8 * 8;
    nc = (m + r - 1) / r;
    *nchunks = nc;
    *rows = r;
}

static int64_t layout(const fd_rnn_desc *d, float *base, rnn_ws *L)
{
    const int64_t m = d->m, T = d->T, F = d->F, u = d->u, G = gates_of(d->cell);
    const int64_t Gi = d->n_in_masks > 1 ? d->n_in_masks : 1, Gr = d->n_rec_masks;
    int64_t off = 0;
#define TAKE(field, count) do { if (L) L->field = base + off; \
        off += ((int64_t)(count) + 15) / 16 * 16; } while (0)
    TAKE(xt, Gi * T * m * F);
    TAKE(gates, T * m * G * u);
    TAKE(hs, T * m * u);
    TAKE(cs, d->cell == FD_RNN_LSTM ? T * m * u : 0);
    TAKE(rh, d->cell == FD_RNN_GRU ? T * m * u : 0);
    TAKE(hd, d->cell == FD_RNN_GRU ? Gr * T * m * u : 0);
    TAKE(dwb, d->cell == FD_RNN_GRU ? 0 : (1 + F + u) * G * u);
    TAKE(dm, Gr * m * u);
    TAKE(beff, G * u);
    TAKE(dh, m * u);
    TAKE(dhp, m * u);
    TAKE(dc, m * u);
    TAKE(tmp, m * u > F ? m * u : F);
    TAKE(rt, m * 4 * u);
    {
        const int64_t KB = 1 + F + u;   /* [1 | x_t | h_{t-1}]: bias, input, recurrent */
        const int64_t bs = round_up(u, FD_RNN_NR_ALL) * KB;
        int64_t nc, rows;
        chunking(m, &nc, &rows);
        const int64_t KA = KB > G * u ? KB : G * u;   /* backward: dz_t (G·u wide) */
        const int64_t as = pad_mr(rows) * KA;
        if (L) { L->bstride = bs; L->astride = as; }
        /* backward without recurrent masks: Uᵀ as one (G·u) × u operand */
        const int64_t bsu = round_up(u, FD_RNN_NR_ALL) * G * u;
        TAKE(bpack, (G + 1) * bs > bsu ? (G + 1) * bs : bsu);
        TAKE(apack, nc * as);
        const int lg = d->cell != FD_RNN_GRU;
        TAKE(dwc, lg ? nc * KB * G * u : 0);
        TAKE(wa, lg ? nc * round_up((KB + FD_RNN_MR_BOUND) * rows, 16) : 0);
        TAKE(wb, lg ? nc * round_up((G * u + G * FD_RNN_NR_ALL) * rows, 16) : 0);
        TAKE(rowb, lg ? nc * round_up(KB + FD_RNN_MR_BOUND, 16) : 0);
    }
#undef TAKE
    return off;
}

int64_t fd_rnn_workspace_floats(const fd_rnn_desc *d) { return layout(d, NULL, NULL); }

static const fd_rnn_gates *gates_kt(void)
{
    switch (fd_isa_get()) {
#ifdef FD_HAVE_AVX512
    case FD_ISA_AVX512: return &fd_rnn_gates_avx512;
#endif
#ifdef FD_HAVE_AVX2
    case FD_ISA_AVX2: return &fd_rnn_gates_avx2;
#endif
    default: return &fd_rnn_gates_ref;
    }
}

void fd_rnn_act(int kind, int64_t n, float *y, const float *x)
{
    unsigned fp = fd_fp_enter();
    gates_kt()->act(kind, n, y, x);
    fd_fp_exit(fp);
}

static inline int bit_of(const uint8_t *p, int64_t i) { return (p[i >> 3] >> (i & 7)) & 1; }

/* out[j] = bit (start + j) ? scale : 0, j < n */
static void mask_row(const uint8_t *mk, int64_t start, int64_t n, float scale, float *out)
{
    for (int64_t j = 0; j < n; j++) out[j] = bit_of(mk, start + j) ? scale : 0.0f;
}

static inline void gemm(int ta, int tb, int64_t m, int64_t n, int64_t k, const float *a,
                        int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                        int64_t ldc)
{
    fd_sgemm(ta, tb, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc, NULL);
}

/* ------------------------------------------- the recurrent product, U pre-packed */
/* Rows [k0, k0+kr) of op(B) (element (p, j) at B[p*sk + j*sn]; B NULL: zeros), n
 * columns, as NR-wide micro-kernel panels of kt rows: panel q at dst + q*kt*NR, row p at
 * + p*NR (zero past n).  U (and W, the bias) are packed once per call. */
static void pack_b(int64_t k0, int64_t kr, int64_t kt, int64_t n, const float *B, int64_t sk,
                   int64_t sn, int NR, float *dst)
{
    for (int64_t q = 0; q * NR < n; q++) {
        const int64_t w = n - q * NR < NR ? n - q * NR : NR;
        for (int64_t p = 0; p < kr; p++) {
            float *FD_RESTRICT d = dst + (q * kt + k0 + p) * NR;
            if (!B) {
                for (int64_t i = 0; i < NR; i++) d[i] = 0.0f;
                continue;
            }
            const float *FD_RESTRICT b = B + p * sk + q * NR * sn;
            if (sn == 1) for (int64_t i = 0; i < w; i++) d[i] = b[i];
            else for (int64_t i = 0; i < w; i++) d[i] = b[i * sn];
            for (int64_t i = w; i < NR; i++) d[i] = 0.0f;
        }
    }
}

/* Columns [k0, k0+kc) of the packed A (m rows; MR-tall panels of kt columns: panel r at
 * dst + r*kt*MR, column p at + p*MR; zero rows past m) from A (row stride lda; NULL: a
 * column of ones), times M (same layout as A, ld kc) if given, the product also stored
 * to out (ld kc) if given. */
#if defined(__GNUC__)
typedef float rnn_v4 __attribute__((vector_size(16)));
typedef int rnn_v4i __attribute__((vector_size(16)));
/* dst[q*w + r] = a[r*sa + q] (· mk[r*sm + q] if mk) for r, q < 4: a 4×4 transpose (the
 * products are the scalar loop's, one IEEE multiply each) */
static inline void tr4(const float *a, int64_t sa, const float *mk, int64_t sm, float *dst,
                       int64_t w)
{
    rnn_v4 r0, r1, r2, r3;
    memcpy(&r0, a, 16);
    memcpy(&r1, a + sa, 16);
    memcpy(&r2, a + 2 * sa, 16);
    memcpy(&r3, a + 3 * sa, 16);
    if (mk) {
        rnn_v4 m0, m1, m2, m3;
        memcpy(&m0, mk, 16);
        memcpy(&m1, mk + sm, 16);
        memcpy(&m2, mk + 2 * sm, 16);
        memcpy(&m3, mk + 3 * sm, 16);
        r0 *= m0; r1 *= m1; r2 *= m2; r3 *= m3;
    }
    const rnn_v4 t0 = __builtin_shuffle(r0, r1, (rnn_v4i){0, 4, 1, 5});
    const rnn_v4 t1 = __builtin_shuffle(r0, r1, (rnn_v4i){2, 6, 3, 7});
    const rnn_v4 t2 = __builtin_shuffle(r2, r3, (rnn_v4i){0, 4, 1, 5});
    const rnn_v4 t3 = __builtin_shuffle(r2, r3, (rnn_v4i){2, 6, 3, 7});
    const rnn_v4 o0 = __builtin_shuffle(t0, t2, (rnn_v4i){0, 1, 4, 5});
    const rnn_v4 o1 = __builtin_shuffle(t0, t2, (rnn_v4i){2, 3, 6, 7});
    const rnn_v4 o2 = __builtin_shuffle(t1, t3, (rnn_v4i){0, 1, 4, 5});
    const rnn_v4 o3 = __builtin_shuffle(t1, t3, (rnn_v4i){2, 3, 6, 7});
    memcpy(dst, &o0, 16);
    memcpy(dst + w, &o1, 16);
    memcpy(dst + 2 * w, &o2, 16);
    memcpy(dst + 3 * w, &o3, 16);
}
#else
static inline void tr4(const float *a, int64_t sa, const float *mk, int64_t sm, float *dst,
                       int64_t w)
{
    for (int q = 0; q < 4; q++)
        for (int r = 0; r < 4; r++)
            dst[q * w + r] = mk ? a[r * sa + q] * mk[r * sm + q] : a[r * sa + q];
}
#endif

static void pack_a(int64_t m, int64_t k0, int64_t kc, int64_t kt, const float *A, int64_t lda,
                   const float *M, float *out, int MR, float *dst)
{
    for (int64_t r = 0; r * MR < m; r++) {
        float *d = dst + (r * kt + k0) * MR;
        const int64_t mr = m - r * MR < MR ? m - r * MR : MR;
        int64_t i0 = 0;
        if (A && !out) {   /* 4 rows × 4 columns at a time */
            for (; i0 + 4 <= mr; i0 += 4) {
                const int64_t row = r * MR + i0;
                const float *a = A + row * lda, *mk = M ? M + row * kc : NULL;
                int64_t p = 0;
                for (; p + 4 <= kc; p += 4)
                    tr4(a + p, lda, mk ? mk + p : NULL, kc, d + p * MR + i0, MR);
                for (; p < kc; p++)
                    for (int q = 0; q < 4; q++)
                        d[p * MR + i0 + q] = mk ? a[q * lda + p] * mk[q * kc + p]
                                                : a[q * lda + p];
            }
        }
        for (int64_t i = i0; i < mr; i++) {
            const int64_t row = r * MR + i;
            if (!A) {
                for (int64_t p = 0; p < kc; p++) d[p * MR + i] = 1.0f;
            } else if (M && !out) {
                const float *FD_RESTRICT a = A + row * lda, *FD_RESTRICT mk = M + row * kc;
                for (int64_t p = 0; p < kc; p++) d[p * MR + i] = a[p] * mk[p];
            } else if (M) {
                const float *FD_RESTRICT a = A + row * lda, *FD_RESTRICT mk = M + row * kc;
                float *FD_RESTRICT o = out + row * kc;
                for (int64_t p = 0; p < kc; p++) o[p] = a[p] * mk[p];
                for (int64_t p = 0; p < kc; p++) d[p * MR + i] = o[p];
            } else {
                const float *a = A + row * lda;
                for (int64_t p = 0; p < kc; p++) d[p * MR + i] = a[p];
            }
        }
        for (int64_t i = mr; i < MR; i++)
            for (int64_t p = 0; p < kc; p++) d[p * MR + i] = 0.0f;
    }
}

/* C(m × n) = Ap·Bp (first k of the panels' ak / bk rows) + beta·C through the
 * micro-kernel: one thread, a fixed order. */
static void mgemm(const fd_gemm_params *P, int64_t m, int64_t n, int64_t k, const float *ap,
                  int64_t ak, const float *bp, int64_t bk, float beta, float *c, int64_t ldc)
{
    const int MR = P->mr, NR = P->nr;
    for (int64_t q = 0; q * NR < n; q++) {
        const int64_t nr = n - q * NR < NR ? n - q * NR : NR;
        for (int64_t r = 0; r * MR < m; r++) {
            const int64_t mr = m - r * MR < MR ? m - r * MR : MR;
            P->ukr(k, 1.0f, ap + r * ak * MR, bp + q * bk * NR, beta, c + r * MR * ldc + q * NR,
                   ldc, mr, nr);
        }
    }
}

static inline int64_t kb_of(const fd_rnn_desc *d) { return 1 + d->F + d->u; }
static inline int64_t rowb_stride(const fd_rnn_desc *d)
{
    return round_up(kb_of(d) + FD_RNN_MR_BOUND, 16);
}


/* LSTM / SimpleRNN backward, step s of a chunk (rows b0.., nr of them; buffers sized
 * for `rows`): C_chunk (KB × G·u) (+)= A_gᵀ · dz_g for each part g, A_g = [x̃_t | 1 |
 * h̃_{t-1}] (h̃_{-1} = 0; h̃ = h ⊙ mask g recomputed: the forward's values), all packed
 * here from rows hot in cache.  The dz_t of a masked step are zero.  Per tile the sum
 * runs over the chunk's rows of a step (micro-kernel K = nr), steps from last to first:
 * an order that depends on m only. */
/* GCC turns the short panel-row copies below into memcpy calls (one per 14 floats) */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-loop-distribute-patterns")))
#endif
static void step_wgrad(const fd_rnn_desc *d, const rnn_ws *L, int64_t chunk, int64_t rows,
                       int64_t b0, int64_t nr, int64_t s, int first)
{
    const fd_gemm_params *P = &fd_kt->gemm;
    const int MR = P->mr, NR = P->nr;
    const int64_t m = d->m, T = d->T, F = d->F, u = d->u, G = gates_of(d->cell), Gu = G * u;
    const int64_t KB = 1 + F + u, np = (KB + MR - 1) / MR, Tm = T * m;
    const int64_t Gi = d->n_in_masks > 1 ? d->n_in_masks : 1, Gr = d->n_rec_masks;
    const int64_t Gw = xh_parts(d), n = Gw == 1 ? Gu : u, nq = (n + NR - 1) / NR;
    float *wa = L->wa + chunk * round_up((KB + FD_RNN_MR_BOUND) * rows, 16);
    float *wb = L->wb + chunk * round_up((Gu + G * FD_RNN_NR_ALL) * rows, 16);
    float *row = L->rowb + chunk * rowb_stride(d);
    float *C = L->dwc + chunk * KB * Gu;
    const float *Gt = L->gates + (s * m + b0) * Gu;
    const float *hp = s ? L->hs + ((s - 1) * m + b0) * u : NULL;
    for (int64_t g = 0; g < Gw; g++) {
        if (g == 0 || Gi > 1 || Gr) {
            const float *x = L->xt + (Gi > 1 ? g : 0) * Tm * F + (s * m + b0) * F;
            const float *dm = Gr ? L->dm + (g * m + b0) * u : NULL;
            /* the same x̃ for every gate (Gi == 1): only the panels with h̃ columns change */
            const int64_t r0 = (g == 0 || Gi > 1) ? 0 : (F + 1) / MR;
            for (int64_t i = 0; i < nr; i++) {
                float *FD_RESTRICT o = row;
                memcpy(o, x + i * F, (size_t)F * sizeof(float));
                o[F] = 1.0f;
                float *FD_RESTRICT oh = o + F + 1;
                if (!hp) {
                    memset(oh, 0, (size_t)u * sizeof(float));
                } else if (dm) {
                    const float *FD_RESTRICT h = hp + i * u, *FD_RESTRICT mk = dm + i * u;
                    for (int64_t j = 0; j < u; j++) oh[j] = h[j] * mk[j];
                } else {
                    memcpy(oh, hp + i * u, (size_t)u * sizeof(float));
                }
                for (int64_t j = KB; j < np * MR; j++) o[j] = 0.0f;
                for (int64_t r = r0; r < np; r++) {
                    float *FD_RESTRICT w = wa + (r * nr + i) * MR;
                    for (int c = 0; c < MR; c++) w[c] = o[r * MR + c];
                }
            }
        }
        for (int64_t i = 0; i < nr; i++) {
            const float *FD_RESTRICT z = Gt + i * Gu + g * n;
            for (int64_t q = 0; q < nq; q++) {
                float *FD_RESTRICT bp = wb + (q * nr + i) * NR;
                const int64_t w = n - q * NR < NR ? n - q * NR : NR;
                for (int64_t j = 0; j < w; j++) bp[j] = z[q * NR + j];
                for (int64_t j = w; j < NR; j++) bp[j] = 0.0f;
            }
        }
        for (int64_t q = 0; q < nq; q++) {
            const int64_t w = n - q * NR < NR ? n - q * NR : NR;
            for (int64_t r = 0; r < np; r++) {
                const int64_t mr = KB - r * MR < MR ? KB - r * MR : MR;
                P->ukr(nr, 1.0f, wa + r * nr * MR, wb + q * nr * NR, first ? 0.0f : 1.0f,
                       C + r * MR * Gu + g * n + q * NR, Gu, mr, w);
            }
        }
    }
}

/* backward: C(rows × u) (+)= A(rows × u, lda) · U_gᵀ (slot g) */
static void rec_product(const rnn_ws *L, int64_t chunk, int64_t rows, int64_t u,
                        const float *A, int64_t lda, int64_t g, float beta, float *C,
                        int64_t ldc, int pack)
{
    const fd_gemm_params *P = &fd_kt->gemm;
    float *ap = L->apack + chunk * L->astride;
    if (pack) pack_a(rows, 0, u, u, A, lda, NULL, NULL, P->mr, ap);
    mgemm(P, rows, u, u, ap, u, L->bpack + g * L->bstride, u, beta, C, ldc);
}

/* Forward slots (K = F + 1 + u rows each): g < G: [W_g; b_g; U_g] (GRU h gate: [W_h;
 * b_in_h] only); slot G (GRU): reset_after [b_rh; U_h] (rows 0..u), reset_before U_h.
 * Backward slots g < G: U_gᵀ (u rows). */
static void pack_weights(const fd_rnn_desc *d, const rnn_ws *L, const float *W,
                         const float *U, const float *bias, int backward)
{
    const int64_t u = d->u, F = d->F, G = gates_of(d->cell), Gu = G * u, KB = kb_of(d);
    const int NR = fd_kt->gemm.nr;
    const int gru = d->cell == FD_RNN_GRU, ra = d->reset_after;
    if (backward) {
        if (!d->n_rec_masks && !gru) {   /* Uᵀ: (G·u) × u, op(B)(p, j) = U[j, p] */
            pack_b(0, Gu, Gu, u, U, 1, Gu, NR, L->bpack);
            return;
        }
        for (int64_t g = 0; g < G; g++)   /* op(B)(p, j) = U[j, g*u + p] */
            pack_b(0, u, u, u, U + g * u, 1, Gu, NR, L->bpack + g * L->bstride);
        return;
    }
    float *brow = L->beff;
    for (int64_t j = 0; j < Gu; j++) {
        brow[j] = bias ? bias[j] : 0.0f;
        if (bias && gru && ra && j < 2 * u) brow[j] += bias[Gu + j];
    }
    for (int64_t g = 0; g < G; g++) {
        float *dst = L->bpack + g * L->bstride;
        pack_b(0, F, KB, u, W + g * u, Gu, 1, NR, dst);
        pack_b(F, 1, KB, u, brow + g * u, 0, 1, NR, dst);
        if (!(gru && g == 2)) pack_b(F + 1, u, KB, u, U + g * u, Gu, 1, NR, dst);
    }
    if (gru) {
        float *dst = L->bpack + G * L->bstride;
        if (ra) {
            pack_b(0, 1, KB, u, bias ? bias + Gu + 2 * u : NULL, 0, 1, NR, dst);
            pack_b(1, u, KB, u, U + 2 * u, Gu, 1, NR, dst);
        } else {
            pack_b(0, u, KB, u, U + 2 * u, Gu, 1, NR, dst);
        }
    }
}

static inline int step_on(const fd_rnn_desc *d, int64_t b, int64_t s)
{
    if (!d->seq) return 1;
    const int64_t tt = d->go_backwards ? d->T - 1 - s : s;
    return d->seq[b * d->T + tt] != 0;
}

/* ------------------------------------------------------------------ forward */
static void chunk_forward(const fd_rnn_desc *d, const fd_rnn_gates *K, const rnn_ws *L,
                          const float *bias, int64_t chunk, int64_t b0, int64_t b1)
{
    const int64_t m = d->m, T = d->T, u = d->u, G = gates_of(d->cell), Gu = G * u;
    const int64_t nr = b1 - b0, Gr = d->n_rec_masks;
    const int cell = d->cell, ra = d->reset_after;
    for (int64_t s = 0; s < T; s++) {
        float *Gt = L->gates + (s * m + b0) * Gu;
        const float *hp = s ? L->hs + ((s - 1) * m + b0) * u : NULL;
        float *ht = L->hs + (s * m + b0) * u;
        float *Rt = cell == FD_RNN_GRU ? L->rh + (s * m + b0) * u : NULL;
        /* the step's products, one micro-kernel pass per gate: [x_t | 1 | h_{t-1}] times
         * the packed [W_g; b_g; U_g] (h_{-1} = 0: K = F + 1 at s = 0) */
        const int64_t KB = kb_of(d), F = d->F, Tm = T * m;
        const int64_t kfull = s ? KB : F + 1;
        float *ap = L->apack + chunk * L->astride;
        const fd_gemm_params *P = &fd_kt->gemm;
        const int Gi = d->n_in_masks > 1 ? d->n_in_masks : 1;
        for (int64_t g = 0; g < G; g++) {
            if (g == 0 || Gi > 1) {
                const float *xg = L->xt + (Gi > 1 ? g : 0) * Tm * F + (s * m + b0) * F;
                pack_a(nr, 0, F, KB, xg, F, NULL, NULL, P->mr, ap);
                pack_a(nr, F, 1, KB, NULL, 0, NULL, NULL, P->mr, ap);
            }
            if (s && Gr)   /* h̃ = h_{t-1} ⊙ mask g, packed (and kept for GRU's dU) */
                pack_a(nr, F + 1, u, KB, hp, u, L->dm + (g * m + b0) * u,
                       cell == FD_RNN_GRU ? L->hd + ((g * T + s) * m + b0) * u : NULL,
                       P->mr, ap);
            else if (s && g == 0)
                pack_a(nr, F + 1, u, KB, hp, u, NULL, NULL, P->mr, ap);
            const float *bp = L->bpack + g * L->bstride;
            if (cell == FD_RNN_GRU && g == 2) {
                mgemm(P, nr, u, F + 1, ap, KB, bp, KB, 0.0f, Gt + 2 * u, Gu);
                if (ra)     /* rh = [1 | h̃] · [b_rh; U_h] */
                    mgemm(P, nr, u, s ? 1 + u : 1, ap + F * P->mr, KB,
                          L->bpack + G * L->bstride, KB, 0.0f, Rt, u);
                continue;
            }
            mgemm(P, nr, u, kfull, ap, KB, bp, KB, 0.0f, Gt + g * u, Gu);
        }
        /* gate kernels */
        float *cs_t = cell == FD_RNN_LSTM ? L->cs + (s * m + b0) * u : NULL;
        const float *cp = (cell == FD_RNN_LSTM && s) ? L->cs + ((s - 1) * m + b0) * u : NULL;
        if (cell == FD_RNN_GRU && !ra) {
            for (int64_t r = 0; r < nr; r++) K->act(d->rec_act, 2 * u, Gt + r * Gu, Gt + r * Gu);
            if (s > 0) {
                const float *hh = Gr ? L->hd + ((2 * T + s) * m + b0) * u : hp;
                for (int64_t r = 0; r < nr; r++)
                    for (int64_t j = 0; j < u; j++)
                        Rt[r * u + j] = Gt[r * Gu + u + j] * hh[r * u + j];
                pack_a(nr, 0, u, KB, Rt, u, NULL, NULL, P->mr, ap);
                mgemm(P, nr, u, u, ap, KB, L->bpack + G * L->bstride, KB, 1.0f, Gt + 2 * u, Gu);
            } else {
                memset(Rt, 0, (size_t)(nr * u) * sizeof(float));
            }
        }
        for (int64_t r = 0; r < nr; r++) {
            float *g = Gt + r * Gu, *h = ht + r * u;
            const float *hpr = hp ? hp + r * u : NULL;
            if (!step_on(d, b0 + r, s)) {
                if (hpr) memcpy(h, hpr, (size_t)u * sizeof(float));
                else memset(h, 0, (size_t)u * sizeof(float));
                if (cs_t) {
                    if (cp) memcpy(cs_t + r * u, cp + r * u, (size_t)u * sizeof(float));
                    else memset(cs_t + r * u, 0, (size_t)u * sizeof(float));
                }
                continue;
            }
            switch (cell) {
            case FD_RNN_SIMPLE:
                K->act(d->act, u, h, g);
                break;
            case FD_RNN_LSTM:
                K->lstm_fwd(u, d->act, d->rec_act, g, cp ? cp + r * u : NULL, cs_t + r * u, h,
                            L->rt + (b0 + r) * 4 * u);
                break;
            default:
                if (ra) K->gru_ra_fwd(u, d->act, d->rec_act, g, Rt + r * u, hpr, h);
                else K->gru_rb_fwd2(u, d->act, g, hpr, h);
                break;
            }
        }
    }
}

/* One chunk of rows through the whole time loop: a job of fd_parallel (our pool, the same
 * one the GEMMs after the loop use: no second team of spinning OpenMP workers competing
 * with it for the cores).  Helpers run in the caller's floating-point mode. */
typedef struct {
    const fd_rnn_desc *d;
    const fd_rnn_gates *K;
    const rnn_ws *L;
    const float *bias, *dy;
    int64_t rows;
} rnn_job;

static void forward_chunk(void *ctx, int64_t c)
{
    const rnn_job *J = ctx;
    const int64_t b0 = c * J->rows, b1 = b0 + J->rows < J->d->m ? b0 + J->rows : J->d->m;
    chunk_forward(J->d, J->K, J->L, J->bias, c, b0, b1);
}

int fd_rnn_forward(const fd_rnn_desc *d, const float *x, const float *W, const float *U,
                   const float *bias, float *y, float *ws)
{
    unsigned fp = fd_fp_enter();
    fd_init();
    const fd_rnn_gates *K = gates_kt();
    rnn_ws L;
    layout(d, ws, &L);
    const int64_t m = d->m, T = d->T, F = d->F, u = d->u;
    const int64_t Gi = d->n_in_masks > 1 ? d->n_in_masks : 1, Gr = d->n_rec_masks;
    const int64_t Tm = T * m;
    /* 1. time-major (masked) copies of x */
    for (int64_t k = 0; k < Gi; k++) {
        const uint8_t *mk = d->n_in_masks ? d->in_mask + k * d->in_mask_stride : NULL;
        float *xk = L.xt + k * Tm * F;
        float *mrow = L.tmp;   /* F floats (tmp holds m*u >= F floats when m*u >= F) */
        for (int64_t b = 0; b < m; b++) {
            if (mk) mask_row(mk, b * F, F, d->in_scale, mrow);
            for (int64_t s = 0; s < T; s++) {
                const int64_t tt = d->go_backwards ? T - 1 - s : s;
                const float *FD_RESTRICT src = x + (b * T + tt) * F;
                float *FD_RESTRICT dst = xk + (s * m + b) * F;
                if (!mk) memcpy(dst, src, (size_t)F * sizeof(float));
                else for (int64_t f = 0; f < F; f++) dst[f] = src[f] * mrow[f];
            }
        }
    }
    /* 4. recurrent masks as floats */
    for (int64_t g = 0; g < Gr; g++) {
        const uint8_t *mk = d->rec_mask + g * d->rec_mask_stride;
        float *dmg = L.dm + g * m * u;
        for (int64_t i = 0; i < m * u; i++) dmg[i] = bit_of(mk, i) ? d->rec_scale : 0.0f;
    }
    /* 5. the time loop, chunks of rows in parallel (U packed once for the micro-kernel) */
    pack_weights(d, &L, W, U, bias, 0);
    int64_t nc, rows;
    chunking(m, &nc, &rows);
    int nt = fd_get_num_threads();
    if (nt > nc) nt = (int)nc;
    rnn_job J = {d, K, &L, bias, NULL, rows};
    fd_parallel(nt, nc, forward_chunk, &J);
    /* 6. output */
    if (d->return_sequences) {
        for (int64_t b = 0; b < m; b++)
            for (int64_t s = 0; s < T; s++)
                memcpy(y + (b * T + s) * u, L.hs + (s * m + b) * u, (size_t)u * sizeof(float));
    } else {
        memcpy(y, L.hs + (T - 1) * m * u, (size_t)(m * u) * sizeof(float));
    }
    fd_fp_exit(fp);
    return 0;
}

/* ----------------------------------------------------------------- backward */
static void chunk_backward(const fd_rnn_desc *d, const fd_rnn_gates *K, const rnn_ws *L,
                           const float *dy, int64_t chunk, int64_t rows, int64_t b0,
                           int64_t b1)
{
    const int64_t m = d->m, T = d->T, u = d->u, G = gates_of(d->cell), Gu = G * u;
    const int64_t nr = b1 - b0, Gr = d->n_rec_masks;
    const int cell = d->cell, ra = d->reset_after;
    float *DH = L->dh + b0 * u, *DHP = L->dhp + b0 * u, *DC = L->dc + b0 * u;
    float *TMP = L->tmp + b0 * u;
    memset(DH, 0, (size_t)(nr * u) * sizeof(float));
    memset(DC, 0, (size_t)(nr * u) * sizeof(float));
    for (int64_t s = T - 1; s >= 0; s--) {
        if (d->return_sequences) {
            for (int64_t r = 0; r < nr; r++) {
                const float *dyr = dy + ((b0 + r) * T + s) * u;
                for (int64_t j = 0; j < u; j++) DH[r * u + j] += dyr[j];
            }
        } else if (s == T - 1) {
            memcpy(DH, dy + b0 * u, (size_t)(nr * u) * sizeof(float));
        }
        float *Gt = L->gates + (s * m + b0) * Gu;
        const float *hp = s ? L->hs + ((s - 1) * m + b0) * u : NULL;
        const float *ht = L->hs + (s * m + b0) * u;
        float *Rt = cell == FD_RNN_GRU ? L->rh + (s * m + b0) * u : NULL;
        const float *cs_t = cell == FD_RNN_LSTM ? L->cs + (s * m + b0) * u : NULL;
        const float *cp = (cell == FD_RNN_LSTM && s) ? L->cs + ((s - 1) * m + b0) * u : NULL;
        for (int64_t r = 0; r < nr; r++) {
            float *g = Gt + r * Gu, *dh = DH + r * u, *dhp = DHP + r * u;
            const float *hpr = hp ? hp + r * u : NULL;
            float *rt = L->rt + (b0 + r) * 4 * u;
            if (!step_on(d, b0 + r, s)) {
                memset(g, 0, (size_t)Gu * sizeof(float));
                if (Rt && ra) memset(Rt + r * u, 0, (size_t)u * sizeof(float));
                memcpy(dhp, dh, (size_t)u * sizeof(float));
                continue;
            }
            switch (cell) {
            case FD_RNN_SIMPLE:     /* g still holds the pre-activation z */
                K->dact_zy(d->act, u, g, dh, g, ht + r * u);
                memset(dhp, 0, (size_t)u * sizeof(float));
                break;
            case FD_RNN_LSTM:
                K->lstm_bwd(u, d->act, d->rec_act, g, cs_t + r * u, cp ? cp + r * u : NULL, dh,
                            DC + r * u, rt);
                memset(dhp, 0, (size_t)u * sizeof(float));
                break;
            default:
                if (ra) K->gru_ra_bwd(u, d->act, d->rec_act, g, Rt + r * u, hpr, dh, dhp, rt);
                else K->gru_rb_bwd1(u, d->act, d->rec_act, g, hpr, dh, dhp, rt);
                break;
            }
        }
        if (cell == FD_RNN_GRU && !ra) {
            if (s > 0) {
                rec_product(L, chunk, nr, u, Gt + 2 * u, Gu, 2, 0.0f, TMP, u, 1);
                const float *hh = Gr ? L->hd + ((2 * T + s) * m + b0) * u : hp;
                const float *dmh = Gr ? L->dm + (2 * m + b0) * u : NULL;
                for (int64_t r = 0; r < nr; r++) {
                    float *g = Gt + r * Gu, *rt = L->rt + (b0 + r) * 4 * u;
                    if (!step_on(d, b0 + r, s)) continue;
                    K->gru_rb_bwd2(u, d->rec_act, g, TMP + r * u, hh + r * u, rt, rt + u);
                    float *dhp = DHP + r * u;
                    if (dmh) for (int64_t j = 0; j < u; j++) dhp[j] += rt[j] * dmh[r * u + j];
                    else for (int64_t j = 0; j < u; j++) dhp[j] += rt[j];
                }
            } else {
                for (int64_t r = 0; r < nr; r++)
                    memset(Gt + r * Gu + u, 0, (size_t)u * sizeof(float));
            }
        }
        if (s > 0 && !Gr && cell != FD_RNN_GRU) {
            /* dh_{t-1} += dz_t · Uᵀ, all gates in one pass (K = G·u) */
            const fd_gemm_params *P = &fd_kt->gemm;
            float *ap = L->apack + chunk * L->astride;
            pack_a(nr, 0, Gu, Gu, Gt, Gu, NULL, NULL, P->mr, ap);
            mgemm(P, nr, u, Gu, ap, Gu, L->bpack, Gu, 1.0f, DHP, u);
        } else if (s > 0) {
            for (int64_t g = 0; g < G; g++) {
                const float *src;
                int64_t ld;
                if (cell == FD_RNN_GRU && g == 2) {
                    if (!ra) continue;
                    src = Rt;
                    ld = u;
                } else {
                    src = Gt + g * u;
                    ld = Gu;
                }
                if (!Gr) {
                    rec_product(L, chunk, nr, u, src, ld, g, 1.0f, DHP, u, 1);
                } else {
                    rec_product(L, chunk, nr, u, src, ld, g, 0.0f, TMP, u, 1);
                    const float *dmg = L->dm + (g * m + b0) * u;
                    for (int64_t i = 0; i < nr * u; i++) DHP[i] += TMP[i] * dmg[i];
                }
            }
        }
        if (cell != FD_RNN_GRU) step_wgrad(d, L, chunk, rows, b0, nr, s, s == T - 1);
        float *sw = DH; DH = DHP; DHP = sw;
    }
}

static void backward_chunk(void *ctx, int64_t c)
{
    const rnn_job *J = ctx;
    const int64_t b0 = c * J->rows, b1 = b0 + J->rows < J->d->m ? b0 + J->rows : J->d->m;
    chunk_backward(J->d, J->K, J->L, J->dy, c, J->rows, b0, b1);
}

int fd_rnn_backward(const fd_rnn_desc *d, const float *W, const float *U, const float *dy,
                    float *dx, float *dW, float *dU, float *db, float *ws)
{
    unsigned fp = fd_fp_enter();
    fd_init();
    const fd_rnn_gates *K = gates_kt();
    rnn_ws L;
    layout(d, ws, &L);
    const int64_t m = d->m, T = d->T, F = d->F, u = d->u, G = gates_of(d->cell), Gu = G * u;
    const int64_t Gi = d->n_in_masks > 1 ? d->n_in_masks : 1;
    const int64_t Tm = T * m;
    const int cell = d->cell, ra = d->reset_after;
    int64_t nc, rows;
    chunking(m, &nc, &rows);
    pack_weights(d, &L, W, U, NULL, 1);
    int nt = fd_get_num_threads();
    if (nt > nc) nt = (int)nc;
    rnn_job J = {d, K, &L, NULL, dy, rows};
    fd_parallel(nt, nc, backward_chunk, &J);
    /* dW, dU as GEMMs over all T·m rows (dz_t kept in gates; threads split the output,
     * never the T·m sum: the same bits for any thread count); db = column sums in row
     * order.  Before dx (which overwrites xt).
     * LSTM / SimpleRNN: [dW; db; dU] were summed in the time loop (step_wgrad): the
     * chunks' sums added in chunk order (chunks depend on m only). */
    if (cell != FD_RNN_GRU) {
        const int64_t KB = kb_of(d);
        const float *Ct = L.dwc;
        if (nc > 1) {   /* the chunks' sums, in chunk order */
            memcpy(L.dwb, L.dwc, (size_t)(KB * Gu) * sizeof(float));
            for (int64_t c = 1; c < nc; c++) {
                const float *FD_RESTRICT a = L.dwc + c * KB * Gu;
                float *FD_RESTRICT o = L.dwb;
                for (int64_t i = 0; i < KB * Gu; i++) o[i] += a[i];
            }
            Ct = L.dwb;
        }
        memcpy(dW, Ct, (size_t)(F * Gu) * sizeof(float));
        if (db) memcpy(db, Ct + F * Gu, (size_t)Gu * sizeof(float));
        memcpy(dU, Ct + (F + 1) * Gu, (size_t)(u * Gu) * sizeof(float));
    } else if (Gi == 1)
        gemm(1, 0, F, Gu, Tm, L.xt, F, L.gates, Gu, 0.0f, dW, Gu);
    else
        for (int64_t g = 0; g < G; g++)
            gemm(1, 0, F, u, Tm, L.xt + g * Tm * F, F, L.gates + g * u, Gu, 0.0f, dW + g * u,
                 Gu);
    const int64_t Gr = d->n_rec_masks;
    if (cell != FD_RNN_GRU) {
        /* done above */
    } else if (T < 2) {
        memset(dU, 0, (size_t)(u * Gu) * sizeof(float));
    } else {   /* GRU */
        for (int64_t g = 0; g < G; g++) {
            const float *H = Gr ? L.hd + (g * T + 1) * m * u : L.hs;
            const float *B = L.gates + m * Gu + g * u;
            int64_t ldb = Gu;
            if (cell == FD_RNN_GRU && g == 2) {
                if (ra) { B = L.rh + m * u; ldb = u; }   /* d rh against h̃_{t-1}   */
                else H = L.rh + m * u;                    /* A3 = r ⊙ h̃_{t-1}, da   */
            }
            gemm(1, 0, u, u, (T - 1) * m, H, u, B, ldb, 0.0f, dU + g * u, Gu);
        }
    }
    if (db && cell == FD_RNN_GRU) {
        for (int64_t j = 0; j < Gu; j++) db[j] = 0.0f;
        for (int64_t i = 0; i < Tm; i++) {
            const float *FD_RESTRICT z = L.gates + i * Gu;
            float *FD_RESTRICT o = db;
            for (int64_t j = 0; j < Gu; j++) o[j] += z[j];
        }
        if (cell == FD_RNN_GRU && ra) {
            float *FD_RESTRICT o2 = db + Gu + 2 * u;
            for (int64_t j = 0; j < u; j++) o2[j] = 0.0f;
            for (int64_t i = 0; i < Tm; i++) {
                const float *FD_RESTRICT q = L.rh + i * u;
                for (int64_t j = 0; j < u; j++) o2[j] += q[j];
            }
            for (int64_t j = 0; j < 2 * u; j++) db[Gu + j] = db[j];
        }
    }
    if (dx) {
        if (Gi == 1)
            gemm(0, 1, Tm, F, Gu, L.gates, Gu, W, Gu, 0.0f, L.xt, F);
        else
            for (int64_t g = 0; g < G; g++)
                gemm(0, 1, Tm, F, u, L.gates + g * u, Gu, W + g * u, Gu, 0.0f,
                     L.xt + g * Tm * F, F);
        float *mrow = L.tmp;
        for (int64_t k = 0; k < Gi; k++) {
            const uint8_t *mk = d->n_in_masks ? d->in_mask + k * d->in_mask_stride : NULL;
            for (int64_t b = 0; b < m; b++) {
                if (mk) mask_row(mk, b * F, F, d->in_scale, mrow);
                else for (int64_t f = 0; f < F; f++) mrow[f] = 1.0f;
                for (int64_t s = 0; s < T; s++) {
                    const int64_t tt = d->go_backwards ? T - 1 - s : s;
                    float *FD_RESTRICT dst = dx + (b * T + tt) * F;
                    const float *FD_RESTRICT src = L.xt + k * Tm * F + (s * m + b) * F;
                    if (k) for (int64_t f = 0; f < F; f++) dst[f] += src[f] * mrow[f];
                    else for (int64_t f = 0; f < F; f++) dst[f] = src[f] * mrow[f];
                }
            }
        }
    }
    fd_fp_exit(fp);
    return 0;
}

/* ---------------------------------------------------------------- embedding */
void fd_embedding_forward(int64_t n, int64_t dim, const float *ids, const float *E,
                          float *out)
{
    unsigned fp = fd_fp_enter();
    int nt = fd_threads_for(n * dim, 1 << 16);
    (void)nt;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t i = 0; i < n; i++)
        memcpy(out + i * dim, E + (int64_t)ids[i] * dim, (size_t)dim * sizeof(float));
    fd_fp_exit(fp);
}

void fd_embedding_backward(int64_t n, int64_t dim, int64_t V, const float *ids,
                           const float *dy, float *dE)
{
    unsigned fp = fd_fp_enter();
    memset(dE, 0, (size_t)(V * dim) * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        float *dst = dE + (int64_t)ids[i] * dim;
        const float *src = dy + i * dim;
        for (int64_t j = 0; j < dim; j++) dst[j] += src[j];
    }
    fd_fp_exit(fp);
}

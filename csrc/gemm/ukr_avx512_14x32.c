/* ukr_avx512_14x32.c — AVX-512 SGEMM kernels and this ISA's block-size table:
 *   ukr_14x32     the BLIS micro-kernel (fd_gemm_ukr_fn) on packed A and B panels;
 *   ukr_ub_14x32  the same with B read in place (gemm_ext.h: small-m products);
 *   dot_kernel    skinny-n dot products, vectorised along k (gemm_ext.h).
 *
 * Register block: 14 rows × 2 zmm = 28 accumulators + 2 zmm of B + 1 broadcast of A (31 of
 * the 32 zmm).  On Zen 4 (512-bit ops double-pumped: one zmm FMA per cycle) every block
 * from 8×32 to 14×64 reaches ~31.5 FLOP/cycle in L1/L2; 14×32 moves the fewest bytes per
 * FLOP and reaches ~102 GFLOP/s a core on 1024² (OpenBLAS ~95–100).
 * Edge tiles run a kernel specialised for the number of rows (1..14) and for one or two
 * zmm columns, with masked C loads/stores: every element sees the same instructions
 * wherever it sits, so results do not depend on how C is cut into tiles or threads. */
#include "gemm_ext.h"

#include <immintrin.h>

#define MR 14
#define NR 32
#define DOT_R 3 /* dot kernel: rows per block (3 × up to 8 columns) */

/* C(rows × nr) := alpha·Ap·B + beta·C; rows, nv (zmm per row) and direct compile-time.
 * B is the packed panel (row stride NR) or, direct, read in place (row stride rs_b,
 * masked past column nr). */
static inline __attribute__((always_inline)) void
tile(const int rows, const int nv, const int direct, int64_t k, float alpha,
     const float *FD_RESTRICT ap, const float *FD_RESTRICT bp, int64_t rs_b, float beta,
     float *c, int64_t rs_c, int64_t nr, const fd_tile_ep *te)
{
    const __mmask16 m_last = (__mmask16)(nr - 16 * (nv - 1) >= 16
                                             ? 0xFFFF : (1u << (nr - 16 * (nv - 1))) - 1);
    const __mmask16 m_b0 = nv > 1 ? 0xFFFF : m_last;
    __m512 acc[MR][2];
#pragma GCC unroll 14
    for (int i = 0; i < rows; i++) {
        acc[i][0] = _mm512_setzero_ps();
        acc[i][1] = _mm512_setzero_ps();
    }
#pragma GCC unroll 14
    for (int i = 0; i < rows; i++) _mm_prefetch((const char *)(c + i * rs_c), _MM_HINT_T0);
    for (int64_t p = 0; p < k; p++) {
        __m512 b0, b1;
        if (direct) {
            b0 = _mm512_maskz_loadu_ps(m_b0, bp);
            b1 = nv > 1 ? _mm512_maskz_loadu_ps(m_last, bp + 16) : b0;
            bp += rs_b;
        } else {
            b0 = _mm512_load_ps(bp);
            b1 = nv > 1 ? _mm512_load_ps(bp + 16) : b0;
            bp += NR;
        }
#pragma GCC unroll 14
        for (int i = 0; i < rows; i++) {
            const __m512 a = _mm512_set1_ps(ap[i]);
            acc[i][0] = _mm512_fmadd_ps(a, b0, acc[i][0]);
            if (nv > 1) acc[i][1] = _mm512_fmadd_ps(a, b1, acc[i][1]);
        }
        ap += MR;
    }
    const __m512 va = _mm512_set1_ps(alpha);
    const __m512 vb = _mm512_set1_ps(beta);
    const fd_epilogue *ep = te ? te->ep : NULL;
    const int64_t c0 = te ? te->c0 : 0;
    const __m512 vms = _mm512_set1_ps(ep ? ep->mask_scale : 1.0f);
#pragma GCC unroll 14
    for (int i = 0; i < rows; i++) {
        float *ci = c + i * rs_c;
        const uint64_t rowbit = ep && ep->mask ? fd_tile_row_bit(te, i) : 0;
#pragma GCC unroll 2
        for (int v = 0; v < nv; v++) {
            const __mmask16 mk = v == nv - 1 ? m_last : 0xFFFF;
            __m512 z = _mm512_mul_ps(va, acc[i][v]);
            if (beta != 0.0f)
                z = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mk, ci + 16 * v), z);
            if (ep) { /* the register epilogue (fastdrop.h order) */
                const int64_t col = c0 + 16 * v;
                if (ep->bias) z = _mm512_add_ps(z, _mm512_maskz_loadu_ps(mk, ep->bias + col));
                if (ep->scale) z = _mm512_mul_ps(z, _mm512_maskz_loadu_ps(mk, ep->scale + col));
                if (ep->shift) z = _mm512_add_ps(z, _mm512_maskz_loadu_ps(mk, ep->shift + col));
                if (ep->relu) { /* +0 for z <= 0, NaN kept (as fd_relu_f32) */
                    const __mmask16 keep =
                        _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_GT_OQ) |
                        _mm512_cmp_ps_mask(z, z, _CMP_UNORD_Q);
                    z = _mm512_maskz_mov_ps(keep, z);
                }
                if (ep->mask) {
                    const int cnt = v == nv - 1 ? (int)(nr - 16 * (nv - 1)) : 16;
                    const __mmask16 bits =
                        (__mmask16)fd_mask_bits(ep->mask, rowbit + 16 * (uint64_t)v, cnt);
                    z = _mm512_maskz_mul_ps(bits, z, vms);
                }
            }
            _mm512_mask_storeu_ps(ci + 16 * v, mk, z);
        }
    }
}

/* one case per row count; one or two zmm columns */
#define FD_TILE_CASES(direct)                                                              \
    switch (mr) {                                                                          \
    FD_TILE_CASE(1, direct) FD_TILE_CASE(2, direct) FD_TILE_CASE(3, direct)                \
    FD_TILE_CASE(4, direct) FD_TILE_CASE(5, direct) FD_TILE_CASE(6, direct)                \
    FD_TILE_CASE(7, direct) FD_TILE_CASE(8, direct) FD_TILE_CASE(9, direct)                \
    FD_TILE_CASE(10, direct) FD_TILE_CASE(11, direct) FD_TILE_CASE(12, direct)             \
    FD_TILE_CASE(13, direct) default: FD_TILE_CASE(MR, direct)                             \
    }
#define FD_TILE_CASE(r, direct)                                                            \
    case r:                                                                                \
        if (nr > 16) tile(r, 2, direct, k, alpha, ap, bp, rs_b, beta, c, rs_c, nr, te);    \
        else tile(r, 1, direct, k, alpha, ap, bp, rs_b, beta, c, rs_c, nr, te);            \
        break;

static void ukr_14x32(int64_t k, float alpha, const float *ap, const float *bp, float beta,
                      float *c, int64_t rs_c, int64_t mr, int64_t nr)
{
    const int64_t rs_b = NR;
    const fd_tile_ep *const te = NULL;
    FD_TILE_CASES(0)
}

static void ukr_ub_14x32(int64_t k, float alpha, const float *ap, const float *bp,
                         int64_t rs_b, float beta, float *c, int64_t rs_c, int64_t mr,
                         int64_t nr)
{
    const fd_tile_ep *const te = NULL;
    FD_TILE_CASES(1)
}

static void ukr_ep_14x32(int64_t k, float alpha, const float *ap, const float *bp,
                         int64_t rs_b, int direct, float beta, float *c, int64_t rs_c,
                         int64_t mr, int64_t nr, const fd_tile_ep *te)
{
    if (direct) {
        FD_TILE_CASES(1)
    } else {
        rs_b = NR;
        FD_TILE_CASES(0)
    }
}

/* ---------------------------------------------------------- skinny-n dot kernel */
/* out[l] = horizontal sum of v[l], l < cnt (cnt <= 16): a transpose-add tree. */
static inline __attribute__((always_inline)) void hsum16(const int cnt, const __m512 *v, float *out)
{
    __m512 t[8], u[4];
#pragma GCC unroll 8
    for (int q = 0; q < 8; q++) {
        const __m512 x = 2 * q < cnt ? v[2 * q] : _mm512_setzero_ps();
        const __m512 y = 2 * q + 1 < cnt ? v[2 * q + 1] : _mm512_setzero_ps();
        t[q] = _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y));
    }
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++) {
        const __m512d x = _mm512_castps_pd(t[2 * q]), y = _mm512_castps_pd(t[2 * q + 1]);
        u[q] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)),
                             _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
    }
    /* u[q] 128-bit chunk c holds chunk c's sums of v[4q..4q+3]: add the chunks */
    const __m512 s01 = _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                     _mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(3, 2, 3, 2)));
    const __m512 s23 = _mm512_add_ps(_mm512_shuffle_f32x4(u[2], u[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                     _mm512_shuffle_f32x4(u[2], u[3], _MM_SHUFFLE(3, 2, 3, 2)));
    const __m512 s = _mm512_add_ps(_mm512_shuffle_f32x4(s01, s23, _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(s01, s23, _MM_SHUFFLE(3, 1, 3, 1)));
    _mm512_mask_storeu_ps(out, (__mmask16)((1u << cnt) - 1), s);
}

/* Keeps a loaded vector in a register: otherwise GCC folds the load into each of the R
 * FMAs that use it, and R loads per B vector make the loop load-bound. */
#define FD_IN_REGISTER(v) __asm__("" : "+v"(v))

/* D(R × J) = A(R × k)·Bt(J × k)ᵀ, R and J compile-time, R*J <= 24. */
static inline __attribute__((always_inline)) void
dot_block(const int R, const int J, int64_t k, const float *a, int64_t lda, const float *bt,
          int64_t ldbt, float *d, int64_t ldd)
{
    __m512 acc[24];
#pragma GCC unroll 24
    for (int q = 0; q < R * J; q++) acc[q] = _mm512_setzero_ps();
    int64_t p = 0;
    for (; p + 16 <= k; p += 16) {
        __m512 x[4];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) x[r] = _mm512_loadu_ps(a + r * lda + p);
#pragma GCC unroll 8
        for (int j = 0; j < J; j++) {
            __m512 w = _mm512_loadu_ps(bt + j * ldbt + p);
            FD_IN_REGISTER(w);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) acc[r * J + j] = _mm512_fmadd_ps(x[r], w, acc[r * J + j]);
        }
    }
    if (p < k) {
        const __mmask16 mk = (__mmask16)((1u << (k - p)) - 1);
        __m512 x[4];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) x[r] = _mm512_maskz_loadu_ps(mk, a + r * lda + p);
#pragma GCC unroll 8
        for (int j = 0; j < J; j++) {
            __m512 w = _mm512_maskz_loadu_ps(mk, bt + j * ldbt + p);
            FD_IN_REGISTER(w);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) acc[r * J + j] = _mm512_fmadd_ps(x[r], w, acc[r * J + j]);
        }
    }
    float s[32];
    hsum16(R * J < 16 ? R * J : 16, acc, s);
    if (R * J > 16) hsum16(R * J - 16, acc + 16, s + 16);
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int j = 0; j < J; j++) d[r * ldd + j] = s[r * J + j];
}

/* D(R × jw) for jw <= 8 columns, R compile-time. */
static inline __attribute__((always_inline)) void
dot_rows(const int R, int64_t jw, int64_t k, const float *a, int64_t lda, const float *bt,
         int64_t ldbt, float *d, int64_t ldd)
{
    switch (jw) {
    case 1: dot_block(R, 1, k, a, lda, bt, ldbt, d, ldd); break;
    case 2: dot_block(R, 2, k, a, lda, bt, ldbt, d, ldd); break;
    case 3: dot_block(R, 3, k, a, lda, bt, ldbt, d, ldd); break;
    case 4: dot_block(R, 4, k, a, lda, bt, ldbt, d, ldd); break;
    case 5: dot_block(R, 5, k, a, lda, bt, ldbt, d, ldd); break;
    case 6: dot_block(R, 6, k, a, lda, bt, ldbt, d, ldd); break;
    case 7: dot_block(R, 7, k, a, lda, bt, ldbt, d, ldd); break;
    default: dot_block(R, 8, k, a, lda, bt, ldbt, d, ldd); break;
    }
}

/* Rows in threes (A rows stay in L1 across the column groups), columns in near-equal
 * groups of at most 8 (n = 10: 5 + 5). */
static void dot_kernel(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                        const float *bt, int64_t ldbt, float *d, int64_t ldd)
{
    const int64_t groups = (n + 7) / 8, jmax = (n + groups - 1) / groups;
    int64_t r = 0;
    for (; r + DOT_R <= m; r += DOT_R)
        for (int64_t j = 0; j < n; j += jmax)
            dot_rows(DOT_R, n - j < jmax ? n - j : jmax, k, a + r * lda, lda, bt + j * ldbt,
                     ldbt, d + r * ldd + j, ldd);
    for (; r < m; r++)
        for (int64_t j = 0; j < n; j += jmax)
            dot_rows(1, n - j < jmax ? n - j : jmax, k, a + r * lda, lda, bt + j * ldbt,
                     ldbt, d + r * ldd + j, ldd);
}

/* Cache blocks (Zen 4: 32 KiB L1d, 1 MiB L2, shared L3): the MC×KC block of A (252 KiB)
 * stays in L2, each KC×NC block of B (3 MiB) in L3, a KC×NR sliver of B (48 KiB) streams
 * through L1.  Measured against KC 256, MC 336, NC 1024: within 2%, KC 384 ahead. */
const fd_gemm_params fd_gemm_params_avx512 = {MR, NR, 168, 384, 2048, ukr_14x32};
const fd_gemm_ext fd_gemm_ext_avx512 = {dot_kernel, ukr_ub_14x32, fd_gemm_row_avx512,
                                        ukr_ep_14x32};

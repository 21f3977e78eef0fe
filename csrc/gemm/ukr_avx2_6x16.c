/* ukr_avx2_6x16.c — AVX2+FMA SGEMM kernels and this ISA's block-size table:
 *   ukr_6x16     the BLIS micro-kernel (fd_gemm_ukr_fn) on packed A and B panels;
 *   ukr_ub_6x16  the same with B read in place (gemm_ext.h: small-m products);
 *   dot_kernel   skinny-n dot products, vectorised along k (gemm_ext.h).
 *
 * Register block: 6 rows × 2 ymm = 12 accumulators + 2 ymm of B + 1 broadcast (15 of 16
 * ymm).  Edge tiles run a kernel specialised for the row count (1..6) and for one or two
 * ymm columns, with masked C loads/stores, so every element sees the same instructions
 * wherever it sits (results do not depend on the tiling or the thread count). */
#include "gemm_ext.h"

#include <immintrin.h>

#define MR 6
#define NR 16
#define DOT_R 2 /* dot kernel: rows per block (2 × up to 6 columns) */

/* lanes [0, cnt) set, cnt in 0..8 */
static inline __m256i lane_mask(int64_t cnt)
{
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)cnt), idx);
}

/* C(rows × nr) := alpha·Ap·B + beta·C; rows, nv (ymm per row) and direct compile-time.
 * B is the packed panel (row stride NR) or, direct, read in place (row stride rs_b,
 * masked past column nr). */
static inline __attribute__((always_inline)) void
tile(const int rows, const int nv, const int direct, int64_t k, float alpha,
     const float *FD_RESTRICT ap, const float *FD_RESTRICT bp, int64_t rs_b, float beta,
     float *c, int64_t rs_c, int64_t nr, const fd_tile_ep *te)
{
    const int full = nr == 8 * nv;
    const __m256i m_last = lane_mask(nr - 8 * (nv - 1));
    const __m256i m_b0 = nv > 1 ? _mm256_set1_epi32(-1) : m_last;
    __m256 acc[MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < rows; i++) {
        acc[i][0] = _mm256_setzero_ps();
        acc[i][1] = _mm256_setzero_ps();
    }
#pragma GCC unroll 6
    for (int i = 0; i < rows; i++) _mm_prefetch((const char *)(c + i * rs_c), _MM_HINT_T0);
    for (int64_t p = 0; p < k; p++) {
        __m256 b0, b1;
        if (direct && !full) {
            b0 = _mm256_maskload_ps(bp, m_b0);
            b1 = nv > 1 ? _mm256_maskload_ps(bp + 8, m_last) : b0;
        } else {
            b0 = _mm256_loadu_ps(bp);
            b1 = nv > 1 ? _mm256_loadu_ps(bp + 8) : b0;
        }
        bp += direct ? rs_b : NR;
#pragma GCC unroll 6
        for (int i = 0; i < rows; i++) {
            const __m256 a = _mm256_broadcast_ss(ap + i);
            acc[i][0] = _mm256_fmadd_ps(a, b0, acc[i][0]);
            if (nv > 1) acc[i][1] = _mm256_fmadd_ps(a, b1, acc[i][1]);
        }
        ap += MR;
    }
    const __m256 va = _mm256_set1_ps(alpha);
    const __m256 vb = _mm256_set1_ps(beta);
    const fd_epilogue *ep = te ? te->ep : NULL;
    const int64_t c0 = te ? te->c0 : 0;
    const __m256 vms = _mm256_set1_ps(ep ? ep->mask_scale : 1.0f);
    const __m256i bitsel = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
#pragma GCC unroll 6
    for (int i = 0; i < rows; i++) {
        float *ci = c + i * rs_c;
        const uint64_t rowbit = ep && ep->mask ? fd_tile_row_bit(te, i) : 0;
#pragma GCC unroll 2
        for (int v = 0; v < nv; v++) {
            __m256 z = _mm256_mul_ps(va, acc[i][v]);
            const int edge = !(v < nv - 1 || full); /* vmaskmov is slow on AMD: edge only */
            if (beta != 0.0f)
                z = _mm256_fmadd_ps(vb, edge ? _mm256_maskload_ps(ci + 8 * v, m_last)
                                             : _mm256_loadu_ps(ci + 8 * v), z);
            if (ep) { /* the register epilogue (fastdrop.h order) */
                const int64_t col = c0 + 8 * v;
#define FD_LOAD_COL(p) (edge ? _mm256_maskload_ps((p) + col, m_last) : _mm256_loadu_ps((p) + col))
                if (ep->bias) z = _mm256_add_ps(z, FD_LOAD_COL(ep->bias));
                if (ep->scale) z = _mm256_mul_ps(z, FD_LOAD_COL(ep->scale));
                if (ep->shift) z = _mm256_add_ps(z, FD_LOAD_COL(ep->shift));
#undef FD_LOAD_COL
                if (ep->relu) { /* +0 for z <= 0, NaN kept (as fd_relu_f32) */
                    const __m256 keep = _mm256_or_ps(
                        _mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_GT_OQ),
                        _mm256_cmp_ps(z, z, _CMP_UNORD_Q));
                    z = _mm256_and_ps(z, keep);
                }
                if (ep->mask) { /* 8 bits -> 8 lanes: lane l kept iff bit l set */
                    const int cnt = v == nv - 1 ? (int)(nr - 8 * (nv - 1)) : 8;
                    const __m256i b = _mm256_set1_epi32(
                        (int)fd_mask_bits(ep->mask, rowbit + 8 * (uint64_t)v, cnt));
                    const __m256i kept = _mm256_cmpeq_epi32(_mm256_and_si256(b, bitsel), bitsel);
                    z = _mm256_and_ps(_mm256_mul_ps(z, vms), _mm256_castsi256_ps(kept));
                }
            }
            if (!edge) _mm256_storeu_ps(ci + 8 * v, z);
            else _mm256_maskstore_ps(ci + 8 * v, m_last, z);
        }
    }
}

/* one case per row count; one or two ymm columns */
#define FD_TILE_CASES(direct)                                                              \
    switch (mr) {                                                                          \
    FD_TILE_CASE(1, direct) FD_TILE_CASE(2, direct) FD_TILE_CASE(3, direct)                \
    FD_TILE_CASE(4, direct) FD_TILE_CASE(5, direct) default: FD_TILE_CASE(MR, direct)      \
    }
#define FD_TILE_CASE(r, direct)                                                            \
    case r:                                                                                \
        if (nr > 8) tile(r, 2, direct, k, alpha, ap, bp, rs_b, beta, c, rs_c, nr, te);     \
        else tile(r, 1, direct, k, alpha, ap, bp, rs_b, beta, c, rs_c, nr, te);            \
        break;

static void ukr_6x16(int64_t k, float alpha, const float *ap, const float *bp, float beta,
                     float *c, int64_t rs_c, int64_t mr, int64_t nr)
{
    const int64_t rs_b = NR;
    const fd_tile_ep *const te = NULL;
    FD_TILE_CASES(0)
}

static void ukr_ub_6x16(int64_t k, float alpha, const float *ap, const float *bp,
                        int64_t rs_b, float beta, float *c, int64_t rs_c, int64_t mr,
                        int64_t nr)
{
    const fd_tile_ep *const te = NULL;
    FD_TILE_CASES(1)
}

static void ukr_ep_6x16(int64_t k, float alpha, const float *ap, const float *bp,
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
/* out[l] = horizontal sum of v[l], l < cnt (cnt <= 8): a transpose-add tree. */
static inline __attribute__((always_inline)) void hsum8(const int cnt, const __m256 *v, float *out)
{
    __m256 t[4], u[2];
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++) {
        const __m256 x = 2 * q < cnt ? v[2 * q] : _mm256_setzero_ps();
        const __m256 y = 2 * q + 1 < cnt ? v[2 * q + 1] : _mm256_setzero_ps();
        t[q] = _mm256_add_ps(_mm256_unpacklo_ps(x, y), _mm256_unpackhi_ps(x, y));
    }
#pragma GCC unroll 2
    for (int q = 0; q < 2; q++) {
        const __m256d x = _mm256_castps_pd(t[2 * q]), y = _mm256_castps_pd(t[2 * q + 1]);
        u[q] = _mm256_add_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(x, y)),
                             _mm256_castpd_ps(_mm256_unpackhi_pd(x, y)));
    }
    /* u[q] 128-bit half h holds half h's sums of v[4q..4q+3]: add the halves */
    const __m256 s = _mm256_add_ps(_mm256_permute2f128_ps(u[0], u[1], 0x20),
                                   _mm256_permute2f128_ps(u[0], u[1], 0x31));
    _mm256_maskstore_ps(out, lane_mask(cnt), s);
}

/* Keeps a loaded vector in a register: otherwise GCC folds the load into each of the R
 * FMAs that use it, and R loads per B vector make the loop load-bound. */
#define FD_IN_REGISTER(v) __asm__("" : "+v"(v))

/* D(R × J) = A(R × k)·Bt(J × k)ᵀ, R and J compile-time, R*J <= 12. */
static inline __attribute__((always_inline)) void
dot_block(const int R, const int J, int64_t k, const float *a, int64_t lda, const float *bt,
          int64_t ldbt, float *d, int64_t ldd)
{
    __m256 acc[12];
#pragma GCC unroll 12
    for (int q = 0; q < R * J; q++) acc[q] = _mm256_setzero_ps();
    int64_t p = 0;
    for (; p + 8 <= k; p += 8) {
        __m256 x[DOT_R];
#pragma GCC unroll 2
        for (int r = 0; r < R; r++) x[r] = _mm256_loadu_ps(a + r * lda + p);
#pragma GCC unroll 6
        for (int j = 0; j < J; j++) {
            __m256 w = _mm256_loadu_ps(bt + j * ldbt + p);
            FD_IN_REGISTER(w);
#pragma GCC unroll 2
            for (int r = 0; r < R; r++) acc[r * J + j] = _mm256_fmadd_ps(x[r], w, acc[r * J + j]);
        }
    }
    if (p < k) {
        const __m256i mk = lane_mask(k - p);
        __m256 x[DOT_R];
#pragma GCC unroll 2
        for (int r = 0; r < R; r++) x[r] = _mm256_maskload_ps(a + r * lda + p, mk);
#pragma GCC unroll 6
        for (int j = 0; j < J; j++) {
            __m256 w = _mm256_maskload_ps(bt + j * ldbt + p, mk);
            FD_IN_REGISTER(w);
#pragma GCC unroll 2
            for (int r = 0; r < R; r++) acc[r * J + j] = _mm256_fmadd_ps(x[r], w, acc[r * J + j]);
        }
    }
    float s[16];
    hsum8(R * J < 8 ? R * J : 8, acc, s);
    if (R * J > 8) hsum8(R * J - 8, acc + 8, s + 8);
#pragma GCC unroll 2
    for (int r = 0; r < R; r++)
#pragma GCC unroll 6
        for (int j = 0; j < J; j++) d[r * ldd + j] = s[r * J + j];
}

/* D(R × jw) for jw <= 6 columns, R compile-time. */
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
    default: dot_block(R, 6, k, a, lda, bt, ldbt, d, ldd); break;
    }
}

/* Rows in pairs (A rows stay in L1 across the column groups), columns in near-equal
 * groups of at most 6 (n = 10: 5 + 5). */
static void dot_kernel(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                      const float *bt, int64_t ldbt, float *d, int64_t ldd)
{
    const int64_t groups = (n + 5) / 6, jmax = (n + groups - 1) / groups;
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

const fd_gemm_params fd_gemm_params_avx2 = {MR, NR, 144, 256, 2048, ukr_6x16};
const fd_gemm_ext fd_gemm_ext_avx2 = {dot_kernel, ukr_ub_6x16, fd_gemm_row_avx2, ukr_ep_6x16};

/* ukr_avx512bf16_14x32.c — the AVX512-BF16 bf16 GEMM micro-kernel (vdpbf16ps), the
 * fp32 -> bf16 conversion (vcvtne2ps2bf16) and the vector pairs-layout packing.  Compiled
 * with -mavx512bf16 on top of the AVX-512 flags; chosen at run time (bf16.c).
 *
 * 14 × 32 register block: 28 accumulators, 2 B vectors, 1 broadcast A pair = 31 of the 32
 * zmm registers.  Each vdpbf16ps adds two exact bf16 products to an fp32 lane (denormals
 * flushed, round to nearest even).  On Zen 5 (measured: vdpbf16ps zmm 2 per cycle, latency
 * 6 cycles, as vfmadd231ps zmm 2 per cycle) the 14×32 loop runs at ~2 vdpbf16ps per cycle
 * from L1/L2, so the kernel itself is at the unit's peak (~1.9× the fp32 FMA kernel's
 * flops); what the frame adds is packing, which this file vectorises.
 *
 * Edge tiles run kernels of their own height and width (rows 1..14, 16 or 32 columns):
 * a 2-row tail tile (M = 128 = 9·14 + 2) does 2/14 of the work, not all of it.  Every
 * variant accumulates each element of C in the same order (k pairs ascending), so a
 * tile's values do not depend on the tile shape: any thread count gives the same bits. */
#include "bf16.h"

#ifdef FD_HAVE_AVX512BF16 /* setup.py defines it when it compiles this file with its flags */

#include <immintrin.h>

#define MR 14
#define NR 32

void fd_bf16_cvt_avx512bf16(int64_t n, const float *src, uint16_t *dst)
{
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m512 lo = _mm512_loadu_ps(src + i), hi = _mm512_loadu_ps(src + i + 16);
        const __m512bh v = _mm512_cvtne2ps_pbh(hi, lo);
        _mm512_storeu_si512((void *)(dst + i), (__m512i)v);
    }
    for (; i < n; i += 16) {
        const int64_t r = n - i < 16 ? n - i : 16;
        const __mmask16 mk = (__mmask16)((1u << r) - 1u);
        const __m256bh v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mk, src + i));
        _mm256_mask_storeu_epi16((void *)(dst + i), mk, (__m256i)v);
    }
}

/* ------------------------------------------------------------------ micro-kernels */
static inline __attribute__((always_inline)) void
ukr_body(const int MT, const int NT, int64_t kcp, float alpha, const uint32_t *ap,
         const uint32_t *bp, float beta, float *c, int64_t rs_c, int64_t nr)
{
    __m512 acc[MR][2];
#pragma GCC unroll 14
    for (int i = 0; i < MT; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    const int64_t k2 = kcp / 2;
    for (int64_t q = 0; q < k2; q++) {
        const __m512bh b0 = (__m512bh)_mm512_load_si512((const void *)(bp + q * NR));
        const __m512bh b1 = NT > 1 ? (__m512bh)_mm512_load_si512((const void *)(bp + q * NR + 16))
                                   : b0;
        const uint32_t *a = ap + q * MR;
#pragma GCC unroll 14
        for (int i = 0; i < MT; i++) {
            const __m512bh av = (__m512bh)_mm512_set1_epi32((int)a[i]);
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], av, b0);
            if (NT > 1) acc[i][1] = _mm512_dpbf16_ps(acc[i][1], av, b1);
        }
    }
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    const __mmask16 m0 = nr >= 16 ? 0xFFFF : (__mmask16)((1u << nr) - 1u);
    const __mmask16 m1 = nr >= 32 ? 0xFFFF : nr <= 16 ? 0 : (__mmask16)((1u << (nr - 16)) - 1u);
#pragma GCC unroll 14
    for (int i = 0; i < MT; i++) {
        float *ci = c + i * rs_c;
        __m512 z0 = _mm512_mul_ps(va, acc[i][0]);
        if (beta != 0.0f) z0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, ci), z0);
        _mm512_mask_storeu_ps(ci, m0, z0);
        if (NT > 1) {
            __m512 z1 = _mm512_mul_ps(va, acc[i][1]);
            if (beta != 0.0f) z1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, ci + 16), z1);
            _mm512_mask_storeu_ps(ci + 16, m1, z1);
        }
    }
}

typedef void (*ukr_var_fn)(int64_t, float, const uint32_t *, const uint32_t *, float, float *,
                           int64_t, int64_t);
#define UKR_VAR(mt, nt)                                                                     \
    static void ukr_##mt##x##nt(int64_t kcp, float alpha, const uint32_t *ap,               \
                                const uint32_t *bp, float beta, float *c, int64_t rs_c,     \
                                int64_t nr)                                                 \
    {                                                                                       \
        ukr_body(mt, nt, kcp, alpha, ap, bp, beta, c, rs_c, nr);                            \
    }
#define UKR_ROWS(mt) UKR_VAR(mt, 1) UKR_VAR(mt, 2)
UKR_ROWS(1) UKR_ROWS(2) UKR_ROWS(3) UKR_ROWS(4) UKR_ROWS(5) UKR_ROWS(6) UKR_ROWS(7)
UKR_ROWS(8) UKR_ROWS(9) UKR_ROWS(10) UKR_ROWS(11) UKR_ROWS(12) UKR_ROWS(13) UKR_ROWS(14)
#define UKR_PAIR(mt) {ukr_##mt##x1, ukr_##mt##x2}
static const ukr_var_fn ukr_table[MR][2] = {
    UKR_PAIR(1), UKR_PAIR(2), UKR_PAIR(3), UKR_PAIR(4), UKR_PAIR(5), UKR_PAIR(6), UKR_PAIR(7),
    UKR_PAIR(8), UKR_PAIR(9), UKR_PAIR(10), UKR_PAIR(11), UKR_PAIR(12), UKR_PAIR(13),
    UKR_PAIR(14)};

static void ukr_14x32(int64_t kcp, float alpha, const void *ap, const void *bp, float beta,
                      float *c, int64_t rs_c, int64_t mr, int64_t nr)
{
    if (mr <= 0 || nr <= 0) return;
    ukr_table[(mr > MR ? MR : mr) - 1][nr > 16](kcp, alpha, ap, bp, beta, c, rs_c, nr);
}

/* ------------------------------------------------------------------ packing */
static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

static inline __mmask16 lanes16(int64_t n)
{
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u);
}

/* 32 consecutive elements of X (n of them valid, the rest zero) as bf16: 16 pair words */
static inline __m512i load32(const fd_opnd *X, int64_t off, int64_t n)
{
    if (n >= 32) { /* the common case: no masks */
        if (X->is16) return _mm512_loadu_si512((const void *)((const uint16_t *)X->p + off));
        const float *s = (const float *)X->p + off;
        return (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(s + 16), _mm512_loadu_ps(s));
    }
    if (n <= 0) return _mm512_setzero_si512();
    if (X->is16) {
        const __mmask32 mk = n >= 32 ? 0xFFFFFFFFu : (__mmask32)((1u << n) - 1u);
        return _mm512_maskz_loadu_epi16(mk, (const uint16_t *)X->p + off);
    }
    const float *s = (const float *)X->p + off;
    const __m512 lo = _mm512_maskz_loadu_ps(lanes16(n), s);
    const __m512 hi = _mm512_maskz_loadu_ps(lanes16(n - 16), s + 16);
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

/* 16 consecutive elements (n valid) as 16 bf16 in a ymm */
static inline __m256i load16(const fd_opnd *X, int64_t off, int64_t n)
{
    if (n <= 0) return _mm256_setzero_si256();
    if (X->is16 && n >= 16) return _mm256_loadu_si256((const __m256i *)((const uint16_t *)X->p + off));
    if (X->is16) return _mm256_maskz_loadu_epi16(lanes16(n), (const uint16_t *)X->p + off);
    return (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(lanes16(n), (const float *)X->p + off));
}

/* r[t] (16 dwords each) -> r[j] holds old column j */
static inline void transpose16(__m512i r[16])
{
    __m512i a[16], b[16];
    for (int k = 0; k < 8; k++) {
        a[2 * k] = _mm512_unpacklo_epi32(r[2 * k], r[2 * k + 1]);
        a[2 * k + 1] = _mm512_unpackhi_epi32(r[2 * k], r[2 * k + 1]);
    }
    for (int k = 0; k < 4; k++) {
        b[4 * k + 0] = _mm512_unpacklo_epi64(a[4 * k], a[4 * k + 2]);
        b[4 * k + 1] = _mm512_unpackhi_epi64(a[4 * k], a[4 * k + 2]);
        b[4 * k + 2] = _mm512_unpacklo_epi64(a[4 * k + 1], a[4 * k + 3]);
        b[4 * k + 3] = _mm512_unpackhi_epi64(a[4 * k + 1], a[4 * k + 3]);
    }
    /* b[4k + c], 128-bit lane L: rows 4k..4k+3 of column 4L + c */
    for (int c = 0; c < 4; c++) {
        const __m512i c1 = _mm512_shuffle_i32x4(b[c], b[4 + c], 0x88);
        const __m512i c2 = _mm512_shuffle_i32x4(b[c], b[4 + c], 0xDD);
        const __m512i d1 = _mm512_shuffle_i32x4(b[8 + c], b[12 + c], 0x88);
        const __m512i d2 = _mm512_shuffle_i32x4(b[8 + c], b[12 + c], 0xDD);
        r[c] = _mm512_shuffle_i32x4(c1, d1, 0x88);
        r[8 + c] = _mm512_shuffle_i32x4(c1, d1, 0xDD);
        r[4 + c] = _mm512_shuffle_i32x4(c2, d2, 0x88);
        r[12 + c] = _mm512_shuffle_i32x4(c2, d2, 0xDD);
    }
}

static int pack_pairs_avx512bf16(const fd_opnd *X, int64_t i0, int64_t p0, int64_t extent,
                                 int64_t kc, int64_t kcp, int W, uint32_t *dst)
{
    const int64_t k2 = kcp / 2, panels = (extent + W - 1) / W, pw = k2 * W;
    if (X->cs == 1 && X->rs != 1) {
        /* X(i, p) contiguous along p: a row's bf16 values are its pair words; 16 rows ×
         * 16 words are transposed in registers into 16 k-pair rows of the panel */
        for (int64_t pn = 0; pn < panels; pn++) {
            uint32_t *D = dst + pn * pw;
            for (int g = 0; g < W; g += 16) {
                const int rows = W - g < 16 ? W - g : 16;
                const __mmask16 sm = lanes16(rows);
                const int64_t ib = pn * W + g; /* first row of the group */
                const int valid = (int)(extent - ib < rows ? (extent - ib > 0 ? extent - ib : 0) : rows);
                for (int64_t q0 = 0; q0 < k2; q0 += 16) {
                    __m512i r[16];
                    const int64_t ne = kc - 2 * q0;
                    for (int t = 0; t < 16; t++)
                        r[t] = t < valid ? load32(X, (i0 + ib + t) * X->rs + p0 + 2 * q0, ne)
                                         : _mm512_setzero_si512();
                    transpose16(r);
                    const int qn = (int)min64(16, k2 - q0);
                    if (rows == 16)
                        for (int u = 0; u < qn; u++) _mm512_storeu_si512((void *)(D + (q0 + u) * W + g), r[u]);
                    else
                        for (int u = 0; u < qn; u++)
                            _mm512_mask_storeu_epi32(D + (q0 + u) * W + g, sm, r[u]);
                }
            }
        }
        return 0;
    }
    if (X->rs == 1) {
        /* X(i, p) contiguous along i: rows 2q and 2q+1 (16 values each) -> one vpermw
         * interleave -> 16 pair words */
        const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10,
                                             25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3,
                                             18, 2, 17, 1, 16, 0);
        /* QB k pairs (2·QB source rows) at a time, panel by panel: each panel gets QB·W
         * consecutive words per visit (one word row at a time would store to every
         * panel in turn, kcp·64 bytes apart: one L1 set for all of them) */
        enum { QB = 8 };
        for (int64_t q0 = 0; q0 < k2; q0 += QB) {
            const int64_t q1 = min64(k2, q0 + QB);
            for (int64_t pn = 0; pn < panels; pn++) {
                for (int64_t q = q0; q < q1; q++) {
                    const int64_t pa = 2 * q, pb = 2 * q + 1;
                    const int has_a = pa < kc, has_b = pb < kc;
                    uint32_t *D = dst + pn * pw + q * W;
                    for (int g = 0; g < W; g += 16) {
                        const int lanes = W - g < 16 ? W - g : 16;
                        const int64_t ib = pn * W + g;
                        const int64_t n = min64(extent - ib, lanes);
                        __m512i v;
                        if (!X->is16 && has_a) {
                            const __mmask16 mk = lanes16(n);
                            const float *s = (const float *)X->p + (p0 + pa) * X->cs + i0 + ib;
                            const __m512 lo = _mm512_maskz_loadu_ps(mk, s);
                            const __m512 hi = has_b ? _mm512_maskz_loadu_ps(mk, s + X->cs)
                                                    : _mm512_setzero_ps();
                            v = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
                        } else {
                            const __m256i lo = has_a ? load16(X, (p0 + pa) * X->cs + i0 + ib, n)
                                                     : _mm256_setzero_si256();
                            const __m256i hi = has_b ? load16(X, (p0 + pb) * X->cs + i0 + ib, n)
                                                     : _mm256_setzero_si256();
                            v = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
                        }
                        v = _mm512_permutexvar_epi16(idx, v);
                        if (lanes == 16) _mm512_storeu_si512((void *)(D + g), v);
                        else _mm512_mask_storeu_epi32(D + g, lanes16(lanes), v);
                    }
                }
            }
        }
        return 0;
    }
    return 1;
}

/* Blocks (Zen 5: 48 KiB L1d, 1 MiB L2 per core; Sapphire Rapids 48 KiB / 2 MiB): a KC×NR
 * sliver of B in bf16 is 512×32×2 = 32 KiB (L1), the MC×KC block of A 336×512×2 =
 * 336 KiB (L2). */
const fd_bf16_kernel fd_bf16_kernel_avx512bf16 = {
    "avx512bf16", MR, NR, 2, 0, 336, 512, 2048, ukr_14x32, fd_bf16_cvt_avx512bf16, NULL, NULL,
    pack_pairs_avx512bf16};

#endif /* FD_HAVE_AVX512BF16 */

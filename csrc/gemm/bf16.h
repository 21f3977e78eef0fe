/* bf16.h — the bf16 GEMM (fp32 in/out, bf16 operands, fp32 accumulation): the per-ISA
 * pieces bf16.c drives.  Not part of the public API (see fastdrop.h, fd_gemm_bf16).
 *
 * Packed layouts (kc padded with zeros to the kernel's k_align, extents to W):
 *   pairs:  dst[p2*W + i] = bf16(X(i, 2p2)) | bf16(X(i, 2p2+1)) << 16   (uint32 words)
 *           the vdpbf16ps layout (A and B panels of the AVX512-BF16 kernel) and the
 *           AMX B tile layout (VNNI: a tile row is 16 columns × 2 k values);
 *   rows:   dst[i*kcp + p] = bf16(X(i, p))                                (uint16)
 *           the AMX A tile layout (a tile row is 32 consecutive k values). */
#ifndef FD_GEMM_BF16_H
#define FD_GEMM_BF16_H

#include "internal.h"

/* fp32 -> bf16, round to nearest even; subnormal inputs become signed zero (as
 * vcvtne2ps2bf16 does: DAZ), NaN stays a quiet NaN. */
static inline uint16_t fd_bf16_from_f32(float x)
{
    uint32_t u;
    __builtin_memcpy(&u, &x, 4);
    if ((u & 0x7F800000u) == 0) return (uint16_t)((u >> 16) & 0x8000u);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float fd_f32_from_bf16(uint16_t h)
{
    const uint32_t u = (uint32_t)h << 16;
    float x;
    __builtin_memcpy(&x, &u, 4);
    return x;
}

/* n values src -> dst (bf16 bits) */
typedef void (*fd_bf16_cvt_fn)(int64_t n, const float *src, uint16_t *dst);

/* An operand of the bf16 GEMM: element (i, j) at p[i*rs + j*cs], fp32 or bf16 bits. */
typedef struct {
    const void *p;
    int is16;          /* elements are bf16 bits (uint16), else fp32 */
    int64_t rs, cs;
} fd_opnd;

/* Pairs-layout packing of the block X(i0 + i, p0 + p), i < extent, p < kc, into kcp (even)
 * columns and W-wide panels (panel q at dst + q*(kcp/2)*W words), zero padded; the
 * per-ISA vector version of bf16.c's pack_pairs, bit for bit.  0 done, 1 not handled
 * (strided operand): bf16.c's generic packing runs. */
typedef int (*fd_bf16_pack_fn)(const fd_opnd *X, int64_t i0, int64_t p0, int64_t extent,
                               int64_t kc, int64_t kcp, int W, uint32_t *dst);

/* C(mr×nr) := alpha·acc + beta·C (beta == 0: C not read), acc = Ap·Bp over kcp (a
 * multiple of the kernel's k_align) in fp32.  Ap, Bp in the kernel's packed layouts. */
typedef void (*fd_bf16_ukr_fn)(int64_t kcp, float alpha, const void *ap, const void *bp,
                               float beta, float *c, int64_t rs_c, int64_t mr, int64_t nr);

typedef struct {
    const char *name;
    int mr, nr, k_align;
    int a_rows;           /* 1: A panels in the rows layout (AMX), else pairs */
    int mc, kc, nc;
    fd_bf16_ukr_fn ukr;
    fd_bf16_cvt_fn cvt;
    int (*thread_enter)(void); /* per thread before its first tile (AMX tile config); 0 ok */
    void (*thread_exit)(void);
    fd_bf16_pack_fn pack_pairs; /* NULL: bf16.c's generic packing */
} fd_bf16_kernel;

void fd_bf16_cvt_ref(int64_t n, const float *src, uint16_t *dst);
#ifdef FD_HAVE_AVX512BF16
extern const fd_bf16_kernel fd_bf16_kernel_avx512bf16;
void fd_bf16_cvt_avx512bf16(int64_t n, const float *src, uint16_t *dst);
#endif
#ifdef FD_HAVE_AMX
extern const fd_bf16_kernel fd_bf16_kernel_amx;
#endif

/* frame.c's generic epilogue (bias, scale, shift, relu, mask) on rows × cols of C. */
void fd_gemm_apply_epilogue(float *c, int64_t ldc, int64_t r0, int64_t c0, int64_t rows,
                            int64_t cols, int64_t n, const fd_epilogue *ep);

#endif

/* conv_direct_avx512.c — small-K direct convolution kernels, AVX-512 (16 lanes). */
#ifdef FD_HAVE_AVX512
#include <immintrin.h>
#include <stdint.h>

#define FD_SFX(name) name##_avx512
#define VL 16
typedef __m512 vf;
#define VZERO() _mm512_setzero_ps()
#define VSET1(s) _mm512_set1_ps(s)
#define VLOADU(p) _mm512_loadu_ps(p)
#define VSTOREU(p, v) _mm512_storeu_ps((p), (v))
#define VFMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define VMAX0(v) _mm512_max_ps((v), _mm512_setzero_ps())
#define VMASK(n) ((__mmask16)((1u << (n)) - 1u))
#define VLOADN(p, n) _mm512_maskz_loadu_ps(VMASK(n), (p))
#define VSTOREN(p, v, n) _mm512_mask_storeu_ps((p), VMASK(n), (v))
#define VPOS(h, v) _mm512_maskz_mov_ps(_mm512_cmp_ps_mask((h), _mm512_setzero_ps(), _CMP_GT_OQ), (v))
#define VADD(a, b) _mm512_add_ps((a), (b))
#define VMUL(a, b) _mm512_mul_ps((a), (b))
#include "nn/conv_direct_impl.h"
#endif

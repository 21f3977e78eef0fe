/* conv_direct_avx2.c — small-K direct convolution kernels, AVX2 + FMA (8 lanes). */
#ifdef FD_HAVE_AVX2
#include <immintrin.h>
#include <stdint.h>

#define FD_SFX(name) name##_avx2
#define VL 8
typedef __m256 vf;
#define VZERO() _mm256_setzero_ps()
#define VSET1(s) _mm256_set1_ps(s)
#define VLOADU(p) _mm256_loadu_ps(p)
#define VSTOREU(p, v) _mm256_storeu_ps((p), (v))
#define VFMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define VMAX0(v) _mm256_max_ps((v), _mm256_setzero_ps())
static inline __m256i fd_lane_mask(int64_t n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
#define VLOADN(p, n) _mm256_maskload_ps((p), fd_lane_mask(n))
#define VSTOREN(p, v, n) _mm256_maskstore_ps((p), fd_lane_mask(n), (v))
#define VPOS(h, v) _mm256_and_ps(_mm256_cmp_ps((h), _mm256_setzero_ps(), _CMP_GT_OQ), (v))
#define VADD(a, b) _mm256_add_ps((a), (b))
#define VMUL(a, b) _mm256_mul_ps((a), (b))
#include "nn/conv_direct_impl.h"
#endif

/* conv_direct_ref.c — small-K direct convolution kernels, portable C (4-lane "vectors"
 * of plain floats: the same summation order as the SIMD paths, a*b+c unfused). */
#include <stdint.h>

typedef struct {
    float v[4];
} fd_v4f;

static inline fd_v4f v4_set1(float s) { fd_v4f r = {{s, s, s, s}}; return r; }
static inline fd_v4f v4_zero(void) { return v4_set1(0.0f); }
static inline fd_v4f v4_loadn(const float *p, int64_t n)
{
    fd_v4f r = {{0, 0, 0, 0}};
    for (int64_t i = 0; i < n; i++) r.v[i] = p[i];
    return r;
}
static inline void v4_storen(float *p, fd_v4f a, int64_t n)
{
    for (int64_t i = 0; i < n; i++) p[i] = a.v[i];
}
static inline fd_v4f v4_fma(fd_v4f a, fd_v4f b, fd_v4f c)
{
    for (int i = 0; i < 4; i++) c.v[i] = a.v[i] * b.v[i] + c.v[i];
    return c;
}
static inline fd_v4f v4_max0(fd_v4f a)
{
    for (int i = 0; i < 4; i++) a.v[i] = a.v[i] > 0.0f ? a.v[i] : (a.v[i] != a.v[i] ? a.v[i] : 0.0f);
    return a;
}

static inline fd_v4f v4_pos(fd_v4f h, fd_v4f v)
{
    for (int i = 0; i < 4; i++) v.v[i] = h.v[i] > 0.0f ? v.v[i] : 0.0f;
    return v;
}
static inline fd_v4f v4_add(fd_v4f a, fd_v4f b)
{
    for (int i = 0; i < 4; i++) a.v[i] += b.v[i];
    return a;
}
static inline fd_v4f v4_mul(fd_v4f a, fd_v4f b)
{
    for (int i = 0; i < 4; i++) a.v[i] *= b.v[i];
    return a;
}
#define VPOS(h, v) v4_pos((h), (v))
#define VADD(a, b) v4_add((a), (b))
#define VMUL(a, b) v4_mul((a), (b))

#define FD_SFX(name) name##_ref
#define VL 4
typedef fd_v4f vf;
#define VZERO() v4_zero()
#define VSET1(s) v4_set1(s)
#define VLOADU(p) v4_loadn((p), 4)
#define VSTOREU(p, v) v4_storen((p), (v), 4)
#define VFMA(a, b, c) v4_fma((a), (b), (c))
#define VMAX0(v) v4_max0(v)
#define VLOADN(p, n) v4_loadn((p), (n))
#define VSTOREN(p, v, n) v4_storen((p), (v), (n))
#include "nn/conv_direct_impl.h"

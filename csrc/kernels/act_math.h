/* act_math.h — the activation kernels' own vectorizable float32 transcendental functions
 * (exp, log1p, log, expm1, tanh, sigmoid, the normal CDF; see act_impl.h for their
 * accuracy).  Static inline, no libm calls, no FMA contraction: the same IEEE operations
 * in the same order on every ISA path.  Included by act_impl.h and act_rows.c. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#ifndef FD_ACT_MATH_DEFINED
#define FD_ACT_MATH_DEFINED
static inline uint32_t fda_bits(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
static inline float fda_float(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }

#define FDA_LN2_HI 0.693359375f        /* 9 significant bits: n * LN2_HI is exact */
#define FDA_LN2_LO -2.12194440e-4f
#define FDA_EXP_LO -87.33654f          /* ln(2^-126): below, e^x is 0 (flushed) */

/* e^(a + b) for a + b <= 88 (b a small low part of the argument; 0 for plain exp):
 * NaN propagates, a + b < -87.34 gives 0. */
static inline float fda_exp2(float a, float b) {
    const float x = a + b;
    const float xc = x < FDA_EXP_LO ? FDA_EXP_LO : x;
    const float big = xc * 1.44269504088896341f + 12582912.0f; /* 1.5 * 2^23 */
    const float n = big - 12582912.0f;                           /* round(x / ln2) */
    const uint32_t k = fda_bits(big) - 0x4B400000u;              /* n as an integer */
    const float r = ((a - n * FDA_LN2_HI) + b) - n * FDA_LN2_LO;
    float p = 1.382136019e-03f;
    p = p * r + 8.368669078e-03f;
    p = p * r + 4.166825861e-02f;
    p = p * r + 1.666652113e-01f;
    p = p * r + 4.999999404e-01f;
    const float er = 1.0f + (r + (r * r) * p);
    const float e = er * fda_float((k + 127u) << 23);
    return x < FDA_EXP_LO ? 0.0f : e;
}
static inline float fda_exp(float x) {
    const float xc = x < FDA_EXP_LO ? FDA_EXP_LO : x;
    const float big = xc * 1.44269504088896341f + 12582912.0f;
    const float n = big - 12582912.0f;
    const uint32_t k = fda_bits(big) - 0x4B400000u;
    const float r = (x - n * FDA_LN2_HI) - n * FDA_LN2_LO;
    float p = 1.382136019e-03f;
    p = p * r + 8.368669078e-03f;
    p = p * r + 4.166825861e-02f;
    p = p * r + 1.666652113e-01f;
    p = p * r + 4.999999404e-01f;
    const float er = 1.0f + (r + (r * r) * p);
    const float e = er * fda_float((k + 127u) << 23);
    return x < FDA_EXP_LO ? 0.0f : e;
}

/* log1p(f) for f in [-1/2, 1] */
static inline float fda_log1p_core(float f) {
    const float s = f / (2.0f + f);
    const float z = s * s;
    float q = 2.424491942e-01f;
    q = q * z + 2.144394964e-01f;
    q = q * z + 2.861520946e-01f;
    q = q * z + 3.999894857e-01f;
    q = q * z + 6.666667461e-01f;
    const float hfsq = 0.5f * (f * f);
    return f - (hfsq - s * (hfsq + z * q));
}

/* log(x) for positive normal finite x */
static inline float fda_log(float x) {
    const uint32_t ix = fda_bits(x) - 0x3f3504f3u;      /* sqrt(1/2) */
    const int32_t k = (int32_t)ix >> 23;
    const float m = fda_float((ix & 0x007fffffu) + 0x3f3504f3u);
    const float kf = (float)k;
    return kf * FDA_LN2_HI + (fda_log1p_core(m - 1.0f) + kf * FDA_LN2_LO);
}

/* expm1(x) for x <= 0 (-0 gives +0; -inf gives -1) */
static inline float fda_expm1_nonpos(float x) {
    float m = 1.438767940e-04f;
    m = m * x + 1.336395624e-03f;
    m = m * x + 8.307653479e-03f;
    m = m * x + 4.166021198e-02f;
    m = m * x + 1.666659117e-01f;
    m = m * x + 4.999999702e-01f;
    const float small = x + (x * x) * m;
    const float big = fda_exp(x) - 1.0f;
    return x > -0.693147182f ? small : big;
}

/* odd: computed on |x|, the sign of x copied in (tanh(-0) = -0) */
static inline float fda_tanh(float x) {
    const float ax = fabsf(x);
    const float w = ax * ax;
    float q = 2.152867382e-03f;
    q = q * w + -8.190169930e-03f;
    q = q * w + 2.170693688e-02f;
    q = q * w + -5.394818261e-02f;
    q = q * w + 1.333322078e-01f;
    q = q * w + -3.333333135e-01f;
    const float small = ax + ax * (w * q);
    const float e = fda_exp(-2.0f * ax);
    const float big = (1.0f - e) / (1.0f + e);
    const float r = ax < 0.625f ? small : big;
    return fda_float(fda_bits(r) | (fda_bits(x) & 0x80000000u));
}

/* e = exp(-|x|), s = 1/(1+e): sigmoid(x) = x >= 0 ? s : e s; sigmoid(1-sigmoid) = e s^2 */
static inline float fda_sigmoid(float x) {
    const float e = fda_exp(-fabsf(x));
    const float s = 1.0f / (1.0f + e);
    return x >= 0.0f ? s : e * s;
}

/* Phi(-|x|) = erfc(|x|/sqrt2)/2 for |x| < 14 (0 beyond); e2 = exp(-x^2/2) if wanted */
static inline float fda_phi_lower(float x, float *e2) {
    const float ax0 = fabsf(x);
    const float ax = ax0 < 14.0f ? ax0 : 14.0f;          /* NaN -> 14 (x carries the NaN) */
    const float xh = fda_float(fda_bits(ax) & 0xfffff000u); /* 12 significant bits */
    const float xl = ax - xh;
    const float a = -0.5f * (xh * xh);                     /* exact */
    const float b = -0.5f * (xl * (ax + xh));              /* x^2 = xh^2 + xl (x + xh) */
    const float t = 1.0f / (1.0f + ax * 0.353553391f);     /* 1 / (1 + y/2), y = x/sqrt2 */
    float p = 1.414155811e-01f;
    p = p * t + -6.617870331e-01f;
    p = p * t + 1.112246394e+00f;
    p = p * t + -6.375982761e-01f;
    p = p * t + -1.282000393e-01f;
    p = p * t + 2.633057162e-02f;
    p = p * t + 2.624425851e-02f;
    p = p * t + 3.883477747e-01f;
    p = p * t + 9.984396100e-01f;
    p = p * t + -1.265438795e+00f;
    if (e2) *e2 = fda_exp2(a, b);
    const float h = (0.5f * t) * fda_exp2(a, b + p);
    return ax0 < 14.0f ? h : 0.0f;
}

#define FDA_BIG 1.0e30f
static inline float fda_clamp_big(float x) { /* +-inf -> +-1e30; NaN stays */
    return x < -FDA_BIG ? -FDA_BIG : (x > FDA_BIG ? FDA_BIG : x);
}

/* gelu_tanh argument v = 2 sqrt(2/pi) (x + 0.044715 x^3) in double, split in hi + lo;
 * x clamped to [-12, 12] (sigmoid(v) is 0 or 1 beyond). */
#define FDA_GT_C1 1.5957691216057308
#define FDA_GT_C2 (1.5957691216057308 * 0.044715)
static inline float fda_gelu_tanh_sig(float x, float *es2) {
    const float xc = x < -12.0f ? -12.0f : (x > 12.0f ? 12.0f : x);
    const double xd = (double)xc;
    const double vd = xd * (FDA_GT_C1 + FDA_GT_C2 * (xd * xd));
    const float vh = (float)vd;
    const float vl = (float)(vd - (double)vh);
    /* e = exp(-|v|) */
    const float e = fda_exp2(vh < 0.0f ? vh : -vh, vh < 0.0f ? vl : -vl);
    const float s = 1.0f / (1.0f + e);
    if (es2) *es2 = e * (s * s);
    return vh >= 0.0f ? s : e * s;
}
#endif /* FD_ACT_MATH_DEFINED */

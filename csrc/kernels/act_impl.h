/* act_impl.h — activation and binary cross-entropy kernels written once in plain C and
 * compiled once per ISA (act_ref.c / act_avx2.c / act_avx512.c include this with FD_SFX
 * set), like elementwise_impl.h: simple branch-free loops the compiler vectorizes for
 * each ISA's registers.  Every path runs the same IEEE operations in the same order per
 * element (C11 mode: no FMA contraction; no fmaf, no libm calls), so results are bitwise
 * equal across paths.
 *
 * The transcendental functions are our own, vectorizable and accurate to a few ulp:
 *   exp      Cody–Waite reduction x = n ln2 + r, |r| <= ln2/2, e^r = 1 + r + r^2 E(r)
 *            (E degree 4, minimax relative error 3e-9), 2^n built in the exponent bits;
 *            an extra low part b (e^(a+b)) carries extended precision into r (gelu).
 *   log1p    f in [-1/2, 1]: s = f/(2+f), log1p(f) = 2 atanh(s) computed as
 *            f - (f^2/2 - s (f^2/2 + z Q(z))), z = s^2 <= 1/9 (Q degree 4, 1e-10).
 *   log      x = 2^k m, m in [sqrt(1/2), sqrt(2)), log = k ln2 + log1p(m - 1).
 *   expm1    x in [-ln2, 0]: x + x^2 M(x) (M degree 5, 2e-10); below: exp(x) - 1.
 *   tanh     |x| < 0.625: x + x w T(w), w = x^2 (T degree 5, 2e-10); else
 *            (1 - e)/(1 + e), e = exp(-2|x|).
 *   Phi      the normal CDF through erfc(y) = t exp(-y^2 + P(t)), t = 1/(1 + y/2)
 *            (P degree 9, 2.4e-7 in float), with y^2 = x^2/2 split exactly into a
 *            high part (12-bit x squared) and a low part, so the lower tail keeps its
 *            relative accuracy.
 * Polynomials: minimax fits (Lawson iteration on the relative error, coefficients
 * rounded to float one at a time with the rest refitted) made for fastdrop; the script
 * is csrc/kernels/act_fit.py. */
#include "act.h"

/* Let the vectorizer if-convert the selects below (it refuses to speculate float
 * operations that could trap otherwise).  This changes no result: IEEE operations,
 * rounding and order stay as written; only FP exception flags are not preserved. */
#pragma GCC optimize("no-trapping-math")

#include <math.h>
#include <stdint.h>
#include <string.h>

#define FD_CAT_(a, b) a##_##b
#define FD_CAT(a, b) FD_CAT_(a, b)
#define FD_FN(name) FD_CAT(name, FD_SFX)

#include "act_math.h"

/* ------------------------------------------------------------------ forward */
#define FDA_MAP(expr)                                                                    \
    for (int64_t i = 0; i < n; i++) {                                                    \
        const float v = x[i];                                                            \
        out[i] = (expr);                                                                 \
    }

void FD_FN(fd_act_fwd)(int act, int64_t n, float *out, const float *x, const float *p) {
    const float param = p[0];
    switch (act) {
    case FD_ACT_LINEAR:
        if (out != x) memmove(out, x, (size_t)n * sizeof(float));
        break;
    case FD_ACT_RELU:   /* +0 for x <= 0 (also -0); NaN propagates (as fd_relu) */
        FDA_MAP(v > 0.0f ? v : (v != v ? v : 0.0f));
        break;
    case FD_ACT_RELU6:
        FDA_MAP(v > 6.0f ? 6.0f : (v > 0.0f ? v : (v != v ? v : 0.0f)));
        break;
    case FD_ACT_LEAKY_RELU:
        FDA_MAP(v > 0.0f ? v : v * param);
        break;
    case FD_ACT_ELU:
        FDA_MAP(v >= 0.0f ? v : param * fda_expm1_nonpos(v));
        break;
    case FD_ACT_TANH:
        FDA_MAP(fda_tanh(v));
        break;
    case FD_ACT_SIGMOID:
        FDA_MAP(fda_sigmoid(v));
        break;
    case FD_ACT_SOFTPLUS:
        FDA_MAP((v > 0.0f ? v : 0.0f) + fda_log1p_core(fda_exp(-fabsf(v))));
        break;
    case FD_ACT_SILU:
        FDA_MAP((v < -FDA_BIG ? -FDA_BIG : v) * fda_sigmoid(v));
        break;
    case FD_ACT_GELU:
        for (int64_t i = 0; i < n; i++) {
            const float v = x[i];
            const float h = fda_phi_lower(v, NULL);
            const float phi = v < 0.0f ? h : 1.0f - h;
            out[i] = v < -14.0f ? -0.0f : v * phi;
        }
        break;
    case FD_ACT_GELU_TANH:
        FDA_MAP((v < -FDA_BIG ? -FDA_BIG : v) * fda_gelu_tanh_sig(v, NULL));
        break;
    case FD_ACT_HARD_SIGMOID:   /* as PyTorch: min(max(x + 3, 0), 6) / 6 */
        for (int64_t i = 0; i < n; i++) {
            const float u = x[i] + 3.0f;
            out[i] = (u > 6.0f ? 6.0f : (u > 0.0f ? u : (u != u ? u : 0.0f))) / 6.0f;
        }
        break;
    case FD_ACT_SOFTSIGN: {
        FDA_MAP(fda_clamp_big(v) / (1.0f + fabsf(fda_clamp_big(v))));
        break;
    }
    case FD_ACT_MISH:
        for (int64_t i = 0; i < n; i++) {
            const float v = x[i];
            const float sp = (v > 0.0f ? v : 0.0f) + fda_log1p_core(fda_exp(-fabsf(v)));
            out[i] = (v < -FDA_BIG ? -FDA_BIG : v) * fda_tanh(sp);
        }
        break;
    case FD_ACT_CELU:      /* x >= 0 ? x : alpha expm1(x / alpha) */
        FDA_MAP(v >= 0.0f ? v : param * fda_expm1_nonpos(v / param));
        break;
    case FD_ACT_HARD_SILU: /* x relu6(x + 3) / 6 */
        for (int64_t i = 0; i < n; i++) {
            const float v = x[i], u = v + 3.0f;
            const float hs = (u > 6.0f ? 6.0f : (u > 0.0f ? u : (u != u ? u : 0.0f))) / 6.0f;
            out[i] = v <= -3.0f ? -0.0f : v * hs;      /* -inf: the limit -0, not NaN */
        }
        break;
    case FD_ACT_HARD_TANH:
        FDA_MAP(v > 1.0f ? 1.0f : (v < -1.0f ? -1.0f : v));
        break;
    case FD_ACT_SOFT_SHRINK:
        FDA_MAP(v > param ? v - param : (v < -param ? v + param : (v != v ? v : 0.0f)));
        break;
    case FD_ACT_HARD_SHRINK:
        FDA_MAP((v > param || v < -param) ? v : (v != v ? v : 0.0f));
        break;
    case FD_ACT_TANH_SHRINK:  /* x - tanh x; |x| < 0.625: -(x^3 T(x^2)) without cancellation */
        for (int64_t i = 0; i < n; i++) {
            const float v = x[i];
            const float ax = fabsf(v);
            const float w = ax * ax;
            float q = 2.152867382e-03f;
            q = q * w + -8.190169930e-03f;
            q = q * w + 2.170693688e-02f;
            q = q * w + -5.394818261e-02f;
            q = q * w + 1.333322078e-01f;
            q = q * w + -3.333333135e-01f;
            const float small = -(ax * (w * q));
            const float e = fda_exp(-2.0f * ax);
            const float big = ax - (1.0f - e) / (1.0f + e);
            const float r = ax < 0.625f ? small : big;
            out[i] = fda_float(fda_bits(r) | (fda_bits(v) & 0x80000000u));
        }
        break;
    case FD_ACT_LOG_SIGMOID:  /* min(x, 0) - log1p(exp(-|x|)) */
        FDA_MAP((v < 0.0f ? v : 0.0f) - fda_log1p_core(fda_exp(-fabsf(v))));
        break;
    case FD_ACT_EXPONENTIAL:  /* above 88: exp(x/2)^2 (overflows to inf past 88.72) */
        for (int64_t i = 0; i < n; i++) {
            const float v = x[i];
            const float h = fda_exp(0.5f * (v > 176.0f ? 176.0f : v));
            const float big = h * h;
            out[i] = v > 88.0f ? big : fda_exp(v);
        }
        break;
    case FD_ACT_SPARSE_PLUS:
        FDA_MAP(v <= -1.0f ? 0.0f : (v >= 1.0f ? v : 0.25f * ((v + 1.0f) * (v + 1.0f))));
        break;
    case FD_ACT_SQUAREPLUS: /* (x + sqrt(x^2 + b)) / 2; x < 0: b / (2 (s - x)), no cancellation */
        for (int64_t i = 0; i < n; i++) {
            const float v = x[i], ax = fabsf(v);
            const float s = ax > 1e18f ? ax : sqrtf(v * v + param);
            out[i] = v >= 0.0f ? 0.5f * (v + s) : param / (2.0f * (s - v));
        }
        break;
    case FD_ACT_THRESHOLD:  /* x > threshold ? x : default_value (p[1]) */
        {
            const float dv = p[1];
            FDA_MAP(v > param ? v : dv);
        }
        break;
    case FD_ACT_RELU_ARGS:  /* Keras relu(x, negative_slope=p0, max_value=p1, threshold=p2) */
        {
            const float mx = p[1], t = p[2];
            const int has_max = mx < INFINITY;
            for (int64_t i = 0; i < n; i++) {
                const float v = x[i];
                float a = v > t ? v : (v != v ? v : 0.0f);
                const float ac = a > mx ? mx : (a < 0.0f ? 0.0f : a);
                a = has_max ? ac : a;
                const float neg = (t - v > 0.0f && param != 0.0f) ? param * (t - v) : 0.0f;
                out[i] = a - neg;
            }
        }
        break;
    case FD_ACT_SPARSE_SIGMOID:
        FDA_MAP(v <= -1.0f ? 0.0f : (v >= 1.0f ? 1.0f : 0.5f * (v + 1.0f)));
        break;
    case FD_ACT_SELU:      /* Keras / PyTorch constants */
        FDA_MAP(v >= 0.0f ? 1.05070098f * v
                          : (1.05070098f * 1.67326324f) * fda_expm1_nonpos(v));
        break;
    default:
        break;
    }
}

/* ----------------------------------------------------------------- backward */
#define FDA_MAP2(src, expr)                                                              \
    for (int64_t i = 0; i < n; i++) {                                                    \
        const float v = (src)[i], g = grad[i];                                           \
        out[i] = (expr);                                                                 \
    }

void FD_FN(fd_act_bwd)(int act, int64_t n, float *out, const float *grad, const float *z,
                       const float *y, const float *p) {
    const float param = p[0];
    switch (act) {
    case FD_ACT_LINEAR:
        if (out != grad) memmove(out, grad, (size_t)n * sizeof(float));
        break;
    case FD_ACT_RELU:
        FDA_MAP2(y, v > 0.0f ? g : 0.0f);
        break;
    case FD_ACT_RELU6:
        FDA_MAP2(y, (v > 0.0f && v < 6.0f) ? g : 0.0f);
        break;
    case FD_ACT_LEAKY_RELU:
        FDA_MAP2(y, v > 0.0f ? g : g * param);
        break;
    case FD_ACT_ELU:
        FDA_MAP2(y, v > 0.0f ? g : g * (v + param));
        break;
    case FD_ACT_TANH:
        FDA_MAP2(y, g * ((1.0f - v) * (1.0f + v)));
        break;
    case FD_ACT_SIGMOID:
        FDA_MAP2(y, g * (v * (1.0f - v)));
        break;
    case FD_ACT_SOFTPLUS:  /* sigmoid(z) = 1 - exp(-y) */
        FDA_MAP2(y, g * -fda_expm1_nonpos(-v));
        break;
    case FD_ACT_SILU:
        for (int64_t i = 0; i < n; i++) {
            const float v = z[i];
            const float e = fda_exp(-fabsf(v));
            const float s = 1.0f / (1.0f + e);
            const float sg = v >= 0.0f ? s : e * s;
            out[i] = grad[i] * (sg + fda_clamp_big(v) * (e * (s * s)));
        }
        break;
    case FD_ACT_GELU:
        for (int64_t i = 0; i < n; i++) {
            const float v = z[i];
            float e2;
            const float h = fda_phi_lower(v, &e2);
            const float phi = v < 0.0f ? h : 1.0f - h;
            out[i] = grad[i] * (phi + fda_clamp_big(v) * (e2 * 0.398942280f));
        }
        break;
    case FD_ACT_GELU_TANH:
        for (int64_t i = 0; i < n; i++) {
            const float v = z[i];
            const float vc = v < -12.0f ? -12.0f : (v > 12.0f ? 12.0f : v);
            float es2;
            const float sg = fda_gelu_tanh_sig(v, &es2);
            const float dv = (float)FDA_GT_C1 + (3.0f * (float)FDA_GT_C2) * (vc * vc);
            out[i] = grad[i] * (sg + fda_clamp_big(v) * (dv * es2));
        }
        break;
    case FD_ACT_HARD_SIGMOID:
        FDA_MAP2(y, (v > 0.0f && v < 1.0f) ? g / 6.0f : 0.0f);
        break;
    case FD_ACT_SOFTSIGN:
        FDA_MAP2(y, g * ((1.0f - fabsf(v)) * (1.0f - fabsf(v))));
        break;
    case FD_ACT_MISH:
        for (int64_t i = 0; i < n; i++) {
            const float v = z[i];
            const float e = fda_exp(-fabsf(v));
            const float sp = (v > 0.0f ? v : 0.0f) + fda_log1p_core(e);
            const float t = fda_tanh(sp);
            const float s = 1.0f / (1.0f + e);
            const float sg = v >= 0.0f ? s : e * s;
            out[i] = grad[i] * (t + fda_clamp_big(v) * (sg * ((1.0f - t) * (1.0f + t))));
        }
        break;
    case FD_ACT_CELU:
        FDA_MAP2(y, v > 0.0f ? g : g * (v / param + 1.0f));
        break;
    case FD_ACT_HARD_SILU:
        FDA_MAP2(z, v < -3.0f ? 0.0f : (v > 3.0f ? g : g * ((2.0f * v + 3.0f) / 6.0f)));
        break;
    case FD_ACT_HARD_TANH:
        FDA_MAP2(y, (v > -1.0f && v < 1.0f) ? g : 0.0f);
        break;
    case FD_ACT_SOFT_SHRINK:
    case FD_ACT_HARD_SHRINK:
        FDA_MAP2(z, (v > param || v < -param) ? g : 0.0f);
        break;
    case FD_ACT_TANH_SHRINK:  /* tanh^2 */
        for (int64_t i = 0; i < n; i++) {
            const float t = fda_tanh(z[i]);
            out[i] = grad[i] * (t * t);
        }
        break;
    case FD_ACT_LOG_SIGMOID:  /* sigmoid(-z) = -expm1(y) */
        FDA_MAP2(y, g * -fda_expm1_nonpos(v));
        break;
    case FD_ACT_EXPONENTIAL:
        FDA_MAP2(y, g * v);
        break;
    case FD_ACT_SPARSE_PLUS:
        FDA_MAP2(z, v <= -1.0f ? 0.0f : (v >= 1.0f ? g : g * (0.5f * (v + 1.0f))));
        break;
    case FD_ACT_SQUAREPLUS:   /* (1 + x/s) / 2; x < 0: b / (2 s (s - x)) */
        for (int64_t i = 0; i < n; i++) {
            const float v = z[i], ax = fabsf(v);
            const float s = ax > 1e18f ? ax : sqrtf(v * v + param);
            const float pos = ax > 1e18f ? 1.0f : 0.5f * (1.0f + (s > 0.0f ? v / s : 0.0f));
            const float neg = param / (2.0f * (s * (s - v)));
            out[i] = grad[i] * (v >= 0.0f ? pos : neg);
        }
        break;
    case FD_ACT_THRESHOLD:
        FDA_MAP2(z, v > param ? g : 0.0f);
        break;
    case FD_ACT_RELU_ARGS:
        {
            const float mx = p[1], t = p[2];
            const int has_max = mx < INFINITY;
            for (int64_t i = 0; i < n; i++) {
                const float v = z[i], g = grad[i];
                const int in_clip = !has_max || (v >= 0.0f && v <= mx);
                const float dp = (v > t && in_clip) ? g : 0.0f;
                out[i] = dp + (t - v > 0.0f ? g * param : 0.0f);
            }
        }
        break;
    case FD_ACT_SPARSE_SIGMOID:
        FDA_MAP2(y, (v > 0.0f && v < 1.0f) ? 0.5f * g : 0.0f);
        break;
    case FD_ACT_SELU:
        FDA_MAP2(y, v > 0.0f ? g * 1.05070098f : g * (v + 1.05070098f * 1.67326324f));
        break;
    default:
        break;
    }
}

/* ------------------------------------------------- binary cross-entropy rows */
/* Rows [r0, r1) of n x c: loss_rows[r] = w_r * mean_j term; grad = gscale w_r d term.
 * Row sums: 8 fixed partial accumulators combined in a fixed order (as fd_xent_rows),
 * so a row's result depends only on the row. */
#define FDA_L 8

static inline float fda_bce_logit_term(float zv, float tv, float *d) {
    const float e = fda_exp(-fabsf(zv));
    const float s = 1.0f / (1.0f + e);
    *d = (zv >= 0.0f ? s : e * s) - tv;
    return ((zv > 0.0f ? zv : 0.0f) - zv * tv) + fda_log1p_core(e);
}

/* term = -(t log pc + (1-t) log(1-pc)); log(1-pc) from log1p(-pc) below 1/2 (1 - pc is
 * then inexact) and from log(1 - pc) above (exact). */
static inline float fda_bce_prob_term(float pv, float tv, float eps, float hi, float *d) {
    const float pc = pv < eps ? eps : (pv > hi ? hi : pv);  /* NaN passes */
    const float q = 1.0f - pc;
    const float lp = fda_log(pc);
    const float lq = pc < 0.5f ? fda_log1p_core(-pc) : fda_log(q);
    const float dv = (pc - tv) / (pc * q);
    *d = (pv < eps || pv > hi) ? 0.0f : dv;
    return -(tv * lp + (1.0f - tv) * lq);
}

/* One body per (grad?, weights?) combination, chosen outside the loops so that each
 * loop is branch-free (and vectorizes even without masked stores).  c == 1: one
 * elementwise loop.  c > 1: blocks of whole rows (up to FDA_BUF elements) go through an
 * elementwise loop (terms to a stack buffer, unscaled gradients to grad), then each row
 * is summed with 8 fixed partial accumulators (lanes j mod 8, combined in lane order,
 * then the tail in order) and its gradient scaled: a row's result depends only on the
 * row, never on the block it falls in.  Rows longer than FDA_BUF go in chunks of FDA_BUF
 * (a multiple of 8: the same lanes). */
#define FDA_BUF 1024
static inline float fda_rowsum8(const float *v, int64_t len, float *acc, int last) {
    int64_t j = 0;
    for (; j + FDA_L <= len; j += FDA_L)
        for (int l = 0; l < FDA_L; l++) acc[l] += v[j + l];
    if (!last) return 0.0f;
    float sum = 0.0f;
    for (int l = 0; l < FDA_L; l++) sum += acc[l];
    for (; j < len; j++) sum += v[j];
    return sum;
}

#define FDA_BCE_ROWS(TERM)                                                               \
    do {                                                                                 \
        float tmp_[FDA_BUF];                                                             \
        if (c == 1) {                                                                    \
            for (int64_t i = r0; i < r1; i++) {                                          \
                float d;                                                                 \
                const float wi = HAS_W ? w[i] : 1.0f;                                    \
                const float term = TERM(x[i], t[i] * ta + tb, &d);                       \
                loss_rows[i] = (double)term * (double)wi;                                \
                if (HAS_G) grad[i] = d * (gscale * wi);                                  \
            }                                                                            \
            break;                                                                       \
        }                                                                                \
        const int64_t R_ = c <= FDA_BUF ? FDA_BUF / c : 1;                               \
        for (int64_t rb = r0; rb < r1; rb += R_) {                                       \
            const int64_t re = rb + R_ < r1 ? rb + R_ : r1;                              \
            const int64_t cw = c <= FDA_BUF ? c : FDA_BUF;  /* chunk width */            \
            float acc[FDA_L] = {0};                                                      \
            for (int64_t j0 = 0; j0 < c; j0 += cw) {                                     \
                const int64_t len = c - j0 < cw ? c - j0 : cw;                           \
                const int64_t nr = c <= FDA_BUF ? re - rb : 1;                           \
                for (int64_t rr = 0; rr < nr; rr++) {                                    \
                    const int64_t e0 = (rb + rr) * c + j0;                               \
                    float *tb_ = tmp_ + rr * len;                                        \
                    for (int64_t i = 0; i < len; i++) {                                  \
                        float d;                                                         \
                        tb_[i] = TERM(x[e0 + i], t[e0 + i] * ta + tb, &d);               \
                        if (HAS_G) grad[e0 + i] = d;                                     \
                    }                                                                    \
                }                                                                        \
                for (int64_t rr = 0; rr < nr; rr++) {                                    \
                    const int64_t r = rb + rr;                                           \
                    if (j0 == 0)                                                         \
                        for (int l = 0; l < FDA_L; l++) acc[l] = 0.0f;                   \
                    const int last = j0 + len == c;                                      \
                    const float sum = fda_rowsum8(tmp_ + rr * len, len, acc, last);      \
                    const float wi = HAS_W ? w[r] : 1.0f;                                \
                    if (HAS_G) {                                                         \
                        const float gs = gscale * wi;                                    \
                        float *gr = grad + r * c + j0;                                   \
                        for (int64_t i = 0; i < len; i++) gr[i] = gr[i] * gs;            \
                    }                                                                    \
                    if (last) loss_rows[r] = (double)sum / (double)c * (double)wi;       \
                }                                                                        \
            }                                                                            \
        }                                                                                \
    } while (0)

#define FDA_BCE_VARIANT(name, TERM, hg, hw)                                              \
    static void FD_FN(name)(int64_t r0, int64_t r1, int64_t c, const float *x,           \
                            const float *t, const float *w, float ta, float tb,          \
                            float eps, float hi, float gscale, float *grad,              \
                            double *loss_rows) {                                         \
        enum { HAS_G = hg, HAS_W = hw };                                                 \
        (void)eps; (void)hi; (void)w; (void)grad;                                        \
        FDA_BCE_ROWS(TERM);                                                              \
    }

#define FDA_LOGIT_TERM(zv, tv, d) fda_bce_logit_term(zv, tv, d)
#define FDA_PROB_TERM(pv, tv, d) fda_bce_prob_term(pv, tv, eps, hi, d)
FDA_BCE_VARIANT(bcel_00, FDA_LOGIT_TERM, 0, 0)
FDA_BCE_VARIANT(bcel_01, FDA_LOGIT_TERM, 0, 1)
FDA_BCE_VARIANT(bcel_10, FDA_LOGIT_TERM, 1, 0)
FDA_BCE_VARIANT(bcel_11, FDA_LOGIT_TERM, 1, 1)
FDA_BCE_VARIANT(bcep_00, FDA_PROB_TERM, 0, 0)
FDA_BCE_VARIANT(bcep_01, FDA_PROB_TERM, 0, 1)
FDA_BCE_VARIANT(bcep_10, FDA_PROB_TERM, 1, 0)
FDA_BCE_VARIANT(bcep_11, FDA_PROB_TERM, 1, 1)

void FD_FN(fd_bce_logits_rows)(int64_t r0, int64_t r1, int64_t c, const float *z,
                               const float *t, const float *w, float ls, float gscale,
                               float *grad, double *loss_rows) {
    const float ta = 1.0f - ls, tb = 0.5f * ls;
    if (grad)
        (w ? FD_FN(bcel_11) : FD_FN(bcel_10))(r0, r1, c, z, t, w, ta, tb, 0.0f, 1.0f, gscale,
                                              grad, loss_rows);
    else
        (w ? FD_FN(bcel_01) : FD_FN(bcel_00))(r0, r1, c, z, t, w, ta, tb, 0.0f, 1.0f, gscale,
                                              grad, loss_rows);
}

void FD_FN(fd_bce_probs_rows)(int64_t r0, int64_t r1, int64_t c, const float *p,
                              const float *t, const float *w, float ls, float eps,
                              float gscale, float *grad, double *loss_rows) {
    const float ta = 1.0f - ls, tb = 0.5f * ls, hi = 1.0f - eps;
    if (grad)
        (w ? FD_FN(bcep_11) : FD_FN(bcep_10))(r0, r1, c, p, t, w, ta, tb, eps, hi, gscale,
                                              grad, loss_rows);
    else
        (w ? FD_FN(bcep_01) : FD_FN(bcep_00))(r0, r1, c, p, t, w, ta, tb, eps, hi, gscale,
                                              grad, loss_rows);
}

#undef FDA_MAP
#undef FDA_MAP2

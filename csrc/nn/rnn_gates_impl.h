/* rnn_gates_impl.h — the recurrent cells' pointwise gate kernels, written once in plain C
 * and compiled once per ISA (rnn_gates_ref.c / _avx2.c / _avx512.c include this with
 * FD_SFX set) so the compiler vectorises each copy for that ISA.  Loops are simple,
 * restrict-qualified and branch-free (selects), so they vectorise; the activation kind is
 * loop-invariant (the switch is outside the loops).
 *
 * sigmoid and tanh use a branch-free exp of a non-positive argument (Cody–Waite
 * reduction + degree-6 polynomial, as the softmax kernel): sigmoid(x) from e = exp(-|x|),
 * tanh(x) from e = exp(-2|x|) for |x| >= 0.625 and an odd polynomial below (no
 * cancellation in 1 - e): relative error a few ulp over the whole range. */
#ifndef FD_RNN_GATES_TABLE
#define FD_RNN_GATES_TABLE
#include <stdint.h>

typedef struct {
    void (*act)(int kind, int64_t n, float *y, const float *x);
    /* dz = dy * act'(.) given the activation output y */
    void (*dact)(int kind, int64_t n, float *dz, const float *dy, const float *y);
    /* LSTM: g (4u) pre-activations in, gate values out; c = f*cp + i*g; h = o*act(c) */
    void (*lstm_fwd)(int64_t u, int act, int rec, float *g, const float *cp, float *c,
                     float *h, float *tmp);
    /* g: gate values in, dz out (i, f, c, o); dc: in dc_t (carry), out dc_{t-1};
     * dh: dL/dh_t (read); tmp: 3u floats */
    void (*lstm_bwd)(int64_t u, int act, int rec, float *g, const float *c, const float *cp,
                     const float *dh, float *dc, float *tmp);
    /* GRU reset_after: g (3u) = [x_z+hU_z, x_r+hU_r, x_h] pre-acts in, [z, r, hh] out;
     * rh = h_{t-1}·U_h + b_rh; h = z*hp + (1-z)*hh, hh = act(x_h + r*rh) */
    void (*gru_ra_fwd)(int64_t u, int act, int rec, float *g, const float *rh,
                       const float *hp, float *h);
    /* g: values in, dz (input side) out; rh: in, out d(rh); dhp = z*dh */
    void (*gru_ra_bwd)(int64_t u, int act, int rec, float *g, float *rh, const float *hp,
                       const float *dh, float *dhp, float *tmp);
    /* GRU reset_before, second half: g_h pre-act in, hh out; h = z*hp + (1-z)*hh */
    void (*gru_rb_fwd2)(int64_t u, int act, float *g, const float *hp, float *h);
    /* first half of backward: g z part -> dz_pre, h part -> da (pre-act grad); dhp = z*dh */
    void (*gru_rb_bwd1)(int64_t u, int act, int rec, float *g, const float *hp,
                        const float *dh, float *dhp, float *tmp);
    /* second half: dA3 = da·U_hᵀ; g r part -> dr_pre = dA3*hdh*r'(.), dhd = dA3*r */
    void (*gru_rb_bwd2)(int64_t u, int rec, float *g, const float *dA3, const float *hdh,
                        float *dhd, float *tmp);
    /* SimpleRNN: d = dy * act'(.) from the pre-activation z (kept by the simple cell) or
     * the output y; d may alias z or dy.  Family activations that need z (gelu, silu,
     * ...) are available here. */
    void (*dact_zy)(int kind, int64_t n, float *d, const float *dy, const float *z,
                    const float *y);
} fd_rnn_gates;

extern const fd_rnn_gates fd_rnn_gates_ref;
#ifdef FD_HAVE_AVX2
extern const fd_rnn_gates fd_rnn_gates_avx2;
#endif
#ifdef FD_HAVE_AVX512
extern const fd_rnn_gates fd_rnn_gates_avx512;
#endif
#endif /* FD_RNN_GATES_TABLE */

#ifdef FD_SFX
#include "../internal.h"
#include "../kernels/act.h"
#include "rnn.h"

#include <math.h>

#define FD_RG_CAT_(a, b) a##_##b
#define FD_RG_CAT(a, b) FD_RG_CAT_(a, b)
#define FD_RG(name) FD_RG_CAT(name, FD_SFX)

/* GCC (12) if-converts the selects below only when it may assume FP operations do not
 * trap; with the default -ftrapping-math every loop that calls rg_sigmoid / rg_tanh stays
 * scalar ("control flow in loop").  The flag changes no result (no reassociation, no
 * contraction: each element gets the same IEEE operations), only lets the loops vectorise. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")
#endif

static inline float rg_exp_nonpos(float x) {
    const float xc = x < -87.0f ? -87.0f : x;
    const float t = xc * 1.44269504088896341f;
    const float n = (t + 12582912.0f) - 12582912.0f;
    const float r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;
    float p = 1.3888949e-3f;
    p = p * r + 8.3333404e-3f;
    p = p * r + 4.1666672e-2f;
    p = p * r + 1.6666666e-1f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union { int32_t i; float f; } s;
    s.i = ((int32_t)n + 127) << 23;
    const float e = p * s.f;
    return x < -87.0f ? 0.0f : e;
}

static inline float rg_sigmoid(float x) {
    const float ax = x < 0.0f ? -x : x;
    const float e = rg_exp_nonpos(-ax);
    const float s = 1.0f / (1.0f + e);
    return x >= 0.0f ? s : e * s;
}

static inline float rg_tanh(float x) {
    const float ax = x < 0.0f ? -x : x;
    const float z = x * x;
    float p = -5.70498872745e-3f;
    p = p * z + 2.06390887954e-2f;
    p = p * z - 5.37397155531e-2f;
    p = p * z + 1.33314422036e-1f;
    p = p * z - 3.33332819422e-1f;
    const float small = p * z * x + x;
    const float e = rg_exp_nonpos(-2.0f * ax);
    const float big = (1.0f - e) / (1.0f + e);
    const float bs = x < 0.0f ? -big : big;
    return ax < 0.625f ? small : bs;
}

static inline float rg_hard_sigmoid(float x) {
    float y = x * (1.0f / 6.0f) + 0.5f;
    y = y < 0.0f ? 0.0f : y;
    return y > 1.0f ? 1.0f : y;
}

/* parameters of a family activation (FD_RNN_ACT_FAMILY + code): Keras's defaults */
static inline void rg_fam_params(int code, float *p) {
    p[0] = code == FD_ACT_LEAKY_RELU ? 0.2f
           : (code == FD_ACT_ELU || code == FD_ACT_CELU) ? 1.0f
           : (code == FD_ACT_SOFT_SHRINK || code == FD_ACT_HARD_SHRINK) ? 0.5f
           : code == FD_ACT_SQUAREPLUS ? 4.0f : 0.0f;
    p[1] = INFINITY;
    p[2] = 0.0f;
}

static void FD_RG(rg_fam_fwd)(int kind, int64_t n, float *y, const float *x) {
    float p[FD_ACT_NPARAMS];
    rg_fam_params(kind - FD_RNN_ACT_FAMILY, p);
    FD_RG_CAT(fd_act_fwd, FD_SFX)(kind - FD_RNN_ACT_FAMILY, n, y, x, p);
}

static void FD_RG(rg_act)(int kind, int64_t n, float *FD_RESTRICT y,
                          const float *FD_RESTRICT x) {
    switch (kind) {
    case FD_RNN_ACT_TANH:
        for (int64_t j = 0; j < n; j++) y[j] = rg_tanh(x[j]);
        break;
    case FD_RNN_ACT_SIGMOID:
        for (int64_t j = 0; j < n; j++) y[j] = rg_sigmoid(x[j]);
        break;
    case FD_RNN_ACT_RELU:
        for (int64_t j = 0; j < n; j++) y[j] = x[j] > 0.0f ? x[j] : 0.0f;
        break;
    case FD_RNN_ACT_HARD_SIGMOID:
        for (int64_t j = 0; j < n; j++) y[j] = rg_hard_sigmoid(x[j]);
        break;
    default:
        if (kind >= FD_RNN_ACT_FAMILY) {
            FD_RG(rg_fam_fwd)(kind, n, y, x);
            break;
        }
        for (int64_t j = 0; j < n; j++) y[j] = x[j];
        break;
    }
}

/* in-place variant (y == x allowed): the restrict version needs distinct arrays */
static void FD_RG(rg_act_ip)(int kind, int64_t n, float *y) {
    switch (kind) {
    case FD_RNN_ACT_TANH:
        for (int64_t j = 0; j < n; j++) y[j] = rg_tanh(y[j]);
        break;
    case FD_RNN_ACT_SIGMOID:
        for (int64_t j = 0; j < n; j++) y[j] = rg_sigmoid(y[j]);
        break;
    case FD_RNN_ACT_RELU:
        for (int64_t j = 0; j < n; j++) y[j] = y[j] > 0.0f ? y[j] : 0.0f;
        break;
    case FD_RNN_ACT_HARD_SIGMOID:
        for (int64_t j = 0; j < n; j++) y[j] = rg_hard_sigmoid(y[j]);
        break;
    default:
        if (kind >= FD_RNN_ACT_FAMILY) FD_RG(rg_fam_fwd)(kind, n, y, y);
        break;
    }
}

static void FD_RG(rg_act_any)(int kind, int64_t n, float *y, const float *x) {
    if (y == x) FD_RG(rg_act_ip)(kind, n, y);
    else FD_RG(rg_act)(kind, n, y, x);
}

/* d = dy * act'(from output y); d may alias dy */
static void FD_RG(rg_dact)(int kind, int64_t n, float *d, const float *dy,
                           const float *y) {
    switch (kind) {
    case FD_RNN_ACT_TANH:
        for (int64_t j = 0; j < n; j++) d[j] = dy[j] * (1.0f - y[j] * y[j]);
        break;
    case FD_RNN_ACT_SIGMOID:
        for (int64_t j = 0; j < n; j++) d[j] = dy[j] * (y[j] * (1.0f - y[j]));
        break;
    case FD_RNN_ACT_RELU:
        for (int64_t j = 0; j < n; j++) d[j] = y[j] > 0.0f ? dy[j] : 0.0f;
        break;
    case FD_RNN_ACT_HARD_SIGMOID:
        for (int64_t j = 0; j < n; j++)
            d[j] = (y[j] > 0.0f && y[j] < 1.0f) ? dy[j] * (1.0f / 6.0f) : 0.0f;
        break;
    default:
        if (kind >= FD_RNN_ACT_FAMILY) {
            float p[FD_ACT_NPARAMS];
            rg_fam_params(kind - FD_RNN_ACT_FAMILY, p);
            FD_RG_CAT(fd_act_bwd, FD_SFX)(kind - FD_RNN_ACT_FAMILY, n, d, dy, NULL, y, p);
            break;
        }
        for (int64_t j = 0; j < n; j++) d[j] = dy[j];
        break;
    }
}

static void FD_RG(lstm_fwd)(int64_t u, int act, int rec, float *g, const float *cp,
                            float *FD_RESTRICT c, float *FD_RESTRICT h,
                            float *FD_RESTRICT tmp) {
    float *FD_RESTRICT gi = g, *FD_RESTRICT gf = g + u, *FD_RESTRICT gc = g + 2 * u,
                       *FD_RESTRICT go = g + 3 * u;
    if (rec == FD_RNN_ACT_SIGMOID && act == FD_RNN_ACT_TANH) {   /* one fused pass */
        const float *FD_RESTRICT cq = cp;
        if (cq) {
            for (int64_t j = 0; j < u; j++) {
                const float i = rg_sigmoid(gi[j]), f = rg_sigmoid(gf[j]);
                const float cc = rg_tanh(gc[j]), o = rg_sigmoid(go[j]);
                const float cn = f * cq[j] + i * cc;
                gi[j] = i; gf[j] = f; gc[j] = cc; go[j] = o;
                c[j] = cn;
                h[j] = o * rg_tanh(cn);
            }
        } else {
            for (int64_t j = 0; j < u; j++) {
                const float i = rg_sigmoid(gi[j]), f = rg_sigmoid(gf[j]);
                const float cc = rg_tanh(gc[j]), o = rg_sigmoid(go[j]);
                const float cn = f * 0.0f + i * cc;
                gi[j] = i; gf[j] = f; gc[j] = cc; go[j] = o;
                c[j] = cn;
                h[j] = o * rg_tanh(cn);
            }
        }
        return;
    }
    FD_RG(rg_act_ip)(rec, u, gi);
    FD_RG(rg_act_ip)(rec, u, gf);
    FD_RG(rg_act_ip)(act, u, gc);
    FD_RG(rg_act_ip)(rec, u, go);
    for (int64_t j = 0; j < u; j++) c[j] = gf[j] * (cp ? cp[j] : 0.0f) + gi[j] * gc[j];
    FD_RG(rg_act)(act, u, tmp, c);
    for (int64_t j = 0; j < u; j++) h[j] = go[j] * tmp[j];
}

/* sigmoid / tanh: one fused pass (the same operations, in the same order, as lstm_bwd_gen;
 * cp hoisted out of the loop so it vectorises) */
#define FD_LSTM_BWD_BODY(CPJ)                                                          \
    for (int64_t j = 0; j < u; j++) {                                                  \
        const float i = gi[j], f = gf[j], cc = gc[j], o = go[j];                       \
        const float tc = rg_tanh(c[j]);                                                \
        const float dcj = dc[j] + dh[j] * o * (1.0f - tc * tc);                        \
        gi[j] = dcj * cc * (i * (1.0f - i));                                           \
        gf[j] = dcj * (CPJ) * (f * (1.0f - f));                                        \
        gc[j] = dcj * i * (1.0f - cc * cc);                                            \
        go[j] = dh[j] * tc * (o * (1.0f - o));                                         \
        dc[j] = dcj * f;                                                               \
    }
static void FD_RG(lstm_bwd)(int64_t u, float *g, const float *FD_RESTRICT c,
                            const float *cp, const float *FD_RESTRICT dh,
                            float *FD_RESTRICT dc) {
    float *FD_RESTRICT gi = g, *FD_RESTRICT gf = g + u, *FD_RESTRICT gc = g + 2 * u,
                       *FD_RESTRICT go = g + 3 * u;
    const float *FD_RESTRICT cq = cp;
    if (cq) { FD_LSTM_BWD_BODY(cq[j]) }
    else { FD_LSTM_BWD_BODY(0.0f) }
}
#undef FD_LSTM_BWD_BODY

/* Generic LSTM backward keeping the gate values: called with a scratch of 6u floats. */
static void FD_RG(lstm_bwd_gen)(int64_t u, int act, int rec, float *g,
                                const float *FD_RESTRICT c, const float *cp,
                                const float *FD_RESTRICT dh, float *FD_RESTRICT dc,
                                float *FD_RESTRICT tmp) {
    float *gi = g, *gf = g + u, *gc = g + 2 * u, *go = g + 3 * u;
    float *FD_RESTRICT ac = tmp, *FD_RESTRICT dcl = tmp + u, *FD_RESTRICT dv = tmp + 2 * u;
    FD_RG(rg_act)(act, u, ac, c);                                   /* act(c)        */
    for (int64_t j = 0; j < u; j++) dcl[j] = dh[j] * go[j];          /* d act(c)      */
    FD_RG(rg_dact)(act, u, dcl, dcl, ac);                            /* d c (local)   */
    for (int64_t j = 0; j < u; j++) dv[j] = dh[j] * ac[j];           /* d o (value)   */
    FD_RG(rg_dact)(rec, u, go, dv, go);                              /* dz_o          */
    for (int64_t j = 0; j < u; j++) {
        const float dcj = dc[j] + dcl[j];
        dcl[j] = dcj;
        dc[j] = dcj * gf[j];
    }
    for (int64_t j = 0; j < u; j++) dv[j] = dcl[j] * gc[j];          /* d i (value)   */
    for (int64_t j = 0; j < u; j++) ac[j] = dcl[j] * gi[j];          /* d cc (value)  */
    FD_RG(rg_dact)(rec, u, gi, dv, gi);                              /* dz_i          */
    FD_RG(rg_dact)(act, u, gc, ac, gc);                              /* dz_c          */
    for (int64_t j = 0; j < u; j++) dv[j] = dcl[j] * (cp ? cp[j] : 0.0f);  /* d f value */
    FD_RG(rg_dact)(rec, u, gf, dv, gf);                              /* dz_f          */
}

static void FD_RG(lstm_bwd_any)(int64_t u, int act, int rec, float *g, const float *c,
                                const float *cp, const float *dh, float *dc, float *tmp) {
    if (rec == FD_RNN_ACT_SIGMOID && act == FD_RNN_ACT_TANH)
        FD_RG(lstm_bwd)(u, g, c, cp, dh, dc);
    else
        FD_RG(lstm_bwd_gen)(u, act, rec, g, c, cp, dh, dc, tmp);
}

static void FD_RG(gru_ra_fwd)(int64_t u, int act, int rec, float *g,
                              const float *FD_RESTRICT rh, const float *hp,
                              float *FD_RESTRICT h) {
    float *FD_RESTRICT gz = g, *FD_RESTRICT gr = g + u, *FD_RESTRICT gh = g + 2 * u;
    if (rec == FD_RNN_ACT_SIGMOID && act == FD_RNN_ACT_TANH) {
        for (int64_t j = 0; j < u; j++) {
            const float z = rg_sigmoid(gz[j]), r = rg_sigmoid(gr[j]);
            const float hh = rg_tanh(gh[j] + r * rh[j]);
            const float hpj = hp ? hp[j] : 0.0f;
            gz[j] = z; gr[j] = r; gh[j] = hh;
            h[j] = z * hpj + (1.0f - z) * hh;
        }
        return;
    }
    FD_RG(rg_act_ip)(rec, u, gz);
    FD_RG(rg_act_ip)(rec, u, gr);
    for (int64_t j = 0; j < u; j++) gh[j] = gh[j] + gr[j] * rh[j];
    FD_RG(rg_act_ip)(act, u, gh);
    for (int64_t j = 0; j < u; j++) h[j] = gz[j] * (hp ? hp[j] : 0.0f) + (1.0f - gz[j]) * gh[j];
}

static void FD_RG(gru_ra_bwd)(int64_t u, float *g, float *FD_RESTRICT rh,
                              const float *hp, const float *FD_RESTRICT dh,
                              float *FD_RESTRICT dhp) {
    float *FD_RESTRICT gz = g, *FD_RESTRICT gr = g + u, *FD_RESTRICT gh = g + 2 * u;
    {
        for (int64_t j = 0; j < u; j++) {
            const float z = gz[j], r = gr[j], hh = gh[j];
            const float hpj = hp ? hp[j] : 0.0f;
            const float da = dh[j] * (1.0f - z) * (1.0f - hh * hh);
            gz[j] = dh[j] * (hpj - hh) * (z * (1.0f - z));
            gr[j] = da * rh[j] * (r * (1.0f - r));
            gh[j] = da;
            rh[j] = da * r;
            dhp[j] = z * dh[j];
        }
    }
}

/* Generic GRU reset_after backward (tmp: 2u floats) */
static void FD_RG(gru_ra_bwd_gen)(int64_t u, int act, int rec, float *g, float *rh,
                                  const float *hp, const float *dh, float *dhp,
                                  float *tmp) {
    float *gz = g, *gr = g + u, *gh = g + 2 * u;
    float *FD_RESTRICT hh = tmp, *FD_RESTRICT dv = tmp + u;
    for (int64_t j = 0; j < u; j++) hh[j] = gh[j];
    for (int64_t j = 0; j < u; j++) dv[j] = dh[j] * (1.0f - gz[j]);       /* d hh      */
    FD_RG(rg_dact)(act, u, gh, dv, hh);                                  /* da        */
    for (int64_t j = 0; j < u; j++) dv[j] = gh[j] * rh[j];                /* d r value */
    for (int64_t j = 0; j < u; j++) rh[j] = gh[j] * gr[j];                /* d rh      */
    FD_RG(rg_dact)(rec, u, gr, dv, gr);                                  /* dz_r      */
    for (int64_t j = 0; j < u; j++) dv[j] = dh[j] * ((hp ? hp[j] : 0.0f) - hh[j]);
    for (int64_t j = 0; j < u; j++) dhp[j] = gz[j] * dh[j];
    FD_RG(rg_dact)(rec, u, gz, dv, gz);                                  /* dz_z      */
}

static void FD_RG(gru_ra_bwd_any)(int64_t u, int act, int rec, float *g, float *rh,
                                  const float *hp, const float *dh, float *dhp, float *tmp) {
    if (rec == FD_RNN_ACT_SIGMOID && act == FD_RNN_ACT_TANH)
        FD_RG(gru_ra_bwd)(u, g, rh, hp, dh, dhp);
    else
        FD_RG(gru_ra_bwd_gen)(u, act, rec, g, rh, hp, dh, dhp, tmp);
}

static void FD_RG(gru_rb_fwd2)(int64_t u, int act, float *g, const float *hp,
                               float *FD_RESTRICT h) {
    float *FD_RESTRICT gz = g, *FD_RESTRICT gh = g + 2 * u;
    FD_RG(rg_act_ip)(act, u, gh);
    for (int64_t j = 0; j < u; j++) h[j] = gz[j] * (hp ? hp[j] : 0.0f) + (1.0f - gz[j]) * gh[j];
}

/* tmp: 2u floats */
static void FD_RG(gru_rb_bwd1)(int64_t u, int act, int rec, float *g, const float *hp,
                               const float *dh, float *dhp, float *tmp) {
    float *gz = g, *gh = g + 2 * u;
    float *FD_RESTRICT hh = tmp, *FD_RESTRICT dv = tmp + u;
    for (int64_t j = 0; j < u; j++) hh[j] = gh[j];
    for (int64_t j = 0; j < u; j++) dv[j] = dh[j] * (1.0f - gz[j]);
    FD_RG(rg_dact)(act, u, gh, dv, hh);                                  /* da   */
    for (int64_t j = 0; j < u; j++) dv[j] = dh[j] * ((hp ? hp[j] : 0.0f) - hh[j]);
    for (int64_t j = 0; j < u; j++) dhp[j] = gz[j] * dh[j];
    FD_RG(rg_dact)(rec, u, gz, dv, gz);                                  /* dz_z */
}

static void FD_RG(gru_rb_bwd2_any)(int64_t u, int rec, float *g, const float *dA3,
                                   const float *hdh, float *dhd, float *tmp) {
    float *gr = g + u;
    float *FD_RESTRICT dv = tmp;
    for (int64_t j = 0; j < u; j++) dhd[j] = dA3[j] * gr[j];
    for (int64_t j = 0; j < u; j++) dv[j] = dA3[j] * (hdh ? hdh[j] : 0.0f);
    FD_RG(rg_dact)(rec, u, gr, dv, gr);
}

static void FD_RG(act_pub)(int kind, int64_t n, float *y, const float *x) {
    FD_RG(rg_act_any)(kind, n, y, x);
}

static void FD_RG(dact_zy)(int kind, int64_t n, float *d, const float *dy, const float *z,
                           const float *y) {
    if (kind >= FD_RNN_ACT_FAMILY) {
        float p[FD_ACT_NPARAMS];
        rg_fam_params(kind - FD_RNN_ACT_FAMILY, p);
        FD_RG_CAT(fd_act_bwd, FD_SFX)(kind - FD_RNN_ACT_FAMILY, n, d, dy, z, y, p);
        return;
    }
    FD_RG(rg_dact)(kind, n, d, dy, y);
}

const fd_rnn_gates FD_RG(fd_rnn_gates) = {
    FD_RG(act_pub),
    FD_RG(rg_dact),
    FD_RG(lstm_fwd),
    FD_RG(lstm_bwd_any),
    FD_RG(gru_ra_fwd),
    FD_RG(gru_ra_bwd_any),
    FD_RG(gru_rb_fwd2),
    FD_RG(gru_rb_bwd1),
    FD_RG(gru_rb_bwd2_any),
    FD_RG(dact_zy),
};
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif
#endif /* FD_SFX */

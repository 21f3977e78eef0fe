/* act.c — public entry points of the activation kernels (act.h): argument checks, the
 * ISA path (fd_isa_get()), FTZ/DAZ, and OpenMP over contiguous chunks (elementwise: the
 * result does not depend on the thread count). */
#include "../internal.h"
#include "../fpenv.h"
#include "act.h"

#include <math.h>

typedef struct {
    void (*fwd)(int act, int64_t n, float *out, const float *x, const float *p);
    void (*bwd)(int act, int64_t n, float *out, const float *grad, const float *z,
                const float *y, const float *p);
} fd_act_kernels;

static const fd_act_kernels k_ref = {fd_act_fwd_ref, fd_act_bwd_ref};
#ifdef FD_HAVE_AVX2
static const fd_act_kernels k_avx2 = {fd_act_fwd_avx2, fd_act_bwd_avx2};
#endif
#ifdef FD_HAVE_AVX512
static const fd_act_kernels k_avx512 = {fd_act_fwd_avx512, fd_act_bwd_avx512};
#endif

static const fd_act_kernels *kernels(void) {
    switch (fd_isa_get()) {
#ifdef FD_HAVE_AVX512
    case FD_ISA_AVX512:
        return &k_avx512;
#endif
#ifdef FD_HAVE_AVX2
    case FD_ISA_AVX2:
        return &k_avx2;
#endif
    default:
        return &k_ref;
    }
}

static const signed char NEEDS[FD_ACT_COUNT] = {
    [FD_ACT_LINEAR] = FD_ACT_NEEDS_NONE, [FD_ACT_RELU] = FD_ACT_NEEDS_Y,
    [FD_ACT_RELU6] = FD_ACT_NEEDS_Y,     [FD_ACT_LEAKY_RELU] = FD_ACT_NEEDS_Y,
    [FD_ACT_ELU] = FD_ACT_NEEDS_Y,       [FD_ACT_TANH] = FD_ACT_NEEDS_Y,
    [FD_ACT_SIGMOID] = FD_ACT_NEEDS_Y,   [FD_ACT_SOFTPLUS] = FD_ACT_NEEDS_Y,
    [FD_ACT_SILU] = FD_ACT_NEEDS_Z,      [FD_ACT_GELU] = FD_ACT_NEEDS_Z,
    [FD_ACT_GELU_TANH] = FD_ACT_NEEDS_Z, [FD_ACT_HARD_SIGMOID] = FD_ACT_NEEDS_Y,
    [FD_ACT_SOFTSIGN] = FD_ACT_NEEDS_Y,  [FD_ACT_MISH] = FD_ACT_NEEDS_Z,
    [FD_ACT_CELU] = FD_ACT_NEEDS_Y,      [FD_ACT_HARD_SILU] = FD_ACT_NEEDS_Z,
    [FD_ACT_HARD_TANH] = FD_ACT_NEEDS_Y, [FD_ACT_SOFT_SHRINK] = FD_ACT_NEEDS_Z,
    [FD_ACT_HARD_SHRINK] = FD_ACT_NEEDS_Z, [FD_ACT_TANH_SHRINK] = FD_ACT_NEEDS_Z,
    [FD_ACT_LOG_SIGMOID] = FD_ACT_NEEDS_Y, [FD_ACT_EXPONENTIAL] = FD_ACT_NEEDS_Y,
    [FD_ACT_SPARSE_PLUS] = FD_ACT_NEEDS_Z, [FD_ACT_SQUAREPLUS] = FD_ACT_NEEDS_Z,
    [FD_ACT_THRESHOLD] = FD_ACT_NEEDS_Z, [FD_ACT_RELU_ARGS] = FD_ACT_NEEDS_Z,
    [FD_ACT_SPARSE_SIGMOID] = FD_ACT_NEEDS_Y, [FD_ACT_SELU] = FD_ACT_NEEDS_Y,
};

/* Elements per thread below which a call stays serial: the cheap maps are memory-bound
 * (as relu), the transcendental ones cost 20-60 flops per element. */
static int64_t grain(int act) {
    switch (act) {
    case FD_ACT_LINEAR:
    case FD_ACT_RELU:
    case FD_ACT_RELU6:
    case FD_ACT_LEAKY_RELU:
    case FD_ACT_HARD_SIGMOID:
    case FD_ACT_SOFTSIGN:
    case FD_ACT_HARD_SILU:
    case FD_ACT_HARD_TANH:
    case FD_ACT_SOFT_SHRINK:
    case FD_ACT_HARD_SHRINK:
    case FD_ACT_SPARSE_PLUS:
    case FD_ACT_THRESHOLD:
    case FD_ACT_RELU_ARGS:
    case FD_ACT_SPARSE_SIGMOID:
        return 1 << 15;
    default:
        return 1 << 13;
    }
}

fd_act_fwd_fn fd_act_forward_kernel(void) { return kernels()->fwd; }
fd_act_bwd_fn fd_act_backward_kernel(void) { return kernels()->bwd; }

int fd_act_needs(int act) {
    if (act < 0 || act >= FD_ACT_COUNT) return -1;
    return NEEDS[act];
}

static int check_bwd(int act, int64_t n, float *out, const float *grad, const float *z,
                     const float *y) {
    if (act < 0 || act >= FD_ACT_COUNT || n < 0) return -1;
    if (n == 0) return 0;
    if (!out || !grad) return -1;
    if (NEEDS[act] == FD_ACT_NEEDS_Z && !z) return -1;
    if (NEEDS[act] == FD_ACT_NEEDS_Y && !y) return -1;
    return 1;
}

#ifdef _OPENMP
#define FDA_OMP_IDS(t, T) (t = omp_get_thread_num(), T = omp_get_num_threads())
#else
#define FDA_OMP_IDS(t, T) ((void)0)
#endif

/* body(lo, hi) over [0, n) in per-thread chunks aligned to 16 elements */
#define FDA_CHUNKS(n, nt, body)                                                          \
    do {                                                                                 \
        if ((nt) <= 1) {                                                                 \
            const int64_t lo = 0, hi = (n);                                              \
            body;                                                                        \
        } else {                                                                         \
            _Pragma("omp parallel num_threads(nt)") {                                    \
                unsigned fpt_ = fd_fp_enter();                                           \
                int t_ = 0, T_ = 1;                                                      \
                FDA_OMP_IDS(t_, T_);                                                     \
                const int64_t per_ = (((n) + T_ - 1) / T_ + 15) & ~(int64_t)15;          \
                const int64_t lo = per_ * t_, hi = lo + per_ < (n) ? lo + per_ : (n);    \
                if (lo < hi) { body; }                                                   \
                fd_fp_exit(fpt_);                                                        \
            }                                                                            \
        }                                                                                \
    } while (0)

static void params_of(float param, float *p) {
    p[0] = param;
    p[1] = INFINITY;
    p[2] = 0.0f;
}

int fd_act_forward_p_f32(int act, int64_t n, float *out, const float *x, const float *p) {
    if (act < 0 || act >= FD_ACT_COUNT || n < 0) return -1;
    if (n == 0) return 0;
    if (!out || !x || !p) return -1;
    const fd_act_kernels *k = kernels();
    unsigned fp = fd_fp_enter();
    const int nt = fd_threads_for(n, grain(act));
    FDA_CHUNKS(n, nt, k->fwd(act, hi - lo, out + lo, x + lo, p));
    fd_fp_exit(fp);
    return 0;
}

int fd_act_backward_p_f32(int act, int64_t n, float *out, const float *grad, const float *z,
                          const float *y, const float *p) {
    const int ok = check_bwd(act, n, out, grad, z, y);
    if (ok <= 0) return ok;
    if (!p) return -1;
    const fd_act_kernels *k = kernels();
    unsigned fp = fd_fp_enter();
    const int nt = fd_threads_for(n, grain(act));
    FDA_CHUNKS(n, nt,
               k->bwd(act, hi - lo, out + lo, grad + lo, z ? z + lo : NULL,
                      y ? y + lo : NULL, p));
    fd_fp_exit(fp);
    return 0;
}

int fd_act_forward_f32(int act, int64_t n, float *out, const float *x, float param) {
    float p[FD_ACT_NPARAMS];
    params_of(param, p);
    return fd_act_forward_p_f32(act, n, out, x, p);
}

int fd_act_backward_f32(int act, int64_t n, float *out, const float *grad, const float *z,
                        const float *y, float param) {
    float p[FD_ACT_NPARAMS];
    params_of(param, p);
    return fd_act_backward_p_f32(act, n, out, grad, z, y, p);
}

int fd_act_forward_serial_f32(int act, int64_t n, float *out, const float *x, float param) {
    if (act < 0 || act >= FD_ACT_COUNT || n < 0) return -1;
    if (n == 0) return 0;
    if (!out || !x) return -1;
    float p[FD_ACT_NPARAMS];
    params_of(param, p);
    unsigned fp = fd_fp_enter();
    kernels()->fwd(act, n, out, x, p);
    fd_fp_exit(fp);
    return 0;
}

int fd_act_backward_serial_f32(int act, int64_t n, float *out, const float *grad,
                               const float *z, const float *y, float param) {
    const int ok = check_bwd(act, n, out, grad, z, y);
    if (ok <= 0) return ok;
    float p[FD_ACT_NPARAMS];
    params_of(param, p);
    unsigned fp = fd_fp_enter();
    kernels()->bwd(act, n, out, grad, z, y, p);
    fd_fp_exit(fp);
    return 0;
}

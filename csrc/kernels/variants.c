/* variants.c — kernels of the dropout variants: Gaussian (multiplicative) dropout,
 * alpha dropout and the SELU activation it is made for.  Portable C, one path for every
 * ISA (these layers are not on the hot path of a standard MLP); OpenMP over blocks or
 * chunks, never a cross-thread reduction, so results do not depend on the thread count.
 *
 * Gaussian noise contract (mirrored by fastdrop/reference.py gaussian_noise):
 *   block b = i / FD_DROPOUT_BLOCK owns xoshiro256+ stream b under key splitmix64(seed)
 *   (seeded exactly like dropout stream b, see rng.h).  Within a block, elements 2j and
 *   2j+1 take draws 2j and 2j+1: u1 = ((d0 >> 11) + 1) * 2^-53 in (0, 1],
 *   u2 = (d1 >> 11) * 2^-53, r = sqrt(-2 ln u1), z0 = r cos(2π u2), z1 = r sin(2π u2)
 *   (Box–Muller, in double), noise = 1 + stddev * z, rounded to float.              */
#include <math.h>

#include "../internal.h"
#include "../rng.h"
#include "../fpenv.h"

#define FD_TWO_PI 6.283185307179586476925286766559

typedef struct {
    float *out;
    const float *x, *y;
    const uint8_t *mask;
    uint64_t key;
    int64_t n;
    float s0, s1, s2;
} fd_var_job;

static void noise_blocks(void *j_, int64_t b0, int64_t b1) {
    const fd_var_job *j = j_;
    float *noise = j->out;
    const double stddev = (double)j->s0;
    for (int64_t b = b0; b < b1; b++) {
        fd_rng_state st;
        fd_rng_seed_stream(&st, j->key, (uint64_t)b);
        const int64_t lo = b * FD_DROPOUT_BLOCK;
        const int64_t hi = lo + FD_DROPOUT_BLOCK < j->n ? lo + FD_DROPOUT_BLOCK : j->n;
        for (int64_t i = lo; i < hi; i += 2) {
            const double u1 = (double)((fd_rng_next(&st) >> 11) + 1) * 0x1.0p-53;
            const double u2 = (double)(fd_rng_next(&st) >> 11) * 0x1.0p-53;
            const double r = sqrt(-2.0 * log(u1)), th = FD_TWO_PI * u2;
            noise[i] = (float)(1.0 + stddev * r * cos(th));
            if (i + 1 < hi) noise[i + 1] = (float)(1.0 + stddev * r * sin(th));
        }
    }
}

#define FD_VAR_ENTER() \
    fd_init();         \
    const unsigned fp_ = fd_fp_enter()
#define FD_VAR_EXIT() fd_fp_exit(fp_)

void fd_gaussian_noise_f32(int64_t n, float *noise, uint64_t seed, float stddev) {
    if (n <= 0) return;
    FD_VAR_ENTER();
    fd_var_job j = {.out = noise, .key = fd_rng_key(seed), .n = n, .s0 = stddev};
    fd_parallel_range((n + FD_DROPOUT_BLOCK - 1) / FD_DROPOUT_BLOCK, 4, 1, noise_blocks, &j);
    FD_VAR_EXIT();
}

/* out = x * y elementwise (Gaussian dropout forward and backward). */
static void mul_range(void *j_, int64_t lo, int64_t hi) {
    const fd_var_job *j = j_;
    for (int64_t i = lo; i < hi; i++) j->out[i] = j->x[i] * j->y[i];
}

void fd_mul_f32(int64_t n, float *out, const float *x, const float *y) {
    FD_VAR_ENTER();
    fd_var_job j = {.out = out, .x = x, .y = y};
    fd_parallel_range(n, 1 << 15, 16, mul_range, &j);
    FD_VAR_EXIT();
}

/* SELU (Klambauer et al.): lambda*x for x > 0, lambda*alpha*(exp(x) - 1) otherwise. */
#define FD_SELU_ALPHA 1.6732632423543772848170429916717f
#define FD_SELU_LAMBDA 1.0507009873554804934193349852946f

static void selu_range(void *j_, int64_t lo, int64_t hi) {
    const fd_var_job *j = j_;
    for (int64_t i = lo; i < hi; i++) {
        const float v = j->x[i];
        j->out[i] = v > 0.0f ? FD_SELU_LAMBDA * v : FD_SELU_LAMBDA * FD_SELU_ALPHA * expm1f(v);
    }
}

void fd_selu_f32(int64_t n, float *out, const float *x) {
    FD_VAR_ENTER();
    fd_var_job j = {.out = out, .x = x};
    fd_parallel_range(n, 1 << 14, 16, selu_range, &j);
    FD_VAR_EXIT();
}

/* Gradient of SELU from its output y: lambda where y > 0, else y + lambda*alpha. */
static void selu_backward_range(void *j_, int64_t lo, int64_t hi) {
    const fd_var_job *j = j_;
    for (int64_t i = lo; i < hi; i++) {
        const float d = j->y[i] > 0.0f ? FD_SELU_LAMBDA : j->y[i] + FD_SELU_LAMBDA * FD_SELU_ALPHA;
        j->out[i] = j->x[i] * d;
    }
}

void fd_selu_backward_f32(int64_t n, float *out, const float *grad, const float *y) {
    FD_VAR_ENTER();
    fd_var_job j = {.out = out, .x = grad, .y = y};
    fd_parallel_range(n, 1 << 15, 16, selu_backward_range, &j);
    FD_VAR_EXIT();
}

/* Alpha dropout: out = a*x + b where the mask bit is set, a*alpha_p + b where not. */
static void alpha_range(void *j_, int64_t lo, int64_t hi) {
    const fd_var_job *j = j_;
    const float a = j->s0, b = j->s1, dropped = j->s2;
    for (int64_t i = lo; i < hi; i++)
        j->out[i] = (j->mask[i >> 3] >> (i & 7)) & 1 ? a * j->x[i] + b : dropped;
}

void fd_alpha_dropout_apply_f32(int64_t n, float *out, const float *x, const uint8_t *mask,
                                float a, float b, float alpha_p) {
    FD_VAR_ENTER();
    fd_var_job j = {.out = out, .x = x, .mask = mask, .s0 = a, .s1 = b, .s2 = a * alpha_p + b};
    fd_parallel_range(n, 1 << 15, 16, alpha_range, &j);
    FD_VAR_EXIT();
}

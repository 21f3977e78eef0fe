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

#define FD_TWO_PI 6.283185307179586476925286766559

void fd_gaussian_noise_f32(int64_t n, float *noise, uint64_t seed, float stddev) {
    if (n <= 0) return;
    const uint64_t key = fd_rng_key(seed);
    const int64_t nb = (n + FD_DROPOUT_BLOCK - 1) / FD_DROPOUT_BLOCK;
    const int nt = fd_threads_for(nb, 4);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t b = 0; b < nb; b++) {
        fd_rng_state st;
        fd_rng_seed_stream(&st, key, (uint64_t)b);
        const int64_t lo = b * FD_DROPOUT_BLOCK;
        const int64_t hi = lo + FD_DROPOUT_BLOCK < n ? lo + FD_DROPOUT_BLOCK : n;
        for (int64_t i = lo; i < hi; i += 2) {
            const double u1 = (double)((fd_rng_next(&st) >> 11) + 1) * 0x1.0p-53;
            const double u2 = (double)(fd_rng_next(&st) >> 11) * 0x1.0p-53;
            const double r = sqrt(-2.0 * log(u1)), th = FD_TWO_PI * u2;
            noise[i] = (float)(1.0 + (double)stddev * r * cos(th));
            if (i + 1 < hi) noise[i + 1] = (float)(1.0 + (double)stddev * r * sin(th));
        }
    }
}

/* out = x * y elementwise (Gaussian dropout forward and backward). */
void fd_mul_f32(int64_t n, float *out, const float *x, const float *y) {
    const int nt = fd_threads_for(n, 1 << 15);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t i = 0; i < n; i++) out[i] = x[i] * y[i];
}

/* SELU (Klambauer et al.): lambda*x for x > 0, lambda*alpha*(exp(x) - 1) otherwise. */
#define FD_SELU_ALPHA 1.6732632423543772848170429916717f
#define FD_SELU_LAMBDA 1.0507009873554804934193349852946f

void fd_selu_f32(int64_t n, float *out, const float *x) {
    const int nt = fd_threads_for(n, 1 << 14);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t i = 0; i < n; i++) {
        const float v = x[i];
        out[i] = v > 0.0f ? FD_SELU_LAMBDA * v : FD_SELU_LAMBDA * FD_SELU_ALPHA * expm1f(v);
    }
}

/* Gradient of SELU from its output y: lambda where y > 0, else y + lambda*alpha. */
void fd_selu_backward_f32(int64_t n, float *out, const float *grad, const float *y) {
    const int nt = fd_threads_for(n, 1 << 15);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t i = 0; i < n; i++) {
        const float d = y[i] > 0.0f ? FD_SELU_LAMBDA : y[i] + FD_SELU_LAMBDA * FD_SELU_ALPHA;
        out[i] = grad[i] * d;
    }
}

/* Alpha dropout: out = a*x + b where the mask bit is set, a*alpha_p + b where not. */
void fd_alpha_dropout_apply_f32(int64_t n, float *out, const float *x, const uint8_t *mask,
                                float a, float b, float alpha_p) {
    const float dropped = a * alpha_p + b;
    const int nt = fd_threads_for(n, 1 << 15);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t i = 0; i < n; i++)
        out[i] = (mask[i >> 3] >> (i & 7)) & 1 ? a * x[i] + b : dropped;
}

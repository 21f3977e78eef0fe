/*
 * dropout.c — the public dropout entry points: threads over whole blocks, then the
 * chosen ISA's kernel (fd_kt).  RNG contract: csrc/rng.h and fastdrop.h.
 *
 * Threads take contiguous runs of whole FD_DROPOUT_BLOCK blocks, so a mask byte is
 * never written by two threads, and since every block seeds its own streams from
 * (seed, block), the result does not depend on the thread count or the ISA path.
 */
#include "internal.h"

/* Smallest job worth a thread, in blocks (4096 elements, 16 KB of float32 each):
 * below this the OpenMP fork/join costs more than the second core saves. */
#define FD_DROPOUT_GRAIN_BLOCKS 8
#define FD_DROPOUT_APPLY_GRAIN_BLOCKS 16

uint32_t fd_dropout_threshold(double rate) {
    if (!(rate > 0.0)) return 0; /* 0, negative, NaN: keep everything */
    const double t = rate * 4294967296.0; /* exact: a power-of-two scale */
    if (t >= 4294967295.0) return UINT32_MAX;
    return (uint32_t)t; /* truncation == floor for t >= 0 */
}

/* Run the kernel on blocks [0, nb) split into one contiguous run per thread. */
static void run_blocks(int64_t n, float *out, const float *x, uint64_t seed,
                       uint32_t threshold, float scale, uint8_t *mask) {
    const fd_kernel_table *kt = fd_kt;
    const int64_t nb = (n + FD_DROPOUT_BLOCK - 1) / FD_DROPOUT_BLOCK;
    const int nt = fd_threads_for(nb, FD_DROPOUT_GRAIN_BLOCKS);
#ifdef _OPENMP
    if (nt > 1) {
#pragma omp parallel num_threads(nt)
        {
            const int t = omp_get_thread_num(), tn = omp_get_num_threads();
            const int64_t b0 = nb * t / tn, b1 = nb * (t + 1) / tn;
            if (b1 > b0) kt->dropout_blocks(n, b0, b1, out, x, seed, threshold, scale, mask);
        }
        return;
    }
#endif
    (void)nt;
    kt->dropout_blocks(n, 0, nb, out, x, seed, threshold, scale, mask);
}

void fd_dropout_mask(int64_t n, uint64_t seed, uint32_t threshold, uint8_t *mask) {
    fd_init();
    if (n <= 0) return;
    run_blocks(n, NULL, NULL, seed, threshold, 1.0f, mask);
}

void fd_dropout_forward_f32(int64_t n, float *out, const float *x, uint64_t seed,
                            uint32_t threshold, float scale, uint8_t *mask) {
    fd_init();
    if (n <= 0) return;
    run_blocks(n, out, x, seed, threshold, scale, mask);
}

void fd_dropout_apply_f32(int64_t n, float *out, const float *x, const uint8_t *mask,
                          float scale) {
    fd_init();
    if (n <= 0) return;
    const fd_kernel_table *kt = fd_kt;
    const int64_t nb = (n + FD_DROPOUT_BLOCK - 1) / FD_DROPOUT_BLOCK;
    const int nt = fd_threads_for(nb, FD_DROPOUT_APPLY_GRAIN_BLOCKS);
#ifdef _OPENMP
    if (nt > 1) {
#pragma omp parallel num_threads(nt)
        {
            const int t = omp_get_thread_num(), tn = omp_get_num_threads();
            const int64_t e0 = nb * t / tn * FD_DROPOUT_BLOCK;
            int64_t e1 = nb * (t + 1) / tn * FD_DROPOUT_BLOCK;
            if (e1 > n) e1 = n;
            if (e1 > e0) kt->dropout_apply(e1 - e0, out + e0, x + e0, mask + e0 / 8, scale);
        }
        return;
    }
#endif
    (void)nt;
    kt->dropout_apply(n, out, x, mask, scale);
}

/* noise_range.c — Gaussian noise of an element range [start, start + n) of the stream
 * keyed by seed: the same values fd_gaussian_noise_f32 gives those elements (contract in
 * variants.c).  Lets MC dropout key a sample's noise by its global index. */
#include <math.h>

#include "../fpenv.h"
#include "../internal.h"
#include "../rng.h"

#define FD_TWO_PI 6.283185307179586476925286766559

void fd_gaussian_noise_range_f32(int64_t start, int64_t n, float *noise, uint64_t seed,
                                 float stddev) {
    if (n <= 0 || start < 0) return;
    const unsigned fp = fd_fp_enter();
    const uint64_t key = fd_rng_key(seed);
    const int64_t end = start + n;
    const int64_t b0 = start / FD_DROPOUT_BLOCK, b1 = (end - 1) / FD_DROPOUT_BLOCK;
    const int nt = fd_threads_for(b1 - b0 + 1, 4);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t b = b0; b <= b1; b++) {
        const unsigned fpt = fd_fp_enter();
        fd_rng_state st;
        fd_rng_seed_stream(&st, key, (uint64_t)b);
        const int64_t lo = b * FD_DROPOUT_BLOCK;
        int64_t hi = lo + FD_DROPOUT_BLOCK;
        if (hi > end) hi = end;
        for (int64_t i = lo; i < hi; i += 2) {
            const uint64_t d0 = fd_rng_next(&st), d1 = fd_rng_next(&st);
            if (i + 1 < start) continue;
            const double u1 = (double)((d0 >> 11) + 1) * 0x1.0p-53;
            const double u2 = (double)(d1 >> 11) * 0x1.0p-53;
            const double r = sqrt(-2.0 * log(u1)), th = FD_TWO_PI * u2;
            if (i >= start) noise[i - start] = (float)(1.0 + (double)stddev * r * cos(th));
            if (i + 1 >= start && i + 1 < hi)
                noise[i + 1 - start] = (float)(1.0 + (double)stddev * r * sin(th));
        }
        fd_fp_exit(fpt);
    }
    fd_fp_exit(fp);
}

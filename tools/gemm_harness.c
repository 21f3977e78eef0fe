/* gemm_harness.c — standalone check and timer for fd_sgemm (no Python).
 *
 * Build (from the repository root), every C file with the flags setup.py gives it:
 *   f="-O3 -std=c11 -fopenmp -Icsrc -DFD_HAVE_AVX2 -DFD_HAVE_AVX512"; objs=
 *   for src in $(find csrc -name '*.c'); do
 *     case $src in *avx512*) x="-mavx512f -mavx512dq -mavx512bw -mavx512vl -mavx2 -mfma";;
 *                  *avx2*) x="-mavx2 -mfma";; *) x=;; esac
 *     o=/tmp/fd_$(basename $src .c).o; gcc $f $x -c $src -o $o && objs="$objs $o"
 *   done
 *   gcc $f tools/gemm_harness.c $objs -lm -o /tmp/gemm_harness
 * (tests/test_gemm.py builds and runs `check` the same way.)
 *
 * Usage:
 *   gemm_harness check                        random shapes with padded lda/ldb/ldc,
 *                                             every ISA, 1 vs 2 threads bitwise
 *   gemm_harness bench M N K TA TB THREADS [ISA] [REPS]   best-of-REPS GFLOP/s
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float frand(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / (1 << 24))) * 2.0f - 1.0f;
}

static double clock_of(clockid_t id)
{
    struct timespec t;
    clock_gettime(id, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* reference in double: alpha·op(A)·op(B) + beta·C, then the epilogue */
static void ref_gemm(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha,
                     const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                     const float *c0, float *c, int64_t ldc, const fd_epilogue *ep)
{
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0;
            for (int64_t p = 0; p < k; p++)
                s += (double)(ta ? a[p * lda + i] : a[i * lda + p]) *
                     (double)(tb ? b[j * ldb + p] : b[p * ldb + j]);
            double z = (alpha == 0.0f ? 0.0 : alpha * s) + (beta == 0.0f ? 0.0 : beta * (double)c0[i * ldc + j]);
            if (ep && ep->bias) z += ep->bias[j];
            if (ep && ep->relu && z < 0) z = 0;
            if (ep && ep->mask) {
                uint64_t bit = (uint64_t)(i * n + j);
                z = (ep->mask[bit >> 3] >> (bit & 7)) & 1 ? z * ep->mask_scale : 0.0;
            }
            c[i * ldc + j] = (float)z;
        }
}

static int check_one(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, float beta,
                     int use_ep)
{
    int64_t lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 5, ldc = n + 2;
    int64_t arows = ta ? k : m, brows = tb ? n : k;
    float *a = malloc(sizeof(float) * (arows * lda + 1)), *b = malloc(sizeof(float) * (brows * ldb + 1));
    float *c0 = malloc(sizeof(float) * (m * ldc + 1)), *c = malloc(sizeof(float) * (m * ldc + 1));
    float *c2 = malloc(sizeof(float) * (m * ldc + 1)), *r = malloc(sizeof(float) * (m * ldc + 1));
    float *bias = malloc(sizeof(float) * n);
    uint8_t *mask = malloc((size_t)(m * n + 7) / 8);
    for (int64_t i = 0; i < arows * lda; i++) a[i] = frand();
    for (int64_t i = 0; i < brows * ldb; i++) b[i] = frand();
    for (int64_t i = 0; i < m * ldc; i++) c0[i] = frand();
    for (int64_t i = 0; i < n; i++) bias[i] = frand();
    for (int64_t i = 0; i < (m * n + 7) / 8; i++) mask[i] = (uint8_t)(frand() * 1000);
    fd_epilogue ep = {bias, 1, mask, 2.0f};
    const fd_epilogue *e = use_ep ? &ep : NULL;
    int bad = 0;
    ref_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c0, r, ldc, e);
    for (int t = 1; t <= 2; t++) {
        float *out = t == 1 ? c : c2;
        for (int64_t i = 0; i < m * ldc; i++) out[i] = beta == 0.0f ? NAN : c0[i];
        fd_set_num_threads(t);
        fd_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, out, ldc, e);
    }
    double tol = 1e-6 * (k + 4) * 4;
    for (int64_t i = 0; i < m && !bad; i++)
        for (int64_t j = 0; j < n; j++) {
            float x = c[i * ldc + j], y = r[i * ldc + j];
            if (!(fabs(x - y) <= tol * (1 + fabs(y)))) {
                printf("  MISMATCH %s ta=%d tb=%d m=%ld n=%ld k=%ld a=%g b=%g ep=%d at (%ld,%ld): %g vs %g\n",
                       fd_isa_name(fd_isa_get()), ta, tb, (long)m, (long)n, (long)k, alpha, beta,
                       use_ep, (long)i, (long)j, x, y);
                bad = 1;
                break;
            }
            if (memcmp(&c[i * ldc + j], &c2[i * ldc + j], 4)) {
                printf("  THREADS DIFFER %s m=%ld n=%ld k=%ld at (%ld,%ld)\n", fd_isa_name(fd_isa_get()),
                       (long)m, (long)n, (long)k, (long)i, (long)j);
                bad = 1;
                break;
            }
        }
    for (int64_t i = 0; i < m && !bad; i++) /* padding between rows untouched */
        for (int64_t j = n; j < ldc; j++)
            if (memcmp(&c[i * ldc + j], beta == 0.0f ? &(float){NAN} : &c0[i * ldc + j], 4) &&
                !(beta == 0.0f && isnan(c[i * ldc + j]))) {
                printf("  PADDING WRITTEN m=%ld n=%ld k=%ld\n", (long)m, (long)n, (long)k);
                bad = 1;
                break;
            }
    free(a), free(b), free(c0), free(c), free(c2), free(r), free(bias), free(mask);
    return bad;
}

static int check(void)
{
    static const int64_t sizes[] = {1, 2, 3, 5, 7, 10, 13, 14, 15, 16, 17, 31, 32, 33, 47, 64, 97, 130, 173, 300};
    const int ns = sizeof sizes / sizeof *sizes;
    int fails = 0, runs = 0;
    for (int isa = 0; isa < FD_ISA_COUNT; isa++) {
        if (fd_isa_set(isa) != 0) continue;
        for (int it = 0; it < 400; it++) {
            int64_t m = sizes[rng % ns];
            frand();
            int64_t n = sizes[rng % ns];
            frand();
            int64_t k = sizes[rng % ns];
            frand();
            int ta = rng & 1, tb = (rng >> 1) & 1, ep = (rng >> 2) & 1;
            float beta = (rng >> 3) & 1 ? 0.0f : 0.5f, alpha = (rng >> 4) & 1 ? 1.0f : -1.5f;
            fails += check_one(ta, tb, m, n, k, alpha, beta, ep);
            runs++;
        }
        fails += check_one(0, 0, 600, 700, 600, 1.0f, 0.0f, 1); /* several MC/KC blocks */
        fails += check_one(1, 1, 500, 2100, 530, 0.5f, 1.0f, 0);
        fails += check_one(0, 0, 1000, 10, 700, 1.0f, 0.0f, 1);
        fails += check_one(1, 0, 1000, 10, 300, 1.0f, 0.5f, 1);
        fails += check_one(0, 1, 5, 600, 400, 1.0f, 0.0f, 1);
        fails += check_one(0, 0, 64, 64, 0, 1.0f, 0.5f, 1);
        fails += check_one(0, 0, 64, 64, 10, 0.0f, 0.0f, 1);
        runs += 7;
    }
    printf("%d checks, %d failures\n", runs, fails);
    return fails != 0;
}

static int bench(int argc, char **argv)
{
    int64_t m = atol(argv[2]), n = atol(argv[3]), k = atol(argv[4]);
    int ta = atoi(argv[5]), tb = atoi(argv[6]), threads = atoi(argv[7]);
    int reps = argc > 9 ? atoi(argv[9]) : 20;
    if (argc > 8)
        for (int i = 0; i < FD_ISA_COUNT; i++)
            if (!strcmp(argv[8], fd_isa_name(i)) && fd_isa_set(i)) {
                printf("ISA %s not available\n", argv[8]);
                return 1;
            }
    int64_t lda = ta ? m : k, ldb = tb ? k : n;
    float *a = aligned_alloc(64, sizeof(float) * ((m * k + 15) & ~15));
    float *b = aligned_alloc(64, sizeof(float) * ((k * n + 15) & ~15));
    float *c = aligned_alloc(64, sizeof(float) * ((m * n + 15) & ~15));
    for (int64_t i = 0; i < m * k; i++) a[i] = frand();
    for (int64_t i = 0; i < k * n; i++) b[i] = frand();
    fd_set_num_threads(threads);
    double flops = 2.0 * m * n * k, best = 1e30, best_cpu = 1e30;
    int inner = (int)(2e8 / flops) + 1;
    for (int r = 0; r < reps; r++) {
        double t = clock_of(CLOCK_MONOTONIC), u = clock_of(CLOCK_PROCESS_CPUTIME_ID);
        for (int i = 0; i < inner; i++)
            fd_sgemm(ta, tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, n, NULL);
        t = (clock_of(CLOCK_MONOTONIC) - t) / inner;
        u = (clock_of(CLOCK_PROCESS_CPUTIME_ID) - u) / inner;
        if (t < best) best = t;
        if (u < best_cpu) best_cpu = u;
    }
    /* GFLOP per CPU-second is immune to time-slicing by other processes: with 1 thread
     * it is the honest figure on a shared machine. */
    printf("%s %ldx%ldx%ld ta=%d tb=%d threads=%d: %.1f GFLOP/s (%.1f us); per CPU-second %.1f\n",
           fd_isa_name(fd_isa_get()), (long)m, (long)n, (long)k, ta, tb, threads,
           flops / best * 1e-9, best * 1e6, flops / best_cpu * 1e-9);
    return 0;
}

int main(int argc, char **argv)
{
    fd_init();
    if (argc >= 2 && !strcmp(argv[1], "check")) return check();
    if (argc >= 8 && !strcmp(argv[1], "bench")) return bench(argc, argv);
    fprintf(stderr, "usage: %s check | bench M N K TA TB THREADS [ISA] [REPS]\n", argv[0]);
    return 2;
}

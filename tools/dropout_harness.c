/*
 * dropout_harness.c — standalone check and timing of the dropout kernels, without the
 * Python extension.  Stubs the dispatch (fd_init, fd_kt, fd_threads_for) so only the
 * dropout files are needed.  Build and run from the repository root:
 *
 *   gcc -O3 -std=c11 -fopenmp -Icsrc -DFD_HAVE_AVX2 -DFD_HAVE_AVX512 -c csrc/kernels/dropout.c -o /tmp/d.o
 *   gcc -O3 -std=c11 -Icsrc -c csrc/kernels/dropout_ref.c -o /tmp/dr.o
 *   gcc -O3 -std=c11 -Icsrc -mavx2 -mfma -c csrc/kernels/dropout_avx2.c -o /tmp/d2.o
 *   gcc -O3 -std=c11 -Icsrc -mavx512f -mavx512dq -mavx512bw -mavx512vl -mavx2 -mfma \
 *       -c csrc/kernels/dropout_avx512.c -o /tmp/d5.o
 *   gcc -O3 -std=c11 -fopenmp -Icsrc -DFD_HAVE_AVX2 -DFD_HAVE_AVX512 tools/dropout_harness.c \
 *       /tmp/d.o /tmp/dr.o /tmp/d2.o /tmp/d5.o -o /tmp/dropout_harness && /tmp/dropout_harness
 *
 * (-DHARNESS_LIB drops main and the checks, leaving the stubs and harness_set()).
 * Checks: ref == avx2 == avx512 bitwise, for 1 and 2 threads, many n and rates, mask
 * only / forward / forward without mask / in place / apply; the known-answer vector of
 * tests/test_dropout.py; the non-temporal path (> 32 MB) at every output misalignment.
 * `dropout_harness bench` then prints G elements/s and GB/s per path next to memcpy.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

static fd_kernel_table tabs[FD_ISA_COUNT];
const fd_kernel_table *fd_kt = NULL;
static int n_threads = 1;

void fd_init(void) {
    if (fd_kt) return;
    tabs[0].dropout_blocks = fd_dropout_blocks_ref, tabs[0].dropout_apply = fd_dropout_apply_ref;
    tabs[1].dropout_blocks = fd_dropout_blocks_avx2, tabs[1].dropout_apply = fd_dropout_apply_avx2;
    tabs[2].dropout_blocks = fd_dropout_blocks_avx512;
    tabs[2].dropout_apply = fd_dropout_apply_avx512;
    for (int i = 0; i < FD_ISA_COUNT; i++) tabs[i].isa = i;
    fd_kt = &tabs[FD_ISA_AVX512];
}
int fd_threads_for(int64_t work, int64_t grain) {
    int64_t chunks = work / (grain < 1 ? 1 : grain);
    if (chunks < 1) chunks = 1;
    return n_threads > chunks ? (int)chunks : n_threads;
}
void harness_set(int isa, int threads) {
    fd_init();
    fd_kt = &tabs[isa];
    n_threads = threads;
}

#ifndef HARNESS_LIB
static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int failures = 0;
#define CHECK(cond, ...)                                         \
    do {                                                         \
        if (!(cond)) {                                           \
            failures++;                                          \
            if (failures < 20) {                                 \
                printf("FAIL %s:%d: ", __FILE__, __LINE__);      \
                printf(__VA_ARGS__);                             \
                printf("\n");                                    \
            }                                                    \
        }                                                        \
    } while (0)

/* Known answer: seed 12345, rate 0.5, n = 2 blocks; mask bytes 0..7 (steps 0-3 of
 * block 0) and 512..519 (steps 0-3 of block 1), from a scalar Python implementation
 * of splitmix64 + xoshiro256+ with Python ints (as in tests/test_dropout.py). */
static void check_known_answer(void) {
    static const uint8_t want[2][8] = {{0xe8, 0x30, 0xab, 0xb4, 0xdd, 0xbd, 0x42, 0xf6},
                                       {0xb5, 0x38, 0xcd, 0xb1, 0xb3, 0x79, 0xef, 0xba}};
    static uint8_t m[1024];
    for (int isa = 0; isa < 3; isa++) {
        harness_set(isa, 1);
        fd_dropout_mask(2 * FD_DROPOUT_BLOCK, 12345, fd_dropout_threshold(0.5), m);
        CHECK(memcmp(m, want[0], 8) == 0 && memcmp(m + 512, want[1], 8) == 0,
              "known answer, isa %d", isa);
    }
}

static void check_paths(void) {
    const int64_t ns[] = {1, 7, 8, 9, 15, 16, 17, 4095, 4096, 4097, 3 * 4096 + 5, 40000,
                          1000003};
    const double rates[] = {0.0, 0.1, 0.5, 0.9, 0.999};
    const int64_t nmax = 1000003;
    float *x = malloc(nmax * 4), *y[3], *yi = malloc(nmax * 4), *ya = malloc(nmax * 4);
    uint8_t *m[3], *mo = malloc(nmax / 8 + 1);
    for (int i = 0; i < 3; i++) y[i] = malloc(nmax * 4), m[i] = malloc(nmax / 8 + 1);
    for (int64_t j = 0; j < nmax; j++) x[j] = (float)((j * 2654435761u) % 1000) - 499.5f;
    for (size_t a = 0; a < sizeof ns / sizeof *ns; a++)
        for (size_t r = 0; r < sizeof rates / sizeof *rates; r++)
            for (int threads = 1; threads <= 2; threads++) {
                const int64_t n = ns[a], nbytes = (n + 7) / 8;
                const uint32_t thr = fd_dropout_threshold(rates[r]);
                const float scale = (float)(1.0 / (1.0 - rates[r]));
                const uint64_t seed = 0x0123456789abcdefULL + a;
                for (int isa = 0; isa < 3; isa++) {
                    harness_set(isa, threads);
                    memset(m[isa], 0xAA, nbytes);
                    fd_dropout_forward_f32(n, y[isa], x, seed, thr, scale, m[isa]);
                    memset(mo, 0x55, nbytes);
                    fd_dropout_mask(n, seed, thr, mo);
                    CHECK(memcmp(mo, m[isa], nbytes) == 0, "mask-only isa %d n %ld", isa, (long)n);
                    if (n % 8) CHECK((m[isa][nbytes - 1] >> (n % 8)) == 0, "pad bits isa %d", isa);
                    memcpy(yi, x, n * 4);
                    fd_dropout_forward_f32(n, yi, yi, seed, thr, scale, NULL);
                    CHECK(memcmp(yi, y[isa], n * 4) == 0, "in-place isa %d n %ld", isa, (long)n);
                    fd_dropout_apply_f32(n, ya, x, m[isa], scale);
                    CHECK(memcmp(ya, y[isa], n * 4) == 0, "apply isa %d n %ld", isa, (long)n);
                    int64_t kept = 0;
                    for (int64_t j = 0; j < n; j++) {
                        const int bit = (m[isa][j / 8] >> (j % 8)) & 1;
                        kept += bit;
                        const float want = bit ? x[j] * scale : 0.0f;
                        if (memcmp(&want, &y[isa][j], 4)) {
                            CHECK(0, "y isa %d n %ld j %ld", isa, (long)n, (long)j);
                            break;
                        }
                    }
                    if (n >= 100000 && rates[r] < 0.99) {
                        const double p = (double)kept / n;
                        CHECK(p > 1 - rates[r] - 0.01 && p < 1 - rates[r] + 0.01,
                              "kept fraction %g rate %g", p, rates[r]);
                    }
                }
                for (int isa = 1; isa < 3; isa++) {
                    CHECK(memcmp(m[0], m[isa], nbytes) == 0, "mask ref != isa %d n %ld rate %g t %d",
                          isa, (long)n, rates[r], threads);
                    CHECK(memcmp(y[0], y[isa], n * 4) == 0, "y ref != isa %d n %ld", isa, (long)n);
                }
            }
    free(x), free(yi), free(ya), free(mo);
    for (int i = 0; i < 3; i++) free(y[i]), free(m[i]);
}

/* Large tensors (non-temporal path) at every output misalignment 0..15 floats, against ref. */
static void check_streaming(void) {
    const int64_t n = (INT64_C(33) << 20) / 4 + 13;
    float *x = malloc((n + 16) * 4), *want = malloc(n * 4), *buf = malloc((n + 16) * 4 + 64);
    uint8_t *mw = malloc(n / 8 + 1), *m = malloc(n / 8 + 1);
    for (int64_t j = 0; j < n; j++) x[j] = (float)(j % 1013) - 500.0f;
    const uint32_t thr = fd_dropout_threshold(0.3);
    harness_set(FD_ISA_REF, 1);
    fd_dropout_forward_f32(n, want, x, 77, thr, 1.25f, mw);
    for (int isa = 1; isa < 3; isa++)
        for (int threads = 1; threads <= 2; threads++)
            for (int mis = 0; mis < 16; mis += (threads == 1 ? 1 : 5)) {
                harness_set(isa, threads);
                float *out = (float *)(((uintptr_t)buf + 63) & ~(uintptr_t)63) + mis;
                fd_dropout_forward_f32(n, out, x, 77, thr, 1.25f, m);
                CHECK(memcmp(out, want, n * 4) == 0 && memcmp(m, mw, (n + 7) / 8) == 0,
                      "stream forward isa %d threads %d misalign %d", isa, threads, mis);
                memset(out, 0, n * 4);
                fd_dropout_apply_f32(n, out, x, mw, 1.25f);
                CHECK(memcmp(out, want, n * 4) == 0, "stream apply isa %d threads %d misalign %d",
                      isa, threads, mis);
            }
    free(x), free(want), free(buf), free(mw), free(m);
}

static double best_of(int reps, void (*fn)(void *), void *arg) {
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        const double t0 = now();
        fn(arg);
        const double t = now() - t0;
        if (t < best) best = t;
    }
    return best;
}

typedef struct {
    int64_t n;
    float *x, *y;
    uint8_t *m;
    int what;
} job;

static void run_job(void *p) {
    job *j = p;
    const uint32_t thr = fd_dropout_threshold(0.5);
    switch (j->what) {
    case 0: memcpy(j->y, j->x, j->n * 4); break;
    case 1: fd_dropout_forward_f32(j->n, j->y, j->x, 42, thr, 2.0f, j->m); break;
    case 2: fd_dropout_apply_f32(j->n, j->y, j->x, j->m, 2.0f); break;
    case 3: fd_dropout_mask(j->n, 42, thr, j->m); break;
    }
}

static void bench(void) {
    const int64_t sizes[] = {1 << 20, 32 << 20};
    for (int s = 0; s < 2; s++) {
        const int64_t n = sizes[s];
        job j = {n, aligned_alloc(64, n * 4), aligned_alloc(64, n * 4), aligned_alloc(64, n / 8), 0};
        for (int64_t i = 0; i < n; i++) j.x[i] = (float)i, j.y[i] = 0;
        const int reps = n > (1 << 22) ? 10 : 200;
        for (int threads = 1; threads <= 2; threads++) {
            n_threads = threads;
            j.what = 0;
            const double tm = best_of(reps, run_job, &j);
            printf("n=%9ld threads=%d memcpy         %7.2f GB/s (r+w)\n", (long)n, threads,
                   8.0 * n / tm / 1e9);
            for (int isa = 0; isa < 3; isa++) {
                harness_set(isa, threads);
                for (j.what = 1; j.what <= 3; j.what++) {
                    const double t = best_of(j.what == 1 && isa == 0 ? 3 : reps, run_job, &j);
                    const double bytes = j.what == 3 ? n / 8.0 : 8.0 * n + n / 8.0;
                    printf("n=%9ld threads=%d %-6s %-7s %6.2f Gelem/s %7.2f GB/s", (long)n,
                           threads, fd_isa_name(isa),
                           j.what == 1 ? "forward" : j.what == 2 ? "apply" : "mask", n / t / 1e9,
                           bytes / t / 1e9);
                    if (j.what != 3) printf("  %.2fx memcpy time", tm / t);
                    printf("\n");
                }
            }
        }
        free(j.x), free(j.y), free(j.m);
    }
}

const char *fd_isa_name(int isa) {
    static const char *names[] = {"ref", "avx2", "avx512"};
    return names[isa];
}

int main(int argc, char **argv) {
    fd_init();
    check_known_answer();
    check_paths();
    check_streaming();
    printf("%s (%d failures)\n", failures ? "FAILED" : "all checks passed", failures);
    if (argc > 1 && strcmp(argv[1], "bench") == 0) bench();
    return failures != 0;
}
#endif

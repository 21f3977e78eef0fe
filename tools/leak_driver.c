/* leak_driver.c — exercises every public C kernel of fastdrop.h on every compiled and
 * supported ISA path, with 1 and 2 threads, so a memory checker can watch the C layer
 * without Python in the way.  tools/sanitize.sh builds it twice and runs it:
 *
 *   under valgrind --leak-check=full --error-exitcode=1 (plain -O2 build; valgrind's
 *   synthetic CPU has no AVX-512, so the avx512 path is skipped there), and
 *   built with -fsanitize=address,undefined (LeakSanitizer on at exit; every path).
 *
 * Build by hand from the repository root (per-ISA files get their ISA flags, as setup.py):
 *   f="-O2 -g -std=c11 -fopenmp -Icsrc -DFD_HAVE_AVX2=1 -DFD_HAVE_AVX512=1"
 *   for s in $(find csrc -name '*.c'); do case $s in
 *     *avx512*) x="-mavx512f -mavx512dq -mavx512bw -mavx512vl -mavx2 -mfma";;
 *     *avx2*) x="-mavx2 -mfma";; *) x="";; esac
 *     gcc $f $x -c $s -o /tmp/$(basename $s .c).o; done
 *   gcc $f tools/leak_driver.c /tmp/*.o -lm -o /tmp/leak_driver && /tmp/leak_driver
 *
 * GEMM's per-thread packing buffers must all be freed by fd_release_buffers() (the small
 * list nodes stay reachable by design), and GEMM must work again after a release.  The
 * driver also checks GEMM results against a naive double-precision product and the
 * dropout outputs against the mask, so a path that silently computes garbage fails too.
 * Exit status: 0 ok, 1 a wrong result.  Options: -q quiet. */
#define _POSIX_C_SOURCE 200809L
#include "fastdrop.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
static int quiet = 0;

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "leak_driver: FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                                  \
            fputc('\n', stderr);                                           \
            failures++;                                                    \
        }                                                                  \
    } while (0)

static uint64_t rng_state = 0x123456789abcdefULL;
static float frand(void) { /* uniform in [-1, 1) */
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((double)(rng_state >> 40) / (double)(1ULL << 23) - 1.0);
}

static float *falloc(int64_t n) {
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!p) { perror("malloc"); exit(2); }
    for (int64_t i = 0; i < n; i++) p[i] = frand();
    return p;
}

/* C(m×n) = alpha op(A) op(B) + beta C checked against a double-precision product. */
static void check_gemm(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, float beta,
                       int with_ep) {
    int64_t lda = ta ? m + 3 : k + 1, ldb = tb ? k + 2 : n + 5, ldc = n + 7;
    float *a = falloc((ta ? k : m) * lda), *b = falloc((tb ? n : k) * ldb);
    float *c = falloc(m * ldc), *c0 = malloc((size_t)(m * ldc) * sizeof(float));
    float *bias = falloc(n);
    int64_t nbytes = (m * n + 7) / 8;
    uint8_t *mask = malloc((size_t)(nbytes > 0 ? nbytes : 1));
    fd_dropout_mask(m * n, 77, fd_dropout_threshold(0.25), mask);
    memcpy(c0, c, (size_t)(m * ldc) * sizeof(float));
    fd_epilogue ep = {bias, 1, mask, 1.0f / 0.75f};
    fd_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, with_ep ? &ep : NULL);
    double worst = 0;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0, sa = 0;
            for (int64_t p = 0; p < k; p++) {
                double x = ta ? a[p * lda + i] : a[i * lda + p];
                double y = tb ? b[j * ldb + p] : b[p * ldb + j];
                s += x * y;
                sa += fabs(x * y);
            }
            double z = alpha * s + (beta != 0 ? beta * c0[i * ldc + j] : 0);
            if (with_ep) {
                z += bias[j];
                if (z < 0) z = 0;
                int64_t e = i * n + j;
                z = (mask[e >> 3] >> (e & 7)) & 1 ? z * ep.mask_scale : 0;
            }
            double err = fabs(c[i * ldc + j] - z) / (1e-6 + fabs(alpha) * sa + fabs(beta) + 1);
            if (err > worst) worst = err;
        }
    CHECK(worst < 1e-4, "gemm ta=%d tb=%d m=%lld n=%lld k=%lld ep=%d rel err %g", ta, tb,
          (long long)m, (long long)n, (long long)k, with_ep, worst);
    free(a); free(b); free(c); free(c0); free(bias); free(mask);
}

static void run_gemm_suite(void) {
    /* every path of csrc/gemm/frame.c: skinny n (dot / swapped), small m (B read in
     * place), generic with several MC and KC blocks (mc <= 144, kc = 256) */
    static const int64_t shapes[][3] = {{1, 1, 1},    {7, 5, 3},     {50, 10, 64},
                                        {33, 17, 65}, {14, 32, 256}, {24, 200, 96},
                                        {97, 130, 40}, {150, 170, 300}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                check_gemm(ta, tb, shapes[s][0], shapes[s][1], shapes[s][2],
                           s % 2 ? 0.5f : 1.0f, s % 3 == 1 ? 0.75f : 0.0f, (int)(s + ta) % 2);
}

static void run_dropout_suite(void) {
    static const int64_t sizes[] = {1, 7, 8, 9, 4095, 4096, 4097, 3 * 4096 + 13, 70001};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int64_t n = sizes[s], nb = (n + 7) / 8;
        float *x = falloc(n), *y = falloc(n), *g = falloc(n), *dx = falloc(n);
        uint8_t *m1 = malloc((size_t)nb), *m2 = malloc((size_t)nb);
        uint32_t thr = fd_dropout_threshold(0.4);
        float scale = (float)(1.0 / 0.6);
        fd_dropout_mask(n, 1234 + s, thr, m1);
        fd_dropout_forward_f32(n, y, x, 1234 + s, thr, scale, m2);
        CHECK(memcmp(m1, m2, (size_t)nb) == 0, "dropout mask != forward mask, n=%lld",
              (long long)n);
        for (int64_t i = 0; i < n; i++) {
            int keep = (m1[i >> 3] >> (i & 7)) & 1;
            if (y[i] != (keep ? x[i] * scale : 0.0f)) {
                CHECK(0, "dropout forward n=%lld i=%lld", (long long)n, (long long)i);
                break;
            }
        }
        fd_dropout_forward_f32(n, x, x, 1234 + s, thr, scale, NULL);      /* in place, no mask */
        CHECK(memcmp(x, y, (size_t)n * sizeof(float)) == 0, "in-place dropout n=%lld",
              (long long)n);
        fd_dropout_apply_f32(n, dx, g, m1, scale);
        for (int64_t i = 0; i < n; i++) {
            int keep = (m1[i >> 3] >> (i & 7)) & 1;
            if (dx[i] != (keep ? g[i] * scale : 0.0f)) {
                CHECK(0, "dropout apply n=%lld i=%lld", (long long)n, (long long)i);
                break;
            }
        }
        fd_relu_f32(n, y, x);
        fd_relu_backward_f32(n, dx, g, y);
        fd_relu_dropout_backward_f32(n, dx, g, y, scale);
        free(x); free(y); free(g); free(dx); free(m1); free(m2);
    }
}

static void run_misc_suite(void) {
    int64_t m = 67, c = 10, n = m * c;
    float *x = falloc(n), *out = falloc(n), *bias = falloc(c), *grad = falloc(n);
    float *rows = falloc(m), *t = falloc(n), *col = falloc(c);
    int64_t *labels = malloc((size_t)m * sizeof(int64_t));
    for (int64_t i = 0; i < m; i++) labels[i] = (i * 7) % c;
    for (int64_t i = 0; i < n; i++) t[i] = fabsf(t[i]) / 5.0f;
    fd_bias_add_f32(m, c, out, x, bias);
    fd_colsum_f32(m, c, col, x, 1.0f, 0.0f);
    double l1 = fd_softmax_xent_labels_f32(m, c, x, labels, 1.0f / m, grad, rows);
    double l2 = fd_softmax_xent_targets_f32(m, c, x, t, 1.0f / m, NULL, NULL);
    CHECK(isfinite(l1) && isfinite(l2), "softmax xent not finite");
    fd_softmax_f32(m, c, out, x);
    CHECK(isfinite(fd_mse_f32(n, x, out, 1.0f, grad)), "mse not finite");
    float *w = falloc(n), *mo = calloc((size_t)n, sizeof(float)), *v = calloc((size_t)n, sizeof(float));
    for (int step = 1; step <= 3; step++) {
        fd_regularize_grad_f32(n, grad, w, 1e-4f, 1e-4f);
        fd_adam_update_f32(n, w, grad, mo, v, 1e-3f, 0.9f, 0.999f, 1e-7f, 0.01f, step);
        fd_sgd_update_f32(n, w, grad, mo, 1e-2f, 0.9f, step % 2, 0.0f);
    }
    fd_maxnorm_f32(m, c, w, 1.0f);
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(w[i])) { CHECK(0, "optimizer produced non-finite weight"); break; }
    free(x); free(out); free(bias); free(grad); free(rows); free(t); free(col); free(labels);
    free(w); free(mo); free(v);
}

int main(int argc, char **argv) {
    quiet = argc > 1 && strcmp(argv[1], "-q") == 0;
    fd_init();
    int ran = 0;
    for (int isa = 0; isa < FD_ISA_COUNT; isa++) {
        if (!fd_isa_compiled(isa) || !fd_isa_cpu_supported(isa)) {
            if (!quiet) printf("leak_driver: %s: not available here, skipped\n", fd_isa_name(isa));
            continue;
        }
        CHECK(fd_isa_set(isa) == 0, "fd_isa_set(%s)", fd_isa_name(isa));
        for (int threads = 1; threads <= 2; threads++) {
            fd_set_num_threads(threads);
            run_gemm_suite();
            fd_release_buffers();           /* free, then grow again from nothing */
            run_gemm_suite();
            run_dropout_suite();
            run_misc_suite();
        }
        ran++;
        if (!quiet) printf("leak_driver: %s: done (openmp=%d)\n", fd_isa_name(isa),
                           fd_openmp_enabled());
    }
    fd_set_num_threads(0);
    fd_release_buffers();
    CHECK(ran > 0, "no ISA path ran");
    printf("leak_driver: %d path(s), %d failure(s)\n", ran, failures);
    return failures ? 1 : 0;
}

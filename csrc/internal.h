/* internal.h — shared between fastdrop's C files; not part of the public API. */
#ifndef FD_INTERNAL_H
#define FD_INTERNAL_H

#include "fastdrop.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__GNUC__)
#define FD_RESTRICT __restrict__
#define FD_ALIGN(x) __attribute__((aligned(x)))
#else
#define FD_RESTRICT
#define FD_ALIGN(x)
#endif

/* Threads to use for a job of `work` units of roughly `grain` units each: never more
 * threads than chunks of work, so tiny calls stay single-threaded. */
int fd_threads_for(int64_t work, int64_t grain);

/* ----------------------------------------------------------- parallel chunks (parallel.c) */
/* Run fn(ctx, i) for every i in [0, nchunks) on up to nt threads, the caller included;
 * returns once every chunk is done (a helper that starts late finds nothing left and is
 * not waited for).  Chunks must be independent (disjoint outputs): which thread runs a
 * chunk never changes a result.  Helper threads run each chunk in the kernels' FP mode
 * (fpenv.h); the caller keeps the mode its entry point set.  Nested or concurrent calls
 * run serially on the calling thread.  Call only from inside a public entry point. */
typedef void (*fd_chunk_fn)(void *ctx, int64_t i);
void fd_parallel(int nt, int64_t nchunks, fd_chunk_fn fn, void *ctx);
/* [0, n) in contiguous ranges (a multiple of align long, except the last), at least
 * grain long per thread: fn(ctx, lo, hi).  Single-threaded below 2 grains. */
typedef void (*fd_range_fn)(void *ctx, int64_t lo, int64_t hi);
void fd_parallel_range(int64_t n, int64_t grain, int64_t align, fd_range_fn fn, void *ctx);
int fd_pool_active(void);              /* 1: our pool; 0: OpenMP regions or serial   */
void fd_pool_kick(void);               /* idle helpers run the thread cleanup hook     */
/* The pool knows nothing of what its threads hold: a caller that keeps per-thread state
 * (frame.c: the GEMM packing buffers) registers the function that frees the calling
 * thread's share; idle helpers run it after fd_pool_kick.  NULL: no hook. */
typedef void (*fd_thread_cleanup_fn)(void);
void fd_pool_set_thread_cleanup(fd_thread_cleanup_fn fn);
void fd_release_thread_buffers(void);  /* frame.c: free the calling thread's buffers  */

/* ----------------------------------------------------- per-ISA kernel table */
/* GEMM micro-kernel (BLIS contract):
 *   C(mr×nr) := alpha·Ap·Bp + beta·C   over k steps, where Ap is a packed MR×k panel
 *   (column j at Ap + j*MR) and Bp a packed k×NR panel (row j at Bp + j*NR).
 *   C has row stride rs_c and column stride 1.  mr <= MR, nr <= NR: only that corner
 *   of C is read/written (edges go through a local tile).  beta == 0: C is not read. */
typedef void (*fd_gemm_ukr_fn)(int64_t k, float alpha, const float *ap, const float *bp,
                               float beta, float *c, int64_t rs_c, int64_t mr, int64_t nr);

typedef struct {
    int            mr, nr;        /* register block                         */
    int            mc, kc, nc;    /* cache blocks (mc % mr == 0, nc % nr == 0) */
    fd_gemm_ukr_fn ukr;
} fd_gemm_params;

typedef struct {
    int isa;
    fd_gemm_params gemm;
    /* dropout: process whole blocks [b0, b1) of the tensor */
    void (*dropout_blocks)(int64_t n, int64_t b0, int64_t b1, float *out, const float *x,
                           uint64_t seed, uint32_t threshold, float scale, uint8_t *mask);
    void (*dropout_apply)(int64_t n, float *out, const float *x, const uint8_t *mask,
                          float scale);          /* n % 8 == 0 on entry except last chunk */
    void (*relu)(int64_t n, float *out, const float *x);
    void (*relu_backward)(int64_t n, float *out, const float *g, const float *y);
    void (*relu_dropout_backward)(int64_t n, float *out, const float *g, const float *h,
                                  float scale);
    void (*adam)(int64_t n, float *w, const float *g, float *m, float *v, float lr_t,
                 float beta1, float beta2, float eps, float wd_lr);
    void (*xent_rows)(int64_t r0, int64_t r1, int64_t c, const float *logits,
                      const int64_t *labels, const float *targets, float scale, float *grad,
                      double *loss_rows);
    void (*softmax_rows)(int64_t r0, int64_t r1, int64_t c, float *out, const float *x);
    /* fused Dense backward (fd_dense_backward_act_f32) on columns [c0, c1), all rows */
    void (*dense_backward_cols)(int64_t m, int64_t n, int64_t c0, int64_t c1, float *dz,
                                float *db, const float *grad, const float *h,
                                const uint8_t *mask, float scale, int relu);
} fd_kernel_table;

/* The chosen path; set by fd_init() (once, thread-safe) and fd_isa_set(); an atomic
 * pointer to an immutable table, so a reader sees either the old or the new path. */
extern const fd_kernel_table *_Atomic fd_kt;

/* Each ISA file set defines these symbols with its suffix (ref, avx2, avx512):
 *   gemm/ukr_<isa>_<MR>x<NR>.c : const fd_gemm_params fd_gemm_params_<isa>
 *   kernels/dropout_<isa>.c    : fd_dropout_blocks_<isa>, fd_dropout_apply_<isa>
 *   kernels/elementwise_<isa>.c: fd_relu_<isa>, ... (one shared implementation file,
 *                                compiled once per ISA with that ISA's flags)        */
#define FD_DECLARE_ISA(isa)                                                              \
    extern const fd_gemm_params fd_gemm_params_##isa;                                    \
    void fd_dropout_blocks_##isa(int64_t n, int64_t b0, int64_t b1, float *out,          \
                                 const float *x, uint64_t seed, uint32_t threshold,      \
                                 float scale, uint8_t *mask);                            \
    void fd_dropout_apply_##isa(int64_t n, float *out, const float *x,                   \
                                const uint8_t *mask, float scale);                       \
    void fd_relu_##isa(int64_t n, float *out, const float *x);                           \
    void fd_relu_backward_##isa(int64_t n, float *out, const float *g, const float *y);  \
    void fd_relu_dropout_backward_##isa(int64_t n, float *out, const float *g,           \
                                        const float *h, float scale);                    \
    void fd_adam_##isa(int64_t n, float *w, const float *g, float *m, float *v,          \
                       float lr_t, float beta1, float beta2, float eps, float wd_lr);    \
    void fd_xent_rows_##isa(int64_t r0, int64_t r1, int64_t c, const float *logits,      \
                            const int64_t *labels, const float *targets, float scale,    \
                            float *grad, double *loss_rows);                             \
    void fd_softmax_rows_##isa(int64_t r0, int64_t r1, int64_t c, float *out,            \
                               const float *x);                                          \
    void fd_dense_backward_cols_##isa(int64_t m, int64_t n, int64_t c0, int64_t c1,      \
                                      float *dz, float *db, const float *grad,           \
                                      const float *h, const uint8_t *mask, float scale,  \
                                      int relu);

FD_DECLARE_ISA(ref)
#ifdef FD_HAVE_AVX2
FD_DECLARE_ISA(avx2)
#endif
#ifdef FD_HAVE_AVX512
FD_DECLARE_ISA(avx512)
#endif

#endif

/*
 * fastdrop.h — the whole public C API of fastdrop's kernels.
 *
 * Conventions
 *   - Every matrix is row-major: element (r, c) of a matrix with leading dimension ld
 *     is p[r * ld + c].  Sizes and leading dimensions are int64_t.
 *   - Names: fd_<op>_f32(n, out, in...) — length first, outputs before inputs.
 *   - Kernels never allocate per call except GEMM's packing buffers (thread-local,
 *     grown on demand, freed by fd_release_buffers()).  A kernel that allocates returns
 *     an int status (0 ok, -1 out of memory); nothing aborts.
 *   - Floating point: inside every kernel, on every thread running it, subnormals are
 *     flushed to zero (FTZ + DAZ) unless fd_set_flush_denormals(0); the caller's MXCSR
 *     is restored before return (fpenv.h).
 *   - Threads: work is cut into independent chunks claimed by the calling thread and by
 *     helper threads (parallel.c); a helper that starts late is never waited for.
 *   - Inputs are validated by the Python layer; the C layer trusts sizes and pointers.
 *   - Results are bitwise identical for any thread count on the same ISA path:
 *     no reduction is ever split across threads.
 */
#ifndef FASTDROP_H
#define FASTDROP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- dispatch */
enum { FD_ISA_REF = 0, FD_ISA_AVX2 = 1, FD_ISA_AVX512 = 2, FD_ISA_COUNT = 3 };

void        fd_init(void);                 /* idempotent; honours $FASTDROP_ISA      */
const char *fd_isa_name(int isa);          /* "ref" | "avx2" | "avx512"              */
int         fd_isa_compiled(int isa);      /* 1 if the path was built into this lib  */
int         fd_isa_cpu_supported(int isa); /* 1 if CPU (cpuid) and OS (xgetbv) allow */
int         fd_isa_get(void);              /* the path in use                        */
int         fd_isa_set(int isa);           /* 0 ok; -1 not compiled / not supported  */
const char *fd_isa_env_error(void);        /* non-NULL if $FASTDROP_ISA was unusable */
/* The GEMM parameter table in use ("zen5", "zen4", "sapphire-rapids", "icelake-server",
 * "skylake-server", "zen2-zen3", "haswell", "generic-<isa>", "override"); blocks (may be
 * NULL) gets mr, nr, mc, kc, nc.  Chosen from cpuid vendor/family/model and the cache
 * sizes the CPU reports; $FASTDROP_GEMM_BLOCKS=mc,kc,nc overrides the cache blocks. */
const char *fd_gemm_table(int64_t blocks[5]);
/* cpuid vendor string, family, model, and L1d/L2/L3 sizes in bytes (0 if unknown). */
void        fd_cpu_describe(char vendor[13], int *family, int *model, int64_t caches[3]);

/* ----------------------------------------------------------------- threads */
int  fd_openmp_enabled(void);
void fd_set_num_threads(int n);            /* n <= 0 restores the default            */
int  fd_get_num_threads(void);            /* set value, else OMP default, else 1    */

/* Flush subnormals to zero inside kernels (FTZ+DAZ on every kernel thread, the caller's
 * state restored on exit; default on).  See fpenv.h. */
void fd_set_flush_denormals(int on);
int  fd_get_flush_denormals(void);
long fd_get_mxcsr(void);                   /* the calling thread's MXCSR; -1 if not x86 */
void fd_set_mxcsr(unsigned value);         /* (tests) no-op if not x86                  */
int  fd_pool_active(void);                 /* 1: fastdrop's own helper threads (Linux)  */

/* -------------------------------------------------------------------- GEMM */
/* Optional epilogue applied to each output element (r, c) after the full K sum:
 *   z = alpha*acc + beta*C  (+ bias[c])  (* scale[c])  (+ shift[c])  (relu)
 *       (* (mask bit ? mask_scale : 0))
 * bias, scale, shift: (n,) or NULL (scale NULL = 1, shift NULL = 0; BatchNorm folded in
 * at inference is scale = gamma/sqrt(var+eps), shift = beta - mean*scale).
 * mask: bit-packed, little bit order (numpy.packbits(bitorder="little")); element (r, c)
 * reads bit  mask_bit0 + R * n + c  with R = r (mask_row_group == 0) or r / mask_row_group
 * (g > 0: rows in groups of g share one row of bits — SpatialDropout2D on an NHWC conv
 * output viewed as (m*H*W) x C uses g = H*W, one bit per sample and channel).
 * mask_bit0 (>= 0) places element (0, 0) anywhere in the mask (chunked calls).
 * A zero-initialised struct plus the old fields gives the old behaviour. */
typedef struct {
    const float   *bias;
    int            relu;
    const uint8_t *mask;
    float          mask_scale;
    int64_t        mask_bit0;
    int64_t        mask_row_group;
    const float   *scale;
    const float   *shift;
} fd_epilogue;

/* C(m×n) = alpha·op(A)·op(B) + beta·C,  op(A) is m×k, op(B) is k×n.
 * trans_a = 0: A stored m×k (lda >= k); trans_a = 1: A stored k×m (lda >= m).
 * trans_b = 0: B stored k×n (ldb >= n); trans_b = 1: B stored n×k (ldb >= k).
 * beta == 0 never reads C (NaN in C does not propagate).  ep may be NULL.
 * Returns 0, or -1 if a packing buffer could not be allocated (C is then unspecified;
 * nothing else is affected and the call may be retried). */
int  fd_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
              float alpha, const float *a, int64_t lda,
              const float *b, int64_t ldb,
              float beta, float *c, int64_t ldc, const fd_epilogue *ep);
/* bf16 GEMM (gemm/bf16.c): as fd_sgemm, but the operands are rounded to bf16 (round to
 * nearest even, subnormals flushed) and the products summed in fp32.  a / b hold fp32
 * (a_bf16 / b_bf16 = 0) or bf16 bits as uint16 (1: a weight copy made once by
 * fd_f32_to_bf16).  Paths: FD_BF16_AMX (tdpbf16ps), FD_BF16_AVX512BF16 (vdpbf16ps),
 * FD_BF16_PORTABLE (bf16-rounded fp32 operands through fd_sgemm).  Returns 0 or -1
 * (allocation failure). */
enum { FD_BF16_PORTABLE = 0, FD_BF16_AVX512BF16 = 1, FD_BF16_AMX = 2, FD_BF16_COUNT = 3 };
int  fd_gemm_bf16(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                  const void *a, int a_bf16, int64_t lda, const void *b, int b_bf16,
                  int64_t ldb, float beta, float *c, int64_t ldc, const fd_epilogue *ep);
void fd_f32_to_bf16(int64_t n, const float *src, uint16_t *dst);
void fd_bf16_to_f32(int64_t n, const uint16_t *src, float *dst);
const char *fd_bf16_path_name(int path);
int  fd_bf16_path_compiled(int path);
int  fd_bf16_path_cpu_supported(int path);
int  fd_bf16_path_get(void);        /* the path a bf16 GEMM takes now */
int  fd_bf16_path_set(int path);    /* 0, or -1 if not compiled / not supported */
const char *fd_bf16_amx_note(void); /* why AMX is off on a CPU that has it, or NULL */

/* Free GEMM packing buffers: the calling thread's now, every other thread's at its next
 * GEMM (idle helper threads at once).  Safe to call while other threads run GEMMs. */
void fd_release_buffers(void);

/* ----------------------------------------------------------------- dropout */
/* The RNG contract (see README "Dropout randomness"):
 *   elements are cut into blocks of FD_DROPOUT_BLOCK; block b has FD_DROPOUT_LANES
 *   xoshiro256+ streams; element j of the block is drawn by lane j % LANES at step
 *   j / LANES.  Stream s = b*LANES + lane has state words
 *     w[i] = splitmix64_mix(splitmix64_mix(seed) + (4*s + i + 1) * 0x9E3779B97F4A7C15)
 *   (i = 0..3).  u = output >> 32; the element is dropped iff u < threshold, with
 *   threshold = fd_dropout_threshold(rate) = min(floor(rate * 2^32), 2^32 - 1). */
#define FD_DROPOUT_BLOCK 4096
#define FD_DROPOUT_LANES 16

uint32_t fd_dropout_threshold(double rate);
/* mask: (n + 7) / 8 bytes, bit j set iff element j is kept; pad bits are 0. */
void fd_dropout_mask(int64_t n, uint64_t seed, uint32_t threshold, uint8_t *mask);
/* The keep bits of elements [start, start + n) of the tensor keyed by seed (the same
 * bits fd_dropout_mask gives those elements), written to dst bits [dst_bit, dst_bit + n);
 * other bits of dst are left as they are.  Used to key a sample's mask by its global
 * index (element start = sample * features) whatever batch it is computed in. */
void fd_dropout_mask_range(int64_t start, int64_t n, uint64_t seed, uint32_t threshold,
                           uint8_t *dst, int64_t dst_bit);
/* out[j] = kept ? x[j] * scale : 0, mask written if non-NULL. out may alias x. */
void fd_dropout_forward_f32(int64_t n, float *out, const float *x, uint64_t seed,
                            uint32_t threshold, float scale, uint8_t *mask);
/* out[j] = bit j of mask ? x[j] * scale : 0 (dropout backward; also "apply mask"). */
void fd_dropout_apply_f32(int64_t n, float *out, const float *x, const uint8_t *mask,
                          float scale);

/* -------------------------------------------------------------- elementwise */
void fd_relu_f32(int64_t n, float *out, const float *x);
/* out = grad where y > 0 else 0   (y is relu's output) */
void fd_relu_backward_f32(int64_t n, float *out, const float *grad, const float *y);
/* out = grad*scale where h > 0 else 0: backward through relu then dropout, given the
 * layer output h = dropout(relu(z)) — h > 0 iff the unit was kept and z > 0. */
void fd_relu_dropout_backward_f32(int64_t n, float *out, const float *grad,
                                  const float *h, float scale);
/* Fused Dense backward through ReLU/dropout plus the bias gradient, in one pass:
 *   relu = 1: dz = h > 0 ? grad*scale : 0   (h = layer output, after dropout if any)
 *   relu = 0: dz = mask bit ? grad*scale : 0
 *   db (n, may be NULL) = column sums of dz in row order (== fd_colsum_f32(dz)). */
void fd_dense_backward_act_f32(int64_t m, int64_t n, float *dz, float *db, const float *grad,
                               const float *h, const uint8_t *mask, float scale, int relu);
/* out(m×n) = x + bias (row broadcast); out may alias x. */
void fd_bias_add_f32(int64_t m, int64_t n, float *out, const float *x, const float *bias);
/* out(n) = alpha * column sums of x(m×n) (+ beta*out), each column summed in row order */
void fd_colsum_f32(int64_t m, int64_t n, float *out, const float *x, float alpha, float beta);

/* ------------------------------------------------------------------ losses */
/* Fused softmax cross-entropy.  grad (n×c, may be NULL) = scale*(softmax - target);
 * loss_rows (n, may be NULL) = per-row loss.  Returns the sum of row losses (double,
 * summed in row order).  labels: int64 class indices in [0, c). */
double fd_softmax_xent_labels_f32(int64_t n, int64_t c, const float *logits,
                                  const int64_t *labels, float scale, float *grad,
                                  float *loss_rows);
double fd_softmax_xent_targets_f32(int64_t n, int64_t c, const float *logits,
                                   const float *targets, float scale, float *grad,
                                   float *loss_rows);
/* Row-wise softmax (numerically stable).  out may alias x. */
void fd_softmax_f32(int64_t n, int64_t c, float *out, const float *x);
/* Mean squared error: returns sum over all elements of (p - t)^2; grad = scale*(p - t). */
double fd_mse_f32(int64_t n, const float *pred, const float *target, float scale,
                  float *grad);

/* -------------------------------------------------------------- optimizers */
/* All fused, one pass per parameter block, elementwise (bitwise thread-invariant).
 * g is read-only.  l1/l2: regularization gradient added first (l1*sign(w) + 2*l2*w). */
void fd_sgd_update_f32(int64_t n, float *w, const float *g, float *vel, float lr,
                       float momentum, int nesterov, float weight_decay);
/* Adam / AdamW (Keras form): m += (g-m)(1-b1); v += (g²-v)(1-b2);
 * w -= lr_t * m / (sqrt(v) + eps) + lr*wd*w, lr_t = lr*sqrt(1-b2^t)/(1-b1^t). */
void fd_adam_update_f32(int64_t n, float *w, const float *g, float *m, float *v,
                        float lr, float beta1, float beta2, float eps,
                        float weight_decay, int64_t t);
/* g += l1*sign(w) + 2*l2*w */
void fd_regularize_grad_f32(int64_t n, float *g, const float *w, float l1, float l2);
/* Clip each column of w (rows×cols, row-major) to L2 norm <= max_value. */
void fd_maxnorm_f32(int64_t rows, int64_t cols, float *w, float max_value);
/* 1 when |x[i]| < bound for every element of x[0..n) (bound > 0; NaN fails; bound =
 * +inf: every element finite), else 0. */
int fd_all_below_f32(int64_t n, const float *x, float bound);

/* ------------------------------------------------------------ dropout variants */
/* noise[i] = 1 + stddev * N(0, 1), counter-keyed per 4096-element block (variants.c). */
void fd_gaussian_noise_f32(int64_t n, float *noise, uint64_t seed, float stddev);
/* The noise fd_gaussian_noise_f32 gives elements [start, start + n), into noise[0, n). */
void fd_gaussian_noise_range_f32(int64_t start, int64_t n, float *noise, uint64_t seed,
                                 float stddev);
void fd_mul_f32(int64_t n, float *out, const float *x, const float *y);
void fd_selu_f32(int64_t n, float *out, const float *x);
void fd_selu_backward_f32(int64_t n, float *out, const float *grad, const float *y);
/* out = mask bit ? a*x + b : a*alpha_p + b */
void fd_alpha_dropout_apply_f32(int64_t n, float *out, const float *x, const uint8_t *mask,
                                float a, float b, float alpha_p);

#ifdef __cplusplus
}
#endif
#endif

# Declarations of the C API in csrc/fastdrop.h (shared by the Cython modules).
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "fastdrop.h" nogil:
    enum:
        FD_ISA_REF
        FD_ISA_AVX2
        FD_ISA_AVX512
        FD_ISA_COUNT
        FD_DROPOUT_BLOCK
        FD_DROPOUT_LANES

    void fd_init()
    const char *fd_isa_name(int isa)
    int fd_isa_compiled(int isa)
    int fd_isa_cpu_supported(int isa)
    int fd_isa_get()
    int fd_isa_set(int isa)
    const char *fd_isa_env_error()
    const char *fd_gemm_table(int64_t *blocks)
    void fd_cpu_describe(char *vendor, int *family, int *model, int64_t *caches)
    int fd_openmp_enabled()
    void fd_set_num_threads(int n)
    int fd_get_num_threads()
    void fd_set_flush_denormals(int on)
    int fd_get_flush_denormals()
    long fd_get_mxcsr()
    void fd_set_mxcsr(unsigned int value)
    int fd_pool_active()

    ctypedef struct fd_epilogue:
        const float *bias
        int relu
        const uint8_t *mask
        float mask_scale
        int64_t mask_bit0
        int64_t mask_row_group
        const float *scale
        const float *shift

    int fd_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                  float alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
                  float beta, float *c, int64_t ldc, const fd_epilogue *ep)
    void fd_release_buffers()
    int fd_gemm_bf16(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                     const void *a, int a_bf16, int64_t lda, const void *b, int b_bf16,
                     int64_t ldb, float beta, float *c, int64_t ldc, const fd_epilogue *ep)
    void fd_f32_to_bf16(int64_t n, const float *src, uint16_t *dst)
    void fd_bf16_to_f32(int64_t n, const uint16_t *src, float *dst)
    const char *fd_bf16_path_name(int path)
    int fd_bf16_path_compiled(int path)
    int fd_bf16_path_cpu_supported(int path)
    int fd_bf16_path_get()
    int fd_bf16_path_set(int path)
    const char *fd_bf16_amx_note()

    uint32_t fd_dropout_threshold(double rate)
    void fd_dropout_mask_range(int64_t start, int64_t n, uint64_t seed, uint32_t threshold,
                               uint8_t *dst, int64_t dst_bit)
    void fd_dropout_mask(int64_t n, uint64_t seed, uint32_t threshold, uint8_t *mask)
    void fd_dropout_forward_f32(int64_t n, float *out, const float *x, uint64_t seed,
                                uint32_t threshold, float scale, uint8_t *mask)
    void fd_dropout_apply_f32(int64_t n, float *out, const float *x, const uint8_t *mask,
                              float scale)

    void fd_relu_f32(int64_t n, float *out, const float *x)
    void fd_relu_backward_f32(int64_t n, float *out, const float *grad, const float *y)
    void fd_relu_dropout_backward_f32(int64_t n, float *out, const float *grad,
                                      const float *h, float scale)
    void fd_dense_backward_act_f32(int64_t m, int64_t n, float *dz, float *db,
                                   const float *grad, const float *h, const uint8_t *mask,
                                   float scale, int relu)
    void fd_bias_add_f32(int64_t m, int64_t n, float *out, const float *x, const float *bias)
    void fd_colsum_f32(int64_t m, int64_t n, float *out, const float *x, float alpha,
                       float beta)

    double fd_softmax_xent_labels_f32(int64_t n, int64_t c, const float *logits,
                                      const int64_t *labels, float scale, float *grad,
                                      float *loss_rows)
    double fd_softmax_xent_targets_f32(int64_t n, int64_t c, const float *logits,
                                       const float *targets, float scale, float *grad,
                                       float *loss_rows)
    void fd_softmax_f32(int64_t n, int64_t c, float *out, const float *x)
    double fd_mse_f32(int64_t n, const float *pred, const float *target, float scale,
                      float *grad)

    void fd_sgd_update_f32(int64_t n, float *w, const float *g, float *vel, float lr,
                           float momentum, int nesterov, float weight_decay)
    void fd_adam_update_f32(int64_t n, float *w, const float *g, float *m, float *v,
                            float lr, float beta1, float beta2, float eps,
                            float weight_decay, int64_t t)
    void fd_regularize_grad_f32(int64_t n, float *g, const float *w, float l1, float l2)
    void fd_maxnorm_f32(int64_t rows, int64_t cols, float *w, float max_value)
    int fd_all_below_f32(int64_t n, const float *x, float bound)

    void fd_gaussian_noise_f32(int64_t n, float *noise, uint64_t seed, float stddev)
    void fd_mul_f32(int64_t n, float *out, const float *x, const float *y)
    void fd_selu_f32(int64_t n, float *out, const float *x)
    void fd_selu_backward_f32(int64_t n, float *out, const float *grad, const float *y)
    void fd_alpha_dropout_apply_f32(int64_t n, float *out, const float *x,
                                    const uint8_t *mask, float a, float b, float alpha_p)

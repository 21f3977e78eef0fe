/* optim_internal.h — the per-ISA table of optimizer loops (optim_impl.h), shared by
 * optim.c and optim_<isa>.c; not part of the public API.  Each loop updates [0, n) of the
 * pointers it is given; the entry points in optim.c cut the block into thread chunks. */
#ifndef FD_KERNELS_OPTIM_INTERNAL_H
#define FD_KERNELS_OPTIM_INTERNAL_H

#include <stdint.h>

typedef struct {
    double (*sumsq_block)(const float *x, int64_t n);
    void (*rmsprop_plain)(int64_t n, float *w, const float *g, float *vel, float lr,
                          float rho, float eps, float wd_lr, float gscale, float c);
    void (*rmsprop_general)(int64_t n, float *w, const float *g, float *vel, float *mom,
                            float *avg, float lr, float rho, float momentum, float eps,
                            float wd_lr, float gscale, float c);
    void (*adagrad)(int64_t n, float *w, const float *g, float *acc, float lr, float eps,
                    float wd_lr, float gscale, float c);
    void (*adadelta)(int64_t n, float *w, const float *g, float *ag, float *ad, float lr,
                     float rho, float eps, float wd_lr, float gscale, float c);
    void (*nadam)(int64_t n, float *w, const float *g, float *m, float *v, float lr,
                  float beta1, float beta2, float eps, float cm, float cg, float cv,
                  float wd_lr, float gscale, float c);
    void (*sgd_plain)(int64_t n, float *w, const float *g, float lr, float wd_lr,
                      float gscale, float c);
    void (*sgd_momentum)(int64_t n, float *w, const float *g, float *vel, float lr,
                         float momentum, int nesterov, float wd_lr, float gscale, float c);
    void (*adam)(int64_t n, float *w, const float *g, float *m, float *v, float lr_t,
                 float beta1, float beta2, float eps, float wd_lr, float gscale, float c);
} fd_optim_table;

extern const fd_optim_table fd_optim_table_ref;
#ifdef FD_HAVE_AVX2
extern const fd_optim_table fd_optim_table_avx2;
#endif
#ifdef FD_HAVE_AVX512
extern const fd_optim_table fd_optim_table_avx512;
#endif

#endif

# Bindings of the optim kernels, included into fastdrop/_core.pyx (one file per kernel
# family, so families are added without touching each other).
#
# Like the rest of _core, these trust their arguments: fastdrop.optimizers validates
# lengths (w, g and every state slot the same length) before calling.  gscale scales the
# gradient (clipnorm / global_clipnorm), clip clamps it to [-clip, clip] (<= 0: no clamp);
# the gradient array itself is never written.

cdef extern from "kernels/optim.h" nogil:
    double fd_sumsq_f32(int64_t n, const float *x)
    void fd_sumsq_segments_f32(int64_t nseg, const int64_t *bounds, const float *x,
                               double *out)
    void fd_rmsprop_update_f32(int64_t n, float *w, const float *g, float *vel, float *mom,
                               float *avg, float lr, float rho, float momentum, float eps,
                               float wd_lr, float gscale, float clip)
    void fd_adagrad_update_f32(int64_t n, float *w, const float *g, float *acc, float lr,
                               float eps, float wd_lr, float gscale, float clip)
    void fd_adadelta_update_f32(int64_t n, float *w, const float *g, float *ag, float *ad,
                                float lr, float rho, float eps, float wd_lr, float gscale,
                                float clip)
    void fd_nadam_update_f32(int64_t n, float *w, const float *g, float *m, float *v,
                             float lr, float beta1, float beta2, float eps, float cm,
                             float cg, float cv, float wd_lr, float gscale, float clip)
    void fd_sgd_clip_update_f32(int64_t n, float *w, const float *g, float *vel, float lr,
                                float momentum, int nesterov, float wd_lr, float gscale,
                                float clip)
    void fd_adam_clip_update_f32(int64_t n, float *w, const float *g, float *m, float *v,
                                 float lr_t, float beta1, float beta2, float eps,
                                 float wd_lr, float gscale, float clip)


def sumsq(const float[::1] x):
    """Sum of squares of x in double, bitwise the same for any thread count."""
    cdef double s
    if x.shape[0] == 0:
        return 0.0
    with nogil:
        s = fd_sumsq_f32(x.shape[0], &x[0])
    return s


def sumsq_segments(const float[::1] x, const int64_t[:, ::1] bounds, double[::1] out):
    """out[k] = sum of squares of x[bounds[k, 0]:bounds[k, 1]] (0 <= lo <= hi <= len(x),
    checked by the caller), each as sumsq() computes it."""
    if bounds.shape[0] == 0:
        return
    with nogil:
        fd_sumsq_segments_f32(bounds.shape[0], &bounds[0, 0], &x[0], &out[0])


def rmsprop_update(float[::1] w, const float[::1] g, float[::1] vel, float[::1] mom,
                   float[::1] avg, float lr, float rho, float momentum, float eps,
                   float wd_lr, float gscale, float clip):
    cdef float *pm = &mom[0] if mom is not None and mom.shape[0] > 0 else NULL
    cdef float *pa = &avg[0] if avg is not None and avg.shape[0] > 0 else NULL
    if w.shape[0] == 0:
        return
    with nogil:
        fd_rmsprop_update_f32(w.shape[0], &w[0], &g[0], &vel[0], pm, pa, lr, rho, momentum,
                              eps, wd_lr, gscale, clip)


def adagrad_update(float[::1] w, const float[::1] g, float[::1] acc, float lr, float eps,
                   float wd_lr, float gscale, float clip):
    if w.shape[0] == 0:
        return
    with nogil:
        fd_adagrad_update_f32(w.shape[0], &w[0], &g[0], &acc[0], lr, eps, wd_lr, gscale, clip)


def adadelta_update(float[::1] w, const float[::1] g, float[::1] ag, float[::1] ad,
                    float lr, float rho, float eps, float wd_lr, float gscale, float clip):
    if w.shape[0] == 0:
        return
    with nogil:
        fd_adadelta_update_f32(w.shape[0], &w[0], &g[0], &ag[0], &ad[0], lr, rho, eps, wd_lr,
                               gscale, clip)


def nadam_update(float[::1] w, const float[::1] g, float[::1] m, float[::1] v, float lr,
                 float beta1, float beta2, float eps, float cm, float cg, float cv,
                 float wd_lr, float gscale, float clip):
    if w.shape[0] == 0:
        return
    with nogil:
        fd_nadam_update_f32(w.shape[0], &w[0], &g[0], &m[0], &v[0], lr, beta1, beta2, eps,
                            cm, cg, cv, wd_lr, gscale, clip)


def sgd_clip_update(float[::1] w, const float[::1] g, float[::1] vel, float lr,
                    float momentum, bint nesterov, float wd_lr, float gscale, float clip):
    cdef float *pv = &vel[0] if vel is not None and vel.shape[0] > 0 else NULL
    if w.shape[0] == 0:
        return
    with nogil:
        fd_sgd_clip_update_f32(w.shape[0], &w[0], &g[0], pv, lr, momentum, nesterov, wd_lr,
                               gscale, clip)


def adam_clip_update(float[::1] w, const float[::1] g, float[::1] m, float[::1] v,
                     float lr_t, float beta1, float beta2, float eps, float wd_lr,
                     float gscale, float clip):
    if w.shape[0] == 0:
        return
    with nogil:
        fd_adam_clip_update_f32(w.shape[0], &w[0], &g[0], &m[0], &v[0], lr_t, beta1, beta2,
                                eps, wd_lr, gscale, clip)

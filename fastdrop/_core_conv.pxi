# Bindings of the conv kernels, included into fastdrop/_core.pyx (one file per kernel
# family, so families are added without touching each other).

from libc.stdint cimport int32_t

cdef extern from "nn/conv.h" nogil:
    ctypedef struct fd_conv2d_desc:
        int64_t n, h, w, c, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, oc
    ctypedef struct fd_pool2d_desc:
        int64_t n, h, w, c, ph, pw, sh, sw, pt, pl, oh, ow
    int fd_conv2d_forward_f32(const fd_conv2d_desc *d, float *y, const float *x,
                              const float *wt, const float *bias, int relu,
                              const uint8_t *mask, const uint8_t *chmask, float scale)
    int fd_conv2d_backward_f32(const fd_conv2d_desc *d, const float *dz, const float *x,
                               const float *wt, float *dwt, float *db, float *dx)
    int fd_conv2d_backward_act_f32(const fd_conv2d_desc *d, float *dz, const float *dy,
                                   const float *h, const uint8_t *mask,
                                   const uint8_t *chmask, float scale, int relu,
                                   const float *x, const float *wt, float *dwt, float *db,
                                   float *dx)
    void fd_channel_mask_apply_f32(int64_t n, int64_t p, int64_t c, float *out,
                                   const float *x, const uint8_t *chmask, float scale)
    void fd_conv_act_backward_f32(int64_t n, float *dz, const float *dy, const float *h,
                                  const uint8_t *mask, float scale, int relu)
    void fd_conv_release_buffers()
    int fd_conv2d_infer_f32(const fd_conv2d_desc *d, const fd_pool2d_desc *pool, float *y,
                            const float *x, const float *wt, const float *bias, int relu)
    void fd_maxpool2d_forward_f32(const fd_pool2d_desc *d, float *y, int32_t *arg,
                                  const float *x)
    void fd_maxpool2d_backward_f32(const fd_pool2d_desc *d, float *dx, const float *dy,
                                   const int32_t *arg)
    void fd_avgpool2d_forward_f32(const fd_pool2d_desc *d, float *y, const float *x)
    void fd_avgpool2d_backward_f32(const fd_pool2d_desc *d, float *dx, const float *dy)
    void fd_global_pool_forward_f32(int64_t n, int64_t p, int64_t c, int mx, float *y,
                                    int32_t *arg, const float *x)
    void fd_global_pool_backward_f32(int64_t n, int64_t p, int64_t c, int mx, float *dx,
                                     const float *dy, const int32_t *arg)
    int fd_batchnorm_train_forward_f32(int64_t m, int64_t c, float *y, float *mean,
                                       float *invstd, const float *x, const float *gamma,
                                       const float *beta, float eps, float *moving_mean,
                                       float *moving_var, float momentum)
    void fd_batchnorm_infer_forward_f32(int64_t m, int64_t c, float *y, float *invstd,
                                        const float *x, const float *gamma,
                                        const float *beta, const float *mean,
                                        const float *var, float eps)
    int fd_batchnorm_backward_f32(int64_t m, int64_t c, float *dx, float *dgamma,
                                  float *dbeta, const float *dy, const float *x,
                                  const float *mean, const float *invstd,
                                  const float *gamma, int batch_stats)


# Geometry tuples (validated by fastdrop.layers.conv before anything runs here):
#   conv: (n, h, w, c, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, oc)
#   pool: (n, h, w, c, ph, pw, sh, sw, pt, pl, oh, ow)
# Array sizes are checked against the geometry (a mismatch raises ValueError, never an
# out-of-bounds access); arrays are flat (reshape(-1)) C-contiguous views.

cdef int _conv_desc(tuple g, fd_conv2d_desc *d) except -1:
    if len(g) != 15:
        raise ValueError("conv geometry must have 15 entries")
    d.n, d.h, d.w, d.c, d.kh, d.kw, d.sh, d.sw, d.dh, d.dw, d.pt, d.pl, d.oh, d.ow, d.oc = g
    if (d.n < 0 or d.h <= 0 or d.w <= 0 or d.c <= 0 or d.kh <= 0 or d.kw <= 0 or d.sh <= 0
            or d.sw <= 0 or d.dh <= 0 or d.dw <= 0 or d.pt < 0 or d.pl < 0 or d.oh <= 0
            or d.ow <= 0 or d.oc <= 0):
        raise ValueError(f"bad conv geometry {g}")
    return 0


cdef int _pool_desc(tuple g, fd_pool2d_desc *d) except -1:
    if len(g) != 12:
        raise ValueError("pool geometry must have 12 entries")
    d.n, d.h, d.w, d.c, d.ph, d.pw, d.sh, d.sw, d.pt, d.pl, d.oh, d.ow = g
    if (d.n < 0 or d.h <= 0 or d.w <= 0 or d.c <= 0 or d.ph <= 0 or d.pw <= 0 or d.sh <= 0
            or d.sw <= 0 or d.pt < 0 or d.pl < 0 or d.oh <= 0 or d.ow <= 0):
        raise ValueError(f"bad pool geometry {g}")
    if d.h * d.w >= 2 ** 31:
        raise ValueError("images of 2**31 pixels or more are not supported (int32 argmax)")
    # every window must hold at least one input cell (memory safety of max pooling)
    if (d.pt >= d.ph or d.pl >= d.pw or (d.oh - 1) * d.sh - d.pt >= d.h
            or (d.ow - 1) * d.sw - d.pl >= d.w):
        raise ValueError(f"pool geometry {g} has empty windows")
    return 0


cdef inline int _need(Py_ssize_t have, int64_t want, str name) except -1:
    if have < want:
        raise ValueError(f"{name} has {have} elements, needs {want}")
    return 0


def conv2d_forward(tuple geom, const float[::1] x, const float[::1] w, float[::1] y,
                   const float[::1] bias=None, bint relu=False,
                   const uint8_t[::1] mask=None, const uint8_t[::1] chmask=None,
                   float scale=1.0):
    """y = conv2d(x, w) (+bias) (relu) (* mask bits | per-(image, channel) bits)."""
    cdef fd_conv2d_desc d
    _conv_desc(geom, &d)
    cdef int64_t M = d.n * d.oh * d.ow, K = d.kh * d.kw * d.c
    _need(x.shape[0], d.n * d.h * d.w * d.c, "x")
    _need(w.shape[0], K * d.oc, "w")
    _need(y.shape[0], M * d.oc, "y")
    cdef const float *pb = NULL
    cdef const uint8_t *pm = NULL
    cdef const uint8_t *pcm = NULL
    if bias is not None:
        _need(bias.shape[0], d.oc, "bias")
        pb = &bias[0]
    if mask is not None:
        _need(mask.shape[0], (M * d.oc + 7) // 8, "mask")
        pm = &mask[0]
    if chmask is not None:
        _need(chmask.shape[0], (d.n * d.oc + 7) // 8, "chmask")
        pcm = &chmask[0]
    if pm != NULL and pcm != NULL:
        raise ValueError("give mask or chmask, not both")
    if d.n == 0:
        return
    cdef int st
    with nogil:
        st = fd_conv2d_forward_f32(&d, &y[0], &x[0], &w[0], pb, relu, pm, pcm, scale)
    if st != 0:
        raise MemoryError("conv2d_forward: out of memory")


def conv2d_infer(tuple geom, tuple pool_geom, const float[::1] x, const float[::1] w,
                 float[::1] y, const float[::1] bias=None, bint relu=False):
    """Inference only: y = maxpool(conv2d(x, w) (+bias) (relu)) (pool_geom None: the conv
    output itself), bitwise equal to conv2d_forward (then pool2d_forward).  Returns False
    when this path does not handle the shape or CPU (nothing written)."""
    cdef fd_conv2d_desc d
    cdef fd_pool2d_desc p
    cdef fd_pool2d_desc *pp = NULL
    _conv_desc(geom, &d)
    cdef int64_t K = d.kh * d.kw * d.c
    _need(x.shape[0], d.n * d.h * d.w * d.c, "x")
    _need(w.shape[0], K * d.oc, "w")
    if pool_geom is not None:
        _pool_desc(pool_geom, &p)
        if p.n != d.n or p.h != d.oh or p.w != d.ow or p.c != d.oc:
            raise ValueError("pool geometry does not match the conv output")
        _need(y.shape[0], p.n * p.oh * p.ow * p.c, "y")
        pp = &p
    else:
        _need(y.shape[0], d.n * d.oh * d.ow * d.oc, "y")
    cdef const float *pb = NULL
    if bias is not None:
        _need(bias.shape[0], d.oc, "bias")
        pb = &bias[0]
    if d.n == 0:
        return True
    cdef int st
    with nogil:
        st = fd_conv2d_infer_f32(&d, pp, &y[0], &x[0], &w[0], pb, relu)
    if st < 0:
        raise MemoryError("conv2d_infer: out of memory")
    return st == 0


def conv2d_backward(tuple geom, const float[::1] dz, const float[::1] x, const float[::1] w,
                    float[::1] dw=None, float[::1] db=None, float[::1] dx=None):
    """dw = patchesᵀ·dz, db = column sums of dz, dx = col2im(dz·wᵀ) (each if given)."""
    cdef fd_conv2d_desc d
    _conv_desc(geom, &d)
    cdef int64_t M = d.n * d.oh * d.ow, K = d.kh * d.kw * d.c
    _need(dz.shape[0], M * d.oc, "dz")
    _need(x.shape[0], d.n * d.h * d.w * d.c, "x")
    _need(w.shape[0], K * d.oc, "w")
    cdef float *pdw = NULL
    cdef float *pdb = NULL
    cdef float *pdx = NULL
    if dw is not None:
        _need(dw.shape[0], K * d.oc, "dw")
        pdw = &dw[0]
    if db is not None:
        _need(db.shape[0], d.oc, "db")
        pdb = &db[0]
    if dx is not None:
        _need(dx.shape[0], d.n * d.h * d.w * d.c, "dx")
        pdx = &dx[0]
    if d.n == 0:
        if dw is not None:
            dw[:] = 0
        if db is not None:
            db[:] = 0
        return
    cdef int st
    with nogil:
        st = fd_conv2d_backward_f32(&d, &dz[0], &x[0], &w[0], pdw, pdb, pdx)
    if st != 0:
        raise MemoryError("conv2d_backward: out of memory")


def conv2d_backward_act(tuple geom, const float[::1] dy, float[::1] dz, const float[::1] x,
                        const float[::1] w, const float[::1] h=None,
                        const uint8_t[::1] mask=None, const uint8_t[::1] chmask=None,
                        float scale=1.0, bint relu=False, float[::1] dw=None,
                        float[::1] db=None, float[::1] dx=None):
    """conv2d_backward from dy at the output of the fused epilogue (relu via h > 0, or
    mask / chmask bits, times scale); dz is workspace (receives the pre-activation grad)."""
    cdef fd_conv2d_desc d
    _conv_desc(geom, &d)
    cdef int64_t M = d.n * d.oh * d.ow, K = d.kh * d.kw * d.c
    _need(dy.shape[0], M * d.oc, "dy")
    _need(dz.shape[0], M * d.oc, "dz")
    _need(x.shape[0], d.n * d.h * d.w * d.c, "x")
    _need(w.shape[0], K * d.oc, "w")
    cdef const float *ph = NULL
    cdef const uint8_t *pm = NULL
    cdef const uint8_t *pcm = NULL
    cdef float *pdw = NULL
    cdef float *pdb = NULL
    cdef float *pdx = NULL
    if relu:
        if h is None:
            raise ValueError("relu backward needs h")
        _need(h.shape[0], M * d.oc, "h")
        ph = &h[0]
    else:
        if mask is not None:
            _need(mask.shape[0], (M * d.oc + 7) // 8, "mask")
            pm = &mask[0]
        if chmask is not None:
            _need(chmask.shape[0], (d.n * d.oc + 7) // 8, "chmask")
            pcm = &chmask[0]
    if dw is not None:
        _need(dw.shape[0], K * d.oc, "dw")
        pdw = &dw[0]
    if db is not None:
        _need(db.shape[0], d.oc, "db")
        pdb = &db[0]
    if dx is not None:
        _need(dx.shape[0], d.n * d.h * d.w * d.c, "dx")
        pdx = &dx[0]
    if d.n == 0:
        if dw is not None:
            dw[:] = 0
        if db is not None:
            db[:] = 0
        return
    cdef int st
    with nogil:
        st = fd_conv2d_backward_act_f32(&d, &dz[0], &dy[0], ph, pm, pcm, scale, relu, &x[0],
                                        &w[0], pdw, pdb, pdx)
    if st != 0:
        raise MemoryError("conv2d_backward: out of memory")


def channel_mask_apply(int64_t n, int64_t p, int64_t c, const float[::1] x,
                       const uint8_t[::1] chmask, float[::1] out, float scale):
    """out[i, q, j] = chmask bit (i*c + j) ? x[i, q, j]*scale : 0."""
    if n <= 0 or p <= 0 or c <= 0:
        return
    _need(x.shape[0], n * p * c, "x")
    _need(out.shape[0], n * p * c, "out")
    _need(chmask.shape[0], (n * c + 7) // 8, "chmask")
    with nogil:
        fd_channel_mask_apply_f32(n, p, c, &out[0], &x[0], &chmask[0], scale)


def conv_act_backward(const float[::1] dy, float[::1] dz, const float[::1] h=None,
                      const uint8_t[::1] mask=None, float scale=1.0, bint relu=False):
    """dz = (relu ? h > 0 : mask bit) ? dy*scale : 0 (dy*scale without either)."""
    cdef int64_t n = dy.shape[0]
    if n == 0:
        return
    _need(dz.shape[0], n, "dz")
    cdef const float *ph = NULL
    cdef const uint8_t *pm = NULL
    if relu:
        if h is None:
            raise ValueError("relu backward needs h")
        _need(h.shape[0], n, "h")
        ph = &h[0]
    elif mask is not None:
        _need(mask.shape[0], (n + 7) // 8, "mask")
        pm = &mask[0]
    with nogil:
        fd_conv_act_backward_f32(n, &dz[0], &dy[0], ph, pm, scale, relu)


def conv_release_buffers():
    fd_conv_release_buffers()


def pool2d_forward(tuple geom, bint is_max, const float[::1] x, float[::1] y,
                   int32_t[::1] arg=None):
    cdef fd_pool2d_desc d
    _pool_desc(geom, &d)
    _need(x.shape[0], d.n * d.h * d.w * d.c, "x")
    _need(y.shape[0], d.n * d.oh * d.ow * d.c, "y")
    cdef int32_t *pa = NULL
    if arg is not None:
        _need(arg.shape[0], d.n * d.oh * d.ow * d.c, "arg")
        pa = &arg[0]
    if d.n == 0:
        return
    with nogil:
        if is_max:
            fd_maxpool2d_forward_f32(&d, &y[0], pa, &x[0])
        else:
            fd_avgpool2d_forward_f32(&d, &y[0], &x[0])


def pool2d_backward(tuple geom, bint is_max, const float[::1] dy, float[::1] dx,
                    const int32_t[::1] arg=None):
    cdef fd_pool2d_desc d
    _pool_desc(geom, &d)
    _need(dy.shape[0], d.n * d.oh * d.ow * d.c, "dy")
    _need(dx.shape[0], d.n * d.h * d.w * d.c, "dx")
    if is_max:
        if arg is None:
            raise ValueError("max pooling backward needs arg")
        _need(arg.shape[0], d.n * d.oh * d.ow * d.c, "arg")
    if d.n == 0:
        return
    with nogil:
        if is_max:
            fd_maxpool2d_backward_f32(&d, &dx[0], &dy[0], &arg[0])
        else:
            fd_avgpool2d_backward_f32(&d, &dx[0], &dy[0])


def global_pool_forward(int64_t n, int64_t p, int64_t c, bint is_max, const float[::1] x,
                        float[::1] y, int32_t[::1] arg=None):
    if n <= 0:
        return
    if p <= 0 or c <= 0 or p >= 2 ** 31:
        raise ValueError("global pool needs 0 < p < 2**31, c > 0")
    _need(x.shape[0], n * p * c, "x")
    _need(y.shape[0], n * c, "y")
    cdef int32_t *pa = NULL
    if arg is not None:
        _need(arg.shape[0], n * c, "arg")
        pa = &arg[0]
    with nogil:
        fd_global_pool_forward_f32(n, p, c, is_max, &y[0], pa, &x[0])


def global_pool_backward(int64_t n, int64_t p, int64_t c, bint is_max, const float[::1] dy,
                         float[::1] dx, const int32_t[::1] arg=None):
    if n <= 0:
        return
    if p <= 0 or c <= 0:
        raise ValueError("global pool needs p, c > 0")
    _need(dy.shape[0], n * c, "dy")
    _need(dx.shape[0], n * p * c, "dx")
    cdef const int32_t *pa = NULL
    if is_max:
        if arg is None:
            raise ValueError("global max pooling backward needs arg")
        _need(arg.shape[0], n * c, "arg")
        pa = &arg[0]
    with nogil:
        fd_global_pool_backward_f32(n, p, c, is_max, &dx[0], &dy[0], pa)


def batchnorm_train_forward(int64_t m, int64_t c, const float[::1] x, float[::1] y,
                            float[::1] mean, float[::1] invstd, const float[::1] gamma=None,
                            const float[::1] beta=None, float eps=1e-3,
                            float[::1] moving_mean=None, float[::1] moving_var=None,
                            float momentum=0.99):
    """Batch statistics (written to mean, invstd), y normalised; moving stats updated."""
    if c <= 0:
        raise ValueError("c must be positive")
    _need(x.shape[0], m * c, "x")
    _need(y.shape[0], m * c, "y")
    _need(mean.shape[0], c, "mean")
    _need(invstd.shape[0], c, "invstd")
    cdef const float *pg = NULL
    cdef const float *pb = NULL
    cdef float *pmm = NULL
    cdef float *pmv = NULL
    if gamma is not None:
        _need(gamma.shape[0], c, "gamma")
        pg = &gamma[0]
    if beta is not None:
        _need(beta.shape[0], c, "beta")
        pb = &beta[0]
    if moving_mean is not None:
        _need(moving_mean.shape[0], c, "moving_mean")
        pmm = &moving_mean[0]
    if moving_var is not None:
        _need(moving_var.shape[0], c, "moving_var")
        pmv = &moving_var[0]
    if m <= 0:
        raise ValueError("batch statistics need at least one row")
    cdef int st
    with nogil:
        st = fd_batchnorm_train_forward_f32(m, c, &y[0], &mean[0], &invstd[0], &x[0], pg, pb,
                                            eps, pmm, pmv, momentum)
    if st != 0:
        raise MemoryError("batchnorm: out of memory")


def batchnorm_infer_forward(int64_t m, int64_t c, const float[::1] x, float[::1] y,
                            const float[::1] mean, const float[::1] var,
                            const float[::1] gamma=None, const float[::1] beta=None,
                            float eps=1e-3, float[::1] invstd=None):
    if c <= 0:
        raise ValueError("c must be positive")
    _need(mean.shape[0], c, "mean")
    _need(var.shape[0], c, "var")
    cdef const float *pg = NULL
    cdef const float *pb = NULL
    cdef float *pi = NULL
    if gamma is not None:
        _need(gamma.shape[0], c, "gamma")
        pg = &gamma[0]
    if beta is not None:
        _need(beta.shape[0], c, "beta")
        pb = &beta[0]
    if invstd is not None:
        _need(invstd.shape[0], c, "invstd")
        pi = &invstd[0]
    if m <= 0:
        with nogil:
            fd_batchnorm_infer_forward_f32(0, c, NULL, pi, NULL, pg, pb, &mean[0], &var[0], eps)
        return
    _need(x.shape[0], m * c, "x")
    _need(y.shape[0], m * c, "y")
    with nogil:
        fd_batchnorm_infer_forward_f32(m, c, &y[0], pi, &x[0], pg, pb, &mean[0], &var[0], eps)


def batchnorm_backward(int64_t m, int64_t c, const float[::1] dy, const float[::1] x,
                       const float[::1] mean, const float[::1] invstd,
                       const float[::1] gamma=None, float[::1] dx=None,
                       float[::1] dgamma=None, float[::1] dbeta=None, bint batch_stats=True):
    if c <= 0:
        raise ValueError("c must be positive")
    if m <= 0:
        if dgamma is not None:
            dgamma[:] = 0
        if dbeta is not None:
            dbeta[:] = 0
        return
    _need(dy.shape[0], m * c, "dy")
    _need(x.shape[0], m * c, "x")
    _need(mean.shape[0], c, "mean")
    _need(invstd.shape[0], c, "invstd")
    cdef const float *pg = NULL
    cdef float *pdx = NULL
    cdef float *pdg = NULL
    cdef float *pdb = NULL
    if gamma is not None:
        _need(gamma.shape[0], c, "gamma")
        pg = &gamma[0]
    if dx is not None:
        _need(dx.shape[0], m * c, "dx")
        pdx = &dx[0]
    if dgamma is not None:
        _need(dgamma.shape[0], c, "dgamma")
        pdg = &dgamma[0]
    if dbeta is not None:
        _need(dbeta.shape[0], c, "dbeta")
        pdb = &dbeta[0]
    cdef int st
    with nogil:
        st = fd_batchnorm_backward_f32(m, c, pdx, pdg, pdb, &dy[0], &x[0], &mean[0],
                                       &invstd[0], pg, batch_stats)
    if st != 0:
        raise MemoryError("batchnorm: out of memory")

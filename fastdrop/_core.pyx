# fastdrop._core — thin bindings of the C kernels.
#
# These functions trust their arguments' dtype, layout and shapes: validation happens
# once, in fastdrop.kernels (public API) or in the model engine, before anything here
# runs.  Every kernel call releases the GIL.
cimport cython
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memset

import numpy as np
cimport numpy as cnp

cnp.import_array()
fd_init()

ISA_NAMES = ("ref", "avx2", "avx512")
DROPOUT_BLOCK = FD_DROPOUT_BLOCK
DROPOUT_LANES = FD_DROPOUT_LANES


# ----------------------------------------------------------------- dispatch/threads
def isa():
    """Name of the kernel path in use: 'ref', 'avx2' or 'avx512'."""
    return ISA_NAMES[fd_isa_get()]


def isa_compiled():
    return tuple(n for i, n in enumerate(ISA_NAMES) if fd_isa_compiled(i))


def isa_supported():
    """Paths that are both compiled in and supported by this CPU and OS."""
    return tuple(n for i, n in enumerate(ISA_NAMES)
                 if fd_isa_compiled(i) and fd_isa_cpu_supported(i))


def set_isa(name):
    """Force a kernel path by name; ValueError if not compiled or not supported."""
    if name not in ISA_NAMES:
        raise ValueError(f"isa must be one of {ISA_NAMES}, got {name!r}")
    if fd_isa_set(ISA_NAMES.index(name)) != 0:
        raise ValueError(f"isa {name!r} is not available here (compiled: "
                         f"{isa_compiled()}, supported: {isa_supported()})")


def isa_env_error():
    cdef const char *e = fd_isa_env_error()
    return None if e == NULL else e.decode()


def gemm_table():
    """(name, {mr, nr, mc, kc, nc}) of the GEMM parameter table in use."""
    cdef int64_t b[5]
    name = fd_gemm_table(b).decode()
    return name, dict(mr=b[0], nr=b[1], mc=b[2], kc=b[3], nc=b[4])


def cpu_describe():
    """cpuid vendor, family, model and cache sizes (bytes; 0 if unknown)."""
    cdef char v[13]
    cdef int fam = 0, mod = 0
    cdef int64_t caches[3]
    fd_cpu_describe(v, &fam, &mod, caches)
    return dict(vendor=v.decode(), family=fam, model=mod, l1d=caches[0], l2=caches[1],
                l3=caches[2])


def openmp_enabled():
    return bool(fd_openmp_enabled())


def set_num_threads(int n):
    fd_set_num_threads(n)


def get_num_threads():
    return fd_get_num_threads()


def release_buffers():
    """Free GEMM packing buffers (this thread's now, other threads' at their next GEMM)."""
    fd_release_buffers()


def set_flush_denormals(bint on):
    fd_set_flush_denormals(on)


def get_flush_denormals():
    return bool(fd_get_flush_denormals())


def get_mxcsr():
    """The calling thread's MXCSR (x86; -1 elsewhere): tests check kernels restore it."""
    return fd_get_mxcsr()


def set_mxcsr(unsigned int value):
    """Set the calling thread's MXCSR (x86 only; for tests)."""
    fd_set_mxcsr(value)


def pool_active():
    """True when kernels run on fastdrop's own thread pool (Linux), False for OpenMP."""
    return bool(fd_pool_active())


# ------------------------------------------------------------------------- GEMM
cdef inline int _check_f32(cnp.ndarray x, int ndim, str name, bint writeable) except -1:
    """A cheap C-level guard (dtype, rank, C order, writeability): gemm takes ndarrays
    directly, which costs far less per call than typed memoryviews (batch-1 latency)."""
    if (cnp.PyArray_TYPE(x) != cnp.NPY_FLOAT32 or cnp.PyArray_NDIM(x) != ndim
            or not cnp.PyArray_IS_C_CONTIGUOUS(x)):
        raise ValueError(f"{name} must be a C-contiguous {ndim}-D float32 array")
    if writeable and not cnp.PyArray_ISWRITEABLE(x):
        raise ValueError(f"{name} must be writeable")
    return 0


cdef inline const float *_column_vector(cnp.ndarray v, int64_t n, str name) except? NULL:
    if v is None:
        return NULL
    _check_f32(v, 1, name, False)
    if cnp.PyArray_DIMS(v)[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got ({cnp.PyArray_DIMS(v)[0]},)")
    return <const float *>cnp.PyArray_DATA(v)


def gemm(cnp.ndarray a not None, cnp.ndarray b not None, cnp.ndarray c not None,
         bint trans_a, bint trans_b, float alpha, float beta,
         cnp.ndarray bias=None, bint relu=False, cnp.ndarray mask=None,
         float mask_scale=1.0, int64_t mask_bit0=0, int64_t mask_row_group=0,
         cnp.ndarray scale=None, cnp.ndarray shift=None):
    """c = alpha*op(a)@op(b) + beta*c, then the optional epilogue (in place):
    + bias[c], * scale[c] + shift[c], relu, * (mask bit ? mask_scale : 0) with the bit of
    (r, c) at mask_bit0 + (r // mask_row_group if mask_row_group else r) * n + c.
    Shapes are checked (a mismatch raises ValueError, never an out-of-bounds access)."""
    _check_f32(a, 2, "a", False)
    _check_f32(b, 2, "b", False)
    _check_f32(c, 2, "c", True)
    cdef int64_t m = cnp.PyArray_DIMS(c)[0], n = cnp.PyArray_DIMS(c)[1]
    cdef int64_t ar = cnp.PyArray_DIMS(a)[0], ac = cnp.PyArray_DIMS(a)[1]
    cdef int64_t br = cnp.PyArray_DIMS(b)[0], bc = cnp.PyArray_DIMS(b)[1]
    cdef int64_t k = ar if trans_a else ac
    cdef int64_t mrows, nbits
    if (ac if trans_a else ar) != m or (bc if trans_b else br) != k \
            or (br if trans_b else bc) != n:
        raise ValueError(f"gemm shapes do not match: a {(ar, ac)}, b {(br, bc)}, "
                         f"c {(m, n)}, trans_a={trans_a}, trans_b={trans_b}")
    cdef fd_epilogue ep
    cdef fd_epilogue *pep = NULL
    if bias is not None or relu or mask is not None or scale is not None or shift is not None:
        memset(&ep, 0, sizeof(ep))
        ep.bias = _column_vector(bias, n, "bias")
        ep.scale = _column_vector(scale, n, "scale")
        ep.shift = _column_vector(shift, n, "shift")
        if mask is not None:
            if mask_bit0 < 0 or mask_row_group < 0:
                raise ValueError(f"mask_bit0 and mask_row_group must be >= 0, got "
                                 f"{mask_bit0} and {mask_row_group}")
            mrows = (m + mask_row_group - 1) // mask_row_group if mask_row_group else m
            nbits = mask_bit0 + mrows * n
            if (cnp.PyArray_TYPE(mask) != cnp.NPY_UINT8 or cnp.PyArray_NDIM(mask) != 1
                    or not cnp.PyArray_IS_C_CONTIGUOUS(mask)
                    or cnp.PyArray_DIMS(mask)[0] < (nbits + 7) // 8):
                raise ValueError(f"mask must be a contiguous uint8 array of at least "
                                 f"{(nbits + 7) // 8} bytes")
            ep.mask = <const uint8_t *>cnp.PyArray_DATA(mask)
            ep.mask_bit0 = mask_bit0
            ep.mask_row_group = mask_row_group
        ep.relu = relu
        ep.mask_scale = mask_scale
        pep = &ep
    if m == 0 or n == 0:
        return
    cdef const float *pa = <const float *>cnp.PyArray_DATA(a)
    cdef const float *pb = <const float *>cnp.PyArray_DATA(b)
    cdef float *pc = <float *>cnp.PyArray_DATA(c)
    cdef int rc
    with nogil:
        rc = fd_sgemm(trans_a, trans_b, m, n, k, alpha, pa, ac, pb, bc, beta, pc, n, pep)
    if rc != 0:
        raise MemoryError(f"gemm {m}x{n}x{k}: cannot allocate the packing buffer")


# -------------------------------------------------------------------- bf16 GEMM
BF16_PATHS = ("portable", "avx512bf16", "amx")


def bf16_path():
    """The path a bf16 GEMM takes now: 'amx', 'avx512bf16' or 'portable'."""
    return BF16_PATHS[fd_bf16_path_get()]


def bf16_paths_compiled():
    return tuple(n for i, n in enumerate(BF16_PATHS) if fd_bf16_path_compiled(i))


def bf16_paths_supported():
    """bf16 paths compiled in and supported by this CPU and OS (AMX: tile permission)."""
    return tuple(n for i, n in enumerate(BF16_PATHS)
                 if fd_bf16_path_compiled(i) and fd_bf16_path_cpu_supported(i))


def set_bf16_path(name):
    """Choose the bf16 path (while the fp32 path is avx512; below it bf16 is portable)."""
    if name not in BF16_PATHS:
        raise ValueError(f"bf16 path must be one of {BF16_PATHS}, got {name!r}")
    if fd_bf16_path_set(BF16_PATHS.index(name)) != 0:
        raise ValueError(f"bf16 path {name!r} is not available here (supported: "
                         f"{bf16_paths_supported()})")


def bf16_amx_note():
    cdef const char *e = fd_bf16_amx_note()
    return None if e == NULL else e.decode()


def f32_to_bf16(cnp.ndarray src not None, cnp.ndarray dst not None):
    """dst (uint16, bf16 bits) = src (float32) rounded to nearest even; same size,
    both C-contiguous."""
    if (cnp.PyArray_TYPE(src) != cnp.NPY_FLOAT32 or not cnp.PyArray_IS_C_CONTIGUOUS(src)):
        raise ValueError("src must be a C-contiguous float32 array")
    if (cnp.PyArray_TYPE(dst) != cnp.NPY_UINT16 or not cnp.PyArray_IS_C_CONTIGUOUS(dst)
            or not cnp.PyArray_ISWRITEABLE(dst)):
        raise ValueError("dst must be a writeable C-contiguous uint16 array")
    if cnp.PyArray_SIZE(src) != cnp.PyArray_SIZE(dst):
        raise ValueError(f"src and dst sizes differ: {cnp.PyArray_SIZE(src)} and "
                         f"{cnp.PyArray_SIZE(dst)}")
    cdef int64_t n = cnp.PyArray_SIZE(src)
    cdef const float *ps = <const float *>cnp.PyArray_DATA(src)
    cdef uint16_t *pd = <uint16_t *>cnp.PyArray_DATA(dst)
    with nogil:
        fd_f32_to_bf16(n, ps, pd)


cdef inline int _bf16_operand(cnp.ndarray x, str name) except -1:
    """1 if x holds bf16 bits (uint16), 0 for float32; 2-D C-contiguous either way."""
    cdef int t = cnp.PyArray_TYPE(x)
    if (t != cnp.NPY_FLOAT32 and t != cnp.NPY_UINT16) or cnp.PyArray_NDIM(x) != 2 \
            or not cnp.PyArray_IS_C_CONTIGUOUS(x):
        raise ValueError(f"{name} must be a C-contiguous 2-D float32 array or uint16 "
                         f"(bf16 bits) array")
    return 1 if t == cnp.NPY_UINT16 else 0


def gemm_bf16(cnp.ndarray a not None, cnp.ndarray b not None, cnp.ndarray c not None,
              bint trans_a, bint trans_b, float alpha, float beta,
              cnp.ndarray bias=None, bint relu=False, cnp.ndarray mask=None,
              float mask_scale=1.0):
    """As gemm, with a and b rounded to bf16 (RNE) and fp32 accumulation; a and b are
    float32, or uint16 arrays of bf16 bits (f32_to_bf16 copies)."""
    cdef int a16 = _bf16_operand(a, "a"), b16 = _bf16_operand(b, "b")
    _check_f32(c, 2, "c", True)
    cdef int64_t m = cnp.PyArray_DIMS(c)[0], n = cnp.PyArray_DIMS(c)[1]
    cdef int64_t ar = cnp.PyArray_DIMS(a)[0], ac = cnp.PyArray_DIMS(a)[1]
    cdef int64_t br = cnp.PyArray_DIMS(b)[0], bc = cnp.PyArray_DIMS(b)[1]
    cdef int64_t k = ar if trans_a else ac
    if (ac if trans_a else ar) != m or (bc if trans_b else br) != k \
            or (br if trans_b else bc) != n:
        raise ValueError(f"gemm_bf16 shapes do not match: a {(ar, ac)}, b {(br, bc)}, "
                         f"c {(m, n)}, trans_a={trans_a}, trans_b={trans_b}")
    cdef fd_epilogue ep
    cdef fd_epilogue *pep = NULL
    if bias is not None or relu or mask is not None:
        memset(&ep, 0, sizeof(ep))
        ep.bias = _column_vector(bias, n, "bias")
        if mask is not None:
            if (cnp.PyArray_TYPE(mask) != cnp.NPY_UINT8 or cnp.PyArray_NDIM(mask) != 1
                    or not cnp.PyArray_IS_C_CONTIGUOUS(mask)
                    or cnp.PyArray_DIMS(mask)[0] < (m * n + 7) // 8):
                raise ValueError(f"mask must be a contiguous uint8 array of at least "
                                 f"{(m * n + 7) // 8} bytes")
            ep.mask = <const uint8_t *>cnp.PyArray_DATA(mask)
        ep.relu = relu
        ep.mask_scale = mask_scale
        pep = &ep
    if m == 0 or n == 0:
        return
    cdef const void *pa = cnp.PyArray_DATA(a)
    cdef const void *pb = cnp.PyArray_DATA(b)
    cdef float *pc = <float *>cnp.PyArray_DATA(c)
    cdef int rc
    with nogil:
        rc = fd_gemm_bf16(trans_a, trans_b, m, n, k, alpha, pa, a16, ac, pb, b16, bc, beta,
                          pc, n, pep)
    if rc != 0:
        raise MemoryError(f"gemm_bf16 {m}x{n}x{k}: cannot allocate the packing buffer")


# ----------------------------------------------------------------------- dropout
def dropout_threshold(double rate):
    return fd_dropout_threshold(rate)


def dropout_forward(const float[::1] x, float[::1] out, uint64_t seed, double rate,
                    uint8_t[::1] mask):
    """out = inverted dropout of x; mask (bit-packed keep bits) written."""
    cdef int64_t n = x.shape[0]
    cdef uint32_t thr = fd_dropout_threshold(rate)
    cdef float scale = <float>(1.0 / (1.0 - rate))
    if n == 0:
        return
    with nogil:
        fd_dropout_forward_f32(n, &out[0], &x[0], seed, thr, scale, &mask[0])


def dropout_mask(int64_t n, uint64_t seed, double rate, uint8_t[::1] mask):
    if n == 0:
        return
    cdef uint32_t thr = fd_dropout_threshold(rate)
    with nogil:
        fd_dropout_mask(n, seed, thr, &mask[0])


def dropout_mask_range(int64_t start, int64_t n, uint64_t seed, double rate,
                       uint8_t[::1] mask, int64_t dst_bit=0):
    """Keep bits of elements [start, start+n) of the stream keyed by seed into mask bits
    [dst_bit, dst_bit+n) (other bits untouched)."""
    cdef uint32_t thr = fd_dropout_threshold(rate)
    if n <= 0:
        return
    if (dst_bit + n + 7) // 8 > mask.shape[0]:
        raise ValueError("mask too small")
    with nogil:
        fd_dropout_mask_range(start, n, seed, thr, &mask[0], dst_bit)


def dropout_apply(const float[::1] x, const uint8_t[::1] mask, float[::1] out, float scale):
    cdef int64_t n = x.shape[0]
    if n == 0:
        return
    with nogil:
        fd_dropout_apply_f32(n, &out[0], &x[0], &mask[0], scale)


# ------------------------------------------------------------------- elementwise
def relu(const float[::1] x, float[::1] out):
    if x.shape[0] == 0:
        return
    with nogil:
        fd_relu_f32(x.shape[0], &out[0], &x[0])


def relu_backward(const float[::1] grad, const float[::1] y, float[::1] out):
    if grad.shape[0] == 0:
        return
    with nogil:
        fd_relu_backward_f32(grad.shape[0], &out[0], &grad[0], &y[0])


def relu_dropout_backward(const float[::1] grad, const float[::1] h, float[::1] out,
                          float scale):
    if grad.shape[0] == 0:
        return
    with nogil:
        fd_relu_dropout_backward_f32(grad.shape[0], &out[0], &grad[0], &h[0], scale)


def dense_backward_act(const float[:, ::1] grad, const float[:, ::1] h,
                       const uint8_t[::1] mask, float scale, bint relu, float[:, ::1] dz,
                       float[::1] db=None):
    """dz = relu ? (h > 0) * grad * scale : mask * grad * scale; db = column sums of dz."""
    cdef int64_t m = grad.shape[0], n = grad.shape[1]
    cdef const float *ph = &h[0, 0] if h is not None else NULL
    cdef const uint8_t *pm = &mask[0] if mask is not None else NULL
    cdef float *pdb = &db[0] if db is not None else NULL
    if m * n == 0:
        return
    with nogil:
        fd_dense_backward_act_f32(m, n, &dz[0, 0], pdb, &grad[0, 0], ph, pm, scale, relu)


def bias_add(const float[:, ::1] x, const float[::1] bias, float[:, ::1] out):
    if x.shape[0] * x.shape[1] == 0:
        return
    with nogil:
        fd_bias_add_f32(x.shape[0], x.shape[1], &out[0, 0], &x[0, 0], &bias[0])


def colsum(const float[:, ::1] x, float[::1] out, float alpha=1.0, float beta=0.0):
    if x.shape[1] == 0:
        return
    with nogil:
        fd_colsum_f32(x.shape[0], x.shape[1], &out[0], &x[0, 0], alpha, beta)


# ------------------------------------------------------------------------ losses
def softmax_xent_labels(const float[:, ::1] logits, const int64_t[::1] labels, float scale,
                        float[:, ::1] grad=None, float[::1] loss_rows=None):
    """Returns the sum of row losses; grad = scale*(softmax - onehot) if given."""
    cdef double total
    cdef float *pg = &grad[0, 0] if grad is not None else NULL
    cdef float *pl = &loss_rows[0] if loss_rows is not None else NULL
    with nogil:
        total = fd_softmax_xent_labels_f32(logits.shape[0], logits.shape[1], &logits[0, 0],
                                           &labels[0], scale, pg, pl)
    return total


def softmax_xent_targets(const float[:, ::1] logits, const float[:, ::1] targets,
                         float scale, float[:, ::1] grad=None, float[::1] loss_rows=None):
    cdef double total
    cdef float *pg = &grad[0, 0] if grad is not None else NULL
    cdef float *pl = &loss_rows[0] if loss_rows is not None else NULL
    with nogil:
        total = fd_softmax_xent_targets_f32(logits.shape[0], logits.shape[1],
                                            &logits[0, 0], &targets[0, 0], scale, pg, pl)
    return total


def softmax(const float[:, ::1] x, float[:, ::1] out):
    if x.shape[0] * x.shape[1] == 0:
        return
    with nogil:
        fd_softmax_f32(x.shape[0], x.shape[1], &out[0, 0], &x[0, 0])


def all_below(const float[::1] x, float bound=float("inf")):
    """True when |x| < bound everywhere (NaN fails; the default bound: all finite), in
    one threaded pass."""
    cdef int r = 1
    if not bound > 0:
        raise ValueError(f"bound must be > 0, got {bound}")
    if x.shape[0] == 0:
        return True
    with nogil:
        r = fd_all_below_f32(x.shape[0], &x[0], bound)
    return bool(r)


def all_finite(const float[::1] x):
    """True when x holds no NaN and no infinity (one threaded pass)."""
    return all_below(x)


def mse(const float[::1] pred, const float[::1] target, float scale, float[::1] grad=None):
    cdef double total
    cdef float *pg = &grad[0] if grad is not None else NULL
    with nogil:
        total = fd_mse_f32(pred.shape[0], &pred[0], &target[0], scale, pg)
    return total


# -------------------------------------------------------------------- optimizers
def sgd_update(float[::1] w, const float[::1] g, float[::1] vel, float lr, float momentum,
               bint nesterov, float weight_decay):
    cdef float *pv = &vel[0] if vel is not None else NULL
    if w.shape[0] == 0:
        return
    with nogil:
        fd_sgd_update_f32(w.shape[0], &w[0], &g[0], pv, lr, momentum, nesterov, weight_decay)


def adam_update(float[::1] w, const float[::1] g, float[::1] m, float[::1] v, float lr,
                float beta1, float beta2, float eps, float weight_decay, int64_t t):
    if w.shape[0] == 0:
        return
    with nogil:
        fd_adam_update_f32(w.shape[0], &w[0], &g[0], &m[0], &v[0], lr, beta1, beta2, eps,
                           weight_decay, t)


def regularize_grad(float[::1] g, const float[::1] w, float l1, float l2):
    if g.shape[0] == 0:
        return
    with nogil:
        fd_regularize_grad_f32(g.shape[0], &g[0], &w[0], l1, l2)


def maxnorm(float[:, ::1] w, float max_value):
    if w.shape[0] * w.shape[1] == 0:
        return
    with nogil:
        fd_maxnorm_f32(w.shape[0], w.shape[1], &w[0, 0], max_value)


# --------------------------------------------------------------- dropout variants
def gaussian_noise(float[::1] noise, uint64_t seed, float stddev):
    if noise.shape[0] == 0:
        return
    with nogil:
        fd_gaussian_noise_f32(noise.shape[0], &noise[0], seed, stddev)


cdef extern from "fastdrop.h" nogil:
    void fd_gaussian_noise_range_f32(int64_t start, int64_t n, float *noise, uint64_t seed,
                                     float stddev)


def gaussian_noise_range(int64_t start, float[::1] noise, uint64_t seed, float stddev):
    """Noise of elements [start, start + len(noise)) of the stream keyed by seed."""
    if noise.shape[0] == 0:
        return
    with nogil:
        fd_gaussian_noise_range_f32(start, noise.shape[0], &noise[0], seed, stddev)


def mul(const float[::1] x, const float[::1] y, float[::1] out):
    if x.shape[0] == 0:
        return
    with nogil:
        fd_mul_f32(x.shape[0], &out[0], &x[0], &y[0])


def selu(const float[::1] x, float[::1] out):
    if x.shape[0] == 0:
        return
    with nogil:
        fd_selu_f32(x.shape[0], &out[0], &x[0])


def selu_backward(const float[::1] grad, const float[::1] y, float[::1] out):
    if grad.shape[0] == 0:
        return
    with nogil:
        fd_selu_backward_f32(grad.shape[0], &out[0], &grad[0], &y[0])


def alpha_dropout_apply(const float[::1] x, const uint8_t[::1] mask, float[::1] out,
                        float a, float b, float alpha_p):
    if x.shape[0] == 0:
        return
    with nogil:
        fd_alpha_dropout_apply_f32(x.shape[0], &out[0], &x[0], &mask[0], a, b, alpha_p)


# ------------------------------------------------------------ kernel families
# Each family's bindings live in their own file (declarations + wrappers).
include "_core_act.pxi"
include "_core_optim.pxi"
include "_core_conv.pxi"
include "_core_rnn.pxi"

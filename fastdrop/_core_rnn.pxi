# Bindings of the rnn kernels, included into fastdrop/_core.pyx (one file per kernel
# family, so families are added without touching each other).

cdef extern from "nn/rnn.h" nogil:
    ctypedef struct fd_rnn_desc:
        int cell
        int act
        int rec_act
        int reset_after
        int go_backwards
        int return_sequences
        int64_t m
        int64_t T
        int64_t F
        int64_t u
        int n_in_masks
        int n_rec_masks
        float in_scale
        float rec_scale
        const uint8_t *in_mask
        int64_t in_mask_stride
        const uint8_t *rec_mask
        int64_t rec_mask_stride
        const uint8_t *seq

    int64_t fd_rnn_workspace_floats(const fd_rnn_desc *d)
    int fd_rnn_forward(const fd_rnn_desc *d, const float *x, const float *W, const float *U,
                       const float *bias, float *y, float *ws)
    int fd_rnn_backward(const fd_rnn_desc *d, const float *W, const float *U,
                        const float *dy, float *dx, float *dW, float *dU, float *db,
                        float *ws)
    void fd_embedding_forward(int64_t n, int64_t dim, const float *ids, const float *E,
                              float *out)
    void fd_embedding_backward(int64_t n, int64_t dim, int64_t V, const float *ids,
                               const float *dy, float *dE)
    void fd_rnn_act(int kind, int64_t n, float *y, const float *x)

RNN_CELLS = {"simple": 0, "lstm": 1, "gru": 2}
RNN_ACTS = {"linear": 0, None: 0, "tanh": 1, "sigmoid": 2, "relu": 3, "hard_sigmoid": 4}
#: the activation kernels whose backward reads the output (act.h) run in the cells too
#: (kind 16 + their FD_ACT code); those that need the pre-activation do not (yet)
for _n, _c in ACT_CODES.items():
    if _n not in RNN_ACTS and ACT_NEEDS[_n] != "z":
        RNN_ACTS[_n] = 16 + _c
#: SimpleRNN keeps its pre-activations: it runs the activations that need them too
RNN_ACTS_SIMPLE = dict(RNN_ACTS)
for _n, _c in ACT_CODES.items():
    if _n not in RNN_ACTS_SIMPLE and _n not in ("threshold", "relu_args"):
        RNN_ACTS_SIMPLE[_n] = 16 + _c
del _n, _c


cdef inline void *_rnn_ptr(cnp.ndarray a, int typenum, str name) except NULL:
    if cnp.PyArray_TYPE(a) != typenum or not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise ValueError(f"{name} must be a C-contiguous array of the kernel's dtype")
    return cnp.PyArray_DATA(a)


cdef int _rnn_desc(fd_rnn_desc *d, tuple spec, int64_t m, int64_t T, cnp.ndarray in_mask,
                   float in_scale, cnp.ndarray rec_mask, float rec_scale,
                   cnp.ndarray seq) except -1:
    # spec = (cell, act, rec_act, reset_after, go_backwards, return_sequences, F, u)
    d.cell = spec[0]
    d.act = spec[1]
    d.rec_act = spec[2]
    d.reset_after = spec[3]
    d.go_backwards = spec[4]
    d.return_sequences = spec[5]
    d.F = spec[6]
    d.u = spec[7]
    d.m = m
    d.T = T
    d.n_in_masks = 0
    d.n_rec_masks = 0
    d.in_scale = in_scale
    d.rec_scale = rec_scale
    d.in_mask = NULL
    d.rec_mask = NULL
    d.in_mask_stride = 0
    d.rec_mask_stride = 0
    d.seq = NULL
    if in_mask is not None:   # (k, bytes) uint8
        if in_mask.shape[1] * 8 < m * d.F:
            raise ValueError("in_mask too small")
        d.n_in_masks = in_mask.shape[0]
        d.in_mask = <const uint8_t *>_rnn_ptr(in_mask, cnp.NPY_UINT8, "in_mask")
        d.in_mask_stride = in_mask.shape[1]
    if rec_mask is not None:
        if rec_mask.shape[1] * 8 < m * d.u:
            raise ValueError("rec_mask too small")
        d.n_rec_masks = rec_mask.shape[0]
        d.rec_mask = <const uint8_t *>_rnn_ptr(rec_mask, cnp.NPY_UINT8, "rec_mask")
        d.rec_mask_stride = rec_mask.shape[1]
    if seq is not None:
        if seq.size < m * T:
            raise ValueError("seq too small")
        d.seq = <const uint8_t *>_rnn_ptr(seq, cnp.NPY_UINT8, "seq")
    return 0


def rnn_workspace_floats(tuple spec, int64_t m, int64_t T, int n_in_masks, int n_rec_masks):
    cdef fd_rnn_desc d
    _rnn_desc(&d, spec, m, T, None, 1.0, None, 1.0, None)
    d.n_in_masks = n_in_masks
    d.n_rec_masks = n_rec_masks
    return fd_rnn_workspace_floats(&d)


def rnn_forward(tuple spec, cnp.ndarray x not None, cnp.ndarray W not None,
                cnp.ndarray U not None, cnp.ndarray bias, cnp.ndarray y not None,
                cnp.ndarray ws not None, cnp.ndarray in_mask=None, float in_scale=1.0,
                cnp.ndarray rec_mask=None, float rec_scale=1.0, cnp.ndarray seq=None):
    """x (m, T, F) float32 -> y ((m, T, u) or (m, u)).  Shapes are trusted (the stage
    validates them); ws must hold rnn_workspace_floats(...) floats."""
    cdef fd_rnn_desc d
    cdef int64_t m = x.shape[0], T = x.shape[1]
    _rnn_desc(&d, spec, m, T, in_mask, in_scale, rec_mask, rec_scale, seq)
    if ws.size < fd_rnn_workspace_floats(&d):
        raise ValueError("ws too small")
    cdef const float *px = <const float *>_rnn_ptr(x, cnp.NPY_FLOAT32, "x")
    cdef const float *pW = <const float *>_rnn_ptr(W, cnp.NPY_FLOAT32, "W")
    cdef const float *pU = <const float *>_rnn_ptr(U, cnp.NPY_FLOAT32, "U")
    cdef const float *pb = NULL if bias is None else <const float *>_rnn_ptr(bias, cnp.NPY_FLOAT32, "bias")
    cdef float *py = <float *>_rnn_ptr(y, cnp.NPY_FLOAT32, "y")
    cdef float *pws = <float *>_rnn_ptr(ws, cnp.NPY_FLOAT32, "ws")
    cdef int rc
    with nogil:
        rc = fd_rnn_forward(&d, px, pW, pU, pb, py, pws)
    if rc != 0:
        raise MemoryError("rnn_forward: out of memory")


def rnn_backward(tuple spec, int64_t m, int64_t T, cnp.ndarray W not None,
                 cnp.ndarray U not None, cnp.ndarray dy not None, cnp.ndarray dx,
                 cnp.ndarray dW not None, cnp.ndarray dU not None, cnp.ndarray db,
                 cnp.ndarray ws not None, cnp.ndarray in_mask=None, float in_scale=1.0,
                 cnp.ndarray rec_mask=None, float rec_scale=1.0, cnp.ndarray seq=None):
    cdef fd_rnn_desc d
    _rnn_desc(&d, spec, m, T, in_mask, in_scale, rec_mask, rec_scale, seq)
    if ws.size < fd_rnn_workspace_floats(&d):
        raise ValueError("ws too small")
    cdef const float *pW = <const float *>_rnn_ptr(W, cnp.NPY_FLOAT32, "W")
    cdef const float *pU = <const float *>_rnn_ptr(U, cnp.NPY_FLOAT32, "U")
    cdef const float *pdy = <const float *>_rnn_ptr(dy, cnp.NPY_FLOAT32, "dy")
    cdef float *pdx = NULL if dx is None else <float *>_rnn_ptr(dx, cnp.NPY_FLOAT32, "dx")
    cdef float *pdW = <float *>_rnn_ptr(dW, cnp.NPY_FLOAT32, "dW")
    cdef float *pdU = <float *>_rnn_ptr(dU, cnp.NPY_FLOAT32, "dU")
    cdef float *pdb = NULL if db is None else <float *>_rnn_ptr(db, cnp.NPY_FLOAT32, "db")
    cdef float *pws = <float *>_rnn_ptr(ws, cnp.NPY_FLOAT32, "ws")
    cdef int rc
    with nogil:
        rc = fd_rnn_backward(&d, pW, pU, pdy, pdx, pdW, pdU, pdb, pws)
    if rc != 0:
        raise MemoryError("rnn_backward: out of memory")


def embedding_forward(cnp.ndarray ids not None, cnp.ndarray E not None,
                      cnp.ndarray out not None):
    """ids: float32 (n,) integral in [0, V) (validated by the caller)."""
    cdef int64_t n = ids.size, dim = E.shape[1]
    cdef const float *pi = <const float *>_rnn_ptr(ids, cnp.NPY_FLOAT32, "ids")
    cdef const float *pE = <const float *>_rnn_ptr(E, cnp.NPY_FLOAT32, "E")
    cdef float *po = <float *>_rnn_ptr(out, cnp.NPY_FLOAT32, "out")
    if out.size < n * dim:
        raise ValueError("out too small")
    with nogil:
        fd_embedding_forward(n, dim, pi, pE, po)


def embedding_backward(cnp.ndarray ids not None, cnp.ndarray dy not None,
                       cnp.ndarray dE not None):
    cdef int64_t n = ids.size, V = dE.shape[0], dim = dE.shape[1]
    cdef const float *pi = <const float *>_rnn_ptr(ids, cnp.NPY_FLOAT32, "ids")
    cdef const float *pd = <const float *>_rnn_ptr(dy, cnp.NPY_FLOAT32, "dy")
    cdef float *pE = <float *>_rnn_ptr(dE, cnp.NPY_FLOAT32, "dE")
    if dy.size < n * dim:
        raise ValueError("dy too small")
    with nogil:
        fd_embedding_backward(n, dim, V, pi, pd, pE)


def rnn_act(int kind, cnp.ndarray x not None, cnp.ndarray y not None):
    """y = activation kind (RNN_ACTS) of x, through the gate kernels' exp (tests)."""
    cdef const float *px = <const float *>_rnn_ptr(x, cnp.NPY_FLOAT32, "x")
    cdef float *py = <float *>_rnn_ptr(y, cnp.NPY_FLOAT32, "y")
    if y.size < x.size:
        raise ValueError("y too small")
    with nogil:
        fd_rnn_act(kind, x.size, py, px)

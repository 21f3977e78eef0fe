# Bindings of the act kernels, included into fastdrop/_core.pyx (one file per kernel
# family, so families are added without touching each other).
#
# Activations (csrc/kernels/act.h): flat float32 arrays, out may be x (in place).
#   act_forward(name, x, out, param=None)
#   act_backward(name, grad, z, y, out, param=None)   out = grad * f'(...)
# ACT_NEEDS[name] says which of z (pre-activation) or y (output) backward reads
# (None: neither); pass None for the other.  param: None (defaults, ACT_PARAM_DEFAULT), a
# number (the first parameter) or a tuple of up to 3 (ACT_PARAMS names them):
# leaky_relu negative_slope (0.2, >= 0), elu / celu alpha (1.0, > 0), soft_shrink /
# hard_shrink threshold (0.5), squareplus b (4, >= 0), threshold (threshold,
# default_value), relu_args (negative_slope, max_value (inf: none), threshold).
#
# Row-wise activations over the last axis of an (n, c) view (any rank: rows = product of
# the leading axes): ROWS_ACTS; act_rows_forward(name, x, out), act_rows_backward(name,
# g, x, y, dx) (softmax / log_softmax / sparsemax read y, glu reads x; glu halves c).
#
# Losses: bce_logits / bce_probs / regression_loss / softmax_xent_weighted return the
# (weighted) sum of row losses (double, row order) and write grad = scale * d(sum)/dx.

cdef extern from "kernels/act.h" nogil:
    enum:
        FD_ACT_LINEAR
        FD_ACT_RELU
        FD_ACT_RELU6
        FD_ACT_LEAKY_RELU
        FD_ACT_ELU
        FD_ACT_TANH
        FD_ACT_SIGMOID
        FD_ACT_SOFTPLUS
        FD_ACT_SILU
        FD_ACT_GELU
        FD_ACT_GELU_TANH
        FD_ACT_HARD_SIGMOID
        FD_ACT_SOFTSIGN
        FD_ACT_MISH
        FD_ACT_CELU
        FD_ACT_HARD_SILU
        FD_ACT_HARD_TANH
        FD_ACT_SOFT_SHRINK
        FD_ACT_HARD_SHRINK
        FD_ACT_TANH_SHRINK
        FD_ACT_LOG_SIGMOID
        FD_ACT_EXPONENTIAL
        FD_ACT_SPARSE_PLUS
        FD_ACT_SQUAREPLUS
        FD_ACT_THRESHOLD
        FD_ACT_RELU_ARGS
        FD_ACT_SPARSE_SIGMOID
        FD_ACT_SELU
        FD_ACT_COUNT
        FD_ACT_NPARAMS
        FD_ACT_ROWS_SOFTMAX
        FD_ACT_ROWS_LOG_SOFTMAX
        FD_ACT_ROWS_SPARSEMAX
        FD_ACT_ROWS_GLU
        FD_ACT_NEEDS_NONE
        FD_ACT_NEEDS_Z
        FD_ACT_NEEDS_Y
        FD_LOSS_MSE
        FD_LOSS_MAE
        FD_LOSS_HUBER

    int fd_act_needs(int act)
    int fd_act_forward_f32(int act, int64_t n, float *out, const float *x, float param)
    int fd_act_backward_f32(int act, int64_t n, float *out, const float *grad,
                            const float *z, const float *y, float param)
    int fd_act_forward_p_f32(int act, int64_t n, float *out, const float *x, const float *p)
    int fd_act_backward_p_f32(int act, int64_t n, float *out, const float *grad,
                              const float *z, const float *y, const float *p)
    int fd_act_rows_forward_f32(int kind, int64_t n, int64_t c, float *out, const float *x)
    int fd_act_rows_backward_f32(int kind, int64_t n, int64_t c, float *dx, const float *g,
                                 const float *x, const float *y)
    double fd_bce_logits_f32(int64_t n, int64_t c, const float *z, const float *t,
                             const float *w, float label_smoothing, float scale,
                             float *grad, float *loss_rows)
    double fd_bce_probs_f32(int64_t n, int64_t c, const float *p, const float *t,
                            const float *w, float label_smoothing, float eps, float scale,
                            float *grad, float *loss_rows)
    double fd_softmax_xent_weighted_f32(int64_t n, int64_t c, const float *logits,
                                        const int64_t *labels, const float *targets,
                                        const float *w, float scale, float *grad,
                                        float *loss_rows)
    double fd_regression_loss_f32(int kind, int64_t n, int64_t c, const float *pred,
                                  const float *t, const float *w, float delta,
                                  float scale, float *grad, float *loss_rows)


#: activation name -> C code
ACT_CODES = {
    "linear": FD_ACT_LINEAR, "relu": FD_ACT_RELU, "relu6": FD_ACT_RELU6,
    "leaky_relu": FD_ACT_LEAKY_RELU, "elu": FD_ACT_ELU, "tanh": FD_ACT_TANH,
    "sigmoid": FD_ACT_SIGMOID, "softplus": FD_ACT_SOFTPLUS, "silu": FD_ACT_SILU,
    "gelu": FD_ACT_GELU, "gelu_tanh": FD_ACT_GELU_TANH, "hard_sigmoid": FD_ACT_HARD_SIGMOID,
    "softsign": FD_ACT_SOFTSIGN, "mish": FD_ACT_MISH, "celu": FD_ACT_CELU,
    "hard_silu": FD_ACT_HARD_SILU, "hard_tanh": FD_ACT_HARD_TANH,
    "soft_shrink": FD_ACT_SOFT_SHRINK, "hard_shrink": FD_ACT_HARD_SHRINK,
    "tanh_shrink": FD_ACT_TANH_SHRINK, "log_sigmoid": FD_ACT_LOG_SIGMOID,
    "exponential": FD_ACT_EXPONENTIAL, "sparse_plus": FD_ACT_SPARSE_PLUS,
    "squareplus": FD_ACT_SQUAREPLUS, "threshold": FD_ACT_THRESHOLD,
    "relu_args": FD_ACT_RELU_ARGS, "sparse_sigmoid": FD_ACT_SPARSE_SIGMOID,
    "selu": FD_ACT_SELU,
}
#: row-wise activation name -> C kind
ROWS_ACTS = {"softmax": FD_ACT_ROWS_SOFTMAX, "log_softmax": FD_ACT_ROWS_LOG_SOFTMAX,
             "sparsemax": FD_ACT_ROWS_SPARSEMAX, "glu": FD_ACT_ROWS_GLU}
#: what row-wise backward reads: 'y' (output) or 'x' (input)
ROWS_NEEDS = {"softmax": "y", "log_softmax": "y", "sparsemax": "y", "glu": "x"}
_NEEDS_NAME = {FD_ACT_NEEDS_NONE: None, FD_ACT_NEEDS_Z: "z", FD_ACT_NEEDS_Y: "y"}
#: which input backward reads: 'z' (pre-activation), 'y' (output) or None
ACT_NEEDS = {k: _NEEDS_NAME[fd_act_needs(v)] for k, v in ACT_CODES.items()}
#: Keras aliases accepted by act_forward / act_backward
ACT_ALIASES = {"swish": "silu", "hard_swish": "hard_silu"}
#: parameter names, in order, of the activations that take parameters
ACT_PARAMS = {"leaky_relu": ("negative_slope",), "elu": ("alpha",), "celu": ("alpha",),
              "soft_shrink": ("threshold",), "hard_shrink": ("threshold",),
              "squareplus": ("b",), "threshold": ("threshold", "default_value"),
              "relu_args": ("negative_slope", "max_value", "threshold")}
#: their defaults (Keras's); threshold has none in Keras (0, 0 here)
ACT_PARAM_DEFAULT = {"leaky_relu": 0.2, "elu": 1.0, "celu": 1.0, "soft_shrink": 0.5,
                     "hard_shrink": 0.5, "squareplus": 4.0, "threshold": (0.0, 0.0),
                     "relu_args": (0.0, float("inf"), 0.0)}
_REGRESSION = {"mse": FD_LOSS_MSE, "mae": FD_LOSS_MAE, "huber": FD_LOSS_HUBER}


cdef int _act_code(name) except -1:
    try:
        return ACT_CODES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown activation {name!r}; expected one of "
                         f"{sorted(ACT_CODES)}") from None


cdef int _act_params(name, param, float *p) except -1:
    """p[0:3] <- the parameters of `name` (defaults where param is None / shorter)."""
    d = ACT_PARAM_DEFAULT.get(name, 0.0)
    dv = list(d) if isinstance(d, tuple) else [d]
    if param is None:
        vals = dv
    elif isinstance(param, (tuple, list)):
        if len(param) > FD_ACT_NPARAMS:
            raise ValueError(f"{name} takes at most {FD_ACT_NPARAMS} parameters, got {param!r}")
        vals = [float(v) for v in param] + dv[len(param):]
    else:
        vals = [float(param)] + dv[1:]
    vals = vals + [float("inf"), 0.0][len(vals) - 1:] if len(vals) < 3 else vals
    for k in range(3):
        p[k] = <float>vals[k]
    a = vals[0]
    if name == "leaky_relu" and not a >= 0:
        raise ValueError(f"leaky_relu negative_slope must be >= 0, got {a!r}")
    if name in ("elu", "celu") and not a > 0:
        raise ValueError(f"{name} alpha must be > 0, got {a!r}")
    if name == "squareplus" and not a >= 0:
        raise ValueError(f"squareplus b must be >= 0, got {a!r}")
    if name in ("soft_shrink", "hard_shrink") and not a >= 0:
        raise ValueError(f"{name} threshold must be >= 0, got {a!r}")
    if name == "relu_args" and not vals[1] >= 0:
        raise ValueError(f"relu max_value must be >= 0 (inf: none), got {vals[1]!r}")
    return 0


def act_forward(name, const float[::1] x not None, float[::1] out not None, param=None):
    """out = f(x) for activation `name` (flat float32; out may be x)."""
    name = ACT_ALIASES.get(name, name)
    cdef int code = _act_code(name)
    cdef float p[3]
    _act_params(name, param, p)
    cdef int64_t n = x.shape[0]
    cdef int rc
    if out.shape[0] != n:
        raise ValueError(f"out has {out.shape[0]} elements, x has {n}")
    if n == 0:
        return
    with nogil:
        rc = fd_act_forward_p_f32(code, n, &out[0], &x[0], p)
    if rc != 0:
        raise ValueError(f"act_forward({name!r}) rejected its arguments")


def act_backward(name, const float[::1] grad not None, const float[::1] z,
                 const float[::1] y, float[::1] out not None, param=None):
    """out = grad * f'(.): reads z or y as ACT_NEEDS[name] says (the other may be None)."""
    name = ACT_ALIASES.get(name, name)
    cdef int code = _act_code(name)
    cdef float p[3]
    _act_params(name, param, p)
    cdef int64_t n = grad.shape[0]
    cdef const float *pz = NULL
    cdef const float *py = NULL
    cdef int rc
    need = ACT_NEEDS[name]
    if out.shape[0] != n:
        raise ValueError(f"out has {out.shape[0]} elements, grad has {n}")
    if need == "z":
        if z is None:
            raise ValueError(f"{name} backward needs the pre-activation z")
        if z.shape[0] != n:
            raise ValueError(f"z has {z.shape[0]} elements, grad has {n}")
    if need == "y":
        if y is None:
            raise ValueError(f"{name} backward needs the output y")
        if y.shape[0] != n:
            raise ValueError(f"y has {y.shape[0]} elements, grad has {n}")
    if n == 0:
        return
    if need == "z":
        pz = &z[0]
    elif need == "y":
        py = &y[0]
    with nogil:
        rc = fd_act_backward_p_f32(code, n, &out[0], &grad[0], pz, py, p)
    if rc != 0:
        raise ValueError(f"act_backward({name!r}) rejected its arguments")


cdef int _rows_kind(name) except -1:
    try:
        return ROWS_ACTS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown row-wise activation {name!r}; expected one of "
                         f"{sorted(ROWS_ACTS)}") from None


def act_rows_forward(name, const float[:, ::1] x not None, float[:, ::1] out not None):
    """out = f(x) row by row (the last axis): x (n, c), out (n, c) or (n, c/2) for glu.
    out may be x except for glu."""
    cdef int kind = _rows_kind(name)
    cdef int64_t n = x.shape[0], c = x.shape[1]
    cdef int64_t co = c // 2 if name == "glu" else c
    cdef int rc
    if name == "glu" and c % 2:
        raise ValueError(f"glu needs an even last axis, got {c}")
    if out.shape[0] != n or out.shape[1] != co:
        raise ValueError(f"out has shape ({out.shape[0]}, {out.shape[1]}), expected ({n}, {co})")
    if n == 0 or c == 0:
        return
    with nogil:
        rc = fd_act_rows_forward_f32(kind, n, c, &out[0, 0], &x[0, 0])
    if rc != 0:
        raise ValueError(f"act_rows_forward({name!r}) rejected its arguments")


def act_rows_backward(name, const float[:, ::1] g not None, const float[:, ::1] x,
                      const float[:, ::1] y, float[:, ::1] dx not None):
    """dx = J^T g row by row: g (n, c_out), dx (n, c); reads y (softmax, log_softmax,
    sparsemax) or x (glu) as ROWS_NEEDS says (the other may be None)."""
    cdef int kind = _rows_kind(name)
    cdef int64_t n = dx.shape[0], c = dx.shape[1]
    cdef int64_t co = c // 2 if name == "glu" else c
    cdef const float *px = NULL
    cdef const float *py = NULL
    cdef int rc
    if name == "glu" and c % 2:
        raise ValueError(f"glu needs an even last axis, got {c}")
    if g.shape[0] != n or g.shape[1] != co:
        raise ValueError(f"g has shape ({g.shape[0]}, {g.shape[1]}), expected ({n}, {co})")
    if ROWS_NEEDS[name] == "x":
        if x is None or x.shape[0] != n or x.shape[1] != c:
            raise ValueError(f"{name} backward needs its input x of shape ({n}, {c})")
    else:
        if y is None or y.shape[0] != n or y.shape[1] != c:
            raise ValueError(f"{name} backward needs its output y of shape ({n}, {c})")
    if n == 0 or c == 0:
        return
    if ROWS_NEEDS[name] == "x":
        px = &x[0, 0]
    else:
        py = &y[0, 0]
    with nogil:
        rc = fd_act_rows_backward_f32(kind, n, c, &dx[0, 0], &g[0, 0], px, py)
    if rc != 0:
        raise ValueError(f"act_rows_backward({name!r}) rejected its arguments")


cdef int _check_loss_args(int64_t n, int64_t c, t, grad, weights, loss_rows,
                          str xname) except -1:
    if t.shape[0] != n or t.shape[1] != c:
        raise ValueError(f"targets have shape ({t.shape[0]}, {t.shape[1]}), {xname} has ({n}, {c})")
    if grad is not None and (grad.shape[0] != n or grad.shape[1] != c):
        raise ValueError(f"grad has shape ({grad.shape[0]}, {grad.shape[1]}), {xname} has ({n}, {c})")
    if weights is not None and weights.shape[0] != n:
        raise ValueError(f"weights have {weights.shape[0]} rows, {xname} has {n}")
    if loss_rows is not None and loss_rows.shape[0] != n:
        raise ValueError(f"loss_rows has {loss_rows.shape[0]} rows, {xname} has {n}")
    return 0


def bce_logits(const float[:, ::1] z not None, const float[:, ::1] targets not None,
               float scale, float[:, ::1] grad=None, const float[::1] weights=None,
               float label_smoothing=0.0, float[::1] loss_rows=None):
    """Sigmoid binary cross-entropy on logits: sum over rows of w_r * mean_j loss;
    grad = scale * w_r * (sigmoid(z) - t') / c, t' = t (1 - ls) + ls / 2."""
    cdef int64_t n = z.shape[0], c = z.shape[1]
    _check_loss_args(n, c, targets, grad, weights, loss_rows, "z")
    cdef float *pg = &grad[0, 0] if grad is not None and n * c > 0 else NULL
    cdef const float *pw = &weights[0] if weights is not None and n > 0 else NULL
    cdef float *pl = &loss_rows[0] if loss_rows is not None and n > 0 else NULL
    cdef double total
    if n * c == 0:
        if loss_rows is not None:
            loss_rows[:] = 0
        return 0.0
    with nogil:
        total = fd_bce_logits_f32(n, c, &z[0, 0], &targets[0, 0], pw, label_smoothing,
                                  scale, pg, pl)
    return total


def bce_probs(const float[:, ::1] p not None, const float[:, ::1] targets not None,
              float scale, float[:, ::1] grad=None, const float[::1] weights=None,
              float label_smoothing=0.0, float eps=1e-7, float[::1] loss_rows=None):
    """Binary cross-entropy on probabilities clipped to [eps, 1 - eps] (Keras)."""
    cdef int64_t n = p.shape[0], c = p.shape[1]
    _check_loss_args(n, c, targets, grad, weights, loss_rows, "p")
    cdef float *pg = &grad[0, 0] if grad is not None and n * c > 0 else NULL
    cdef const float *pw = &weights[0] if weights is not None and n > 0 else NULL
    cdef float *pl = &loss_rows[0] if loss_rows is not None and n > 0 else NULL
    cdef double total
    if n * c == 0:
        if loss_rows is not None:
            loss_rows[:] = 0
        return 0.0
    with nogil:
        total = fd_bce_probs_f32(n, c, &p[0, 0], &targets[0, 0], pw, label_smoothing, eps,
                                 scale, pg, pl)
    return total


def regression_loss(str kind, const float[:, ::1] pred not None,
                    const float[:, ::1] targets not None, float scale,
                    float[:, ::1] grad=None, const float[::1] weights=None,
                    float delta=1.0, float[::1] loss_rows=None):
    """kind 'mse' | 'mae' | 'huber': sum over rows of w_r * mean_j loss(pred - t);
    grad = scale * d(sum)/dpred."""
    if kind not in _REGRESSION:
        raise ValueError(f"kind must be one of {sorted(_REGRESSION)}, got {kind!r}")
    cdef int k = _REGRESSION[kind]
    cdef int64_t n = pred.shape[0], c = pred.shape[1]
    _check_loss_args(n, c, targets, grad, weights, loss_rows, "pred")
    cdef float *pg = &grad[0, 0] if grad is not None and n * c > 0 else NULL
    cdef const float *pw = &weights[0] if weights is not None and n > 0 else NULL
    cdef float *pl = &loss_rows[0] if loss_rows is not None and n > 0 else NULL
    cdef double total
    if n * c == 0:
        if loss_rows is not None:
            loss_rows[:] = 0
        return 0.0
    with nogil:
        total = fd_regression_loss_f32(k, n, c, &pred[0, 0], &targets[0, 0], pw, delta,
                                       scale, pg, pl)
    return total


def softmax_xent_weighted(const float[:, ::1] logits not None, labels, targets,
                          float scale, float[:, ::1] grad=None,
                          const float[::1] weights=None, float[::1] loss_rows=None):
    """Softmax cross-entropy with row weights: labels (int64 (n,)) or targets ((n, c)
    float32), exactly one given; grad rows scaled by w_r."""
    cdef int64_t n = logits.shape[0], c = logits.shape[1]
    cdef const int64_t[::1] lab
    cdef const float[:, ::1] tgt
    cdef const int64_t *pl_ = NULL
    cdef const float *pt = NULL
    if (labels is None) == (targets is None):
        raise ValueError("give exactly one of labels and targets")
    if c == 0:
        raise ValueError("logits must have at least one class")
    if labels is not None:
        lab = labels
        if lab.shape[0] != n:
            raise ValueError(f"labels have {lab.shape[0]} rows, logits have {n}")
    else:
        tgt = targets
        if tgt.shape[0] != n or tgt.shape[1] != c:
            raise ValueError(f"targets have shape ({tgt.shape[0]}, {tgt.shape[1]}), logits have "
                             f"({n}, {c})")
    if grad is not None and (grad.shape[0] != n or grad.shape[1] != c):
        raise ValueError(f"grad has shape ({grad.shape[0]}, {grad.shape[1]}), logits have ({n}, {c})")
    if weights is not None and weights.shape[0] != n:
        raise ValueError(f"weights have {weights.shape[0]} rows, logits have {n}")
    if loss_rows is not None and loss_rows.shape[0] != n:
        raise ValueError(f"loss_rows has {loss_rows.shape[0]} rows, logits have {n}")
    if n == 0:
        return 0.0
    cdef int64_t r, bad = -1
    if labels is not None:
        pl_ = &lab[0]
        with nogil:
            for r in range(n):
                if pl_[r] < 0 or pl_[r] >= c:
                    bad = r
                    break
        if bad >= 0:
            raise ValueError(f"labels[{bad}] = {lab[bad]} is outside [0, {c})")
    else:
        pt = &tgt[0, 0]
    cdef float *pg = &grad[0, 0] if grad is not None else NULL
    cdef const float *pw = &weights[0] if weights is not None else NULL
    cdef float *plr = &loss_rows[0] if loss_rows is not None else NULL
    cdef double total
    with nogil:
        total = fd_softmax_xent_weighted_f32(n, c, &logits[0, 0], pl_, pt, pw, scale, pg,
                                             plr)
    return total

"""NumPy reference of the convolutional kernels (NHWC, channels last): the oracle of the
tests.  Written for clarity, computed in float64 by default (``dtype`` selects), no
fastdrop code used.

Padding follows Keras: ``'valid'`` none; ``'same'`` total = max((ceil(n/s)-1)*s +
(k-1)*d + 1 - n, 0), before = total//2, after = total - before.
"""
import numpy as np


def same_padding(n, k, s=1, d=1):
    """(before, after, out) of Keras 'same' padding on one axis."""
    out = -(-n // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2, out


def conv_output(n, k, s, d, padding):
    """(before, after, out) on one axis for 'valid' or 'same'."""
    if padding == "same":
        return same_padding(n, k, s, d)
    return 0, 0, (n - (k - 1) * d - 1) // s + 1


def _pads(x_shape, k, strides, dilation, padding):
    (kh, kw), (sh, sw), (dh, dw) = k, strides, dilation
    pt, pb, oh = conv_output(x_shape[1], kh, sh, dh, padding)
    pl, pr, ow = conv_output(x_shape[2], kw, sw, dw, padding)
    return pt, pb, pl, pr, oh, ow


def conv2d(x, w, b=None, strides=(1, 1), padding="valid", dilation=(1, 1),
           dtype=np.float64):
    """y (n, oh, ow, oc) = conv of x (n, h, w, c) with w (kh, kw, c, oc) (+ b)."""
    x = np.asarray(x, dtype)
    w = np.asarray(w, dtype)
    kh, kw = w.shape[:2]
    (sh, sw), (dh, dw) = strides, dilation
    pt, pb, pl, pr, oh, ow = _pads(x.shape, (kh, kw), strides, dilation, padding)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    y = np.zeros((x.shape[0], oh, ow, w.shape[3]), dtype)
    for i in range(kh):
        for j in range(kw):
            sl = xp[:, i * dh: i * dh + (oh - 1) * sh + 1: sh,
                    j * dw: j * dw + (ow - 1) * sw + 1: sw, :]
            y += sl @ w[i, j]
    if b is not None:
        y += np.asarray(b, dtype)
    return y


def conv2d_backward(x, w, dy, strides=(1, 1), padding="valid", dilation=(1, 1),
                    dtype=np.float64):
    """(dx, dw, db) of conv2d given dy (n, oh, ow, oc) at its (pre-activation) output."""
    x = np.asarray(x, dtype)
    w = np.asarray(w, dtype)
    dy = np.asarray(dy, dtype)
    kh, kw = w.shape[:2]
    (sh, sw), (dh, dw) = strides, dilation
    pt, pb, pl, pr, oh, ow = _pads(x.shape, (kh, kw), strides, dilation, padding)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    dxp = np.zeros_like(xp)
    dwt = np.zeros_like(w)
    for i in range(kh):
        for j in range(kw):
            idx = (slice(None), slice(i * dh, i * dh + (oh - 1) * sh + 1, sh),
                   slice(j * dw, j * dw + (ow - 1) * sw + 1, sw), slice(None))
            dwt[i, j] = np.einsum("nhwc,nhwo->co", xp[idx], dy)
            dxp[idx] += dy @ w[i, j].T
    dx = dxp[:, pt: pt + x.shape[1], pl: pl + x.shape[2], :]
    return dx, dwt, dy.sum(axis=(0, 1, 2))


def _windows(h, w, pool, strides, padding):
    (ph, pw), (sh, sw) = pool, strides
    pt, _, oh = conv_output(h, ph, sh, 1, padding)
    pl, _, ow = conv_output(w, pw, sw, 1, padding)
    for oy in range(oh):
        y0, y1 = max(oy * sh - pt, 0), min(oy * sh - pt + ph, h)
        for ox in range(ow):
            x0, x1 = max(ox * sw - pl, 0), min(ox * sw - pl + pw, w)
            yield oy, ox, y0, y1, x0, x1
    return


def pool_output(h, w, pool, strides, padding):
    return (conv_output(h, pool[0], strides[0], 1, padding)[2],
            conv_output(w, pool[1], strides[1], 1, padding)[2])


def max_pool2d(x, pool=(2, 2), strides=None, padding="valid", dtype=np.float64):
    """(y, arg): arg (n, oh, ow, c) = pixel index iy*w + ix of the first maximum."""
    x = np.asarray(x, dtype)
    strides = strides or pool
    n, h, w, c = x.shape
    oh, ow = pool_output(h, w, pool, strides, padding)
    y = np.empty((n, oh, ow, c), dtype)
    arg = np.empty((n, oh, ow, c), np.int64)
    for oy, ox, y0, y1, x0, x1 in _windows(h, w, pool, strides, padding):
        win = x[:, y0:y1, x0:x1, :].reshape(n, -1, c)
        k = win.argmax(axis=1)                       # first maximum in row-major order
        y[:, oy, ox] = np.take_along_axis(win, k[:, None], 1)[:, 0]
        arg[:, oy, ox] = (y0 + k // (x1 - x0)) * w + x0 + k % (x1 - x0)
    return y, arg


def max_pool2d_backward(x_shape, arg, dy, dtype=np.float64):
    n, h, w, c = x_shape
    dx = np.zeros((n, h * w, c), dtype)
    dy = np.asarray(dy, dtype)
    nn, oh, ow, _ = dy.shape
    ii = np.arange(n)[:, None]
    jj = np.arange(c)[None, :]
    for oy in range(oh):
        for ox in range(ow):
            np.add.at(dx, (ii, arg[:, oy, ox], jj), dy[:, oy, ox])
    return dx.reshape(x_shape)


def avg_pool2d(x, pool=(2, 2), strides=None, padding="valid", dtype=np.float64):
    x = np.asarray(x, dtype)
    strides = strides or pool
    n, h, w, c = x.shape
    oh, ow = pool_output(h, w, pool, strides, padding)
    y = np.empty((n, oh, ow, c), dtype)
    for oy, ox, y0, y1, x0, x1 in _windows(h, w, pool, strides, padding):
        y[:, oy, ox] = x[:, y0:y1, x0:x1, :].mean(axis=(1, 2))
    return y


def avg_pool2d_backward(x_shape, dy, pool=(2, 2), strides=None, padding="valid",
                        dtype=np.float64):
    strides = strides or pool
    n, h, w, c = x_shape
    dy = np.asarray(dy, dtype)
    dx = np.zeros(x_shape, dtype)
    for oy, ox, y0, y1, x0, x1 in _windows(h, w, pool, strides, padding):
        dx[:, y0:y1, x0:x1, :] += dy[:, oy, ox][:, None, None, :] / ((y1 - y0) * (x1 - x0))
    return dx


def global_avg_pool2d(x, dtype=np.float64):
    return np.asarray(x, dtype).mean(axis=(1, 2))


def global_avg_pool2d_backward(x_shape, dy, dtype=np.float64):
    n, h, w, c = x_shape
    return np.broadcast_to(np.asarray(dy, dtype)[:, None, None, :] / (h * w), x_shape).copy()


def global_max_pool2d(x, dtype=np.float64):
    """(y (n, c), arg (n, c) = first-maximum pixel index)."""
    x = np.asarray(x, dtype)
    n, h, w, c = x.shape
    flat = x.reshape(n, h * w, c)
    arg = flat.argmax(axis=1)
    return np.take_along_axis(flat, arg[:, None], 1)[:, 0], arg


def global_max_pool2d_backward(x_shape, arg, dy, dtype=np.float64):
    n, h, w, c = x_shape
    dx = np.zeros((n, h * w, c), dtype)
    dx[np.arange(n)[:, None], arg, np.arange(c)[None, :]] = np.asarray(dy, dtype)
    return dx.reshape(x_shape)


def spatial_dropout(x, keep, scale, dtype=np.float64):
    """x (n, ..., c) * keep (n, c) * scale: one keep decision per (sample, channel)."""
    x = np.asarray(x, dtype)
    k = np.asarray(keep, bool).reshape(x.shape[0], *([1] * (x.ndim - 2)), x.shape[-1])
    return np.where(k, x * scale, 0)


# ---------------------------------------------------------------- batch normalisation
def batchnorm_train(x, gamma=None, beta=None, eps=1e-3, dtype=np.float64):
    """(y, mean, var): batch mean and biased variance over every axis but the last."""
    x = np.asarray(x, dtype)
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axis=axes)
    var = ((x - mean) ** 2).mean(axis=axes)
    y = batchnorm_infer(x, mean, var, gamma, beta, eps, dtype)
    return y, mean, var


def batchnorm_infer(x, mean, var, gamma=None, beta=None, eps=1e-3, dtype=np.float64):
    x = np.asarray(x, dtype)
    y = (x - np.asarray(mean, dtype)) / np.sqrt(np.asarray(var, dtype) + eps)
    if gamma is not None:
        y = y * np.asarray(gamma, dtype)
    if beta is not None:
        y = y + np.asarray(beta, dtype)
    return y


def batchnorm_moving_update(moving_mean, moving_var, mean, var, momentum=0.99):
    """Keras 3: moving = moving * momentum + batch * (1 - momentum) (biased batch var)."""
    return (moving_mean * momentum + mean * (1 - momentum),
            moving_var * momentum + var * (1 - momentum))


def batchnorm_backward(x, dy, gamma=None, eps=1e-3, mean=None, var=None, dtype=np.float64):
    """(dx, dgamma, dbeta).  mean/var None: through the batch statistics (training);
    given: statistics held constant (inference mode)."""
    x = np.asarray(x, dtype)
    dy = np.asarray(dy, dtype)
    axes = tuple(range(x.ndim - 1))
    m = int(np.prod([x.shape[a] for a in axes]))
    batch = mean is None
    if batch:
        mean = x.mean(axis=axes)
        var = ((x - mean) ** 2).mean(axis=axes)
    inv = 1.0 / np.sqrt(np.asarray(var, dtype) + eps)
    xhat = (x - mean) * inv
    g = np.ones(x.shape[-1], dtype) if gamma is None else np.asarray(gamma, dtype)
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * xhat).sum(axis=axes)
    if batch:
        dx = g * inv * (dy - (dbeta + xhat * dgamma) / m)
    else:
        dx = g * inv * dy
    return dx, dgamma, dbeta

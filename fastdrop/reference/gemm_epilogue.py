"""NumPy reference of the extended GEMM epilogue (csrc/fastdrop.h, fd_epilogue)."""
import numpy as np


def gemm_epilogue_ext(z, bias=None, relu=False, mask=None, mask_scale=1.0, mask_bit0=0,
                      mask_row_group=0, scale=None, shift=None):
    """(+ bias) (* scale) (+ shift) (relu) (* mask bit ? mask_scale : 0), elementwise in
    float32; the bit of (r, c) is mask_bit0 + R*n + c, R = r // mask_row_group (if > 0)
    else r."""
    z = np.asarray(z, np.float32).copy()
    m, n = z.shape
    if bias is not None:
        z += np.asarray(bias, np.float32)
    if scale is not None:
        z *= np.asarray(scale, np.float32)
    if shift is not None:
        z += np.asarray(shift, np.float32)
    if relu:
        z = np.maximum(z, np.float32(0))
    if mask is not None:
        bits = np.unpackbits(np.asarray(mask, np.uint8), bitorder="little").astype(bool)
        rows = np.arange(m) // mask_row_group if mask_row_group else np.arange(m)
        idx = mask_bit0 + rows[:, None] * n + np.arange(n)[None, :]
        z = np.where(bits[idx], z * np.float32(mask_scale), np.float32(0))
    return z.astype(np.float32)

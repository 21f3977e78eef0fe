"""NumPy reference of the bf16 GEMM (csrc/gemm/bf16.c, fd_gemm_bf16): operands rounded to
bfloat16 (round to nearest even, subnormals flushed to signed zero as vcvtne2ps2bf16 does,
NaN kept quiet), products exact, sums in float64; and the error bound a path with fp32
accumulation must meet."""
import numpy as np

U32 = 2.0 ** -24  # unit roundoff of float32


def bf16_bits(x):
    """float32 -> bf16 bits (uint16)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    exp_zero = (u & 0x7F800000) == 0
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    r = np.where(exp_zero, (u >> 16) & 0x8000, r)
    r = np.where(nan, (u >> 16) | 0x40, r)
    return r.astype(np.uint16)


def bf16_to_f32(bits):
    return (np.asarray(bits, np.uint16).astype(np.uint32) << 16).view(np.float32)


def round_bf16(x):
    """float32 values rounded to bf16 (returned as float32)."""
    return bf16_to_f32(bf16_bits(x))


def gemm_bf16(a, b, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, c=None):
    """(value, bound): alpha·op(bf16(A))·op(bf16(B)) + beta·C in float64, and the bound
    |computed - value| <= bound of any order of fp32 accumulation of the exact products:
    gamma_(k+1)·(|alpha|·|A|·|B| + |beta·C|) + u·|value| (the final rounding to fp32);
    uint16 operands are bf16 bits already."""
    def op(x, t):
        x = np.asarray(x)
        x = bf16_to_f32(x) if x.dtype == np.uint16 else round_bf16(x)
        x = x.astype(np.float64)
        return x.T if t else x
    A, B = op(a, trans_a), op(b, trans_b)
    k = A.shape[1]
    val = alpha * (A @ B)
    mag = abs(alpha) * (np.abs(A) @ np.abs(B))
    if c is not None and beta != 0.0:
        cc = np.asarray(c, np.float64)
        val = val + beta * cc
        mag = mag + abs(beta) * np.abs(cc)
    g = (k + 1) * U32 / (1 - (k + 1) * U32)
    return val, g * mag + U32 * np.abs(val) + 1e-37

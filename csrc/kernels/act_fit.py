"""Fit the polynomial coefficients of csrc/kernels/act_impl.h (run: python act_fit.py;
needs NumPy and SciPy; not part of the build).  Minimax on the relative error by
Lawson's algorithm; coefficients are rounded to float32 one at a time, lowest degree
first, refitting the others after each rounding."""
import numpy as np, scipy.special as sp

def lawson(xs, basis, target, weight, iters=60):
    """minimax of weight * (basis @ c - target) by Lawson's iteratively reweighted
    least squares"""
    A = basis * weight[:, None]
    b = target * weight
    u = np.ones(len(xs)) / len(xs)
    for _ in range(iters):
        sw = np.sqrt(u)
        c, *_ = np.linalg.lstsq(A * sw[:, None], b * sw, rcond=None)
        e = np.abs(A @ c - b)
        u = u * e
        u /= u.sum()
    return c, np.abs(A @ c - b).max()

def quant_fit(xs, deg, target, weight, basisfun):
    B = basisfun(xs, deg)
    fixed = {}
    for k in range(deg+1):
        free = [j for j in range(deg+1) if j not in fixed]
        r = target - sum(fixed[j]*B[:, j] for j in fixed)
        c, err = lawson(xs, B[:, free] * 1.0, r, weight, iters=60)
        fixed[k] = float(np.float32(c[free.index(k)]))
    return [fixed[j] for j in range(deg+1)]
def nodes(lo, hi, n=3000):
    return (np.cos(np.linspace(0, np.pi, n)) * (hi - lo) + (hi + lo)) / 2
V = lambda xs, d: np.vander(xs, d+1, increasing=True)
def show(name, c):
    print(name, ", ".join("%.9ef" % v for v in c))
L = np.log(2)/2
xs = nodes(-L, L); xs = xs[np.abs(xs) > 1e-9]
# exp: e^r = 1 + r + r^2 E(r): target E, weight r^2/e^r (relative)
show("EXP", quant_fit(xs, 4, (np.expm1(xs) - xs)/xs**2, xs**2/np.exp(xs), V))
# log1p core R(z) with z=s^2 in [0,1/9]: 2atanh(s) = 2s + s*R(z), R = z*Q(z); fit Q
zs = nodes(1e-12, 1/9)
s = np.sqrt(zs)
Qt = (2*np.arctanh(s)/s - 2)/zs
show("LOG", quant_fit(zs, 4, Qt, zs/(2*np.arctanh(s)/s), V))
# tanh: tanh(x) = x + x*w*T(w), w in [0, .625^2]
ws = nodes(1e-12, 0.625**2); x = np.sqrt(ws)
show("TANH", quant_fit(ws, 5, (np.tanh(x)/x - 1)/ws, ws/(np.tanh(x)/x), V))
# expm1 on [-ln2, 0]: x + x^2 M(x)
xs = nodes(-np.log(2), -1e-9)
show("EXPM1", quant_fit(xs, 5, (np.expm1(xs)-xs)/xs**2, xs**2/np.abs(np.expm1(xs)), V))
# erfc: P(t) = log(erfcx(y)/t), t = 1/(1+y/2), y in [0, 9.9]
tlo = 1/(1+0.5*9.9)
ts = nodes(tlo, 1)
y = (1/ts - 1)/0.5
show("ERFC", quant_fit(ts, 9, np.log(sp.erfcx(y)) - np.log(ts), np.ones_like(ts), V))

"""NumPy reference of the optimizers: Keras 3's update formulas, written per variable
(a list of arrays, as Keras holds them), in float64.

``step(kind, variables, grads, slots, t, lr, **hp)`` updates ``variables`` and ``slots``
(lists of float64 arrays, modified in place) for iteration ``t`` (1-based, the value of
``iterations`` after the update).  Clipping and weight decay follow Keras's base
optimizer: clip the gradients (``clipnorm`` per variable, ``global_clipnorm`` over all,
``clipvalue`` elementwise), then ``w -= w * weight_decay * lr``, then the update.
"""
import math

import numpy as np


def clip_gradients(grads, clipnorm=None, clipvalue=None, global_clipnorm=None):
    grads = [np.asarray(g, np.float64) for g in grads]
    if clipnorm:
        out = []
        for g in grads:
            norm = math.sqrt(float((g * g).sum()))
            out.append(g * clipnorm / max(norm, clipnorm))
        return out
    if global_clipnorm:
        norm = math.sqrt(sum(float((g * g).sum()) for g in grads))
        scale = global_clipnorm * min(1.0 / norm if norm else math.inf, 1.0 / global_clipnorm)
        return [g * scale for g in grads]
    if clipvalue:
        return [np.clip(g, -clipvalue, clipvalue) for g in grads]
    return grads


def init_slots(kind, variables, momentum=0.0, centered=False, initial_accumulator_value=0.1,
               **_):
    z = [np.zeros_like(np.asarray(v, np.float64)) for v in variables]
    if kind == "sgd":
        return {"velocity": [a.copy() for a in z]}
    if kind in ("adam", "adamw", "nadam"):
        s = {"m": [a.copy() for a in z], "v": [a.copy() for a in z]}
        if kind == "nadam":
            s["u_product"] = 1.0
        return s
    if kind == "rmsprop":
        s = {"velocity": [a.copy() for a in z]}
        if momentum > 0:
            s["momentum"] = [a.copy() for a in z]
        if centered:
            s["average_gradient"] = [a.copy() for a in z]
        return s
    if kind == "adagrad":
        return {"accumulator": [a + initial_accumulator_value for a in z]}
    if kind == "adadelta":
        return {"accumulated_grad": [a.copy() for a in z],
                "accumulated_delta_var": [a.copy() for a in z]}
    raise ValueError(kind)


def step(kind, variables, grads, slots, t, lr, *, weight_decay=0.0, clipnorm=None,
         clipvalue=None, global_clipnorm=None, momentum=0.0, nesterov=False, beta_1=0.9,
         beta_2=0.999, epsilon=1e-7, rho=None, centered=False, **_):
    grads = clip_gradients(grads, clipnorm, clipvalue, global_clipnorm)
    if weight_decay:
        for w in variables:
            w -= w * weight_decay * lr
    if kind == "nadam":
        slots["u_product"] *= beta_1 * (1.0 - 0.5 * 0.96 ** t)
    for i, (w, g) in enumerate(zip(variables, grads)):
        if kind == "sgd":
            if momentum > 0:
                v = slots["velocity"][i]
                v[...] = momentum * v - lr * g
                if nesterov:
                    w += momentum * v - lr * g
                else:
                    w += v
            else:
                w -= lr * g
        elif kind in ("adam", "adamw"):
            m, v = slots["m"][i], slots["v"][i]
            alpha = lr * math.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
            m += (g - m) * (1 - beta_1)
            v += (g * g - v) * (1 - beta_2)
            w -= alpha * m / (np.sqrt(v) + epsilon)
        elif kind == "nadam":
            m, v = slots["m"][i], slots["v"][i]
            u_t = beta_1 * (1.0 - 0.5 * 0.96 ** t)
            u_t1 = beta_1 * (1.0 - 0.5 * 0.96 ** (t + 1))
            up_t = slots["u_product"]
            up_t1 = up_t * u_t1
            m += (g - m) * (1 - beta_1)
            v += (g * g - v) * (1 - beta_2)
            m_hat = u_t1 * m / (1 - up_t1) + (1 - u_t) * g / (1 - up_t)
            v_hat = v / (1 - beta_2 ** t)
            w -= m_hat * lr / (np.sqrt(v_hat) + epsilon)
        elif kind == "rmsprop":
            r = 0.9 if rho is None else rho
            vel = slots["velocity"][i]
            vel[...] = r * vel + (1 - r) * g * g
            if centered:
                a = slots["average_gradient"][i]
                a[...] = r * a + (1 - r) * g
                den = vel - a * a + epsilon
            else:
                den = vel + epsilon
            inc = lr * g / np.sqrt(den)
            if momentum > 0:
                mo = slots["momentum"][i]
                mo[...] = momentum * mo + inc
                w -= mo
            else:
                w -= inc
        elif kind == "adagrad":
            acc = slots["accumulator"][i]
            acc += g * g
            w -= lr * g / np.sqrt(acc + epsilon)
        elif kind == "adadelta":
            r = 0.95 if rho is None else rho
            ag, ad = slots["accumulated_grad"][i], slots["accumulated_delta_var"][i]
            ag[...] = r * ag + (1 - r) * g * g
            d = -(np.sqrt(ad + epsilon) * g) / np.sqrt(ag + epsilon)
            ad[...] = r * ad + (1 - r) * d * d
            w += lr * d
        else:
            raise ValueError(kind)


# ----------------------------------------------------------------- schedules
def exponential_decay(step, initial_learning_rate, decay_steps, decay_rate, staircase=False):
    p = step / decay_steps
    if staircase:
        p = np.floor(p)
    return initial_learning_rate * decay_rate ** p


def cosine_decay(step, initial_learning_rate, decay_steps, alpha=0.0, warmup_target=None,
                 warmup_steps=0):
    def decay(s, frm):
        return frm * ((1 - alpha) * 0.5 * (1 + np.cos(np.pi * s / decay_steps)) + alpha)
    if warmup_target is None:
        return decay(min(step, decay_steps), initial_learning_rate)
    s = min(step, decay_steps + warmup_steps)
    if s < warmup_steps:
        return initial_learning_rate + (warmup_target - initial_learning_rate) * s / warmup_steps
    return decay(s - warmup_steps, warmup_target)


def piecewise_constant(step, boundaries, values):
    idx = int(np.searchsorted(np.asarray(boundaries, np.float64), step, side="left"))
    return values[idx]

"""Learning-rate schedules (Keras 3 names, arguments and formulas).

A schedule is a callable ``schedule(step) -> learning rate``.  Pass one as an optimizer's
``learning_rate``: the optimizer evaluates it at its ``iterations`` count (the number of
updates done so far) before each update, as Keras does::

    from fastdrop.optimizers import SGD
    from fastdrop.schedules import ExponentialDecay
    opt = SGD(learning_rate=ExponentialDecay(0.1, decay_steps=1000, decay_rate=0.96))

An optimizer built on a schedule has no settable learning rate: the callbacks
``LearningRateScheduler`` and ``ReduceLROnPlateau`` refuse it (as in Keras).
``serialize`` / ``deserialize`` turn a schedule into a JSON-able dict and back (saved
models store it this way).
"""
import math
import numbers

__all__ = ["LearningRateSchedule", "ExponentialDecay", "CosineDecay",
           "PiecewiseConstantDecay", "serialize", "deserialize", "get"]


def _num(v, name, minimum=None, strict=False, allow_none=False):
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    v = float(v)
    if minimum is not None and (v < minimum or (strict and v == minimum)):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {v!r}")
    return v


def _step(step):
    if isinstance(step, bool) or not isinstance(step, numbers.Real) or not math.isfinite(step):
        raise ValueError(f"step must be a finite number, got {step!r}")
    return float(step)


class LearningRateSchedule:
    """Base class: subclasses define ``__call__(step)`` and ``get_config()``; the config
    must round-trip through ``cls(**config)``."""

    def __call__(self, step):
        raise NotImplementedError

    def get_config(self):
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    __hash__ = object.__hash__


class ExponentialDecay(LearningRateSchedule):
    """``initial_learning_rate * decay_rate ** (step / decay_steps)``; with
    ``staircase=True`` the exponent is ``floor(step / decay_steps)``."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False,
                 name="ExponentialDecay"):
        self.initial_learning_rate = _num(initial_learning_rate, "initial_learning_rate", 0.0)
        self.decay_steps = _num(decay_steps, "decay_steps", 0.0, strict=True)
        self.decay_rate = _num(decay_rate, "decay_rate", 0.0)
        self.staircase = bool(staircase)
        self.name = str(name)

    def __call__(self, step):
        p = _step(step) / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate * self.decay_rate ** p

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "decay_rate": self.decay_rate,
                "staircase": self.staircase, "name": self.name}


class CosineDecay(LearningRateSchedule):
    """Cosine decay (Loshchilov & Hutter) with an optional linear warmup, Keras 3 form.

    Without ``warmup_target``: ``lr(step) = initial * ((1-alpha) * c + alpha)`` with
    ``c = 0.5 * (1 + cos(pi * min(step, decay_steps) / decay_steps))``.  With
    ``warmup_target``: a linear ramp from ``initial_learning_rate`` to ``warmup_target``
    over ``warmup_steps`` steps, then the cosine decay from ``warmup_target`` over
    ``decay_steps`` steps."""

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, name="CosineDecay",
                 warmup_target=None, warmup_steps=0):
        self.initial_learning_rate = _num(initial_learning_rate, "initial_learning_rate", 0.0)
        self.decay_steps = _num(decay_steps, "decay_steps", 0.0, strict=True)
        self.alpha = _num(alpha, "alpha", 0.0)
        if self.alpha > 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        self.name = str(name)
        self.warmup_target = _num(warmup_target, "warmup_target", 0.0, allow_none=True)
        self.warmup_steps = _num(warmup_steps, "warmup_steps", 0.0)

    def _decay(self, step, decay_from):
        c = 0.5 * (1.0 + math.cos(math.pi * (step / self.decay_steps)))
        return decay_from * ((1.0 - self.alpha) * c + self.alpha)

    def __call__(self, step):
        step = _step(step)
        if self.warmup_target is None:
            return self._decay(min(step, self.decay_steps), self.initial_learning_rate)
        step = min(step, self.decay_steps + self.warmup_steps)
        if step < self.warmup_steps:
            frac = step / self.warmup_steps
            return ((self.warmup_target - self.initial_learning_rate) * frac
                    + self.initial_learning_rate)
        return self._decay(step - self.warmup_steps, self.warmup_target)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "alpha": self.alpha, "name": self.name,
                "warmup_target": self.warmup_target, "warmup_steps": self.warmup_steps}


class PiecewiseConstantDecay(LearningRateSchedule):
    """``values[0]`` while ``step <= boundaries[0]``, ``values[i]`` while
    ``boundaries[i-1] < step <= boundaries[i]``, ``values[-1]`` after the last boundary.
    ``boundaries`` must be increasing and one shorter than ``values``."""

    def __init__(self, boundaries, values, name="PiecewiseConstant"):
        try:
            boundaries = list(boundaries)
            values = list(values)
        except TypeError:
            raise ValueError("boundaries and values must be sequences of numbers") from None
        if len(boundaries) != len(values) - 1:
            raise ValueError(
                f"the length of boundaries should be 1 less than the length of values; "
                f"got boundaries={boundaries} of length {len(boundaries)} and "
                f"values={values} of length {len(values)}")
        self.boundaries = [_num(b, f"boundaries[{i}]") for i, b in enumerate(boundaries)]
        self.values = [_num(v, f"values[{i}]", 0.0) for i, v in enumerate(values)]
        if any(b1 <= b0 for b0, b1 in zip(self.boundaries, self.boundaries[1:])):
            raise ValueError(f"boundaries must be strictly increasing, got {boundaries}")
        self.name = str(name)

    def __call__(self, step):
        step = _step(step)
        for b, v in zip(self.boundaries, self.values):
            if step <= b:
                return v
        return self.values[-1]

    def get_config(self):
        return {"boundaries": list(self.boundaries), "values": list(self.values),
                "name": self.name}


_BY_NAME = {c.__name__: c for c in (ExponentialDecay, CosineDecay, PiecewiseConstantDecay)}


def serialize(schedule):
    """``{'class_name': ..., 'config': {...}}`` (Keras's layout)."""
    if not isinstance(schedule, LearningRateSchedule):
        raise ValueError(f"expected a LearningRateSchedule, got {schedule!r}")
    name = type(schedule).__name__
    if _BY_NAME.get(name) is not type(schedule):
        raise ValueError(f"cannot serialize the schedule class {name!r}: only "
                         f"{sorted(_BY_NAME)} are known to fastdrop's saving")
    return {"class_name": name, "config": schedule.get_config()}


def deserialize(config):
    """The schedule from ``serialize``'s dict."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"expected a dict with 'class_name' and 'config', got {config!r}")
    cls = _BY_NAME.get(config["class_name"])
    if cls is None:
        raise ValueError(f"unknown learning-rate schedule {config['class_name']!r}; known: "
                         f"{sorted(_BY_NAME)}")
    cfg = config.get("config") or {}
    if not isinstance(cfg, dict):
        raise ValueError(f"schedule config must be a dict, got {cfg!r}")
    try:
        return cls.from_config(dict(cfg))
    except TypeError as e:
        raise ValueError(f"bad {cls.__name__} config {cfg!r}: {e}") from None


def get(obj):
    """A schedule from an instance or from ``serialize``'s dict."""
    if isinstance(obj, LearningRateSchedule):
        return obj
    return deserialize(obj)

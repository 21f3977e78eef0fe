"""Activation registry: name -> forward/backward kernels on flat float32 arrays.

``forward(x, out)``; ``backward(grad, z, y, out)`` computes ``out = grad * f'(z)``
from the pre-activation ``z`` or the output ``y`` — ``needs`` says which one the stage
must keep ('y' lets the output buffer serve, 'z' needs the pre-activation too).
'softmax' and 'sigmoid' as the last activation are fused with their cross-entropy loss
(the model strips them into the loss head); elsewhere softmax is not supported.
"""
from .. import _core


class Act:
    __slots__ = ("name", "forward", "backward", "needs")

    def __init__(self, name, forward, backward, needs):
        self.name = name
        self.forward = forward
        self.backward = backward
        self.needs = needs


_REGISTRY = {}
HEADS = ("softmax", "sigmoid")


def register(name, forward, backward, needs):
    _REGISTRY[name] = Act(name, forward, backward, needs)


def get(name):
    return _REGISTRY.get(name)


def names():
    return tuple(sorted(set(_REGISTRY) | {"linear", "softmax"}))


register("relu", _core.relu, lambda g, z, y, out: _core.relu_backward(g, y, out), "y")
register("selu", _core.selu, lambda g, z, y, out: _core.selu_backward(g, y, out), "y")


def _register_family():
    """Activations of the activation-kernel family (fastdrop/_core_act.pxi), if built."""
    fwd = getattr(_core, "act_forward", None)
    bwd = getattr(_core, "act_backward", None)
    needs = getattr(_core, "ACT_NEEDS", None)
    if fwd is None or bwd is None or needs is None:
        return
    for name, need in needs.items():
        if name in ("relu", "selu", "linear", "softmax"):
            continue
        register(name, (lambda n: lambda x, out: fwd(n, x, out))(name),
                 (lambda n: lambda g, z, y, out: bwd(n, g, z, y, out))(name), need)


_register_family()

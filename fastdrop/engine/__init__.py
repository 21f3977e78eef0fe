"""fastdrop's execution engine: layers -> plan -> stages.

* ``context``: modes (TRAIN, INFER, MC) and the per-call ``Context`` (noise keys).
* ``stage``: the ``Stage`` contract (bind / buffers / forward / backward).
* ``plan``: fusion rules that turn layers into stages.
* ``arena``: one allocation for every stage's buffers at a batch capacity.
* ``activations``: every Keras activation (with its arguments) as an ``Act`` on the last
  axis of any rank (element-wise on the flat buffer, row-wise on the (rows, last axis)
  view); stages call ``act.forward`` / ``act.backward`` after their GEMM.
* ``stages``: the stages, one module per layer family, each with its fusion rules
  (rules match a layer's declared ``kind``; the engine never imports a layer class).

How to add a layer
------------------
1. A class in ``fastdrop/layers/`` deriving ``fastdrop.layers.base.Layer``: its
   constructor validates the Keras arguments; ``create_variables(input_shape)`` declares
   variables with ``self.add_weight(name, shape, initializer, trainable=True,
   regularizer=None, constraint=None)`` (state variables: ``trainable=False, state=True``);
   ``compute_output_shape(input_shape)`` on per-sample shapes; ``get_config()``;
   ``noisy = True`` if it draws noise; ``make_stage()`` returns its stage.
2. A ``Stage`` subclass in ``fastdrop/engine/stages/<family>.py`` (``fastdrop/engine/stage.py``
   documents the contract) calling the C kernels through ``fastdrop._core``; noise through
   ``ctx.mask(...)``.
3. Optionally a fusion rule (``@fusion_rule``) beside it, matching layers by ``kind``.
4. Its kernels in ``csrc/``, bindings in ``fastdrop/_core_<family>.pxi``, a NumPy
   reference in ``fastdrop/reference/`` and tests against that reference.
Register the class in ``fastdrop/layers/__init__.py`` (``register_layer``, for loading).
``Sequential`` is never edited.
"""
from .context import INFER, MC, MODES, TRAIN, Context
from .stage import IdentityStage, Stage
from .plan import fusion_rule, make_plan
from .arena import Arena
from . import stages  # noqa: F401,E402  (registers every family's fusion rules)

__all__ = ["TRAIN", "INFER", "MC", "MODES", "Context", "Stage", "IdentityStage",
           "fusion_rule", "make_plan", "Arena"]

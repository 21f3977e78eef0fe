"""Benchmark cases, one module per family.  Each module has

* case functions returning ``{side: callable}`` on given inputs (``"fastdrop"`` and the
  baselines: ``"numpy"``, ``"reference"``, ``"memcpy"``, ``"torch"``, ...), used both by
  ``python -m fastdrop bench`` (timed by ``harness.measure``) and by the pytest-benchmark
  files under ``bench/`` (timed by ``benchmark(...)``);
* ``bench(ctx)``: the family's section of the ``bench`` report (rows of figures), taking
  the sizes from ``ctx.cfg`` (``runner.config`` / ``runner.tiny_config``).

Shared by several families: ``common`` (a model's fit epoch beside PyTorch's, a layer's
stage bound outside a model).
"""
FAMILIES = ("gemm", "dropout", "activations", "losses", "optim", "mlp", "cnn", "rnn",
            "bf16")

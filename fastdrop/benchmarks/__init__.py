"""fastdrop's benchmarks: one code path for ``python -m fastdrop bench`` and the
pytest-benchmark suites under ``bench/``.

* ``cases/`` — one module per family (gemm, dropout, activations, losses, optim, mlp,
  cnn, rnn, bf16): case functions returning ``{side: callable}`` on given inputs, and the
  family's ``bench(ctx)`` section of the report;
* ``peers`` — the baselines (NumPy, PyTorch, onnxruntime, Keras), imported only when a
  case uses them;
* ``harness`` — ``measure`` (interleaved short samples), ``Case``, the run ``Context``
  (thread counts on every side), machine helpers;
* ``runner`` — the plans (``config``, ``tiny_config``), ``run`` and ``main`` (the CLI
  entry point, with the OpenBLAS-environment re-execution);
* ``report`` (text table, JSON, plots) and ``targets`` (the goals, as ratios).
"""
from .runner import config, main, run, tiny_config  # noqa: F401

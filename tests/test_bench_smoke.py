"""Smoke test of ``python -m fastdrop bench`` (fastdrop.benchmarks.runner) with a seconds-long plan of
tiny sizes: the report prints, the JSON file is valid and complete, plots are written
(or skipped with a notice without matplotlib).  No timing assertions: performance is
tracked by the benchmarks, not by tests."""
import argparse
import json
import math
import os
import types

import pytest

from fastdrop.benchmarks import harness, report, runner
from fastdrop import cli

SECTIONS = {"gemm", "dropout", "relu", "softmax_cross_entropy", "adam", "train",
            "thread_scaling", "predict", "targets"}


def _positive(v):
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def _check(data):
    assert data["schema"] == 1
    assert set(data) >= {"machine", "settings", "results", "elapsed_s"}
    m = data["machine"]
    assert set(m) >= {"cpu", "cores", "fastdrop", "numpy", "date", "blas", "openblas_env",
                      "python"}
    assert set(m["fastdrop"]) >= {"isa", "threads", "openmp", "version"}
    res = data["results"]
    assert set(res) >= SECTIONS
    for r in res["gemm"]:
        assert _positive(r["fastdrop_gflops"]) and _positive(r["numpy_gflops"])
        assert r["ratio"] == pytest.approx(r["fastdrop_gflops"] / r["numpy_gflops"])
    kernels = {r["kernel"] for r in res["dropout"]}
    assert kernels == {"dropout_forward", "dropout_backward"}
    for r in res["dropout"]:
        for k in ("fastdrop_gbs", "fastdrop_1t_gbs", "memcpy_gbs", "reference_gbs"):
            assert _positive(r[k]), k
        assert "torch_gbs" in r and "vs_memcpy" in r and "vs_reference" in r
    assert {r["kernel"] for r in res["relu"]} == {"relu", "relu_backward"}
    for r in res["softmax_cross_entropy"] + res["adam"]:
        assert _positive(r["ratio"])
    threads = {r["threads"] for r in res["train"]}
    assert threads == set(data["settings"]["train_threads"])
    for r in res["train"]:
        assert _positive(r["fastdrop_sps"]) and _positive(r["reference_sps"])
        assert "torch_sps" in r
    if len(threads) > 1:
        assert res["thread_scaling"] and _positive(res["thread_scaling"][0]["fastdrop_scaling"])
    assert res["predict"] and _positive(res["predict"][0]["fastdrop_us"])
    for t in res["targets"]:
        assert set(t) >= {"target", "value", "goal", "met"}


def test_bench_main_tiny(tmp_path, capsys):
    path = tmp_path / "out" / "bench.json"
    plots = tmp_path / "plots"
    args = argparse.Namespace(json=str(path), plots=str(plots), threads=0, quick=True)
    assert runner.main(args, cfg=runner.tiny_config()) == 0
    out = capsys.readouterr()
    data = json.loads(path.read_text())
    _check(data)
    assert "GEMM" in out.out and "× numpy" in out.out and "Targets" in out.out
    assert "samples/s" in out.out and "memcpy" in out.out
    assert "bf16 mixed precision" in out.out and data["results"]["bf16"]["train"]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib" in out.err
    else:
        pngs = sorted(os.listdir(plots))
        assert "gemm.png" in pngs and "dropout.png" in pngs and "train_threads.png" in pngs
        assert all((plots / p).stat().st_size > 0 for p in pngs)


def test_cli_bench_subcommand(tmp_path, monkeypatch, capsys):
    """``python -m fastdrop bench --quick --json PATH`` through the real argument parser,
    with the tiny plan (and no re-exec, whatever the environment)."""
    monkeypatch.setattr(runner, "config", lambda quick=False, threads=0, torch=True:
                        dict(runner.tiny_config(), quick=quick))
    monkeypatch.setenv(runner._CHILD_ENV, "{}")
    path = tmp_path / "b.json"
    assert cli.main(["bench", "--quick", "--json", str(path), "--plots", ""]) == 0
    _check(json.loads(path.read_text()))
    assert "figures saved to" in capsys.readouterr().out


def test_reexec_drops_openblas_env():
    calls = []

    def fake_run(argv, env):
        calls.append((argv, env))
        return types.SimpleNamespace(returncode=0)

    args = argparse.Namespace(json="x.json", plots="p", threads=2, quick=True)
    environ = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1048576", "KEEP": "1"}
    assert runner._reexec_without_openblas_env(args, environ, fake_run) == 0
    argv, env = calls[0]
    assert argv[1:4] == ["-m", "fastdrop", "bench"]
    assert {"--quick", "--json", "x.json", "--plots", "p", "--threads", "2"} <= set(argv)
    assert "OPENBLAS_CORETYPE" not in env and "OPENBLAS_L2_SIZE" not in env
    assert env["KEEP"] == "1"
    assert json.loads(env[runner._CHILD_ENV]) == {"OPENBLAS_CORETYPE": "Haswell",
                                                  "OPENBLAS_L2_SIZE": "1048576"}


def test_measure_and_format_helpers():
    r = harness.measure({"a": lambda: None, "b": harness.Case(lambda: sum(range(10))),
                        "skip": None}, budget=0.001, sample_s=0.0005, min_samples=2)
    assert set(r) == {"a", "b"}
    assert all(v["samples"] >= 2 and 0 < v["best"] <= v["median"] for v in r.values())
    assert report._x(1.0712, "numpy") == "1.07× numpy"
    assert report._x(None) == "—"

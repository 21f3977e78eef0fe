"""fastdrop.distributed: data-parallel training over MPI.

The MPI tests launch real ``mpiexec -n 2`` jobs (loopback) on the scripts in
tests/mpi_scripts and compare against one process running the same script; they are
skipped when mpi4py or an mpiexec is missing (``pip install mpi4py mpich``).  The oracle
is one process: weights equal up to the summation order of the gradients (relative to each
tensor's largest value), bitwise equal between two runs on 2 ranks.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastdrop
from fastdrop.engine import TRAIN, Context

FD_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastdrop.__file__)))
SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mpi_scripts")


def _mpiexec():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    from fastdrop.distributed.launch import find_mpiexec
    return find_mpiexec()


MPIEXEC = _mpiexec()
needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason="needs mpi4py and an mpiexec "
                                                       "(pip install mpi4py mpich)")


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([FD_ROOT] + ([env["PYTHONPATH"]]
                                                     if env.get("PYTHONPATH") else []))
    env.pop("FASTDROP_DISTRIBUTED_DEBUG", None)
    env.update(extra)
    return env


def _run(args, cwd, ranks=None, timeout=120, **env):
    cmd = ([MPIEXEC, "-n", str(ranks)] if ranks else []) + [sys.executable] + args
    return subprocess.run(cmd, cwd=cwd, env=_env(**env), capture_output=True, text=True,
                          timeout=timeout)


def _ok(p):
    assert p.returncode == 0, f"rc={p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / max(np.abs(a).max(), 1e-30)


# ------------------------------------------------------------- without MPI
def test_train_row_offset_draws_the_rows_of_one_process():
    """A TRAIN call on rows [a, b) of a global batch with offset=a draws the masks and
    computes the outputs that one call on the whole batch gives those rows."""
    from fastdrop.layers import (LSTM, Conv2D, Dense, Dropout, Flatten, GaussianDropout,
                                 Input, SpatialDropout2D)
    from fastdrop.models import Sequential
    cases = [
        ([Input((12,)), Dropout(0.3), Dense(16, activation="relu"), Dropout(0.5),
          GaussianDropout(0.4), Dense(3)], (12,)),
        ([Input((6, 6, 2)), Conv2D(4, 3, activation="relu"), SpatialDropout2D(0.3),
          Dropout(0.2), Flatten(), Dense(3)], (6, 6, 2)),
        ([Input((5, 4)), LSTM(6, dropout=0.3, recurrent_dropout=0.3), Dense(3)], (5, 4)),
    ]
    rng = np.random.default_rng(0)
    for layers, shape in cases:
        model = Sequential(layers, seed=11)
        x = rng.standard_normal((13,) + shape).astype(np.float32)
        model._ensure(shape, 13)
        full = np.array(model._forward(Context(TRAIN, 13, step=5, seed=model.seed), x))
        masks = {}
        for s in model._stages:
            masks.update({k: v.copy() for k, v in s.noise_masks(13).items()})
        for a, b in ((0, 7), (7, 13), (3, 4)):
            part = model._forward(Context(TRAIN, b - a, step=5, seed=model.seed, offset=a),
                                  np.ascontiguousarray(x[a:b]))
            np.testing.assert_allclose(part, full[a:b], rtol=1e-5, atol=1e-6)
            for s in model._stages:
                for k, v in s.noise_masks(b - a).items():
                    np.testing.assert_array_equal(v, masks[k][a:b], err_msg=k)


def test_bad_arguments_raise_clear_errors(monkeypatch):
    import fastdrop.distributed as dist
    with pytest.raises(ValueError, match="compression"):
        dist.DataParallel(compression="int8")
    with pytest.raises(NotImplementedError, match="SyncBatchNorm"):
        dist.DataParallel(batchnorm="global")
    with pytest.raises(ValueError, match="batchnorm"):
        dist.DataParallel(batchnorm="batch")
    with pytest.raises(ValueError, match="timeout"):
        dist.DataParallel(timeout=-1)
    with pytest.raises(TypeError, match="DataParallel"):
        dist.set_distribution("dp")
    with pytest.raises(ValueError, match="overlap"):
        dist.DataParallel(overlap=True, compression="fp16")
    with pytest.raises(TypeError, match="overlap"):
        dist.DataParallel(overlap="yes")
    with pytest.raises(ValueError, match="num_threads"):
        dist._threads_for(1, 0)
    monkeypatch.setenv("FASTDROP_THREADS_PER_RANK", "many")
    with pytest.raises(ValueError, match="FASTDROP_THREADS_PER_RANK"):
        dist._threads_for(1, None)
    monkeypatch.setenv("FASTDROP_THREADS_PER_RANK", "3")
    assert dist._threads_for(2, None) == 3
    assert dist._threads_for(2, 1) == 1
    monkeypatch.setenv("FASTDROP_MPI_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="FASTDROP_MPI_TIMEOUT"):
        dist.DataParallel()
    # without mpi4py: an ImportError that names the extra
    from fastdrop.distributed import _comm
    monkeypatch.setattr(_comm, "_MPI", None)
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ImportError, match=r"fastdrop-engine\[mpi\]"):
        _comm.mpi()


def test_split_counts_as_even_as_possible():
    from fastdrop.distributed._comm import split_counts
    c, s = split_counts(10, 4)
    assert c.tolist() == [3, 3, 2, 2] and s.tolist() == [0, 3, 6, 8]
    c, s = split_counts(1, 2)
    assert c.tolist() == [1, 0] and s.tolist() == [0, 1]


def test_bf16_compression_rounds_to_nearest_even():
    from fastdrop.distributed._comm import compress, decompress
    x = np.array([1.0, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, -3.14159, 1e-30, np.inf, np.nan],
                 np.float32)
    w = np.empty(x.size, np.uint16)
    compress(x, w, "bf16")
    out = np.empty(x.size, np.float32)
    decompress(w, out, "bf16")
    assert out[0] == 1.0 and out[1] == 1.0 and out[2] == 1.0 + 4 * 2 ** -8   # ties to even
    assert abs(out[3] + 3.14159) < 2 ** -7 * 4 and np.isinf(out[5]) and np.isnan(out[6])


def test_fp16_scale_keeps_small_gradients():
    """Gradients far below fp16's normal range survive the scaled fp16 round trip."""
    from fastdrop.distributed._comm import compress, decompress, pow2_scale
    g = (np.random.default_rng(0).standard_normal(1000) * 1e-7).astype(np.float32)
    s = pow2_scale(g)
    assert 2 ** 14 <= np.abs(g).max() * s < 2 ** 15 and np.log2(s) == int(np.log2(s))
    w = np.empty(g.size, np.float16)
    compress(g * np.float32(s), w, "fp16")
    back = np.empty(g.size, np.float32)
    decompress(w, back, "fp16")
    back /= np.float32(s)
    assert np.abs(back - g).max() <= 2 ** -10 * np.abs(g).max()
    assert pow2_scale(np.zeros(3, np.float32)) == 1.0
    assert pow2_scale(np.array([np.inf], np.float32)) == 1.0


# ---------------------------------------------------------------- with MPI
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process, and two 2-rank runs of the same training script."""
    d = tmp_path_factory.mktemp("dist")
    script = os.path.join(SCRIPTS, "train_compare.py")
    out = {}
    p = _run([script, str(d / "single.npz")], d)
    _ok(p)
    out["single"] = np.load(d / "single.npz")
    (d / "files").mkdir()
    for name, extra in (("dp", ["--files", str(d / "files")]), ("dp2", [])):
        p = _run([script, str(d / f"{name}.npz"), "--dp"] + extra, d, ranks=2)
        _ok(p)
        out[name] = np.load(d / f"{name}.npz")
    out["dir"] = d
    return out


@needs_mpi
def test_two_ranks_equal_one_process(runs):
    """MLP (one L2-regularised kernel, class weights), CNN (unshuffled), LSTM with
    dropout, and per-step tagging after Embedding(mask_zero=True) (the loss's total/valid
    scale over the global batch, whose shares hold different numbers of valid steps; fit
    on arrays and on a PyDataset), SGD + momentum, 2 epochs, global batch 25 of 90
    samples (shares 13 + 12, last batch 15: 8 + 7): weights, History, evaluate, predict and
    MC predict equal one process up to the summation order."""
    single, dp = runs["single"], runs["dp"]
    assert sorted(single.files) == sorted(dp.files)
    for k in single.files:
        if "/hist/" in k and "accuracy" in k:
            np.testing.assert_array_equal(dp[k], single[k], err_msg=k)
        else:
            assert _rel(single[k], dp[k]) < 1e-6, (k, _rel(single[k], dp[k]))


@needs_mpi
def test_two_rank_runs_are_bitwise_equal(runs):
    for k in runs["dp"].files:
        np.testing.assert_array_equal(runs["dp"][k], runs["dp2"][k], err_msg=k)


@needs_mpi
def test_rank0_alone_writes_and_checkpoints_load(runs):
    d = runs["dir"]
    with open(d / "writes.json") as f:
        writes = json.load(f)
    assert writes[1] == [], writes            # rank 1 opened nothing for writing
    assert {"mlp-log.csv", "cnn-log.csv", "lstm-log.csv"} <= set(writes[0])
    from fastdrop.models import load_model
    for kind in ("mlp", "cnn", "lstm"):
        m = load_model(str(d / "files" / f"{kind}-ckpt.fdm"))
        for i, w in enumerate(m.get_weights()):
            np.testing.assert_array_equal(w, runs["dp"][f"{kind}/{i}"])
        with open(d / "files" / f"{kind}-log.csv") as f:
            rows = f.read().splitlines()
        assert len(rows) == 3 and rows[0].startswith("epoch,accuracy,loss")


@needs_mpi
def test_overlapped_iallreduce_equals_the_ordered_reduction(runs, tmp_path):
    """overlap=True (a non-blocking Iallreduce per stage during backward; the regularised
    stage reduced at the end): with 2 ranks the same bits as the ordered reduction."""
    script = os.path.join(SCRIPTS, "train_compare.py")
    _ok(_run([script, str(tmp_path / "o.npz"), "--dp", "--overlap"], tmp_path, ranks=2))
    o = np.load(tmp_path / "o.npz")
    for k in runs["dp"].files:
        np.testing.assert_array_equal(o[k], runs["dp"][k], err_msg=k)


@needs_mpi
def test_batchnorm_per_rank_keeps_ranks_identical(tmp_path):
    """BatchNorm on each rank's share; moving statistics averaged after every step: the
    checksum finds the ranks identical every epoch, and two runs give the same bits.
    The saved model, read back with distributed.load_model, has the trained weights on
    every rank; a missing file raises on every rank."""
    script = os.path.join(SCRIPTS, "batchnorm.py")
    for name in ("a", "b"):
        p = _run([script, str(tmp_path / f"{name}.npz")], tmp_path, ranks=2)
        _ok(p)
        assert "ok" in p.stdout
        assert "rank 0 load error" in p.stdout and "rank 1 load error" in p.stdout
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k])


@needs_mpi
def test_global_batch_smaller_than_ranks(tmp_path):
    """batch_size=1 on 2 ranks: rank 1 has no rows in any step; still one process's
    weights."""
    script = os.path.join(SCRIPTS, "train_compare.py")
    args = ["--batch", "1", "--lr", "0.005", "--kinds", "mlp", "seq"]
    _ok(_run([script, str(tmp_path / "a.npz")] + args, tmp_path))
    _ok(_run([script, str(tmp_path / "b.npz"), "--dp"] + args, tmp_path, ranks=2))
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    for k in a.files:
        assert _rel(a[k], b[k]) < 1e-6, k


@needs_mpi
@pytest.mark.parametrize("compression", ["fp16", "bf16"])
def test_compressed_gradients_keep_ranks_identical(runs, tmp_path, compression):
    """16-bit gradients: the debug checksum (every epoch) finds the ranks identical; the
    weights stay near one process's."""
    script = os.path.join(SCRIPTS, "train_compare.py")
    _ok(_run([script, str(tmp_path / "c.npz"), "--dp", "--compression", compression,
              "--kinds", "mlp"], tmp_path, ranks=2))
    c = np.load(tmp_path / "c.npz")
    single = runs["single"]
    worst = max(_rel(single[k], c[k]) for k in c.files if "/hist/" not in k)
    assert 0 < worst < 0.05, worst


@needs_mpi
@pytest.mark.parametrize("mode", ["raise", "kill", "hang"])
def test_a_failing_rank_ends_the_job(tmp_path, mode):
    """Rank 1 raises, is killed, or hangs in epoch 2: the job ends with a non-zero status
    within the timeout (no hang), and rank 0's epoch-1 checkpoint loads."""
    p = _run([os.path.join(SCRIPTS, "faults.py"), mode, str(tmp_path)], tmp_path, ranks=2,
             timeout=60, FASTDROP_MPI_TIMEOUT="3")
    assert p.returncode != 0, p.stdout + p.stderr
    assert "finished" not in p.stdout
    if mode != "kill":
        assert "aborting the MPI job" in p.stderr, (p.returncode, p.stdout, p.stderr)
    from fastdrop.models import load_model
    m = load_model(str(tmp_path / "ckpt.fdm"))
    assert m._step == 4                      # the checkpoint of epoch 1 (4 steps)


@needs_mpi
def test_mismatched_data_is_detected_on_every_rank(tmp_path):
    p = _run([os.path.join(SCRIPTS, "faults.py"), "mismatch", str(tmp_path)], tmp_path,
             ranks=2, timeout=60)
    _ok(p)
    for r in (0, 1):
        assert f"rank {r}: ValueError: fastdrop.distributed: the ranks disagree" in p.stdout
    assert "training samples (rank 0: 80, rank 1: 64)" in p.stdout


@needs_mpi
def test_cli_train_ranks(tmp_path):
    p = _run(["-m", "fastdrop", "train", "--ranks", "2", "--subset", "small", "--epochs",
              "1", "--layers", "32", "--threads", "1", "--verbose", "0", "--save",
              str(tmp_path / "m.fdm")], tmp_path, timeout=120)
    _ok(p)
    assert p.stdout.count("test accuracy:") == 1          # rank 0 alone prints
    assert "data-parallel on 2 ranks x 1 threads" in p.stdout
    from fastdrop.models import load_model
    assert load_model(str(tmp_path / "m.fdm"))._step == 56


def test_cli_ranks_bad_value(tmp_path):
    p = _run(["-m", "fastdrop", "train", "--ranks", "0"], tmp_path, timeout=60)
    assert p.returncode == 2 and "--ranks" in p.stderr

"""The command line: bad arguments are argparse errors (exit status 2, no traceback),
--version, --help with defaults, the program name as invoked, the data header, and a
failed download as a one-line error that leaves no empty cache folder."""
import os
import subprocess
import sys
import urllib.error

import pytest

import fastdrop
from fastdrop import cli
from fastdrop import datasets as ds
from helpers import needs_source_tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastdrop.__file__)))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the checkout
PKG = os.path.dirname(os.path.abspath(fastdrop.__file__))            # maybe installed


def run(*args, cwd, code=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "fastdrop", *args] if code is None else \
        [sys.executable, "-c", code, *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


BAD = [
    (["train", "--batch-size", "0"], "--batch-size"),
    (["train", "--batch-size", "x"], "--batch-size"),
    (["train", "--lr", "-1"], "--lr"),
    (["train", "--lr", "nan"], "--lr"),
    (["train", "--lr", "0"], "--lr"),
    (["train", "--epochs", "-1"], "--epochs"),
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--dropout", "1.5"], "--dropout"),
    (["train", "--dropout", "0.2,abc"], "--dropout"),
    (["train", "--input-dropout", "1"], "--input-dropout"),
    (["train", "--layers", "0,5"], "layer sizes must be positive"),
    (["train", "--threads", "-1"], "--threads"),
    (["train", "--seed", "-3"], "--seed"),
    (["train", "--verbose", "5"], "--verbose"),
    (["train", "--model", "transformer"], "--model"),
    (["train", "--model", "cnn", "--layers", "64"], "only applies to --model mlp"),
    (["train", "--model", "lstm", "--dropout", "0.2"], "does not apply to --model lstm"),
    (["train", "--model", "cnn", "--dropout", "0.2,0.3"], "one rate"),
    (["train", "--layers", "64,64", "--dropout", "0.1,0.2,0.3"], "needs 1 or 2 rates"),
    (["train", "--save", "/nonexistent-dir/m.fdm"], "--save"),
    (["train", "--bogus"], "unrecognized arguments"),
    (["bench", "--threads", "-2"], "--threads"),
    (["tune", "--lr", "-1"], "--lr"),
    (["tune", "--cv", "1"], "--cv"),
    ([], "required"),
]


@pytest.mark.parametrize("argv,needle", BAD, ids=[" ".join(a) or "none" for a, _ in BAD])
def test_bad_arguments_exit_2_without_traceback(argv, needle, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(("python -m fastdrop", "fastdrop"))


def test_bad_arguments_in_a_subprocess(tmp_path):
    for argv in (["train", "--batch-size", "0"], ["train", "--lr", "-1"],
                 ["train", "--epochs", "-1"], ["train", "--dropout", "1.5"]):
        r = run(*argv, cwd=tmp_path)
        assert r.returncode == 2, (argv, r.stderr)
        assert "Traceback" not in r.stderr and "error: argument" in r.stderr
        assert r.stderr.startswith("usage: python -m fastdrop train")


def test_version(tmp_path):
    r = run("--version", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == f"fastdrop {fastdrop.__version__}"


def test_help_shows_every_default(tmp_path):
    r = run("train", "--help", cwd=tmp_path)
    assert r.returncode == 0
    out = " ".join(r.stdout.split())
    for text in ("(default: mlp)", "(default: 15)", "(default: 128)", "(default: 0.001)",
                 "(default: cosine)", "(default: auto)", "(default: 0)", "(default: 1)",
                 "default 1024,1024", "default 0.3"):
        assert text in out, text
    # every option has a help text
    parser = cli.build_parser("fastdrop")
    for name in ("train", "bench", "info", "tune"):
        sub = parser._subparsers._group_actions[0].choices[name]
        for action in sub._actions:
            assert action.help, (name, action.dest)


def test_program_name_as_invoked(tmp_path):
    r = run("--help", cwd=tmp_path)
    assert r.stdout.startswith("usage: python -m fastdrop")
    code = ("import sys; sys.argv[0] = '/usr/local/bin/fastdrop'; "
            "from fastdrop.__main__ import main; main(sys.argv[1:])")
    r = run("train", "--lr", "-1", cwd=tmp_path, code=code)
    assert r.returncode == 2 and r.stderr.startswith("usage: fastdrop train")
    assert "fastdrop train: error: argument --lr" in r.stderr


@pytest.fixture
def no_data(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTDROP_DATA", raising=False)
    cache = tmp_path / "home" / ".cache" / "fastdrop" / "fashion-mnist"
    monkeypatch.setattr(ds, "CACHE_DIR", str(cache))
    monkeypatch.setattr(ds, "SYSTEM_DIR", str(tmp_path / "no-system-dir"))

    def failing_fetch(url, dest):
        raise urllib.error.URLError("Temporary failure in name resolution")
    monkeypatch.setattr(ds, "_fetch", failing_fetch)
    return tmp_path


def test_failed_download_is_one_line_and_leaves_no_folder(no_data, capsys):
    assert cli.main(["train", "--subset", "full", "--epochs", "1", "--verbose", "0"]) == 1
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("fastdrop: error: could not get the full Fashion-MNIST set")
    assert "name resolution" in line
    for hint in ("dataset-fashion-mnist", "FASTDROP_DATA", "--subset small"):
        assert hint in line
    assert "download=True" not in line and "Traceback" not in line
    assert not (no_data / "home" / ".cache").exists()


def test_header_says_which_data_and_where(capsys, monkeypatch):
    assert cli.main(["train", "--subset", "small", "--layers", "8", "--epochs", "1",
                     "--verbose", "0"]) == 0
    out = capsys.readouterr().out
    assert "Fashion-MNIST (embedded subset): 7150 training / 1000 test images" in out
    d = ds.find_fashion_mnist()
    if d is None:
        pytest.skip("the full Fashion-MNIST set is not installed here")
    monkeypatch.setattr(ds, "fashion_mnist", lambda subset=None: _tiny(subset))
    assert cli.main(["train", "--subset", "full", "--layers", "8", "--epochs", "1",
                     "--verbose", "0"]) == 0
    assert f"Fashion-MNIST (full set, {d}):" in capsys.readouterr().out


def _tiny(subset):
    import numpy as np
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (64, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, 64).astype(np.uint8)
    return (x, y), (x[:16], y[:16])


def test_build_model_kinds():
    m = cli.build_model("mlp", [16, 8], [0.2], 0.0, seed=0)
    assert [l.units for l in m.layers if type(l).__name__ == "Dense"] == [16, 8, 10]
    m = cli.build_model("mlp", [16, 8], [0.2, 0.0], 0.1, seed=0)
    assert [type(l).__name__ for l in m.layers] == ["Dropout", "Dense", "Dropout", "Dense",
                                                    "Dense"]
    assert [l.rate for l in m.layers if type(l).__name__ == "Dropout"] == [0.1, 0.2]
    with pytest.raises(ValueError, match="kind must be"):
        cli.build_model("rnn")
    for kind in ("cnn", "lstm"):
        try:
            m = cli.build_model(kind, seed=0)
        except ImportError as e:
            assert "does not have yet" in str(e)
            continue
        if not getattr(m, "built", False):
            m.build((28, 28, 1) if kind == "cnn" else (28, 28))
        # Keras mnist_convnet: 34,826 parameters; LSTM(128) + Dense(10): 81,674 (as Keras 3 counts them)
        assert m.count_params() == {"cnn": 34826, "lstm": 81674}[kind]


def test_missing_layers_are_a_clear_message(monkeypatch, capsys):
    def no_layers(*a, **k):
        raise ImportError("--model cnn needs the Conv2D and MaxPooling2D layers, which "
                          "this build of fastdrop does not have yet")
    monkeypatch.setattr(cli, "build_model", no_layers)
    assert cli.main(["train", "--model", "cnn", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastdrop: --model cnn needs") and "Traceback" not in err


def test_import_from_an_unbuilt_source_tree_says_how_to_build(tmp_path):
    import shutil
    shutil.copytree(os.path.dirname(fastdrop.__file__), tmp_path / "fastdrop",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", "import fastdrop"], capture_output=True,
                       text=True, cwd=tmp_path, env=env, timeout=60)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: fastdrop's compiled extension")
    assert "pip install -e ." in last and "build_ext --inplace" in last
    assert "circular import" not in r.stderr


@needs_source_tree("pyproject.toml", "README.md")
def test_distribution_name_and_install_hints():
    import re
    text = open(os.path.join(REPO, "pyproject.toml")).read()
    assert re.search(r'^name = "fastdrop-engine"$', text, re.M)
    for path in (os.path.join(REPO, "README.md"), os.path.join(PKG, "tune.py"),
                 os.path.join(PKG, "sklearn.py"), os.path.join(PKG, "__init__.py")):
        src = open(path).read()
        assert not re.search(r"""pip install ["']?fastdrop(\[|["'\s])""", src), path

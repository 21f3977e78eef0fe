"""Dropout-rate search (fastdrop.tune): local, threaded and Dask runs agree; the table,
plot and CLI."""
import argparse

import numpy as np
import pytest

pytest.importorskip("sklearn")

import fastdrop
from fastdrop import datasets
from fastdrop.tune import DropoutSearchResult, add_parser, search_dropout

RATES = (0.0, 0.2, 0.5)
# 1,500 embedded Fashion-MNIST images, 3 folds, 2 epochs; one kernel thread per fit keeps
# the run short and predictable on a shared 2-core CI machine
SEARCH = dict(rates=RATES, cv=3, epochs=2, random_state=0, batch_size=32, n_threads=1)


@pytest.fixture(scope="module")
def data():
    (x, y), _ = datasets.fashion_mnist(subset="small", flatten=True)
    return x[:1500].astype(np.float32) / 255.0, y[:1500]


@pytest.fixture(scope="module")
def local_result(data):
    x, y = data
    return search_dropout(x, y, **SEARCH)


def _fold_scores(res):
    return [r["fold_scores"] for r in res.results]


def test_search_local(local_result):
    res = local_result
    assert isinstance(res, DropoutSearchResult)
    assert [r["rate"] for r in res.results] == list(RATES)
    assert res.best_rate in RATES
    assert res.best_score == max(r["mean_score"] for r in res.results)
    assert res.best_score > 0.6
    for r in res.results:
        assert set(r) >= {"rate", "mean_score", "std_score", "mean_fit_time"}
        assert len(r["fold_scores"]) == 3
        assert r["mean_score"] == pytest.approx(np.mean(r["fold_scores"]))
        assert r["std_score"] >= 0 and r["mean_fit_time"] > 0
    assert res.scoring == "accuracy" and res.cv == 3 and res.random_state == 0

    table = res.to_table()
    lines = table.splitlines()
    assert len(lines) == 2 + len(RATES)
    assert "dropout" in lines[0] and "mean accuracy" in lines[0]
    assert len({len(line) for line in lines}) == 1          # aligned columns
    assert sum(line.lstrip().startswith("*") for line in lines) == 1
    text = str(res)
    assert table in text and "best dropout rate" in text


def test_search_same_scores_with_threads_backend(data, local_result):
    x, y = data
    threads = fastdrop.get_num_threads()
    res = search_dropout(x, y, n_jobs=2, backend="threading", **SEARCH)
    assert fastdrop.get_num_threads() == threads        # restored after concurrent fits
    assert _fold_scores(res) == _fold_scores(local_result)
    assert res.best_rate == local_result.best_rate


def test_search_same_scores_on_dask(data, local_result):
    pytest.importorskip("dask.distributed")
    from dask.distributed import Client, LocalCluster

    x, y = data
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster):
        explicit = search_dropout(x, y, backend="dask", **SEARCH)
        auto = search_dropout(x, y, **SEARCH)          # an active client is used by default
    assert explicit.backend == auto.backend == "dask"
    assert _fold_scores(explicit) == _fold_scores(local_result)
    assert _fold_scores(auto) == _fold_scores(local_result)
    assert explicit.best_rate == local_result.best_rate


def test_dask_backend_needs_a_client(data):
    pytest.importorskip("dask.distributed")
    x, y = data
    with pytest.raises(RuntimeError, match="Client"):
        search_dropout(x[:100], y[:100], backend="dask", **SEARCH)


def test_plot_and_dataframe(local_result):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    assert local_result.plot(ax=ax) is ax
    assert ax.get_xlabel() == "dropout rate"
    pd = pytest.importorskip("pandas")
    df = local_result.as_dataframe()
    assert isinstance(df, pd.DataFrame)
    assert list(df["rate"]) == list(RATES)


def test_invalid_arguments(data):
    x, y = data
    with pytest.raises(ValueError):
        search_dropout(x, y, rates=(0.1, 1.0))
    with pytest.raises(ValueError):
        search_dropout(x, y, rates=())
    with pytest.raises(TypeError, match="rates"):
        search_dropout(x, y, dropout=0.3)


def test_regression_target():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    y = x @ np.array([1.0, -1.0, 2.0, 0.5]) + 0.1 * rng.normal(size=300)
    res = search_dropout(x, y, rates=(0.0, 0.3), cv=3, epochs=20, random_state=0,
                         batch_size=32, hidden_layer_sizes=(32,), n_threads=1)
    assert res.scoring == "r2"
    assert res.best_score > 0.8


def test_cli(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    plot = tmp_path / "tune.png"
    args = parser.parse_args(["tune", "--rates", "0,0.3", "--cv", "2", "--epochs", "1",
                              "--samples", "600", "--layers", "64", "--threads", "1",
                              "--seed", "1", "--plot", str(plot)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "600 Fashion-MNIST images" in out
    assert "mean accuracy" in out and "best dropout rate" in out
    assert plot.stat().st_size > 0
    with pytest.raises(SystemExit):
        parser.parse_args(["tune", "--rates", "0.2,1.5"])

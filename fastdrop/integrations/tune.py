"""Dropout-rate search by cross-validation: ``search_dropout`` and the
``python -m fastdrop tune`` command.

>>> from fastdrop.tune import search_dropout
>>> res = search_dropout(x, y, rates=(0.0, 0.2, 0.5), cv=5, epochs=10, random_state=0)
>>> print(res)               # aligned table, best rate marked
>>> res.best_rate
>>> res.plot()               # mean score vs rate with std error bars (matplotlib)

Each rate is scored with k-fold cross-validation (``StratifiedKFold(shuffle=True)`` for
class labels, ``KFold(shuffle=True)`` for continuous targets) of a
``fastdrop.sklearn.DropoutMLPClassifier`` (or ``DropoutMLPRegressor``) through
scikit-learn's ``GridSearchCV`` over ``dropout``.  All rates see the same folds and the
same network seed, so they are compared on equal terms, and a given ``random_state``
gives the same scores and best rate however the trials are run.

Parallelism
-----------
The (rate, fold) trials are independent joblib tasks:

* ``n_jobs``: number of parallel trials (joblib semantics: None = 1 unless inside a
  ``joblib.parallel_config`` context, -1 = all cores).
* ``backend``: a joblib backend name ('loky', 'threading', 'multiprocessing',
  'sequential' or 'dask').  With ``backend='dask'`` the trials run on the Dask cluster
  of the active ``dask.distributed.Client`` (start one first, e.g.
  ``Client(LocalCluster())`` or ``Client("scheduler:8786")``); with ``backend=None``
  an already active Dask client is used automatically (pass ``backend='loky'`` to run
  locally anyway).  With Dask, ``n_jobs=None`` uses every worker.
* When trials run in parallel (``n_jobs`` > 1 or Dask) each fit uses one kernel thread
  (``n_threads=1``) unless you pass ``n_threads=...``, so parallel workers do not
  oversubscribe the cores.

Needs scikit-learn and joblib (``pip install "fastdrop-engine[sklearn]"``), dask for the Dask
backend (``"fastdrop-engine[dask]"``), matplotlib for ``plot`` (``"fastdrop-engine[plot]"``).
"""
import argparse
import contextlib
import numbers
import sys
import time

__all__ = ["search_dropout", "DropoutSearchResult", "add_parser", "main"]

DEFAULT_RATES = (0.0, 0.1, 0.2, 0.3, 0.5)


# ------------------------------------------------------------------------ result
class DropoutSearchResult:
    """Outcome of ``search_dropout``.

    Attributes: ``best_rate``, ``best_score``, ``results`` (one dict per rate, in
    increasing rate order, with ``rate``, ``mean_score``, ``std_score``,
    ``mean_fit_time`` (seconds) and ``fold_scores``), ``scoring`` (name of the score),
    ``cv`` (number of folds), ``random_state`` (the seed used), ``backend``,
    ``n_jobs``, ``elapsed`` (wall seconds), ``cv_results_`` (GridSearchCV's raw
    ``cv_results_``).
    """

    def __init__(self, results, scoring="score", cv=None, random_state=None, backend=None,
                 n_jobs=None, elapsed=None, n_samples=None, cv_results=None):
        self.results = [dict(r) for r in results]
        if not self.results:
            raise ValueError("results is empty")
        self.scoring = scoring
        self.cv = cv
        self.random_state = random_state
        self.backend = backend
        self.n_jobs = n_jobs
        self.elapsed = elapsed
        self.n_samples = n_samples
        self.cv_results_ = cv_results
        # the first rate (in increasing order) with the best mean score, as GridSearchCV
        best = max(range(len(self.results)), key=lambda i: (self.results[i]["mean_score"],
                                                            -i))
        self.best_index = best
        self.best_rate = self.results[best]["rate"]
        self.best_score = self.results[best]["mean_score"]

    @property
    def rates(self):
        return [r["rate"] for r in self.results]

    def to_table(self):
        """The results as an aligned text table; the best rate is marked with ``*``."""
        name = f"mean {self.scoring}"
        header = ("", "dropout", name, "std", "mean fit time (s)")
        rows = []
        for i, r in enumerate(self.results):
            rows.append(("*" if i == self.best_index else "", f"{r['rate']:.3g}",
                         f"{r['mean_score']:.4f}", f"{r['std_score']:.4f}",
                         f"{r['mean_fit_time']:.2f}"))
        widths = [max(len(row[c]) for row in rows + [header]) for c in range(len(header))]
        lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
        lines.append("  ".join(("-" if c else " ") * w for c, w in enumerate(widths)))
        lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in rows]
        return "\n".join(lines)

    def summary(self):
        r = self.results[self.best_index]
        folds = f"{self.cv}-fold " if self.cv else ""
        return (f"best dropout rate: {self.best_rate:.3g} ({folds}CV {self.scoring} "
                f"{r['mean_score']:.4f} ± {r['std_score']:.4f})")

    def __str__(self):
        return self.to_table() + "\n" + self.summary()

    def __repr__(self):
        return (f"DropoutSearchResult(best_rate={self.best_rate!r}, "
                f"best_score={self.best_score:.4f}, rates={self.rates!r})")

    def as_dataframe(self):
        """The results as a ``pandas.DataFrame`` (one row per rate)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("DropoutSearchResult.as_dataframe needs pandas: "
                              "pip install pandas") from None
        return pd.DataFrame(self.results)

    def plot(self, ax=None):
        """Mean CV score against the dropout rate, with ± std error bars; the best rate
        is marked.  Draws on ``ax`` (a new figure when None) and returns the axes."""
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ImportError("DropoutSearchResult.plot needs matplotlib: "
                              "pip install 'fastdrop-engine[plot]' (or pip install matplotlib)"
                              ) from None
        if ax is None:
            import matplotlib.pyplot as plt
            _, ax = plt.subplots(figsize=(5.5, 3.8))
        rates = self.rates
        means = [r["mean_score"] for r in self.results]
        stds = [r["std_score"] for r in self.results]
        ax.errorbar(rates, means, yerr=stds, marker="o", capsize=4, label="mean ± std")
        ax.plot([self.best_rate], [self.best_score], marker="*", markersize=14,
                linestyle="none", color="tab:red", label=f"best: {self.best_rate:.3g}")
        ax.set_xlabel("dropout rate")
        folds = f"{self.cv}-fold " if self.cv else ""
        ax.set_ylabel(f"{folds}CV {self.scoring}")
        ax.set_title("fastdrop dropout-rate search")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best")
        return ax


# ------------------------------------------------------------------------ search
def _check_rates(rates):
    if isinstance(rates, numbers.Real):
        rates = (rates,)
    try:
        rates = list(rates)
    except TypeError:
        raise ValueError(f"rates must be a sequence of floats in [0, 1), got {rates!r}") \
            from None
    out = []
    for r in rates:
        if isinstance(r, bool) or not isinstance(r, numbers.Real) or not (0.0 <= r < 1.0):
            raise ValueError(f"dropout rates must be floats in [0, 1), got {r!r}")
        out.append(float(r))
    if not out:
        raise ValueError("rates is empty")
    return sorted(set(out))


def _active_dask_client():
    """The active dask.distributed client, if the user started one (dask is not imported
    just to check)."""
    if "distributed" not in sys.modules:
        return None
    try:
        from distributed import default_client
        return default_client()
    except Exception:
        return None


def _parallel_context(backend):
    if backend is None:
        return contextlib.nullcontext()
    import joblib
    if hasattr(joblib, "parallel_config"):
        return joblib.parallel_config(backend=backend)
    return joblib.parallel_backend(backend)  # pragma: no cover - joblib < 1.3


def _scoring_name(scoring, is_classifier):
    if scoring is None:
        return "accuracy" if is_classifier else "r2"
    if isinstance(scoring, str):
        return scoring
    return getattr(scoring, "__name__", None) or "score"


def search_dropout(x, y, rates=DEFAULT_RATES, cv=5, epochs=10, random_state=None,
                   n_jobs=None, backend=None, scoring=None, **estimator_params):
    """Cross-validate a fastdrop dropout MLP for each dropout rate in ``rates``.

    x, y: training data (class labels → ``DropoutMLPClassifier`` with
    ``StratifiedKFold``; continuous targets → ``DropoutMLPRegressor`` with ``KFold``).
    cv: number of folds (or any scikit-learn CV splitter).  epochs: epochs per fit.
    random_state: seeds the folds and the networks (None draws one seed, shared by all
    trials, so the rates remain comparable); the same value gives the same scores and
    best rate locally, with any ``n_jobs``, and on Dask.
    n_jobs, backend: see the module docstring (joblib / Dask parallelism).
    scoring: None (the estimator's ``score``: accuracy or R²) or a scikit-learn scoring
    name/callable.  estimator_params: other ``DropoutMLPClassifier``/``Regressor``
    parameters, e.g. ``hidden_layer_sizes=(512,)``, ``batch_size=64``, ``n_threads=1``.

    Returns a ``DropoutSearchResult``.
    """
    import numpy as np
    from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import type_of_target

    from .sklearn import DropoutMLPClassifier, DropoutMLPRegressor
    import joblib

    rates = _check_rates(rates)
    if "dropout" in estimator_params:
        raise TypeError("search_dropout sets 'dropout' itself: give the candidates as "
                        "rates=...")
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        seed = int(random_state)
    else:
        seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))

    target = type_of_target(y)
    is_classifier = target not in ("continuous", "continuous-multioutput")
    if isinstance(cv, numbers.Integral) and not isinstance(cv, bool):
        if cv < 2:
            raise ValueError(f"cv must be >= 2 folds, got {cv}")
        splitter = (StratifiedKFold if is_classifier else KFold)(
            n_splits=int(cv), shuffle=True, random_state=seed)
        n_folds = int(cv)
    else:
        splitter = cv
        n_folds = cv.get_n_splits() if hasattr(cv, "get_n_splits") else None

    if backend is not None and not isinstance(backend, str):
        raise TypeError(f"backend must be a joblib backend name or None, got {backend!r}")
    if backend is None and _active_dask_client() is not None:
        backend = "dask"
    if backend == "dask":
        try:
            import distributed  # noqa: F401  (registers joblib's 'dask' backend)
        except ImportError:
            raise ImportError("backend='dask' needs dask.distributed: pip install "
                              "'fastdrop-engine[dask]'") from None
        if _active_dask_client() is None:
            raise RuntimeError("backend='dask' needs an active dask.distributed Client: "
                               "start one first, e.g. `from dask.distributed import Client, "
                               "LocalCluster; client = Client(LocalCluster())`")

    with _parallel_context(backend):
        parallel = backend == "dask" or joblib.effective_n_jobs(n_jobs) > 1
        params = dict(estimator_params)
        if parallel:
            params.setdefault("n_threads", 1)
        est_cls = DropoutMLPClassifier if is_classifier else DropoutMLPRegressor
        estimator = est_cls(epochs=epochs, random_state=seed, **params)
        search = GridSearchCV(estimator, {"dropout": rates}, cv=splitter, scoring=scoring,
                              n_jobs=n_jobs, refit=False, error_score="raise")
        t0 = time.perf_counter()
        search.fit(x, y)
        elapsed = time.perf_counter() - t0

    cvr = search.cv_results_
    n_split = sum(1 for k in cvr if k.startswith("split") and k.endswith("_test_score"))
    index = {float(p["dropout"]): i for i, p in enumerate(cvr["params"])}
    results = []
    for rate in rates:
        i = index[rate]
        results.append({
            "rate": rate,
            "mean_score": float(cvr["mean_test_score"][i]),
            "std_score": float(cvr["std_test_score"][i]),
            "mean_fit_time": float(cvr["mean_fit_time"][i]),
            "fold_scores": [float(cvr[f"split{k}_test_score"][i]) for k in range(n_split)],
        })
    return DropoutSearchResult(results, scoring=_scoring_name(scoring, is_classifier),
                               cv=n_folds or n_split, random_state=seed,
                               backend=backend or "local", n_jobs=n_jobs, elapsed=elapsed,
                               n_samples=len(y), cv_results=cvr)


# --------------------------------------------------------------------------- CLI
from ..cli.args import _layer_sizes as _sizes_arg  # noqa: E402  (shared CLI parsers)
from ..cli.args import _rates as _rates_arg  # noqa: E402


def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def add_parser(subparsers, func=None):
    """Register the ``tune`` subcommand on an ``argparse`` subparsers object; its
    ``func`` default is ``func`` (or ``main``).  Returns the subparser."""
    p = subparsers.add_parser(
        "tune", help="choose the dropout rate by cross-validation on Fashion-MNIST",
        description="Cross-validate a dropout MLP on Fashion-MNIST for several dropout "
                    "rates (scikit-learn GridSearchCV; trials in parallel with joblib or on "
                    "a Dask cluster) and print a table of scores.")
    p.add_argument("--rates", type=_rates_arg, default=list(DEFAULT_RATES),
                   help="comma-separated dropout rates (default 0,0.1,0.2,0.3,0.5)")
    p.add_argument("--cv", type=int, default=5, help="number of folds (default 5)")
    p.add_argument("--epochs", type=_positive_int, default=10, help="epochs per fit")
    p.add_argument("--subset", choices=["small", "full", "auto"], default="small",
                   help="small: the embedded 7,150-image subset (default); full: the "
                        "official 60,000 training images; auto: full when found locally")
    p.add_argument("--samples", type=_positive_int, default=None, metavar="N",
                   help="use a stratified random subsample of N training images")
    p.add_argument("--layers", type=_sizes_arg, default=[256],
                   help="hidden layer sizes, e.g. 512,512 (default 256)")
    p.add_argument("--batch-size", type=_positive_int, default=128)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--n-jobs", type=int, default=None,
                   help="parallel trials (joblib; -1 = all cores); each uses 1 thread")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="kernel threads per fit (default: 1 when trials run in parallel, "
                        "else all cores)")
    p.add_argument("--dask", action="store_true",
                   help="run the trials on a local Dask cluster (dask.distributed "
                        "LocalCluster, one single-threaded worker per --n-jobs or per core)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run the trials on the Dask cluster at this scheduler address")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds and networks")
    p.add_argument("--plot", default=None, metavar="PATH",
                   help="save a plot of score vs dropout rate to PATH (needs matplotlib)")
    p.set_defaults(func=func or main)
    return p


def _load_data(args):
    import numpy as np
    from .. import datasets

    subset = args.subset
    if subset == "auto":
        subset = None if datasets.find_fashion_mnist() is not None else "small"
        if subset == "small":
            print("fastdrop: the full Fashion-MNIST set was not found; using the embedded "
                  "subset", file=sys.stderr)
    elif subset == "full":
        subset = None
    (x, y), _ = datasets.fashion_mnist(subset=subset, flatten=True)
    if args.samples is not None and args.samples < len(y):
        from sklearn.model_selection import train_test_split
        x, _, y, _ = train_test_split(x, y, train_size=args.samples, stratify=y,
                                      random_state=args.seed)
    return np.ascontiguousarray(x, dtype=np.float32) / np.float32(255.0), y


def main(args):
    """Entry point of ``python -m fastdrop tune`` (``args`` from ``add_parser``)."""
    if args.cv < 2:
        print("error: --cv must be >= 2", file=sys.stderr)
        return 2
    if args.dask and args.scheduler:
        print("error: give --dask or --scheduler, not both", file=sys.stderr)
        return 2
    try:
        import sklearn  # noqa: F401
    except ImportError:
        print("error: `fastdrop tune` needs scikit-learn: pip install 'fastdrop-engine[sklearn]'",
              file=sys.stderr)
        return 1
    x, y = _load_data(args)
    cluster = client = None
    backend = None
    try:
        if args.dask or args.scheduler:
            try:
                from dask.distributed import Client, LocalCluster
            except ImportError:
                print("error: --dask/--scheduler need dask.distributed: pip install "
                      "'fastdrop-engine[dask]'", file=sys.stderr)
                return 1
            if args.scheduler:
                client = Client(args.scheduler)
            else:
                import os
                n = args.n_jobs if args.n_jobs and args.n_jobs > 0 else (os.cpu_count() or 1)
                cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
                client = Client(cluster)
            backend = "dask"
            where = f"Dask cluster {client.scheduler.address}"
        else:
            jobs = args.n_jobs or 1
            where = f"{jobs} parallel job{'s' if jobs != 1 else ''}"
        params = {"hidden_layer_sizes": tuple(args.layers), "batch_size": args.batch_size,
                  "learning_rate": args.lr}
        if args.threads:
            params["n_threads"] = args.threads
        print(f"fastdrop tune: {len(y)} Fashion-MNIST images, MLP 784-"
              f"{'-'.join(map(str, args.layers))}-10, {args.cv}-fold CV, {args.epochs} "
              f"epochs, rates {', '.join(f'{r:g}' for r in args.rates)}; {where}")
        res = search_dropout(x, y, rates=args.rates, cv=args.cv, epochs=args.epochs,
                             random_state=args.seed, n_jobs=args.n_jobs, backend=backend,
                             **params)
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    print(res)
    print(f"search time: {res.elapsed:.1f}s")
    if args.plot:
        try:
            from matplotlib.figure import Figure
        except ImportError:
            print("error: --plot needs matplotlib: pip install 'fastdrop-engine[plot]'",
                  file=sys.stderr)
            return 1
        fig = Figure(figsize=(5.5, 3.8), layout="tight")
        res.plot(ax=fig.subplots())
        fig.savefig(args.plot, dpi=120)
        print(f"plot saved to {args.plot}")
    return 0

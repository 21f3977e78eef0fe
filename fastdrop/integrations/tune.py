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
import contextlib
import numbers
import sys
import time

__all__ = ["search_dropout", "DropoutSearchResult"]

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

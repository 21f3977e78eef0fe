"""``python -m fastdrop tune``: the command line of the dropout-rate search
(``fastdrop.integrations.tune``)."""
import argparse
import sys

from ..integrations.tune import DEFAULT_RATES, search_dropout
from .args import _layer_sizes as _sizes_arg
from .args import _rates as _rates_arg

__all__ = ["add_parser", "main"]


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

"""Command line: ``fastdrop train | info | bench | convert | tune`` (or ``python -m fastdrop
...``).

Every bad argument is an argparse error (usage + one line, exit status 2, no traceback);
a data set that cannot be found or downloaded is a one-line error (exit status 1) that
says how to get it offline.
"""
import argparse
import math
import os
import sys
import time

from .._version import __version__
from .args import (_int_at_least, _layer_sizes, _nonneg_int, _positive_float,  # noqa: F401
                   _positive_int, _rate, _rates, _save_path)

MODELS = ("mlp", "cnn", "lstm")


def build_model(kind, layers=(1024, 1024), dropout=None, input_dropout=0.0, seed=None):
    """The model ``fastdrop train --model kind`` trains, as a ``Sequential``:

    - ``mlp``: 784 inputs, ``Dense(units, relu)`` per entry of ``layers``, each followed
      by ``Dropout`` (``dropout``: one rate or one per layer, default 0.3), optional input
      dropout, ``Dense(10, softmax)``;
    - ``cnn``: Keras's mnist_convnet example: ``Input((28, 28, 1))``,
      ``Conv2D(32, 3, relu)``, ``MaxPooling2D(2)``, ``Conv2D(64, 3, relu)``,
      ``MaxPooling2D(2)``, ``Flatten``, ``Dropout(0.5)`` (or ``dropout``),
      ``Dense(10, softmax)``;
    - ``lstm``: ``Input((28, 28))`` (each image as 28 steps of 28 pixels), ``LSTM(128)``,
      ``Dense(10, softmax)``.

    Raises ``ValueError`` for a bad combination and ``ImportError`` when this build of
    fastdrop lacks the layers a kind needs."""
    from fastdrop.models import Sequential
    if kind not in MODELS:
        raise ValueError(f"kind must be one of {MODELS}, got {kind!r}")
    if kind == "mlp":
        from fastdrop.layers import Dense, Dropout
        rates = [0.3] if dropout is None else list(dropout)
        if len(rates) == 1:
            rates = rates * len(layers)
        if len(rates) != len(layers):
            raise ValueError(f"--dropout needs 1 or {len(layers)} rates, got {len(rates)}")
        model = Sequential(seed=seed)
        if input_dropout > 0:
            model.add(Dropout(input_dropout))
        for i, (units, rate) in enumerate(zip(layers, rates)):
            model.add(Dense(units, activation="relu", input_dim=784 if i == 0 else None,
                            kernel_initializer="he_uniform"))
            if rate > 0:
                model.add(Dropout(rate))
        model.add(Dense(10, activation="softmax"))
        return model
    if kind == "cnn":
        rates = [0.5] if dropout is None else list(dropout)
        if len(rates) != 1:
            raise ValueError("--dropout takes one rate with --model cnn")
        try:
            from fastdrop.layers import (Conv2D, Dense, Dropout, Flatten, Input,
                                         MaxPooling2D)
        except ImportError as e:
            raise ImportError("--model cnn needs the Conv2D and MaxPooling2D layers, which "
                              "this build of fastdrop does not have yet") from e
        model = Sequential([Input((28, 28, 1)), Conv2D(32, 3, activation="relu"),
                            MaxPooling2D(2), Conv2D(64, 3, activation="relu"),
                            MaxPooling2D(2), Flatten(), Dropout(rates[0]),
                            Dense(10, activation="softmax")], seed=seed)
        return model
    if dropout is not None:
        raise ValueError("--dropout does not apply to --model lstm")
    try:
        from fastdrop.layers import LSTM, Dense, Input
    except ImportError as e:
        raise ImportError("--model lstm needs the LSTM layer, which this build of fastdrop "
                          "does not have yet") from e
    model = Sequential([Input((28, 28)), LSTM(128), Dense(10, activation="softmax")],
                       seed=seed)
    return model


def _describe(kind, layers, dropout):
    if kind == "mlp":
        rates = [0.3] if dropout is None else list(dropout)
        if len(rates) == 1:
            rates = rates * len(layers)
        return f"MLP 784-{'-'.join(map(str, layers))}-10, dropout {rates}"
    if kind == "cnn":
        rate = 0.5 if dropout is None else dropout[0]
        return (f"CNN (Keras mnist_convnet: Conv2D 32, MaxPooling2D, Conv2D 64, "
                f"MaxPooling2D, Dropout {rate}, Dense 10)")
    return "LSTM(128) over 28 steps of 28 pixels, Dense 10"


def _shape_for(kind, x):
    """Images (n, 28, 28) as the model kind reads them."""
    if kind == "mlp":
        return x.reshape(x.shape[0], 784)
    if kind == "cnn":
        return x.reshape(x.shape[0], 28, 28, 1)
    return x.reshape(x.shape[0], 28, 28)


# ----------------------------------------------------------------- commands
def cmd_info(args):
    import fastdrop
    info = fastdrop.cpu_info()
    print(f"fastdrop {info['version']}")
    print(f"kernel path : {info['isa']} (compiled: {', '.join(info['compiled'])}; "
          f"supported here: {', '.join(info['supported'])})")
    print(f"OpenMP      : {'on' if info['openmp'] else 'off'}")
    print(f"threads     : {info['threads']}")
    return 0


def _offline_hint():
    return ("to train without downloading: `apt-get install dataset-fashion-mnist` "
            "(Debian/Ubuntu), or set FASTDROP_DATA to a directory holding the four "
            "Fashion-MNIST IDX files, or run with --subset small (the embedded subset)")


def _load_data(subset):
    """((x_train, y_train), (x_test, y_test)) as uint8 images, and a description of the
    data set and where it came from."""
    from fastdrop import datasets
    if subset == "auto":
        subset = None if datasets.find_fashion_mnist() is not None else "small"
        if subset == "small":
            print("fastdrop: the full Fashion-MNIST set was not found; training on the "
                  "embedded subset. For the full set: `apt-get install dataset-fashion-mnist`"
                  ", or set FASTDROP_DATA, or run with --subset full to download it.",
                  file=sys.stderr)
    elif subset == "full":
        subset = None
    data = datasets.fashion_mnist(subset=subset)
    if subset == "small":
        return data, "Fashion-MNIST (embedded subset)"
    where = datasets.find_fashion_mnist() or os.path.expanduser(datasets.CACHE_DIR)
    return data, f"Fashion-MNIST (full set, {where})"


def cmd_train(args):
    import numpy as np

    import fastdrop
    from fastdrop import datasets
    from fastdrop.callbacks import ModelCheckpoint
    from fastdrop.optimizers import Adam

    if args.model != "mlp":
        given = [f for f, v in (("--layers", args.layers), ("--input-dropout",
                                                            args.input_dropout)) if v]
        if given:
            args._parser.error(f"{' and '.join(given)} only appl{'ies' if len(given) == 1 else 'y'}"
                               f" to --model mlp")
    layers = args.layers or [1024, 1024]
    if args.ranks:
        from ..distributed import launch
        if not launch.is_child():    # re-run this command under mpiexec -n RANKS
            try:
                return launch.relaunch(args.ranks, args._argv)
            except (ImportError, FileNotFoundError) as e:
                print(f"fastdrop: error: {e}", file=sys.stderr)
                return 2
        dp = launch.child_setup(args.threads)
        print(f"data-parallel on {dp.size} ranks x {fastdrop.get_num_threads()} threads "
              f"(global batch {args.batch_size})")
    try:
        model = build_model(args.model, layers, args.dropout, args.input_dropout or 0.0,
                            args.seed)
    except ValueError as e:
        args._parser.error(str(e))
    except ImportError as e:
        print(f"fastdrop: {e}", file=sys.stderr)
        return 2
    if args.threads and not args.ranks:
        fastdrop.set_num_threads(args.threads)
    try:
        ((xtr, ytr), (xte, yte)), source = _load_data(args.subset)
    except datasets.DatasetUnavailableError as e:
        reason = getattr(e, "reason", None) or str(e).split(". ")[0].rstrip(".")
        print(f"fastdrop: error: could not get the full Fashion-MNIST set ({reason}); "
              f"{_offline_hint()}", file=sys.stderr)
        return 1
    xtr = _shape_for(args.model, xtr.astype(np.float32) / 255.0)
    xte = _shape_for(args.model, xte.astype(np.float32) / 255.0)
    model.compile(optimizer=Adam(learning_rate=args.lr),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    print(f"fastdrop {fastdrop.__version__}: {source}: {xtr.shape[0]} training / "
          f"{xte.shape[0]} test images; {_describe(args.model, layers, args.dropout)}, "
          f"{fastdrop.cpu_info()['isa']} kernels, {fastdrop.get_num_threads()} threads")
    cbs = [ModelCheckpoint(args.save)] if args.save else []
    if args.lr_schedule == "cosine":
        from fastdrop.callbacks import LearningRateScheduler
        lr0, n_ep = args.lr, args.epochs
        cbs.append(LearningRateScheduler(
            lambda epoch, lr: lr0 * 0.5 * (1.0 + math.cos(math.pi * epoch / n_ep))))
    t0 = time.perf_counter()
    hist = model.fit(xtr, ytr, batch_size=args.batch_size, epochs=args.epochs,
                     validation_data=(xte, yte) if args.validate else None,
                     verbose=args.verbose, callbacks=cbs)
    dt = time.perf_counter() - t0
    epochs_run = len(hist.epoch)
    loss, acc = model.evaluate(xte, yte)
    sps = xtr.shape[0] * epochs_run / dt
    print(f"test accuracy: {acc:.4f}  test loss: {loss:.4f}  "
          f"train time: {dt:.1f}s  ({sps:,.0f} samples/s)")
    if args.save:
        print(f"model saved to {args.save}")
    return 0


CONVERT_EXTS = (".keras", ".h5", ".hdf5", ".fdm", ".onnx")


def cmd_convert(args):
    """``convert IN OUT``: IN read by its content (fastdrop .fdm, Keras .keras / .h5), OUT
    written by its extension."""
    p = args._parser
    src, dst = args.input, args.output
    out_ext = os.path.splitext(dst)[1].lower()
    if out_ext not in CONVERT_EXTS:
        p.error(f"OUT must end in one of {', '.join(CONVERT_EXTS)}, got {dst!r}")
    if args.mc_dropout and out_ext != ".onnx":
        p.error("--mc-dropout applies to an .onnx output only")
    if not os.path.isfile(src):
        p.error(f"IN {src!r} is not a file")
    if os.path.abspath(src) == os.path.abspath(dst):
        p.error("IN and OUT are the same file")
    from ..io import formats
    try:
        model = formats.load(src)
        if out_ext == ".onnx":
            try:
                from ..io.onnx import export_onnx
            except ImportError as e:
                raise ImportError(f"ONNX export is not available in this build ({e})") \
                    from None
            export_onnx(model, dst, mc_dropout=args.mc_dropout)
        elif out_ext == ".fdm":
            from ..io import native
            native.save_model(model, dst)
        else:
            formats.save(model, dst)
    except (ValueError, NotImplementedError, ImportError, OSError) as e:
        print(f"fastdrop convert: {e}", file=sys.stderr)
        return 1
    print(f"{src} -> {dst} ({type(model).__name__} of {len(model.layers)} layers)")
    return 0


def cmd_bench(args):
    if getattr(args, "distributed", False):
        from ..distributed import bench as dist_bench
        dist_bench.run(quick=args.quick, json_path=args.json)
        return 0
    from ..benchmarks import runner
    return runner.main(args)


def cmd_tune(args):
    from . import tune
    return tune.main(args)


# ------------------------------------------------------------------- parser
class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in the help of every flag, except flags without a value or a default,
    and help texts that already state their default."""

    def _get_help_string(self, action):
        if (action.default is None or action.default is False or action.nargs == 0
                or "default" in (action.help or "")):
            return action.help
        return super()._get_help_string(action)


def _prog():
    """The program name as invoked: ``fastdrop`` (the console script) or
    ``python -m fastdrop``."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "fastdrop" if name == "fastdrop" else "python -m fastdrop"


def _harden_tune_parser(p):
    """The tune subcommand's parser lives in fastdrop.tune; give its flags the same
    argument checks and help-with-defaults as the others."""
    p.formatter_class = _Formatter
    checks = {"lr": _positive_float, "cv": _int_at_least(2), "seed": _nonneg_int,
              "batch_size": _positive_int}
    helps = {"batch_size": "minibatch size", "lr": "Adam learning rate",
             "cv": "number of cross-validation folds"}
    for action in p._actions:
        if action.dest in checks and action.type in (int, float):
            action.type = checks[action.dest]
        if action.help is None and action.dest in helps:
            action.help = helps[action.dest]


def build_parser(prog=None):
    p = argparse.ArgumentParser(
        prog=prog or _prog(), formatter_class=_Formatter,
        description="fastdrop: fast dropout networks on the CPU")
    p.add_argument("--version", action="version", version=f"fastdrop {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    t = sub.add_parser("train", formatter_class=_Formatter,
                       help="train a dropout network on Fashion-MNIST",
                       description="Train a dropout network on Fashion-MNIST and report "
                                   "the test accuracy and the training throughput.")
    t.add_argument("--model", choices=MODELS, default="mlp",
                   help="mlp: dropout MLP; cnn: Keras mnist_convnet; lstm: LSTM(128) over "
                        "28 steps of 28 pixels")
    t.add_argument("--layers", type=_layer_sizes, default=None, metavar="SIZES",
                   help="hidden layer sizes of the MLP, comma-separated (default 1024,1024)")
    t.add_argument("--dropout", type=_rates, default=None, metavar="RATES",
                   help="dropout rate after each hidden layer (one value or one per layer; "
                        "default 0.3); with --model cnn the rate before the last Dense "
                        "(default 0.5)")
    t.add_argument("--input-dropout", type=_rate, default=None, metavar="RATE",
                   help="dropout on the inputs of the MLP (default 0)")
    t.add_argument("--epochs", type=_positive_int, default=15, help="training epochs")
    t.add_argument("--batch-size", type=_positive_int, default=128, help="minibatch size")
    t.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate")
    t.add_argument("--lr-schedule", choices=["cosine", "constant"], default="cosine",
                   help="cosine: decay the learning rate to 0 over the epochs")
    t.add_argument("--threads", type=_nonneg_int, default=0,
                   help="kernel threads (0: all cores)")
    t.add_argument("--seed", type=_nonneg_int, default=0,
                   help="seed of the weights, shuffling and dropout masks")
    t.add_argument("--subset", choices=["auto", "full", "small"], default="auto",
                   help="auto: the full set when found on disk, else the embedded subset; "
                        "full: the full set (downloaded if missing); small: the embedded "
                        "7,150-image subset")
    t.add_argument("--save", type=_save_path, default=None, metavar="PATH",
                   help="save the trained model to PATH (after every epoch)")
    t.add_argument("--validate", action="store_true",
                   help="report test metrics after each epoch")
    t.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2],
                   help="0: silent, 1: progress bar, 2: one line per epoch")
    t.add_argument("--ranks", type=_positive_int, default=None, metavar="N",
                   help="data-parallel training on N MPI ranks (re-runs the command under "
                        "mpiexec -n N; needs `pip install fastdrop-engine[mpi] mpich`); "
                        "--batch-size is the global batch, --threads the threads per rank")
    t.set_defaults(func=cmd_train, _parser=t)
    i = sub.add_parser("info", formatter_class=_Formatter,
                       help="version, kernel path, OpenMP, threads")
    i.set_defaults(func=cmd_info)
    b = sub.add_parser("bench", formatter_class=_Formatter,
                       help="quick benchmark report (ratios vs NumPy)")
    b.add_argument("--json", default=None, metavar="PATH",
                   help="also save the figures to this JSON file")
    b.add_argument("--plots", default="bench-plots", metavar="DIR",
                   help="directory for PNG plots ('' for none)")
    b.add_argument("--threads", type=_nonneg_int, default=0,
                   help="kernel threads (0: all cores)")
    b.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    b.add_argument("--distributed", action="store_true",
                   help="the data-parallel bench instead: 1 rank x 2 threads against 2 ranks "
                        "x 1 thread under mpiexec (compute and communication per step), and "
                        "the ring-allreduce scaling model for 8-64 nodes")
    b.set_defaults(func=cmd_bench)
    c = sub.add_parser("convert", formatter_class=_Formatter,
                       help="convert a model between .keras, .h5, .fdm and .onnx",
                       description="Convert a model file.  IN is read by its content "
                                   "(fastdrop .fdm, Keras .keras or .h5); OUT is written in "
                                   "the format of its extension: .keras, .h5, .fdm or "
                                   ".onnx.")
    c.add_argument("input", metavar="IN", help="the model file to read")
    c.add_argument("output", metavar="OUT", help="the file to write (.keras, .h5, .fdm, "
                                                 ".onnx)")
    c.add_argument("--mc-dropout", action="store_true",
                   help="ONNX only: keep dropout on, drawing new masks on every run "
                        "(Monte Carlo dropout)")
    c.set_defaults(func=cmd_convert, _parser=c)
    from .tune import add_parser as add_tune_parser
    _harden_tune_parser(add_tune_parser(sub, func=cmd_tune))
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    args._argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("fastdrop: interrupted", file=sys.stderr)
        return 130


"""Command line: ``python -m fastdrop train | info | bench | tune``."""
import argparse
import sys
import time


def _layer_sizes(text):
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError(f"layer sizes must be positive, got {text!r}")
    return sizes


def _rates(text):
    try:
        rates = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated floats, got {text!r}")
    if not rates or any(not (0 <= r < 1) for r in rates):
        raise argparse.ArgumentTypeError(f"dropout rates must be in [0, 1), got {text!r}")
    return rates


def cmd_info(args):
    import fastdrop
    info = fastdrop.cpu_info()
    print(f"fastdrop {info['version']}")
    print(f"kernel path : {info['isa']} (compiled: {', '.join(info['compiled'])}; "
          f"supported here: {', '.join(info['supported'])})")
    print(f"OpenMP      : {'on' if info['openmp'] else 'off'}")
    print(f"threads     : {info['threads']}")
    return 0


def cmd_train(args):
    import numpy as np

    import fastdrop
    from fastdrop import datasets
    from fastdrop.callbacks import ModelCheckpoint
    from fastdrop.layers import Dense, Dropout
    from fastdrop.models import Sequential
    from fastdrop.optimizers import Adam

    if args.threads:
        fastdrop.set_num_threads(args.threads)
    subset = args.subset
    if subset == "auto":
        subset = None if datasets.find_fashion_mnist() is not None else "small"
        if subset == "small":
            print("fastdrop: the full Fashion-MNIST set was not found; training on the "
                  "embedded subset. For the full set: `apt-get install dataset-fashion-mnist`"
                  ", or set FASTDROP_DATA, or run with --subset full to download it.",
                  file=sys.stderr)
    elif subset == "full":
        subset = None
    (xtr, ytr), (xte, yte) = datasets.fashion_mnist(subset=subset, flatten=True)
    xtr = xtr.astype(np.float32) / 255.0
    xte = xte.astype(np.float32) / 255.0
    rates = args.dropout
    if len(rates) == 1:
        rates = rates * len(args.layers)
    if len(rates) != len(args.layers):
        print(f"error: --dropout needs 1 or {len(args.layers)} rates", file=sys.stderr)
        return 2
    model = Sequential(seed=args.seed)
    if args.input_dropout > 0:
        model.add(Dropout(args.input_dropout))
    for i, (units, rate) in enumerate(zip(args.layers, rates)):
        model.add(Dense(units, activation="relu", input_dim=784 if i == 0 else None,
                        kernel_initializer="he_uniform"))
        if rate > 0:
            model.add(Dropout(rate))
    model.add(Dense(10, activation="softmax"))
    model.compile(optimizer=Adam(learning_rate=args.lr),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    print(f"fastdrop {fastdrop.__version__}: {xtr.shape[0]} training / {xte.shape[0]} test "
          f"images; MLP 784-{'-'.join(map(str, args.layers))}-10, dropout {rates}, "
          f"{fastdrop.cpu_info()['isa']} kernels, {fastdrop.get_num_threads()} threads")
    cbs = [ModelCheckpoint(args.save)] if args.save else []
    if args.lr_schedule == "cosine":
        import math

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


def cmd_bench(args):
    from . import _bench
    return _bench.main(args)


def cmd_tune(args):
    from . import tune
    return tune.main(args)


def build_parser():
    p = argparse.ArgumentParser(prog="python -m fastdrop",
                                description="fastdrop: fast dropout networks on the CPU")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a dropout MLP on Fashion-MNIST")
    t.add_argument("--layers", type=_layer_sizes, default=[1024, 1024],
                   help="hidden layer sizes (default 1024,1024)")
    t.add_argument("--dropout", type=_rates, default=[0.3],
                   help="dropout rate after each hidden layer (one value or one per layer; "
                        "default 0.3)")
    t.add_argument("--input-dropout", type=float, default=0.0, help="dropout on the inputs")
    t.add_argument("--epochs", type=int, default=15)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    t.add_argument("--lr-schedule", choices=["cosine", "constant"], default="cosine",
                   help="cosine: decay the learning rate to 0 over the epochs (default)")
    t.add_argument("--threads", type=int, default=0, help="threads (default: all cores)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--subset", choices=["auto", "full", "small"], default="auto",
                   help="auto: the full set when found, else the embedded subset")
    t.add_argument("--save", default=None, help="save the trained model to this path")
    t.add_argument("--validate", action="store_true", help="report test metrics each epoch")
    t.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2])
    t.set_defaults(func=cmd_train)
    i = sub.add_parser("info", help="version, kernel path, OpenMP, threads")
    i.set_defaults(func=cmd_info)
    b = sub.add_parser("bench", help="quick benchmark report (ratios vs NumPy)")
    b.add_argument("--json", default=None, help="also save the figures to this JSON file")
    b.add_argument("--plots", default="bench-plots", help="directory for PNG plots")
    b.add_argument("--threads", type=int, default=0)
    b.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    b.set_defaults(func=cmd_bench)
    from .tune import add_parser as add_tune_parser
    add_tune_parser(sub, func=cmd_tune)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())

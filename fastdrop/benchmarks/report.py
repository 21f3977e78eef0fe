"""The ``bench`` report: the text table (``format_report``), the JSON file
(``write_json``) and PNG plots (``write_plots``, when matplotlib is importable)."""
import json
import os
import sys

import numpy as np

from .harness import MB, ratio


def _f(v, fmt="{:.1f}", none="—"):
    return none if v is None else fmt.format(v)


def _x(v, what=""):
    return "—" if v is None else f"{v:.2f}× {what}".rstrip()


def _table(header, rows, indent="  "):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = [indent + "  ".join(str(h).ljust(w) if i == 0 else str(h).rjust(w)
                                for i, (h, w) in enumerate(zip(header, widths)))]
    for r in rows:
        lines.append(indent + "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                                        for i, (c, w) in enumerate(zip(r, widths))))
    return lines


def format_report(data):
    m, s, res = data["machine"], data["settings"], data["results"]
    n = s["threads"]
    fi = m["fastdrop"]
    L = []
    L.append(f"fastdrop {fi['version']} bench — {m['cpu']}, {m['cores']} cores, "
             f"{fi['isa']} kernels, OpenMP {'on' if fi['openmp'] else 'off'}"
             + (f", git {m['git']}" if m.get("git") else ""))
    blas = m.get("blas")
    if blas:
        b = blas[0]
        L.append(f"numpy {m['numpy']} / {b.get('internal_api')} {b.get('version')} "
                 f"({b.get('architecture')} kernel); threads set explicitly on both sides "
                 f"(threadpoolctl)")
    else:
        L.append(f"numpy {m['numpy']}; NumPy BLAS threads NOT controlled "
                 f"(threadpoolctl missing)")
    removed = m.get("openblas_env_removed")
    env = {k: v for k, v in (m.get("openblas_env") or {}).items() if v is not None}
    if removed:
        L.append("OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE were set (" +
                 ", ".join(f"{k}={v}" for k, v in removed.items()) +
                 "): re-executed without them so NumPy's BLAS runs its best kernel")
    elif env:
        L.append("NOTE: " + ", ".join(f"{k}={v}" for k, v in env.items()) +
                 " is set in this process: NumPy's BLAS may not run its best kernel")
    else:
        L.append("OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE: not set (NumPy's BLAS picks its kernel)")
    load = [v for v in (m.get("loadavg_start"), (m.get("loadavg") or [None])[0])
            if v is not None]
    if load:
        busy = max(load) > 0.5 * m["cores"]
        L.append(f"load average {' → '.join(f'{v:.2f}' for v in load)} on {m['cores']} cores"
                 + (": other processes compete for the cores, multi-thread figures of short"
                    " kernels are pessimistic" if busy else ""))
    L.append(f"torch: {m.get('torch', 'not used' if not s.get('torch') else 'not importable')}"
             f"; {s['threads']} threads unless stated; {'quick' if s.get('quick') else 'full'}"
             f" run; figures = best of interleaved samples, ratios from this run")

    if res["gemm"]:
        L.append("")
        L.append(f"GEMM  GFLOP/s (fastdrop._core.gemm vs numpy.matmul out=), {n} threads"
                 + (" and 1 thread" if n > 1 else ""))
        rows = [[r["op"], r["m"], r["n"], r["k"], _f(r["fastdrop_gflops"]),
                 _f(r["numpy_gflops"]), _x(r["ratio"], "numpy")]
                + ([_f(r["fastdrop_1t_gflops"]), _f(r["numpy_1t_gflops"]),
                    _x(r["ratio_1t"], "numpy")] if n > 1 else [])
                for r in res["gemm"]]
        L += _table(["op", "M", "N", "K", f"fd {n}T", f"numpy {n}T", "ratio"]
                    + (["fd 1T", "numpy 1T", "ratio 1T"] if n > 1 else []), rows)
        for r in res["gemm"]:
            if not r.get("agrees", True):
                L.append(f"  WARNING: gemm {r['op']} {r['m']}×{r['n']}×{r['k']} differs from "
                         f"numpy.matmul (max relative difference {r['max_rel_diff']:.2g})")

    if res["dropout"]:
        L.append("")
        L.append(f"Dropout  GB/s (x + y + 1-bit mask), rate {s['rate']}; memcpy = np.copyto "
                 f"(1 thread); torch = F.dropout / native_dropout_backward")
        rows = [[r["kernel"].split("_")[1], f"{r['label']} ({r['mem']})", _f(r["fastdrop_gbs"]),
                 _f(r["fastdrop_1t_gbs"]), _f(r["memcpy_gbs"]), _f(r["reference_gbs"], "{:.2f}"),
                 _f(r["torch_gbs"], "{:.2f}"), _x(r["vs_memcpy"], "memcpy"),
                 _x(r["vs_reference"], "ref"), _x(r["vs_torch"], "torch")]
                for r in res["dropout"]]
        L += _table(["dir", "size", f"fd {n}T", "fd 1T", "memcpy", "numpy-ref", "torch",
                     "vs memcpy", "vs ref", "vs torch"], rows)

    if res["relu"]:
        L.append("")
        L.append("ReLU  GB/s (relu: x + y; backward: grad + y + out); numpy = np.maximum / "
                 "np.multiply(g, y>0) with out=")
        rows = [[r["kernel"], f"{r['label']} ({r['mem']})", _f(r["fastdrop_gbs"]),
                 _f(r["fastdrop_1t_gbs"]), _f(r["memcpy_gbs"]), _f(r["numpy_gbs"]),
                 _x(r["vs_memcpy"], "memcpy"), _x(r["vs_numpy"], "numpy")] for r in res["relu"]]
        L += _table(["kernel", "size", f"fd {n}T", "fd 1T", "memcpy", "numpy", "vs memcpy",
                     "vs numpy"], rows)

    if res["softmax_cross_entropy"]:
        L.append("")
        L.append("softmax_cross_entropy (loss + gradient), µs per call, vs "
                 "fastdrop.reference")
        rows = [[f"{r['batch']}×{r['classes']}", _f(r["fastdrop_us"]),
                 _f(r.get("fastdrop_1t_us")), _f(r["reference_us"]), _x(r["ratio"], "ref"),
                 _x(r.get("ratio_1t"), "ref")] for r in res["softmax_cross_entropy"]]
        L += _table(["batch×classes", f"fd {n}T µs", "fd 1T µs", "reference µs", "ratio",
                     "ratio 1T"], rows)

    if res.get("adam"):
        L.append("")
        L.append("Adam update  GB/s (28 B/param), vs fastdrop.reference.adam_update")
        rows = [[f"{r['params']:,} params", _f(r["fastdrop_gbs"]), _f(r.get("fastdrop_1t_gbs")),
                 _f(r["reference_gbs"], "{:.2f}"), _x(r["ratio"], "ref"),
                 _x(r.get("ratio_1t"), "ref")] for r in res["adam"]]
        L += _table(["size", f"fd {n}T", "fd 1T", "reference", "ratio", "ratio 1T"], rows)

    if res["train"]:
        L.append("")
        L.append(f"Training step  samples/s, batch {s['batch']}, dropout {s['rate']}, Adam "
                 f"(Sequential.fit steady state vs ReferenceTrainer vs torch)")
        rows = [[r["model"], r["threads"], _f(r["fastdrop_sps"], "{:,.0f}"),
                 _f(r["reference_sps"], "{:,.0f}"), _f(r["torch_sps"], "{:,.0f}"),
                 _x(r["vs_reference"], "ref"), _x(r["vs_torch"], "torch")]
                for r in res["train"]]
        L += _table(["model", "threads", "fastdrop", "reference", "torch", "vs ref",
                     "vs torch"], rows)
    if res.get("thread_scaling"):
        L.append("")
        L.append("Thread scaling of the training step")
        rows = [[r["model"], f"{r['threads_hi']}T/{r['threads_lo']}T",
                 _x(r["fastdrop_scaling"]), _x(r["reference_scaling"]),
                 _x(r["torch_scaling"])] for r in res["thread_scaling"]]
        L += _table(["model", "threads", "fastdrop", "reference", "torch"], rows)
    if res.get("predict"):
        L.append("")
        L.append("predict latency, batch 1 (model.predict; torch: eval + inference_mode)")
        rows = [[r["model"], r["threads"], _f(r["fastdrop_us"]), _f(r["reference_us"]),
                 _f(r["torch_us"]), _x(ratio(r["reference_us"], r["fastdrop_us"]), "ref"),
                 _x(ratio(r["torch_us"], r["fastdrop_us"]), "torch")]
                for r in res["predict"]]
        L += _table(["model", "threads", "fastdrop µs", "reference µs", "torch µs",
                     "vs ref", "vs torch"], rows)
    if res.get("mixed"):
        L.append("")
        L.append("Beside NumPy: the call alone vs right after a NumPy matmul (OpenBLAS threads "
                 "spinning), µs")
        rows = [[r["case"], r["threads"], _f(r["alone_median_us"]), _f(r["alone_p99_us"]),
                 _f(r["mixed_median_us"]), _f(r["mixed_p99_us"]), _x(r["ratio_median"]),
                 _x(r["ratio_p99"])] for r in res["mixed"]]
        L += _table(["case", "threads", "alone median", "alone p99", "after numpy median",
                     "after numpy p99", "ratio median", "ratio p99"], rows)
    if res.get("steady"):
        L.append("")
        L.append("Steady state: training samples/s per epoch on Fashion-MNIST (fit, one call "
                 "per epoch)")
        rows = [[r["model"], f"{r['data']} ({r['samples']:,})", r["threads"],
                 " ".join(f"{v:,.0f}" for v in r["epoch_sps"]), _x(r["ratio"])]
                for r in res["steady"]]
        L += _table(["model", "data", "threads", "epochs 1..N", "last / first"], rows)
    if res.get("bf16"):
        L += _bf16_section(res["bf16"], n)
    if res.get("targets"):
        L.append("")
        L.append("Targets (ratios measured in this run)")
        rows = []

        def fmt(v, unit):
            if v is None:
                return "—"
            return {"×": f"{v:.2f}×", "µs": f"{v:.1f} µs"}.get(unit, f"{v:,.0f}/s")

        for t in res["targets"]:
            u = t["unit"]
            rel = "≤" if t.get("lower_is_better") else "≥"
            goal = (f"{rel} {t['goal']:g} µs" if u == "µs" else
                    f"{rel} {t['goal']:g}×" if u == "×" else f"{rel} {t['goal']:,.0f}/s")
            rows.append([t["target"], fmt(t["value"], u), goal,
                         "met" if t["met"] else "MISSED", fmt(t.get("value_1t"), u)])
        L += _table(["target", f"measured ({n}T)", "goal", "", "same at 1T"], rows)
    L.append("")
    L.append(f"elapsed {data['elapsed_s']:.1f} s")
    return "\n".join(L)


def _bf16_section(bf, n):
    """The bf16 mixed precision tables (GEMM per path, training and MC dropout per side)."""
    ps, default = bf.get("paths") or [], bf.get("default_path")
    L = ["", f"bf16 mixed precision — bf16 paths here: {', '.join(ps) or 'none'} (default "
             f"{default}); {n} threads"]
    if bf.get("gemm"):
        L.append("  GEMM  GFLOP/s: fastdrop._core.gemm (fp32) vs _core.gemm_bf16 per path "
                 "(bf16 operands, fp32 accumulation)")
        gps = [p for p in ps if any(f"{p}_gflops" in r for r in bf["gemm"])]
        rows = [[r["op"], r["m"], r["n"], r["k"], _f(r["fp32_gflops"])]
                + [_f(r.get(f"{p}_gflops")) for p in gps]
                + [_x(r.get(f"{p}_vs_fp32"), "fp32") for p in gps] for r in bf["gemm"]]
        L += _table(["op", "M", "N", "K", "fp32"] + gps + [f"{p} ratio" for p in gps], rows,
                    indent="    ")
        for r in bf["gemm"]:
            if not r.get("agrees", True):
                L.append(f"    WARNING: gemm_bf16 {r['op']} {r['m']}×{r['n']}×{r['k']} differs "
                         f"from the fp32 product of the bf16-rounded operands (" +
                         ", ".join(f"{p} {r.get(p + '_max_rel_diff', 0):.2g}" for p in ps) + ")")
    tr = bf.get("train")
    if tr:
        r0 = tr[0]
        L.append(f"  Training {r0['model']}  samples/s, batch {r0['batch']}, dropout "
                 f"{r0['rate']}, Adam (Sequential.fit steady state; sides interleaved)")
        rows = [[r["label"] + (" (default)" if r.get("default_path") else ""),
                 _f(r["sps"], "{:,.0f}"), _f(r.get("median_sps"), "{:,.0f}"),
                 _x(r.get("vs_fp32"), "fp32"), _x(r.get("vs_torch_bf16"), "torch bf16")]
                for r in tr]
        L += _table(["side", "best", "median", "vs fastdrop fp32", "vs torch bf16"], rows,
                    indent="    ")
    mc = bf.get("mc")
    if mc:
        r0 = mc[0]
        L.append(f"  MC dropout predict(x, mc_samples={r0['T']}) of {r0['batch']} rows, "
                 f"{r0['model']}, dropout {r0['rate']}, ms per call")
        rows = [[r["label"] + (" (default)" if r.get("default_path") else ""),
                 _f(r["ms"], "{:.2f}"), _f(r.get("median_ms"), "{:.2f}"),
                 _x(r.get("vs_fp32"), "fp32")] for r in mc]
        L += _table(["side", "best ms", "median ms", "vs fastdrop fp32"], rows, indent="    ")
    return L


# -------------------------------------------------------------------------- plots


def write_plots(data, directory):
    """PNG plots (throughput vs size per kernel, thread scaling); returns the paths, or
    None with a one-line notice when matplotlib is not importable."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        print("fastdrop bench: matplotlib is not installed: no plots "
              "(pip install matplotlib)", file=sys.stderr)
        return None
    os.makedirs(directory, exist_ok=True)
    res = data["results"]
    n = data["settings"]["threads"]
    paths = []

    def save(fig, name):
        p = os.path.join(directory, name)
        fig.tight_layout()
        fig.savefig(p, dpi=100)
        plt.close(fig)
        paths.append(p)

    sq = [r for r in res["gemm"] if r["op"] == "square"]
    if res["gemm"]:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        if sq:
            ax = axes[0]
            ax.plot([r["m"] for r in sq], [r["fastdrop_gflops"] for r in sq], "o-",
                    label="fastdrop")
            ax.plot([r["m"] for r in sq], [r["numpy_gflops"] for r in sq], "s--",
                    label="numpy.matmul")
            if all(r.get("fastdrop_1t_gflops") for r in sq):
                ax.plot([r["m"] for r in sq], [r["fastdrop_1t_gflops"] for r in sq], "o:",
                        label="fastdrop 1T")
                ax.plot([r["m"] for r in sq], [r["numpy_1t_gflops"] for r in sq], "s:",
                        label="numpy.matmul 1T")
            ax.set_xscale("log", base=2)
            ax.set_xticks([r["m"] for r in sq], [str(r["m"]) for r in sq])
            ax.minorticks_off()
            ax.set_xlabel("square size N")
            ax.set_ylabel("GFLOP/s")
            ax.set_title(f"SGEMM square ({n} threads unless 1T)")
            ax.legend()
        mlp = [r for r in res["gemm"] if r["op"] != "square"]
        ax = axes[1]
        if mlp:
            idx = np.arange(len(mlp))
            ax.bar(idx - 0.2, [r["fastdrop_gflops"] for r in mlp], 0.4, label="fastdrop")
            ax.bar(idx + 0.2, [r["numpy_gflops"] for r in mlp], 0.4, label="numpy.matmul")
            ax.set_xticks(idx, [f"{r['op']}\n{r['m']}×{r['n']}×{r['k']}" for r in mlp],
                          fontsize=8)
            ax.set_ylabel("GFLOP/s")
            ax.set_title(f"SGEMM MLP shapes (M×N×K), {n} threads")
            ax.legend()
        save(fig, "gemm.png")

    def elem_plot(rows, kernels, name, title, extra):
        if not rows:
            return
        fig, axes = plt.subplots(1, len(kernels), figsize=(5.5 * len(kernels), 4),
                                 squeeze=False)
        for ax, k in zip(axes[0], kernels):
            rs = [r for r in rows if r["kernel"] == k]
            sizes = [4 * r["elements"] / MB for r in rs]
            ax.plot(sizes, [r["fastdrop_gbs"] for r in rs], "o-", label=f"fastdrop {n}T")
            ax.plot(sizes, [r["fastdrop_1t_gbs"] for r in rs], "o:", label="fastdrop 1T")
            ax.plot(sizes, [r["memcpy_gbs"] for r in rs], "k--", label="memcpy (np.copyto)")
            for key, label in extra:
                pts = [(s_, r[key]) for s_, r in zip(sizes, rs) if r.get(key)]
                if pts:
                    ax.plot(*zip(*pts), "s-", label=label)
            ax.set_xscale("log", base=2)
            ax.set_xticks(sizes, [r["mem"] for r in rs])
            ax.minorticks_off()
            ax.set_yscale("log")
            ax.set_xlabel("tensor size (float32)")
            ax.set_ylabel("GB/s")
            ax.set_title(k)
            ax.legend(fontsize=8)
        fig.suptitle(title)
        save(fig, name)

    elem_plot(res["dropout"], ["dropout_forward", "dropout_backward"], "dropout.png",
              "Dropout throughput vs size",
              [("reference_gbs", "NumPy reference"), ("torch_gbs", "torch")])
    elem_plot(res["relu"], ["relu", "relu_backward"], "relu.png", "ReLU throughput vs size",
              [("numpy_gbs", "numpy")])

    if res["softmax_cross_entropy"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        rs = res["softmax_cross_entropy"]
        for batch in sorted({r["batch"] for r in rs}):
            b = [r for r in rs if r["batch"] == batch]
            ax.plot([r["classes"] for r in b], [r["batch"] / r["fastdrop_us"] * 1e6 for r in b],
                    "o-", label=f"fastdrop, batch {batch}")
            ax.plot([r["classes"] for r in b], [r["batch"] / r["reference_us"] * 1e6 for r in b],
                    "s--", label=f"reference, batch {batch}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("classes")
        ax.set_ylabel("rows/s")
        ax.set_title("softmax cross-entropy (loss + grad)")
        ax.legend(fontsize=8)
        save(fig, "softmax_cross_entropy.png")

    if res["train"]:
        fig, ax = plt.subplots(figsize=(7, 4))
        models = sorted({r["model"] for r in res["train"]})
        for model in models:
            rs = sorted((r for r in res["train"] if r["model"] == model),
                        key=lambda r: r["threads"])
            th = [r["threads"] for r in rs]
            ax.plot(th, [r["fastdrop_sps"] for r in rs], "o-", label=f"fastdrop {model}")
            ax.plot(th, [r["reference_sps"] for r in rs], "s:", label=f"reference {model}")
            if all(r.get("torch_sps") for r in rs):
                ax.plot(th, [r["torch_sps"] for r in rs], "^--", label=f"torch {model}")
        ax.set_xticks(sorted({r["threads"] for r in res["train"]}))
        ax.set_yscale("log")
        ax.set_xlabel("threads")
        ax.set_ylabel("samples/s")
        ax.set_title("Training step throughput vs threads (batch 128)")
        ax.legend(fontsize=7)
        save(fig, "train_threads.png")
    return paths


def write_json(data, path):
    """Write the figures to ``path`` atomically (directories made as needed)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=_json_default)
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.bool_,)):
        return bool(o)
    if isinstance(o, (tuple, set)):
        return list(o)
    return str(o)

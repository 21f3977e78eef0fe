"""The project's performance targets: each a ratio between two figures of the same run,
with its goal (``targets(results)`` -> rows of target, value, value at 1 thread, goal,
met)."""
from .harness import ratio


def _min(vals):
    vals = [v for v in vals if v is not None]
    return min(vals) if vals else None


def targets(res):
    """The project's performance targets (ratios) against this run's figures, each at all threads
    and, where measured, at 1 thread (``value_1t``: the robust figure on a busy machine)."""
    out = []

    def add(what, value, value_1t=None, *, goal, unit="×", lower_is_better=False):
        if value is None:
            return
        ok = value <= goal if lower_is_better else value >= goal
        out.append(dict(target=what, value=value, value_1t=value_1t, goal=goal, unit=unit,
                        met=bool(ok), lower_is_better=lower_is_better))

    def worst(rows, key, key_1t=None):
        """(min of key, min of key_1t) over rows."""
        return (_min([r.get(key) for r in rows]),
                _min([r.get(key_1t) for r in rows]) if key_1t else None)

    gemm = res["gemm"]
    add("gemm square 1024-2048 vs numpy (min)",
        *worst([r for r in gemm if r["op"] == "square" and r["m"] >= 1024], "ratio",
               "ratio_1t"), goal=0.95)
    add("gemm MLP shapes vs numpy (min)",
        *worst([r for r in gemm if r["op"] != "square" and r["n"] != 10 and r["m"] >= 32],
               "ratio", "ratio_1t"), goal=1.0)
    add("gemm N=10 output layer vs numpy",
        *worst([r for r in gemm if r["op"] != "square" and r["n"] == 10], "ratio",
               "ratio_1t"), goal=1.5)
    for d in ("forward", "backward"):
        rows = [dict(r, vs_memcpy_1t=ratio(r["fastdrop_1t_gbs"], r["memcpy_gbs"]),
                     vs_reference_1t=ratio(r["fastdrop_1t_gbs"], r["reference_gbs"]))
                for r in res["dropout"] if r["kernel"] == f"dropout_{d}"]
        if not rows:
            continue
        big = max(r["elements"] for r in rows)
        bigrow = [r for r in rows if r["elements"] == big]
        add(f"dropout {d} {bigrow[0]['mem']} vs memcpy",
            *worst(bigrow, "vs_memcpy", "vs_memcpy_1t"), goal=0.8)
        withref = [r for r in rows if r["vs_reference"] is not None]
        if withref:
            big_ref = max(r["elements"] for r in withref)
            rr = [r for r in withref if r["elements"] == big_ref]
            add(f"dropout {d} {rr[0]['mem']} vs NumPy reference",
                *worst(rr, "vs_reference", "vs_reference_1t"), goal=20.0)
    for k in ("relu", "relu_backward"):
        rows = [dict(r, vs_memcpy_1t=r["fastdrop_1t_gbs"] / r["memcpy_gbs"])
                for r in res["relu"] if r["kernel"] == k]
        add(f"{k} vs memcpy (min over sizes)", *worst(rows, "vs_memcpy", "vs_memcpy_1t"),
            goal=0.8)
    add("softmax_cross_entropy vs reference (min)",
        *worst(res["softmax_cross_entropy"], "ratio", "ratio_1t"), goal=5.0)
    tr = res["train"]
    nmax = max((r["threads"] for r in tr), default=None)
    one = {r["model"]: r for r in tr if r["threads"] == 1}
    for r in tr:
        if r["threads"] != nmax:
            continue
        r1 = one.get(r["model"]) if nmax != 1 else None
        if r["model"] == "784-1024-1024-10":
            add(f"train {r['model']} vs ReferenceTrainer", r["vs_reference"],
                r1 and r1["vs_reference"], goal=10.0)
            add(f"train {r['model']} vs PyTorch", r["vs_torch"], r1 and r1["vs_torch"],
                goal=2.0)
        elif r["model"] == "784-256-256-10":
            add(f"train {r['model']} vs ReferenceTrainer", r["vs_reference"],
                r1 and r1["vs_reference"], goal=15.0)
            add(f"train {r['model']} vs PyTorch", r["vs_torch"], r1 and r1["vs_torch"],
                goal=2.5)
    preds = res.get("predict", [])
    p1 = {p["model"]: p for p in preds if p["threads"] == 1}
    for p in preds:
        if p["threads"] == nmax:
            q = p1.get(p["model"]) if nmax != 1 else None
            add(f"predict batch 1 {p['model']} {p['threads']}T vs PyTorch",
                ratio(p["torch_us"], p["fastdrop_us"]),
                q and ratio(q["torch_us"], q["fastdrop_us"]), goal=1.0)
    for mx in res.get("mixed", []):
        add(f"{mx['case']} after a NumPy matmul / alone (median)", mx["ratio_median"],
            goal=1.5, lower_is_better=True)
    for st in res.get("steady", []):
        add(f"train {st['model']} epoch {st['epochs']} / epoch 1 ({st['data']} data)",
            st["ratio"], goal=0.95)
    if res.get("models"):
        model_targets(res["models"], add)
    if res.get("bf16"):
        bf16_targets(res["bf16"], add)
    for s in res.get("thread_scaling", []):
        if s["model"] == "784-1024-1024-10" and s["threads_hi"] >= 2:
            add(f"thread scaling {s['model']} {s['threads_hi']}T/{s['threads_lo']}T",
                s["fastdrop_scaling"], goal=1.8)
    return out


def model_targets(rows, add):
    goals = {"train seed003": 1.5, "train mnist_convnet": 1.5, "train lstm": 1.3,
             "train gru": 1.5}
    for r in rows:
        if r["case"] in goals and r.get("vs_torch") is not None:
            add(f"{r['case']} vs PyTorch (best layout)", r["vs_torch"], goal=goals[r["case"]])
        elif r["case"].startswith("lstm dropout"):
            add(r["case"], r["ratio"], goal=1.15, lower_is_better=True)
        elif r["case"].startswith("predict batch 1") and r.get("torch_us"):
            add(f"{r['case']} latency / PyTorch", r["fastdrop_us"] / r["torch_us"], goal=0.5,
                lower_is_better=True)
        elif r["case"].startswith("MC dropout"):
            add(r["case"], r["ratio"], goal=0.35, lower_is_better=True)


def bf16_targets(bf, add):
    """Issue 19: on the default bf16 path, MLP training under 'mixed_bfloat16' >= 1.6x
    fastdrop float32 and >= 1.5x PyTorch bf16 autocast; MC dropout T=20 >= 1.5x float32."""
    default = bf.get("default_path")
    tr = {r["side"]: r for r in bf.get("train", [])}
    r = tr.get(default)
    if r:
        add(f"train {r['model']} mixed_bfloat16 ({default}) vs float32", r["vs_fp32"],
            goal=1.6)
        add(f"train {r['model']} mixed_bfloat16 ({default}) vs PyTorch bf16 autocast",
            r.get("vs_torch_bf16"), goal=1.5)
    mc = {r["side"]: r for r in bf.get("mc", [])}
    r = mc.get(default)
    if r:
        add(f"MC dropout T={r['T']} {r['model']} bf16 ({default}) vs float32", r["vs_fp32"],
            goal=1.5)

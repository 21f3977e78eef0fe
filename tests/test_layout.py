"""The house's floors: every import inside the package runs downward (or sideways within
a floor) and no import circle exists.  Read from the package's own source files, so it
checks the installed wheel as well as a checkout."""
import ast
import os

import fastdrop

PKG = os.path.dirname(fastdrop.__file__)

# lowest first; a module's floor is the first prefix that matches it
FLOORS = [
    ("fastdrop._version", "fastdrop._validate", "fastdrop.registry", "fastdrop.random",
     "fastdrop.runtime", "fastdrop.mixed_precision", "fastdrop.config",
     "fastdrop.utils", "fastdrop._core"),
    ("fastdrop.kernels", "fastdrop.reference", "fastdrop.initializers", "fastdrop.constraints",
     "fastdrop.regularizers", "fastdrop.schedules"),
    ("fastdrop.engine",),
    ("fastdrop.layers",),
    ("fastdrop.losses", "fastdrop.optimizers", "fastdrop.callbacks", "fastdrop.datasets"),
    ("fastdrop.io",),
    ("fastdrop.models",),
    ("fastdrop.uncertainty", "fastdrop.integrations", "fastdrop.benchmarks"),
    ("fastdrop.cli", "fastdrop.tune", "fastdrop.sklearn", "fastdrop.distributed",
     "fastdrop.__main__", "fastdrop"),
]


def floor(mod):
    for i, names in enumerate(FLOORS):
        for n in names:
            if n != "fastdrop" and (mod == n or mod.startswith(n + ".")):
                return i
    return len(FLOORS) - 1   # the package itself: the top


def modules():
    out = {}
    for d, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(d, f)
                rel = os.path.relpath(path, os.path.dirname(PKG))[:-3].replace(os.sep, ".")
                if rel.endswith(".__init__"):
                    rel = rel[:-9]
                out[rel] = path
    return out


def imports(mods):
    compiled = {"fastdrop._core"}
    edges = {}
    for m, path in mods.items():
        tree = ast.parse(open(path, encoding="utf-8").read())
        pkg = m if path.endswith("__init__.py") else m.rsplit(".", 1)[0]
        out = set()
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom):
                if n.level:
                    base = pkg.split(".")[:len(pkg.split(".")) - (n.level - 1)]
                    tgt = ".".join(base + ([n.module] if n.module else []))
                else:
                    tgt = n.module or ""
                if not tgt.startswith("fastdrop"):
                    continue
                subs = [f"{tgt}.{a.name}" for a in n.names
                        if f"{tgt}.{a.name}" in mods or f"{tgt}.{a.name}" in compiled]
                for c in subs or [tgt]:
                    if c != m and (c in mods or c in compiled):
                        out.add(c)
            elif isinstance(n, ast.Import):
                for a in n.names:
                    if a.name.startswith("fastdrop") and a.name in mods and a.name != m:
                        out.add(a.name)
        edges[m] = out
    return edges


def test_imports_run_downward():
    edges = imports(modules())
    up = sorted(f"{a} (floor {floor(a)}) -> {b} (floor {floor(b)})"
                for a, bs in edges.items() for b in bs if floor(b) > floor(a))
    assert not up, "upward imports:\n" + "\n".join(up)


def test_no_import_circle():
    edges = imports(modules())
    # a package importing its own submodules is its interface, not a circle
    edges = {a: {b for b in bs if not b.startswith(a + ".")} for a, bs in edges.items()}
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            visit(v)
    assert not cycles, f"import circles: {cycles}"


def test_no_monolith():
    big = {m: sum(1 for _ in open(p, encoding="utf-8")) for m, p in modules().items()}
    big = {m: n for m, n in big.items() if n > 800}
    assert not big, f"modules over 800 lines: {big}"


def test_benchmarks_in_small_files():
    """The benchmarks are cases per family, peers, harness, runner and report: no module of
    fastdrop/benchmarks/ over ~600 lines, and no benchmark module left beside them."""
    mods = modules()
    big = {m: sum(1 for _ in open(p, encoding="utf-8")) for m, p in mods.items()
           if m.startswith("fastdrop.benchmarks")}
    assert not {m: n for m, n in big.items() if n > 600}, big
    assert "fastdrop._bench" not in mods


def test_integrations_never_import_cli():
    """The integration depends on nothing of the command line (the reverse is fine),
    neither at module level nor lazily inside a function."""
    edges = imports(modules())
    bad = sorted(f"{a} -> {b}" for a, bs in edges.items() if a.startswith("fastdrop.integrations")
                 for b in bs if b == "fastdrop.cli" or b.startswith("fastdrop.cli."))
    assert not bad, bad

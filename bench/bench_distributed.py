"""Data-parallel training over MPI: the step of the MLP 784-1024-1024-10 at a global batch
of 256 split into compute and communication, 1 rank x 2 threads against 2 ranks x 1
thread (float32 ordered reduction, fp16, bf16, overlapped Iallreduce), and the
ring-allreduce model of 8-64 nodes at 10/25/100 Gb/s for the MLP, CNN and LSTM.

    python bench/bench_distributed.py [--quick] [--json PATH]
    python -m fastdrop bench --distributed [--quick]
    pytest bench/bench_distributed.py --benchmark-only     (one round, figures in extra_info)

The jobs run under ``mpiexec -n R`` (mpi4py + the mpich wheel: ``pip install
"fastdrop-engine[mpi]" mpich``); see fastdrop/distributed/bench.py for the model.
"""
import sys

import pytest


def _have_mpi():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    from fastdrop.distributed.launch import find_mpiexec
    return find_mpiexec() is not None


@pytest.mark.skipif(not _have_mpi(), reason="needs mpi4py and mpiexec")
def test_distributed_step(benchmark):
    from fastdrop.distributed import bench
    data = benchmark.pedantic(lambda: bench.run(quick=True), rounds=1, iterations=1)
    for r in data["measured"]:
        key = f"{r['ranks']}x{r['threads']} {r['compression'] or 'fp32'}" + \
              {True: " overlap", "after": " MPI sum", False: ""}[r["overlap"]]
        benchmark.extra_info[key] = {k: round(r[k], 3) for k in
                                     ("step_ms", "compute_ms", "comm_ms", "reduce_alone_ms")}


if __name__ == "__main__":
    from fastdrop.distributed.bench import main
    sys.exit(main(sys.argv[1:]))

"""``python -m fastdrop train --ranks N``: run the same command under ``mpiexec -n N``.

The parent process finds an ``mpiexec`` (``$FASTDROP_MPIEXEC``, then the one beside this
Python — where ``pip install mpich`` puts it — then ``PATH``), and re-executes
``python -m fastdrop <the same arguments>`` under it with ``FASTDROP_RANKS_CHILD=1`` in the
environment; each child initialises ``fastdrop.distributed`` and trains data-parallel.  The
parent returns the job's exit status.
"""
import os
import shutil
import subprocess
import sys

CHILD_ENV = "FASTDROP_RANKS_CHILD"


def find_mpiexec():
    """Path of an ``mpiexec`` or None."""
    env = os.environ.get("FASTDROP_MPIEXEC")
    if env:
        return env
    for d in (os.path.dirname(sys.executable), os.path.join(sys.prefix, "bin")):
        for name in ("mpiexec", "mpirun"):
            p = os.path.join(d, name)
            if os.path.isfile(p) and os.access(p, os.X_OK):
                return p
    return shutil.which("mpiexec") or shutil.which("mpirun")


_MPI_RANK_ENV = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")


def is_child():
    """True in a process started by relaunch, or by any mpiexec (``mpiexec -n 4 python -m
    fastdrop train --ranks 4`` must not launch a job per rank)."""
    return os.environ.get(CHILD_ENV) == "1" or any(k in os.environ for k in _MPI_RANK_ENV)


def relaunch(ranks, argv, mpiexec=None, extra_env=None):
    """Run ``python -m fastdrop *argv`` on ``ranks`` ranks; returns the exit status."""
    exe = mpiexec or find_mpiexec()
    if exe is None:
        raise FileNotFoundError(
            "--ranks needs an MPI launcher (mpiexec) and mpi4py: `pip install "
            "fastdrop-engine[mpi] mpich` (or a system MPI); set FASTDROP_MPIEXEC to its path")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        from ._comm import INSTALL_HINT
        raise ImportError(INSTALL_HINT) from None
    env = dict(os.environ)
    env[CHILD_ENV] = "1"
    env.update(extra_env or {})
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = here + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                else "")
    cmd = [exe, "-n", str(int(ranks)), sys.executable, "-m", "fastdrop"] + list(argv)
    return subprocess.call(cmd, env=env)


def child_setup(threads=0):
    """In a ``--ranks`` child: initialise, make data-parallel the distribution, silence
    the ranks other than 0.  Returns the DataParallel."""
    from . import DataParallel, initialize, set_distribution
    info = initialize(num_threads=threads or None)
    dp = DataParallel()
    set_distribution(dp)
    if info.rank != 0:
        sys.stdout = open(os.devnull, "w")
    return dp

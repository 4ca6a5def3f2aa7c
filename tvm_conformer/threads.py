"""The size of TVM's CPU thread pool in this process.

TVM caps its pool at `TVM_NUM_THREADS` as read when the pool is first made (unset: half the
logical CPUs on x86, taken to be hyperthreads, so 1 on a 2-vCPU VM), and
`runtime.config_threadpool` can shrink the pool but never grow it past that cap: a request for
2 threads then silently runs on 1. The package raises the cap to every CPU when it is imported
(`tvm_conformer/__init__.py`, unless the user set it), and `set_threads` checks that it got
what it asked for.
"""

from __future__ import annotations

import os

from tvm_conformer.errors import UserError

CAP = "TVM_NUM_THREADS"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def pool_size() -> int:
    import tvm

    return int(tvm.get_global_func("runtime.NumThreads")())


def set_threads(threads: int) -> None:
    """Sizes TVM's CPU pool to `threads`; a pool that cannot grow that far is an error."""
    import tvm

    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UserError(f"a thread count must be an integer >= 1, not {threads!r}")
    tvm.get_global_func("runtime.config_threadpool")(0, threads)
    got = pool_size()
    if got != threads:
        raise UserError(
            f"TVM's thread pool runs {got} thread(s), {threads} asked: its cap {CAP}="
            f"{os.environ.get(CAP, 'unset')} was fixed when the pool was made; start the process "
            f"with {CAP}={threads} or more"
        )

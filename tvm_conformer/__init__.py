"""tvm-conformer: a streaming Conformer-CTC from PyTorch to edge devices through Apache TVM."""

import os as _os

__version__ = "0.1.0"

# TVM caps its CPU thread pool at TVM_NUM_THREADS as read when the pool is made (unset: half the
# logical CPUs on x86, 1 on a 2-vCPU VM) and cannot grow it later: let it reach every CPU of
# this process; `tvm_conformer.threads.set_threads` then sizes it per run.
_os.environ.setdefault("TVM_NUM_THREADS", str(len(_os.sched_getaffinity(0)) if hasattr(
    _os, "sched_getaffinity") else _os.cpu_count() or 1))

"""Weights onto the device the step runs on, once per load.

On the host CPU the arrays go into one arena of anonymous memory advised for transparent huge
pages (`madvise(MADV_HUGEPAGE)` before the first touch, each array 64-byte aligned as TVM's
kernels need, handed to TVM without a copy through DLPack). A step reads every weight once
(131 MB at WeNet size): on 4 KB pages that is a TLB miss every 4 KB, and Linux gives huge
pages only to memory that asks where THP is `madvise` (as on this machine). Measured on this
host (docs/BENCHMARKS.md): the WeNet-size int8 step 10.63 -> 9.90 ms at 1 thread. Where THP is
off or the call fails, the arena is ordinary memory; elsewhere (an RPC device) each array is
uploaded as before.
"""

from __future__ import annotations

import mmap
from typing import Any

import numpy as np

ALIGN = 64  # bytes: TVM's kernels assume it, and `from_dlpack` checks it
HUGE_PAGE = 2 << 20


def huge_page_arena(nbytes: int) -> np.ndarray:
    """A zeroed uint8 buffer of at least `nbytes` in anonymous memory advised for huge pages."""
    size = max(HUGE_PAGE, -(-nbytes // HUGE_PAGE) * HUGE_PAGE)
    mem = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is not None:
        try:
            mem.madvise(advice)
        except OSError:  # THP not built into this kernel: ordinary pages
            pass
    return np.frombuffer(mem, np.uint8)


def pack_host_arrays(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """The arrays copied into one huge-page arena, each at a 64-byte aligned offset (views of
    it, which keep it alive)."""
    offsets, total = [], 0
    for a in arrays:
        offsets.append(total)
        total += -(-a.nbytes // ALIGN) * ALIGN
    arena = huge_page_arena(total)
    views = []
    for a, off in zip(arrays, offsets, strict=True):
        v = arena[off : off + a.nbytes].view(a.dtype).reshape(a.shape)
        v[...] = a
        views.append(v)
    return views


def upload_weights(arrays: list[np.ndarray], dev: Any) -> list[Any]:  # noqa: ANN401 - tvm objects
    """The arrays as TVM tensors on `dev`: on the local CPU from the huge-page arena, without a
    copy; on any other device (a remote one over RPC) uploaded one by one."""
    import tvm

    local_cpu = dev.dlpack_device_type() == tvm.cpu().dlpack_device_type()
    if not local_cpu or not arrays or any(a.nbytes == 0 for a in arrays):
        return [tvm.runtime.tensor(a, dev) for a in arrays]
    return [tvm.runtime.from_dlpack(v) for v in pack_host_arrays(arrays)]

"""runtime/weights.py: the weights a step reads go to TVM in one huge-page arena, unchanged."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import tvm

from tvm_conformer.runtime.weights import ALIGN, upload_weights


def _anon_huge_kb() -> int:
    text = Path("/proc/self/smaps_rollup").read_text()
    return int(re.search(r"AnonHugePages:\s+(\d+) kB", text).group(1))


def test_uploaded_weights_are_the_arrays_aligned_and_on_huge_pages() -> None:
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((256, 2048)).astype(np.float32),  # 2 MB
              rng.integers(-127, 128, (33, 17, 3)).astype(np.int8),  # odd size: the next is realigned
              rng.standard_normal((7,)).astype(np.float32),
              rng.standard_normal((3, 1024, 1024)).astype(np.float32)]  # 12 MB
    before = _anon_huge_kb()
    tensors = upload_weights(arrays, tvm.cpu())
    after = _anon_huge_kb()
    for a, t in zip(arrays, tensors, strict=True):
        got = t.numpy()
        assert got.dtype == a.dtype and got.shape == a.shape
        np.testing.assert_array_equal(got, a)
    ptrs = [np.from_dlpack(t).__array_interface__["data"][0] for t in tensors]
    assert all(p % ALIGN == 0 for p in ptrs)
    # one arena in the arrays' order (views of it, no copies), each aligned as TVM's kernels need
    assert ptrs == sorted(ptrs) and ptrs[-1] - ptrs[0] < sum(a.nbytes + ALIGN for a in arrays[:-1])
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp.exists() and "[never]" not in thp.read_text():
        assert after - before >= 4096  # at least two 2 MB pages of the 16 MB are huge pages


def test_zero_size_and_empty_lists_upload_as_before() -> None:
    assert upload_weights([], tvm.cpu()) == []
    (t,) = upload_weights([np.zeros((0, 4), np.float32)], tvm.cpu())
    assert t.numpy().shape == (0, 4)


def test_the_bench_tvm_engine_uploads_weights_without_torch() -> None:
    """The bench runs each TVM engine in a process where torch cannot be imported (a deployment
    has none): the upload must import there (it once pulled in the recognizer, and so torch)."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"
            "from tvm_conformer.runtime.weights import upload_weights\n"
            "import numpy as np, tvm\n"
            "print(upload_weights([np.ones(3, np.float32)], tvm.cpu())[0].numpy().sum())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "3.0"

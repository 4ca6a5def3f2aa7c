"""The Mali build's kernels run on PoCL against their llvm builds (`verify/opencl_run`): launch
records in the artifact, a wrong index caught, a work-group over the device's limit refused,
"not run" without an OpenCL platform."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tvm_conformer.compiler.artifact import MANIFEST, read_manifest, sha256_file
from tvm_conformer.compiler.kernels import KERNELS_JSON
from tvm_conformer.compiler.link import OPENCL_SOURCE
from tvm_conformer.errors import UserError
from tvm_conformer.verify.checks import check_artifact
from tvm_conformer.verify.opencl_run import FP32_TOL, kernel_sources, run_kernels

pytestmark = pytest.mark.slow  # each compiles the tiny model for mali-g78 (once per session)


def _copy(art: Path, dst: Path, source: str | None = None, **target: int) -> Path:
    """A copy of `art`, with its OpenCL source replaced (and re-hashed, as a compiler bug would
    have produced it) and target limits changed."""
    shutil.copytree(art, dst)
    manifest = json.loads((dst / MANIFEST).read_text())
    if source is not None:
        (dst / OPENCL_SOURCE).write_text(source)
        manifest["files"][OPENCL_SOURCE] = sha256_file(dst / OPENCL_SOURCE)
    manifest["target"].update(target)
    (dst / MANIFEST).write_text(json.dumps(manifest))
    return dst


def test_every_kernel_of_the_mali_build_runs_and_matches_its_llvm_build(artifacts) -> None:  # noqa: ANN001
    art = artifacts("mali-g78", "fp32")
    records = json.loads((art / KERNELS_JSON).read_text())["functions"]
    launches = [ln for r in records for ln in r["launches"]]
    assert len(launches) == len(kernel_sources((art / OPENCL_SOURCE).read_text())) > 20
    assert all(ln["work_group"][0] > 1 for ln in launches)  # thread bindings recorded
    result = run_kernels(art)
    assert result.failures == [] and result.kernels == result.run == result.passed == len(launches)
    assert 0 <= result.worst_error < FP32_TOL and "Portable Computing Language" in result.device
    check = {c.name: c for c in check_artifact(art)}["opencl_run"]
    assert check.ok is True and f"{len(launches)}/{len(launches)} kernels match" in check.detail
    recorded = read_manifest(art)["checks"]["opencl_run"]
    assert recorded["passed"] == recorded["kernels"] == len(launches)


def test_the_launch_records_are_covered_by_the_manifest_hashes(artifacts, tmp_path: Path) -> None:  # noqa: ANN001
    art = _copy(artifacts("mali-g78", "fp32"), tmp_path / "art")
    with open(art / KERNELS_JSON, "a") as f:
        f.write(" ")
    with pytest.raises(UserError, match=KERNELS_JSON):
        read_manifest(art)


def _off_by_one(source: str, kernel: str, what: str) -> str:
    """`source` with the first store (what="store") or load (what="load") of `kernel`'s body
    shifted by one element."""
    head, body = source.split(f"// Function: {kernel}\n", 1)
    definition = body.index(") {\n")
    stmt = r"^(\s+)(\w+_ptr)\[" if what == "store" else r"= (\w+_ptr)\["
    match = re.compile(stmt, re.M).search(body, definition)
    assert match, kernel
    start = match.end()
    body = body[:start] + "1 + " + body[start:]
    return head + f"// Function: {kernel}\n" + body


@pytest.mark.parametrize("what", ["store", "load"])
def test_a_kernel_with_an_index_off_by_one_is_caught(artifacts, tmp_path: Path, what: str) -> None:  # noqa: ANN001
    art = artifacts("mali-g78", "fp32")
    source = (art / OPENCL_SOURCE).read_text()
    kernel = "fused_transpose_reshape_kernel"  # a transpose: every element moves
    broken = _copy(art, tmp_path / "broken", _off_by_one(source, kernel, what))
    result = run_kernels(broken)
    assert result.ok is False and result.passed == result.kernels - 1, result.failures
    failures = " ".join(result.failures)
    assert "fused_transpose_reshape: error" in failures and result.worst_error > 1e-2
    if what == "store":  # the last work item writes one element past the output
        assert "writes outside" in failures


def test_a_work_group_over_the_device_limit_is_refused(artifacts, tmp_path: Path) -> None:  # noqa: ANN001
    art = artifacts("mali-g78", "fp32")
    biggest = max(max(math.prod(ln["work_group"]) for ln in r["launches"])
                  for r in json.loads((art / KERNELS_JSON).read_text())["functions"])
    small = _copy(art, tmp_path / "small", max_work_group_size=biggest - 1)
    result = run_kernels(small)
    assert result.ok is False and result.run < result.kernels
    assert f"work items exceeds the device's {biggest - 1}" in " ".join(result.failures)
    tiny_local = _copy(art, tmp_path / "local", local_mem_bytes=4)
    assert "bytes of local memory exceed the device's 4" in " ".join(run_kernels(tiny_local).failures)


def test_without_an_opencl_platform_the_check_says_not_run(artifacts, tmp_path: Path) -> None:  # noqa: ANN001
    art = artifacts("mali-g78", "fp32")
    code = ("import sys; from tvm_conformer.verify.opencl_run import run_kernels; "
            "r = run_kernels(sys.argv[1]); print(r.ok, r.summary())")
    env = dict(os.environ, OCL_ICD_VENDORS=str(tmp_path))  # an empty vendor directory
    out = subprocess.run([sys.executable, "-c", code, str(art)], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.startswith("None not run: no OpenCL platform here"), out


def test_integer_inputs_are_seeded_in_range():
    """A contract model's `offset` and `take` indices are int64: seeded in [0, 1], in range for
    any gathered axis (before, such kernels were refused and the contract Mali build failed)."""
    import numpy as np

    from tvm_conformer.verify.opencl_run import _seeded_input

    x = _seeded_input("offset", [64], "int64", np.random.default_rng(0))
    assert x.dtype == np.int64 and set(np.unique(x)) == {0, 1}

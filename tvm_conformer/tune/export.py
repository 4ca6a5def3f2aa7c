"""The builder's export step, in a module light enough for MetaSchedule's worker processes."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tvm_conformer.targets import DeviceTarget


def export_candidate(device: DeviceTarget, mod) -> str:  # noqa: ANN001 - tvm.runtime.Module
    """Links one candidate for `device` the way `compile` does, into a fresh directory:
    MetaSchedule deletes the artifact's parent directory after measuring it."""
    from tvm_conformer.compiler.link import export

    path = Path(tempfile.mkdtemp(prefix="tvm-conformer-tune-")) / "lib.so"
    export(mod, device, path)
    return str(path)

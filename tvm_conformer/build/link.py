"""Link a compiled executable into a shared library for its device."""

from __future__ import annotations

import shutil
from pathlib import Path

from tvm_conformer.errors import UserError
from tvm_conformer.targets import DeviceTarget

_APT = {"aarch64-linux-gnu-g++": "g++-aarch64-linux-gnu",
        "arm-linux-gnueabihf-g++": "g++-arm-linux-gnueabihf", "ld.lld": "lld"}


def require_tool(tool: str, device: DeviceTarget) -> str:
    """The tool's path, or a one-line error naming the package that provides it."""
    path = shutil.which(tool)
    if path is None:
        pkg = _APT.get(tool)
        fix = f"apt-get install {pkg}" if pkg else f"install {tool} or set `cc` in {device.path}"
        raise UserError(f"cross-compiler {tool!r} for target {device.name!r} not found: {fix}")
    return path


def export(ex, device: DeviceTarget, path: Path) -> None:  # noqa: ANN001 - relax VMExecutable
    """Writes `ex` as a shared library for `device` to `path`."""
    import tvm

    if device.linker == "lld":
        lld = require_tool("ld.lld", device)

        def fcompile(output, objects, options=None):  # noqa: ANN001, ANN202
            import subprocess

            subprocess.run([lld, "-shared", "-o", output, *objects], check=True)

        fcompile.output_format = "o"
        ex.export_library(str(path), fcompile=fcompile)
    elif device.cc:
        require_tool(device.cc, device)
        ex.export_library(
            str(path), fcompile=tvm.support.cc.cross_compiler(device.cc, options=device.cc_options)
        )
    else:
        ex.export_library(str(path))

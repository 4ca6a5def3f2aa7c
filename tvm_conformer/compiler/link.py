"""Link a compiled executable into a shared library for its device."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tvm_conformer.errors import UserError
from tvm_conformer.targets import DeviceTarget

OPENCL_SOURCE = "kernels.cl"  # beside lib.so for OpenCL devices: the kernels `check` compiles

# Debian packages of the tools that are not named after their package
_APT = {"ld.lld": "lld", "readelf": "binutils", "llvm-objdump": "llvm",
        "clang": "clang", "file": "file"}


def apt_package(tool: str) -> str:
    """The Debian package that provides `tool`; cross compilers follow Debian's naming
    (`aarch64-linux-gnu-g++` is in `g++-aarch64-linux-gnu`)."""
    if tool in _APT:
        return _APT[tool]
    triple, sep, name = tool.rpartition("-")
    if sep and name in ("g++", "gcc"):
        return f"{name}-{triple}"
    return tool


def require_tool(tool: str, what: str) -> str:
    """The tool's path, or a one-line error naming the package that provides it."""
    path = shutil.which(tool)
    if path is None:
        raise UserError(f"{tool!r} ({what}) not found: apt-get install {apt_package(tool)}")
    return path


def linker_tool(device: DeviceTarget) -> str | None:
    """The program that links `device`'s libraries; None: TVM's default C++ compiler."""
    return "ld.lld" if device.linker == "lld" else device.cc


def require_linker(device: DeviceTarget) -> str | None:
    """The linker's path; checked before compiling, so a missing one costs no compile time."""
    tool = linker_tool(device)
    return tool and require_tool(tool, f"the cross-compiler for target {device.name!r}")


def opencl_source(ex) -> str | None:  # noqa: ANN001 - relax VMExecutable or runtime.Module
    """The OpenCL C of every kernel in `ex` (a module of kind `opencl` among the imports)."""
    import tvm

    # a tuning candidate is a runtime.Module (whose attribute lookup would JIT-load its code)
    pending = list((ex if isinstance(ex, tvm.runtime.Module) else ex.mod).imports)
    while pending:
        module = pending.pop()
        if module.kind == "opencl":
            return module.inspect_source()
        pending.extend(module.imports)
    return None


def export(ex, device: DeviceTarget, path: Path) -> None:  # noqa: ANN001 - relax VMExecutable
    """Writes `ex` as a shared library for `device` to `path`, and for OpenCL devices the
    kernels' source to `kernels.cl` beside it (the library embeds it; this copy is for checks)."""
    import tvm

    tool = require_linker(device)
    if device.linker == "lld":

        def fcompile(output, objects, options=None):  # noqa: ANN001, ANN202
            subprocess.run([tool, "-shared", "-o", output, *objects], check=True)

        fcompile.output_format = "o"
        ex.export_library(str(path), fcompile=fcompile)
    elif device.cc:
        ex.export_library(
            str(path), fcompile=tvm.support.cc.cross_compiler(tool, options=device.cc_options)
        )
    else:
        ex.export_library(str(path))
    source = opencl_source(ex)
    if source is not None:
        (path.parent / OPENCL_SOURCE).write_text(source)

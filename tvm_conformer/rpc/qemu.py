"""qemu-user for the emulated board: which `-cpu` model emulates a core, and the wrapper script
that runs the board's aarch64 Python under `qemu-aarch64` (`$TVM_CONFORMER_BOARD_CPU` picks the
core)."""

from __future__ import annotations

import functools
import shlex
import shutil
import subprocess
from pathlib import Path

from tvm_conformer.errors import UserError

CPUS = ("cortex-a55", "cortex-a53", "cortex-a72", "cortex-a76")
DEFAULT_CPU = "cortex-a55"
CPU_ENV = "TVM_CONFORMER_BOARD_CPU"
# qemu model to emulate a core that this qemu lacks (qemu < 8 has no cortex-a55): same ISA.
QEMU_FALLBACK = {"cortex-a55": "cortex-a76"}


@functools.cache
def qemu_cpu(cpu: str) -> str:
    """The qemu `-cpu` model that emulates `cpu`: itself, or a same-ISA stand-in if qemu lacks it."""
    require_qemu()
    # `-cpu help` lists the models but exits with status 1.
    res = subprocess.run(["qemu-aarch64", "-cpu", "help"], capture_output=True, text=True)
    models = res.stdout.split()
    if cpu in models:
        return cpu
    if QEMU_FALLBACK.get(cpu) in models:
        return QEMU_FALLBACK[cpu]
    raise UserError(f"this qemu-aarch64 cannot emulate {cpu}; it knows {', '.join(models[2:])}")


def require_qemu() -> None:
    """UserError unless `qemu-aarch64` is on PATH."""
    if shutil.which("qemu-aarch64") is None:
        raise UserError("qemu-aarch64 is missing; install it with `apt-get install qemu-user`")


def write_wrap(wrap: Path, root: Path, site: Path) -> None:
    """Write `wrap`: a shell script running the Python in `root` under qemu, wheels from `site`."""
    python = root / "usr" / "bin" / "python3.11"
    text = (
        "#!/bin/sh\n"
        f"# tvm-conformer's emulated aarch64 Python; ${CPU_ENV} picks the core.\n"
        f"export PYTHONPATH={shlex.quote(str(site))}\n"
        "export PYTHONNOUSERSITE=1\n"
        f"exec qemu-aarch64 -L {shlex.quote(str(root))} -0 {shlex.quote(str(wrap))} "
        f'-cpu "${{{CPU_ENV}:-{qemu_cpu(DEFAULT_CPU)}}}" {shlex.quote(str(python))} "$@"\n'
    )
    wrap.write_text(text)
    wrap.chmod(0o755)

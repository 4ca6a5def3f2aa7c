"""What a device behind an RPC session is: its architecture, CPU and thread count, and whether it
is an emulated board; the architecture an artifact needs.

The stock RPC servers have no "what machine is this" call, so the architecture comes from the
device's own LLVM (`target.llvm_get_system_triple`: the triple its TVM library was built for,
i.e. the architecture of the process serving us) and the CPU from LLVM's host-CPU detection on
the device (`target.llvm_get_system_cpu`, which reads the device's /proc/cpuinfo). A device whose
TVM runtime has no LLVM (the Android RPC app, a runtime-only build) reports neither; its
architecture is then not checked, and the run says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tvm_conformer.compiler.compat import normalize_arch
from tvm_conformer.rpc.watchdog import resolve

EMULATION_LABEL = "emulation (qemu), not device timings"
DEVICE_LABEL = "device timings"

@dataclass(frozen=True)
class DeviceInfo:
    """What is known about the device behind a session, and where each fact comes from."""

    key: str
    tracker: str
    arch: str | None  # None: the device does not say (then not checked)
    arch_source: str
    cpu: str
    threads: int | None  # the device runtime's default thread-pool size (the cores it sees)
    emulated: bool
    emulation_evidence: str  # why it counts as emulated ("" when nothing says so)

    @property
    def label(self) -> str:
        return EMULATION_LABEL if self.emulated else DEVICE_LABEL

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "label": self.label}


def _remote_string(session: Any, name: str) -> str | None:
    """`name()` on the device, or None when the device's runtime has no such function."""
    try:
        return str(session.get_function(name)())
    except (AttributeError, RuntimeError):
        return None


def _local_qemu_servers(servers: list[tuple[str, int]]) -> list[list[str]]:
    """Command lines of qemu processes on this machine listening at one of `servers`."""
    import psutil

    ports = {port for host, port in servers if resolve(host).startswith("127.")}
    found = []
    for conn in psutil.net_connections(kind="tcp") if ports else []:
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port in ports and conn.pid:
            try:
                cmd = psutil.Process(conn.pid).cmdline()
            except psutil.Error:
                continue
            if cmd and "qemu" in Path(cmd[0]).name:
                found.append(cmd)
    return found


def emulation_evidence(key: str, servers: list[tuple[str, int]]) -> str:
    """Why device `key` is an emulated board ("" if nothing says so): an RPC server under `key`
    that is a qemu process on this machine (any board of `start_board`, whatever its key), or
    the key of a board started by `tvm-conformer board up` (`qemu-CPU`)."""
    qemu = _local_qemu_servers(servers)
    if qemu:
        cmd = qemu[0]
        cpu = cmd[cmd.index("-cpu") + 1] if "-cpu" in cmd[:-1] else "its default core"
        return f"its RPC server is a local {Path(cmd[0]).name} process emulating {cpu}"
    if key.startswith("qemu"):
        return f"the key {key!r} names a board of `tvm-conformer board up`"
    return ""


def probe_device(session: Any, key: str, tracker: tuple[str, int],
                 servers: list[tuple[str, int]]) -> DeviceInfo:
    """Ask the device for its architecture and CPU, and tell whether it is emulated."""
    triple = _remote_string(session, "target.llvm_get_system_triple")
    cpu = _remote_string(session, "target.llvm_get_system_cpu")
    threads = _remote_string(session, "runtime.NumThreads")
    if triple:
        arch, source = normalize_arch(triple.split("-")[0]), f"the device's LLVM triple {triple}"
    else:
        arch, source = None, "not reported (the device's TVM runtime has no LLVM)"
    cpu_text = f"{cpu} (LLVM host-CPU detection on the device)" if cpu else "not reported"
    evidence = emulation_evidence(key, servers)
    return DeviceInfo(key, f"{tracker[0]}:{tracker[1]}", arch, source, cpu_text,
                      int(threads) if threads else None, bool(evidence), evidence)

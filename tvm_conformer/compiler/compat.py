"""Can this code run here? The one answer for the runtime, the RPC runner, `verify` and `tune`.

An artifact's library is native code: what it runs on is what its ELF header says (machine and
class, read here from the file, whatever the manifest claims), and the CPU features its code
was generated for (the target's `mcpu`/`mattr`, recorded in the manifest by `compile` as LLVM
feature names) must all be in this CPU's `/proc/cpuinfo` flags, or the first AVX-512 (or
SVE, ...) instruction kills the process with SIGILL.
"""

from __future__ import annotations

import platform
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tvm_conformer.errors import UserError

CPUINFO = Path("/proc/cpuinfo")
_ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "x86-64": "x86_64", "i686": "x86",
                 "i386": "x86"}
# e_machine -> (architecture, what `readelf -h` prints: the targets' `elf_machine`)
ELF_MACHINES = {3: ("x86", "Intel 80386"), 62: ("x86_64", "Advanced Micro Devices X86-64"),
                40: ("arm", "ARM"), 183: ("aarch64", "AArch64"), 164: ("hexagon", "QUALCOMM DSP6")}
# the ELF class each machine's code has (by its `readelf` name)
ELF_BITS = {"Intel 80386": 32, "Advanced Micro Devices X86-64": 64, "ARM": 32, "AArch64": 64,
            "QUALCOMM DSP6": 32}
# LLVM feature name -> /proc/cpuinfo flag, for the features that add instructions (LLVM's
# tuning-only features such as "fast-15bytenop" have no flag and are not checked)
X86_FLAGS = {
    **{f: f for f in ("sse", "sse2", "ssse3", "sse4a", "avx", "avx2", "fma", "f16c", "popcnt",
                      "movbe", "aes", "vaes", "vpclmulqdq", "gfni", "bmi2", "adx", "xsave",
                      "cx16", "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl",
                      "avx512ifma", "avx512vbmi")},
    "sse3": "pni", "sse4.1": "sse4_1", "sse4.2": "sse4_2", "pclmul": "pclmulqdq", "bmi": "bmi1",
    "sha": "sha_ni", "lzcnt": "abm", "amx-tile": "amx_tile", "amx-int8": "amx_int8",
    "amx-bf16": "amx_bf16", "avxvnni": "avx_vnni", "avx512bf16": "avx512_bf16",
    "avx512fp16": "avx512_fp16", "avx512vbmi2": "avx512_vbmi2", "avx512vnni": "avx512_vnni",
    "avx512bitalg": "avx512_bitalg", "avx512vpopcntdq": "avx512_vpopcntdq",
}
AARCH64_FLAGS = {"neon": "asimd", "fp-armv8": "fp", "fullfp16": "asimdhp", "dotprod": "asimddp",
                 "sve": "sve", "sve2": "sve2", "i8mm": "i8mm", "bf16": "bf16", "crc": "crc32",
                 "lse": "atomics", "rdm": "asimdrdm", "fp16fml": "asimdfhm", "crypto": "aes",
                 "sha2": "sha2", "aes": "aes"}
CPU_FLAGS = {**X86_FLAGS, **AARCH64_FLAGS}
RECOMPILE = "recompile with --target host on this machine"


@dataclass(frozen=True)
class ElfHeader:
    machine: int  # e_machine
    bits: int  # 32 or 64 (EI_CLASS)

    @property
    def arch(self) -> str:
        return ELF_MACHINES.get(self.machine, (f"machine {self.machine}", ""))[0]

    @property
    def name(self) -> str:
        """What `readelf -h` prints as Machine (the targets' `elf_machine`)."""
        return ELF_MACHINES.get(self.machine, ("", f"machine {self.machine}"))[1]

    def __str__(self) -> str:
        return f"ELF{self.bits} {self.name}"


def read_elf_header(path: str | Path) -> ElfHeader:
    """Machine and class from the file's first 20 bytes; UserError if it is not ELF."""
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
        raise UserError(f"{path} is not an ELF shared library (corrupted or replaced); rebuild "
                        "with `tvm-conformer compile`")
    (machine,) = struct.unpack_from("<H" if head[5] == 1 else ">H", head, 18)
    return ElfHeader(machine, 32 if head[4] == 1 else 64)


def normalize_arch(name: str) -> str:
    """One name per architecture: `arm64` -> `aarch64`, `armv7a`/`armv7l` -> `arm`, ..."""
    name = _ARCH_ALIASES.get(name.lower(), name.lower())
    return "arm" if name.startswith("arm") else name


def host_arch() -> str:
    return normalize_arch(platform.machine())


def host_bits() -> int:
    return struct.calcsize("P") * 8


def triple_arch(tvm_target: dict[str, Any]) -> str | None:
    triple = tvm_target.get("mtriple") or ""
    return normalize_arch(triple.split("-")[0]) if triple else None


def target_runs_here(device: Any) -> bool:  # noqa: ANN401 - targets.DeviceTarget
    """Whether this machine can execute code built for `device` (before building it)."""
    arch = triple_arch(device.tvm_target)
    return device.family == "cpu" and arch in (None, host_arch())


def library_arch(art: str | Path) -> str:
    """The architecture of an artifact's library, from its ELF header."""
    from tvm_conformer.compiler.artifact import LIB

    return read_elf_header(Path(art) / LIB).arch


def cpu_flags(cpuinfo: Path | None = None) -> set[str] | None:
    """This CPU's feature flags (`flags` on x86, `Features` on Arm); None if unknown."""
    try:
        text = (cpuinfo or CPUINFO).read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return set(value.split())
    return None


def host_cpu_identity() -> str:
    """This CPU's model and flags, for cache keys (a build for one CPU is not another's)."""
    from tvm_conformer.compiler.database import host_cpu

    return f"{host_cpu()}: {' '.join(sorted(cpu_flags() or ()))}"


def required_cpu_features(tvm_target: Any) -> list[str]:  # noqa: ANN401 - tvm.target.Target
    """The instruction-set features (LLVM names with a /proc/cpuinfo flag) the code generated
    for `tvm_target` may use: its mcpu's features plus its mattr."""
    import tvm

    if tvm_target.kind.name != "llvm":
        return []
    features = tvm.get_global_func("target.llvm_get_cpu_features")(tvm_target)
    return sorted(str(f) for f in features if str(f) in CPU_FLAGS)


def missing_cpu_features(required: list[str], flags: set[str]) -> list[str]:
    return [f for f in required if f in CPU_FLAGS and CPU_FLAGS[f] not in flags]


def check_runs_here(manifest: dict, art: str | Path) -> None:
    """Refuses an artifact whose code cannot run on this machine: its library's ELF header
    (machine, class), its target's family and triple, and the CPU features it was built for."""
    from tvm_conformer.compiler.artifact import LIB

    art = Path(art)
    target = manifest["target"]
    here = host_arch()
    elf = read_elf_header(art / LIB)
    claimed = triple_arch(target["tvm"]) or here
    if elf.arch != here or elf.bits != host_bits() or target["family"] != "cpu" or claimed != here:
        what = f"{art / LIB} is {elf} code"
        if claimed != here or target["family"] != "cpu":
            what = (f"{art} was built for {target['name']} ({target['family']}, {claimed}); "
                    f"its {LIB} is {elf} code")
        raise UserError(f"{what}, this machine is {here} ({host_bits()}-bit): run it on the "
                        "device with --rpc-key KEY, or compile with --target host")
    flags = cpu_flags()
    missing = missing_cpu_features(target["cpu_features"], flags) if flags is not None else []
    if missing:
        raise UserError(f"{art} was built for a CPU with {', '.join(missing)}, which this CPU "
                        f"lacks (its code would stop with an illegal instruction): {RECOMPILE}")

"""Checks of a compiled artifact that need no device: the library's ELF header, SIMD code in its
kernels (NEON, HVX), the int8 dot product in int8 builds' linears, its OpenCL kernels through
clang and run on PoCL, and loading it where this machine can."""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tvm_conformer.compiler.artifact import LIB, read_manifest
from tvm_conformer.compiler.compat import ELF_BITS, check_runs_here, read_elf_header
from tvm_conformer.compiler.link import OPENCL_SOURCE, require_tool
from tvm_conformer.errors import UserError

# A vector instruction, per ISA, in `llvm-objdump -d` text (mnemonic and operands)
# AArch64: a vector arrangement (fmla v0.4s, ld1 {v1.8h}); a lone q register is not NEON
# (`ldr q0`/`ldp q1, q2` move 16 bytes in scalar code, memcpy among it, even with -neon)
NEON_A64 = re.compile(r"\bv\d+\.(16b|8b|8h|4h|4s|2s|2d|1d|1q)\b")
NEON_A32 = re.compile(r"\bq\d+\b|^\s*v(ld|st)\d|^\s*v\w+\.[fiu](8|16|32)\s+d\d+")  # not VFP s-regs
HVX = re.compile(r"\bv\d+(:\d+)?\b|\bvmem\(")  # v0.qf32 = vmpy(v1.sf,v2.sf); vmem(r0+#0)
_HVX_DISASM = ["--mcpu=hexagonv68", "--mattr=+hvxv68,+hvx-length128b"]  # else HVX is <unknown>
_A64_DISASM = ["--mattr=+fullfp16"]  # else fp16 arithmetic (fmla v0.8h) is <unknown>
# The int8 dot product of each scheme (passes/quantize_int8.py), per ELF machine where it differs
INT8_DOT = {  # isa -> (what the detail calls it, its pattern)
    "vnni": ("vpdpbusd", re.compile(r"\bvpdpbusd\b")),
    "avx2": ("vpmaddubsw", re.compile(r"\bvpmaddubsw\b")),
    "sdot": ("sdot", re.compile(r"\bsdot\b")),
    # without sdot: widening multiplies, or (our vector intrinsic, schedules/int8.py) int8 loads
    # widened to int32 lanes and multiply-accumulated there
    "neon": ("smull/smlal/sadalp or mla.4s", re.compile(r"\b(smlal2?|smull2?|sadalp|saddlp)\b"
                                                         r"|\bmla\s+v\d+\.4s")),
    "neon-a32": ("vmull/vmlal/vpadal or vmla.i32",
                 re.compile(r"\bv(mlal|mull|padal)\.s(8|16)\b|\bvmla\.i32\b")),
    "hvx": ("vrmpy", re.compile(r"\bvrmpy\(")),
}
INT8_KERNEL = "int8_matmul"  # in the name of every kernel the int8 linears fuse into
MIN_SIMD_MACS = 0.9  # small kernels may stay scalar (the tiny test model's attention einsums)


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool | None  # None: not applicable here (skipped)
    detail: str


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def check_elf(lib: Path, machine: str | None) -> CheckResult:
    """The library's machine (read from its ELF header) is `machine` and its class fits it."""
    header = read_elf_header(lib)
    detail = str(header)
    if machine is None:
        return CheckResult("elf", None, f"{detail} (the target names no elf_machine)")
    want_bits = ELF_BITS.get(machine)
    ok = header.name == machine and want_bits in (None, header.bits)
    expected = " ".join(x for x in (want_bits and f"ELF{want_bits}", machine) if x)
    return CheckResult("elf", ok, f"{detail}; expected {expected}")


def vector_counts(disassembly: str, pattern: re.Pattern) -> dict[str, tuple[int, int]]:
    """Kernel -> (vector instructions, instructions) in `llvm-objdump -d` output; a kernel's
    code is its `__tvm_ffi_NAME` wrapper plus the `NAME_compute_` body LLVM may split off (and
    the unnamed parallel-loop bodies LLVM emits after it, up to the next symbol)."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    current = None
    for line in disassembly.splitlines():
        header = re.match(r"^[0-9a-f]+ <([^>]+)>:", line)
        if header:
            symbol = header.group(1)
            if symbol.endswith("@plt"):  # a call stub into another library: no kernel's code
                current = None
            elif not symbol.startswith("$"):  # $x/$d: Arm mapping symbols inside a function
                kernel = symbol.startswith("__tvm_ffi_") or symbol.endswith("_compute_")
                name = symbol.removeprefix("__tvm_ffi_").removesuffix("_compute_")
                current = name if kernel else None
            continue
        fields = line.split("\t")  # address and bytes, then the instruction (Hexagon: word, packet)
        if current is None or len(fields) < 2:
            continue
        instruction = "\t".join(fields[1:])
        counts[current][1] += 1
        counts[current][0] += bool(pattern.search(instruction))
    return {k: (v[0], v[1]) for k, v in counts.items()}


def check_simd(lib: Path, isa: str, pattern: re.Pattern, objdump_flags: list[str],
               kernel_macs: dict[str, int]) -> CheckResult:
    """The kernels holding at least `MIN_SIMD_MACS` of the step's multiply-accumulates contain
    `isa` vector instructions (`kernel_macs`: from the manifest)."""
    objdump = require_tool("llvm-objdump", "disassembles the library")
    counts = vector_counts(_run([objdump, "-d", *objdump_flags, str(lib)]).stdout, pattern)
    total_macs = sum(kernel_macs.values()) or 1
    scalar = {k: m for k, m in kernel_macs.items() if counts.get(k, (0, 0))[0] == 0}
    share = 1 - sum(scalar.values()) / total_macs
    detail = (f"{sum(v for v, _ in counts.values())} {isa} instructions in "
              f"{sum(1 for v, _ in counts.values() if v)}/{len(counts)} kernels; "
              f"{share:.1%} of the MACs in vector code")
    if scalar:
        detail += "; scalar: " + ", ".join(f"{k} ({m / total_macs:.1%})" for k, m in
                                          sorted(scalar.items(), key=lambda x: -x[1]))
    return CheckResult(isa.lower(), bool(kernel_macs) and share >= MIN_SIMD_MACS, detail)


def check_int8(lib: Path, isa: str, objdump_flags: list[str]) -> CheckResult:
    """Every int8 linear kernel (named after `int8_matmul`) contains the scheme's int8 dot
    product instruction (`INT8_DOT[isa]`: vpdpbusd, vpmaddubsw, sdot, NEON widening
    multiply-adds, vrmpy)."""
    objdump = require_tool("llvm-objdump", "disassembles the library")
    name, pattern = INT8_DOT[isa]
    counts = vector_counts(_run([objdump, "-d", *objdump_flags, str(lib)]).stdout, pattern)
    kernels = {k: v for k, v in counts.items() if INT8_KERNEL in k}
    without = sorted(k for k, (n, _) in kernels.items() if n == 0)
    detail = (f"{sum(n for n, _ in kernels.values())} {name} in "
              f"{len(kernels) - len(without)}/{len(kernels)} int8 kernels")
    if without:
        detail += "; without: " + ", ".join(without[:5]) + (" ..." if len(without) > 5 else "")
    return CheckResult(f"int8-{isa.removesuffix('-a32')}", bool(kernels) and not without, detail)


def check_opencl(source: Path) -> CheckResult:
    """The OpenCL C the library embeds compiles (syntax and types) as OpenCL 2.0."""
    if not source.is_file():
        return CheckResult("opencl", False, f"{source.name} missing; rebuild with `tvm-conformer compile`")
    clang = require_tool("clang", "checks OpenCL C")
    proc = _run([clang, "-x", "cl", "-cl-std=CL2.0", "-fsyntax-only", "-Xclang",
                 "-finclude-default-header", str(source)])
    kernels = len(re.findall(r"__kernel\b", source.read_text()))
    if proc.returncode:
        return CheckResult("opencl", False, f"clang rejects {source.name}: "
                           f"{proc.stderr.strip().splitlines()[0]}")
    return CheckResult("opencl", True, f"{kernels} kernels in {source.name} pass clang -cl-std=CL2.0")


def check_opencl_run(art: Path) -> CheckResult:
    """Every OpenCL kernel launched here (PoCL) against its llvm build (`verify/opencl_run`);
    the result goes into the manifest as `checks.opencl_run`."""
    from tvm_conformer.verify.opencl_run import record_result, run_kernels

    result = run_kernels(art)
    record_result(art, result)
    return CheckResult("opencl_run", result.ok, result.summary())


def check_loads(art: Path, machine: str | None) -> CheckResult:
    """On a matching machine: the artifact loads and one step gives finite log-probabilities
    of the right shape; elsewhere, what `file` says about the library."""
    try:
        check_runs_here(read_manifest(art), art)
    except UserError as why:
        out = _run([require_tool("file", "identifies the library"), "-b", str(art / LIB)]).stdout
        ok = "shared object" in out
        return CheckResult("loads", ok, f"not runnable here ({str(why).split(': ')[-1]}); file: "
                           f"{out.split(',')[0].strip()}{'' if ok else ' (not a shared object)'}")
    import numpy as np

    from tvm_conformer.runtime.tvm_backend import TVMBackend

    backend = TVMBackend.load(art)
    spec = getattr(backend, "spec", None)
    if spec is not None:  # a model of the streaming-CTC contract: its shapes, a bool mask
        shapes = spec.input_shapes()
        feats = np.zeros(shapes["x"], np.float32)
        mask = np.ones(shapes["attn_mask"], bool)
        shape = (spec.chunk_size, spec.vocab_size)
    else:
        cfg = backend.config
        feats = np.zeros((1, cfg.chunk_input_frames, cfg.n_mels), np.float32)
        mask = np.ones((1, cfg.left_frames + cfg.chunk_size), np.float32)
        shape = (cfg.chunk_size, cfg.vocab_size)
    log_probs, _ = backend.step(backend.initial_state(), feats, mask)
    ok = log_probs.shape == shape and bool(np.isfinite(log_probs).all())
    return CheckResult("loads", ok, f"loaded and ran one step: log-probs {log_probs.shape}, "
                       f"{'finite' if ok else f'expected finite {shape}'}")


def check_artifact(art_dir: str | Path) -> list[CheckResult]:
    """Every check that applies to the artifact's target."""
    art = Path(art_dir)
    manifest = read_manifest(art)
    target = manifest["target"]
    machine = target.get("elf_machine")
    from tvm_conformer.compiler.roofline import manifest_work

    lib = art / LIB
    kernel_macs = manifest_work(manifest, art).kernel_macs
    results = [check_elf(lib, machine)]
    if target["family"] == "mali":
        results.append(check_opencl(art / OPENCL_SOURCE))
        results.append(check_opencl_run(art))
    elif target["family"] == "hexagon":
        results.append(check_simd(lib, "HVX", HVX, _HVX_DISASM, kernel_macs))
    elif machine == "ARM" and manifest["pipeline"]["precision"] == "fp16":
        results.append(CheckResult("neon", None, "fp16 on 32-bit Arm: no half-precision "
                                   "arithmetic, LLVM computes each element in scalar VFP"))
    elif machine == "AArch64":
        results.append(check_simd(lib, "NEON", NEON_A64, _A64_DISASM, kernel_macs))
    elif machine == "ARM":
        results.append(check_simd(lib, "NEON", NEON_A32, [], kernel_macs))
    if manifest["pipeline"]["precision"] == "int8":
        isa = manifest["int8"]["isa"]
        flags = _HVX_DISASM if isa == "hvx" else _A64_DISASM if machine == "AArch64" else []
        if isa == "sdot":
            flags = ["--mattr=+fullfp16,+dotprod"]
        results.append(check_int8(lib, f"{isa}-a32" if isa == "neon" and machine == "ARM" else isa,
                                  flags))
    results.append(check_loads(art, machine))
    return results


MARK = {True: "ok", False: "FAIL", None: "skip"}


def format_table(rows: list[list[str]]) -> str:
    """Rows of cells as aligned columns (the first row is the header)."""
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip()
                     for row in rows)


def format_checks(name: str, results: list[CheckResult]) -> str:
    """A table: check, result, detail."""
    rows = [[r.name, MARK[r.ok], r.detail] for r in results]
    return f"checks of {name}:\n" + format_table([["check", "result", "detail"], *rows])

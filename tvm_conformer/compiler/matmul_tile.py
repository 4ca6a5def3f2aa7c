"""The register tile of the CPU matmul schedule (schedules/cpu.py `Matmul`) and the weight panels
that match it (passes/pack_weights.py), from the target's real SIMD registers.

`llvm_get_vector_width` reports 512 bits for every x86 target here, the AVX2-only VM of this
project included (`mcpu` resolves to znver3: 16 ymm registers of 8 fp32 lanes), so a 16-lane
column tile became two ymm registers per row and 8 rows of it 16 accumulators, all of the
register file: LLVM spilled accumulators to the stack inside the reduction loop. The tile is
now sized from the target's features: a row of the tile is `VECTORS_PER_ROW` registers, and
the rows are as many as fit beside them (one register per vector of the weight row, one for the
broadcast of the input).
"""

from __future__ import annotations

from tvm.target import Target
from tvm.target.codegen import llvm_get_cpu_features, llvm_get_vector_width

VECTORS_PER_ROW = 2  # two independent weight loads per broadcast: loads stay below the FMAs
HVX_BITS = 1024  # Hexagon with +hvx-length128b (LLVM reports 128 bits, the scalar width)


def _arch(target: Target) -> str:
    triple = str(target.attrs.get("mtriple", "") or "")
    return triple.split("-")[0] if triple else "x86_64"


def simd_bits(target: Target) -> int:
    """Width of the target's widest fp32 vector register."""
    arch = _arch(target)
    if arch == "hexagon":
        return HVX_BITS
    if arch.startswith(("aarch64", "arm")):
        return 128
    if arch in ("x86_64", "i386", "i686"):
        features = {str(k) for k in llvm_get_cpu_features(target)}
        return 512 if "avx512f" in features else 256 if "avx" in features else 128
    width = llvm_get_vector_width(target)
    return width if width > 0 else 128


def vector_registers(target: Target) -> int:
    """SIMD registers the code generator can allocate."""
    arch = _arch(target)
    if arch.startswith("aarch64") or arch == "hexagon":
        return 32
    if arch in ("x86_64",) and simd_bits(target) == 512:
        return 32
    return 16  # x86 AVX2/SSE (ymm/xmm0-15), 32-bit Arm NEON (q0-q15)


def fp32_lanes(target: Target) -> int:
    return max(simd_bits(target) // 32, 1)


def column_tile(target: Target) -> int:
    """Columns of the register tile (and of a packed weight panel) when they divide the output."""
    return VECTORS_PER_ROW * fp32_lanes(target)


def max_tile_rows(target: Target, columns: int) -> int:
    """Rows of accumulators that fit the register file beside one weight row and a broadcast."""
    vectors = -(-columns // fp32_lanes(target))
    return max((vector_registers(target) - vectors - 1) // vectors, 1)

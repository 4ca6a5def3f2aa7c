"""`VectorizeInnermost`: a dlight rule that gives CPU-like targets SIMD code in every kernel.

LLVM does not vectorize a floating-point reduction loop (that would reassociate the sum), nor
any fp32 loop for 32-bit Arm NEON (not IEEE-exact), and the Hexagon backend vectorizes nothing
on its own. So the rule vectorizes explicitly, along the innermost spatial axis:

- injective blocks (elementwise, broadcast, concatenate, transpose): that axis as it is;
- reduction blocks (matmul, convolution) whose innermost spatial axis is the last index of every
  buffer it touches: that axis moved inside the reduction loops, so each step is a broadcast
  multiply-add over a contiguous row, e.g. C[i, j:j+L] += A[i, k] * B[k, j:j+L].

Functions with any other block (row reductions of softmax and LayerNorm) are left to the next rule.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.analysis import (
    SBlockInfo,
    collect_vars_used_in_prim_expr,
    normalize_prim_func,
)
from tvm.s_tir.dlight.base import try_inline
from tvm.target import Target
from tvm.target.codegen import llvm_get_vector_width


def _lanes(extent: int, max_lanes: int) -> int | None:
    """The most lanes, up to `max_lanes`, that divide `extent`, a power of two: odd-sized
    vectors (20 lanes of a bool-masked select) kept the Hexagon backend busy for over 10 minutes."""
    lanes = min(extent & -extent, max_lanes)  # extent & -extent: its largest power-of-two factor
    return lanes if lanes >= 2 else None


def _innermost_spatial(info: SBlockInfo):  # noqa: ANN202 - dlight IterInfo
    return [it for it in info.iters if it.kind == "S"][-1]


def _supported(sch: s_tir.Schedule, info: SBlockInfo) -> bool:
    """Injective, or a reduction whose innermost spatial axis indexes only the last dimension of
    every buffer it touches (a vector along it is then a row, never a gather across rows)."""
    kinds = info.dom_kind()
    if "O" in kinds or "S" not in kinds:
        return False
    if info.is_injective():
        return True
    block = sch.get(info.block_rv)
    var = _innermost_spatial(info).var
    return not any(
        var in collect_vars_used_in_prim_expr(dim.min)
        for region in [*block.reads, *block.writes]
        for dim in region.region[:-1]
    )


class VectorizeInnermost(dl.ScheduleRule):
    """Vectorizes the innermost spatial loop of every block by `vector_bits` worth of lanes."""

    def __init__(self, vector_bits: int | None = None) -> None:
        """`vector_bits`: SIMD register width (None: what LLVM reports for the target)."""
        self.vector_bits = vector_bits

    def is_target_available(self, target: Target) -> bool:
        return target.kind.name == "llvm"

    def apply(
        self, func: tirx.PrimFunc, target: Target, _tunable: bool
    ) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if infos is None:
            return None
        infos = try_inline(sch, infos)
        if not all(_supported(sch, info) for info in infos):
            return None
        vector_bits = self.vector_bits or llvm_get_vector_width(target)
        lanes = [self._block_lanes(sch, info, vector_bits) for info in infos]
        if not any(lanes):
            return None
        for info, n in zip(infos, lanes, strict=True):
            if n:
                self._vectorize(sch, info, n)
        return sch

    @staticmethod
    def _block_lanes(sch: s_tir.Schedule, info: SBlockInfo, vector_bits: int) -> int | None:
        extent = _innermost_spatial(info).dom
        bits = sch.get(info.block_rv).writes[0].source.dtype.bits
        if not isinstance(extent, int) or bits < 8:  # dynamic shape; bool masks
            return None
        return _lanes(extent, vector_bits // bits)

    @staticmethod
    def _vectorize(sch: s_tir.Schedule, info: SBlockInfo, lanes: int) -> None:
        spatial = [it.loop_rv for it in info.iters if it.kind == "S"]
        reduce = [it.loop_rv for it in info.iters if it.kind == "R"]
        outer, vec = sch.split(spatial[-1], factors=[None, lanes])
        if reduce:
            sch.reorder(*spatial[:-1], outer, *reduce, vec)
        sch.vectorize(vec)
        if reduce:  # the zero-fill before the reduction loops keeps the vector loop
            sch.decompose_reduction(info.block_rv, reduce[0])

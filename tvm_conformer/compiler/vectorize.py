"""`VectorizeInnermost`: a dlight rule that gives CPU-like targets SIMD code in every kernel.

LLVM does not vectorize a floating-point reduction loop (that would reassociate the sum), nor
any fp32 loop for 32-bit Arm NEON (not IEEE-exact), and the Hexagon backend vectorizes nothing
on its own. So the rule vectorizes explicitly, along the innermost spatial axis:

- injective blocks (elementwise, broadcast, concatenate): that axis as it is, unless a read
  steps along another axis with it (a transpose: every lane a separate load, 3x slower than
  LLVM's own code for the plain loop on the host, and no better on NEON, which has no gather);
- reduction blocks: that axis moved inside the reduction loops, so each step of a matmul is a
  broadcast multiply-add over a contiguous row, C[i, j:j+L] += A[i, k] * B[k, j:j+L]. Sums of
  products are taken even where the lanes gather (a convolution that reduces along the
  contiguous axis); other reductions only when the lanes are contiguous.

Functions with a row sum (softmax, LayerNorm) are left to the next rule.

`RowReduction`: the functions with a row sum or row max (LayerNorm, log-softmax, softmax, the
int8 activations' absolute maximum). dlight's CPU `Reduction` keeps the reduction a scalar
loop, a chain of dependent adds (latency-bound: a LayerNorm of 16 x 256 took 7.7 us, its two
row sums 2 x 16 x 256 additions at 4 cycles each). Here each reduction is split into lanes by
`rfactor`: L partial sums (or maxima) in one vector register, accumulated over the row L
elements at a time, then folded into one, and every injective block vectorized along its
contiguous axis: 16 x 256 LayerNorm 20x faster.
"""

from __future__ import annotations

import tvm
import tvm_ffi
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


def _innermost_spatial(info: SBlockInfo):  # noqa: ANN202 - dlight IterInfo
    return [it for it in info.iters if it.kind == "S"][-1]


def is_multiply_accumulate(block: s_tir.SBlock) -> bool:
    """`C[i] = C[i] + A * B` (casts allowed): a reduction block that multiplies two operands
    and adds (a sum of squares, LayerNorm's variance, is not one)."""
    body = block.body
    if block.init is None or not isinstance(body, tirx.BufferStore):
        return False
    value = body.value
    if not isinstance(value, tirx.Add):
        return False
    for acc, term in ((value.a, value.b), (value.b, value.a)):
        while isinstance(term, tirx.Cast):
            term = term.value
        if (isinstance(acc, tvm.ir.TensorLoad) and acc.source.same_as(body.buffer)
                and isinstance(term, tirx.Mul) and not tvm_ffi.structural_equal(term.a, term.b)):
            return True
    return False


def index_stride(expr: tirx.PrimExpr, var: tirx.Var) -> int | None:
    """The coefficient of `var` in an affine index (`var * s + ...`); None: not of that form
    (floordiv, floormod and other non-affine uses)."""
    if isinstance(expr, tirx.Var):
        return 1 if expr.same_as(var) else 0
    if isinstance(expr, tirx.IntImm):
        return 0
    if isinstance(expr, tirx.Add | tirx.Sub):
        a, b = index_stride(expr.a, var), index_stride(expr.b, var)
        if a is None or b is None:
            return None
        return a + b if isinstance(expr, tirx.Add) else a - b
    if isinstance(expr, tirx.Mul):
        for x, c in ((expr.a, expr.b), (expr.b, expr.a)):
            if isinstance(c, tirx.IntImm):
                k = index_stride(x, var)
                return None if k is None else k * int(c.value)
    return None


def gathers(block: s_tir.SBlock, var: tirx.Var) -> bool:
    """Whether lanes along `var` read some buffer non-contiguously: `var` occurs in an index
    other than the last (affine or not: a reshape's floordiv), or steps the last by other than
    0 or 1."""
    for region in block.reads:
        if not region.region:
            continue
        *outer, last = [index_stride(r.min, var) for r in region.region]
        if any(k != 0 for k in outer) or last not in (0, 1, None):
            return True
    return False


def _supported(sch: s_tir.Schedule, info: SBlockInfo) -> bool:
    """Injective; a sum of products (SIMD multiply-adds pay even where lanes gather); or another
    reduction whose innermost spatial axis indexes only the innermost non-unit dimension of every
    buffer it touches (else a vector would gather across rows: the row sums of LayerNorm and
    softmax, which the next rule takes)."""
    kinds = info.dom_kind()
    if "O" in kinds or "S" not in kinds:
        return False
    block = sch.get(info.block_rv)
    if info.is_injective():
        return not gathers(block, _innermost_spatial(info).var)
    if is_multiply_accumulate(block):
        return True
    var = _innermost_spatial(info).var
    for region in [*block.reads, *block.writes]:
        shape = [int(d) if isinstance(d, tirx.IntImm) else -1 for d in region.source.shape]
        last = max((i for i, d in enumerate(shape) if d != 1), default=0)
        if any(var in collect_vars_used_in_prim_expr(dim.min) for dim in region.region[:last]):
            return False
    return True


class _LLVMRule(dl.ScheduleRule):
    """A rule for LLVM (CPU-like) targets at a SIMD width of `vector_bits`."""

    def __init__(self, vector_bits: int | None = None) -> None:
        """`vector_bits`: SIMD register width (None: what LLVM reports for the target)."""
        self.vector_bits = vector_bits

    def is_target_available(self, target: Target) -> bool:
        return target.kind.name == "llvm"

    def _blocks(self, func: tirx.PrimFunc, target: Target
                ) -> tuple[s_tir.Schedule, list[SBlockInfo]] | None:
        """A schedule of `func` and its blocks; None: another target, or blocks dlight cannot
        normalize."""
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        return None if infos is None else (sch, infos)


class VectorizeInnermost(_LLVMRule):
    """Vectorizes the innermost spatial loop of every block by `vector_bits` worth of lanes."""

    def apply(
        self, func: tirx.PrimFunc, target: Target, _tunable: bool
    ) -> s_tir.Schedule | None:
        found = self._blocks(func, target)
        if found is None:
            return None
        sch, infos = found
        infos = try_inline(sch, infos)
        if not all(_supported(sch, info) for info in infos):
            return None
        vector_bits = self.vector_bits or llvm_get_vector_width(target)
        plans = [self._plan(sch, info, vector_bits) for info in infos]
        if not any(plans):
            return None
        for info, plan in zip(infos, plans, strict=True):
            if plan:
                self._vectorize(sch, info, plan)
        return sch

    @staticmethod
    def _plan(sch: s_tir.Schedule, info: SBlockInfo, vector_bits: int) -> tuple[int, int] | None:
        """(trailing spatial loops to fuse, lanes): one loop, or more until their extent has a
        power-of-two factor of half a register (a 19-wide plane: fused with the rows above it;
        LLVM's Hexagon backend emits no HVX for a 4-lane vector); None: scalar."""
        block = sch.get(info.block_rv)
        dtype = block.writes[0].source.dtype
        if str(dtype) == "bool":  # masks: tiny kernels, and i1 vectors are trouble (below)
            return None
        max_lanes = vector_bits // dtype.bits
        wanted = max(min(4, max_lanes), max_lanes // 2)
        iters = info.iters
        spatial = [i for i, it in enumerate(iters) if it.kind == "S"]
        # Lanes beyond the innermost axis gather: not for row reductions, nor for gathers of
        # bool masks, on which LLVM's Hexagon backend crashes.
        gather_ok = (info.is_injective() or is_multiply_accumulate(block)) and all(
            str(r.source.dtype) != "bool" for r in block.reads)
        plan, extent = None, 1
        for k in range(1, len(spatial) + 1 if gather_ok else 2):
            dom = iters[spatial[-k]].dom
            if not isinstance(dom, int) or (k > 1 and spatial[-k] + 1 != spatial[-k + 1]):
                break  # dynamic shape; a reduction loop between the spatial ones
            extent *= dom
            lanes = min(extent & -extent, max_lanes)  # its largest power-of-two factor, capped
            if lanes >= min(4, max_lanes) and (plan is None or lanes > plan[1]):
                plan = (k, lanes)
            if lanes >= wanted:
                break
        return plan

    @staticmethod
    def _vectorize(sch: s_tir.Schedule, info: SBlockInfo, plan: tuple[int, int]) -> None:
        fused, lanes = plan
        spatial = [it.loop_rv for it in info.iters if it.kind == "S"]
        reduce = [it.loop_rv for it in info.iters if it.kind == "R"]
        inner = sch.fuse(*spatial[-fused:]) if fused > 1 else spatial[-1]
        outer, vec = sch.split(inner, factors=[None, lanes])
        if reduce:
            sch.reorder(*spatial[:-fused], outer, *reduce, vec)
        sch.vectorize(vec)
        if reduce:  # the zero-fill before the reduction loops keeps the vector loop
            sch.decompose_reduction(info.block_rv, reduce[0])


def _parallel_rows(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, inner: int) -> None:
    """The block's loops outside its `inner` innermost ones (its rows) fused and run in
    parallel; the thread policy makes the small kernels serial again."""
    rows = sch.get_loops(block)[:-inner]
    if rows:
        sch.parallel(sch.fuse(*rows) if len(rows) > 1 else rows[0])


class RowReduction(_LLVMRule):
    """Row reductions by vector lanes of partial results (`rfactor`), injective blocks
    vectorized; every reduction must run over the innermost, contiguous axis of what it reads."""

    def __init__(self, vector_bits: int | None = None, min_lanes: int = 4,
                 odd_lanes: bool = True) -> None:
        """`min_lanes`: shorter vectors are left scalar (LLVM's Hexagon backend emits no HVX
        for them); `odd_lanes`: vectors of a length that is no power of two where the row
        has no long power-of-two factor (`_lanes`; off for HVX)."""
        super().__init__(vector_bits)
        self.min_lanes = min_lanes
        self.odd_lanes = odd_lanes

    def apply(
        self, func: tirx.PrimFunc, target: Target, _tunable: bool
    ) -> s_tir.Schedule | None:
        found = self._blocks(func, target)
        if found is None or all(info.is_injective() for info in found[1]):
            return None
        sch, infos = found
        infos = try_inline(sch, infos)
        for info in infos:
            kinds = info.dom_kind()
            if "O" in kinds or not kinds.startswith("S"):
                return None
            if not info.is_injective() and (
                    kinds.count("R") != 1 or not kinds.endswith("R")
                    or gathers(sch.get(info.block_rv), info.iters[-1].var)):
                return None  # not one reduction over the contiguous innermost axis
        vector_bits = self.vector_bits or llvm_get_vector_width(target)
        for info in infos:
            block = sch.get(info.block_rv)
            bits = max(r.source.dtype.bits for r in [*block.reads, *block.writes])
            lanes = self._lanes(info, vector_bits // bits)
            if info.is_injective():
                if lanes and not gathers(block, info.iters[-1].var):
                    vec = sch.split(sch.get_loops(info.block_rv)[-1], factors=[None, lanes])[-1]
                    sch.vectorize(vec)
                    _parallel_rows(sch, info.block_rv, 2)
                else:
                    _parallel_rows(sch, info.block_rv, 1)
                continue
            if not lanes:
                _parallel_rows(sch, info.block_rv, 1)
                continue
            loops = sch.get_loops(info.block_rv)
            lane = sch.split(loops[-1], factors=[None, lanes])[-1]
            partial = sch.rfactor(lane, factor_axis=len(loops) - 1)
            step, lane = sch.get_loops(partial)[-2:]  # (..., row step, lane): the lanes innermost
            sch.vectorize(lane)
            _parallel_rows(sch, partial, 2)
            _parallel_rows(sch, info.block_rv, 1)  # the lanes' results folded, row by row
            init = sch.decompose_reduction(partial, step)
            sch.vectorize(sch.get_loops(init)[-1])
        return sch

    def _lanes(self, info: SBlockInfo, max_lanes: int) -> int:
        """The largest power of two dividing the innermost axis, up to a register (lanes of the
        widest type the block touches: an int8 quantization computes in fp32), or where that
        is less than half a register, the largest divisor up to a register (a row of 99, the
        full-utterance attention's, in vectors of 11 lanes, which LLVM widens to a register;
        only with `odd_lanes`); 0: too short a vector, left scalar."""
        extent = info.iters[-1].dom
        if not isinstance(extent, int):
            return 0
        lanes = min(extent & -extent, max_lanes)
        if self.odd_lanes and 2 * lanes < max_lanes:
            lanes = max(d for d in range(lanes, max_lanes + 1) if extent % d == 0)
        return lanes if lanes >= min(self.min_lanes, max_lanes) and lanes > 1 else 0

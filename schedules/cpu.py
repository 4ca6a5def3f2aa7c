"""CPUs (x86 AVX, ARM NEON): hand-written schedules for the hot kernels, then every other kernel
vectorized at the target's SIMD width (NEON: 4 fp32 lanes), which LLVM does not do for
reductions nor for 32-bit Arm fp32 loops.

`DepthwiseConv`: convolutions in which each output channel reads one input channel (the
subsampling's 3x3 stride-2 depthwise conv2d and its single-channel first conv, the convolution
module's depthwise conv1d): output channels in parallel, the kernel window unrolled, the output
row (time or frequency) in vector registers.
`Matmul`: every other sum of products (dense layers, attention's batched matmuls, 1x1 convs):
a tile of rows x two vector registers of columns (as many rows as the register file holds beside
them: compiler/matmul_tile.py) accumulated in registers, the reduction innermost but one; column
tiles outermost and in parallel (each weight slice read once from memory), row tiles for 1x1
convs.
`VectorizeInnermost` (tvm_conformer.compiler.vectorize): elementwise kernels and the rest;
`RowReduction` (same module): row sums and maxima (LayerNorm, softmax, int8 quantization) in
vector lanes of partial results.

The tuner measures these schedules first and records them (`tvm_conformer.tune.tuner`): tuning
starts from them, and a database never holds worse.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import SBlockInfo, normalize_prim_func
from tvm.s_tir.dlight.base import ScheduleRule, try_inline_contiguous_spatial
from tvm.target import Target
from tvm.target.codegen import llvm_get_vector_width

from tvm_conformer.compiler.blocks import operands, reads_one_channel
from tvm_conformer.compiler.matmul_tile import column_tile, max_tile_rows
from tvm_conformer.compiler.vectorize import RowReduction, VectorizeInnermost, index_stride

MAX_ROW_TILE = 8  # at most; fewer where the accumulators would not fit the registers (matmul_tile.py)


def vector_lanes(target: Target, bits: int = 32) -> int:
    """Lanes of `bits` in the target's widest vector (fp32: 4 on NEON, 16 on AVX-512)."""
    width = llvm_get_vector_width(target)
    return max((width if width > 0 else 128) // bits, 1)


def _extent(info: SBlockInfo, i: int) -> int | None:
    dom = info.iters[i].dom
    return dom if isinstance(dom, int) else None


def _anchor(
    func: tirx.PrimFunc, target: Target
) -> tuple[s_tir.Schedule, SBlockInfo, SBlockInfo | None] | None:
    """The schedule, the kernel's one reduction block (static shapes, spatial iterators before
    reduction ones; unit iterators dropped) and its injective epilogue, once every other block
    is inlined; else None."""
    if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
        return None
    sch = s_tir.Schedule(func)
    infos = try_inline_contiguous_spatial(sch, normalize_prim_func(sch))
    if not infos or infos[0].is_injective() or len(infos) > 2:
        return None
    main, epilogue = infos[0], (infos[1] if len(infos) == 2 else None)
    if epilogue is not None and not epilogue.is_injective():
        return None
    kinds = main.dom_kind()
    spatial = kinds.count("S")
    if spatial == 0 or kinds != "S" * spatial + "R" * (len(kinds) - spatial):
        return None
    if any(_extent(main, i) is None for i in range(len(kinds))):
        return None
    return sch, main, epilogue


def _split(
    sch: s_tir.Schedule, loop: s_tir.schedule.LoopRV, inner: int
) -> list[s_tir.schedule.LoopRV]:
    return list(sch.split(loop, factors=[None, inner]))


def _largest_divisor(extent: int, limit: int) -> int:
    return max(d for d in range(1, min(extent, limit) + 1) if extent % d == 0)


def _vector_tile(extent: int, lanes: int) -> int:
    """Lanes per vector: the largest divisor of `extent` up to a register's lanes; all of a
    short row whose divisors are all tiny (LLVM splits it into whole vectors and a tail)."""
    tile = _largest_divisor(extent, lanes)
    return extent if tile < min(4, lanes) and extent <= 2 * lanes else tile


def _finish_epilogue(
    sch: s_tir.Schedule, epilogue: SBlockInfo | None, at: s_tir.schedule.LoopRV, lanes: int
) -> None:
    """Computes the epilogue right after the tile it reads (still in cache), vectorized."""
    if epilogue is None:
        return
    sch.reverse_compute_at(epilogue.block_rv, at)
    loops = sch.get_loops(epilogue.block_rv)
    depth = [sch.get(loop).same_as(sch.get(at)) for loop in loops].index(True)
    if depth == len(loops) - 1:
        return  # one element per iteration of `at`: no loop of its own to vectorize
    inner = loops[-1]
    extent = sch.get(inner).extent
    if isinstance(extent, tirx.IntImm) and extent.value > 4 * lanes:
        inner = sch.split(inner, factors=[None, lanes])[-1]
    sch.vectorize(inner)


def _phases(s: int):  # noqa: ANN202 - an index map function
    return lambda *idx: (*idx[:-1], idx[-1] % s, idx[-1] // s)


def _deinterleave_strided_input(sch: s_tir.Schedule, main: SBlockInfo, row: int,
                                at: s_tir.schedule.LoopRV) -> None:
    """A strided convolution reads every s-th element of a row, which a vector load cannot
    do (LLVM gathers it lane by lane). The input is first copied into a layout that splits each
    row into its s phases (w -> (w % s, w // s)), so that every tap of the window reads a
    contiguous run: for a depthwise conv, inside loop `at` (the output row loop: the window's
    few input rows, a buffer on the stack, read from L1; the channel loop for a 1-d conv);
    once for a conv whose output channels all read the same input channel. Per channel, the
    copy of a whole channel (32 KB in the full-utterance subsampling) was a workspace
    allocation in every iteration of the parallel channel loop and a pass over memory before
    the window read it again."""
    block = sch.get(main.block_rv)
    row_var, channel_var = main.iters[row].var, main.iters[0].var
    for i, region in enumerate(block.reads):
        if len(region.region) < 3:
            continue
        stride = index_stride(region.region[-1].min, row_var)
        if stride is None or stride < 2:
            continue
        cached = sch.cache_read(main.block_rv, i, "global")
        sch.transform_layout(cached, ("write", 0), _phases(stride), pad_value=0.0)
        if any(index_stride(r.min, channel_var) != 0 for r in region.region[:-1]):
            sch.compute_at(cached, at)
        return


class DepthwiseConv(ScheduleRule):
    """Convolutions whose every output reads a single input channel (depthwise, or one input
    channel): parallel over channels, window unrolled, the output row vectorized."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        found = _anchor(func, target)
        if found is None:
            return None
        sch, main, epilogue = found
        spatial = main.dom_kind().count("S")  # iterators (c, [h,] w, [kh,] kw)
        if spatial < 2 or not reads_one_channel(sch.get(main.block_rv)):
            return None
        lanes = vector_lanes(target)
        loops = sch.get_loops(main.block_rv)
        channel, middle, row = loops[0], loops[1 : spatial - 1], loops[spatial - 1]
        window = loops[spatial:]
        tile = _vector_tile(_extent(main, spatial - 1), lanes)
        if tile < _extent(main, spatial - 1):
            row_outer, row = _split(sch, row, tile)
            middle = [*middle, row_outer]
        sch.reorder(channel, *middle, *window, row)
        sch.parallel(channel)
        _deinterleave_strided_input(sch, main, spatial - 1, middle[0] if middle else channel)
        for loop in window:
            sch.unroll(loop)
        sch.vectorize(row)
        # the epilogue reads each output row while it is in L1, so the raw row never reaches memory
        _finish_epilogue(sch, epilogue, middle[-1] if middle else channel, lanes)
        init = sch.decompose_reduction(main.block_rv, window[0])
        sch.vectorize(sch.get_loops(init)[-1])
        return sch


class Matmul(ScheduleRule):
    """Sums of products of two operands (dense, batched matmul, 1x1 and other convs): a
    (rows x vector) tile of accumulators in registers, column tiles outermost and in parallel."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        found = _anchor(func, target)
        if found is None or len(operands(found[0].get(found[1].block_rv))) != 2:
            return None  # not a sum of products of two operands
        sch, main, epilogue = found
        lanes = vector_lanes(target)
        kinds = main.dom_kind()
        spatial = kinds.count("S")
        extents = [_extent(main, i) for i in range(len(kinds))]
        # Columns: the trailing spatial axes, fused until a few vectors long (a 1x1 conv's
        # (h, w) plane is one contiguous axis); rows: the axis before them; batch: the rest.
        first_col, cols = spatial - 1, extents[spatial - 1]
        while first_col > 1 and cols < 2 * lanes:
            first_col -= 1
            cols *= extents[first_col]
        if first_col == 0:
            return None  # a vector times a matrix: dlight's GEMV
        loops = sch.get_loops(main.block_rv)
        reduce = sch.fuse(*loops[spatial:]) if len(kinds) - spatial > 1 else loops[spatial]
        col = sch.fuse(*loops[first_col:spatial]) if first_col < spatial - 1 else loops[first_col]
        tile = column_tile(target)  # two registers wide where it divides the columns
        tile = tile if cols % tile == 0 else _vector_tile(cols, lanes)
        col_outer, col_inner = _split(sch, col, tile)
        rows = extents[first_col - 1]
        row_tile = _largest_divisor(rows, min(MAX_ROW_TILE, max_tile_rows(target, tile)))
        row_outer, row_inner = _split(sch, loops[first_col - 1], row_tile)
        batch = loops[: first_col - 1]
        if first_col == spatial - 1:
            # column tiles outermost: a tile's (reduction x vector) slice of the weight is read
            # from memory once and from L1 by every row tile after the first (the step's
            # weights are 13 MB, L2 1 MB: they come from L3 or DRAM each step), and threads
            # split the weight between them instead of each reading all of it
            sch.reorder(*batch, col_outer, row_outer, reduce, row_inner, col_inner)
            par = sch.fuse(*batch, col_outer) if batch else col_outer
            at = row_outer  # the epilogue right after its tile, while that is in L1
        else:
            # a fused column axis (a 1x1 conv's plane) is no rectangle: row tiles outermost,
            # the epilogue after the whole row tile
            sch.reorder(*batch, row_outer, col_outer, reduce, row_inner, col_inner)
            par = at = sch.fuse(*batch, row_outer) if batch else row_outer
        sch.parallel(par)
        sch.unroll(row_inner)
        sch.vectorize(col_inner)
        _finish_epilogue(sch, epilogue, at, lanes)
        init = sch.decompose_reduction(main.block_rv, reduce)
        sch.vectorize(sch.get_loops(init)[-1])
        return sch


RULES = [DepthwiseConv(), Matmul(), VectorizeInnermost(), RowReduction()]

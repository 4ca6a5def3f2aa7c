"""int8 linears (`tvm_conformer.passes.quantize_int8`): the target's int8 dot product on a tile
of rows x one vector of int32 accumulators.

`Int8Matmul` takes a kernel whose reduction block is `int8_matmul`, C[r, n] += xq[r, k] *
Wp[n // L, k // 4, n % L, k % 4], and its fused dequantizing epilogue: column tiles of L
outermost and in parallel (each packed weight slice read once), then row tiles, the reduction
in steps of 4, and per row one instruction that multiplies 4 bytes of the row, broadcast, by
the tile's L x 4 weight bytes and adds into L int32 lanes:

- x86 with AVX-512 VNNI: `vpdpbusd`, u8 x s8, L = 16 (our own intrinsic: TVM 0.27's
  `dot_16x4_vnni` passes <16 x i32> operands, which the LLVM it bundles (22) refuses since the
  intrinsic takes <64 x i8>: "Call parameter type does not match function signature");
- x86 AVX2 (this host, Zen 3): `vpmaddubsw` (u8 x s8 pairs into int16) then `vpmaddwd` by ones
  into int32, L = 8 (the pass keeps weights in 7 bits so the int16 pairs cannot saturate);
- AArch64 with dotprod (Cortex-A55, A76): `sdot` (TVM's `dot_4x4_i8i8s32_sdot`), L = 4;
- Arm without it (Cortex-A53, A72, armv7), and x86 without AVX2: our own intrinsic whose body
  is the L x 4 product as vector code (4 unrolled steps over L int32 lanes), which LLVM turns
  into NEON widening multiplies (`smull`/`smlal`, `sadalp`; armv7 `vmull.s8`, `vpadal`); a
  vectorized loop over the reduction block itself is refused by TVM (no compact dataflow);
- Hexagon HVX: `vrmpy` (TVM's `dot_32x4_u8i8i32_vrmpy`, u8 x s8), L = 32.

The epilogue (int32 -> fp32, the row and column scales, bias, activation) is computed right
after its tile, vectorized.
"""

from __future__ import annotations

import tvm_ffi
from tvm import s_tir, tirx
from tvm.s_tir import TensorIntrin
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.script import tirx as T
from tvm.target import Target
from tvm.target.codegen import llvm_get_vector_width

from tvm_conformer.compiler.matmul_tile import HVX_BITS
from tvm_conformer.compiler.vectorize import RowReduction
from tvm_conformer.passes.quantize_int8 import BLOCK, QUANTIZE_BLOCK, int8_scheme

MAX_ROW_TILE = 8  # rows of accumulators per column vector (8 of AVX2's 16 ymm registers)
AVX2_DOT_8x4 = "tvm_conformer_dot_8x4_u8i8i32_avx2"
VNNI_DOT_16x4 = "tvm_conformer_dot_16x4_u8i8i32_vnni"
VECTOR_DOT_4x4 = "tvm_conformer_dot_4x4_i8i8i32_vector"  # neon, generic: scheme lanes 4, int8


@T.prim_func(s_tir=True)
def _dot_8x4_avx2(a: T.handle, b: T.handle, c: T.handle) -> None:
    A = T.match_buffer(a, (4,), "uint8", offset_factor=1)
    B = T.match_buffer(b, (8, 4), "int8", offset_factor=1)
    C = T.match_buffer(c, (8,), "int32", offset_factor=1)
    with T.sblock("root"):
        T.reads(C[0:8], A[0:4], B[0:8, 0:4])
        T.writes(C[0:8])
        row = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), 8),
                            dtype="uint8x32")
        pairs = T.call_llvm_pure_intrin("int16x16", "llvm.x86.avx2.pmadd.ub.sw", row,
                                        B.vload([0, 0], dtype="int8x32"))
        C[T.ramp(0, 1, 8)] = C[T.ramp(0, 1, 8)] + T.call_llvm_pure_intrin(
            "int32x8", "llvm.x86.avx2.pmadd.wd", pairs, T.broadcast(T.int16(1), 16))


@T.prim_func(s_tir=True)
def _dot_16x4_vnni(a: T.handle, b: T.handle, c: T.handle) -> None:
    A = T.match_buffer(a, (4,), "uint8", offset_factor=1)
    B = T.match_buffer(b, (16, 4), "int8", offset_factor=1)
    C = T.match_buffer(c, (16,), "int32", offset_factor=1)
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4], B[0:16, 0:4])
        T.writes(C[0:16])
        row = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), 16),
                            dtype="uint8x64")
        C[T.ramp(0, 1, 16)] = T.call_llvm_pure_intrin(
            "int32x16", "llvm.x86.avx512.vpdpbusd.512", C[T.ramp(0, 1, 16)], row,
            B.vload([0, 0], dtype="int8x64"))


def _dot_desc(lanes: int, act_dtype: str) -> tirx.PrimFunc:
    """What every int8 intrinsic here computes: C[L] += A[4] . B[L, 4], widened to int32."""

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), act_dtype, offset_factor=1)
        B = T.match_buffer(b, (lanes, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.Cast("int32", A[vk]) * T.Cast("int32", B[vi, vk])

    return desc


def _vector_dot(lanes: int, act_dtype: str) -> tirx.PrimFunc:
    """The impl of `_dot_desc` for any ISA: vector code over the L lanes (widened to int32),
    unrolled over the 4 products."""

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), act_dtype, offset_factor=1)
        B = T.match_buffer(b, (lanes, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            for k in T.unroll(4):
                for i in T.vectorized(lanes):
                    C[i] = C[i] + T.Cast("int32", A[k]) * T.Cast("int32", B[i, k])

    return impl


def _intrinsics() -> dict[str, str]:
    """isa -> the tensor intrinsic of its dot product."""
    import tvm.s_tir.tensor_intrin  # noqa: F401 - registers TVM's x86, Arm and Hexagon intrinsics

    TensorIntrin.register(AVX2_DOT_8x4, _dot_desc(8, "uint8"), _dot_8x4_avx2, override=True)
    TensorIntrin.register(VNNI_DOT_16x4, _dot_desc(16, "uint8"), _dot_16x4_vnni, override=True)
    TensorIntrin.register(VECTOR_DOT_4x4, _dot_desc(4, "int8"), _vector_dot(4, "int8"),
                          override=True)
    return {"vnni": VNNI_DOT_16x4, "avx2": AVX2_DOT_8x4, "sdot": "dot_4x4_i8i8s32_sdot",
            "hvx": "dot_32x4_u8i8i32_vrmpy", "neon": VECTOR_DOT_4x4, "generic": VECTOR_DOT_4x4}


INTRINSICS = _intrinsics()


def _largest_divisor(extent: int, limit: int) -> int:
    return max(d for d in range(1, min(extent, limit) + 1) if extent % d == 0)


def _has_block(func: tirx.PrimFunc, name: str) -> bool:
    found: list = []
    tvm_ffi.structural_walk(func.body, (s_tir.SBlock, found.append))
    return any(b.name_hint == name for b in found)


def _inline_epilogue(sch: s_tir.Schedule, main: s_tir.schedule.SBlockRV) -> s_tir.schedule.SBlockRV | None:
    """Every elementwise block after the matmul (int32 -> fp32, scales, bias, activation: a chain,
    not only the matmul's direct consumers) inlined into the last one, which writes the kernel's
    output; that block, or None without an epilogue. Inlining only the direct consumers left
    the rest of the chain as serial scalar loops over the whole output after the parallel tiles
    (WeNet size: the FFN's first int8 linear with swish took 2.4x the time of its second)."""
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    names = [sch.get(b).name_hint for b in blocks]
    after = blocks[names.index(sch.get(main).name_hint) + 1:]
    for block in after[:-1]:
        sch.compute_inline(block)
    return after[-1] if after else None


class Int8Matmul(ScheduleRule):
    """Kernels with an `int8_matmul` block: the target's int8 dot product per row and vector."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        if not _has_block(func, BLOCK):
            return None
        sch = s_tir.Schedule(func)
        main = sch.get_sblock(BLOCK)
        scheme = int8_scheme(target)
        epilogue = _inline_epilogue(sch, main)
        loops = sch.get_loops(main)
        *row_loops, col, red = loops
        rows = sch.fuse(*row_loops) if len(row_loops) > 1 else row_loops[0]
        n_rows = int(sch.get(rows).extent)
        col_outer, col_inner = sch.split(col, [None, scheme.lanes])
        red_outer, red_inner = sch.split(red, [None, 4])
        row_outer, row_inner = sch.split(rows, [None, _largest_divisor(n_rows, MAX_ROW_TILE)])
        sch.reorder(col_outer, row_outer, red_outer, row_inner, col_inner, red_inner)
        sch.parallel(col_outer)
        if epilogue is not None:
            self._epilogue(sch, epilogue, row_outer)
        init = sch.decompose_reduction(main, red_outer)
        sch.vectorize(sch.get_loops(init)[-1])
        sch.unroll(row_inner)
        sch.tensorize(col_inner, INTRINSICS[scheme.isa])
        return sch

    @staticmethod
    def _epilogue(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV,
                  at: s_tir.schedule.LoopRV) -> None:
        """The epilogue right after the tile it reads, its columns vectorized."""
        sch.reverse_compute_at(block, at)
        sch.vectorize(sch.get_loops(block)[-1])


class Int8Quantize(ScheduleRule):
    """The activations' quantization kernel: the rows' max |x| in vector lanes of partial maxima
    (`RowReduction`; a scalar max chain took 21 us of a 16 x 2048 row block), then the quantized
    rows, vectorized at the fp32 lanes of the target's vector (one HVX register on Hexagon)."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        if not _has_block(func, QUANTIZE_BLOCK):
            return None
        hvx = int8_scheme(target).isa == "hvx"
        bits = HVX_BITS if hvx else max(llvm_get_vector_width(target), 128)
        return RowReduction(vector_bits=bits, min_lanes=16 if hvx else 4, odd_lanes=not hvx).apply(func, target, tunable)


RULES = [Int8Matmul(), Int8Quantize()]

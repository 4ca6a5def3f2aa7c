"""Graph statistics of a fused module: kernels, data-movement kernels, bytes between kernels."""

from __future__ import annotations

import math
from collections import Counter

import tvm
from tvm import relax
from tvm.relax.analysis import has_reshape_pattern


def _moves_only(value: tvm.ir.PrimExpr) -> bool:
    """True if `value` is a load or a constant, possibly chosen by a condition (padding)."""
    if isinstance(value, tvm.ir.TensorLoad | tvm.tirx.FloatImm | tvm.tirx.IntImm):
        return True
    if isinstance(value, tvm.tirx.Select):
        return _moves_only(value.true_value) and _moves_only(value.false_value)
    if isinstance(value, tvm.ir.Call) and value.op.name == "prim.if_then_else":
        return _moves_only(value.args[1]) and _moves_only(value.args[2])
    return False


def _leaf_blocks(stmt: tvm.tirx.Stmt) -> list[tvm.s_tir.SBlock]:
    """The blocks of `stmt` that contain no other block."""
    if isinstance(stmt, tvm.s_tir.SBlockRealize):
        stmt = stmt.block
    if isinstance(stmt, tvm.tirx.SeqStmt):
        children = list(stmt.seq)
    elif isinstance(stmt, tvm.tirx.IfThenElse):
        children = [stmt.then_case, stmt.else_case]
    else:
        children = [getattr(stmt, "body", None)]
    nested = [b for c in children if isinstance(c, tvm.tirx.Stmt) for b in _leaf_blocks(c)]
    if isinstance(stmt, tvm.s_tir.SBlock) and not nested:
        return [stmt]
    return nested


def is_data_movement(func: tvm.tirx.PrimFunc) -> bool:
    """True if no block of `func` computes: each stores a loaded or constant value, no reduction.

    Transposes, materialized reshapes, strided slices, concatenations, take and pads qualify.
    """
    for block in _leaf_blocks(func.body):
        if block.init is not None or not isinstance(block.body, tvm.tirx.BufferStore):
            return False
        if not _moves_only(block.body.value):
            return False
    return True


def _tensor_bytes(ty: relax.Type) -> int:
    if isinstance(ty, relax.TupleType):
        return sum(_tensor_bytes(f) for f in ty.fields)
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return 0
    dtype = tvm.runtime.DataType(str(ty.dtype))
    item = (dtype.bits + 7) // 8 * dtype.lanes  # a bool takes a byte in memory
    return math.prod(int(d) for d in ty.shape.values) * item


def _is_view(binding: relax.VarBinding, func: tvm.tirx.PrimFunc) -> bool:
    """Mirrors RewriteDataflowReshape: such a call becomes a view of its input, no kernel runs."""
    if not isinstance(binding.var, relax.DataflowVar) or not has_reshape_pattern(func):
        return False
    out = binding.value.ty
    args = [a for a in binding.value.args[1].fields if isinstance(a.ty, relax.TensorType)]
    size = _tensor_bytes(out)
    return any(str(a.ty.dtype) == str(out.dtype) and _tensor_bytes(a.ty) == size for a in args)


def graph_report(mod: tvm.IRModule, entry: str = "main") -> dict:
    """Statistics of `entry` in `mod` after legalization and fusion (the pipeline's "fused" phase).

    kernels       PrimFuncs in the module
    launches      call_tir bindings per call of `entry`, reshape views excluded (phase 4 turns a
                  call of a reshape-pattern kernel into a view of its input: no kernel runs)
    views         call_tir bindings that become such views
    copies        launches of kernels that only move data (transpose, materialized reshape,
                  slice, concat, take, pad), and `copy_launches` by kernel name
    bytes_moved   sum over launches of the bytes of every input and output tensor (weights
                  included): the traffic between kernels if no tensor stays in cache
    """
    prims = {gv: f for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    movers = {gv for gv, f in prims.items() if is_data_movement(f)}
    call_tir = tvm.ir.Op.get("relax.call_tir")
    launches, views, moved = 0, 0, 0
    copies: Counter[str] = Counter()
    for block in mod[entry].body.blocks:
        for binding in block.bindings:
            call = binding.value
            if not isinstance(call, relax.Call) or call.op != call_tir:
                continue
            gv = call.args[0]
            if _is_view(binding, prims[gv]):
                views += 1
                continue
            launches += 1
            moved += _tensor_bytes(call.ty) + sum(_tensor_bytes(a.ty) for a in call.args[1].fields)
            if gv in movers:
                copies[gv.name_hint] += 1
    return {
        "kernels": len(prims),
        "launches": launches,
        "views": views,
        "copies": sum(copies.values()),
        "copy_launches": dict(sorted(copies.items())),
        "bytes_moved": moved,
    }

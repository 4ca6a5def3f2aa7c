"""Small queries on Relax dataflow graphs shared by the graph passes."""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.analysis import free_vars


def static_shape(expr: relax.Expr) -> tuple[int, ...] | None:
    """The static shape of a tensor expression, or None."""
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    dims = ty.shape.values
    if not all(isinstance(d, tvm.tirx.IntImm) for d in dims):
        return None
    return tuple(int(d) for d in dims)


def is_tensor_of(expr: relax.Expr, dtype: str) -> bool:
    """Whether `expr` is a tensor of `dtype` (by its type; shape not needed)."""
    ty = expr.ty
    return isinstance(ty, relax.TensorType) and str(ty.dtype) == dtype


def int_values(values: relax.Expr) -> list[int]:
    """The integers of a tuple of PrimValues (strided_slice's axes, begin, end, strides)."""
    return [int(v.value) for v in values.fields]


def users(var2val: dict[relax.Var, relax.Expr]) -> dict[relax.Var, list[relax.Var]]:
    """For each var, the vars whose bound values read it."""
    out: dict[relax.Var, list[relax.Var]] = {}
    for var, value in var2val.items():
        for used in free_vars(value):
            out.setdefault(used, []).append(var)
    return out

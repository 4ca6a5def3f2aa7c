"""Rewrite softmax to subtract the row max only where exp could overflow or underflow."""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_op, rewrite_call, wildcard


def safe_window(dtype: str, n: int) -> tuple[float, float]:
    """Row maxima ``[lo, hi]`` for which ``exp(x)`` needs no shift in ``dtype`` for rows of ``n``."""
    info = np.finfo(dtype)
    lo = math.log(float(info.tiny))
    hi = math.log(float(info.max)) - math.log(2 * n)
    return lo, hi


@relax.transform.function_pass(opt_level=0, name="RescaleSoftmax")
class RescaleSoftmax:
    """Replace ``R.nn.softmax(x, axis)`` over a static axis by conditionally rescaled primitives.

    Rewritten form, for rows of n elements in the dtype of x (or ``compute_dtype``)::

        m     = max(x, axis)
        shift = where(m > hi or m < lo, m, 0)     # hi = ln(F / 2n), lo = ln(smallest normal)
        e     = exp(x - shift);  out = e / sum(e, axis)

    Softmax is invariant to the shift, so the result is exact in exact arithmetic. If
    lo <= m <= hi, every e <= F/(2n) and the computed sum is < F (the factor 2 absorbs the
    rounding of exp and of n additions while (1 + 2u)^(n+1) <= 2, i.e. n <= 700 in fp16),
    and sum >= exp(lo) > 0; otherwise e <= 1 and sum >= 1. Fully masked rows (all -1e4) take
    the shifted branch and give the uniform distribution instead of 0/0. Rows containing
    +inf or made only of -inf give NaN, as every softmax does.

    In the unshifted branch exp is evaluated at the exact input rather than at the rounded
    fp16 difference x - m. The selection is per row (one scalar op per row); the max reduction
    is still computed, so the kernel costs what TVM's own softmax costs. TVM's legalization
    of ``R.nn.softmax`` (topi) already subtracts the max unconditionally and accumulates in
    the input dtype, so it does not overflow either; this pass matters when softmax would
    otherwise be lowered as a plain ``exp(x) / sum(exp(x))``.
    """

    def __init__(self, compute_dtype: str | None = None) -> None:
        """Use the thresholds of ``compute_dtype``, by default the dtype of each input."""
        self.compute_dtype = compute_dtype
        self._x = wildcard()
        self._pattern = is_op("relax.nn.softmax")(self._x)

    def _rewrite(self, x: relax.Expr, axis: int) -> relax.Expr | None:
        ty = x.ty
        if not isinstance(ty, relax.TensorType) or ty.shape is None:
            return None
        dims = ty.shape.values
        size = dims[axis % len(dims)]
        if not isinstance(size, tvm.tirx.IntImm):
            return None
        dtype = str(ty.dtype)
        lo, hi = safe_window(self.compute_dtype or dtype, int(size))
        op = relax.op
        m = op.max(x, axis, keepdims=True)
        outside = op.logical_or(
            op.greater(m, relax.const(hi, dtype)), op.less(m, relax.const(lo, dtype))
        )
        shift = op.where(outside, m, relax.const(0.0, dtype))
        e = op.exp(op.subtract(x, shift))
        return op.divide(e, op.sum(e, axis, keepdims=True))

    def transform_function(
        self, func: relax.Function, mod: tvm.IRModule, ctx: tvm.transform.PassContext
    ) -> relax.Function:
        """Rewrite every matching ``softmax`` call in ``func``."""

        def rewriter(expr: relax.Expr, matches: dict) -> relax.Expr:
            new = self._rewrite(matches[self._x], int(expr.attrs.axis))
            return expr if new is None else new

        return rewrite_call(self._pattern, rewriter, func)

"""Rewrite LayerNorm so that no intermediate can overflow in fp16 (Xu et al. 2023, pre-normalization)."""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_op, rewrite_call, wildcard


def _const(value: float, dtype: str) -> relax.Expr:
    return relax.const(np.array(value, dtype=dtype), dtype)


def _rewrite(
    x: relax.Expr, gamma: relax.Expr, beta: relax.Expr, attrs, compute_dtype: str | None
) -> relax.Expr | None:
    ty = x.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    dims = ty.shape.values
    ndim = len(dims)
    axes = sorted(int(a) % ndim for a in attrs.axes)
    if axes != list(range(ndim - len(axes), ndim)) or not all(
        isinstance(dims[a], tvm.tirx.IntImm) for a in axes
    ):
        return None  # gamma/beta broadcast only along trailing static axes
    dtype = str(ty.dtype)
    n = math.prod(int(dims[a]) for a in axes)
    q_exp = math.floor(math.log2(n) / 2)
    tiny = float(np.finfo(compute_dtype or dtype).smallest_subnormal)

    def c(value: float) -> relax.Expr:
        return _const(value, dtype)

    def mean(v: relax.Expr) -> relax.Expr:
        return relax.op.sum(relax.op.multiply(v, c(1.0 / n)), axes, keepdims=True)

    op = relax.op
    h = op.multiply(x, c(1 / 16))
    low, high = op.min(h, axes, keepdims=True), op.max(h, axes, keepdims=True)
    cen = op.subtract(h, op.minimum(op.maximum(mean(h), low), high))
    cen = op.subtract(cen, mean(cen))
    scale = op.add(mean(op.abs(cen)), c(2.0 ** math.ceil(math.log2(n)) * tiny))
    s = op.divide(cen, scale)
    d = op.subtract(s, mean(s))
    w = op.multiply(d, c(2.0**-q_exp))
    var = op.multiply(op.sum(op.multiply(w, w), axes, keepdims=True), c(4.0**q_exp / n))
    rho = c(math.sqrt(attrs.epsilon) / 16)
    r = op.maximum(scale, rho)
    k = op.divide(scale, r)
    e = op.divide(rho, r)
    den = op.add(op.multiply(op.multiply(k, k), var), op.multiply(e, e))
    out = op.multiply(op.multiply(d, k), op.rsqrt(den))
    if attrs.scale:
        out = op.multiply(out, gamma)
    if attrs.center:
        out = op.add(out, beta)
    return out


@relax.transform.function_pass(opt_level=0, name="PreNormalizeLayerNorm")
class PreNormalizeLayerNorm:
    r"""Replace each ``R.nn.layer_norm`` over static trailing axes by an overflow-free form.

    The row is centred at its mean clipped to its range, divided by its mean absolute deviation, and then
    normalized with the epsilon folded in exactly; other code is left as it is. ``eps_s``
    uses ``compute_dtype`` (default: the dtype of x); pass "float16" when the module is
    converted to fp16 afterwards.

    Rewritten graph, per row of n = prod(shape[axes]) elements, every op in the dtype of x
    (``mean*(v)`` is ``sum(v * fl(1/n))``: the accumulator holds pre-divided terms)::

        h   = x * 1/16                              # exact for normal x
        c0  = h - clip(mean*(h), min(h), max(h))    # the clip makes c0 = 0 for a constant row
        c   = c0 - mean*(c0)                        # refines the fp16 mean (offset rows)
        m   = mean*(|c|)                            # mean absolute deviation (MAD)
        D   = m + eps_s,  eps_s = 2^ceil(log2 n) * smallest_subnormal
        s   = c / D                                 # the pre-normalized row, |s| ~ 1
        d   = s - mean*(s)                          # re-centred on the true mean
        v   = sum((d * q)^2) * a,  q = 2^-floor(log2(n)/2),  a = 1/(n q^2) in (1/4, 1]
        r   = maximum(D, rho),  rho = sqrt(eps)/16,  k = D/r,  e = rho/r     # k, e in (0, 1]
        out = d * k * rsqrt(k^2 v + e^2) * gamma + beta

    Exactness: with h = x/16 the LayerNorm is ``(h - mean h) / sqrt(var h + eps/256)``; d = (h - mean h)/D
    and v = var(h)/D^2 for any D > 0, so ``d k / sqrt(k^2 v + e^2) = (h - mean h) / sqrt(var h + rho^2)``:
    in exact arithmetic the rewrite equals the original LayerNorm, epsilon included. The per-row
    epsilon' = eps/(256 D^2) that ``R.nn.layer_norm(s, ..., epsilon')`` would need cannot be written
    (epsilon is a static attribute, and eps/D^2 overflows for small D), hence the explicit k, e form,
    in which both terms are <= 1 (one of k, e is exactly 1).

    Bound (fp16: F = 65504, u = 2^-11; assume (1 + u)^(n+1) <= 2, i.e. n <= 1418, so a computed
    mean* of n terms is at most 2 mean|v|, and at least mean|v|/2 up to an underflow loss < eps_s):
      1. |h| <= F/16 and |mean*(h)| <= F/8; max and min are exact and the clipped mean lies in
         [min h, max h], so |c0| <= max h - min h <= F/8, and c0 = 0 exactly for a constant row;
         |mean*(c0)| <= F/4, so |c| <= 3F/8 (and c = 0 for a constant row).
      2. m <= 2 mean|c| <= 3F/4; D >= mean|c|/2 > 0 (eps_s covers the n underflowed terms).
      3. max|c| <= n mean|c| gives |s| <= 2n, and mean|s| <= 2; so |mean*(s)| <= 4, |d| <= 2n + 4,
         mean|d| <= 6.
      4. q^2 < 4/n: each (d q)^2 <= 4 (2n+4)^2 / n and sum((d q)^2) <= q^2 max|d| sum|d|
         <= 48n + 96, computed <= 96n + 192; a <= 1, k <= 1, e <= 1, so k^2 v + e^2 <= 96n + 193.
      5. k^2 v + e^2 > 0: if e < 1 then k = 1 and the row is not constant, so s has spread >= mean|s| >= 1/2 (max c >= 0 >= min c up to rounding) and v > 0 (its largest term is >= 1/(16 n), representable).
      6. d k rsqrt(.) is the normalized value, |.| <= sqrt(n - 1) up to rounding.
    So for n <= 680 (96n + 193 <= F; this covers 144, 256 and 512 channels) every intermediate of
    every finite fp16 row is finite; the affine output overflows only if the exact LayerNorm
    output does (|gamma| sqrt(n) + |beta| > F). No accumulator needs fp32.
    """

    def __init__(self, compute_dtype: str | None = None) -> None:
        """Rewrite for rows that will be computed in ``compute_dtype``."""
        self.compute_dtype = compute_dtype
        self._x, self._gamma, self._beta = wildcard(), wildcard(), wildcard()
        self._pattern = is_op("relax.nn.layer_norm")(self._x, self._gamma, self._beta)

    def transform_function(
        self, func: relax.Function, mod: tvm.IRModule, ctx: tvm.transform.PassContext
    ) -> relax.Function:
        """Rewrite every matching ``layer_norm`` call in ``func``."""

        def rewriter(expr: relax.Expr, matches: dict) -> relax.Expr:
            new = _rewrite(
                matches[self._x],
                matches[self._gamma],
                matches[self._beta],
                expr.attrs,
                self.compute_dtype,
            )
            return expr if new is None else new

        return rewrite_call(self._pattern, rewriter, func)

"""fp32 sigmoid, softmax and log-softmax legalized through TOPI's `fast_exp`, an exp LLVM can vectorize.

`T.exp` (and `T.sigmoid`, lowered to it) becomes LLVM's `llvm.exp` intrinsic, which has no
vector form without a vector math library: a vectorized loop calls the scalar `expf` once per
lane. On the shipped model that made the feed-forward modules' SiLU (12 kernels of 16 x 576) the
second most expensive kernel of the step, ahead of every matmul but one. `topi.fast_exp`
computes exp from a degree-5 polynomial and a bit shift of the exponent (range-reduced,
inputs clamped to [-88.38, 88.38]), all vector instructions: 9x faster on a 16 x 576 SiLU
with AVX-512, at a relative error <= 2e-6 (tests/test_fast_exp.py checks sigmoid, softmax and
log-softmax against float64 numpy; the step's log-probs stay within 1e-4 of PyTorch). The
output's log-softmax (16 x 5000 at WeNet size) spent 4.6 ns per element in `expf`.

Only float32 is rewritten (`fast_exp` has no fp16 form); everything else keeps the default
legalization, so `LegalizeOps(customize_legalize_map=fast_exp_legalizations())` is a drop-in
for `LegalizeOps()`.
"""

from __future__ import annotations

from collections.abc import Callable

from tvm import relax, te, topi
from tvm.relax.transform.legalize_ops.common import LegalizeFunc

from tvm_conformer.passes._graph import is_tensor_of


def _fast_sigmoid(x: te.Tensor) -> te.Tensor:
    e = topi.fast_exp(topi.negative(x))
    return te.compute(x.shape, lambda *i: 1.0 / (1.0 + e(*i)), name="fast_sigmoid")


def _legalize_sigmoid(default: LegalizeFunc) -> Callable:
    def legalize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        if not is_tensor_of(call.args[0], "float32"):
            return default(bb, call)
        return bb.call_te(_fast_sigmoid, call.args[0], primfunc_name_hint="fast_sigmoid")

    return legalize


def _legalize_softmax(default: LegalizeFunc) -> Callable:
    def legalize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        if not is_tensor_of(call.args[0], "float32"):
            return default(bb, call)
        return bb.call_te(topi.nn.fast_softmax, call.args[0], int(call.attrs.axis),
                          primfunc_name_hint="fast_softmax")

    return legalize


def _fast_log_softmax(x: te.Tensor) -> te.Tensor:
    """log_softmax over the last axis: x - max - log(sum(fast_exp(x - max)))."""
    n = x.shape[-1]
    k_max, k_sum = te.reduce_axis((0, n), name="k_max"), te.reduce_axis((0, n), name="k_sum")
    peak = te.compute(x.shape[:-1], lambda *i: te.max(x[(*i, k_max)], axis=k_max),
                      name="log_softmax_max")
    e = topi.fast_exp(te.compute(x.shape, lambda *i: x[i] - peak[i[:-1]], name="log_softmax_shift"))
    total = te.compute(x.shape[:-1], lambda *i: te.sum(e[(*i, k_sum)], axis=k_sum),
                       name="log_softmax_sum")
    return te.compute(x.shape, lambda *i: x[i] - peak[i[:-1]] - te.log(total[i[:-1]]),
                      name="fast_log_softmax")


def _legalize_log_softmax(default: LegalizeFunc) -> Callable:
    def legalize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        x = call.args[0]
        ndim = x.ty.ndim if is_tensor_of(x, "float32") else -1
        if ndim < 1 or int(call.attrs.axis) not in (-1, ndim - 1):
            return default(bb, call)
        return bb.call_te(_fast_log_softmax, x, primfunc_name_hint="fast_log_softmax")

    return legalize


def fast_exp_legalizations() -> dict[str, LegalizeFunc]:
    """`customize_legalize_map` for `relax.transform.LegalizeOps`."""
    import tvm

    default = tvm.ir.Op.get("relax.sigmoid").get_attr("FLegalize")
    default_softmax = tvm.ir.Op.get("relax.nn.softmax").get_attr("FLegalize")
    default_log_softmax = tvm.ir.Op.get("relax.nn.log_softmax").get_attr("FLegalize")
    return {"relax.sigmoid": _legalize_sigmoid(default),
            "relax.nn.softmax": _legalize_softmax(default_softmax),
            "relax.nn.log_softmax": _legalize_log_softmax(default_log_softmax)}

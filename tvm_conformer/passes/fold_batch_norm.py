"""Fold constant per-channel affine ops after a convolution (inference BatchNorm) into it."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.analysis import get_var2val, remove_all_unused

from tvm_conformer.passes._graph import users

_CONVS = ("relax.nn.conv1d", "relax.nn.conv2d")
_AFFINE = ("relax.add", "relax.subtract", "relax.multiply", "relax.divide")


def _channel_vector(expr: relax.Expr, rank: int, channels: int) -> np.ndarray | None:
    """A constant broadcasting along the channel axis (1) of a rank-`rank` output, as (C,)."""
    if not isinstance(expr, tvm.ir.GenericConst):
        return None
    a = expr.value.numpy()
    if a.ndim > rank:
        return None
    a = a.reshape((1,) * (rank - a.ndim) + a.shape)
    if any(d != 1 for i, d in enumerate(a.shape) if i != 1) or a.shape[1] not in (1, channels):
        return None
    return np.broadcast_to(a.reshape(-1), (channels,)).astype(np.float64)


def _affine_chain(
    conv: relax.Var, var2val: dict, readers: dict
) -> tuple[list, np.ndarray, np.ndarray]:
    """The single-use chain of constant per-channel ops after `conv`: (vars, scale, shift)."""
    rank = len(conv.ty.shape.values)
    channels = int(conv.ty.shape.values[1])
    scale, shift = np.ones(channels), np.zeros(channels)
    chain, node = [], conv
    while len(readers.get(node, ())) == 1:
        nxt = readers[node][0]
        call = var2val.get(nxt)
        if not (isinstance(call, relax.Call) and call.op.name in _AFFINE and len(call.args) == 2):
            break
        left = call.args[0].same_as(node)
        other = call.args[1] if left else call.args[0]
        c = _channel_vector(other, rank, channels)
        op = call.op.name
        if c is None or (op == "relax.divide" and not left):
            break
        if op == "relax.add":
            shift = shift + c
        elif op == "relax.multiply":
            scale, shift = scale * c, shift * c
        elif op == "relax.divide":
            scale, shift = scale / c, shift / c
        elif left:  # x - c
            shift = shift - c
        else:  # c - x
            scale, shift = -scale, c - shift
        chain.append(nxt)
        node = nxt
    return chain, scale, shift


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, folds: dict) -> None:
        super().__init__(mod)
        self.folds = folds  # last var of a chain -> (conv call, folded weight, folded bias)

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        fold = self.folds.get(binding.var)
        if fold is None:
            super().visit_var_binding_(binding)
            return
        conv, weight, bias = fold
        out = relax.Call(conv.op, [self.visit_expr(conv.args[0]), weight], conv.attrs)
        out = self.builder_.emit(relax.op.add(self.builder_.emit(out), bias))
        self.set_var_remap(binding.var, out)


def _fold_function(func: relax.Function, mod: tvm.IRModule) -> relax.Function:
    var2val = get_var2val(func)
    readers = users(var2val)
    folds = {}
    for var, conv in var2val.items():
        if not (isinstance(conv, relax.Call) and conv.op.name in _CONVS):
            continue
        a, weight = conv.attrs, conv.args[1]
        if not isinstance(weight, tvm.ir.GenericConst) or not (
            a.kernel_layout.startswith("OI") and a.out_layout.startswith("NC")
        ):
            continue
        chain, scale, shift = _affine_chain(var, var2val, readers)
        if not chain or np.all(scale == 1):
            continue  # a bias alone is already one epilogue add
        w = weight.value.numpy()
        dtype = w.dtype
        folded = (w * scale.reshape((-1,) + (1,) * (w.ndim - 1))).astype(dtype)
        bias_shape = (1, len(shift)) + (1,) * (len(var.ty.shape.values) - 2)
        bias = relax.const(shift.reshape(bias_shape).astype(dtype))
        folds[chain[-1]] = (conv, relax.const(folded), bias)
    if not folds:
        return func
    return remove_all_unused(_Rewriter(mod, folds).visit_expr(func))


@tvm.transform.module_pass(opt_level=0, name="FoldBatchNorm")
class FoldBatchNorm:
    """Fold ``conv(x, W)`` followed by per-channel constant add/subtract/multiply/divide ops
    (inference BatchNorm after DecomposeOpsForInference, plus the conv's bias) into
    ``conv(x, W * s) + t``, with ``s`` and ``t`` computed at compile time.

    The folding needs the weights as constants: FoldConstant first turns the BatchNorm
    statistics (and, with bound weights, everything) into constants; the chain stops at the
    first op with a non-constant operand. That is the clean way for this flow: folding
    through *parameters* would turn the BatchNorm's four epilogue flops per output element
    (FuseOps already fuses them into the convolution kernel, no extra memory traffic) into a
    weight-rescaling kernel run every step, unless the caller lifts it out with
    `relax.transform.LiftTransformParams` and runs `main_transform_params` once at load time.
    With parameters, the fp32 artifact's BatchNorm stays fused in the conv epilogue;
    builds with bound weights (fp16, or `import_step(bind=True)`) get it folded.
    """

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        """Fold in every Relax function of `mod`."""
        mod = relax.transform.FoldConstant()(mod)
        out = tvm.IRModule(attrs=mod.attrs)
        for gv, func in mod.functions.items():
            out[gv] = _fold_function(func, mod) if isinstance(func, relax.Function) else func
        return out

"""Convert an fp32 Relax module to one that computes every op, reductions included, in fp16."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tvm
from tvm import relax

from tvm_conformer.passes._graph import is_tensor_of

_F16 = "float16"
_F32 = "float32"


@relax.expr_functor.mutator
class _Fp16Mutator(relax.PyExprMutator):
    """Cast fp32 constants, params and fp32-producing calls to fp16."""

    def __init__(self, mod: tvm.IRModule, params: Mapping[relax.Var, relax.Var]) -> None:
        super().__init__(mod)
        self._params = params
        self._casts: dict[relax.Var, relax.Var] = {}

    def visit_dataflow_block_(self, block: relax.DataflowBlock) -> relax.DataflowBlock:
        self._casts = {}  # a cast emitted in one block is not visible in the next
        return super().visit_dataflow_block_(block)

    def visit_binding_block_(self, block: relax.BindingBlock) -> relax.BindingBlock:
        self._casts = {}
        return super().visit_binding_block_(block)

    def visit_var_(self, var: relax.Var) -> relax.Expr:
        new = self._params.get(var)
        if new is None:
            return super().visit_var_(var)
        if not is_tensor_of(new, _F32):
            return new
        if var not in self._casts:
            self._casts[var] = self.builder_.emit(relax.op.astype(new, _F16))
        return self._casts[var]

    def visit_generic_const_(self, const: relax.Expr) -> relax.Expr:
        if not is_tensor_of(const, _F32):
            return const
        return relax.const(const.value.numpy().astype(np.float16), _F16)

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        new = super().visit_call_(call)
        attrs = _retyped_attrs(new.attrs)
        if attrs is not None:  # matmul/conv out_dtype="float32": accumulate in fp16 instead
            new = relax.Call(new.op, new.args, attrs, new.ty_args)
        new = self.builder_.normalize(new)
        return relax.op.astype(new, _F16) if is_tensor_of(new, _F32) else new


def _retyped_attrs(attrs: tvm.ir.Attrs | None) -> tvm.ir.Attrs | None:
    """``attrs`` with every float32 ``dtype``/``out_dtype`` field set to float16, or None."""
    info = getattr(type(attrs), "__tvm_ffi_type_info__", None)
    if attrs is None or info is None:
        return None
    fields = {f.name: getattr(attrs, f.name) for f in info.fields}
    keys = [k for k in ("dtype", "out_dtype") if str(fields.get(k)) == _F32]
    if not keys:
        return None
    return tvm.ir.make_node(info.type_key, **{**fields, **dict.fromkeys(keys, _F16)})


def _convert(func: relax.Function, mod: tvm.IRModule, keep_fp32_io: bool) -> relax.Function:
    def new_param(p: relax.Var) -> relax.Var:
        if keep_fp32_io or not is_tensor_of(p, _F32):
            return p
        return relax.Var(p.name, relax.TensorType(p.ty.shape, _F16))

    params = {p: new_param(p) for p in func.params}
    body = _Fp16Mutator(mod, params).visit_expr(func.body)
    bb = relax.BlockBuilder()
    with bb.function("f", list(params.values()), attrs=func.attrs, private=True):
        for block in body.blocks:
            frame = bb.dataflow() if isinstance(block, relax.DataflowBlock) else None
            if frame is not None:
                frame.__enter__()
            for binding in block.bindings:
                bb.emit_normalized(binding)
            if frame is not None:
                frame.__exit__(None, None, None)
        out = body.body
        if keep_fp32_io:
            out = _cast_tree(bb, out)
        bb.emit_func_output(out)
    return bb.get()["f"]


def _cast_tree(bb: relax.BlockBuilder, expr: relax.Expr) -> relax.Expr:
    if isinstance(expr, relax.Tuple):
        return relax.Tuple([_cast_tree(bb, f) for f in expr.fields])
    ty = expr.ty
    if isinstance(ty, relax.TupleType):
        fields = [
            _cast_tree(bb, bb.emit(relax.TupleGetItem(expr, i))) for i in range(len(ty.fields))
        ]
        return relax.Tuple(fields)
    if isinstance(ty, relax.TensorType) and str(ty.dtype) == _F16:
        return bb.emit(relax.op.astype(expr, _F32))
    return expr


def to_fp16(
    mod: tvm.IRModule,
    params: Mapping[str, np.ndarray] | None = None,
    keep_fp32_io: bool = True,
) -> tvm.IRModule:
    """Return ``mod`` with every Relax function computing in fp16, accumulators included.

    ``params`` (name to array) are bound into ``main`` as constants first. Every fp32
    constant, parameter and call result becomes fp16: float32 ``dtype``/``out_dtype``
    attributes (``astype``, ``matmul``, ``conv``, ``full``...) become float16, so matmul and
    conv accumulate in fp16, and an op that still yields fp32 gets a cast after it. BatchNorm is folded (``DecomposeOpsForInference``) and
    LayerNorm is written as ``mean``/``variance``/``sqrt`` (``DecomposeOpsForTraining``, which
    after that only touches layer_norm), because TVM legalizes ``R.nn.layer_norm`` with fp32
    accumulators whatever its dtype, while ``sum``/``mean``/``variance`` and ``R.nn.softmax``
    accumulate in the input dtype. Run ``PreNormalizeLayerNorm`` before this to keep LayerNorm
    safe. With ``keep_fp32_io`` tensor inputs and outputs stay fp32, cast at the boundary.

    ``relax.transform.ToMixedPrecision`` is not used: in 0.27 it only moves matmul/conv to fp16
    (accumulating in ``out_dtype``), lets ``layer_norm`` follow its fp32 gamma/beta, and keeps
    ops without a policy (``softmax``, ``sum``, ``mean``, ``max``, ``variance``) in fp32.
    """
    if params:
        mod = relax.transform.BindParams("main", dict(params))(mod)
    mod = relax.transform.DecomposeOpsForInference()(mod)
    mod = relax.transform.DecomposeOpsForTraining()(mod)
    out = tvm.IRModule(attrs=mod.attrs)
    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function):
            symbol = func.attrs.get("global_symbol") if func.attrs else None
            func = _convert(func, mod, keep_fp32_io)
            func = func.with_attr("global_symbol", symbol) if symbol else func
        out[gv] = func
    return out

"""Weights laid out in the order the matmul kernels read them: panels of one column tile,
contiguous down the reduction axis.

A linear's weight W (K x N, row-major; a 1x1 convolution's (1, K, N) alike) read by a kernel that keeps a tile of `lanes` columns in
vector registers is read down K with a stride of N * 4 bytes: for the FFN of a d=256 model
(N = 2048) every line of a tile lies 8 KB from the last, so all of them fall into the same few
sets of L1 and L2 and the hardware prefetcher, which does not cross 4 KB pages, never runs ahead.
`PackMatmulWeights(lanes)` rewrites every `matmul(x, W)` whose W depends on the weights alone
(a parameter after `num_input`, a constant, or a transform of those, such as the linear's
transpose) into

    Wp = permute_dims(reshape(pad(W, N -> Np), (K, Np / lanes, lanes)), (1, 0, 2))  # (Np/l, K, l)
    y  = call_tir(matmul_packed, x, Wp)      # y[..., i, j] = sum_k x[..., i, k] Wp[j / l, k, j % l]

with Np the next multiple of `lanes` (the pad columns are zero; a slice drops them when
N % lanes != 0). The packing is a function of the weights only, so `LiftTransformParams` moves it
into the weight transform that `compile` runs once: at run time each column tile of a step reads
one contiguous (K x lanes) panel. The kernel is an ordinary sum of products, so the rules
(schedules/cpu.py `Matmul`) and MetaSchedule schedule it like any matmul, and FuseOps still fuses
its bias, activation and residual epilogues.

Numerically identical: the same products summed over k in the same order.
"""

from __future__ import annotations

import tvm
from tvm import relax, te
from tvm.relax.analysis import free_vars

from tvm_conformer.passes._graph import static_shape

FLOAT_DTYPES = ("float32", "float16")


def _packed_matmul(x: te.Tensor, wp: te.Tensor, n: int, out_dtype: str) -> te.Tensor:
    *lead, _m, k = (int(d) for d in x.shape)
    lanes = int(wp.shape[2])
    r = te.reduce_axis((0, k), "k")

    def body(*idx):  # noqa: ANN002, ANN202 - te index vars
        j = idx[-1]
        return te.sum(x[(*idx[:-1], r)].astype(out_dtype)
                      * wp[j // lanes, r, j % lanes].astype(out_dtype), axis=r)

    return te.compute((*lead, _m, n), body, name="matmul_packed")


def _weight_only(func: relax.Function) -> set[relax.Var]:
    """Vars of `func` computed from its weights (parameters after `num_input`) and constants
    alone."""
    n_input = func.attrs.get("num_input") if func.attrs else None
    if n_input is None:
        return set()
    known = set(func.params[int(n_input):])
    body = func.body
    if not isinstance(body, relax.SeqExpr):
        return known
    for block in body.blocks:
        for binding in block.bindings:
            if isinstance(binding, relax.VarBinding) and all(v in known for v in free_vars(binding.value)):
                known.add(binding.var)
    return known


@relax.expr_functor.mutator
class _Packer(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, lanes: int, weights: set[relax.Var]) -> None:
        super().__init__(mod)
        self.lanes = lanes
        self.weights = weights
        self.packed = 0

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: D102
        new = super().visit_call_(call)
        if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.matmul"):
            return new
        x, w = call.args
        if not isinstance(w, relax.Var) or w not in self.weights:
            return new
        xs, ws = static_shape(x), static_shape(w)
        out_dtype = str(call.attrs.out_dtype)
        out_dtype = out_dtype if out_dtype in FLOAT_DTYPES else str(x.ty.dtype)  # void: x's
        if ws is not None and len(ws) > 2 and all(d == 1 for d in ws[:-2]):
            ws = ws[-2:]  # a 1x1 convolution's weight, (1, K, N): the same matrix
        if (xs is None or ws is None or len(ws) != 2 or len(xs) < 2 or xs[-1] != ws[0]
                or len(xs) < len(static_shape(w))
                or str(x.ty.dtype) not in FLOAT_DTYPES or str(w.ty.dtype) not in FLOAT_DTYPES
                or out_dtype not in FLOAT_DTYPES):
            return new
        k, n = ws
        lanes = self.lanes
        if n < 2 * lanes:
            return new  # the rule fuses such narrow outputs with their rows: nothing to pack
        n_pad = -(-n // lanes) * lanes
        bb = self.builder_
        wv = self.visit_expr(w)
        if len(static_shape(w)) != 2:
            wv = bb.emit(relax.op.reshape(wv, (k, n)))
        if n_pad != n:
            wv = bb.emit(relax.op.nn.pad(wv, [0, 0, 0, n_pad - n]))
        panels = bb.emit(relax.op.reshape(wv, (k, n_pad // lanes, lanes)))
        wp = bb.emit(relax.op.permute_dims(panels, [1, 0, 2]))
        y = bb.emit_te(_packed_matmul, self.visit_expr(x), wp, n_pad, out_dtype,
                       primfunc_name_hint="matmul_packed")
        self.packed += 1
        if n_pad == n:
            return y
        return relax.op.strided_slice(y, axes=[len(xs) - 1], begin=[0], end=[n])


def PackMatmulWeights(lanes: int) -> tvm.transform.Pass:  # noqa: N802 - a pass, named like TVM's
    """The pass described in the module docstring; `lanes` < 2 leaves the module as it is."""

    @tvm.transform.module_pass(opt_level=0, name="PackMatmulWeights")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if lanes < 2:
            return mod
        for gv, func in list(mod.functions.items()):
            if not isinstance(func, relax.Function):
                continue
            weights = _weight_only(func)
            if not weights:
                continue
            packer = _Packer(mod, lanes, weights)
            new = packer.visit_expr(func)
            if packer.packed:
                packer.builder_.update_func(gv, new)
                mod = packer.builder_.get()
        return relax.transform.DeadCodeElimination()(mod)

    return _pass

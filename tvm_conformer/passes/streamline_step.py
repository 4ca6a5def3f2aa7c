"""Fewer, fatter kernels for the imported streaming step, whatever the layout.

`torch.export` writes every `nn.Linear` on a (B, T, d) tensor as reshape to (B*T, d), matmul,
bias add, reshape back, and `kv[:, 0]` as a `take` with a constant index. Both stop FuseOps:
a reshape is not elementwise, so the bias, activation and residual add after a linear became
kernels of their own (12 SiLU and 18 residual kernels per step of the shipped model), and
`take` with an index tensor is opaque, so it became a copy kernel. `StreamlineStep`:

1. `LinearsOnBatches`: reshape(matmul(reshape(x, (B*T, d)), W) [+ b], (B, T, n)) becomes
   matmul(x, W) [+ b] on x as it is (Relax's matmul broadcasts a 2-D weight over the batch), so
   what follows a linear is its epilogue;
2. `TakeAsSlice`: take(x, constant i, axis) becomes a strided slice and a squeeze, which fuse
   into the copy that reads them;
3. `relax.transform.CombineParallelMatmul`: the attention's query, key and value linears read
   the same input and become one matmul against the three weights side by side (concatenated
   once at compile time when weights are lifted), then split.

Numerically the same graph: the matmuls sum the same products in the same order. A rewritten
linear whose flat matmul or bias add were also read elsewhere would be computed twice; the
imported step has no such linear (tests/test_streamline_step.py counts its launches).
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_op, wildcard
from tvm.relax.dpl.pattern import is_const

from tvm_conformer.passes._graph import static_shape


def _linear_rewriter():  # noqa: ANN202 - (pattern, rewriter) for rewrite_call
    x, flat_shape, weight, bias, out_shape = (wildcard() for _ in range(5))
    flat = is_op("relax.reshape")(x, flat_shape)
    mm = is_op("relax.matmul")(flat, weight)
    biased = is_op("relax.add")(bias, mm) | is_op("relax.add")(mm, bias)
    pattern = is_op("relax.reshape")(biased | mm, out_shape)

    def rewrite(orig: relax.Expr, m: dict) -> relax.Expr:
        xs, ws, os = static_shape(m[x]), static_shape(m[weight]), static_shape(orig)
        fs = static_shape(m[flat])
        if None in (xs, ws, os, fs) or len(ws) != 2 or len(fs) != 2 or len(xs) < 2:
            return orig
        if fs[1] != xs[-1] or ws[0] != xs[-1] or os != (*xs[:-1], ws[1]):
            return orig  # not a linear on the last axis of x
        out = relax.op.matmul(m[x], m[weight], out_dtype=m[mm].attrs.out_dtype)
        if bias in m:
            bs = static_shape(m[bias])
            if bs is None or len(bs) != 1:
                return orig
            out = relax.op.add(out, m[bias])  # matmul first: CombineParallelMatmul's bias form
        return out

    return pattern, rewrite


def _take_rewriter():  # noqa: ANN202
    x, index = wildcard(), is_const()
    pattern = is_op("relax.take")(x, index)

    def rewrite(orig: relax.Expr, m: dict) -> relax.Expr:
        idx = m[index].value.numpy()
        shape = static_shape(m[x])
        if idx.ndim != 0 or shape is None:
            return orig
        axis = int(orig.attrs.axis) % len(shape)
        i = int(idx) % shape[axis]
        sliced = relax.op.strided_slice(m[x], axes=[axis], begin=[i], end=[i + 1])
        return relax.op.squeeze(sliced, axis=[axis])

    return pattern, rewrite


def _rewrite_pass(name: str, make) -> tvm.transform.Pass:  # noqa: ANN001
    @tvm.transform.module_pass(opt_level=0, name=name)
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        pattern, rewrite = make()
        out = tvm.IRModule(mod.functions, attrs=mod.attrs)
        for gv, func in mod.functions.items():
            if isinstance(func, relax.Function):
                out[gv] = relax.dpl.rewrite_call(pattern, rewrite, func)
        return out

    return _pass


def LinearsOnBatches() -> tvm.transform.Pass:  # noqa: N802 - a pass, named like TVM's
    return _rewrite_pass("LinearsOnBatches", _linear_rewriter)


def TakeAsSlice() -> tvm.transform.Pass:  # noqa: N802
    return _rewrite_pass("TakeAsSlice", _take_rewriter)


def StreamlineStep() -> tvm.transform.Pass:  # noqa: N802
    return tvm.transform.Sequential(
        [
            LinearsOnBatches(),
            TakeAsSlice(),
            relax.transform.CanonicalizeBindings(),
            relax.transform.EliminateCommonSubexpr(),
            relax.transform.CombineParallelMatmul(),
            relax.transform.DeadCodeElimination(),
        ],
        name="StreamlineStep",
    )

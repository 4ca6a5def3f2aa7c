"""Rewrite multi-head attention into per-head einsums over head slices and a concat of heads."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.relax.analysis import get_var2val, remove_all_unused

from tvm_conformer.passes._graph import int_values, static_shape, users

# ops that only select or rearrange elements, replayed on index arrays by `_trace`
_VIEWS = frozenset(
    f"relax.{name}"
    for name in ("reshape", "permute_dims", "broadcast_to", "expand_dims", "squeeze", "take",
                 "strided_slice")
)
# elementwise ops allowed between the scores matmul and the softmax (scale, mask, bias)
_SCORE_OPS = frozenset(
    f"relax.{name}" for name in ("add", "subtract", "multiply", "divide", "where")
)
# einsum letters for unit axes, one set per einsum operand; b, t, s, d name the real axes
_FRESH_A, _FRESH_B = "ijklmnopq", "uvwxyz"


def _replay(call: relax.Call, idx: np.ndarray) -> np.ndarray | None:
    """`idx` (an index array of the view's input) after the view `call`, or None."""
    name, out = call.op.name, static_shape(call)
    if name == "relax.reshape":
        return idx.reshape(out)
    if name == "relax.permute_dims":
        axes = call.attrs.axes
        return idx.transpose(None if axes is None else [int(a) for a in axes])
    if name == "relax.broadcast_to":
        return np.broadcast_to(idx, out)
    if name in ("relax.expand_dims", "relax.squeeze"):
        return idx.reshape(out)  # both only insert or drop unit axes
    if name == "relax.take":
        indices = call.args[1]
        if not isinstance(indices, tvm.ir.GenericConst):
            return None
        return np.take(idx, indices.value.numpy(), axis=int(call.attrs.axis))
    x, axes, begin, end, *strides = call.args
    index = [slice(None)] * idx.ndim
    steps = int_values(strides[0]) if strides else [1] * len(axes.fields)
    bounds = zip(int_values(axes), int_values(begin), int_values(end), steps, strict=True)
    for a, lo, hi, st in bounds:
        index[a] = slice(lo, hi, st)
    return idx[tuple(index)]


def _trace(expr: relax.Expr, var2val: dict) -> tuple[relax.Expr, np.ndarray] | None:
    """(base, idx): `expr` is a chain of views of `base`; idx[i] is expr[i]'s flat index in base."""
    value = var2val.get(expr)
    if isinstance(value, relax.Call) and value.op.name in _VIEWS:
        inner = _trace(value.args[0], var2val)
        if inner is not None and (idx := _replay(value, inner[1])) is not None:
            return inner[0], idx
    shape = static_shape(expr)
    if shape is None:
        return None
    return expr, np.arange(int(np.prod(shape))).reshape(shape)


@dataclass(frozen=True)
class _Operand:
    """A head's operand: `base[begin:end]` on `axes`, whose axes carry einsum `letters`."""

    base: relax.Expr
    axes: tuple[int, ...]
    begin: tuple[int, ...]
    end: tuple[int, ...]
    letters: str


def _head_operand(base: relax.Expr, idx: np.ndarray, letters: str, fresh: str) -> _Operand | None:
    """`idx` (axes named by `letters`) as a box of `base` up to a permutation, or None.

    Each axis of `base` must either stay fixed or run with unit stride along exactly one axis of
    `idx`, and every axis of `idx` longer than 1 must be run along by one axis of `base`.
    """
    base_shape = static_shape(base)
    coords = np.unravel_index(idx, base_shape)
    units = iter(fresh)
    axes, begin, end, names, used = [], [], [], [], set()
    for axis, (c, size) in enumerate(zip(coords, base_shape, strict=True)):
        lo = int(c.min())
        moving = [j for j in range(idx.ndim) if idx.shape[j] > 1 and np.ptp(c, axis=j).any()]
        if not moving:
            hi, name = lo + 1, next(units)
        else:
            j = moving[0]
            along_j = [-1 if a == j else 1 for a in range(idx.ndim)]
            run = lo + np.arange(idx.shape[j]).reshape(along_j)
            if len(moving) > 1 or j in used or not (c == run).all():
                return None
            used.add(j)
            hi, name = lo + idx.shape[j], letters[j]
        names.append(name)
        if (lo, hi) != (0, size):
            axes.append(axis)
            begin.append(lo)
            end.append(hi)
    if any(idx.shape[j] > 1 and j not in used for j in range(idx.ndim)):
        return None
    return _Operand(base, tuple(axes), tuple(begin), tuple(end), "".join(names))


@dataclass(frozen=True)
class _Attention:
    """One matched attention: softmax(chain(Q K)) V with H heads, found from its second matmul."""

    batch: int
    heads: int
    t: int
    s: int
    dk: int
    q: list[_Operand]  # per head, letters from "btd"
    k: list[_Operand]  # letters from "bds"
    v: list[_Operand]  # letters from "bsd"
    chain: list[relax.Call]  # the elementwise calls from the scores to the softmax, in order
    merged: bool  # True: the rewritten var is the (B, T, H*dk) merge of heads, else the matmul


def _match(
    matmul: relax.Var, var2val: dict, readers: dict
) -> tuple[relax.Var, _Attention] | None:
    """The var to rewrite and the attention computing it, if `matmul` is softmax(...) @ V."""
    p, v = var2val[matmul].args
    traced = _trace(p, var2val)
    if traced is None:
        return None
    soft_var, p_idx = traced
    softmax = var2val.get(soft_var)
    if not (isinstance(softmax, relax.Call) and softmax.op.name == "relax.nn.softmax"):
        return None
    scores4 = static_shape(softmax)
    if scores4 is None or len(scores4) != 4 or int(softmax.attrs.axis) % 4 != 3:
        return None
    if not np.array_equal(p_idx.ravel(), np.arange(p_idx.size)):
        return None  # P must be the softmax output, batch and heads merged at most
    batch, heads, t, s = scores4
    chain, x = [], softmax.args[0]
    while isinstance(call := var2val.get(x), relax.Call) and call.op.name in _SCORE_OPS:
        full = [a for a in call.args if static_shape(a) == scores4]
        others = [static_shape(a) for a in call.args if static_shape(a) != scores4]
        if len(full) != 1 or any(o is None or (len(o) == 4 and o[1] not in (1, heads))
                                 for o in others):
            return None
        chain.insert(0, call)
        x = full[0]
    traced = _trace(x, var2val)
    if traced is None or not np.array_equal(traced[1].ravel(), np.arange(traced[1].size)):
        return None
    scores = var2val.get(traced[0])
    if not (isinstance(scores, relax.Call) and scores.op.name == "relax.matmul"):
        return None
    q, k = scores.args
    if static_shape(q) is None:
        return None
    dk = static_shape(q)[-1]
    per_head = {"q": (q, (batch, heads, t, dk), "btd", _FRESH_A),
                "k": (k, (batch, heads, dk, s), "bds", _FRESH_B),
                "v": (v, (batch, heads, s, dk), "bsd", _FRESH_B)}
    operands = {}
    for name, (expr, shape, letters, fresh) in per_head.items():
        traced = _trace(expr, var2val)
        if traced is None or traced[1].size != int(np.prod(shape)):
            return None
        idx = traced[1].reshape(shape)
        ops = [_head_operand(traced[0], idx[:, h], letters, fresh) for h in range(heads)]
        if None in ops:
            return None
        operands[name] = ops
    target, merged = matmul, False
    merge = np.arange(batch * heads * t * dk).reshape(batch, heads, t, dk).transpose(0, 2, 1, 3)
    node = matmul
    while len(readers.get(node, ())) == 1:  # follow single-use views towards the consumer
        node = readers[node][0]
        value = var2val.get(node)
        if not (isinstance(value, relax.Call) and value.op.name in _VIEWS):
            break
        traced = _trace(node, var2val)
        shape = (batch, t, heads * dk)
        if traced is not None and traced[0].same_as(matmul) and static_shape(node) == shape:
            if np.array_equal(traced[1], merge.reshape(shape)):
                target, merged = node, True
                break
    attention = _Attention(batch, heads, t, s, dk, operands["q"], operands["k"], operands["v"],
                           chain, merged)
    return target, attention


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, targets: dict[relax.Var, _Attention]) -> None:
        super().__init__(mod)
        self.targets = targets

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        attention = self.targets.get(binding.var)
        if attention is None:
            super().visit_var_binding_(binding)
            return
        out = self._emit_heads(attention, static_shape(binding.var))
        if isinstance(binding.var, relax.DataflowVar):
            self.set_var_remap(binding.var, self.builder_.emit(out))
        else:  # a block output stays one
            self.set_var_remap(binding.var, self.builder_.emit_output(out))

    def _slice(self, op: _Operand) -> relax.Expr:
        base = self.visit_expr(op.base)
        if not op.axes:
            return base
        return self.builder_.emit(relax.op.strided_slice(base, op.axes, op.begin, op.end))

    def _einsum(self, a: relax.Expr, a_letters: str, b: relax.Expr, b_letters: str, out: str,
                shape: tuple[int, ...]) -> relax.Expr:
        """einsum over the letters present; the absent unit axes come back by a reshape (a view)."""
        present = "".join(c for c in out if c in a_letters + b_letters)
        result = self.builder_.emit(relax.op.einsum((a, b), f"{a_letters},{b_letters}->{present}"))
        return self.builder_.emit(relax.op.reshape(result, shape))

    def _emit_heads(self, att: _Attention, out_shape: tuple[int, ...]) -> relax.Expr:
        """The heads' bindings; returns the (not yet bound) expression of the attention output."""
        b, t, s, dk = att.batch, att.t, att.s, att.dk
        scores4 = (b, att.heads, t, s)
        heads = []
        for h in range(att.heads):
            q, k, v = att.q[h], att.k[h], att.v[h]
            x = self._einsum(
                self._slice(q), q.letters, self._slice(k), k.letters, "bts", (b, 1, t, s)
            )
            for call in att.chain:
                args = [x if static_shape(a) == scores4 else self._head_of(a, h, att.heads)
                        for a in call.args]
                x = self.builder_.emit(relax.Call(call.op, args, call.attrs, call.ty_args))
            p = self.builder_.emit(relax.op.nn.softmax(x, axis=-1))
            p_letters = ("b" if b > 1 else _FRESH_A[0]) + _FRESH_A[1] + "ts"
            shape = (b, t, dk) if att.merged else (b, 1, t, dk)
            heads.append(self._einsum(p, p_letters, self._slice(v), v.letters, "btd", shape))
        out = relax.op.concat(heads, axis=2 if att.merged else 1)
        if att.merged:
            return out
        return relax.op.reshape(self.builder_.emit(out), out_shape)

    def _head_of(self, expr: relax.Expr, h: int, heads: int) -> relax.Expr:
        """A scores-chain operand for head `h`: sliced if it has a head axis, else as it is."""
        new = self.visit_expr(expr)
        shape = static_shape(expr)
        if shape is None or len(shape) != 4 or shape[1] != heads or heads == 1:
            return new
        return self.builder_.emit(relax.op.strided_slice(new, [1], [h], [h + 1]))


@relax.transform.function_pass(opt_level=0, name="ChunkedEinsumAttention")
class ChunkedEinsumAttention:
    """Split multi-head attention per head: einsum scores, softmax, einsum weighted sum, concat.

    Matches ``softmax(chain(Q @ K)) @ V`` where Q, K and V are head splits of projected
    tensors and ``chain`` are elementwise ops (scale, chunk mask, bias) whose other operands
    broadcast over heads or carry one slice per head. Every view between the projections and
    the matmuls (reshape, permute_dims, broadcast_to, take, strided_slice) is replayed on an
    index array, so the match does not depend on how a frontend spelled the head split, and
    each head's operand becomes one `strided_slice` of the projected tensor itself, whatever
    its layout ((B, T, C), or (B, C, 1, T) after ChannelsFirstLayout, or a stacked K/V cache).
    The einsum subscripts absorb the layout: no transpose of K or V is materialized.

    Per head h (paper: the (T, S) scores of one head stay small enough for the L2 cache):
        scores_h = einsum(q_h, k_h -> t s);  p_h = softmax(chain(scores_h))
        out_h = einsum(p_h, v_h -> t d)
    The heads are concatenated along the channels when the attention output is consumed as
    the usual (B, T, H*dk) merge of heads, else stacked into the (B*H, T, dk) matmul result.
    """

    def transform_function(
        self, func: relax.Function, mod: tvm.IRModule, ctx: tvm.transform.PassContext
    ) -> relax.Function:
        """Rewrite every matched attention of `func`; other functions come back unchanged."""
        var2val = get_var2val(func)
        readers = users(var2val)
        targets = {}
        for var, value in var2val.items():
            if isinstance(value, relax.Call) and value.op.name == "relax.matmul":
                match = _match(var, var2val, readers)
                if match is not None:
                    targets[match[0]] = match[1]
        if not targets:
            return func
        return remove_all_unused(_Rewriter(mod, targets).visit_expr(func))

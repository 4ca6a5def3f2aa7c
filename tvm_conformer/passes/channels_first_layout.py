"""Rewrite an imported encoder's (B, T, C) dataflow into the channels-first (B, C, 1, T) layout."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import tvm
from tvm import relax
from tvm.relax.analysis import get_var2val, remove_all_unused

from tvm_conformer.passes._graph import int_values, static_shape

_UNARY = frozenset(
    f"relax.{name}"
    for name in ("nn.relu", "nn.silu", "nn.gelu", "sigmoid", "tanh", "exp", "log", "sqrt",
                 "rsqrt", "negative", "abs", "square", "erf", "astype")
)
_BROADCAST = frozenset(
    f"relax.{name}"
    for name in ("add", "subtract", "multiply", "divide", "power", "maximum", "minimum", "where",
                 "greater", "less", "equal", "not_equal", "greater_equal", "less_equal")
)
_VIEWS = frozenset(("relax.reshape", "relax.expand_dims", "relax.squeeze"))  # keep element order


def _out_dtype(call: relax.Call) -> str | None:
    dtype = call.attrs.out_dtype
    return None if dtype is None or str(dtype) in ("", "void") else str(dtype)


@dataclass(frozen=True)
class _Track:
    """An original tensor of `shape`, held as `value` in another layout.

    kind "tc":   the original is (B, T, C), or (B*T, C); value is (B, C, 1, T)
    kind "ct":   the original is (B, C, T); value is (B, C, 1, T), the same memory order
    kind "flat": the original is value (B, G, T, F) permuted to (B, T, G, F), possibly flattened
                 to (B, T, G*F) or (B*T, G*F): groups of features handed to a linear per frame
                 (a 2-D conv stack's channels x frequencies, attention's heads x head channels)
    """

    kind: str
    value: relax.Expr
    shape: tuple[int, ...]

    @property
    def dims(self) -> tuple[int, ...]:
        return static_shape(self.value)

    def axis(self, axis: int) -> int | None:
        """The axis of `value` that holds axis `axis` of the original (None: no single one)."""
        rank = len(self.shape)
        axis %= rank
        if self.kind == "ct":
            return (0, 1, 3)[axis]
        if self.kind != "tc":
            return None
        if rank == 3:
            return (0, 3, 1)[axis]
        return 1 if axis == 1 else (3 if self.dims[0] == 1 else None)


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    """Emits each supported op in the channels-first layout; transposes back only on demand."""

    def __init__(self, mod: tvm.IRModule, var2val: dict[relax.Var, relax.Expr]) -> None:
        super().__init__(mod)
        self.var2val = var2val
        self.tracked: dict[relax.Var, _Track] = {}
        self.materialized: dict[relax.Var, relax.Expr] = {}
        self.handlers: dict[str, Callable[[relax.Call], _Track | None]] = {
            "relax.reshape": self._reshape,
            "relax.permute_dims": self._permute_dims,
            "relax.broadcast_to": self._broadcast_to,
            "relax.matmul": self._matmul,
            "relax.nn.layer_norm": self._layer_norm,
            "relax.nn.softmax": self._softmax,
            "relax.nn.log_softmax": self._softmax,
            "relax.nn.conv1d": self._conv1d,
            "relax.concat": self._concat,
            "relax.strided_slice": self._strided_slice,
            **{name: self._elementwise for name in _UNARY | _BROADCAST},
        }

    # --- bookkeeping -----------------------------------------------------------------------

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        call = binding.value
        # block outputs keep the original layout; only dataflow values are kept channels-first
        if isinstance(binding.var, relax.DataflowVar) and isinstance(call, relax.Call):
            handler = self.handlers.get(getattr(call.op, "name", ""))
            track = handler(call) if handler else None
            if track is not None:
                self.tracked[binding.var] = track
                return
        super().visit_var_binding_(binding)

    def visit_dataflow_var_(self, var: relax.DataflowVar) -> relax.Expr:
        """An op that needs the original layout gets a transpose back, emitted once."""
        track = self.tracked.get(var)
        if track is None:
            return super().visit_dataflow_var_(var)
        if var not in self.materialized:
            self.materialized[var] = self._to_original(track)
        return self.materialized[var]

    def _emit(self, expr: relax.Expr) -> relax.Expr:
        return self.builder_.emit(expr)

    def _track(self, expr: relax.Expr) -> _Track | None:
        return self.tracked.get(expr) if isinstance(expr, relax.Var) else None

    def _to_original(self, track: _Track) -> relax.Expr:
        if track.kind == "ct":
            return self._reshape_to(track.value, track.shape)
        axes = [0, 3, 1, 2] if track.kind == "tc" else [0, 2, 1, 3]
        return self._reshape_to(self._emit(relax.op.permute_dims(track.value, axes)), track.shape)

    def _reshape_to(self, expr: relax.Expr, shape: tuple[int, ...]) -> relax.Expr:
        return expr if static_shape(expr) == shape else self._emit(relax.op.reshape(expr, shape))

    def _to_channels_first(
        self, expr: relax.Expr, kind: str, rank: int, batch: int
    ) -> relax.Expr | None:
        """`expr`, an untracked operand of a rank-`rank` `kind` op of batch `batch`, in the
        (B, C, 1, T) form (a reshape, or a transpose where an activation enters the layout)."""
        shape = static_shape(expr)
        if shape is None or len(shape) > rank or kind == "flat" or (rank == 2 and batch != 1):
            return None
        if math.prod(shape) == 1:
            return self.visit_expr(expr)  # a scalar broadcasts the same in any layout
        padded = (1,) * (rank - len(shape)) + shape
        if kind == "ct":
            b, c, t = padded
        else:
            b, t, c = padded if rank == 3 else (1, *padded)
        # the conversion starts with a reshape: imported reshapes and expand_dims are redundant
        value = self.var2val.get(expr)
        while isinstance(value, relax.Call) and value.op.name in _VIEWS and not self._track(
            value.args[0]
        ):
            expr, value = value.args[0], self.var2val.get(value.args[0])
        new = self.visit_expr(expr)
        if kind == "tc" and t > 1 and c > 1:
            new = self._emit(relax.op.permute_dims(self._reshape_to(new, (b, t, c)), [0, 2, 1]))
        return self._reshape_to(new, (b, c, 1, t))

    def _operand(self, expr: relax.Expr, like: _Track) -> relax.Expr | None:
        """An untracked operand of an op whose tracked operand is `like`, in `like`'s form."""
        return self._to_channels_first(expr, like.kind, len(like.shape), like.dims[0])

    # --- op handlers: return the channels-first result, or None to keep the op as it is ------

    def _elementwise(self, call: relax.Call) -> _Track | None:
        out = static_shape(call)
        tracks = [self._track(a) for a in call.args]
        main = next((t for t in tracks if t and t.kind != "flat" and t.shape == out), None)
        if main is None:
            return None
        args = []
        for arg, track in zip(call.args, tracks, strict=True):
            if track is not None:
                if (track.kind, track.shape) != (main.kind, main.shape):
                    return None
                args.append(track.value)
                continue
            new = self._operand(arg, main)
            if new is None:
                return None
            args.append(new)
        value = self._emit(relax.Call(call.op, args, call.attrs, call.ty_args))
        return _Track(main.kind, value, out)

    def _reshape(self, call: relax.Call) -> _Track | None:
        track, out = self._track(call.args[0]), static_shape(call)
        if track is None or out is None:
            return None
        b, c, h, w = track.dims
        allowed = {
            "tc": [(b, w, c), (b * w, c)],
            "ct": [(b, c, w)],
            "flat": [(b, h, c, w), (b, h, c * w), (b * h, c * w)],
        }[track.kind]
        return _Track(track.kind, track.value, out) if out in allowed else None

    def _permute_dims(self, call: relax.Call) -> _Track | None:
        x, out = call.args[0], static_shape(call)
        track = self._track(x)
        if out is None or call.attrs.axes is None:
            return None
        axes = [int(a) for a in call.attrs.axes]
        if track is not None and track.kind in ("tc", "ct") and len(track.shape) == 3:
            if axes == [0, 2, 1]:
                return _Track("ct" if track.kind == "tc" else "tc", track.value, out)
            return None
        if track is None and axes == [0, 2, 1, 3]:
            return _Track("flat", self.visit_expr(x), out)  # groups about to be flattened
        return None

    def _broadcast_to(self, call: relax.Call) -> _Track | None:
        track = self._track(call.args[0])
        return track if track is not None and static_shape(call) == track.shape else None

    def _weight(self, w: relax.Expr) -> relax.Expr | None:
        """The (out, in) matrix of `matmul(x, w)`, looking through the imported `permute_dims(W)`."""
        value = self.var2val.get(w)
        if isinstance(value, relax.Call) and value.op.name == "relax.broadcast_to":
            w, value = value.args[0], self.var2val.get(value.args[0])
        if static_shape(w) is None or len(static_shape(w)) != 2:
            return None
        if (
            isinstance(value, relax.Call)
            and value.op.name == "relax.permute_dims"
            and value.attrs.axes is not None
            and [int(a) for a in value.attrs.axes] == [1, 0]
        ):
            return self.visit_expr(value.args[0])
        return self._emit(relax.op.permute_dims(self.visit_expr(w), [1, 0]))

    def _matmul(self, call: relax.Call) -> _Track | None:
        x, w = call.args
        track, out, x_shape = self._track(x), static_shape(call), static_shape(x)
        if out is None or x_shape is None:
            return None
        if track is None and len(x_shape) in (2, 3):  # an activation enters the layout here
            rank = len(x_shape)
            batch = x_shape[0] if rank == 3 else 1
            value = self._to_channels_first(x, "tc", rank, batch)
            track = _Track("tc", value, x_shape) if value is not None else None
        if track is None or track.kind == "ct":
            return None
        if track.kind == "flat" and len(track.shape) == 4:
            return None  # a linear over F alone, not over the flattened (G, F)
        weight = self._weight(w)
        if weight is None:
            return None
        c_out, c_in = static_shape(weight)
        dtype = _out_dtype(call)
        if track.kind == "tc":
            kernel = relax.op.reshape(weight, (c_out, c_in, 1, 1))
            value = self._emit(relax.op.nn.conv2d(track.value, kernel, out_dtype=dtype))
            return _Track("tc", value, out)
        b, c, t, f = track.dims  # flat: the linear is a (1, F) convolution over (B, G, T, F)
        kernel = relax.op.reshape(weight, (c_out, c, 1, f))
        conv = self._emit(relax.op.nn.conv2d(track.value, kernel, out_dtype=dtype))
        return _Track("tc", self._emit(relax.op.reshape(conv, (b, c_out, 1, t))), out)

    def _layer_norm(self, call: relax.Call) -> _Track | None:
        x, gamma, beta = call.args
        track, axes = self._track(x), list(call.attrs.axes)
        axis = track.axis(int(axes[0])) if track is not None and len(axes) == 1 else None
        if axis is None:
            return None
        a = call.attrs
        norm = relax.op.nn.layer_norm(
            track.value, self.visit_expr(gamma), self.visit_expr(beta), [axis], a.epsilon, a.center,
            a.scale,
        )
        return _Track(track.kind, self._emit(norm), track.shape)

    def _softmax(self, call: relax.Call) -> _Track | None:
        track = self._track(call.args[0])
        axis = track.axis(int(call.attrs.axis)) if track is not None else None
        if axis is None:
            return None
        op = relax.op.nn.softmax if call.op.name == "relax.nn.softmax" else relax.op.nn.log_softmax
        return _Track(track.kind, self._emit(op(track.value, axis)), track.shape)

    def _conv1d(self, call: relax.Call) -> _Track | None:
        x, w = call.args
        track, a, w_shape = self._track(x), call.attrs, static_shape(w)
        if (
            track is None or track.kind != "ct" or w_shape is None
            or (a.data_layout, a.kernel_layout, a.out_layout) != ("NCW", "OIW", "NCW")
        ):
            return None
        o, i, k = w_shape
        kernel = relax.op.reshape(self.visit_expr(w), (o, i, 1, k))
        conv = relax.op.nn.conv2d(
            track.value, kernel, strides=(1, int(a.strides[0])),
            padding=(0, int(a.padding[0]), 0, int(a.padding[1])), dilation=(1, int(a.dilation[0])),
            groups=int(a.groups), out_dtype=_out_dtype(call),
        )
        return _Track("ct", self._emit(conv), static_shape(call))

    def _concat(self, call: relax.Call) -> _Track | None:
        fields = list(call.args[0].fields)
        tracks = [self._track(f) for f in fields]
        main = next((t for t in tracks if t is not None), None)
        axis = main.axis(int(call.attrs.axis)) if main is not None else None
        if axis is None or any(t is not None and t.kind != main.kind for t in tracks):
            return None
        values = []
        for field, track in zip(fields, tracks, strict=True):
            value = track.value if track else self._operand(field, main)
            if value is None:
                return None
            values.append(value)
        return _Track(main.kind, self._emit(relax.op.concat(values, axis)), static_shape(call))

    def _strided_slice(self, call: relax.Call) -> _Track | None:
        x, axes, begin, end, *strides = call.args
        track = self._track(x)
        new_axes = [track.axis(a) for a in int_values(axes)] if track is not None else [None]
        if None in new_axes:
            return None
        sliced = relax.op.strided_slice(
            track.value, new_axes, int_values(begin), int_values(end),
            int_values(strides[0]) if strides else None, call.attrs.assume_inbound,
        )
        return _Track(track.kind, self._emit(sliced), static_shape(call))


@relax.transform.function_pass(opt_level=0, name="ChannelsFirstLayout")
class ChannelsFirstLayout:
    """Carry activations in the (B, C, 1, T) layout of channels-first accelerators (Xu et al. 2023).

    Design: a layout propagation over the dataflow block, in the spirit of TVM's ConvertLayout
    but for the ops a Conformer is imported with. Each original value is either re-emitted as it
    is or *tracked*: held in the channels-first form, with the original recovered (transposed
    back) only when an op that is not understood reads it. Activations enter the layout at a
    linear (`matmul` with a 2-D weight), and then stay in it through:

    - linears: `matmul(x, permute_dims(W))` becomes a 1x1 `conv2d` with the OIHW kernel
      `reshape(W)` (a view: the weight transpose the imported graph runs every step goes away);
      after a (B, G, T, F) -> (B, T, G*F) flattening it becomes a (1, F) `conv2d` over the
      (B, G, T, F) tensor itself: the subsampling's output linear, and attention's output
      projection over the (B, H, T, dk) heads, need no transpose at all;
    - LayerNorm, softmax and log-softmax: the same op over the mapped axis (channels: axis 1);
    - elementwise and broadcasting ops: untracked operands are mapped to the layout (a bias
      (C,) becomes (1, C, 1, 1) by a reshape);
    - `permute_dims(x, [0, 2, 1])` between (B, T, C) and (B, C, T): no op, both are the same
      (B, C, 1, T) tensor, so the convolution module's transposes vanish; its depthwise
      `conv1d` becomes the same depthwise `conv2d` with a (1, K) kernel;
    - `concat` and `strided_slice` (caches, GLU halves) along the mapped axes.

    Block outputs keep their original layout and shape, so the function's signature is unchanged:
    the transposes left are at the graph boundary (the log-probs, and the new keys/values that go
    into the time-major attention cache) and where an op outside this list reads an activation
    (attention's head split, unless ChunkedEinsumAttention runs next).
    """

    def transform_function(
        self, func: relax.Function, mod: tvm.IRModule, ctx: tvm.transform.PassContext
    ) -> relax.Function:
        """Rewrite `func`; functions without a supported op come back structurally equal."""
        new = _Rewriter(mod, get_var2val(func)).visit_expr(func)
        return remove_all_unused(new)

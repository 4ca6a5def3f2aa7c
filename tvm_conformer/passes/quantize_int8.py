"""Quantize the step's linears to int8: weights per output channel at compile time, activations
per row in the step, products summed in int32 by the target's int8 dot product.

`QuantizeInt8(scheme)` rewrites every `matmul(x, W)` whose `W` depends on the weights alone (a
linear, a pointwise convolution written as a matmul; never attention's activation x activation
matmuls) into

    sw[n]  = max_k |W[k, n]| / scheme.weight_max                    weights only: lifted out
    Wq     = round(W / sw)  as int8, packed (N/L, K/4, L, 4)          of the step, run once
    sx[r]  = max_k |x[r, k]| / 127  (dynamic)  or  a calibrated constant  (static)
    xq     = round(x / sx) + scheme.act_offset   as scheme.act_dtype
    y      = (int8_matmul(xq, Wq) - act_offset * sum_k Wq[k, n]) * sx[r] * sw[n]

The packed layout puts 4 consecutive k of L consecutive output channels in one 4L-byte vector:
what one `vpdpbusd` (L = 16), `sdot` (4) or HVX `vrmpy` (32) multiplies by 4 broadcast bytes of
a row of xq and adds into L int32 lanes. `int8_matmul` is a TIR kernel whose reduction block is
named `int8_matmul`; `schedules/int8.py` finds it by that name and tensorizes it. LayerNorm,
softmax, the depthwise convolution and attention stay in fp32.

The scheme follows the target (`int8_scheme`): x86 `vpdpbusd`/`vpmaddubsw` multiply u8 by s8,
so activations are shifted by 128 into u8 there (the shift is taken back through the weights'
column sums); on AVX2 without VNNI `vpmaddubsw` adds two u8 x s8 products in saturating int16
(2 * 255 * 127 overflows it), so weights keep 7 bits (|Wq| <= 63: 2 * 255 * 63 < 32767), as
ONNX Runtime's `reduce_range` does for such machines. Arm `sdot` and NEON's widening
multiplies are s8 x s8: activations stay signed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax, te
from tvm.target import Target
from tvm.target.codegen import target_has_features

from tvm_conformer.passes._graph import is_tensor_of, static_shape

BLOCK = "int8_matmul"  # the reduction block's name: what the int8 schedule rule looks for
QUANTIZE_BLOCK = "int8_quantize"  # the activations' quantization (a kernel of its own)
_EPS = 1e-12  # an all-zero row or column gets this scale (its quantized values are all 0)


@dataclass(frozen=True)
class Int8Scheme:
    """How a target multiplies int8: `isa` names the instruction family."""

    isa: str  # vnni | avx2 | sdot | neon | hvx | generic
    lanes: int  # int32 accumulators per vector: L of the packed weight layout
    act_dtype: str  # uint8 (shifted by act_offset) or int8
    act_offset: int  # 128 for uint8 activations, 0 for int8
    weight_max: int  # 127, or 63 where int16 intermediates would saturate

    def to_dict(self) -> dict:
        return {"isa": self.isa, "lanes": self.lanes, "act_dtype": self.act_dtype,
                "act_offset": self.act_offset, "weight_max": self.weight_max}


def int8_scheme(target: Target) -> Int8Scheme:
    """The int8 scheme of an LLVM target, from its triple and features."""
    triple = str(target.attrs.get("mtriple", "")) if target.attrs else ""
    if triple.startswith("hexagon"):
        return Int8Scheme("hvx", 32, "uint8", 128, 127)  # vrmpy(Vu.ub, Vv.b), 128-byte vectors
    if triple.startswith(("aarch64", "arm")):
        if target_has_features("dotprod", target):
            return Int8Scheme("sdot", 4, "int8", 0, 127)
        return Int8Scheme("neon", 4, "int8", 0, 127)
    if target_has_features("avx512vnni", target):
        return Int8Scheme("vnni", 16, "uint8", 128, 127)
    if target_has_features("avx2", target):
        return Int8Scheme("avx2", 8, "uint8", 128, 63)
    return Int8Scheme("generic", 4, "int8", 0, 127)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def int8_matmul_func(rows: Sequence[int], k: int, n: int, lanes: int,
                     act_dtype: str) -> tvm.tirx.PrimFunc:
    """C[*rows, n] (int32) = sum_k xq[*rows, k] * Wp[n // L, k // 4, n % L, k % 4]."""
    i64 = lambda *dims: [tvm.tirx.IntImm("int64", d) for d in dims]  # noqa: E731 - as Relax's
    x = te.placeholder(i64(*rows, k), act_dtype, name="xq")
    w = te.placeholder(i64(n // lanes, k // 4, lanes, 4), "int8", name="wq")
    r = te.reduce_axis(i64(0, k), name="k")

    def body(*idx):  # noqa: ANN202
        *row, j = idx
        return te.sum(x[(*row, r)].astype("int32")
                      * w[j // lanes, r // 4, j % lanes, r % 4].astype("int32"), axis=r)

    out = te.compute(i64(*rows, n), body, name=BLOCK)
    return te.create_prim_func([x, w, out])


def int8_quantize_func(rows: Sequence[int], k: int, kp: int, act_dtype: str,
                       act_offset: int) -> tvm.tirx.PrimFunc:
    """One kernel: sx[*rows, 0] = max_k |x| / 127 and xq = round(x / sx) + act_offset, the
    row padded with act_offset (zero) from k to kp."""
    i64 = lambda *dims: [tvm.tirx.IntImm("int64", d) for d in dims]  # noqa: E731
    x = te.placeholder(i64(*rows, k), "float32", name="x")
    r = te.reduce_axis(i64(0, k), name="k")
    amax = te.compute(i64(*rows, 1), lambda *i: te.max(te.abs(x[(*i[:-1], r)]), axis=r),
                      name="int8_absmax")
    sx = te.compute(i64(*rows, 1), lambda *i: te.max(amax[i], tvm.tirx.const(_EPS, "float32"))
                    / tvm.tirx.const(127.0, "float32"), name="int8_scale")

    def quant(*idx):  # noqa: ANN202
        *row, j = idx
        q = te.round(x[(*row, j)] / sx[(*row, 0)])
        q = te.max(te.min(q, tvm.tirx.const(127.0, "float32")), tvm.tirx.const(-127.0, "float32"))
        q = (q + tvm.tirx.const(float(act_offset), "float32")).astype(act_dtype)
        if kp == k:
            return q
        return tvm.tirx.if_then_else(j < k, q, tvm.tirx.const(act_offset, act_dtype))

    xq = te.compute(i64(*rows, kp), quant, name=QUANTIZE_BLOCK)
    return te.create_prim_func([x, xq, sx])


def _weight_only_vars(func: relax.Function) -> set[relax.Var]:
    """Variables of `func` computed from its weights (parameters after `num_input`) and
    constants alone."""
    n_input = func.attrs.get("num_input") if func.attrs else None
    if n_input is None:
        return set()
    known = set(func.params[int(n_input):])
    for block in func.body.blocks:
        for b in block.bindings:
            if isinstance(b, relax.VarBinding) and all(v in known for v in relax.analysis.free_vars(b.value)):
                known.add(b.var)
    return known


@relax.expr_functor.mutator
class _Quantizer(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, weights: set[relax.Var], scheme: Int8Scheme,
                 static_scales: Mapping[int, float] | None) -> None:
        super().__init__(mod)
        self.weights = weights
        self.scheme = scheme
        self.static_scales = static_scales
        self.count = 0  # linears quantized, in graph order: the key of static_scales
        self.kernels: dict[tuple, relax.GlobalVar] = {}

    def _linear(self, call: relax.Call) -> tuple[tuple[int, ...], int, int] | None:
        """(rows, K, N) when `call` is a matmul of fp32 activations by an fp32 weight."""
        if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.matmul"):
            return None
        x, w = call.args
        if not (isinstance(w, tvm.ir.GenericConst) or (isinstance(w, relax.Var) and w in self.weights)):
            return None
        xs, ws = static_shape(x), static_shape(w)
        if xs is None or ws is None or len(xs) < 2 or len(ws) < 2 or any(d != 1 for d in ws[:-2]):
            return None
        if not (is_tensor_of(x, "float32") and is_tensor_of(w, "float32")) or xs[-1] != ws[-2]:
            return None
        if str(call.attrs.out_dtype) not in ("", "void", "float32"):
            return None
        return tuple(xs[:-1]), ws[-2], ws[-1]

    def _kernel(self, rows: tuple[int, ...], k: int, n: int) -> relax.GlobalVar:
        key = (rows, k, n)
        if key not in self.kernels:
            func = int8_matmul_func(rows, k, n, self.scheme.lanes, self.scheme.act_dtype)
            self.kernels[key] = self.builder_.add_func(func, BLOCK)
        return self.kernels[key]

    def _quantize_kernel(self, rows: tuple[int, ...], k: int, kp: int) -> relax.GlobalVar:
        key = ("quantize", rows, k, kp)
        if key not in self.kernels:
            func = int8_quantize_func(rows, k, kp, self.scheme.act_dtype, self.scheme.act_offset)
            self.kernels[key] = self.builder_.add_func(func, QUANTIZE_BLOCK)
        return self.kernels[key]

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        found = self._linear(call)
        if found is None:
            return super().visit_call_(call)
        rows, k, n = found
        index, self.count = self.count, self.count + 1
        x, w = self.visit_expr(call.args[0]), self.visit_expr(call.args[1])
        return self._quantized(x, w, rows, k, n, index)

    def _quantized(self, x: relax.Expr, w: relax.Expr, rows: tuple[int, ...], k: int, n: int,
                   index: int) -> relax.Expr:
        bb, s, op = self.builder_, self.scheme, relax.op
        kp, np_ = _round_up(k, 4), _round_up(n, s.lanes)
        f32 = lambda v: relax.const(v, "float32")  # noqa: E731
        # weights (lifted out of the step): per-column scale, int8 values, packed layout
        w2 = bb.emit(op.reshape(w, (k, n))) if len(static_shape(w)) != 2 else w
        sw = bb.emit(op.divide(op.maximum(op.max(op.abs(w2), axis=0), f32(_EPS)), f32(s.weight_max)))
        wq = bb.emit(op.astype(op.clip(op.round(op.divide(w2, sw)), -s.weight_max, s.weight_max), "int8"))
        wp = bb.emit(op.nn.pad(wq, [0, kp - k, 0, np_ - n])) if (kp, np_) != (k, n) else wq
        packed = bb.emit(op.permute_dims(op.reshape(wp, (kp // 4, 4, np_ // s.lanes, s.lanes)),
                                         [2, 0, 3, 1]))
        # activations (in the step): per-row scale (or a calibrated one), int8 values
        if self.static_scales is not None:
            sx = f32(max(float(self.static_scales[index]), _EPS) / 127.0)
            q = op.clip(op.round(op.divide(x, sx)), -127, 127)
            if s.act_offset:
                q = op.add(q, f32(float(s.act_offset)))
            xq = bb.emit(op.astype(q, s.act_dtype))
            if kp != k:
                xq = bb.emit(op.nn.pad(xq, [0, 0] * len(rows) + [0, kp - k], pad_value=s.act_offset))
        else:
            quant = self._quantize_kernel(rows, k, kp)
            both = bb.emit(relax.call_tir(quant, [x], [relax.TensorType((*rows, kp), s.act_dtype),
                                                       relax.TensorType((*rows, 1), "float32")]))
            xq, sx = bb.emit(relax.TupleGetItem(both, 0)), bb.emit(relax.TupleGetItem(both, 1))
        acc = bb.emit(relax.call_tir(self._kernel(rows, kp, np_), [xq, packed],
                                     relax.TensorType((*rows, np_), "int32")))
        if np_ != n:
            acc = bb.emit(op.strided_slice(acc, axes=[len(rows)], begin=[0], end=[n]))
        if s.act_offset:  # sum_k (q + offset) w = sum_k q w + offset * colsum(w)
            colsum = bb.emit(op.multiply(op.sum(op.astype(wq, "int32"), axis=0),
                                         relax.const(s.act_offset, "int32")))
            acc = bb.emit(op.subtract(acc, colsum))
        return op.multiply(op.multiply(op.astype(acc, "float32"), sx), sw)


def quantize_int8(mod: tvm.IRModule, scheme: Int8Scheme,
                  static_scales: Mapping[int, float] | None = None) -> tuple[tvm.IRModule, int]:
    """(`mod` with main's linears quantized, how many). `static_scales`: linear index (graph
    order) -> calibrated max |x|; None quantizes activations per row at run time."""
    func = mod["main"]
    quantizer = _Quantizer(mod, _weight_only_vars(func), scheme, static_scales)
    body = quantizer.visit_expr(func.body)
    new = relax.Function(func.params, body, None, func.is_pure, func.attrs, func.span)
    out = quantizer.builder_.get()
    out["main"] = new
    return relax.transform.DeadCodeElimination()(out), quantizer.count


def QuantizeInt8(scheme: Int8Scheme,  # noqa: N802 - a pass, named like TVM's
                 static_scales: Mapping[int, float] | None = None) -> tvm.transform.Pass:
    @tvm.transform.module_pass(opt_level=0, name="QuantizeInt8")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return quantize_int8(mod, scheme, static_scales)[0]

    return _pass


def pack_weight(w: np.ndarray, scheme: Int8Scheme) -> tuple[np.ndarray, np.ndarray]:
    """numpy twin of the weight transform (tests): (scale (N,), packed int8 (N/L, K/4, L, 4))."""
    k, n = w.shape
    sw = np.maximum(np.abs(w).max(axis=0), _EPS) / scheme.weight_max
    wq = np.clip(np.round(w / sw), -scheme.weight_max, scheme.weight_max).astype(np.int8)
    kp, np_ = _round_up(k, 4), _round_up(n, scheme.lanes)
    wq = np.pad(wq, ((0, kp - k), (0, np_ - n)))
    return sw.astype(np.float32), wq.reshape(kp // 4, 4, np_ // scheme.lanes, scheme.lanes).transpose(2, 0, 3, 1)

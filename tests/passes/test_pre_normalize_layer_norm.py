"""Tests of PreNormalizeLayerNorm: structure, and fp16 numerics against a float64 reference."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from tvm_conformer.passes.pre_normalize_layer_norm import PreNormalizeLayerNorm
from tvm_conformer.passes.to_fp16 import to_fp16

ROWS = 32
# |rewritten - reference| <= ATOL + RTOL |reference|: a few fp16 ulps of outputs up to sqrt(n)
ATOL, RTOL = 0.02, 0.01


def test_layer_norm_is_rewritten() -> None:
    @I.ir_module
    class Before:
        @R.function
        def main(
            x: R.Tensor((2, 8), "float16"),
            g: R.Tensor((8,), "float16"),
            b: R.Tensor((8,), "float16"),
        ) -> R.Tensor((2, 8), "float16"):
            with R.dataflow():
                y = R.nn.layer_norm(x, g, b, axes=[-1], epsilon=1e-5)
                z = R.nn.relu(y)
                R.output(z)
            return z

    @I.ir_module
    class Expected:
        @R.function
        def main(
            x: R.Tensor((2, 8), "float16"),
            g: R.Tensor((8,), "float16"),
            b: R.Tensor((8,), "float16"),
        ) -> R.Tensor((2, 8), "float16"):
            with R.dataflow():
                h = R.multiply(x, R.const(0.0625, "float16"))
                mean = R.sum(R.multiply(h, R.const(0.125, "float16")), axis=[1], keepdims=True)
                lo = R.min(h, axis=[1], keepdims=True)
                clipped = R.minimum(R.maximum(mean, lo), R.max(h, axis=[1], keepdims=True))
                c0 = R.subtract(h, clipped)
                mean0 = R.sum(R.multiply(c0, R.const(0.125, "float16")), axis=[1], keepdims=True)
                c = R.subtract(c0, mean0)
                mad = R.sum(
                    R.multiply(R.abs(c), R.const(0.125, "float16")), axis=[1], keepdims=True
                )
                scale = R.add(mad, R.const(2.0**-21, "float16"))
                s = R.divide(c, scale)
                mu = R.sum(R.multiply(s, R.const(0.125, "float16")), axis=[1], keepdims=True)
                d = R.subtract(s, mu)
                r = R.maximum(scale, R.const(0.0001976490020751953, "float16"))
                k = R.divide(scale, r)
                dk = R.multiply(d, k)
                kk = R.multiply(k, k)
                w = R.multiply(d, R.const(0.5, "float16"))
                ssq = R.sum(R.multiply(w, w), axis=[1], keepdims=True)
                var = R.multiply(ssq, R.const(0.5, "float16"))
                kv = R.multiply(kk, var)
                e = R.divide(R.const(0.0001976490020751953, "float16"), r)
                den = R.add(kv, R.multiply(e, e))
                out = R.multiply(dk, R.rsqrt(den))
                y = R.add(R.multiply(out, g), b)
                z = R.nn.relu(y)
                R.output(z)
            return z

    tvm.ir.assert_structural_equal(PreNormalizeLayerNorm()(Before), Expected)


def test_module_without_layer_norm_is_unchanged() -> None:
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 8), "float16")) -> R.Tensor((2, 8), "float16"):
            with R.dataflow():
                y = R.mean(x, axis=[-1], keepdims=True)
                z = R.subtract(x, y)
                R.output(z)
            return z

    Expected = Before
    tvm.ir.assert_structural_equal(PreNormalizeLayerNorm()(Before), Expected)


def test_layer_norm_over_a_dynamic_axis_is_unchanged() -> None:
    @I.ir_module
    class Before:
        @R.function
        def main(
            x: R.Tensor((2, "n"), "float16"),
            g: R.Tensor(("n",), "float16"),
            b: R.Tensor(("n",), "float16"),
        ) -> R.Tensor((2, "n"), "float16"):
            with R.dataflow():
                y = R.nn.layer_norm(x, g, b, axes=[-1], epsilon=1e-5)
                R.output(y)
            return y

    Expected = Before
    tvm.ir.assert_structural_equal(PreNormalizeLayerNorm()(Before), Expected)


def _layer_norm_fp32(n: int) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((ROWS, n), "float32"))
    g = relax.Var("g", relax.TensorType((n,), "float32"))
    b = relax.Var("b", relax.TensorType((n,), "float32"))
    with bb.function("main", [x, g, b]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.layer_norm(x, g, b, [-1], 1e-5))
        bb.emit_func_output(y)
    return bb.get()


@functools.cache
def _vm(n: int, rewrite: bool) -> relax.VirtualMachine:
    mod = _layer_norm_fp32(n)
    if rewrite:
        mod = PreNormalizeLayerNorm("float16")(mod)
    ex = tvm.compile(to_fp16(mod, keep_fp32_io=False), target=tvm.target.Target({"kind": "llvm"}))
    return relax.VirtualMachine(ex, tvm.cpu())


def _run(n: int, rewrite: bool, x: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    args = [tvm.runtime.tensor(v.astype(np.float16)) for v in (x, g, b)]
    return _vm(n, rewrite)["main"](*args).numpy().astype(np.float64)


def _reference(x: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    x = x.astype(np.float16).astype(np.float64)
    c = x - x.mean(-1, keepdims=True)
    return c / np.sqrt((c * c).mean(-1, keepdims=True) + 1e-5) * g.astype(np.float64) + b


def _inputs(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    shape = (ROWS, n)
    if kind == "normal":
        return rng.standard_normal(shape) * rng.uniform(1e-3, 10, (ROWS, 1))
    if kind == "near_max":
        return rng.uniform(-6e4, 6e4, shape)
    if kind == "outlier":
        x = np.full(shape, -65504.0)
        x[np.arange(ROWS), rng.integers(0, n, ROWS)] = 65504.0
        return x
    if kind == "offset":  # a sum of 144 values near 1000 overflows an fp16 accumulator
        return 1000 + rng.standard_normal(shape)
    if kind == "cauchy":
        return np.clip(rng.standard_cauchy(shape) * 100, -65504, 65504)
    if kind == "tiny":
        return rng.standard_normal(shape) * 1e-5
    raise ValueError(kind)


ADVERSARIAL = ["near_max", "outlier", "offset"]


@pytest.mark.slow
@pytest.mark.parametrize("n", [144, 256])
@pytest.mark.parametrize("kind", ["normal", "tiny", "cauchy", *ADVERSARIAL])
def test_rewritten_fp16_layer_norm_is_finite_and_close(n: int, kind: str) -> None:
    rng = np.random.default_rng(n)
    g = rng.normal(1, 0.2, n).astype(np.float16)
    b = rng.normal(0, 0.2, n).astype(np.float16)
    for seed in range(3):
        x = _inputs(kind, n, np.random.default_rng([n, seed]))
        ref = _reference(x, g, b)
        out = _run(n, True, x, g, b)
        assert np.isfinite(out).all()
        np.testing.assert_array_less(np.abs(out - ref), ATOL + RTOL * np.abs(ref))


@pytest.mark.slow
@pytest.mark.parametrize("n", [144, 256])
@pytest.mark.parametrize("kind", ADVERSARIAL)
def test_plain_fp16_layer_norm_overflows(n: int, kind: str) -> None:
    rng = np.random.default_rng(n)
    x = _inputs(kind, n, rng)
    out = _run(n, False, x, np.ones(n), np.zeros(n))
    assert not np.isfinite(out).all(axis=-1).any()  # every row is lost


@pytest.mark.slow
@pytest.mark.parametrize("n", [144, 256])
def test_constant_rows_give_beta(n: int) -> None:
    rng = np.random.default_rng(n)
    b = rng.normal(0, 1, n).astype(np.float16)
    g = rng.normal(1, 0.2, n).astype(np.float16)
    for value in [0.0, 6e-8, -3.5, 1234.5, 65504.0, -65504.0]:
        out = _run(n, True, np.full((ROWS, n), value), g, b)
        np.testing.assert_array_equal(out, np.broadcast_to(b, out.shape).astype(np.float64))

"""passes/fast_exp.py: fp32 sigmoid, softmax and log-softmax through a vectorizable exp, as accurate as expf."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import relax as R

from tvm_conformer.passes.fast_exp import fast_exp_legalizations

HOST = tvm.target.Target({"kind": "llvm"})


def _module(dtype: str) -> tvm.IRModule:
    @tvm.script.ir_module
    class Mod:
        @R.function
        def main(x: R.Tensor((16, 80), dtype), y: R.Tensor((4, 16, 80), dtype)):
            with R.dataflow():
                s = R.sigmoid(x)
                silu = R.multiply(x, s)
                p = R.nn.softmax(y, axis=-1)
                logp = R.nn.log_softmax(y, axis=-1)
                R.output(silu, p, logp)
            return (silu, p, logp)

    return Mod


def _legalized(dtype: str, fast: bool) -> tvm.IRModule:
    custom = fast_exp_legalizations() if fast else None
    return relax.transform.LegalizeOps(customize_legalize_map=custom)(_module(dtype))


def _run(mod: tvm.IRModule, *inputs: np.ndarray) -> list[np.ndarray]:
    ex = tvm.compile(mod, target=HOST)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return [t.numpy() for t in vm["main"](*[tvm.runtime.tensor(a) for a in inputs])]


def _inputs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((16, 80)) * 8).astype("float32")
    x[0, :8] = [-1000, -100, -88.5, -87, 87, 88.5, 100, 1000]  # past the clamp, both sides
    y = (rng.standard_normal((4, 16, 80)) * 30).astype("float32")
    y[0, 0] = 0  # a flat row
    y[0, 1, :40] = -1e4  # a row whose half underflows
    return x, y


def _softmax64(y: np.ndarray) -> np.ndarray:
    e = np.exp(y.astype("float64") - y.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_fp32_uses_no_scalar_exp_and_matches_float64() -> None:
    mod = _legalized("float32", fast=True)
    script = mod.script()
    assert "fast_sigmoid" in script and "fast_softmax" in script and "fast_log_softmax" in script
    assert "T.exp(" not in script and "T.sigmoid(" not in script  # nothing LLVM scalarizes
    x, y = _inputs()
    silu, p, logp = _run(mod, x, y)
    x64 = x.astype("float64")
    with np.errstate(over="ignore"):  # exp(1000) = inf: sigmoid 0, as it should
        silu_ref = x64 / (1 + np.exp(-x64))
    # relative error <= 2e-6 (~16 ulp) of the exact value, tiny outputs included
    np.testing.assert_allclose(silu, silu_ref, rtol=2e-6, atol=1e-30)
    np.testing.assert_allclose(p, _softmax64(y), rtol=2e-6, atol=1e-12)
    assert np.isfinite(silu).all() and np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-6)
    # log-probabilities: an absolute error (what the step's 1e-4 bound is stated in)
    y64 = y.astype("float64") - y.max(-1, keepdims=True)
    logp_ref = y64 - np.log(np.exp(y64).sum(-1, keepdims=True))  # finite where softmax underflows
    np.testing.assert_allclose(logp, logp_ref, rtol=1e-6, atol=2e-5)


@pytest.mark.parametrize("dtype", ["float16"])
def test_other_dtypes_keep_the_default_legalization(dtype: str) -> None:
    fast, plain = _legalized(dtype, fast=True), _legalized(dtype, fast=False)
    assert "fast_" not in fast.script()
    tvm.ir.assert_structural_equal(fast, plain)

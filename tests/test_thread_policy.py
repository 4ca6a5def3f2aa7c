"""build/schedule_rules.py: the thread policy. Kernels under the flop threshold run on one
thread, bigger ones keep the rule's parallel loops, results do not change, the caller's kernel
is never modified, and a 1-thread build has no parallel loop at all."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import te, topi

from tvm_conformer.build.pipeline import PipelineOptions
from tvm_conformer.build.schedule_rules import family_rules, kernel_flops

HOST = tvm.target.Target({"kind": "llvm"})


def _matmul(n: int) -> tuple[tvm.tirx.PrimFunc, list[np.ndarray], np.ndarray]:
    a = te.placeholder((n, 64), name="a")
    b = te.placeholder((64, 64), name="b")
    k = te.reduce_axis((0, 64), name="k")
    c = te.compute((n, 64), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")
    rng = np.random.default_rng(n)
    xs = [rng.standard_normal((n, 64)).astype("float32"), rng.standard_normal((64, 64)).astype("float32")]
    return te.create_prim_func([a, b, c]), xs, xs[0] @ xs[1]


def _layer_norm() -> tuple[tvm.tirx.PrimFunc, list[np.ndarray], np.ndarray]:
    x, g, b = te.placeholder((16, 144), name="x"), te.placeholder((144,), name="g"), te.placeholder((144,), name="b")
    y = topi.nn.layer_norm(x, g, b, axis=[1], epsilon=1e-5)
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal(s).astype("float32") for s in ((16, 144), (144,), (144,))]
    mean, var = xs[0].mean(1, keepdims=True), xs[0].var(1, keepdims=True)
    return te.create_prim_func([x, g, b, y]), xs, (xs[0] - mean) / np.sqrt(var + 1e-5) * xs[1] + xs[2]


def _schedule(func: tvm.tirx.PrimFunc, min_flops: float) -> tvm.IRModule:
    with HOST:
        return family_rules("cpu", min_flops)(tvm.IRModule({"main": func}))


def _parallel(mod: tvm.IRModule) -> bool:
    return "T.parallel(" in mod.script()


def _run(mod: tvm.IRModule, inputs: list[np.ndarray], out_shape: tuple[int, ...]) -> np.ndarray:
    lib = tvm.compile(mod, target=HOST)
    args = [tvm.runtime.tensor(a) for a in inputs]
    out = tvm.runtime.tensor(np.zeros(out_shape, "float32"))
    lib(*args, out)
    return out.numpy()


@pytest.mark.parametrize("make", [_matmul, _layer_norm], ids=["matmul", "layer_norm"])
def test_threshold_decides_parallel_and_results_stay(make) -> None:  # noqa: ANN001
    func, inputs, expected = make(256) if make is _matmul else make()
    flops = kernel_flops(func)
    assert flops > 0
    as_ruled = _schedule(func, 0)
    assert _parallel(as_ruled), "the rule itself parallelizes this kernel"
    below = _schedule(func, flops + 1)  # the kernel is under the threshold: serial
    above = _schedule(func, flops)  # at the threshold: parallel kept
    assert not _parallel(below) and _parallel(above)
    assert below["main"].attrs["tirx.is_scheduled"]
    for mod in (as_ruled, below):
        np.testing.assert_allclose(_run(mod, inputs, expected.shape), expected, rtol=1e-4, atol=1e-4)


def test_rules_leave_the_callers_module_alone() -> None:
    func, _, _ = _matmul(64)
    mod = tvm.IRModule({"main": func})
    before = tvm.ir.load_json(tvm.ir.save_json(mod))
    with HOST:
        scheduled = family_rules("cpu", float("inf"))(mod)
    tvm.ir.assert_structural_equal(mod, before)
    assert scheduled["main"].attrs["tirx.is_scheduled"] and "tirx.is_scheduled" not in mod["main"].attrs


def test_one_thread_build_is_serial_and_threshold_is_an_option() -> None:
    assert PipelineOptions(threads=1).serial_below() == float("inf")
    assert PipelineOptions(threads=2, parallel_min_flops=123).serial_below() == 123
    assert PipelineOptions().serial_below() == PipelineOptions().parallel_min_flops > 0
    func, _, _ = _matmul(4096)  # 34 MFLOP: parallel under the default threshold
    assert kernel_flops(func) > PipelineOptions().parallel_min_flops
    assert _parallel(_schedule(func, PipelineOptions().serial_below()))
    assert not _parallel(_schedule(func, PipelineOptions(threads=1).serial_below()))

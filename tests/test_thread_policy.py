"""build/schedule_rules.py: the thread policy. Kernels under the flop threshold run on one
thread, bigger ones keep the rule's parallel loops, results do not change, the caller's kernel
is never modified, and a 1-thread build has no parallel loop at all."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tvm
from tvm import te, topi

from tvm_conformer.compiler.compile import compile_artifact
from tvm_conformer.compiler.pipeline import PipelineOptions
from tvm_conformer.compiler.schedule_rules import family_rules, kernel_flops

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


_POOL = (
    "import sys\n"
    "from tvm_conformer.threads import pool_size, set_threads\n"
    "from tvm_conformer.errors import UserError\n"
    "if sys.argv[1] == 'load':\n"
    "    from tvm_conformer.runtime.tvm_backend import TVMBackend\n"
    "    TVMBackend.load(sys.argv[2])\n"
    "else:\n"
    "    try:\n"
    "        set_threads(int(sys.argv[2]))\n"
    "    except UserError as e:\n"
    "        print(e)\n"
    "print(pool_size())\n"
)


def _pool(*args: str, env: dict | None = None, pin: bool = False) -> list[str]:
    cmd = (["taskset", "-c", "0"] if pin else []) + [sys.executable, "-c", _POOL, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})})
    return out.stdout.strip().splitlines()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_the_pool_really_gets_the_threads_asked():
    """TVM sizes its pool once, to TVM_NUM_THREADS (unset: half the CPUs on x86), and
    config_threadpool cannot grow it: the package raises the cap, set_threads checks."""
    env = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", _POOL, "set", "2"], capture_output=True,
                         text=True, check=True, env=env)
    assert out.stdout.split() == ["2"]
    capped = _pool("set", "2", env={"TVM_NUM_THREADS": "1"})
    assert "TVM_NUM_THREADS=2" in capped[0] and capped[-1] == "1"  # one line naming the fix


@pytest.mark.slow  # compiles artifacts
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_an_artifact_runs_its_threads_on_no_more_cpus_than_it_has(tiny_checkpoint, tmp_path):
    compile_artifact(tmp_path, "host", tiny_checkpoint, quiet=True, use_default_database=False,
                     opts=PipelineOptions(threads=2))
    assert _pool("load", str(tmp_path)) == ["2"]
    assert _pool("load", str(tmp_path), pin=True) == ["1"]  # a process on one CPU

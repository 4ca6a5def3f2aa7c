"""passes/streamline_step.py: linears without reshapes, take as a slice, q/k/v as one matmul;
the same numbers, fewer kernels."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import relax as R

from tvm_conformer.compiler.pipeline import PipelineOptions
from tvm_conformer.passes.streamline_step import LinearsOnBatches, StreamlineStep, TakeAsSlice

HOST = tvm.target.Target({"kind": "llvm"})


def _ops(mod: tvm.IRModule) -> list[str]:
    names: list[str] = []

    def visit(e: relax.Expr) -> None:
        if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op):
            names.append(e.op.name)

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return names


def _attention_input() -> tvm.IRModule:
    """What torch.export writes for three biased linears on one (1, T, d) input, a SiLU after
    one of them, and kv[:, 0]."""

    @tvm.script.ir_module
    class Mod:
        @R.function
        def main(x: R.Tensor((1, 16, 8), "float32"), wq: R.Tensor((8, 8), "float32"),
                 wk: R.Tensor((8, 8), "float32"), wv: R.Tensor((8, 12), "float32"),
                 bq: R.Tensor((8,), "float32"), bk: R.Tensor((8,), "float32"),
                 bv: R.Tensor((12,), "float32"), kv: R.Tensor((1, 2, 5, 8), "float32")):
            with R.dataflow():
                f1 = R.reshape(x, R.shape([16, 8]))
                q = R.reshape(R.add(bq, R.matmul(f1, wq)), R.shape([1, 16, 8]))
                f2 = R.reshape(x, R.shape([16, 8]))
                k = R.reshape(R.add(bk, R.matmul(f2, wk)), R.shape([1, 16, 8]))
                f3 = R.reshape(x, R.shape([16, 8]))
                v = R.reshape(R.add(R.matmul(f3, wv), bv), R.shape([1, 16, 12]))
                silu = R.multiply(v, R.sigmoid(v))
                k0 = R.take(kv, R.const(0, "int64"), axis=1, mode="fast")
                v1 = R.take(kv, R.const(-1, "int64"), axis=1, mode="fast")
                R.output(q, k, silu, k0, v1)
            return (q, k, silu, k0, v1)

    return Mod


def _run(mod: tvm.IRModule, inputs: list[np.ndarray]) -> list[np.ndarray]:
    vm = relax.VirtualMachine(tvm.compile(mod, target=HOST), tvm.cpu())
    return [t.numpy() for t in vm["main"](*[tvm.runtime.tensor(a) for a in inputs])]


def _inputs(mod: tvm.IRModule) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal([int(d) for d in p.ty.shape.values]).astype("float32")
            for p in mod["main"].params]


def _numpy_reference(x, wq, wk, wv, bq, bk, bv, kv) -> list[np.ndarray]:  # noqa: ANN001
    x64 = x.astype("float64")
    v = x64 @ wv + bv
    return [x64 @ wq + bq, x64 @ wk + bk, v / (1 + np.exp(-v)), kv[:, 0], kv[:, -1]]


def test_linears_lose_their_reshapes_and_take_becomes_a_slice():
    mod = _attention_input()
    out = TakeAsSlice()(LinearsOnBatches()(mod))
    out = relax.transform.DeadCodeElimination()(relax.transform.CanonicalizeBindings()(out))
    ops = _ops(out)
    assert "relax.reshape" not in ops and "relax.take" not in ops
    assert ops.count("relax.matmul") == 3 and ops.count("relax.strided_slice") == 2
    inputs = _inputs(mod)
    for got, want in zip(_run(out, inputs), _numpy_reference(*inputs), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_query_key_value_become_one_matmul():
    mod = _attention_input()
    out = StreamlineStep()(mod)
    assert _ops(out).count("relax.matmul") == 1  # the three linears read the same x
    inputs = _inputs(mod)
    for got, want in zip(_run(out, inputs), _numpy_reference(*inputs), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_reshape_that_is_no_linear_is_left_alone():
    @tvm.script.ir_module
    class Mod:
        @R.function
        def main(x: R.Tensor((2, 8, 6), "float32"), w: R.Tensor((6, 4), "float32")):
            with R.dataflow():
                # flattens the last two axes, not the leading ones: not a linear on x
                f = R.reshape(x, R.shape([8, 12]))
                y = R.reshape(R.matmul(R.reshape(f, R.shape([16, 6])), w), R.shape([2, 8, 4]))
                R.output(y)
            return y

    out = LinearsOnBatches()(Mod)
    assert _ops(out).count("relax.reshape") == 3


@pytest.mark.slow  # two compiles
def test_the_step_has_fewer_kernels_and_bit_identical_numbers(tiny_checkpoint, tmp_path):
    from tvm_conformer.compiler.compile import compile_artifact  # noqa: PLC0415
    from tvm_conformer.runtime.tvm_backend import TVMBackend  # noqa: PLC0415

    calls, outs = {}, {}
    for streamline in (False, True):
        art = tmp_path / f"streamline-{streamline}"
        manifest = compile_artifact(art, "host", tiny_checkpoint, quiet=True, use_default_database=False,
                                    opts=PipelineOptions(streamline=streamline))
        calls[streamline] = manifest["kernels"]["calls_per_step"]
        b = TVMBackend.load(art)
        cfg = b.config
        rng = np.random.default_rng(0)
        feats = rng.standard_normal((1, cfg.chunk_input_frames, cfg.n_mels)).astype("float32")
        mask = np.ones((1, cfg.left_frames + cfg.chunk_size), "float32")
        state, steps = b.initial_state(), []
        for _ in range(3):  # caches carried
            lp, state = b.step(state, feats, mask)
            steps.append(lp)
        outs[streamline] = np.stack(steps)
    # per block: 2 SiLU, 3 residual adds, 2 takes and 2 of the 3 q/k/v matmuls are no kernels
    # of their own now; splitting the q/k/v matmul's output is one
    assert calls[True] == calls[False] - 8 * cfg.n_layers, calls
    # bit-identical (docs/BENCHMARKS.md says so): the matmuls sum the same products in order
    assert np.array_equal(outs[True], outs[False]), np.abs(outs[True] - outs[False]).max()

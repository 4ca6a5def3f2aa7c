"""passes/pack_weights.py and compiler/matmul_tile.py: weights packed into the column tile's
panels at compile time, the same numbers; the register tile sized from the target's registers."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import relax as R

from tvm_conformer.compiler.compile import run_weight_transform
from tvm_conformer.compiler.matmul_tile import column_tile, max_tile_rows, simd_bits
from tvm_conformer.compiler.pipeline import PipelineOptions, tvm_conformer_pipeline
from tvm_conformer.compiler.schedule_rules import weight_panel_lanes
from tvm_conformer.passes.pack_weights import PackMatmulWeights

AVX2 = tvm.target.Target({"kind": "llvm", "mcpu": "znver3"})
AVX512 = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"})
NEON = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a55",
                          "mattr": ["+neon"]})
ARMV7 = tvm.target.Target({"kind": "llvm", "mtriple": "armv7a-linux-gnueabihf", "mattr": ["+neon"]})
HEXAGON = tvm.target.Target({"kind": "llvm", "mtriple": "hexagon", "mcpu": "hexagonv68",
                             "mattr": ["+hvxv68", "+hvx-length128b", "+hvx-qfloat"]})


def test_register_tile_fits_the_register_file():
    assert [simd_bits(t) for t in (AVX2, AVX512, NEON, ARMV7, HEXAGON)] == [256, 512, 128, 128, 1024]
    # AVX2: 16 ymm; a tile row of two ymm, one weight row (2) and a broadcast (1) beside it
    assert column_tile(AVX2) == 16 and max_tile_rows(AVX2, 16) == 6
    assert column_tile(AVX512) == 32 and max_tile_rows(AVX512, 32) == 14
    assert column_tile(NEON) == 8 and max_tile_rows(NEON, 8) == 14
    assert column_tile(ARMV7) == 8 and max_tile_rows(ARMV7, 8) == 6
    assert weight_panel_lanes("hexagon", HEXAGON) == 32
    assert weight_panel_lanes("cpu", AVX2) == 16 and weight_panel_lanes("cpu", NEON) == 8
    assert weight_panel_lanes("mali", tvm.target.Target({"kind": "opencl", "device": "mali"})) == 0


def _linears(n_out: int = 40) -> tvm.IRModule:
    """Two linears as torch.export writes them (weights transposed, bias after), an attention-like
    product of two inputs, and a linear too narrow to pack."""

    @tvm.script.ir_module
    class Mod:
        @R.function
        def main(x: R.Tensor((1, 6, 24), "float32"), y: R.Tensor((1, 24, 6), "float32"),
                 w1: R.Tensor((32, 24), "float32"), b1: R.Tensor((32,), "float32"),
                 w2: R.Tensor((n_out, 32), "float32"), w3: R.Tensor((24, 4), "float32"),
                 w4: R.Tensor((1, 24, 32), "float32")):
            R.func_attr({"num_input": 2})
            with R.dataflow():
                w1t = R.permute_dims(w1, [1, 0])
                h0 = R.matmul(x, w1t, out_dtype="float32")
                h = R.add(h0, b1)
                w2t = R.permute_dims(w2, [1, 0])
                o = R.matmul(h, w2t)
                s = R.matmul(x, y)  # two inputs: not a weight
                n = R.matmul(x, w3)  # 4 columns < two panels
                c = R.matmul(x, w4)  # a 1x1 conv's weight, (1, K, N)
                R.output(o, s, n, c)
            return (o, s, n, c)

    return Mod


def _call_tirs(mod: tvm.IRModule) -> list[str]:
    names: list[str] = []

    def visit(e: relax.Expr) -> None:
        if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op) and e.op.name == "relax.call_tir":
            names.append(e.args[0].name_hint)

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return names


def test_only_weight_matmuls_wide_enough_are_packed():
    out = PackMatmulWeights(16)(_linears())
    assert len(_call_tirs(out)) == 3  # the linears and the 1x1 conv; not x @ y, not 4 columns
    ops = out["main"].script()
    assert ops.count("R.matmul(") == 2
    assert "R.nn.pad" in ops and "R.strided_slice" in ops  # 40 columns -> 48, sliced back
    lifted = relax.transform.LiftTransformParams()(out)
    # the packing depends on the weights alone: it moves into the compile-time transform
    assert "R.permute_dims" not in lifted["main"].script()
    assert "R.nn.pad" in lifted["main_transform_params"].script()


def test_lanes_below_two_leave_the_module():
    mod = _linears()
    assert PackMatmulWeights(0)(mod).same_as(mod)


@pytest.mark.slow
@pytest.mark.parametrize("n_out", [40, 48])
def test_packed_build_computes_the_same(n_out):
    """The whole pipeline (rules, lifting) with and without packing, against numpy."""
    rng = np.random.default_rng(0)
    mod = _linears(n_out)
    args = [rng.standard_normal([int(d) for d in p.ty.shape.values]).astype("float32")
            for p in mod["main"].params]
    x, y, w1, b1, w2, w3, w4 = args
    want = [(x @ w1.T + b1) @ w2.T, x @ y, x @ w3, x @ w4]
    for pack in (False, True):
        lifted = []
        pipe = tvm_conformer_pipeline(PipelineOptions(pack_weights=pack, threads=1),
                                      lift_weights=lifted.append)
        with AVX2:
            ex = tvm.compile(mod, target=AVX2, relax_pipeline=pipe)
        assert lifted  # the pipeline lifted the transposes (and the packing)
        transformed = run_weight_transform(lifted[0], args[2:])
        # the panels; unpacked, only the 1x1 conv's (1, K, N) weight is 3-D
        assert sum(w.ndim == 3 for w in transformed) == (3 if pack else 1)
        weights = [tvm.runtime.tensor(w) for w in transformed]
        vm = relax.VirtualMachine(ex, tvm.cpu())
        got = vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(y), *weights)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g.numpy(), w, rtol=1e-5, atol=1e-5)

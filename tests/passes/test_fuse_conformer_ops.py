"""FuseConformerOps: which chains become one Primitive function."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from tvm_conformer.frontend import import_step
from tvm_conformer.model import load_checkpoint
from tvm_conformer.passes import by_name
from tvm_conformer.passes.fuse_conformer_ops import FuseConformerOps


def test_depthwise_separable_convolution_becomes_one_function() -> None:
    @I.ir_module
    class Before:
        @R.function
        def main(
            x: R.Tensor((1, 4, 6, 6), "float32"),
            dw: R.Tensor((4, 1, 3, 3), "float32"),
            b1: R.Tensor((1, 4, 1, 1), "float32"),
            pw: R.Tensor((4, 4, 1, 1), "float32"),
            b2: R.Tensor((1, 4, 1, 1), "float32"),
        ) -> R.Tensor((1, 4, 2, 2), "float32"):
            with R.dataflow():
                y = R.nn.conv2d(x, dw, strides=[2, 2], groups=4)
                y = R.add(y, b1)
                y = R.nn.conv2d(y, pw)
                y = R.add(y, b2)
                out = R.nn.relu(y)
                R.output(out)
            return out

    @I.ir_module
    class Expected:
        @R.function(private=True)
        def fused_relax_nn_conv2d_relax_add_relax_nn_conv2d_relax_add_relax_nn_relu(
            x: R.Tensor((1, 4, 6, 6), "float32"),
            dw: R.Tensor((4, 1, 3, 3), "float32"),
            b1: R.Tensor((1, 4, 1, 1), "float32"),
            pw: R.Tensor((4, 4, 1, 1), "float32"),
            b2: R.Tensor((1, 4, 1, 1), "float32"),
        ) -> R.Tensor((1, 4, 2, 2), "float32"):
            R.func_attr({"Composite": "separable_2", "Primitive": True})
            with R.dataflow():
                y = R.nn.conv2d(x, dw, strides=[2, 2], groups=4)
                y = R.add(y, b1)
                y = R.nn.conv2d(y, pw)
                y = R.add(y, b2)
                out = R.nn.relu(y)
                R.output(out)
            return out

        @R.function
        def main(
            x: R.Tensor((1, 4, 6, 6), "float32"),
            dw: R.Tensor((4, 1, 3, 3), "float32"),
            b1: R.Tensor((1, 4, 1, 1), "float32"),
            pw: R.Tensor((4, 4, 1, 1), "float32"),
            b2: R.Tensor((1, 4, 1, 1), "float32"),
        ) -> R.Tensor((1, 4, 2, 2), "float32"):
            cls = Expected
            with R.dataflow():
                out = cls.fused_relax_nn_conv2d_relax_add_relax_nn_conv2d_relax_add_relax_nn_relu(
                    x, dw, b1, pw, b2
                )
                R.output(out)
            return out

    tvm.ir.assert_structural_equal(FuseConformerOps()(Before), Expected)


def test_lone_convolution_is_unchanged() -> None:
    @I.ir_module
    class Before:
        @R.function
        def main(
            x: R.Tensor((1, 4, 6, 6), "float32"),
            w: R.Tensor((4, 4, 3, 3), "float32"),
            b: R.Tensor((1, 4, 1, 1), "float32"),
        ) -> R.Tensor((1, 4, 4, 4), "float32"):
            with R.dataflow():
                y = R.add(R.nn.conv2d(x, w), b)
                out = R.nn.relu(y)
                R.output(out)
            return out

    Expected = Before
    tvm.ir.assert_structural_equal(FuseConformerOps()(Before), Expected)


def _groups(mod: tvm.IRModule) -> Counter:
    """Calls of composite functions in main, by pattern family (name without its variant)."""
    counts: Counter = Counter()
    for value in relax.analysis.get_var2val(mod["main"]).values():
        func = mod.functions.get(value.op) if isinstance(value, relax.Call) else None
        if isinstance(func, relax.Function) and "Composite" in func.attrs:
            counts[func.attrs["Composite"].rsplit("_", 1)[0]] += 1
    return counts


@pytest.mark.slow  # minutes on a loaded 2-core machine (make test-fast: --durations)
def test_every_block_of_the_step_is_grouped(tiny_checkpoint: Path) -> None:
    model, _ = load_checkpoint(tiny_checkpoint)
    cfg = model.cfg
    mod, _ = import_step(model, "torch")
    mod = relax.transform.CanonicalizeBindings()(relax.transform.DecomposeOpsForInference()(mod))
    # the imported graph: the subsampling, and each block's depthwise conv + BN + Swish + linear
    assert _groups(FuseConformerOps()(mod)) == {"separable": 1, "separable_residual": cfg.n_layers}
    # channels-first with per-head attention: the same, and one function per head
    for name in ("layout", "einsum"):
        mod = by_name(name)(mod)
    heads = cfg.n_layers * cfg.n_heads
    assert _groups(FuseConformerOps()(mod)) == {
        "separable": 1, "separable_residual": cfg.n_layers, "attention_head": heads
    }

"""ChannelsFirstLayout: structure of the rewrite, and where the transposes of a real step go."""

from __future__ import annotations

from pathlib import Path

import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from tvm_conformer.frontend import import_step
from tvm_conformer.model import load_checkpoint
from tvm_conformer.passes.channels_first_layout import ChannelsFirstLayout
from tvm_conformer.passes.chunked_einsum_attention import ChunkedEinsumAttention


def test_linear_becomes_1x1_conv2d_and_layer_norm_normalizes_channels() -> None:
    @I.ir_module
    class Before:
        @R.function
        def main(
            x: R.Tensor((1, 4, 8), "float32"),
            w: R.Tensor((16, 8), "float32"),
            b: R.Tensor((16,), "float32"),
            g: R.Tensor((16,), "float32"),
            beta: R.Tensor((16,), "float32"),
        ) -> R.Tensor((1, 4, 16), "float32"):
            with R.dataflow():
                x2 = R.reshape(x, R.shape([4, 8]))
                wt = R.permute_dims(w, axes=[1, 0])
                y = R.matmul(x2, wt, out_dtype="float32")
                y = R.add(b, y)
                y = R.reshape(y, R.shape([1, 4, 16]))
                y = R.nn.layer_norm(y, g, beta, axes=[-1])
                out = R.nn.silu(y)
                R.output(out)
            return out

    @I.ir_module
    class Expected:
        @R.function
        def main(
            x: R.Tensor((1, 4, 8), "float32"),
            w: R.Tensor((16, 8), "float32"),
            b: R.Tensor((16,), "float32"),
            g: R.Tensor((16,), "float32"),
            beta: R.Tensor((16,), "float32"),
        ) -> R.Tensor((1, 4, 16), "float32"):
            with R.dataflow():
                xt = R.permute_dims(x, axes=[0, 2, 1])  # the activation enters the layout
                xc = R.reshape(xt, R.shape([1, 8, 1, 4]))
                kernel = R.reshape(w, R.shape([16, 8, 1, 1]))  # a view, no weight transpose
                y = R.nn.conv2d(xc, kernel, out_dtype="float32")
                y = R.add(R.reshape(b, R.shape([1, 16, 1, 1])), y)
                y = R.nn.layer_norm(y, g, beta, axes=[1])
                yt = R.permute_dims(y, axes=[0, 3, 1, 2])  # the block output keeps its layout
                yt = R.reshape(yt, R.shape([1, 4, 16]))
                out = R.nn.silu(yt)
                R.output(out)
            return out

    tvm.ir.assert_structural_equal(ChannelsFirstLayout()(Before), Expected)


def test_convolution_module_transposes_vanish_and_depthwise_conv_stays_depthwise() -> None:
    @I.ir_module
    class Before:
        @R.function
        def main(
            x: R.Tensor((1, 4, 8), "float32"),
            cache: R.Tensor((1, 8, 2), "float32"),
            w: R.Tensor((8, 8), "float32"),
            dw: R.Tensor((8, 1, 3), "float32"),
        ) -> R.Tensor((1, 4, 8), "float32"):
            with R.dataflow():
                wt = R.permute_dims(w, axes=[1, 0])
                y = R.matmul(x, wt, out_dtype="float32")
                y = R.permute_dims(y, axes=[0, 2, 1])  # (B, T, C) -> (B, C, T)
                y = R.concat((cache, y), axis=2)
                y = R.nn.conv1d(y, dw, groups=8)
                y = R.permute_dims(y, axes=[0, 2, 1])
                out = R.add(x, y)
                R.output(out)
            return out

    @I.ir_module
    class Expected:
        @R.function
        def main(
            x: R.Tensor((1, 4, 8), "float32"),
            cache: R.Tensor((1, 8, 2), "float32"),
            w: R.Tensor((8, 8), "float32"),
            dw: R.Tensor((8, 1, 3), "float32"),
        ) -> R.Tensor((1, 4, 8), "float32"):
            with R.dataflow():
                xt = R.permute_dims(x, axes=[0, 2, 1])
                xc = R.reshape(xt, R.shape([1, 8, 1, 4]))
                y = R.nn.conv2d(xc, R.reshape(w, R.shape([8, 8, 1, 1])), out_dtype="float32")
                y = R.concat((R.reshape(cache, R.shape([1, 8, 1, 2])), y), axis=3)
                y = R.nn.conv2d(y, R.reshape(dw, R.shape([8, 1, 1, 3])), groups=8)
                yt = R.permute_dims(y, axes=[0, 3, 1, 2])
                yt = R.reshape(yt, R.shape([1, 4, 8]))
                out = R.add(x, yt)
                R.output(out)
            return out

    tvm.ir.assert_structural_equal(ChannelsFirstLayout()(Before), Expected)


def test_graph_without_a_linear_is_unchanged() -> None:
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 4, 8), "float32")) -> R.Tensor((1, 8, 4), "float32"):
            with R.dataflow():
                y = R.nn.softmax(x, axis=-1)
                y = R.permute_dims(y, axes=[0, 2, 1])
                out = R.sigmoid(y)
                R.output(out)
            return out

    Expected = Before
    tvm.ir.assert_structural_equal(ChannelsFirstLayout()(Before), Expected)


def _permutes(mod: tvm.IRModule) -> tuple[int, int]:
    """(permute_dims ops in main, those that transpose a weight)."""
    func = mod["main"]
    weights = set(func.params[int(func.attrs["num_input"]) :])
    calls = [
        v for v in relax.analysis.get_var2val(func).values()
        if isinstance(v, relax.Call) and v.op.name == "relax.permute_dims"
    ]
    return len(calls), sum(1 for c in calls if c.args[0] in weights)


@pytest.mark.slow  # minutes on a loaded 2-core machine (make test-fast: --durations)
def test_imported_step_keeps_transposes_only_at_the_graph_boundary(tiny_checkpoint: Path) -> None:
    model, _ = load_checkpoint(tiny_checkpoint)
    mod, _ = import_step(model, "torch")
    mod = relax.transform.CanonicalizeBindings()(relax.transform.DecomposeOpsForInference()(mod))
    before = _permutes(mod)
    after = _permutes(ChannelsFirstLayout()(mod))
    both = _permutes(ChunkedEinsumAttention()(ChannelsFirstLayout()(mod)))
    layers = model.cfg.n_layers
    assert before[1] == 11 * layers  # every linear transposes its weight in the imported graph
    assert after[1] == 0 and after[0] < before[0] - before[1]
    # what stays: per layer, the new keys/values into the time-major cache; the log-probs
    assert both == (layers + 1, 0)

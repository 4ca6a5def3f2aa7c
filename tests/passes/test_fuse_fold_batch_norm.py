"""FoldBatchNorm: constant BatchNorm (and bias) folded into the convolution, exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from tvm_conformer.frontend import import_step
from tvm_conformer.model import load_checkpoint
from tvm_conformer.passes.fold_batch_norm import FoldBatchNorm

# powers of two and small integers: the folded constants are exact in fp32
W = np.array([[[1, -2, 3]], [[4, 5, -6]]], "float32")  # depthwise (C=2, 1, K=3)
BIAS, MEAN, STD = np.array([0.5, -1]), np.array([1, 0.25]), np.array([2, 0.5])
GAMMA, BETA = np.array([0.5, 4]), np.array([0.25, -0.5])


def _channel(v: np.ndarray) -> np.ndarray:
    return v.reshape(1, 2, 1).astype("float32")


@I.ir_module
class ConvBatchNorm:
    @R.function
    def main(
        x: R.Tensor((1, 2, 5), "float32"),
        w: R.Tensor((2, 1, 3), "float32"),
        b: R.Tensor((1, 2, 1), "float32"),
        mean: R.Tensor((1, 2, 1), "float32"),
        std: R.Tensor((1, 2, 1), "float32"),
        gamma: R.Tensor((1, 2, 1), "float32"),
        beta: R.Tensor((1, 2, 1), "float32"),
    ) -> R.Tensor((1, 2, 3), "float32"):
        # inference BatchNorm as DecomposeOpsForInference writes it (std = sqrt(var + eps) folded)
        with R.dataflow():
            y = R.add(R.nn.conv1d(x, w, groups=2), b)
            y = R.multiply(R.divide(R.subtract(y, mean), std), gamma)
            y = R.add(y, beta)
            out = R.sigmoid(y)
            R.output(out)
        return out


def test_batch_norm_and_bias_fold_into_the_weights() -> None:
    params = {"w": W, "b": _channel(BIAS), "mean": _channel(MEAN), "std": _channel(STD),
              "gamma": _channel(GAMMA), "beta": _channel(BETA)}
    before = relax.transform.BindParams("main", params)(ConvBatchNorm)

    @I.ir_module
    class Expected:
        @R.function
        def main(
            x: R.Tensor((1, 2, 5), "float32"),
            w: R.Tensor((2, 1, 3), "float32"),
            shift: R.Tensor((1, 2, 1), "float32"),
        ) -> R.Tensor((1, 2, 3), "float32"):
            with R.dataflow():
                y = R.add(R.nn.conv1d(x, w, groups=2), shift)
                out = R.sigmoid(y)
                R.output(out)
            return out

    scale = GAMMA / STD
    folded = {"w": W * scale.reshape(2, 1, 1).astype("float32"),
              "shift": _channel((BIAS - MEAN) * scale + BETA)}
    expected = relax.transform.BindParams("main", folded)(Expected)
    tvm.ir.assert_structural_equal(FoldBatchNorm()(before), expected)


def test_batch_norm_with_parameter_weights_is_unchanged() -> None:
    Expected = ConvBatchNorm
    tvm.ir.assert_structural_equal(FoldBatchNorm()(ConvBatchNorm), Expected)


def test_bias_alone_is_unchanged() -> None:
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 2, 5), "float32")) -> R.Tensor((1, 2, 3), "float32"):
            with R.dataflow():
                y = R.nn.conv1d(x, R.const(W), groups=2)
                out = R.add(y, R.const(_channel(BIAS)))
                R.output(out)
            return out

    Expected = Before
    tvm.ir.assert_structural_equal(FoldBatchNorm()(Before), Expected)


def _count(mod: tvm.IRModule, op: str) -> int:
    values = relax.analysis.get_var2val(mod["main"]).values()
    return sum(1 for v in values if isinstance(v, relax.Call) and v.op.name == op)


@pytest.mark.slow
def test_bound_step_folds_every_block_and_matches_pytorch(tiny_checkpoint: Path) -> None:
    model, _ = load_checkpoint(tiny_checkpoint)
    torch.manual_seed(1)
    for block in model.encoder.blocks:  # non-trivial statistics, so a wrong fold shows
        bn = block.conv.bn
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    mod, _ = import_step(model, "torch", bind=True)
    mod = relax.transform.DecomposeOpsForInference()(mod)
    folded = FoldBatchNorm()(mod)
    # one divide by the BatchNorm deviation per block is gone (the attention scale stays)
    assert _count(folded, "relax.divide") == _count(mod, "relax.divide") - model.cfg.n_layers
    vm = relax.VirtualMachine(tvm.compile(folded, target="llvm"), tvm.cpu())
    feats = torch.randn(1, model.cfg.chunk_input_frames, model.cfg.n_mels)
    att, cnn, mask = model.encoder.initial_state()
    cnn.normal_()
    mask[:, -model.cfg.chunk_size :] = 1
    with torch.no_grad():
        expected = model.forward_chunk(feats, att, cnn, mask)
    got = vm["main"](*[tvm.runtime.tensor(t.numpy()) for t in (feats, att, cnn, mask)])
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g.numpy(), e.numpy(), atol=1e-4, rtol=0)

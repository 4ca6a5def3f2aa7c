"""The graph passes on the streaming step: compiled for the host, each alone and all together,
the step matches PyTorch eager `forward_chunk`; and the graph report's counts."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from tvm_conformer.compiler.pipeline import GRAPH_PASSES, PipelineOptions, tvm_conformer_pipeline
from tvm_conformer.errors import UserError
from tvm_conformer.frontend import import_step
from tvm_conformer.model import ConformerASR, ModelConfig, load_checkpoint
from tvm_conformer.passes import by_name
from tvm_conformer.passes.report import graph_report
from tvm_conformer.targets import load_target

ATOL = 1e-4


def test_every_graph_pass_name_resolves_and_an_unknown_one_is_a_user_error() -> None:
    for name in GRAPH_PASSES:
        assert isinstance(by_name(name), tvm.transform.Pass)
    with pytest.raises(UserError, match="unknown graph pass 'fold'.*layout, einsum, fuse"):
        by_name("fold")


def test_report_counts_kernels_copies_views_and_bytes() -> None:
    @I.ir_module
    class Mod:
        @R.function
        def main(a: R.Tensor((2, 3), "float32"), c: R.Tensor((12,), "float32")):
            with R.dataflow():
                w = R.reshape(c, R.shape([3, 4]))  # a view: no kernel runs
                y = R.matmul(a, w)  # computes: 24 + 48 bytes in, 32 out
                z = R.permute_dims(y)  # a copy: 32 in, 32 out
                R.output(z)
            return z

    target = tvm.target.Target({"kind": "llvm"})
    with target:
        fused = tvm.transform.Sequential(relax.backend.cpu_generic.legalize_passes(target))(Mod)
    report = graph_report(fused)
    assert report == {"kernels": 3, "launches": 2, "views": 1, "copies": 1,
                      "copy_launches": {"transpose": 1}, "bytes_moved": 104 + 64}


def _randomize_batch_norm(model: ConformerASR, seed: int) -> ConformerASR:
    """Statistics and affine terms away from the identity, so a wrong BatchNorm rewrite shows."""
    gen = torch.Generator().manual_seed(seed)
    for block in model.encoder.blocks:
        bn = block.conv.bn
        for tensor, lo, hi in ((bn.running_mean, -1, 1), (bn.running_var, 0.5, 2),
                               (bn.weight.data, 0.5, 1.5), (bn.bias.data, -0.5, 0.5)):
            tensor.copy_(torch.rand(tensor.shape, generator=gen) * (hi - lo) + lo)
    return model.eval()


@functools.cache
def _build(model: ConformerASR, passes: tuple[str, ...]) -> tuple:
    """(VM, weights, graph report after fusion) of the step built by the project pipeline."""
    mod, weights = import_step(model, "torch")
    seen = {}

    def observe(phase: str, m: tvm.IRModule) -> None:
        if phase == "fused":
            seen["report"] = graph_report(m)

    target = load_target("host").tvm()
    pipeline = tvm_conformer_pipeline(PipelineOptions(passes=passes), None, observe)
    with target:
        ex = tvm.compile(mod, target=target, relax_pipeline=pipeline)
    dev = tvm.cpu()
    weights = [tvm.runtime.tensor(w, dev) for w in weights]
    return relax.VirtualMachine(ex, dev), weights, seen["report"]


def _check_two_steps(model: ConformerASR, passes: tuple[str, ...]) -> None:
    """Two consecutive chunks, the second on the caches of the first: a cache half full
    (masked) at first, and random (unmasked) cached frames, so mask and caches both matter."""
    vm, weights, _ = _build(model, passes)
    cfg = model.cfg
    gen = torch.Generator().manual_seed(2)
    att = torch.randn(cfg.n_layers, 2, cfg.left_frames, cfg.d_model, generator=gen)
    cnn = torch.randn(cfg.n_layers, cfg.d_model, cfg.conv_kernel - 1, generator=gen)
    mask = torch.ones(1, cfg.left_frames + cfg.chunk_size)
    mask[:, : cfg.left_frames // 2] = 0
    state = [tvm.runtime.tensor(t.numpy()) for t in (att, cnn)]
    for _ in range(2):
        feats = torch.randn(1, cfg.chunk_input_frames, cfg.n_mels, generator=gen)
        with torch.no_grad():
            expected = model.forward_chunk(feats, att, cnn, mask)
        got = vm["main"](tvm.runtime.tensor(feats.numpy()), *state,
                         tvm.runtime.tensor(mask.numpy()), *weights)
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g.numpy(), e.numpy(), atol=ATOL, rtol=0)
        _, att, cnn = expected
        state = [got[1], got[2]]


@pytest.fixture(scope="module")
def tiny_model(tiny_checkpoint: Path) -> ConformerASR:
    return _randomize_batch_norm(load_checkpoint(tiny_checkpoint)[0], seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("passes", [(name,) for name in GRAPH_PASSES] + [GRAPH_PASSES],
                         ids=lambda p: "+".join(p))
def test_tiny_step_with_passes_matches_pytorch(tiny_model: ConformerASR, passes: tuple) -> None:
    _check_two_steps(tiny_model, passes)


@pytest.mark.slow
def test_all_passes_cut_launches_copies_and_bytes(tiny_model: ConformerASR) -> None:
    before = _build(tiny_model, ())[2]
    after = _build(tiny_model, GRAPH_PASSES)[2]
    assert after["launches"] < before["launches"]
    assert after["copies"] < before["copies"] / 2
    assert after["bytes_moved"] < before["bytes_moved"]


@pytest.mark.slow
def test_default_size_step_with_all_passes_matches_pytorch() -> None:
    torch.manual_seed(0)
    model = _randomize_batch_norm(ConformerASR(ModelConfig()), seed=1)
    _check_two_steps(model, GRAPH_PASSES)

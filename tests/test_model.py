"""The streaming step equals the full-context forward with the chunk mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tvm_conformer.audio.features import compute_fbank
from tvm_conformer.model import ConformerASR, ModelConfig
from tvm_conformer.model.conformer import chunk_attention_mask
from tvm_conformer.model.subsampling import subsampled_length
from tvm_conformer.runtime.backend import TorchBackend
from tvm_conformer.runtime.recognizer import OnlineRecognizer, transcribe_samples


def _random_model(**overrides) -> ConformerASR:
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=64, n_heads=4, n_layers=3, conv_kernel=7, **overrides)
    model = ConformerASR(cfg)
    # eval-mode BatchNorm with non-trivial statistics, so the streaming path must carry them
    for block in model.encoder.blocks:
        block.conv.bn.running_mean.uniform_(-0.5, 0.5)
        block.conv.bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_chunk_mask_sees_own_and_left_chunks_only():
    mask = chunk_attention_mask(7, chunk_size=2, num_left_chunks=1)
    # frame 5 is in chunk 2: it sees chunks 1 and 2 (frames 2..5), nothing else
    assert mask[5].tolist() == [False, False, True, True, True, True, False]
    assert mask[0].tolist() == [True, True, False, False, False, False, False]
    assert chunk_attention_mask(3, 0, 0).all()


@pytest.mark.parametrize("subsampling", ["dws", "vanilla"])
@pytest.mark.parametrize(("chunk", "left"), [(4, 2), (8, 1), (5, 3)])
# 1.07 s -> 25 encoder frames, 2.51 s -> 61, 3.21 s -> 79: none a multiple of 4, 5 or 8
@pytest.mark.parametrize("seconds", [1.07, 2.51, 3.21])
def test_streaming_equals_full_context_with_chunk_mask(subsampling, chunk, left, seconds):
    model = _random_model(subsampling=subsampling, chunk_size=chunk, num_left_chunks=left)
    rng = np.random.default_rng(int(seconds * 100))
    samples = (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32)
    streamed = transcribe_samples(OnlineRecognizer(TorchBackend(model)), samples, 16000)
    feats = torch.from_numpy(compute_fbank(samples))[None]
    with torch.no_grad():
        full, lens, _ = model(feats, torch.tensor([feats.shape[1]]))
    assert int(lens) == subsampled_length(feats.shape[1])
    assert streamed.log_probs.shape == full[0].shape
    np.testing.assert_allclose(streamed.log_probs, full[0].numpy(), atol=1e-4, rtol=0)


def test_full_forward_masks_padding_in_a_batch():
    model = _random_model()
    rng = np.random.default_rng(1)
    a = torch.from_numpy(rng.standard_normal((1, 120, 80)).astype(np.float32))
    b = torch.from_numpy(rng.standard_normal((1, 200, 80)).astype(np.float32))
    batch = torch.cat([torch.nn.functional.pad(a, (0, 0, 0, 80)), b])
    with torch.no_grad():
        lp, lens, _ = model(batch, torch.tensor([120, 200]))
        alone, _, _ = model(a, torch.tensor([120]))
    np.testing.assert_allclose(lp[0, : lens[0]].numpy(), alone[0].numpy(), atol=1e-5)


def test_dws_subsampling_has_fewer_macs_than_vanilla():
    from torch.utils.flop_counter import FlopCounterMode

    frames, d, n_mels = 103, 64, 80  # one chunk of the default config: 4 * 16 + 3 fbank frames
    t1, f1 = (frames - 1) // 2, (n_mels - 1) // 2  # after the first 3x3 stride-2 conv
    t2, f2 = (t1 - 1) // 2, (f1 - 1) // 2  # after the second
    macs = {}
    for kind in ("dws", "vanilla"):
        sub = _random_model(subsampling=kind).encoder.subsampling
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            out = sub(torch.zeros(1, frames, n_mels))
        assert out.shape == (1, t2, d)
        macs[kind] = counter.get_total_flops() // 2  # torch counts a MAC as 2 flops
    # both: conv1 (d * 9 per output) and the output Linear (d * f2 -> d per frame)
    shared = d * 9 * t1 * f1 + t2 * (d * f2) * d
    assert macs["vanilla"] == shared + d * d * 9 * t2 * f2  # Conv2d(d, d, 3x3)
    assert macs["dws"] == shared + (d * 9 + d * d) * t2 * f2  # depthwise 3x3 + pointwise 1x1
    assert macs["dws"] < 0.5 * macs["vanilla"]

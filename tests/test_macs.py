"""MACs counted from the Relax graph against a hand count and against torch's FlopCounterMode."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tvm_conformer.bench.macs import COMPONENTS, component, step_macs, utterance_macs
from tvm_conformer.bench.utterance import FullUtterance
from tvm_conformer.model import ConformerASR, ModelConfig

TINY = ModelConfig(d_model=32, n_heads=2, n_layers=2, ffn_ratio=2, conv_kernel=5, chunk_size=4,
                   num_left_chunks=2)
FRAMES = 100


def hand_count(cfg: ModelConfig, t1: int, t2: int, keys: int) -> dict[str, int]:
    """MACs per component for t1 frames after the first stride-2 conv, t2 encoder frames, and
    attention over `keys` keys per query."""
    d, L, r, k, V = cfg.d_model, cfg.n_layers, cfg.ffn_ratio, cfg.conv_kernel, cfg.vocab_size
    f1 = (cfg.n_mels - 1) // 2
    f2 = (f1 - 1) // 2
    conv1 = d * 9 * t1 * f1  # Conv2d(1, d, 3x3), stride 2
    if cfg.subsampling == "vanilla":
        conv2 = d * d * 9 * t2 * f2  # Conv2d(d, d, 3x3), stride 2
    else:
        conv2 = d * 9 * t2 * f2 + d * d * t2 * f2  # depthwise 3x3 stride 2, then pointwise 1x1
    return {
        "subsampling": conv1 + conv2 + t2 * (d * f2) * d,  # + Linear(d * f2, d)
        "attention": L * (4 * t2 * d * d + 2 * t2 * keys * d),  # q, k, v, o; scores and context
        "feed_forward": L * 2 * (2 * t2 * d * (d * r)),  # two macaron FFNs of two linears
        "convolution": L * (t2 * d * 2 * d + t2 * d * k + t2 * d * d),  # pw1 (GLU), depthwise, pw2
        "output": t2 * d * V,  # CTC linear
    }


@pytest.mark.parametrize("kind", ["dws", "vanilla"])
def test_utterance_macs_equal_a_hand_count(kind: str) -> None:
    cfg = replace(TINY, subsampling=kind)
    t1 = (FRAMES - 1) // 2
    t2 = (t1 - 1) // 2
    want = hand_count(cfg, t1, t2, keys=t2)  # full context: every frame attends to all
    got = utterance_macs(cfg, FRAMES)
    assert {c: got[c] for c in COMPONENTS} == want
    assert got["total"] == sum(want.values())


def test_step_macs_equal_a_hand_count() -> None:
    c = TINY.chunk_size
    # a chunk of 4c + 3 frames: 2c + 1 after the first conv, c after the second
    want = hand_count(TINY, 2 * c + 1, c, keys=TINY.left_frames + c)
    got = step_macs(TINY)
    assert {k: got[k] for k in COMPONENTS} == want


def test_graph_count_matches_torch_flop_counter_per_component() -> None:
    model = ConformerASR(TINY).eval()
    with FlopCounterMode(display=False) as counter:
        FullUtterance(model)(torch.zeros(1, FRAMES, TINY.n_mels))
    flops = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    blocks = [f"FullUtterance.encoder.blocks.{i}" for i in range(TINY.n_layers)]
    torch_macs = {
        "subsampling": flops["FullUtterance.encoder.subsampling"] // 2,
        "attention": sum(flops[f"{b}.attn"] for b in blocks) // 2,
        "feed_forward": sum(flops[f"{b}.ffn1"] + flops[f"{b}.ffn2"] for b in blocks) // 2,
        "convolution": sum(flops[f"{b}.conv"] for b in blocks) // 2,
        "output": flops["FullUtterance.ctc"] // 2,
    }
    got = utterance_macs(TINY, FRAMES)
    assert {c: got[c] for c in COMPONENTS} == torch_macs


@pytest.mark.parametrize(("param", "expected"), [
    ("p_encoder_subsampling_conv1_weight", "subsampling"),
    ("p_encoder_subsampling_out_bias", "subsampling"),
    ("p_encoder_blocks_11_ffn2_w1_weight", "feed_forward"),
    ("p_encoder_blocks_0_attn_q_bias", "attention"),
    ("p_encoder_blocks_3_conv_dw_weight", "convolution"),
    ("p_ctc_weight", "output"),
    ("p_encoder_blocks_0_norm_weight", None),  # the block's final LayerNorm: no component
])
def test_parameter_names_map_to_components(param: str, expected: str | None) -> None:
    assert component(param) == expected

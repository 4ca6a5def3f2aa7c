"""The fbank options travel with the model: old checkpoints keep the legacy options, new ones
carry theirs into the streaming recognizer, and the options stay out of the config hash."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from tvm_conformer.audio.features import LEGACY_FBANK, SHERPA_FBANK, compute_fbank
from tvm_conformer.model import ConformerASR, ModelConfig, load_checkpoint, save_checkpoint
from tvm_conformer.paths import DEFAULT_CHECKPOINT
from tvm_conformer.runtime.backend import TorchBackend
from tvm_conformer.runtime.recognizer import OnlineRecognizer

SMALL = {"d_model": 32, "n_heads": 2, "n_layers": 1, "ffn_ratio": 2, "conv_kernel": 5,
         "chunk_size": 4, "num_left_chunks": 2, "decoder_layers": 0}


def test_shipped_checkpoint_keeps_legacy_options_and_its_tuning_hash() -> None:
    model, _ = load_checkpoint(DEFAULT_CHECKPOINT)
    assert model.cfg.fbank is None and model.cfg.fbank_options == LEGACY_FBANK
    manifest = Path(__file__).parents[1] / "tuning_logs" / "host" / "manifest.json"
    if manifest.is_file():  # the committed host database still applies to the shipped model
        assert json.loads(manifest.read_text())["model"]["config_hash"] == model.cfg.hash()


def test_new_checkpoint_carries_its_options(tmp_path: Path) -> None:
    cfg = ModelConfig(**SMALL, fbank=SHERPA_FBANK)
    assert cfg.hash() == ModelConfig(**SMALL).hash()  # host-side options: same compiled graph
    torch.manual_seed(0)
    save_checkpoint(ConformerASR(cfg), tmp_path / "m.pt")
    model, _ = load_checkpoint(tmp_path / "m.pt")
    assert model.cfg.fbank == SHERPA_FBANK
    rec = OnlineRecognizer(TorchBackend(model))
    stream = rec.create_stream()
    x = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    stream.accept_waveform(16000, x)
    stream.input_finished()
    got = stream.fbank.get_frames(0, stream.fbank.num_frames_ready)
    np.testing.assert_array_equal(got, compute_fbank(x, fbank_opts=SHERPA_FBANK))
    assert got.shape[0] == 100  # snip_edges false: one frame per 10 ms (legacy: 98)

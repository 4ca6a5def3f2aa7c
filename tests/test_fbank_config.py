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


def test_feature_floor_makes_digital_silence_dither_noise_in_every_backend(tmp_path: Path) -> None:
    """`feat_floor`: each mel bin raised to the level 1-LSB white noise gives it, inside the
    model, so digital silence (log of the fbank epsilon) and that noise look alike; the floor
    is in the exported step (ONNX Runtime) and the TVM build, which match PyTorch."""
    import onnxruntime as ort

    from tvm_conformer.compiler.compile import compile_artifact
    from tvm_conformer.frontend import export_onnx
    from tvm_conformer.runtime.tvm_backend import TVMBackend
    from tvm_conformer.train.trainer import feature_floor

    cfg = ModelConfig(**SMALL, fbank=SHERPA_FBANK, feat_floor=1.0)
    assert cfg.hash() != ModelConfig(**SMALL).hash()  # a different graph
    assert ModelConfig(**SMALL, feat_floor=0.0).hash() == ModelConfig(**SMALL).hash()
    floor = feature_floor(SHERPA_FBANK, 1.0)
    silence = compute_fbank(np.zeros(16000, np.float32), fbank_opts=SHERPA_FBANK)
    assert silence.max() < floor.min() - 5  # digital silence lies far below the floor
    torch.manual_seed(0)
    model = ConformerASR(cfg).eval()
    model.encoder.feat_floor.copy_(torch.from_numpy(floor))
    enc = model.encoder
    x = torch.from_numpy(silence[None, :50])
    np.testing.assert_allclose(enc.normalize(x).numpy(), ((torch.from_numpy(floor) - enc.feat_mean)
                                                          * enc.feat_istd).expand(1, 50, -1).numpy())
    save_checkpoint(model, tmp_path / "m.pt")
    model, _ = load_checkpoint(tmp_path / "m.pt")  # the floor travels in the checkpoint (fp16)
    np.testing.assert_allclose(model.encoder.feat_floor.numpy(), floor, rtol=1e-3)
    # one streaming step of half silence, half speech-like values, in all three backends
    rng = np.random.default_rng(1)
    feats = np.concatenate([silence[: cfg.chunk_input_frames // 2],
                            rng.normal(10, 3, (cfg.chunk_input_frames - cfg.chunk_input_frames // 2,
                                               cfg.n_mels))]).astype(np.float32)[None]
    torch_be = TorchBackend(model)
    state = torch_be.initial_state()
    mask = np.ones((1, cfg.left_frames + cfg.chunk_size), np.float32)
    ref, _ = torch_be.step(state, feats, mask)
    compile_artifact(tmp_path / "art", "host", tmp_path / "m.pt", quiet=True,
                     use_default_database=False)
    tvm_be = TVMBackend.load(tmp_path / "art", expect_model=tmp_path / "m.pt")
    got, _ = tvm_be.step(tvm_be.initial_state(), feats, mask)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    export_onnx(model, tmp_path / "step.onnx")
    sess = ort.InferenceSession(str(tmp_path / "step.onnx"))
    names = [i.name for i in sess.get_inputs()]
    att = np.zeros((cfg.n_layers, 2, cfg.left_frames, cfg.d_model), np.float32)
    cnn = np.zeros((cfg.n_layers, cfg.d_model, cfg.conv_kernel - 1), np.float32)
    out = sess.run(None, dict(zip(names, [feats, att, cnn, mask], strict=True)))[0]
    np.testing.assert_allclose(out.reshape(ref.shape), ref, atol=1e-4, rtol=0)

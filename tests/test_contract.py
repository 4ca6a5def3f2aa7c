"""The WeNet / sherpa-onnx streaming-CTC ONNX contract: models none of our code wrote
(tests/contract_models.py), checked against sherpa-onnx itself and ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import contract_models as cm
import numpy as np
import pytest
import soundfile as sf
import torch

from tvm_conformer.paths import PACKAGE_DIR

ASSETS = PACKAGE_DIR / "assets"
RECORDINGS = [ASSETS / "sample.wav", *sorted((ASSETS / "test_utts").glob("*.flac"))[:2]]


@pytest.fixture(scope="session")
def contract_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("contract")
    return {s.name: cm.write(s, root / s.name) for s in cm.SPECS}


def sherpa_decode(model: Path, tokens: Path, spec: cm.Spec, audio: Path) -> tuple[str, list[int]]:
    """sherpa-onnx's own streaming recognizer, fed as its examples do (0.66 s of silence)."""
    import sherpa_onnx

    rec = sherpa_onnx.OnlineRecognizer.from_wenet_ctc(
        tokens=str(tokens), model=str(model), chunk_size=spec.chunk,
        num_left_chunks=spec.left_chunks, num_threads=1)
    samples, sr = sf.read(str(audio), dtype="float32")
    s = rec.create_stream()
    s.accept_waveform(sr, samples)
    s.accept_waveform(sr, np.zeros(int(0.66 * sr), np.float32))
    s.input_finished()
    while rec.is_ready(s):
        rec.decode_stream(s)
    res = rec.get_result_all(s)
    return rec.get_result(s), list(res.tokens)


@pytest.mark.parametrize("spec", cm.SPECS, ids=lambda s: s.name)
def test_exporter_writes_what_the_torch_module_computes(spec: cm.Spec, contract_files) -> None:
    """The test-only exporter itself: ONNX Runtime on the file == the torch module, 3 chunks."""
    import onnxruntime as ort

    model = cm.ContractModel(spec)
    sess = ort.InferenceSession(str(contract_files[spec.name][0]), providers=["CPUExecutionProvider"])
    x, off, rcs, att, conv, mask = model.example_inputs()
    for i in range(3):
        x = torch.randn_like(x)
        mask[:, :, spec.cache - (i + 1) * spec.chunk :] = True
        with torch.no_grad():
            ref = model(x, off, rcs, att, conv, mask)
        got = sess.run(None, dict(zip(cm.INPUTS, [t.numpy() for t in (x, off, rcs, att, conv, mask)], strict=True)))
        for r, g in zip(ref, got, strict=True):
            np.testing.assert_allclose(g, r.numpy(), atol=1e-4, rtol=1e-4)
        off, att, conv = off + spec.chunk, ref[1], ref[2]


@pytest.mark.parametrize("spec", cm.SPECS, ids=lambda s: s.name)
def test_sherpa_onnx_loads_and_decodes_them(spec: cm.Spec, contract_files) -> None:
    model, tokens = contract_files[spec.name]
    text, toks = sherpa_decode(model, tokens, spec, RECORDINGS[0])
    assert toks, "random weights still emit tokens (the CTC layer is scaled up)"
    assert text

"""The shipped model on TVM (both frontends) transcribes exactly as on PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tvm_conformer.audio.wav import load_audio
from tvm_conformer.compiler.compile import compile_artifact
from tvm_conformer.model import load_checkpoint
from tvm_conformer.paths import ASSETS_DIR
from tvm_conformer.runtime.backend import TorchBackend
from tvm_conformer.runtime.recognizer import OnlineRecognizer, transcribe_samples
from tvm_conformer.runtime.tvm_backend import TVMBackend

pytestmark = pytest.mark.slow
UTTS = ASSETS_DIR / "test_utts"


def _utterances() -> list[dict]:
    return [json.loads(line) for line in (UTTS / "manifest.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("frontend", ["torch", "onnx"])
def test_shipped_model_tvm_equals_pytorch_on_test_utterances(shipped_checkpoint: Path, tmp_path, frontend):
    compile_artifact(tmp_path, "host", shipped_checkpoint, frontend=frontend, quiet=True)
    tvm_rec = OnlineRecognizer(TVMBackend.load(tmp_path, expect_model=shipped_checkpoint))
    torch_rec = OnlineRecognizer(TorchBackend(load_checkpoint(shipped_checkpoint)[0]))
    for row in _utterances():
        samples, sr = load_audio(UTTS / row["path"])
        a = transcribe_samples(tvm_rec, samples, sr)
        b = transcribe_samples(torch_rec, samples, sr)
        assert len(a.step_seconds) == len(b.step_seconds) > 1
        np.testing.assert_allclose(a.log_probs, b.log_probs, atol=1e-4, rtol=0, err_msg=row["id"])
        assert a.text == b.text, row["id"]

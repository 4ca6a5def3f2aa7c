"""sherpa-onnx, the peer runtime: its own recognizer end to end (features, model, decoding)
on a model of the streaming-CTC contract, as a test oracle and a benchmark row.

`recognizer_for` builds `sherpa_onnx.OnlineRecognizer.from_wenet_ctc` and, when the model's
metadata record fbank options other than sherpa-onnx's defaults (`tvm-conformer export` of a
checkpoint trained on other features), configures its feature extractor with them.
`decode` feeds a recording as sherpa-onnx's examples do (all samples, 0.66 s of silence,
input_finished) and times it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tvm_conformer.frontend.contract import SHERPA_FEATURES, TAIL_PADDING_SECONDS, read_contract


def recognizer_for(model: str | Path, tokens: str | Path | None = None, threads: int = 1):  # noqa: ANN201
    """sherpa-onnx's recognizer for a contract file, with the features its metadata record."""
    import sherpa_onnx
    from sherpa_onnx.lib._sherpa_onnx import OnlineRecognizer as _Recognizer

    spec = read_contract(model, tokens)
    rec = sherpa_onnx.OnlineRecognizer.from_wenet_ctc(
        tokens=spec.tokens_path, model=spec.path, chunk_size=spec.chunk_size,
        num_left_chunks=spec.left_chunks, num_threads=threads)
    changed = {k: spec.features[k] for k in ("snip_edges", "low_freq", "high_freq", "dither")
               if spec.features[k] != SHERPA_FEATURES[k]}
    if changed:
        cfg = rec.config
        feat = cfg.feat_config
        for k, v in changed.items():
            setattr(feat, k, v)
        cfg.feat_config = feat
        rec.recognizer = _Recognizer(cfg)
        rec.config = cfg
        got = rec.config.feat_config
        assert all(getattr(got, k) == v for k, v in changed.items()), got
    return rec


@dataclass
class SherpaResult:
    text: str
    tokens: list[str]
    timestamps: list[float]
    audio_seconds: float
    compute_seconds: float

    @property
    def rtf(self) -> float:
        return self.compute_seconds / self.audio_seconds


def decode(rec, samples: np.ndarray, sample_rate: int) -> SherpaResult:  # noqa: ANN001
    """One recording through sherpa-onnx's streaming recognizer, timed end to end."""
    samples = np.asarray(samples, np.float32)
    t0 = time.perf_counter()
    s = rec.create_stream()
    s.accept_waveform(sample_rate, samples)
    s.accept_waveform(sample_rate, np.zeros(int(TAIL_PADDING_SECONDS * sample_rate), np.float32))
    s.input_finished()
    while rec.is_ready(s):
        rec.decode_stream(s)
    res = rec.get_result_all(s)
    text = rec.get_result(s)
    seconds = time.perf_counter() - t0
    return SherpaResult(text, list(res.tokens), list(res.timestamps), len(samples) / sample_rate,
                        seconds)

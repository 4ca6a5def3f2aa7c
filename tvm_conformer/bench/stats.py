"""One result row per engine: latency statistics, real-time factor, and agreement with the
PyTorch eager reference computed in the harness process; ratios to ONNX Runtime."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from tvm_conformer.bench.workload import Utterance
from tvm_conformer.model import ConformerASR, ModelConfig

if TYPE_CHECKING:
    from tvm_conformer.bench.measure import Raw

RTF_DEFINITION = "sum of step (or forward) seconds / seconds of audio they cover"


def reference_outputs(model: ConformerASR, utts: list[Utterance], mode: str) -> list[np.ndarray]:
    """PyTorch eager, in this process: per recording (chunks, c, V) or (T', V) log-probs."""
    import torch

    from tvm_conformer.runtime.backend import TorchBackend

    outs = []
    if mode == "utterance":  # the model's own forward, full context
        frames = torch.tensor([utts[0].window.shape[1]])
        with torch.no_grad():
            return [model(torch.from_numpy(u.window), frames, chunk_size=0)[0][0].numpy()
                    for u in utts]
    backend = TorchBackend(model)
    for u in utts:
        state, lps = backend.initial_state(), []
        for feats, mask in zip(u.feats, u.masks, strict=True):
            lp, state = backend.step(state, feats, mask)
            lps.append(lp)
        outs.append(np.stack(lps))
    return outs


def _valid_rows(lp: np.ndarray, utt: Utterance, cfg: ModelConfig, mode: str) -> np.ndarray:
    """The log-probs a recognizer keeps: each chunk's valid frames, concatenated."""
    if mode == "utterance":
        return lp
    return np.concatenate([c[:v] for c, v in zip(lp, utt.valid(cfg), strict=True)])


def _transcript(lp: np.ndarray) -> str:
    from tvm_conformer.decode.ctc import ctc_greedy
    from tvm_conformer.model.tokenizer import CharTokenizer

    return CharTokenizer().decode(ctc_greedy(lp))


def summarize(raw: Raw, utts: list[Utterance], ref: list[np.ndarray], cfg: ModelConfig,
              sizes: dict[str, float]) -> dict[str, Any]:
    """One row of results.json: latency statistics, memory, size, and agreement with PyTorch."""
    s = raw.spec
    row: dict[str, Any] = {"label": s.label, **s.to_dict(), "status": "ok" if not raw.error else "n/a",
                           "error": raw.error}
    if raw.error or not raw.rounds:
        return row
    audio = sum(u.seconds if s.mode == "stream" else _window_seconds(u) for u in utts)
    lat = np.array([x for rnd in raw.rounds for rec in rnd for x in rec]) * 1e3
    firsts = np.array([rec[0] for rnd in raw.rounds for rec in rnd]) * 1e3
    round_medians = [float(np.median([x for rec in rnd for x in rec]) * 1e3) for rnd in raw.rounds]
    rtfs = [sum(x for rec in rnd for x in rec) / audio for rnd in raw.rounds]
    diffs, same = [], []
    for i, u in enumerate(utts):
        got = _valid_rows(raw.outputs[str(i)], u, cfg, s.mode)
        want = _valid_rows(ref[i], u, cfg, s.mode)
        diffs.append(float(np.max(np.abs(got.astype(np.float64) - want))))
        same.append(_transcript(got) == _transcript(want))
    row.update({
        "calls": int(lat.size), "median_ms": float(np.median(lat)), "p95_ms": float(np.percentile(lat, 95)),
        "mean_ms": float(lat.mean()), "min_ms": float(lat.min()), "round_medians_ms": round_medians,
        "first_chunk_ms": float(np.median(firsts)), "cold_first_call_ms": raw.first_call_s * 1e3,
        "rtf": float(np.median(rtfs)), "rtf_min": float(min(rtfs)), "rtf_max": float(max(rtfs)),
        "peak_rss_mb": raw.peak_rss_mb, "load_s": raw.load_s,
        "max_abs_logp_diff": max(diffs), "transcripts_identical": all(same),
        "latencies_ms": [round(float(x), 4) for x in lat],
        **sizes,
    })
    return row


def _window_seconds(utt: Utterance) -> float:
    return utt.window.shape[1] / 100  # 100 fbank frames per second


def ratios_to_ort(rows: list[dict]) -> None:
    """Adds each row's median latency over ONNX Runtime's (same mode and threads; int8 rows over
    ONNX Runtime's int8, every other row over its fp32): the headline."""
    def key(r: dict) -> tuple:
        return r["mode"], r["threads"], r.get("precision") == "int8"

    ort = {key(r): r["median_ms"] for r in rows if r["engine"] == "ort" and r["status"] == "ok"}
    for r in rows:
        base = ort.get(key(r))
        r["ratio_to_ort"] = r["median_ms"] / base if base and r["status"] == "ok" else None

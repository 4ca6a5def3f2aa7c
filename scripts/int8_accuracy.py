"""Accuracy of int8 (and fp16) builds against fp32: WER on the shipped test recordings per split,
and the log-prob error per chunk along each recording.

    PYTHONPATH=$PWD python scripts/int8_accuracy.py --ref build/host-fp32 build/host-int8 build/host-fp16

Every artifact streams the same fbank chunks as the reference artifact (caches carried along);
per chunk the largest |log p - log p_ref| is recorded; transcripts are greedy CTC, WER by jiwer.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jiwer
import numpy as np

from tvm_conformer.audio.wav import load_audio
from tvm_conformer.paths import REPO_DIR
from tvm_conformer.runtime.load import make_recognizer
from tvm_conformer.runtime.recognizer import transcribe_samples
from tvm_conformer.runtime.tvm_backend import TVMBackend

UTTS = REPO_DIR / "tvm_conformer" / "assets" / "test_utts"


def _split(utt_id: str) -> str:
    return utt_id.rsplit("-", 1)[0]


def _log_probs(backend: TVMBackend, samples: np.ndarray, sr: int) -> list[np.ndarray]:
    """Log-probs of every chunk, through the recognizer's own streaming (a hook on step)."""
    seen: list[np.ndarray] = []
    step = backend.step

    def hooked(state, feats, mask):  # noqa: ANN001, ANN202
        lp, state = step(state, feats, mask)
        seen.append(np.asarray(lp).copy())
        return lp, state

    backend.step = hooked
    try:
        text = transcribe_samples(make_recognizer(backend), samples, sr).text
    finally:
        backend.step = step
    return seen, text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref", required=True, help="the fp32 artifact")
    p.add_argument("artifacts", nargs="+")
    p.add_argument("--json")
    args = p.parse_args()
    rows = [json.loads(x) for x in (UTTS / "manifest.jsonl").read_text().splitlines() if x.strip()]
    names = [args.ref, *args.artifacts]
    backends = {a: TVMBackend.load(a) for a in names}
    hyps: dict[str, list[str]] = {a: [] for a in names}
    errs: dict[str, list[float]] = {a: [] for a in args.artifacts}
    same_argmax: dict[str, list[float]] = {a: [] for a in args.artifacts}
    for row in rows:
        samples, sr = load_audio(UTTS / row["path"])
        ref_lp, text = _log_probs(backends[args.ref], samples, sr)
        hyps[args.ref].append(text)
        for a in args.artifacts:
            lp, text = _log_probs(backends[a], samples, sr)
            hyps[a].append(text)
            errs[a] += [float(np.abs(x - r).max()) for x, r in zip(lp, ref_lp, strict=True)]
            same_argmax[a] += [float(np.mean(x.argmax(-1) == r.argmax(-1))) for x, r in zip(lp, ref_lp, strict=True)]
    result = {}
    for a in names:
        per_split = {}
        for split in sorted({_split(r["id"]) for r in rows}):
            idx = [i for i, r in enumerate(rows) if _split(r["id"]) == split]
            per_split[split] = jiwer.wer([rows[i]["text"] for i in idx], [hyps[a][i] for i in idx])
        result[a] = {"wer": per_split, "same_transcripts_as_ref": sum(
            h == r for h, r in zip(hyps[a], hyps[args.ref], strict=True)), "utterances": len(rows)}
        if a in errs:
            e = np.array(errs[a])
            result[a].update(chunks=len(e), max_dlogp=float(e.max()), median_dlogp=float(np.median(e)),
                             p95_dlogp=float(np.percentile(e, 95)),
                             frames_same_argmax=float(np.mean(same_argmax[a])))
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

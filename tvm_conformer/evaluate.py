"""Word error rate of a backend on a dataset split, streamed exactly as `transcribe` does."""

from __future__ import annotations

import json
from pathlib import Path

import jiwer
import numpy as np
from tqdm import tqdm

from tvm_conformer.audio.wav import load_audio
from tvm_conformer.errors import UserError
from tvm_conformer.runtime.backend import StepBackend
from tvm_conformer.runtime.load import make_recognizer
from tvm_conformer.runtime.recognizer import transcribe_samples


def read_manifest(data_dir: str | Path, split: str, limit: int | None = None) -> list[dict]:
    path = Path(data_dir) / split / "manifest.jsonl"
    if not path.is_file():
        raise UserError(f"{path} not found: pass --data/--split of a dataset built by "
                        "`tvm-conformer make-data`")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def evaluate_split(
    backend: StepBackend, data_dir: str | Path, split: str, decoding: str = "greedy",
    limit: int | None = None, progress: bool = True, model: str | Path | None = None,
) -> dict:
    """Streams every recording of the split and returns WER, RTF and the transcripts."""
    rec = make_recognizer(backend, decoding, model)
    refs, hyps, compute, audio = [], [], 0.0, 0.0
    rows = read_manifest(data_dir, split, limit)
    for row in tqdm(rows, desc=f"{backend.name} {split}", disable=not progress):
        samples, sr = load_audio(Path(data_dir) / row["path"])
        tr = transcribe_samples(rec, samples, sr)
        refs.append(row["text"])
        hyps.append(tr.text)
        compute += tr.compute_seconds
        audio += tr.audio_seconds
    out = jiwer.process_words(refs, hyps)
    return {
        "split": split, "backend": backend.name, "utterances": len(rows), "decoding": decoding,
        "wer": out.wer, "substitutions": out.substitutions, "deletions": out.deletions,
        "insertions": out.insertions, "audio_seconds": audio, "rtf": compute / audio if audio else np.nan,
        "hypotheses": hyps, "references": refs,
    }

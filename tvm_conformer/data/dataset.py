"""Build the synthetic corpus on disk (FLAC audio, JSONL manifests, fbank cache) and load it back.

Layout, for each split in SPLITS:
    <out_dir>/<split>/wav/<id>.flac   16 kHz mono 16-bit FLAC
    <out_dir>/<split>/manifest.jsonl  {id, path (relative to out_dir), text, seconds, voice,
                                       speed (wpm), pitch, snr (dB), gain (dB)} per line
    <out_dir>/<split>/feats.npz       feats (sum T, N_MELS) float16, offsets (N+1,) int64,
                                      texts (N,) str, ids (N,) str
"""

from __future__ import annotations

import json
import multiprocessing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from tvm_conformer.audio.features import N_MELS, SAMPLE_RATE, compute_fbank
from tvm_conformer.data.corpus import make_splits
from tvm_conformer.data.synth import (
    HELD_OUT_VOICES,
    PITCH,
    SPEED_WPM,
    TRAIN_VOICES,
    augment,
    espeak_binary,
    synthesize,
)
from tvm_conformer.errors import UserError

SPLITS = ("train", "valid", "test", "test_heldout_voices")


@dataclass(frozen=True)
class _Job:
    out_dir: str
    split: str
    index: int
    text: str
    seed: int


def _make_utterance(job: _Job) -> tuple[dict[str, object], np.ndarray]:
    """Synthesize, augment and store one utterance; returns its manifest row and float16 feats."""
    rng = np.random.default_rng([job.seed, SPLITS.index(job.split), job.index])
    voices = HELD_OUT_VOICES if job.split == "test_heldout_voices" else TRAIN_VOICES
    voice = voices[int(rng.integers(len(voices)))]
    speed = int(rng.integers(SPEED_WPM[0], SPEED_WPM[1] + 1))
    pitch = int(rng.integers(PITCH[0], PITCH[1] + 1))
    audio, snr, gain = augment(synthesize(job.text, voice, speed, pitch), rng)
    utt_id = f"{job.split}-{job.index:06d}"
    rel_path = f"{job.split}/wav/{utt_id}.flac"
    sf.write(Path(job.out_dir) / rel_path, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    row = {
        "id": utt_id, "path": rel_path, "text": job.text,
        "seconds": round(audio.size / SAMPLE_RATE, 4), "voice": voice, "speed": speed,
        "pitch": pitch, "snr": round(snr, 2), "gain": round(gain, 2),
    }  # fmt: skip
    return row, compute_fbank(audio).astype(np.float16)


def build_dataset(
    out_dir: str | Path,
    n_train: int = 8000,
    n_valid: int = 300,
    n_test: int = 300,
    seed: int = 0,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, float]:
    """Write all SPLITS under out_dir (see the module docstring); returns hours of audio per split.

    train/valid/test use TRAIN_VOICES and disjoint sentences; test_heldout_voices speaks the test
    sentences with HELD_OUT_VOICES. The output depends only on the arguments (not on workers).
    """
    espeak_binary()
    out = Path(out_dir)
    sentences = make_splits(seed, n_train, n_valid, n_test)
    sentences["test_heldout_voices"] = sentences["test"]
    jobs = {
        split: [_Job(str(out), split, i, text, seed) for i, text in enumerate(sentences[split])]
        for split in SPLITS
    }
    for split in SPLITS:
        (out / split / "wav").mkdir(parents=True, exist_ok=True)
    hours = {}
    total = sum(len(j) for j in jobs.values())
    with (
        multiprocessing.get_context("spawn").Pool(max(1, workers)) as pool,
        tqdm(total=total, unit="utt", disable=not progress) as bar,
    ):
        for split in SPLITS:
            bar.set_description(split)
            rows, feats = [], []
            for row, f in pool.imap(_make_utterance, jobs[split], chunksize=16):
                rows.append(row)
                feats.append(f)
                bar.update()
            _write_split(out / split, rows, feats)
            hours[split] = sum(float(r["seconds"]) for r in rows) / 3600
    return hours


def _write_split(split_dir: Path, rows: list[dict[str, object]], feats: list[np.ndarray]) -> None:
    with open(split_dir / "manifest.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    offsets = np.zeros(len(feats) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(x) for x in feats])
    np.savez(
        split_dir / "feats.npz",
        feats=np.concatenate(feats) if feats else np.zeros((0, N_MELS), np.float16),
        offsets=offsets,
        texts=np.array([str(r["text"]) for r in rows]),
        ids=np.array([str(r["id"]) for r in rows]),
    )


def load_split(
    out_dir: str | Path, split: str, dtype: type = np.float32
) -> list[tuple[np.ndarray, str, str]]:
    """(feats (T, N_MELS), text, id) for every utterance of a split's feature cache.

    dtype float32 copies each utterance; float16 (the cache's own) gives views into one array.
    A split written in parts (`<split>/part-NNN/feats.npz`, the open corpus's train split) is
    the concatenation of its complete parts, in order.
    """
    split_dir = Path(out_dir) / split
    parts = sorted(p for p in split_dir.glob("part-*[0-9]") if (p / "feats.npz").is_file())
    if parts and not (split_dir / "feats.npz").is_file():
        return [u for p in parts for u in load_split(p.parent, p.name, dtype)]
    path = split_dir / "feats.npz"
    if not path.is_file():
        raise UserError(f"{path} not found: build the dataset with `tvm-conformer make-data "
                        f"--out {out_dir}` (or pass --data DIR)")
    with np.load(path) as data:
        feats, offsets = data["feats"], data["offsets"]
        texts, ids = data["texts"].tolist(), data["ids"].tolist()
    return [
        (feats[offsets[i] : offsets[i + 1]].astype(dtype, copy=False), texts[i], ids[i])
        for i in range(len(ids))
    ]


def dataset_fbank(out_dir: str | Path) -> dict | None:
    """The fbank options a dataset's feature cache was computed with (its info.json), or None
    for datasets without one (the template corpus: the legacy options)."""
    info = Path(out_dir) / "info.json"
    if not info.is_file():
        return None
    return json.loads(info.read_text()).get("fbank")

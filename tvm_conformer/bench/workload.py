"""The benchmark's input: real recordings cut into the exact chunk sequence the recognizer feeds.

Every engine runs the same chunks. They are recorded once, in the parent process, by streaming
each recording through `OnlineRecognizer` with a backend that only records its inputs, so the
chunking (right context, zero padding of the last chunk, attention mask) is the recognizer's
own. Each recording also gives one fixed-length window for the full-utterance mode.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tvm_conformer.paths import ASSETS_DIR, REPO_DIR

if TYPE_CHECKING:  # workers load a workload without importing torch
    from tvm_conformer.model import ModelConfig

# (manifest, audio folder): the shipped test recordings, then the generated test split.
RECORDING_SOURCES = (
    (ASSETS_DIR / "test_utts" / "manifest.jsonl", ASSETS_DIR / "test_utts"),
    (REPO_DIR / "data" / "test" / "manifest.jsonl", REPO_DIR / "data" / "test" / "wav"),
)
UTTERANCE_FRAMES = 400  # full-utterance mode: 4 s of fbank frames (100 frames/s)
# Spoken with espeak-ng when the generated test split is absent (e.g. on a fresh CI machine).
FALLBACK_SENTENCES = (
    "set an alarm for seven thirty tomorrow morning",
    "what's the weather like in london today",
    "turn off the lights in the kitchen",
    "play some jazz music in the living room",
)
FALLBACK_VOICE = ("en-us", 160, 50)  # voice, words per minute, pitch


@dataclass
class Utterance:
    """One recording: its chunk sequence for the step and its window for the full forward."""

    id: str
    text: str
    seconds: float
    feats: np.ndarray  # (chunks, 1, 4c+3, n_mels) float32
    masks: np.ndarray  # (chunks, 1, left + c) float32
    window: np.ndarray  # (1, UTTERANCE_FRAMES, n_mels) float32, zero padded or cut

    def valid(self, config: ModelConfig) -> list[int]:
        """Encoder frames each chunk emits: the ones of its mask past the cache."""
        return [int(m[0, config.left_frames :].sum()) for m in self.masks]


class _ChunkRecorder:
    """A step backend that keeps the recognizer's inputs and answers with zeros."""

    name = "recorder"

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.feats: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []

    def initial_state(self) -> None:
        return None

    def step(self, state: None, feats: np.ndarray, att_mask: np.ndarray) -> tuple[np.ndarray, None]:
        self.feats.append(feats.copy())
        self.masks.append(att_mask.copy())
        return np.zeros((self.config.chunk_size, self.config.vocab_size), np.float32), state


def recordings(count: int) -> list[tuple[str, str, np.ndarray]]:
    """(id, text, 16 kHz samples) of `count` recordings: the shipped test recordings first, then
    the generated `data/test` split; sentences spoken by espeak-ng when neither exists."""
    from tvm_conformer.audio.wav import load_audio

    rows: list[tuple[str, str, Path]] = []
    for manifest, audio_dir in RECORDING_SOURCES:
        if manifest.is_file():
            for line in manifest.read_text().splitlines():
                r = json.loads(line)
                if len(rows) < count and r["id"] not in {x[0] for x in rows}:
                    rows.append((r["id"], r["text"], audio_dir / Path(r["path"]).name))
    if rows:
        return [(uid, text, _load_16k(load_audio(path))) for uid, text, path in rows]
    from tvm_conformer.data.synth import synthesize

    voice, wpm, pitch = FALLBACK_VOICE
    return [(f"synth-{i}", text, synthesize(text, voice, wpm, pitch))
            for i, text in enumerate((FALLBACK_SENTENCES * count)[:count])]


def _load_16k(loaded: tuple[np.ndarray, int]) -> np.ndarray:
    from tvm_conformer.audio.features import SAMPLE_RATE
    from tvm_conformer.audio.wav import resample

    samples, sr = loaded
    return resample(samples, sr, SAMPLE_RATE)


def make_utterance(config: ModelConfig, uid: str, text: str, samples: np.ndarray) -> Utterance:
    """Streams `samples` through the recognizer (0.1 s pieces) and keeps every chunk's input."""
    from tvm_conformer.audio.features import SAMPLE_RATE, compute_fbank
    from tvm_conformer.runtime.recognizer import OnlineRecognizer, transcribe_samples

    recorder = _ChunkRecorder(config)
    transcribe_samples(OnlineRecognizer(recorder), samples, SAMPLE_RATE)
    fbank = compute_fbank(samples, fbank_opts=config.fbank)[:UTTERANCE_FRAMES]
    window = np.zeros((1, UTTERANCE_FRAMES, config.n_mels), np.float32)
    window[0, : len(fbank)] = fbank
    return Utterance(uid, text, len(samples) / SAMPLE_RATE, np.stack(recorder.feats),
                     np.stack(recorder.masks), window)


def make_workload(config: ModelConfig, count: int) -> list[Utterance]:
    return [make_utterance(config, uid, text, s) for uid, text, s in recordings(count)]


def save_workload(path: Path, utts: list[Utterance]) -> None:
    """One .npz that worker processes read without importing torch."""
    arrays: dict[str, np.ndarray] = {}
    for i, u in enumerate(utts):
        arrays[f"{i}.feats"], arrays[f"{i}.masks"], arrays[f"{i}.window"] = u.feats, u.masks, u.window
    meta = [{"id": u.id, "text": u.text, "seconds": u.seconds} for u in utts]
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)


def load_workload(path: Path) -> list[Utterance]:
    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
        return [Utterance(m["id"], m["text"], m["seconds"], z[f"{i}.feats"], z[f"{i}.masks"],
                          z[f"{i}.window"]) for i, m in enumerate(meta)]

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


# ---- the open-corpus suite: every test split, real speech, and what streaming meets ----------

OPEN_TEST_SPLITS = ("test_unseen", "test_heldout_voices", "test_heldout_synth", "test_general",
                    "test_grammar")
ALSA_DIR = Path("/usr/share/sounds/alsa")
REAL_SPEECH = Path(__file__).resolve().parent / "assets" / "real_speech.json"


def _wer_result(name: str, refs: list[str], hyps: list[str], **extra: object) -> dict:
    out = jiwer.process_words(refs, hyps)
    return {"name": name, "wer": out.wer, "utterances": len(refs), **extra,
            "references": refs, "hypotheses": hyps}


def real_speech(rec, moonshine_dir: str | Path | None = None) -> list[dict]:  # noqa: ANN001
    """WER on the human recordings of assets/real_speech.json that are present: alsa-utils'
    channel names, and the moonshine-voice wheel's assets if `moonshine_dir` (the unzipped
    `moonshine_voice/assets`) is given."""
    refs = json.loads(REAL_SPEECH.read_text())
    results = []
    for source, root in (("alsa", ALSA_DIR), ("moonshine", moonshine_dir)):
        if root is None:
            continue
        items = [(Path(root) / name, text) for name, text in refs[source].items()
                 if (Path(root) / name).is_file()]
        if not items:
            continue
        hyps = [transcribe_samples(rec, *load_audio(p)).text for p, _ in items]
        results.append(_wer_result(f"real_{source}", [t for _, t in items], hyps,
                                   files=[p.name for p, _ in items]))
    return results


def _noise_floor(samples: np.ndarray, sr: int) -> float:
    """RMS of the quietest 50 ms of a recording: the level of its own background noise."""
    n = max(1, int(0.05 * sr))
    blocks = samples[: len(samples) // n * n].reshape(-1, n)
    return float(np.sqrt((blocks.astype(np.float64) ** 2).mean(1)).min()) if len(blocks) else 0.0


def _floor(seconds: float, level: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    return (rng.standard_normal(int(seconds * sr)) * level).astype(np.float32)


def streaming_suite(rec, data_dir: str | Path, split: str = "test_unseen",  # noqa: ANN001
                    limit: int = 60, stream_minutes: float = 10.0, seed: int = 0) -> list[dict]:
    """What real recordings differ in from clips, each compared with the clips alone:
    silence (digital, and the clip's own noise floor) of 1 and 3 s before and after, pairs of
    sentences with a 1.5 s pause, one stream of `stream_minutes` of sentences with 0.5-1.5 s
    gaps, and 3 s of silence or low noise alone (which must give no words)."""
    rng = np.random.default_rng(seed)
    rows = read_manifest(data_dir, split, limit)
    clips = [load_audio(Path(data_dir) / r["path"]) for r in rows]
    refs = [r["text"] for r in rows]
    sr = clips[0][1]
    alone = [transcribe_samples(rec, x, s).text for x, s in clips]
    out = [_wer_result(f"{split}_alone", refs, alone)]
    for pad in (1.0, 3.0):
        for kind in ("digital", "noise_floor"):
            hyps = []
            for x, _ in clips:
                level = 0.0 if kind == "digital" else _noise_floor(x, sr)
                padded = np.concatenate([_floor(pad, level, sr, rng), x, _floor(pad, level, sr, rng)])
                hyps.append(transcribe_samples(rec, padded, sr).text)
            out.append(_wer_result(f"pad_{pad:g}s_{kind}", refs, hyps))
    pair_refs, pair_hyps = [], []
    for i in range(0, len(clips) - 1, 2):
        (a, _), (b, _) = clips[i], clips[i + 1]
        gap = _floor(1.5, _noise_floor(a, sr), sr, rng)
        pair_hyps.append(transcribe_samples(rec, np.concatenate([a, gap, b]), sr).text)
        pair_refs.append(f"{refs[i]} {refs[i + 1]}")
    alone_pairs = [f"{alone[i]} {alone[i + 1]}" for i in range(0, len(clips) - 1, 2)]
    out.append(_wer_result("pairs_1.5s_pause", pair_refs, pair_hyps,
                           wer_alone=jiwer.wer(pair_refs, alone_pairs)))
    pieces, stream_refs, stream_alone, total, i = [], [], [], 0, 0
    while total < stream_minutes * 60 * sr:
        x = clips[i % len(clips)][0]
        pieces += [x, _floor(float(rng.uniform(0.5, 1.5)), _noise_floor(x, sr), sr, rng)]
        stream_refs.append(refs[i % len(clips)])
        stream_alone.append(alone[i % len(clips)])
        total += len(x) + len(pieces[-1])
        i += 1
    tr = transcribe_samples(rec, np.concatenate(pieces), sr)
    ref, alone_text = " ".join(stream_refs), " ".join(stream_alone)
    out.append(_wer_result(f"stream_{stream_minutes:g}min", [ref], [tr.text],
                           wer_alone=jiwer.wer(ref, alone_text), sentences=len(stream_refs),
                           audio_seconds=tr.audio_seconds, rtf=tr.rtf))
    quiet = {"silence_3s": np.zeros(3 * sr, np.float32),
             "white_noise_3s_-60dBFS": _floor(3.0, 10 ** (-60 / 20), sr, rng),
             "white_noise_3s_-40dBFS": _floor(3.0, 10 ** (-40 / 20), sr, rng)}
    alsa_noise = ALSA_DIR / "Noise.wav"
    if alsa_noise.is_file():
        quiet["alsa_Noise.wav"] = load_audio(alsa_noise)[0]
    for name, x in quiet.items():
        text = transcribe_samples(rec, x, sr).text
        out.append({"name": name, "words": len(text.split()), "hypotheses": [text]})
    return out


def open_suite(backend: StepBackend, data_dir: str | Path, decoding: str = "greedy",
               model: str | Path | None = None, limit: int | None = None,
               moonshine_dir: str | Path | None = None, stream_minutes: float = 10.0,
               progress: bool = True) -> list[dict]:
    """Every test split of an open corpus present in data_dir, real speech, and the streaming
    suite on test_unseen (its first min(limit, 60) sentences)."""
    results = []
    for split in OPEN_TEST_SPLITS:
        if (Path(data_dir) / split / "manifest.jsonl").is_file():
            r = evaluate_split(backend, data_dir, split, decoding, limit, progress, model)
            results.append({"name": split, **{k: v for k, v in r.items() if k != "split"}})
    rec = make_recognizer(backend, decoding, model)
    results += real_speech(rec, moonshine_dir)
    if (Path(data_dir) / "test_unseen" / "manifest.jsonl").is_file():
        results += streaming_suite(rec, data_dir, limit=min(limit or 60, 60),
                                   stream_minutes=stream_minutes)
    return results

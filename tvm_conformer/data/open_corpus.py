"""The open-vocabulary corpus: several synthesizers, recordings shaped like real ones, and test
splits that measure generalization (`make-data --corpus open`).

Text: the training grammar (`grammar.TRAIN_TEMPLATES`) and general English (`text`, Debian's
fortunes). Voices: espeak-ng (`synth.TRAIN_VOICES`) and festival (`engines.FESTIVAL_VOICES`) in
training; espeak-ng's `HELD_OUT_VOICES` and the whole flite synthesizer only in tests.
Training recordings have leading/trailing silence of 0 to 3 s, pauses inside a sentence, two or
three sentences with gaps, reverberation, speed perturbation, noise and gain; some are silence or
noise alone with an empty transcript.

Splits (the layout of `dataset.py`; feats.npz with the fbank options of `info.json`):
    train, valid            training grammar + fortunes, training voices, augmented
    test_unseen             the unseen-phrasing grammar (never trained on), training voices
    test_heldout_voices     the same sentences, espeak-ng voices never trained on
    test_heldout_synth      the same sentences, flite (a synthesizer never trained on)
    test_general            held-out fortune sentences (everyday English), training voices
    test_grammar            new sentences of the training grammar, training voices
"""

from __future__ import annotations

import json
import multiprocessing
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from tvm_conformer.audio.features import SAMPLE_RATE, SHERPA_FBANK, compute_fbank
from tvm_conformer.data import grammar
from tvm_conformer.data.augment import (
    add_noise,
    apply_gain,
    assemble,
    draw_silence,
    reverberate,
    speed_perturb,
)
from tvm_conformer.data.dataset import _write_split
from tvm_conformer.data.engines import (
    DURATION_STRETCH,
    FESTIVAL_VOICES,
    FLITE_VOICES,
    festival_batch,
    festival_binary,
    flite_binary,
    flite_synthesize,
)
from tvm_conformer.data.synth import HELD_OUT_VOICES, TRAIN_VOICES, espeak_binary, synthesize
from tvm_conformer.data.text import fortune_sentences
from tvm_conformer.errors import UserError

OPEN_SPLITS = ("valid", "train", "test_unseen", "test_heldout_voices", "test_heldout_synth",
               "test_general", "test_grammar")
TEST_SPLITS = OPEN_SPLITS[2:]
FESTIVAL_SHARE = 0.35  # of training-voice recordings
# festival voices' shares: the HTS voice costs ~4x a diphone voice to synthesize
FESTIVAL_WEIGHTS = (0.4, 0.4, 0.2)
GRAMMAR_SHARE = 0.55  # of training sentences; the rest are fortunes
EMPTY_SHARE = 0.025
TYPICAL_SPEECH_POWER = 0.05**2  # reference level for noise-only recordings
BATCH = 24  # recordings per worker job (festival speaks a batch in one process)
PART = 1000  # the train split is written in parts of this many recordings (dataset.load_split)


@dataclass
class Spec:
    """Everything one recording is made from (a manifest row before synthesis)."""

    id: str
    split: str
    texts: list[str]  # pieces, spoken with gaps between them; [] = silence/noise only
    engine: str  # espeak | festival | flite | none
    voice: str
    seed: list[int]
    wpm: int = 160
    pitch: int = 50
    stretch: float = 1.0
    speed: float = 1.0
    lead: float = 0.2
    trail: float = 0.2
    gaps: list[float] = field(default_factory=list)
    rt60: float | None = None
    snr: float | None = None
    noise_exp: float = 0.0
    gain: float = 0.0
    seconds: float = 0.0

    @property
    def text(self) -> str:
        return " ".join(self.texts)


def _voice(rng: np.random.Generator, split: str) -> tuple[str, str]:
    if split == "test_heldout_voices":
        return "espeak", HELD_OUT_VOICES[int(rng.integers(len(HELD_OUT_VOICES)))]
    if split == "test_heldout_synth":
        return "flite", FLITE_VOICES[int(rng.integers(len(FLITE_VOICES)))]
    if rng.random() < FESTIVAL_SHARE:
        return "festival", FESTIVAL_VOICES[int(rng.choice(len(FESTIVAL_VOICES), p=FESTIVAL_WEIGHTS))]
    return "espeak", TRAIN_VOICES[int(rng.integers(len(TRAIN_VOICES)))]


def _spec(split: str, index: int, seed: int, texts: list[str]) -> Spec:
    """Draw the voice and augmentation of one recording; `texts` are its pieces."""
    sid = OPEN_SPLITS.index(split)
    rng = np.random.default_rng([seed, sid, index, 0])
    spec = Spec(id=f"{split}-{index:06d}", split=split, texts=texts, engine="none", voice="",
                seed=[seed, sid, index, 1])
    spec.wpm = int(rng.integers(120, 201))
    spec.pitch = int(rng.integers(20, 81))
    spec.stretch = round(float(rng.uniform(*DURATION_STRETCH)), 3)
    spec.noise_exp = float(rng.choice([0.0, 1.0, 2.0]))
    if split in TEST_SPLITS:  # moderate, fixed conditions; the evaluation adds the rest
        spec.wpm = int(rng.integers(130, 191))
        spec.pitch = int(rng.integers(30, 71))
        spec.stretch = round(float(rng.uniform(0.9, 1.1)), 3)
        spec.lead, spec.trail = (round(float(rng.uniform(0.1, 0.4)), 3) for _ in range(2))
        spec.snr = round(float(rng.uniform(15, 35)), 2)
        spec.gain = round(float(rng.uniform(-12, 6)), 2)
    else:
        if rng.random() < 0.6:
            spec.speed = round(float(rng.uniform(0.88, 1.12)), 3)
        if rng.random() < 0.25:
            spec.rt60 = round(float(rng.uniform(0.15, 0.8)), 3)
        if rng.random() < 0.85:
            spec.snr = round(float(rng.uniform(3, 35)), 2)
        spec.gain = round(float(rng.uniform(-25, 6)), 2)
        spec.lead = round(draw_silence(rng, 0.35), 3)
        spec.trail = round(draw_silence(rng, 0.35), 3)
        spec.gaps = [round(float(rng.uniform(0.2, 2.5)), 3) for _ in texts[1:]]
    if texts:
        spec.engine, spec.voice = _voice(rng, split)
    else:
        spec.lead = round(float(rng.uniform(0.5, 4.0)), 3)
        spec.trail = 0.0
        spec.snr = None if rng.random() < 0.3 else round(float(rng.uniform(5, 40)), 2)
    return spec


def _speak(specs: list[Spec]) -> list[list[np.ndarray]]:
    """The speech pieces of each spec (festival pieces in one batch)."""
    pieces: list[list[np.ndarray | None]] = [[None] * len(s.texts) for s in specs]
    fest = [(i, j) for i, s in enumerate(specs) if s.engine == "festival" for j in range(len(s.texts))]
    if fest:
        audio = festival_batch([(specs[i].texts[j], specs[i].voice, specs[i].stretch) for i, j in fest])
        for (i, j), a in zip(fest, audio, strict=True):
            pieces[i][j] = a
    for i, s in enumerate(specs):
        for j, text in enumerate(s.texts):
            if s.engine == "espeak":
                pieces[i][j] = synthesize(text, s.voice, s.wpm, s.pitch)
            elif s.engine == "flite":
                pieces[i][j] = flite_synthesize(text, s.voice, s.stretch)
    return [[p for p in ps if p is not None] for ps in pieces]


def _trim(x: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    """Cut the synthesizer's own leading/trailing silence so that `lead`/`trail` are exact."""
    loud = np.flatnonzero(np.abs(x) > threshold * (np.abs(x).max() + 1e-12))
    if loud.size == 0:
        return x
    pad = int(0.02 * SAMPLE_RATE)
    return x[max(0, loud[0] - pad): loud[-1] + pad]


def render(spec: Spec, pieces: list[np.ndarray]) -> np.ndarray:
    """The recording of a spec from its synthesized pieces: float32 16 kHz."""
    rng = np.random.default_rng(spec.seed)
    pieces = [speed_perturb(_trim(p), spec.speed) for p in pieces]
    if spec.rt60 is not None:
        pieces = [reverberate(p, spec.rt60, rng) for p in pieces]
    audio, spans = assemble(pieces, spec.gaps, spec.lead, spec.trail)
    if pieces:
        power = float(np.mean(np.concatenate(pieces).astype(np.float64) ** 2)) + 1e-12
    else:
        power = TYPICAL_SPEECH_POWER
    if spec.snr is not None:
        audio = add_noise(audio, power, spec.snr, spec.noise_exp, rng)
    out, spec.gain = apply_gain(audio, spec.gain)
    spec.gain = round(spec.gain, 2)
    return out


def _make_batch(job: tuple[str, list[Spec], dict]) -> list[tuple[dict, np.ndarray]]:
    out_dir, specs, fbank = job
    results = []
    for spec, pieces in zip(specs, _speak(specs), strict=True):
        audio = render(spec, pieces)
        spec.seconds = round(audio.size / SAMPLE_RATE, 4)
        rel = f"{spec.split}/wav/{spec.id}.flac"
        sf.write(Path(out_dir) / rel, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        row = {"id": spec.id, "path": rel, "text": spec.text, **asdict(spec)}
        feats = compute_fbank(audio, fbank_opts=fbank).astype(np.float16)
        results.append((row, feats))
    return results


def _split_pause(text: str, rng: np.random.Generator) -> list[str]:
    words = text.split()
    if len(words) < 4:
        return [text]
    k = int(rng.integers(2, len(words) - 1))
    return [" ".join(words[:k]), " ".join(words[k:])]


def plan(seed: int, n_train: int, n_valid: int, n_test: int) -> dict[str, list[Spec]]:
    """The specs of every split; depends only on the arguments and the installed fortunes."""
    import random

    fortunes = fortune_sentences()
    rng = random.Random(seed)
    taken: set[str] = set()
    unseen = grammar.distinct(grammar.unseen_sentence, rng, n_test, taken)
    test_grammar = grammar.distinct(grammar.train_sentence, rng, n_test, taken)
    valid_grammar = grammar.distinct(grammar.train_sentence, rng, n_valid, taken)
    general = random.Random(seed + 1).sample(fortunes["test"], min(n_test, len(fortunes["test"])))
    texts: dict[str, list[list[str]]] = {
        "test_unseen": [[s] for s in unseen], "test_heldout_voices": [[s] for s in unseen],
        "test_heldout_synth": [[s] for s in unseen], "test_general": [[s] for s in general],
        "test_grammar": [[s] for s in test_grammar],
    }

    def train_text(pool_fortunes: list[str], pool_grammar: list[str] | None) -> str:
        if rng.random() < GRAMMAR_SHARE:
            if pool_grammar is not None:
                return rng.choice(pool_grammar)
            while True:
                s = grammar.train_sentence(rng)
                if s not in taken:
                    return s
        return rng.choice(pool_fortunes)

    for split, n, pool_f, pool_g in (("valid", n_valid, fortunes["valid"], valid_grammar),
                                     ("train", n_train, fortunes["train"], None)):
        nrng = np.random.default_rng([seed, OPEN_SPLITS.index(split), 99])
        rows: list[list[str]] = []
        for _ in range(n):
            if nrng.random() < EMPTY_SHARE:
                rows.append([])
                continue
            k = int(nrng.choice([1, 2, 3], p=[0.8, 0.14, 0.06]))
            pieces = [train_text(pool_f, pool_g) for _ in range(k)]
            if k == 1 and nrng.random() < 0.12:
                pieces = _split_pause(pieces[0], nrng)
            rows.append(pieces)
        texts[split] = rows
    return {split: [_spec(split, i, seed, t) for i, t in enumerate(texts[split])]
            for split in OPEN_SPLITS}


def text_stats(specs: dict[str, list[Spec]]) -> dict:
    """Vocabulary of the training text and, per test split, the share of its words (tokens)
    and of its distinct words (types) that never occur in it."""
    vocab = Counter(w for s in specs["train"] for w in s.text.split())
    out: dict = {"train_vocab": len(vocab), "train_words": sum(vocab.values()), "splits": {}}
    for split in ("valid", *TEST_SPLITS):
        words = [w for s in specs[split] for w in s.text.split()]
        types = set(words)
        out["splits"][split] = {
            "words": len(words), "types": len(types),
            "unseen_token_share": round(sum(w not in vocab for w in words) / max(1, len(words)), 4),
            "unseen_type_share": round(sum(w not in vocab for w in types) / max(1, len(types)), 4),
        }
    return out


def _existing(out: Path, split: str, specs: list[Spec]) -> int:
    """Recordings of a split already complete on disk (an interrupted build resumes there)."""
    if split != "train":
        return len(specs) if (out / split / "feats.npz").is_file() else 0
    return sum(min(PART, len(specs) - i) for i in range(0, len(specs), PART)
               if (out / split / f"part-{i // PART:03d}" / "feats.npz").is_file())


def _manifest_rows(split_dir: Path) -> list[dict]:
    """A split's manifest rows: its manifest.jsonl, or while the train split is still being
    built, its complete parts' manifests in order."""
    paths = ([split_dir / "manifest.jsonl"] if (split_dir / "manifest.jsonl").is_file()
             else sorted(split_dir.glob("part-*[0-9]/manifest.jsonl")))
    return [json.loads(line) for p in paths for line in p.read_text().splitlines() if line.strip()]


def _hours(out: Path, split: str) -> float:
    return sum(float(r["seconds"]) for r in _manifest_rows(out / split)) / 3600


def easy_ids(out_dir: str | Path, split: str = "train") -> set[str]:
    """Ids of a split's easy recordings, for a training curriculum: one sentence, no
    reverberation, noise at 10 dB SNR or less of it, at most 1.5 s of silence around it (the
    manifest's fields; an empty set for datasets without them, e.g. the template corpus)."""
    return {r["id"] for r in _manifest_rows(Path(out_dir) / split)
            if "texts" in r and "snr" in r and len(r["texts"]) == 1 and not r.get("rt60")
            and (r["snr"] is None or r["snr"] >= 10)
            and float(r.get("lead", 0)) + float(r.get("trail", 0)) <= 1.5}


def build_open_dataset(
    out_dir: str | Path, n_train: int = 16000, n_valid: int = 400, n_test: int = 300,
    seed: int = 0, workers: int = 2, progress: bool = True, fbank: dict | None = None,
    order: tuple[str, ...] = OPEN_SPLITS,
) -> dict:
    """Write every split of OPEN_SPLITS under out_dir and `info.json` (fbank options, hours,
    text statistics); returns the info. Independent of `workers`. The train split is written
    in parts of PART recordings (a trainer can start on the first parts); a build interrupted
    and started again with the same arguments keeps the complete splits and parts. The plan
    of a larger n_train extends that of a smaller one (the same first recordings). `order`:
    the order the splits are written in (the content does not depend on it)."""
    espeak_binary(), festival_binary(), flite_binary()
    fbank = dict(SHERPA_FBANK if fbank is None else fbank)
    out = Path(out_dir)
    specs = plan(seed, n_train, n_valid, n_test)
    info = {"corpus": "open", "seed": seed, "fbank": fbank, "sizes": [n_train, n_valid, n_test],
            "train_parts": -(-n_train // PART), "text": text_stats(specs), "splits": {}}
    out.mkdir(parents=True, exist_ok=True)
    old = out / "info.json"
    if old.is_file():
        prev = json.loads(old.read_text())
        if (prev.get("seed"), prev.get("fbank"), prev.get("sizes", [None] * 3)[1:]) != (
                seed, fbank, [n_valid, n_test]):
            raise UserError(f"{out} holds another corpus (seed, fbank or sizes differ); "
                            "pick another --out or delete it")
        info["splits"] = {k: v for k, v in prev.get("splits", {}).items() if k != "train"}
    (out / "info.json").write_text(json.dumps(info, indent=1))
    done = {split: _existing(out, split, specs[split]) for split in OPEN_SPLITS}
    total = sum(len(v) for v in specs.values())
    with (
        multiprocessing.get_context("spawn").Pool(max(1, workers)) as pool,
        tqdm(total=total, initial=sum(done.values()), unit="utt", disable=not progress,
             mininterval=30) as bar,
    ):
        for split in order:
            (out / split / "wav").mkdir(parents=True, exist_ok=True)
            bar.set_description(split)
            n = len(specs[split])
            parts = range(0, n, PART) if split == "train" else [0]
            for start in parts:
                size = PART if split == "train" else n
                target = out / split / (f"part-{start // PART:03d}" if split == "train" else "")
                if (target / "feats.npz").is_file():
                    continue  # written by an earlier, interrupted build of the same plan
                todo = specs[split][start : start + size]
                jobs = [(str(out), todo[i : i + BATCH], fbank) for i in range(0, len(todo), BATCH)]
                rows, feats = [], []
                for results in pool.imap(_make_batch, jobs):
                    for row, f in results:
                        rows.append(row)
                        feats.append(f)
                    bar.update(len(results))
                tmp = target.with_name(target.name + ".tmp") if split == "train" else target
                tmp.mkdir(parents=True, exist_ok=True)
                _write_split(tmp, rows, feats)
                if tmp != target:
                    tmp.rename(target)  # a part exists only once complete
            if split == "train":
                with open(out / split / "manifest.jsonl", "w", encoding="utf-8") as f:
                    for part in sorted((out / split).glob("part-*[0-9]")):
                        f.write((part / "manifest.jsonl").read_text())
            info["splits"][split] = {"utterances": n, "hours": round(_hours(out, split), 3)}
            (out / "info.json").write_text(json.dumps(info, indent=1))
    return info

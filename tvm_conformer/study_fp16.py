"""The fp16 stability study: fp32, fp16 with the numerics passes and plain fp16 under input gain.

    result = run_study("tvm_conformer/assets/conformer_dws.pt", "data", limit=100)
    print(format_table(result))

Every utterance of a split is streamed, at each audio gain, through three host builds of one
checkpoint (`CONFIGS`), each recognizer keeping its own caches, as a deployment would. Per gain and
build: the fraction of chunks with a non-finite output (log-probs or either cache), the largest
|log-prob - fp32 log-prob| over the frames finite in both, and the WER (jiwer, greedy CTC).

Gain and features: the gain multiplies the float samples and nothing clips them (`clipped` counts
the samples beyond full scale that a 16-bit file or an ADC would clip). The Kaldi fbank is linear
up to the power spectrum (pre-emphasis, DC removal, window, FFT; no dither), so a gain of G dB
shifts every log-mel value by 2 ln(10^(G/20)) = 0.2303 G exactly while no mel energy is below the
log floor (FLT_EPSILON) and the power stays within float32 (it overflows near +290 dB); `shift_error`
measures the largest deviation from that shift. The model's CMVN multiplies the shift by its
inverse standard deviation per mel bin.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import jiwer
import numpy as np
from tqdm import tqdm

from tvm_conformer.audio.features import compute_fbank
from tvm_conformer.audio.wav import load_audio
from tvm_conformer.compiler.pipeline import PipelineOptions
from tvm_conformer.errors import UserError
from tvm_conformer.evaluate import read_manifest
from tvm_conformer.paths import DEFAULT_CHECKPOINT
from tvm_conformer.runtime.backend import StepBackend
from tvm_conformer.runtime.recognizer import OnlineRecognizer, transcribe_samples

REFERENCE = "fp32"
CONFIGS: dict[str, PipelineOptions] = {
    REFERENCE: PipelineOptions(),
    "fp16": PipelineOptions(precision="fp16", numerics=True),
    "fp16-plain": PipelineOptions(precision="fp16", numerics=False),
}
DEFAULT_GAINS_DB = (-40.0, -20.0, 0.0, 20.0, 40.0, 60.0)
RESULTS_JSON, TABLE_MD, PLOT_PNG = "study.json", "study.md", "study.png"


def feature_shift(gain_db: float) -> float:
    """The log-mel shift 2 ln(g) of an audio gain of `gain_db` (g = 10^(gain_db / 20))."""
    return gain_db * math.log(10) / 10


class _FiniteCheck:
    """A step backend that notes, per step, whether every output of `inner` is finite."""

    def __init__(self, inner: StepBackend) -> None:
        self.inner = inner
        self.name = inner.name
        self.config = inner.config
        self.finite: list[bool] = []

    def initial_state(self):  # noqa: ANN201 - the inner backend's opaque state
        return self.inner.initial_state()

    def step(self, state, feats: np.ndarray, att_mask: np.ndarray):  # noqa: ANN001, ANN201
        log_probs, state = self.inner.step(state, feats, att_mask)
        outs = [np.asarray(log_probs), *(t.numpy() for t in state)]
        self.finite.append(all(np.isfinite(o).all() for o in outs))
        return log_probs, state

    def take(self) -> list[bool]:
        """The flags of the steps since the last call."""
        flags, self.finite = self.finite, []
        return flags


@dataclass
class _Tally:
    """What one build did at one gain."""

    hyps: list[str] = field(default_factory=list)
    chunks: int = 0
    nonfinite_chunks: int = 0
    frames: int = 0  # compared with the reference build
    token_changes: int = 0  # frames whose greedy token differs from the reference's
    max_abs_err: float | None = None  # None until a frame is finite in both builds

    def add(self, text: str, finite: list[bool], lp: np.ndarray, ref: np.ndarray | None) -> None:
        """One utterance: its transcript, whether each chunk's outputs were finite, its log-probs
        (T, V) and the reference build's (None for the reference itself)."""
        self.hyps.append(text)
        self.chunks += len(finite)
        self.nonfinite_chunks += finite.count(False)
        if ref is None:
            return
        self.frames += len(lp)
        # a row with a NaN has no meaningful argmax: it counts as changed
        same = (lp.argmax(-1) == ref.argmax(-1)) & np.isfinite(lp).all(-1) & np.isfinite(ref).all(-1)
        self.token_changes += int(np.count_nonzero(~same))
        both = np.isfinite(lp) & np.isfinite(ref)
        if both.any():
            err = float(np.abs(lp - ref)[both].max())
            self.max_abs_err = err if self.max_abs_err is None else max(self.max_abs_err, err)

    def summary(self, refs: list[str]) -> dict:
        compared = self.frames > 0
        return {
            "wer": jiwer.wer(refs, self.hyps), "chunks": self.chunks,
            "nonfinite_fraction": self.nonfinite_chunks / max(1, self.chunks),
            "max_abs_err": self.max_abs_err if compared else None,
            "token_change_fraction": self.token_changes / self.frames if compared else None,
        }  # fmt: skip


def build_artifacts(model: str | Path, out_dir: str | Path, quiet: bool = False) -> dict[str, Path]:
    """Host builds of `model` for every config in `out_dir/<config>`; a build of the same
    checkpoint and pipeline options found there is reused."""
    from tvm_conformer.compiler.artifact import read_manifest as read_artifact
    from tvm_conformer.compiler.artifact import sha256_file
    from tvm_conformer.compiler.compile import compile_artifact

    digest = sha256_file(model)
    arts = {}
    for name, opts in CONFIGS.items():
        art = Path(out_dir) / name
        try:
            m = read_artifact(art)
            fresh = m["model"]["checkpoint_sha256"] == digest and m["pipeline"] == opts.to_dict()
        except UserError:
            fresh = False
        if not fresh:
            # no tuning database: the three builds differ in precision and numerics passes only
            built = compile_artifact(art, "host", model, opts=opts, quiet=quiet, use_default_database=False)
            if built["model"]["checkpoint_sha256"] != digest:  # builds of two checkpoints compare nothing
                raise UserError(f"{model} changed while the study compiled it; rerun once it is final")
        arts[name] = art
    return arts


def run_study(
    model: str | Path = DEFAULT_CHECKPOINT,
    data: str | Path = "data",
    split: str = "test",
    limit: int | None = None,
    gains_db: tuple[float, ...] = DEFAULT_GAINS_DB,
    out: str | Path = "bench_results/fp16_study",
    threads: int | None = 1,
    progress: bool = True,
) -> dict:
    """Runs the study and writes `RESULTS_JSON`, `TABLE_MD` and `PLOT_PNG` into `out`; returns
    the results (builds are kept in `out/artifacts`)."""
    from tvm_conformer.compiler.artifact import sha256_file
    from tvm_conformer.runtime.tvm_backend import TVMBackend

    out = Path(out)
    if not Path(model).is_file():
        raise UserError(f"checkpoint {model} not found: pass --model PATH to an existing .pt file")
    if not (Path(data) / split / "manifest.jsonl").is_file():
        raise UserError(f"{data}/{split}/manifest.jsonl not found: pass --data/--split of a `make-data` dataset")
    rows = read_manifest(data, split, limit)
    if not rows:
        raise UserError(f"{data}/{split} has no utterances; build the dataset with `tvm-conformer make-data`")
    arts = build_artifacts(model, out / "artifacts", quiet=not progress)
    checks = {name: _FiniteCheck(TVMBackend.load(art, threads)) for name, art in arts.items()}
    recs = {name: OnlineRecognizer(chk) for name, chk in checks.items()}
    tallies = {(g, name): _Tally() for g in gains_db for name in CONFIGS}
    shift_err: dict[float, float | None] = dict.fromkeys(gains_db, 0.0)
    clipped = dict.fromkeys(gains_db, 0)
    refs, n_samples, audio_s = [], 0, 0.0
    t0 = time.time()
    for row in tqdm(rows, desc=f"fp16 study {split}", disable=not progress):
        samples, sr = load_audio(Path(data) / row["path"])
        refs.append(row["text"])
        n_samples += len(samples)
        audio_s += len(samples) / sr
        base = compute_fbank(samples, sr)
        for g in gains_db:
            gained = samples * np.float32(10 ** (g / 20))
            clipped[g] += int(np.count_nonzero(np.abs(gained) > 1.0))
            dev = float(np.abs(compute_fbank(gained, sr) - base - feature_shift(g)).max())
            if shift_err[g] is not None:  # None: the fbank overflowed (float32 power) at this gain
                shift_err[g] = max(shift_err[g], dev) if math.isfinite(dev) else None
            ref = None
            for name, rec in recs.items():  # REFERENCE first: CONFIGS starts with it
                tr = transcribe_samples(rec, gained, sr)
                tallies[g, name].add(tr.text, checks[name].take(), tr.log_probs, ref)
                ref = tr.log_probs if ref is None else ref
    result = {
        "model": str(model), "checkpoint_sha256": sha256_file(model), "data": str(data), "split": split,
        "utterances": len(rows), "audio_seconds": round(audio_s, 1), "threads": threads,
        "configs": {name: opts.to_dict() for name, opts in CONFIGS.items()}, "reference": REFERENCE,
        "study_seconds": round(time.time() - t0, 1),
        "gains": [
            {
                "gain_db": g, "feature_shift": feature_shift(g), "shift_error": shift_err[g],
                "clipped_fraction": clipped[g] / n_samples,
                "builds": {name: tallies[g, name].summary(refs) for name in CONFIGS},
            }
            for g in gains_db
        ],
    }  # fmt: skip
    write_results(result, out)
    return result


def _num(v: float | None, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def format_table(result: dict) -> str:
    """The results as a Markdown table, one row per gain."""
    names = list(result["configs"])
    others = [n for n in names if n != result["reference"]]
    head = ["gain (dB)", "log-mel shift", "clipped", "shift error"]
    head += [f"WER {n}" for n in names] + [f"non-finite {n}" for n in names]
    head += [f"max abs err {n}" for n in others] + [f"tokens changed {n}" for n in others]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for r in result["gains"]:
        b = r["builds"]
        cells = [f"{r['gain_db']:+g}", f"{r['feature_shift']:+.2f}", f"{100 * r['clipped_fraction']:.2f}%",
                 _num(r["shift_error"], ".1e")]
        cells += [f"{100 * b[n]['wer']:.2f}%" for n in names]
        cells += [f"{100 * b[n]['nonfinite_fraction']:.1f}%" for n in names]
        cells += [_num(b[n]["max_abs_err"], ".3g") for n in others]
        cells += [f"{100 * b[n]['token_change_fraction']:.2f}%" for n in others]
        lines.append("| " + " | ".join(cells) + " |")
    chunks = result["gains"][0]["builds"][result["reference"]]["chunks"]
    lines.append("")
    lines.append(
        f"{result['utterances']} utterances of `{result['split']}` ({result['audio_seconds']:.0f} s of audio, "
        f"{chunks} chunks per build and gain); reference `{result['reference']}` (TVM fp32 build); "
        "max abs err: largest |log-prob - reference log-prob| over the frames finite in both; "
        "tokens changed: frames whose greedy token differs from the reference's (or is not finite); "
        "clipped: samples beyond full scale (not clipped here); shift error: largest deviation of "
        "the gained audio's log-mel features from the original's plus the log-mel shift (n/a: the fbank overflowed)."
    )
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """Non-finite chunks, log-prob error, greedy tokens changed and WER against the gain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gains = [r["gain_db"] for r in result["gains"]]
    ref = result["reference"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    (nonfinite, err), (changed, wer) = axes
    for i, name in enumerate(result["configs"]):
        b = [r["builds"][name] for r in result["gains"]]
        style = {"marker": "o", "color": f"C{i}", "label": name}  # one colour per build in every panel
        nonfinite.plot(gains, [100 * x["nonfinite_fraction"] for x in b], **style)
        wer.plot(gains, [100 * x["wer"] for x in b], **style)
        if name != ref:
            err.plot(gains, [np.nan if x["max_abs_err"] is None else x["max_abs_err"] for x in b], **style)
            changed.plot(gains, [100 * x["token_change_fraction"] for x in b], **style)
    nonfinite.set(ylabel="chunks with a non-finite output (%)", title="non-finite outputs")
    err.set(ylabel=f"max |log-prob - {ref} log-prob|", yscale="log", title="log-prob error (finite frames)")
    changed.set(ylabel=f"frames whose greedy token differs from {ref} (%)", title="greedy tokens changed")
    wer.set(ylabel="WER (%)", title=f"WER, {result['utterances']} utterances of {result['split']}")
    for ax in axes.flat:
        ax.set_xlabel("audio gain (dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(result: dict, out: Path) -> None:
    """`RESULTS_JSON`, `TABLE_MD` and `PLOT_PNG` in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULTS_JSON).write_text(json.dumps(result, indent=1))
    (out / TABLE_MD).write_text(format_table(result) + "\n")
    plot(result, out / PLOT_PNG)

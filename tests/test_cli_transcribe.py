"""`tvm-conformer transcribe` on good and bad input: a result or a one-line error, no traceback."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jiwer
import numpy as np
import pytest
import soundfile as sf

from tvm_conformer.cli import main
from tvm_conformer.paths import ASSETS_DIR, DEFAULT_RECORDING


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["transcribe", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _error_line(capsys, *args: str) -> str:
    code, out, err = _run(capsys, *args)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def _speech() -> tuple[np.ndarray, int]:
    return sf.read(DEFAULT_RECORDING, dtype="float32")


def test_default_recording_json_has_text_duration_and_rtf(capsys):
    code, out, _ = _run(capsys, "--json")
    assert code == 0
    result = json.loads(out)
    expected = (ASSETS_DIR / "sample.txt").read_text().strip()
    assert jiwer.cer(expected, result["text"]) <= 0.1, result["text"]
    assert result["audio_seconds"] == pytest.approx(len(_speech()[0]) / 16000, abs=1e-3)
    assert 0 < result["rtf"] < math.inf  # a speed bound belongs in `bench`, not a unit test


def test_missing_file(capsys):
    assert "no such audio file" in _error_line(capsys, "/nonexistent/x.wav")


def test_not_a_wav(capsys, tmp_path: Path):
    bad = tmp_path / "notes.wav"
    bad.write_text("this is text, not audio\n")
    assert "not a readable audio file" in _error_line(capsys, str(bad))


def test_empty_audio(capsys, tmp_path: Path):
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.int16), 16000, subtype="PCM_16")
    assert "empty" in _error_line(capsys, str(empty))


def test_missing_checkpoint(capsys, tmp_path: Path):
    assert "checkpoint" in _error_line(capsys, "--model", str(tmp_path / "none.pt"))


def _text(capsys, path: Path) -> str:
    code, out, _ = _run(capsys, str(path))
    assert code == 0
    return out.strip()


def test_stereo_8bit_and_8khz_give_the_mono_result(capsys, tmp_path: Path):
    x, sr = _speech()
    reference = _text(capsys, DEFAULT_RECORDING)
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([x, x], axis=1), sr, subtype="PCM_16")
    assert _text(capsys, stereo) == reference
    u8 = tmp_path / "u8.wav"
    sf.write(u8, x, sr, subtype="PCM_U8")
    assert jiwer.wer(reference, _text(capsys, u8)) <= 0.2



def test_other_sample_rates_are_resampled_like_soxr_would(capsys, tmp_path: Path):
    import soxr

    x, sr = _speech()
    narrow = soxr.resample(x, sr, 8000)  # the model never heard narrowband audio: only the
    a, b = tmp_path / "8k.wav", tmp_path / "up.wav"  # path is checked, not the accuracy
    sf.write(a, narrow, 8000, subtype="FLOAT")
    sf.write(b, soxr.resample(narrow, 8000, 16000, quality="HQ"), 16000, subtype="FLOAT")
    assert _text(capsys, a) == _text(capsys, b) != ""


def test_very_short_audio(capsys, tmp_path: Path):
    x, sr = _speech()
    short = tmp_path / "short.wav"
    sf.write(short, x[: sr // 10], sr, subtype="PCM_16")  # 0.1 s: shorter than one chunk
    code, out, _ = _run(capsys, str(short), "--json")
    assert code == 0 and json.loads(out)["audio_seconds"] == pytest.approx(0.1)


@pytest.mark.slow  # 10 minutes of audio through the torch step
@pytest.mark.xfail(strict=False, reason="issue 17: the shipped template model degrades on long "
                   "streams (its WER over 10 minutes exceeds the single utterance's); failed in "
                   "the lead's full run of 2026-12-02 after the test began measuring WER with jiwer")
def test_ten_minutes_of_audio_are_recognized_as_well_as_one_utterance(capsys, tmp_path: Path):
    x, sr = _speech()
    reference = (ASSETS_DIR / "sample.txt").read_text().strip()
    one = jiwer.wer(reference, _text(capsys, DEFAULT_RECORDING))
    # 10 minutes (MAX_SECONDS): whole repetitions of the recording with 1 s of silence between,
    # silence to the end; the reference is the sentence once per repetition
    piece = np.concatenate([x, np.zeros(sr, np.float32)])
    reps = 600 * sr // len(piece)
    audio = np.zeros(600 * sr, np.float32)
    audio[: reps * len(piece)] = np.tile(piece, reps)
    long = tmp_path / "long.wav"
    sf.write(long, audio, sr, subtype="PCM_16")
    code, out, _ = _run(capsys, str(long), "--json")
    result = json.loads(out)
    assert code == 0 and result["audio_seconds"] == pytest.approx(600.0)
    wer = jiwer.wer(" ".join([reference] * reps), result["text"])
    assert wer <= one + 0.05, (wer, one, result["text"][:200])


@pytest.mark.slow  # compiles the shipped model for the host on first use (cached after)
def test_tvm_backend_as_make_demo_runs_it(capsys):
    """`make demo` is `transcribe --backend tvm --json`: the compiled step gives the text the
    PyTorch step gives, and the recording's transcript."""
    code, out, _ = _run(capsys, "--backend", "tvm", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["backend"] == "tvm" and result["chunks"] > 0
    assert result["text"] == _text(capsys, DEFAULT_RECORDING)  # the torch backend's
    expected = (ASSETS_DIR / "sample.txt").read_text().strip()
    assert jiwer.cer(expected, result["text"]) <= 0.1, result["text"]

"""`evaluate`, `make-data` and `study-fp16` run end to end on tiny inputs, their numbers checked
against an independent computation (jiwer on the transcripts, the manifests, the files)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jiwer
import pytest
import soundfile as sf

from tvm_conformer.cli import main
from tvm_conformer.paths import ASSETS_DIR

TEST_UTTS = ASSETS_DIR / "test_utts"


def _dataset(tmp_path: Path, n: int, split: str = "test") -> Path:
    """A `make-data` layout holding the first `n` shipped test utterances as `split`."""
    rows = [json.loads(line) for line in (TEST_UTTS / "manifest.jsonl").read_text().splitlines()][:n]
    d = tmp_path / "data"
    (d / split).mkdir(parents=True)
    for row in rows:
        shutil.copy(TEST_UTTS / row["path"], d / row["path"])
    (d / split / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


@pytest.mark.slow  # streams three recordings through the shipped model, then once more each
def test_evaluate_reports_the_wer_jiwer_gives_for_the_transcripts(capsys, tmp_path: Path):
    data = _dataset(tmp_path, 3)
    out = tmp_path / "wer.json"
    assert main(["evaluate", "--data", str(data), "--split", "test", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    [result] = json.loads(out.read_text())
    rows = [json.loads(line) for line in (data / "test" / "manifest.jsonl").read_text().splitlines()]
    assert result["utterances"] == 3 and result["references"] == [r["text"] for r in rows]
    # the hypotheses are what `transcribe` prints for each file, and the WER is jiwer's on them
    hyps = []
    for row in rows:
        assert main(["transcribe", str(data / row["path"])]) == 0
        hyps.append(capsys.readouterr().out.strip())
    assert result["hypotheses"] == hyps
    assert result["wer"] == pytest.approx(jiwer.wer([r["text"] for r in rows], hyps), abs=1e-12)
    assert f"WER {100 * result['wer']:6.2f}%" in printed and "(3 utts" in printed
    assert result["wer"] < 0.5  # the shipped model recognizes its own test voices


def test_evaluate_without_a_dataset_is_one_line(capsys, tmp_path: Path):
    code = main(["evaluate", "--data", str(tmp_path / "none"), "--split", "test"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "make-data" in err


def test_make_data_builds_a_tiny_corpus(capsys, tmp_path: Path):
    out = tmp_path / "corpus"
    assert main(["make-data", "--out", str(out), "--train", "2", "--valid", "1", "--test", "1",
                 "--workers", "1"]) == 0
    printed = dict(line.split(": ") for line in capsys.readouterr().out.strip().splitlines())
    for split, n in (("train", 2), ("valid", 1), ("test", 1), ("test_heldout_voices", 1)):
        rows = [json.loads(line) for line in (out / split / "manifest.jsonl").read_text().splitlines()]
        assert len(rows) == n
        seconds = 0.0
        for row in rows:
            info = sf.info(out / row["path"])
            assert info.samplerate == 16000 and row["text"]
            seconds += info.frames / info.samplerate
        assert printed[split] == f"{seconds / 3600:.2f} h"


@pytest.mark.slow  # three host builds (fp32, fp16 with and without the numerics passes)
def test_study_fp16_runs_on_a_tiny_model_and_two_recordings(capsys, tmp_path: Path, tiny_checkpoint: Path):
    data = _dataset(tmp_path, 2)
    out = tmp_path / "study"
    assert main(["study-fp16", "--model", str(tiny_checkpoint), "--data", str(data),
                 "--gains=0,90", "--out", str(out)]) == 0
    result = json.loads(next(out.glob("*.json")).read_text())
    assert result["utterances"] == 2 and [g["gain_db"] for g in result["gains"]] == [0, 90]
    audio = sum(sf.info(p).duration for p in data.glob("*.flac"))
    assert result["audio_seconds"] == pytest.approx(audio, abs=0.1)
    builds = result["gains"][0]["builds"]
    reference = result["reference"]
    assert set(builds) == set(result["configs"]) and reference in builds
    assert builds[reference]["nonfinite_fraction"] == 0 and builds[reference]["chunks"] > 0
    for name, b in builds.items():
        assert b["chunks"] == builds[reference]["chunks"]  # every build streams the same chunks
        if name != reference:  # fp16 vs fp32 at 0 dB: finite and close
            assert b["nonfinite_fraction"] == 0 and b["max_abs_err"] < 0.5
            assert 0 <= b["token_change_fraction"] <= 1
    assert result["gains"][1]["clipped_fraction"] > 0.5  # +90 dB clips nearly every sample
    assert any(out.glob("*.png")) and any(out.glob("*.md"))

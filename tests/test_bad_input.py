"""Hostile and broken input reaches the user as one line naming the problem and the fix.

Each case here once ended in a traceback from deep inside soundfile, torch, kaldi-native-fbank
or TVM (or, worse, was accepted). The CLI prints a `UserError` as `error: ...` and exits 2.
"""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tvm_conformer.audio.wav import MAX_SECONDS, load_audio
from tvm_conformer.cli import main
from tvm_conformer.compiler.artifact import load_weights
from tvm_conformer.errors import UserError
from tvm_conformer.model import load_checkpoint
from tvm_conformer.paths import DEFAULT_RECORDING, TARGETS_DIR, TUNING_LOGS_DIR
from tvm_conformer.targets import list_targets, load_target, registry


def _one_error_line(capsys, argv: list[str]) -> str:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# --- audio --------------------------------------------------------------------------------

def test_nan_samples_are_refused_in_one_line(capsys, tmp_path: Path) -> None:
    x, sr = sf.read(DEFAULT_RECORDING, dtype="float32")
    x[1000:1100] = np.nan
    bad = tmp_path / "nan.wav"
    sf.write(bad, x, sr, subtype="FLOAT")
    line = _one_error_line(capsys, ["transcribe", str(bad)])
    assert "nan.wav" in line and "NaN" in line


def _forge_flac_length(src: Path, dst: Path, frames: int) -> None:
    """Copies a FLAC file, rewriting STREAMINFO's 36-bit total-samples field to `frames`."""
    b = bytearray(src.read_bytes())
    assert b[:4] == b"fLaC" and b[4] & 0x7F == 0  # the first metadata block is STREAMINFO
    # STREAMINFO starts at byte 8; bytes 18..25 hold rate(20) channels(3) bits(5) samples(36)
    word = int.from_bytes(b[18:26], "big")
    word = (word & ~((1 << 36) - 1)) | frames
    b[18:26] = word.to_bytes(8, "big")
    dst.write_bytes(b)


def test_forged_flac_header_declaring_hours_is_refused_before_allocating(capsys, tmp_path: Path) -> None:
    x, sr = sf.read(DEFAULT_RECORDING, dtype="float32")
    ok = tmp_path / "ok.flac"
    sf.write(ok, x, sr, subtype="PCM_16")
    forged = tmp_path / "forged.flac"
    _forge_flac_length(ok, forged, 5 * 3600 * sr)  # a 5-hour declaration in a small file
    assert sf.info(forged).frames == 5 * 3600 * sr and forged.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(UserError, match="declares 18000 s"):
            load_audio(forged)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak / 2**20:.0f} MiB allocated for a refused file"
    line = _one_error_line(capsys, ["transcribe", str(forged)])
    assert f"{MAX_SECONDS}" in line and "split" in line


def test_audio_of_exactly_max_seconds_still_loads(tmp_path: Path) -> None:
    sr = 8000
    path = tmp_path / "long.flac"
    sf.write(path, np.zeros(MAX_SECONDS * sr, np.int16), sr, subtype="PCM_16")
    samples, got_sr = load_audio(path)
    assert got_sr == sr and len(samples) == MAX_SECONDS * sr


def test_forged_wav_data_size_reads_only_what_is_there(tmp_path: Path) -> None:
    import struct

    x = np.zeros(16000, np.float32)
    path = tmp_path / "forged.wav"
    sf.write(path, x, 16000, subtype="PCM_16")
    b = bytearray(path.read_bytes())
    i = b.find(b"data")
    b[i + 4 : i + 8] = struct.pack("<I", 0xFFFFFFF0)  # a data chunk of 4 GiB
    path.write_bytes(b)
    samples, _ = load_audio(path)  # libsndfile clamps the chunk to the file
    assert len(samples) == len(x)


@pytest.mark.slow  # minutes on a loaded 2-core machine (make test-fast: --durations)
def test_one_bad_file_among_several_is_reported_and_the_rest_transcribed(capsys, tmp_path: Path) -> None:
    x, sr = sf.read(DEFAULT_RECORDING, dtype="float32")
    good = tmp_path / "good.wav"
    sf.write(good, x[: 3 * sr], sr, subtype="PCM_16")  # 3 s of speech
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    code = main(["transcribe", str(good), str(bad), str(good)])
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in err
    lines = out.strip().splitlines()
    assert len(lines) == 2 and all(ln.startswith(f"{good}\t") for ln in lines)
    assert lines[0] == lines[1] and len(lines[0].split("\t")[1]) > 5
    errors = err.strip().splitlines()
    assert errors[0].startswith("error: ") and "bad.wav" in errors[0]
    assert errors[-1] == "error: 1 of 3 files failed"


# --- checkpoints and threads ---------------------------------------------------------------

def test_negative_threads_is_one_line(capsys) -> None:
    for backend in ("torch", "tvm"):
        line = _one_error_line(capsys, ["transcribe", "--backend", backend, "--threads", "-1"])
        assert "--threads" in line and ">= 1" in line


def test_checkpoint_whose_state_dict_does_not_load(tmp_path: Path, tiny_checkpoint: Path) -> None:
    blob = torch.load(tiny_checkpoint, weights_only=True)
    missing = dict(blob, state_dict={k: v for i, (k, v) in enumerate(blob["state_dict"].items()) if i})
    reshaped = dict(blob, state_dict={k: v[..., :1] if v.ndim else v
                                      for k, v in blob["state_dict"].items()})
    for name, forged in (("missing", missing), ("reshaped", reshaped)):
        path = tmp_path / f"{name}.pt"
        torch.save(forged, path)
        with pytest.raises(UserError, match=r"weights do not match its config") as info:
            load_checkpoint(path)
        assert len(str(info.value).splitlines()) == 1


@pytest.mark.parametrize("field, value", [
    ("chunk_size", 0), ("chunk_size", -4), ("num_left_chunks", -1), ("n_heads", 0),
    ("d_model", 0), ("n_layers", 0), ("vocab_size", 1), ("dropout", 1.5), ("chunk_size", "16"),
    ("chunk_size", True), ("decoder_layers", -1),
])
def test_checkpoint_config_out_of_range(capsys, tmp_path: Path, tiny_checkpoint: Path,
                                        field: str, value) -> None:  # noqa: ANN001
    blob = torch.load(tiny_checkpoint, weights_only=True)
    path = tmp_path / "bad.pt"
    torch.save(dict(blob, config=dict(blob["config"], **{field: value})), path)
    line = _one_error_line(capsys, ["transcribe", "--model", str(path)])
    assert field in line and "bad.pt" in line


# --- target files -------------------------------------------------------------------------

@pytest.fixture
def targets_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of targets/ that the CLI and the registry read instead of the shipped one."""
    d = tmp_path / "targets"
    shutil.copytree(TARGETS_DIR, d)
    monkeypatch.setattr(registry, "TARGETS_DIR", d)
    return d


def test_non_utf8_target_file_is_one_line(targets_dir: Path) -> None:
    bad = targets_dir / "latin1.toml"
    bad.write_bytes((TARGETS_DIR / "host.toml").read_bytes().replace(b"host", b"latin1")
                    + "# caf\u00e9\n".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8") as info:
        load_target(str(bad))
    assert "latin1.toml" in str(info.value)


def test_one_bad_target_file_does_not_break_the_listing(capsys, targets_dir: Path) -> None:
    (targets_dir / "broken.toml").write_bytes(b"\xff\xfe not toml at all")
    good = {p.stem for p in TARGETS_DIR.glob("*.toml")}
    errors: list[str] = []
    assert {t.name for t in list_targets(errors=errors)} == good
    assert len(errors) == 1 and "broken.toml" in errors[0]
    code = main(["targets"])
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in err
    assert all(name in out for name in good)
    assert err.strip().count("\n") == 0 and "broken.toml" in err
    # the unknown-target message still lists the good devices, and names the bad file
    with pytest.raises(UserError) as info:
        load_target("no-such-device")
    msg = str(info.value)
    assert "host" in msg and "rpi4" in msg and "broken.toml" in msg


@pytest.mark.parametrize("line", [
    "threads = 100000000000000000000", "threads = 100000", "clock_ghz = nan", "clock_ghz = inf",
    "clock_ghz = 1e300", "mem_bandwidth_gbs = nan", "fp16_rate = -inf", "simd_bits = 100",
    "cores = 0", "fma_units = 4096",
])
def test_non_finite_or_out_of_range_numbers_in_a_target_file(targets_dir: Path, line: str) -> None:
    key = line.split()[0]
    text = [ln for ln in (TARGETS_DIR / "rpi4.toml").read_text().splitlines()
            if not ln.startswith(f"{key} ") and not ln.startswith(f"{key}=")]
    text.insert(0, line)  # top-level keys come before any table
    (targets_dir / "rpi4.toml").write_text("\n".join(text) + "\n")
    with pytest.raises(UserError, match=key) as info:
        load_target("rpi4")
    assert "rpi4.toml" in str(info.value)


# --- weights and databases ----------------------------------------------------------------

def test_weights_file_with_object_arrays_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "weights.npz"
    np.savez(path, w0000=np.zeros(3, np.float32), w0001=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(UserError, match="weights.npz") as info:
        load_weights(path)
    assert "rebuild" in str(info.value)
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UserError, match="weights.npz"):
        load_weights(path)


def test_explicit_truncated_database_is_one_line(capsys, tmp_path: Path, tiny_checkpoint: Path) -> None:
    db = tmp_path / "db"
    db.mkdir()
    shutil.copy(TUNING_LOGS_DIR / "host" / "database_workload.json", db)
    records = (TUNING_LOGS_DIR / "host" / "database_tuning_record.json").read_text()
    (db / "database_tuning_record.json").write_text(records[: len(records) - 200])  # torn last line
    line = _one_error_line(capsys, ["compile", "--model", str(tiny_checkpoint), "--out",
                                    str(tmp_path / "art"), "--database", str(db)])
    assert "database_tuning_record.json" in line and "line" in line
    assert not (tmp_path / "art").exists()
    json.loads(records.splitlines()[0])  # the shipped database itself is intact

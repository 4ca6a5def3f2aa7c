"""Corpus text normalization, disjoint splits, espeak-ng voices and a tiny dataset build."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tvm_conformer.audio.features import N_MELS, SAMPLE_RATE
from tvm_conformer.data.corpus import (
    ALPHABET,
    clock_to_words,
    make_splits,
    normalize_text,
    number_to_words,
    ordinal_to_words,
)
from tvm_conformer.data.dataset import SPLITS, build_dataset, load_split
from tvm_conformer.data.synth import ACCENTS, HELD_OUT_VOICES, TRAIN_VOICES


def test_number_to_words() -> None:
    assert number_to_words(0) == "zero"
    assert number_to_words(13) == "thirteen"
    assert number_to_words(40) == "forty"
    assert number_to_words(99) == "ninety nine"
    assert number_to_words(105) == "one hundred five"
    assert number_to_words(2024) == "two thousand twenty four"
    assert number_to_words(9999) == "nine thousand nine hundred ninety nine"
    with pytest.raises(ValueError):
        number_to_words(10000)
    assert [ordinal_to_words(n) for n in (1, 2, 3, 12, 20, 21, 28)] == [
        "first", "second", "third", "twelfth", "twentieth", "twenty first", "twenty eighth",
    ]  # fmt: skip


def test_clock_to_words() -> None:
    assert clock_to_words(7, 30, "am") == "seven thirty a m"
    assert clock_to_words(7, 30) == "seven thirty"
    assert clock_to_words(7, 5) == "seven oh five"
    assert clock_to_words(6, 0) == "six o'clock"
    assert clock_to_words(6, 0, "pm") == "six p m"
    assert clock_to_words(19, 45) == "seven forty five p m"
    assert clock_to_words(0, 10) == "twelve ten a m"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Set an alarm for 7:30am!", "set an alarm for seven thirty a m"),
        ("Wake me at 6 P.M., please.", "wake me at six p m please"),
        ("It's 19:05", "it's seven oh five p m"),
        ("Set it to 72°", "set it to seventy two degrees"),
        ("Dim to 50%", "dim to fifty percent"),
        ("on the 21st of May", "on the twenty first of may"),
        ("Call Zoë\u2019s phone", "call zoe's phone"),
        ("'Rock & Roll'  playlist", "rock and roll playlist"),
        ("code 12345", "code one two three four five"),
        ("  Hello,\tWORLD  ", "hello world"),
    ],
)
def test_normalize_text(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


def test_splits_are_disjoint_normalized_and_seeded() -> None:
    splits = make_splits(0, 2000, 100, 100)
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [2000, 100, 100]
    train, valid, test = (set(splits[s]) for s in ("train", "valid", "test"))
    assert len(train) == 2000 and not train & test and not train & valid and not valid & test
    assert all(set(s) <= set(ALPHABET) and s == normalize_text(s) for s in train | valid | test)
    assert make_splits(0, 2000, 100, 100) == splits
    assert make_splits(0, 50, 100, 100)["test"] == splits["test"]  # test set independent of n_train
    assert make_splits(1, 50, 100, 100)["test"] != splits["test"]


def test_voices_exist() -> None:
    assert not set(TRAIN_VOICES) & set(HELD_OUT_VOICES)
    listing = subprocess.run(["espeak-ng", "--voices=en"], capture_output=True, text=True).stdout
    languages = {line.split()[1] for line in listing.splitlines()[1:]}
    data_dir = re.search(r"Data at: (\S+)", subprocess.run(
        ["espeak-ng", "--version"], capture_output=True, text=True).stdout)[1]  # fmt: skip
    for voice in TRAIN_VOICES + HELD_OUT_VOICES:
        accent, _, variant = voice.partition("+")
        assert accent in ACCENTS and accent in languages
        assert not variant or (Path(data_dir) / "voices" / "!v" / variant).is_file(), voice


def test_tiny_build_is_consistent_and_deterministic(tmp_path: Path) -> None:
    hours = build_dataset(tmp_path / "a", 6, 2, 2, seed=0, workers=2, progress=False)
    assert set(hours) == set(SPLITS)
    for split, n in zip(SPLITS, (6, 2, 2, 2), strict=True):
        rows = [json.loads(line) for line in (tmp_path / "a" / split / "manifest.jsonl").open()]
        utts = load_split(tmp_path / "a", split)
        assert len(rows) == len(utts) == n
        for row, (feats, text, utt_id) in zip(rows, utts, strict=True):
            audio, sr = sf.read(tmp_path / "a" / row["path"], dtype="float32")
            assert sr == SAMPLE_RATE and 0.8 < row["seconds"] < 8.0
            assert abs(audio.size / sr - row["seconds"]) < 1e-3
            assert feats.shape == (1 + (audio.size - 400) // 160, N_MELS)
            assert (text, utt_id) == (row["text"], row["id"])
            held_out = row["voice"] in HELD_OUT_VOICES
            assert held_out == (split == "test_heldout_voices")
    test_texts = [t for _, t, _ in load_split(tmp_path / "a", "test")]
    assert test_texts == [t for _, t, _ in load_split(tmp_path / "a", "test_heldout_voices")]
    # Same seed, one worker, fewer train utterances: identical shared utterances.
    build_dataset(tmp_path / "b", 3, 2, 2, seed=0, workers=1, progress=False)
    for split in SPLITS:
        a, b = load_split(tmp_path / "a", split), load_split(tmp_path / "b", split)
        for (fa, ta, ia), (fb, tb, ib) in zip(a, b, strict=False):
            assert (ta, ia) == (tb, ib) and np.array_equal(fa, fb)

"""`tvm-conformer export --format sherpa-onnx`: our shipped checkpoint in the contract, run by
sherpa-onnx unmodified (its recognizer configured with the features the metadata record)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tvm_conformer.audio.wav import load_audio
from tvm_conformer.paths import PACKAGE_DIR

ASSETS = PACKAGE_DIR / "assets"
RECORDINGS = [ASSETS / "sample.wav", *sorted((ASSETS / "test_utts").glob("*.flac"))[1:]]


@pytest.fixture(scope="module")
def exported(shipped_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tvm_conformer.cli import main

    out = tmp_path_factory.mktemp("sherpa-export")
    assert main(["export", "--format", "sherpa-onnx", "-o", str(out), "--model",
                 str(shipped_checkpoint)]) == 0
    return out


def test_export_writes_the_contract_with_our_feature_options(exported: Path) -> None:
    from tvm_conformer.frontend.contract import SHERPA_FEATURES, read_contract
    from tvm_conformer.frontend.contract_export import model_fbank
    from tvm_conformer.model import load_checkpoint
    from tvm_conformer.paths import DEFAULT_CHECKPOINT

    spec = read_contract(exported / "model.onnx")  # tokens.txt beside it
    assert (spec.chunk_frames, spec.cache, spec.vocab_size, spec.blank_id) == (67, 64, 29, 0)
    fbank = model_fbank(load_checkpoint(DEFAULT_CHECKPOINT)[0])
    for k, v in fbank.items():
        assert spec.features[k] == v
    if any(fbank[k] != SHERPA_FEATURES[k] for k in fbank):
        assert "differ from sherpa-onnx's defaults" in spec.metadata["fbank_note"]


def test_sherpa_onnx_transcribes_the_export_as_tvm_conformer_does(exported: Path) -> None:
    """sherpa-onnx's own recognizer == `transcribe --backend onnx --model model.onnx` (the
    same loop in our code), text and tokens; and == our checkpoint's own streaming loop up to
    the end, where sherpa-onnx's 0.66 s of digital silence may add a letter or two (the
    checkpoint's loop masks its zero-padded last chunk instead)."""
    from tvm_conformer.bench.sherpa import decode, recognizer_for
    from tvm_conformer.runtime.contract import transcribe_with_sherpa_loop
    from tvm_conformer.runtime.load import make_backend, make_recognizer
    from tvm_conformer.runtime.recognizer import transcribe_samples

    sherpa = recognizer_for(exported / "model.onnx")
    contract = make_recognizer(make_backend("onnx", exported / "model.onnx"))
    ours = make_recognizer(make_backend("torch"))
    same_as_checkpoint = 0
    for audio in RECORDINGS:
        samples, sr = load_audio(audio)
        ref = decode(sherpa, samples, sr)
        s = transcribe_with_sherpa_loop(contract, samples)
        assert contract.get_result(s) == ref.text, audio.name
        assert [contract.spec.tokens[t].replace("▁", " ") for t in s.tokens] == ref.tokens
        own = transcribe_samples(ours, samples, sr).text
        assert ref.text.startswith(own.strip()), (audio.name, ref.text, own)
        same_as_checkpoint += ref.text == own.strip()
    assert same_as_checkpoint >= len(RECORDINGS) // 2


@pytest.mark.slow
def test_the_compiled_export_transcribes_as_sherpa_onnx(exported: Path, tmp_path: Path, capsys) -> None:
    from tvm_conformer.bench.sherpa import decode, recognizer_for
    from tvm_conformer.cli import main

    art = tmp_path / "art"
    assert main(["compile", "--model", str(exported / "model.onnx"), "--target", "host",
                 "-o", str(art)]) == 0
    capsys.readouterr()
    files = RECORDINGS[:4]
    assert main(["transcribe", *map(str, files), "--backend", "tvm", "--artifact", str(art)]) == 0
    got = [line.split("\t", 1)[1] for line in capsys.readouterr().out.strip().splitlines()]
    sherpa = recognizer_for(exported / "model.onnx")
    assert got == [decode(sherpa, *load_audio(f)).text for f in files]

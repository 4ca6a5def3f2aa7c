"""The WeNet / sherpa-onnx streaming-CTC ONNX contract: models none of our code wrote
(tests/contract_models.py), checked against sherpa-onnx itself and ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import contract_models as cm
import numpy as np
import pytest
import soundfile as sf
import torch

from tvm_conformer.paths import PACKAGE_DIR

ASSETS = PACKAGE_DIR / "assets"
# sample.wav is test-000000 of the test set: two more recordings, one a held-out voice
RECORDINGS = [ASSETS / "sample.wav", *sorted((ASSETS / "test_utts").glob("test-*.flac"))[1:2],
              *sorted((ASSETS / "test_utts").glob("test_heldout_voices-*.flac"))[:1]]


@pytest.fixture(scope="session")
def contract_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("contract")
    return {s.name: cm.write(s, root / s.name) for s in cm.SPECS}


def sherpa_decode(model: Path, tokens: Path, spec: cm.Spec, audio: Path):  # noqa: ANN201
    """sherpa-onnx's own streaming recognizer, fed as its examples do (0.66 s of silence):
    its text and its full result (tokens, timestamps)."""
    import sherpa_onnx

    rec = sherpa_onnx.OnlineRecognizer.from_wenet_ctc(
        tokens=str(tokens), model=str(model), chunk_size=spec.chunk,
        num_left_chunks=spec.left_chunks, num_threads=1)
    samples, sr = sf.read(str(audio), dtype="float32")
    s = rec.create_stream()
    s.accept_waveform(sr, samples)
    s.accept_waveform(sr, np.zeros(int(0.66 * sr), np.float32))
    s.input_finished()
    while rec.is_ready(s):
        rec.decode_stream(s)
    return rec.get_result(s), rec.get_result_all(s)


@pytest.mark.parametrize("spec", cm.SPECS, ids=lambda s: s.name)
def test_exporter_writes_what_the_torch_module_computes(spec: cm.Spec, contract_files) -> None:
    """The test-only exporter itself: ONNX Runtime on the file == the torch module, 3 chunks."""
    import onnxruntime as ort

    model = cm.ContractModel(spec)
    sess = ort.InferenceSession(str(contract_files[spec.name][0]), providers=["CPUExecutionProvider"])
    x, off, rcs, att, conv, mask = model.example_inputs()
    for i in range(3):
        x = torch.randn_like(x)
        mask[:, :, spec.cache - (i + 1) * spec.chunk :] = True
        with torch.no_grad():
            ref = model(x, off, rcs, att, conv, mask)
        got = sess.run(None, dict(zip(cm.INPUTS, [t.numpy() for t in (x, off, rcs, att, conv, mask)], strict=True)))
        for r, g in zip(ref, got, strict=True):
            np.testing.assert_allclose(g, r.numpy(), atol=1e-4, rtol=1e-4)
        off, att, conv = off + spec.chunk, ref[1], ref[2]


@pytest.mark.parametrize("spec", cm.SPECS, ids=lambda s: s.name)
def test_sherpa_onnx_loads_and_decodes_them(spec: cm.Spec, contract_files) -> None:
    model, tokens = contract_files[spec.name]
    text, res = sherpa_decode(model, tokens, spec, RECORDINGS[0])
    assert list(res.tokens), "random weights still emit tokens (the CTC layer is scaled up)"
    assert text


# --- import: malformed files get one line each ------------------------------------------------

def _variant(src: tuple[Path, Path], out: Path, edit) -> tuple[Path, Path]:  # noqa: ANN001
    import onnx

    out.mkdir(parents=True, exist_ok=True)
    m = onnx.load(str(src[0]))
    tokens = src[1].read_text()
    tokens = edit(m, tokens) or tokens
    onnx.save(m, str(out / "model.onnx"))
    (out / "tokens.txt").write_text(tokens)
    return out / "model.onnx", out / "tokens.txt"


def _drop_meta(m, _t):  # noqa: ANN001, ANN202
    keep = [p for p in m.metadata_props if p.key != "vocab_size"]
    del m.metadata_props[:]
    m.metadata_props.extend(keep)


def _five_inputs(m, _t):  # noqa: ANN001, ANN202 - required_cache_size baked in as a constant
    from onnx import numpy_helper

    rcs = next(i for i in m.graph.input if i.name == "required_cache_size")
    m.graph.input.remove(rcs)
    m.graph.initializer.append(numpy_helper.from_array(np.array([64], np.int64), rcs.name))


def _cache_rank3(m, _t):  # noqa: ANN001, ANN202
    att = next(i for i in m.graph.input if i.name == "attn_cache")
    del att.type.tensor_type.shape.dim[0]


def _tokens_short(_m, t):  # noqa: ANN001, ANN202
    return "".join(t.splitlines(keepends=True)[:-1])


def _dynamic_d(m, _t):  # noqa: ANN001, ANN202
    conv = next(i for i in m.graph.input if i.name == "conv_cache")
    conv.type.tensor_type.shape.dim[2].dim_param = "D"


MALFORMED = {
    "missing-metadata": (_drop_meta, "metadata key 'vocab_size' is missing"),
    "five-inputs": (_five_inputs, "has 5 inputs"),
    "cache-rank": (_cache_rank3, "input 3 ('attn_cache', the contract's attn_cache) has rank 3"),
    "tokens-size": (_tokens_short, "has 28 tokens, the model's vocab_size is 29"),
    "dynamic-dim": (_dynamic_d, "input 4 ('conv_cache', the contract's conv_cache) dim 2 is dynamic"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_contract_files_get_one_line_each(case: str, contract_files, tmp_path: Path) -> None:
    from tvm_conformer.errors import UserError
    from tvm_conformer.frontend.contract import read_contract

    edit, expected = MALFORMED[case]
    model, tokens = _variant(contract_files["small"], tmp_path / case, edit)
    with pytest.raises(UserError) as exc:
        read_contract(model, tokens)
    lines = str(exc.value).splitlines()
    assert len(lines) == 1, lines
    assert expected in lines[0], lines[0]


def test_a_well_formed_file_reads_as_its_metadata_say(contract_files) -> None:
    from tvm_conformer.frontend.contract import read_contract

    spec = cm.SPECS[1]
    c = read_contract(*contract_files[spec.name])  # sherpa-onnx's dynamic axes: N, T, cache
    assert (c.head, c.num_blocks, c.output_size, c.cnn_module_kernel, c.vocab_size) == (
        spec.heads, spec.blocks, spec.d, spec.kernel, spec.vocab)
    assert (c.chunk_frames, c.cache, c.chunk_shift, c.blank_id) == (67, 64, 64, 0)
    assert c.input_shapes()["attn_cache"] == (3, 2, 64, 96)


def test_the_cli_prints_the_problem_on_one_line(contract_files, tmp_path: Path, capsys) -> None:
    from tvm_conformer.cli import main

    model, _ = _variant(contract_files["small"], tmp_path / "m", _drop_meta)
    assert main(["compile", "--model", str(model), "--target", "host", "-o", str(tmp_path / "a")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "vocab_size" in err[0] and "Traceback" not in err[0], err
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())


# --- compiled: TVM == ONNX Runtime per chunk, text == sherpa-onnx's ----------------------------

@pytest.fixture(scope="session")
def contract_artifacts(contract_files, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tvm_conformer.compiler.compile import compile_artifact

    root = tmp_path_factory.mktemp("contract-art")
    arts = {}
    for name, (model, tokens) in contract_files.items():
        compile_artifact(root / name, "host", model, tokens=tokens, quiet=True)
        arts[name] = root / name
    return arts


def _stream(backend, audio: Path):  # noqa: ANN001, ANN202
    from tvm_conformer.audio.wav import load_audio
    from tvm_conformer.runtime.contract import ContractRecognizer, transcribe_with_sherpa_loop

    rec = ContractRecognizer(backend)
    samples, sr = load_audio(audio)
    assert sr == rec.spec.features["sample_rate"]
    return rec, transcribe_with_sherpa_loop(rec, samples)


@pytest.mark.slow
@pytest.mark.parametrize("spec", cm.SPECS, ids=lambda s: s.name)
def test_tvm_equals_onnx_runtime_per_chunk_and_sherpa_onnx_text(
    spec: cm.Spec, contract_files, contract_artifacts
) -> None:
    from tvm_conformer.frontend.contract import read_contract
    from tvm_conformer.runtime.contract import OnnxContractBackend
    from tvm_conformer.runtime.tvm_backend import TVMBackend

    model, tokens = contract_files[spec.name]
    tvm_backend = TVMBackend.load(contract_artifacts[spec.name], expect_model=model)
    ort_backend = OnnxContractBackend(read_contract(model, tokens))
    for audio in RECORDINGS:
        rec, s_tvm = _stream(tvm_backend, audio)
        _, s_ort = _stream(ort_backend, audio)
        assert len(s_tvm.log_probs) == len(s_ort.log_probs) > 3
        for i, (a, b) in enumerate(zip(s_tvm.log_probs, s_ort.log_probs, strict=True)):
            assert a.shape == (spec.chunk, spec.vocab)
            np.testing.assert_allclose(a, b, atol=1e-4, rtol=0, err_msg=f"{audio.name} chunk {i}")
        assert s_tvm.frames == s_ort.frames  # greedy picks, frame by frame
        text, sherpa = sherpa_decode(model, tokens, spec, audio)
        assert rec.get_result(s_tvm) == text
        # sherpa-onnx's token strings: a leading "▁" is a space
        assert [rec.spec.tokens[t].replace("▁", " ", 1) if rec.spec.tokens[t].startswith("▁")
                else rec.spec.tokens[t] for t in s_tvm.tokens] == list(sherpa.tokens)
        # sherpa-onnx's timestamps: the output frame of each token, 40 ms apart
        np.testing.assert_allclose(np.array(s_tvm.token_frames) * 0.04, sherpa.timestamps, atol=1e-4)


@pytest.mark.slow
def test_transcribe_cli_prints_what_sherpa_onnx_prints(contract_files, contract_artifacts, capsys) -> None:
    """`transcribe --backend tvm --artifact` and `--backend onnx --model`: sherpa-onnx's text."""
    from tvm_conformer.cli import main

    spec = cm.SPECS[1]  # word pieces, positions from offset
    model, tokens = contract_files[spec.name]
    files = [str(a) for a in RECORDINGS]
    expected = [sherpa_decode(model, tokens, spec, a)[0] for a in RECORDINGS]
    assert len(set(expected)) == len(expected), "different recordings, different junk"
    for args in (["--backend", "tvm", "--artifact", str(contract_artifacts[spec.name])],
                 ["--backend", "onnx", "--model", str(model)]):
        assert main(["transcribe", *files, *args]) == 0
        out = capsys.readouterr().out.strip().splitlines()
        assert [line.split("\t", 1)[1] for line in out] == expected


@pytest.mark.slow
def test_compile_check_and_estimate_work_on_a_contract_artifact(contract_artifacts, capsys) -> None:
    from tvm_conformer.cli import main
    from tvm_conformer.verify.checks import check_artifact

    art = contract_artifacts["even-kernel-bpe"]
    checks = check_artifact(art)
    assert checks and all(c.ok is not False for c in checks), checks
    assert main(["estimate", "--artifact", str(art)]) == 0
    assert "RTF >=" in capsys.readouterr().out


def test_an_int8_contract_file_imports_with_int8_weights_separate(contract_files, tmp_path: Path) -> None:
    """What sherpa-onnx ships as model.int8.onnx (ORT dynamic quantization: MatMulInteger)
    passes the import: int8 weights stay `main` parameters, shapes static (compiling it fast
    is the int8 work's business)."""
    import shutil

    from onnxruntime.quantization import QuantType, quantize_dynamic

    from tvm_conformer.frontend.contract import import_contract, read_contract

    model, tokens = contract_files["small"]
    quantize_dynamic(str(model), str(tmp_path / "model.onnx"), op_types_to_quantize=["MatMul"],
                     weight_type=QuantType.QInt8)
    shutil.copy(tokens, tmp_path / "tokens.txt")
    mod, weights = import_contract(read_contract(tmp_path / "model.onnx"))
    assert sum(str(w.dtype) == "int8" for w in weights) >= 2 * cm.SMALL.blocks
    assert "T.int64()" not in mod.script()  # no shape left to the input values


@pytest.mark.slow
def test_bench_on_a_contract_file_puts_sherpa_onnx_beside_tvm_end_to_end(
    contract_files, tmp_path: Path, capsys
) -> None:
    """`bench --model FILE.onnx`: sherpa-onnx's recognizer, ONNX Runtime and the host build of
    the same file, end to end on the same recordings, each giving sherpa-onnx's text."""
    import json

    from tvm_conformer.cli import main

    model, _ = contract_files["small"]
    out = tmp_path / "bench"
    argv = ["bench", "--model", str(model), "--suite", "quick", "--out", str(out),
            "--recordings", "2", "--rounds", "1", "--threads", "1", "--cache", str(tmp_path)]
    assert main(argv) == 0
    rows = json.loads((out / "results.json").read_text())["end_to_end"]
    assert [r["engine"] for r in rows] == ["sherpa-onnx", "onnxruntime, contract loop",
                                           "tvm-conformer, contract loop"]
    for r in rows:
        assert r["ok"] and r["recordings"] == 2 and r["rtf_median"] > 0, r
        assert len(r["texts"]) == 2 and r["same_text_as_sherpa"] == 2, r
    assert rows[0]["texts"][0] != rows[0]["texts"][1], "different recordings, different junk"
    assert "sherpa-onnx" in (out / "table.md").read_text()
    assert (out / "end_to_end.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["bench", "--model", str(model), "--suite", "full", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--suite versus" in err, err


@pytest.mark.slow
def test_tune_then_compile_applies_the_database_to_a_contract_model(contract_files, tmp_path: Path) -> None:
    """`tune --model FILE.onnx` writes a database for that file; `compile` applies it, and the
    build still computes what ONNX Runtime computes on the file."""
    from tvm_conformer.compiler.compile import compile_artifact
    from tvm_conformer.compiler.pipeline import PipelineOptions
    from tvm_conformer.frontend.contract import read_contract
    from tvm_conformer.runtime.contract import OnnxContractBackend
    from tvm_conformer.runtime.tvm_backend import TVMBackend
    from tvm_conformer.tune.tuner import tune

    model, tokens = contract_files["small"]
    spec = read_contract(model, tokens)
    db = tmp_path / "db"
    manifest = tune("host", model, tasks="depthwise", trials=4, log_dir=db, threads=1,
                    progress=False, seed=0)
    assert manifest["model"]["config_hash"] == spec.hash()
    records = sum(t["records"] for t in manifest["tasks"].values())
    assert records >= 1
    built = compile_artifact(tmp_path / "art", "host", model, tokens=tokens, quiet=True,
                             opts=PipelineOptions(threads=1, database=str(db)))
    assert built["database"]["path"] == str(db) and built["database"]["records"] == records
    tvm_be, ort_be = TVMBackend.load(tmp_path / "art"), OnnxContractBackend(spec)
    rng = np.random.default_rng(0)
    s_tvm, s_ort = tvm_be.initial_state(), ort_be.initial_state()
    mask = np.ones((1, 1, spec.cache + spec.chunk_size), bool)
    for _ in range(3):  # the caches and the offset carry over
        x = rng.standard_normal((1, spec.chunk_frames, 80)).astype(np.float32)
        a, s_tvm = tvm_be.step(s_tvm, x, mask)
        b, s_ort = ort_be.step(s_ort, x, mask)
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)

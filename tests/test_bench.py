"""The benchmark harness: the quick suite's results, the kernel profile's accounting."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from tvm_conformer.bench.harness import run_suite
from tvm_conformer.bench.suites import SUITES
from tvm_conformer.cli import main


@pytest.fixture(scope="module")
def quick_results(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    run_suite(SUITES["quick"], out / "results", tiny_checkpoint, cache=out / "cache")
    return out / "results"


def _strict(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


@pytest.mark.slow
def test_quick_suite_every_engine_agrees_with_pytorch(quick_results: Path) -> None:
    results = json.loads((quick_results / "results.json").read_text(), parse_constant=_strict)
    rows = results["stream"]
    assert [r["label"] for r in rows] == ["torch", "ort", "tvm-schedules"]
    for r in rows:
        assert r["status"] == "ok", r["error"]
        assert r["max_abs_logp_diff"] < 1e-4
        assert r["transcripts_identical"]
        # every chunk of every measured round was timed
        assert r["calls"] == results["workload"]["chunks"] * results["method"]["rounds"]
        assert r["peak_rss_mb"] > 0 and r["model_mb"] > 0


@pytest.mark.slow
def test_quick_suite_ratio_is_relative_to_onnx_runtime(quick_results: Path) -> None:
    rows = json.loads((quick_results / "results.json").read_text())["stream"]
    ort = next(r for r in rows if r["engine"] == "ort")
    assert ort["ratio_to_ort"] == 1.0
    for r in rows:
        assert r["ratio_to_ort"] == pytest.approx(r["median_ms"] / ort["median_ms"])
        assert r["median_ms"] == pytest.approx(float(np.median(r["latencies_ms"])), abs=1e-3)


@pytest.mark.slow
def test_quick_suite_writes_table_and_plot(quick_results: Path) -> None:
    table = (quick_results / "table.md").read_text()
    for label in ("torch", "ort", "tvm-schedules"):
        assert re.search(rf"^\| {re.escape(label)} \| 1 \|", table, re.M)
    assert (quick_results / "latency_stream.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_kernel_profile_sees_every_call_of_the_vm_bytecode(tiny_checkpoint: Path, tmp_path: Path) -> None:
    import tvm
    from tvm import relax

    from tvm_conformer.bench.kernel_profile import BUILTIN_PREFIX, profile_artifact
    from tvm_conformer.compiler.compile import compile_artifact
    from tvm_conformer.model import load_checkpoint

    compile_artifact(tmp_path / "art", "host", tiny_checkpoint, quiet=True, use_default_database=False)
    prof = profile_artifact(tmp_path / "art", threads=1, steps=3)
    text = relax.VMExecutable(tvm.runtime.load_module(str(tmp_path / "art" / "lib.so"))).as_text()
    # `main` has no control flow: its call instructions are the calls of one step
    called = re.findall(r"^\s*call\s+(\S+)\s+in:", text, re.M)
    kernels = [c for c in called if not c.startswith(BUILTIN_PREFIX)]
    assert prof.kernel_calls == len(kernels)
    assert {k.name for k in prof.kernels} == set(kernels)
    assert prof.builtin_calls == len(called) - len(kernels)
    cfg = load_checkpoint(tiny_checkpoint)[0].cfg
    log_softmax = next(k for k in prof.kernels if k.name == "fast_log_softmax")  # passes/fast_exp.py
    assert log_softmax.calls == 1
    assert log_softmax.bytes == 2 * cfg.chunk_size * cfg.vocab_size * 4  # fp32 in and out
    # a full-utterance artifact: one forward over its frames, profiled the same way
    from tvm_conformer.bench.utterance import build_utterance_artifact
    from tvm_conformer.compiler.pipeline import PipelineOptions

    model = load_checkpoint(tiny_checkpoint)[0]
    build_utterance_artifact(tmp_path / "utt", model, 64, PipelineOptions(threads=1))
    utt = profile_artifact(tmp_path / "utt", threads=1, steps=2)
    frames = next(k for k in utt.kernels if k.name == "fast_log_softmax")
    assert frames.bytes == 2 * ((64 - 3) // 4) * cfg.vocab_size * 4  # every output frame at once


@pytest.mark.slow  # minutes on a loaded 2-core machine (make test-fast: --durations)
def test_profile_cli_prints_components(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "--config", "conformer-m", "--mode", "step", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["config"], r["subsampling"]) for r in rows] == [("conformer-m", "vanilla"),
                                                               ("conformer-m", "dws")]
    vanilla, dws = rows
    assert dws["macs_per_second"]["subsampling"] < vanilla["macs_per_second"]["subsampling"]
    for r in rows:
        assert sum(r["share"].values()) == pytest.approx(1.0)


def test_bench_cli_rejects_a_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--suite", "quick", "--model", str(tmp_path / "nope.pt")]) == 2
    assert capsys.readouterr().err.startswith("error: model")


def test_a_build_refused_at_one_thread_count_is_tried_at_another(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tuning database fits the thread count it was tuned on only: the 1-thread refusal of
    the `tuned` build once stood in the 2-thread row too."""
    from tvm_conformer.bench.builds import Builder, Unavailable
    from tvm_conformer.bench.engines import EngineSpec
    from tvm_conformer.model import load_checkpoint

    def build(_self: Builder, spec: EngineSpec) -> dict[str, str]:
        if spec.threads != 2:
            raise Unavailable(f"tuned on 2 threads, this build runs on {spec.threads}")
        return {"artifact": "built"}

    monkeypatch.setattr(Builder, "_build", build)
    builder = Builder(tmp_path, tiny_checkpoint, load_checkpoint(tiny_checkpoint)[0])
    with pytest.raises(Unavailable, match="runs on 1"):
        builder.files(EngineSpec("tvm", tvm="tuned", threads=1))
    assert builder.files(EngineSpec("tvm", tvm="tuned", threads=2)) == {"artifact": "built"}
    with pytest.raises(Unavailable, match="runs on 1"):  # remembered, not built again
        builder.files(EngineSpec("tvm", tvm="tuned", threads=1))


def test_tuned_builds_take_the_database_compile_applies() -> None:
    """`tvm-tuned` is built with the database `compile --model M` applies by default: the
    model's own (`tune --model M` wrote tuning_logs/host-<config hash>/, here the WeNet-size
    preset's), else the shipped host database; one tuned for another thread count is refused
    with the reason."""
    from tvm_conformer.bench.builds import Unavailable, pipeline_options
    from tvm_conformer.bench.engines import EngineSpec
    from tvm_conformer.compiler.database import read_manifest
    from tvm_conformer.paths import TUNING_LOGS_DIR

    shipped = read_manifest(TUNING_LOGS_DIR / "host")["model"]["config_hash"]
    wenet = "9f269ab8c25d139e"  # bench --model wenet-u2pp (seeded random weights)
    assert read_manifest(TUNING_LOGS_DIR / f"host-{wenet}") is not None
    tuned = EngineSpec("tvm", threads=2, tvm="tuned")
    assert Path(pipeline_options(tuned, wenet).database).name == f"host-{wenet}"
    assert Path(pipeline_options(tuned, shipped).database).name == "host"
    with pytest.raises(Unavailable, match="tuned on 2 threads"):
        pipeline_options(EngineSpec("tvm", threads=1, tvm="tuned"), wenet)

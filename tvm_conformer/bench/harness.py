"""The host benchmark: every engine on the same chunks, interleaved, verified against PyTorch.

Method (docs/BENCHMARKS.md says why):
- Each engine runs in its own worker process that imports only its runtime; all workers of one
  group (same mode and thread count) are alive at once and are driven in turn, one round each
  (A B C, B C A, ...), so slow drifts of the machine hit every engine alike (`measure.py`).
- A round is one pass over every recording's chunk sequence, caches carried, reset per
  recording. One warm-up round is not counted; its first call is the cold first-call latency.
- Every engine's outputs are compared with PyTorch eager computed here, in this process
  (`stats.py`).
- Compiled engines are built once into a cache directory keyed by everything they depend on
  (`builds.py`).

This module only runs a suite (`suites.py`) through those and writes the results.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from tvm_conformer.bench.builds import CACHE_DIR, Builder, benchmark_model, buildable
from tvm_conformer.bench.engines import EngineSpec
from tvm_conformer.bench.measure import run_group
from tvm_conformer.bench.scaling import run_scaling
from tvm_conformer.bench.stats import RTF_DEFINITION, ratios_to_ort
from tvm_conformer.bench.suites import Suite
from tvm_conformer.bench.workload import make_workload
from tvm_conformer.model import load_checkpoint


def machine_info() -> dict[str, Any]:
    import onnxruntime
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "machine": platform.machine(),
            "python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "tvm": _tvm_version(),
            "openblas_env": {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")},
            "load_average": os.getloadavg()}


def _tvm_version() -> str:
    import tvm

    return tvm.__version__


def run_suite(suite: Suite, out: Path, checkpoint: Path | None = None, cache: Path = CACHE_DIR,
              threads: tuple[int, ...] | None = None, rounds: int | None = None,
              recordings: int | None = None) -> dict[str, Any]:
    """Runs `suite`, writes results.json, table.md and the plots into `out`; returns the results."""
    from tvm_conformer.bench import plots, report

    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    threads = threads or suite.threads
    rounds = rounds or suite.rounds
    ckpt, trained = benchmark_model(checkpoint, cache)
    model, _ = load_checkpoint(ckpt)
    cfg = model.cfg
    builder = Builder(cache, ckpt, model)
    utts = make_workload(cfg, recordings or suite.recordings)
    results: dict[str, Any] = {
        "suite": suite.name, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(),
        "model": {"checkpoint": str(ckpt), "trained": trained, "config": cfg.to_dict()},
        "workload": {"recordings": [u.id for u in utts], "audio_seconds": sum(u.seconds for u in utts),
                     "chunks": sum(len(u.feats) for u in utts),
                     "chunk_seconds": cfg.chunk_size * 0.04, "utterance_frames": utts[0].window.shape[1]},
        "method": {"rounds": rounds, "warmup_rounds": 1, "interleaved": True, "threads": list(threads),
                   "rtf": RTF_DEFINITION, "reference": "PyTorch eager in the harness process",
                   "peak_rss": "VmHWM of the worker process, read before it exits"},
    }
    with tempfile.TemporaryDirectory(prefix="bench-", dir=cache) as tmp:
        work = Path(tmp)
        rows = []
        for mode_specs in (suite.stream, suite.utterance):
            for n in threads if mode_specs else ():
                specs = [replace(s, threads=n) for s in mode_specs]
                rows += run_group(specs, builder, utts, rounds, work, f"{specs[0].mode} {n}t")
        ratios_to_ort(rows)
        results["stream"] = [r for r in rows if r["mode"] == "stream"]
        results["utterance"] = [r for r in rows if r["mode"] == "utterance"]
        if suite.end_to_end:
            from tvm_conformer.bench.endtoend import run_end_to_end
            from tvm_conformer.bench.workload import recordings as _recordings

            results["end_to_end"] = run_end_to_end(ckpt, cache, _recordings(len(utts)), threads,
                                                   rounds, work)
        if suite.scaling:
            results["scaling"] = run_scaling(model, ckpt, cache, work, min(4, len(utts)),
                                             max(2, rounds // 2))
    if suite.analysis:
        from tvm_conformer.bench import kernel_profile, macs, roofline

        results["peak"] = roofline.measure_peak()
        flop = 2 * macs.step_macs(cfg)["total"]
        results["roofline"] = roofline.points(results["stream"], flop, roofline.step_min_bytes(cfg),
                                              results["peak"])
        results["kernel_profile"] = [
            kernel_profile.profile_artifact(builder.files(EngineSpec("tvm", tvm=kind))["artifact"],
                                            threads=1).to_dict()
            for kind in ("schedules", "tuned") if buildable(builder, kind)]
        results["compute"] = macs.compute_table(("shipped", "conformer-m"))
    results["seconds"] = round(time.time() - t0, 1)
    results["machine"]["load_average_end"] = os.getloadavg()  # other work on the machine shows here
    (out / "results.json").write_text(json.dumps(_json_safe(results), indent=1, allow_nan=False))
    (out / "table.md").write_text(report.markdown(results))
    plots.write_all(results, out)
    return results


def run_contract_suite(suite: Suite, out: Path, model: Path, cache: Path = CACHE_DIR,
                       threads: tuple[int, ...] | None = None, rounds: int | None = None,
                       recordings: int | None = None) -> dict[str, Any]:
    """A model of the WeNet / sherpa-onnx contract (a file none of our code wrote): sherpa-onnx,
    ONNX Runtime and the host build, each end to end on the same recordings (`endtoend.py`).
    Writes results.json, table.md and end_to_end.png into `out`; returns the results."""
    from tvm_conformer.bench import plots
    from tvm_conformer.bench.endtoend import run_end_to_end, table
    from tvm_conformer.bench.workload import recordings as _recordings
    from tvm_conformer.frontend.contract import read_contract

    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    spec = read_contract(model)  # one line for a file that is not of the contract
    threads = threads or suite.threads
    rounds = rounds or suite.rounds
    audio = _recordings(recordings or suite.recordings)
    results: dict[str, Any] = {
        "suite": f"{suite.name} (contract model, end to end)",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine_info(),
        "model": {"contract": spec.contract(), "vocab": len(spec.tokens)},
        "workload": {"recordings": [uid for uid, _, _ in audio],
                     "audio_seconds": sum(len(s) for _, _, s in audio) / 16000},
        "method": {"rounds": rounds, "warmup_rounds": 1, "interleaved": True,
                   "threads": list(threads), "reference": "sherpa-onnx's recognizer (same text)"},
    }
    with tempfile.TemporaryDirectory(prefix="bench-", dir=cache) as tmp:
        results["end_to_end"] = run_end_to_end(model, cache, audio, threads, rounds, Path(tmp))
    results["seconds"] = round(time.time() - t0, 1)
    results["machine"]["load_average_end"] = os.getloadavg()
    (out / "results.json").write_text(json.dumps(_json_safe(results), indent=1, allow_nan=False))
    mach = results["machine"]
    (out / "table.md").write_text("\n".join([
        f"# Benchmark ({results['suite']}, {results['created']})", "",
        f"Machine: {mach['cpu']}, {mach['cores']} cores; load average at the start "
        f"{mach['load_average'][0]:.2f}, at the end {mach['load_average_end'][0]:.2f}.",
        f"Model: {model} (output_size {spec.output_size}, {spec.num_blocks} blocks, {spec.head} "
        f"heads, kernel {spec.cnn_module_kernel}, vocab {spec.vocab_size}, chunk "
        f"{spec.chunk_size}, {spec.left_chunks} left chunks).",
        f"Workload: {len(audio)} recordings, {results['workload']['audio_seconds']:.1f} s of "
        f"audio; {rounds} measured rounds after 1 warm-up, engines interleaved.", "",
        table(results["end_to_end"]), ""]))
    plots.write_all(results, out)
    return results


def _json_safe(obj: Any) -> Any:
    """`obj` with NaN and infinities (a measurement that did not happen) as null: strict JSON."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj

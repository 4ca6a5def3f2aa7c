"""Benchmark an artifact on a device over TVM RPC: stream recordings through the step there,
time every step, check the device's output against the host's, append the run to the results.

    record = bench_rpc("build/wearable-a55-fp32", "qemu-cortex-a55")  # appended to the results

`artifact_for` gives the build to deploy (an existing one, or one compiled for the target).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from tvm_conformer.compiler.artifact import LIB, MANIFEST, WEIGHTS, read_manifest, sha256_file
from tvm_conformer.errors import UserError
from tvm_conformer.paths import ASSETS_DIR, DEFAULT_CHECKPOINT, DEFAULT_RECORDING, REPO_DIR
from tvm_conformer.rpc.address import DEFAULT_TRACKER
from tvm_conformer.rpc.backend import DEFAULT_TIMEOUT_S, make_rpc_backend
from tvm_conformer.rpc.results import DEFAULT_RESULTS, DEFINITIONS, append_result, summarize
from tvm_conformer.rpc.tracker import say
from tvm_conformer.runtime.contract import is_contract_manifest

TOLERANCE = 1e-4  # max |log-prob difference| allowed between the device and the host


def default_recordings() -> list[Path]:
    """The shipped recordings: sample.wav and test_utts/*.flac."""
    return [DEFAULT_RECORDING, *sorted((ASSETS_DIR / "test_utts").glob("*.flac"))]


def reference_backend(manifest: dict, model: str | Path | None = None):  # noqa: ANN201
    """The host reference for the model the artifact was compiled from (`model` if given):
    PyTorch eager on our checkpoint, ONNX Runtime on a contract file."""
    path = Path(model or manifest["model"]["checkpoint"])
    if not path.is_file():
        raise UserError(f"the artifact was compiled from {path}, which is missing here; the host "
                        "reference needs it: pass --model PATH to a copy")
    if sha256_file(path) != manifest["model"]["checkpoint_sha256"]:
        raise UserError(f"{path} is not the model the artifact was compiled from (its "
                        "sha256 differs): pass --model PATH to that file, or recompile")
    if is_contract_manifest(manifest):
        from dataclasses import replace

        from tvm_conformer.runtime.contract import OnnxContractBackend, spec_from_manifest

        return OnnxContractBackend(replace(spec_from_manifest(manifest), path=str(path)))
    from tvm_conformer.model import load_checkpoint
    from tvm_conformer.runtime.backend import TorchBackend

    return TorchBackend(load_checkpoint(path)[0])


def transcribe(backend: Any, samples: np.ndarray, sample_rate: int):  # noqa: ANN201 - recognizer.Transcript
    """One recording through `backend`'s step with the loop its model needs (`make_recognizer`:
    ours, or sherpa-onnx's for a contract model)."""
    from tvm_conformer.runtime.load import make_recognizer
    from tvm_conformer.runtime.recognizer import transcribe_samples

    return transcribe_samples(make_recognizer(backend), samples, sample_rate)


def _check(reference: Any, samples: np.ndarray, sample_rate: int, device_run: Any) -> dict:
    """Device log-probs and transcript against the host's on the same recording."""
    host = transcribe(reference, samples, sample_rate)
    same_shape = host.log_probs.shape == device_run.log_probs.shape
    diff = (float(np.max(np.abs(host.log_probs - device_run.log_probs), initial=0.0))
            if same_shape else float("inf"))
    name = "ONNX Runtime" if hasattr(reference, "spec") else "PyTorch eager"
    return {"reference": f"{name} on the host", "max_abs_logp_diff": diff,
            "tolerance": TOLERANCE, "host_text": host.text, "device_text": device_run.text,
            "same_text": host.text == device_run.text,
            "passed": diff <= TOLERANCE and host.text == device_run.text}


def bench_rpc(
    artifact: str | Path,
    key: str,
    tracker: str | tuple[str, int] = DEFAULT_TRACKER,
    audio: list[str | Path] | None = None,
    results: str | Path = DEFAULT_RESULTS,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    model: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Stream each recording (default: the shipped ones) through the step on device `key`,
    caches on the device, and time every step; check the first recording against the host.

    Appends the run (the artifact's manifest included) to `results` (JSON lines), also when the
    device fails mid-run: then the record has `"partial": true` and the error, and the
    DeviceError is raised. A mismatch with the host (> TOLERANCE, or another transcript) is
    recorded and raised as UserError. Returns the record.
    """
    from tvm_conformer.audio.wav import load_audio

    art = Path(artifact)
    manifest = read_manifest(art)
    files = [Path(a) for a in audio] if audio else default_recordings()
    reference = reference_backend(manifest, model)
    backend = make_rpc_backend(art, key, tracker, timeout_s, progress, device_timing=True)
    record: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "label": backend.device.label,
        "device": backend.device.to_dict(),
        "artifact": {"path": str(art.resolve()), "lib_mb": (art / LIB).stat().st_size / 1e6,
                     "weights_mb": (art / WEIGHTS).stat().st_size / 1e6, "manifest": manifest},
        "load_s": backend.load_seconds,
        "definitions": DEFINITIONS,
        "recordings": [],
        "check": None,
        "partial": True,
        "error": None,
    }
    try:
        for i, path in enumerate(files):
            samples, sr = load_audio(path)
            run: dict[str, Any] = {"file": str(path), "audio_s": len(samples) / sr,
                                   "complete": False, "text": None}
            record["recordings"].append(run)
            first = len(backend.timings)
            try:
                tr = transcribe(backend, samples, sr)
            finally:
                steps = backend.timings[first:]
                run["step_ms"] = [round(1e3 * t.step_s, 4) for t in steps]
                run["invoke_ms"] = [round(1e3 * t.invoke_s, 4) for t in steps]
                run["device_ms"] = [round(1e3 * t.device_s, 4) for t in steps
                                    if t.device_s is not None]
            run.update(complete=True, text=tr.text)
            say(progress, f"[{i + 1}/{len(files)}] {path.name}: {len(steps)} chunks, "
                f"{tr.audio_seconds:.1f} s of audio: {tr.text!r}")
            if i == 0:
                record["check"] = _check(reference, samples, sr, tr)
                if not record["check"]["passed"]:
                    c = record["check"]
                    raise UserError(
                        f"the device's output differs from the host's on {path.name}: max "
                        f"|dlogp| {c['max_abs_logp_diff']:.2e} (tolerance {TOLERANCE:g}), "
                        f"transcripts {'equal' if c['same_text'] else 'differ'}: the build for "
                        f"{manifest['target']['name']} computes something else"
                    )
        record["partial"] = False
    except UserError as exc:
        record["error"] = str(exc)
        raise type(exc)(f"{exc}; the run so far is in {results} (partial)") from None
    finally:
        record["summary"] = summarize(record["recordings"])
        append_result(results, record)
        backend.close()
    return record


def artifact_for(target: str | None, artifact: str | Path | None, model: str | Path | None,
                 progress: bool = True) -> Path:
    """The artifact to deploy: `artifact` if it holds one (built for `target` when given), else
    one compiled for `target` from `model` (default: the shipped checkpoint) into `artifact`
    (default build/TARGET-fp32, where `tvm-conformer compile --target TARGET` puts it) with
    that command's defaults; a build there of the same checkpoint, target and TVM is reused."""
    import tvm

    from tvm_conformer.compiler.compile import compile_artifact
    from tvm_conformer.compiler.pipeline import GRAPH_PASSES, PipelineOptions
    from tvm_conformer.targets import load_target

    if target is None:
        if artifact is None:
            raise UserError("pass --target NAME (compiled for it) or --artifact DIR (a build)")
        return Path(artifact)
    out = Path(artifact) if artifact else REPO_DIR / "build" / f"{target}-fp32"
    checkpoint = Path(model or DEFAULT_CHECKPOINT)
    if (out / MANIFEST).is_file():
        manifest = read_manifest(out)
        built_for = manifest["target"]["name"]
        if artifact and built_for != target:
            raise UserError(f"{out} was built for {built_for}, not {target}: pass --target "
                            f"{built_for}, or another --artifact DIR to compile into")
        if (built_for == target and manifest["tvm_version"] == tvm.__version__
                and (not checkpoint.is_file()
                     or sha256_file(checkpoint) == manifest["model"]["checkpoint_sha256"])):
            say(progress, f"using the build in {out} ({manifest['created']}; delete it to rebuild)")
            return out
    say(progress, f"compiling {checkpoint} for {target} into {out}")
    device = load_target(target)
    compile_artifact(out, device, checkpoint,
                     opts=PipelineOptions(family=device.family, passes=GRAPH_PASSES))
    return out

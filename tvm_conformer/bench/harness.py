"""The host benchmark: every engine on the same chunks, interleaved, verified against PyTorch.

Method (docs/BENCHMARKS.md says why):
- Each engine runs in its own worker process that imports only its runtime; all workers of one
  group (same mode and thread count) are alive at once and are driven in turn, one round each
  (A B C, B C A, ...), so slow drifts of the machine hit every engine alike.
- A round is one pass over every recording's chunk sequence, caches carried, reset per
  recording. One warm-up round is not counted; its first call is the cold first-call latency.
- Every engine's outputs are compared with PyTorch eager computed here, in this process.
- Compiled engines are built once into a cache directory keyed by everything they depend on.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from tvm_conformer.bench.engines import TVM_KINDS, EngineSpec, worker_env
from tvm_conformer.bench.workload import Utterance, make_workload, save_workload
from tvm_conformer.model import ConformerASR, ModelConfig, load_checkpoint, save_checkpoint
from tvm_conformer.paths import DEFAULT_CHECKPOINT, REPO_DIR

CACHE_DIR = REPO_DIR / "build" / "bench"
SWITCH_PAUSE_S = 0.05  # between engines: lets the previous pool's spinning threads go idle
RTF_DEFINITION = "sum of step (or forward) seconds / seconds of audio they cover"


def _tvm_specs(kinds: tuple[str, ...], passes: tuple[bool, ...], precisions: tuple[str, ...]
               ) -> tuple[EngineSpec, ...]:
    return tuple(EngineSpec("tvm", tvm=k, passes=p, precision=pr) for k in kinds for p in passes
                 for pr in precisions if k != "untuned" or pr == "fp32")  # untuned: fp32 only


@dataclass(frozen=True)
class Suite:
    """What one `tvm-conformer bench --suite NAME` run measures."""

    name: str
    recordings: int
    rounds: int  # measured rounds, after one warm-up round
    threads: tuple[int, ...]
    stream: tuple[EngineSpec, ...]  # thread count filled in per group
    utterance: tuple[EngineSpec, ...] = ()
    scaling: bool = False  # latency against chunk size and model size
    analysis: bool = False  # roofline, kernel profile, MACs by component


SUITES = {
    "quick": Suite("quick", recordings=2, rounds=2, threads=(1,),
                   stream=(EngineSpec("torch"), EngineSpec("ort"), EngineSpec("tvm", tvm="schedules"))),
    # the head-to-head of the ONNX Runtime issue: fp32 engines on the streaming step, 1 and 2 threads
    "versus": Suite("versus", recordings=6, rounds=4, threads=(1, 2),
                    stream=(EngineSpec("torch"), EngineSpec("ort"),
                            EngineSpec("tvm", tvm="schedules"), EngineSpec("tvm", tvm="tuned"))),
    "full": Suite(
        "full", recordings=12, rounds=6, threads=(1, 2),
        stream=(EngineSpec("torch"), EngineSpec("torch.compile"), EngineSpec("ort"),
                *_tvm_specs(TVM_KINDS, (False, True), ("fp32", "fp16"))),
        utterance=(EngineSpec("torch", mode="utterance"), EngineSpec("ort", mode="utterance"),
                   EngineSpec("tvm", mode="utterance", tvm="schedules")),
        scaling=True, analysis=True,
    ),
}
# Scaling: chunk sizes at a constant 64 frames of attention context; model sizes at chunk 16.
SCALING_CHUNKS = (8, 16, 32)
SCALING_MODELS = {"d96-4": (96, 4), "d144-6": (144, 6), "d256-8": (256, 8)}
SCALING_ENGINES = (EngineSpec("torch"), EngineSpec("ort"), EngineSpec("tvm", tvm="schedules"))


class Unavailable(Exception):
    """An engine variant that cannot be built here; the message goes into its row."""


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _compiler_sources_hash() -> str:
    from tvm_conformer.compiler.artifact import compiler_sources_hash

    return compiler_sources_hash()


class Builder:
    """Builds what each engine loads (ONNX files, TVM artifacts) once, cached under `cache`."""

    def __init__(self, cache: Path, checkpoint: Path, model: ConformerASR) -> None:
        from tvm_conformer.compiler.artifact import sha256_file

        self.checkpoint, self.model = checkpoint, model
        self.dir = cache / f"{model.cfg.hash()}-{sha256_file(checkpoint)[:12]}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.errors: dict[str, str] = {}  # failed builds, remembered for the other thread counts

    def files(self, spec: EngineSpec) -> dict[str, str]:
        """{"checkpoint" | "onnx" | "artifact": path}; Unavailable when it cannot be built."""
        if spec.engine in ("torch", "torch.compile"):
            return {"checkpoint": str(self.checkpoint)}
        key = f"{spec.mode}-{spec.label}"
        if key in self.errors:
            raise Unavailable(self.errors[key])
        try:
            return self._build(spec)
        except Unavailable as exc:
            self.errors[key] = str(exc)
            raise
        except Exception as exc:  # a failed build is a result, not a crash of the suite
            from tvm_conformer.bench.worker import one_line

            self.errors[key] = f"build failed: {one_line(exc)}"
            raise Unavailable(self.errors[key]) from None

    def _build(self, spec: EngineSpec) -> dict[str, str]:
        from tvm_conformer.bench.utterance import build_utterance_artifact, export_utterance_onnx
        from tvm_conformer.bench.workload import UTTERANCE_FRAMES
        from tvm_conformer.frontend import export_onnx

        if spec.engine == "ort":
            path = self.dir / ("step.onnx" if spec.mode == "stream" else f"utterance-{UTTERANCE_FRAMES}.onnx")
            if not path.is_file():
                if spec.mode == "stream":
                    export_onnx(self.model, path)
                else:
                    export_utterance_onnx(self.model, UTTERANCE_FRAMES, path)
            return {"onnx": str(path)}
        opts = pipeline_options(spec, self.model.cfg.hash())
        key = _sha(json.dumps([opts.to_dict(), _compiler_sources_hash(), _database_hash(opts)]))
        art = self.dir / f"{spec.mode}-{spec.label}-{key}"
        if not (art / "manifest.json").is_file():
            if spec.mode == "stream":
                from tvm_conformer.compiler.compile import compile_artifact

                # no database but the one `opts` names: untuned and schedules must stay so
                compile_artifact(art, "host", self.checkpoint, opts=opts, quiet=True,
                                 use_default_database=False)
            else:
                build_utterance_artifact(art, self.model, UTTERANCE_FRAMES, opts)
        return {"artifact": str(art)}


def pipeline_options(spec: EngineSpec, config_hash: str):  # noqa: ANN201 - PipelineOptions
    """The `tvm_conformer` pipeline options of a TVM variant; `tuned` takes the committed host
    database (`tuning_logs/host/`) when its manifest matches this model and these options."""
    from tvm_conformer.compiler.database import log_dir_for, mismatch, read_manifest
    from tvm_conformer.compiler.pipeline import GRAPH_PASSES, PipelineOptions

    # built for its thread count (1: serial kernels); untuned kernels have no threads to set
    opts = PipelineOptions(passes=GRAPH_PASSES if spec.passes else (), precision=spec.precision,
                           schedules=spec.tvm != "untuned",
                           threads=spec.threads if spec.tvm != "untuned" else 0)
    if spec.tvm != "tuned":
        return opts
    log_dir = log_dir_for("host")
    manifest = read_manifest(log_dir)
    if manifest is None:
        raise Unavailable(f"no database ({log_dir.relative_to(REPO_DIR)}/)")
    why = mismatch(manifest, config_hash, opts)
    if why is not None:
        raise Unavailable(f"database {log_dir.relative_to(REPO_DIR)}/ does not fit: {why}")
    return replace(opts, database=str(log_dir))


def _database_hash(opts) -> str | None:  # noqa: ANN001
    from tvm_conformer.compiler.compile import database_info

    info = database_info(opts.database)
    return json.dumps(info["sha256"]) if info else None


class Worker:
    """A worker process (`bench/worker.py`) running one engine."""

    def __init__(self, spec: EngineSpec, files: dict[str, str], workload: Path, log: Path) -> None:
        self.spec = spec
        self._log = open(log, "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tvm_conformer.bench.worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._log, text=True,
            env={**os.environ, **worker_env(spec)},
        )
        self.hello = self.request({"spec": spec.to_dict(), "files": files, "workload": str(workload)})

    def request(self, msg: dict) -> dict:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            return {"ok": False, "error": f"worker exited (code {self.proc.wait()}); see {self._log.name}"}
        return json.loads(line)

    def peak_rss_mb(self) -> float:
        """The worker's peak resident memory (VmHWM): its own, unlike ru_maxrss after a fork,
        which starts from the parent's resident size."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
        return int(kib) / 1024

    def close(self) -> float:
        """Stops the worker; returns its peak resident memory in MB (NaN if it already died)."""
        peak = self.peak_rss_mb() if self.proc.poll() is None else float("nan")
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
            except BrokenPipeError:
                pass
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()
        self._log.close()
        return peak


@dataclass
class Raw:
    """What the workers reported for one engine."""

    spec: EngineSpec
    error: str | None = None
    load_s: float = float("nan")
    first_call_s: float = float("nan")
    rounds: list[list[list[float]]] = field(default_factory=list)  # round -> recording -> seconds
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    peak_rss_mb: float = float("nan")


def measure(specs: list[EngineSpec], builder: Builder, workload: Path, rounds: int, work: Path,
            desc: str) -> list[Raw]:
    """Runs `specs` (one group) interleaved: a warm-up round, then `rounds` measured rounds."""
    raws = [Raw(s) for s in specs]
    workers: dict[int, Worker] = {}
    for i, raw in enumerate(tqdm(raws, desc=f"{desc}: build+load", leave=False)):
        try:
            files = builder.files(raw.spec)
        except Unavailable as exc:
            raw.error = str(exc)
            continue
        w = Worker(raw.spec, files, workload, work / f"{desc}-{raw.spec.label}.log".replace(" ", "_"))
        if w.hello.get("ok"):
            workers[i], raw.load_s = w, w.hello["load_s"]
        else:
            raw.error = w.hello["error"]
            raw.peak_rss_mb = w.close()
    order = list(workers)
    for r in tqdm(range(rounds + 1), desc=f"{desc}: rounds", leave=False):
        k = r % max(1, len(order))  # each round starts with the next engine: A B C, B C A, ...
        for i in order[k:] + order[:k]:
            if raws[i].error:
                continue
            save = work / f"out-{i}.npz" if r == 1 else None
            reply = workers[i].request({"cmd": "round", "save": str(save) if save else None})
            time.sleep(SWITCH_PAUSE_S)
            if not reply["ok"]:
                raws[i].error = reply["error"]
            elif r == 0:
                raws[i].first_call_s = reply["first_call_s"]
            else:
                raws[i].rounds.append(reply["seconds"])
                if save:
                    with np.load(save) as z:
                        raws[i].outputs = {k: z[k] for k in z.files}
    for i, w in workers.items():
        raws[i].peak_rss_mb = w.close()
    return raws


def reference_outputs(model: ConformerASR, utts: list[Utterance], mode: str) -> list[np.ndarray]:
    """PyTorch eager, in this process: per recording (chunks, c, V) or (T', V) log-probs."""
    import torch

    from tvm_conformer.runtime.backend import TorchBackend

    outs = []
    if mode == "utterance":  # the model's own forward, full context
        frames = torch.tensor([utts[0].window.shape[1]])
        with torch.no_grad():
            return [model(torch.from_numpy(u.window), frames, chunk_size=0)[0][0].numpy()
                    for u in utts]
    backend = TorchBackend(model)
    for u in utts:
        state, lps = backend.initial_state(), []
        for feats, mask in zip(u.feats, u.masks, strict=True):
            lp, state = backend.step(state, feats, mask)
            lps.append(lp)
        outs.append(np.stack(lps))
    return outs


def _valid_rows(lp: np.ndarray, utt: Utterance, cfg: ModelConfig, mode: str) -> np.ndarray:
    """The log-probs a recognizer keeps: each chunk's valid frames, concatenated."""
    if mode == "utterance":
        return lp
    return np.concatenate([c[:v] for c, v in zip(lp, utt.valid(cfg), strict=True)])


def _transcript(lp: np.ndarray) -> str:
    from tvm_conformer.decode.ctc import ctc_greedy
    from tvm_conformer.model.tokenizer import CharTokenizer

    return CharTokenizer().decode(ctc_greedy(lp))


def summarize(raw: Raw, utts: list[Utterance], ref: list[np.ndarray], cfg: ModelConfig,
              sizes: dict[str, float]) -> dict[str, Any]:
    """One row of results.json: latency statistics, memory, size, and agreement with PyTorch."""
    s = raw.spec
    row: dict[str, Any] = {"label": s.label, **s.to_dict(), "status": "ok" if not raw.error else "n/a",
                           "error": raw.error}
    if raw.error or not raw.rounds:
        return row
    audio = sum(u.seconds if s.mode == "stream" else _window_seconds(u) for u in utts)
    lat = np.array([x for rnd in raw.rounds for rec in rnd for x in rec]) * 1e3
    firsts = np.array([rec[0] for rnd in raw.rounds for rec in rnd]) * 1e3
    round_medians = [float(np.median([x for rec in rnd for x in rec]) * 1e3) for rnd in raw.rounds]
    rtfs = [sum(x for rec in rnd for x in rec) / audio for rnd in raw.rounds]
    diffs, same = [], []
    for i, u in enumerate(utts):
        got = _valid_rows(raw.outputs[str(i)], u, cfg, s.mode)
        want = _valid_rows(ref[i], u, cfg, s.mode)
        diffs.append(float(np.max(np.abs(got.astype(np.float64) - want))))
        same.append(_transcript(got) == _transcript(want))
    row.update({
        "calls": int(lat.size), "median_ms": float(np.median(lat)), "p95_ms": float(np.percentile(lat, 95)),
        "mean_ms": float(lat.mean()), "min_ms": float(lat.min()), "round_medians_ms": round_medians,
        "first_chunk_ms": float(np.median(firsts)), "cold_first_call_ms": raw.first_call_s * 1e3,
        "rtf": float(np.median(rtfs)), "rtf_min": float(min(rtfs)), "rtf_max": float(max(rtfs)),
        "peak_rss_mb": raw.peak_rss_mb, "load_s": raw.load_s,
        "max_abs_logp_diff": max(diffs), "transcripts_identical": all(same),
        "latencies_ms": [round(float(x), 4) for x in lat],
        **sizes,
    })
    return row


def _window_seconds(utt: Utterance) -> float:
    return utt.window.shape[1] / 100  # 100 fbank frames per second


def disk_sizes(spec: EngineSpec, files: dict[str, str]) -> dict[str, float]:
    """MB on disk of the model files that ship, and of the runtime libraries that must ship too."""
    if "checkpoint" in files:
        model = [Path(files["checkpoint"])]
    elif "onnx" in files:
        model = [Path(files["onnx"])]
    else:
        model = [Path(files["artifact"]) / n for n in ("lib.so", "weights.npz")]
    return {"model_mb": sum(p.stat().st_size for p in model) / 2**20,
            "runtime_mb": runtime_mb(spec.engine)}


def runtime_mb(engine: str) -> float:
    """Shared libraries of the engine's runtime (what a deployment installs besides Python)."""
    import importlib.util

    if engine == "tvm":
        import tvm_ffi

        spec = importlib.util.find_spec("tvm")
        libs = [Path(spec.origin).parent / "lib" / "libtvm_runtime.so"]
        libs += list(Path(tvm_ffi.__file__).parent.rglob("*.so"))
    else:
        pkg = "torch" if engine.startswith("torch") else "onnxruntime"
        libs = list(Path(importlib.util.find_spec(pkg).origin).parent.rglob("*.so*"))
    return sum(p.stat().st_size for p in libs if p.is_file()) / 2**20


def ratios_to_ort(rows: list[dict]) -> None:
    """Adds each row's median latency over ONNX Runtime's (same mode and threads): the headline."""
    ort = {(r["mode"], r["threads"]): r["median_ms"] for r in rows
           if r["engine"] == "ort" and r["status"] == "ok"}
    for r in rows:
        base = ort.get((r["mode"], r["threads"]))
        r["ratio_to_ort"] = r["median_ms"] / base if base and r["status"] == "ok" else None


def run_group(specs: list[EngineSpec], builder: Builder, utts: list[Utterance], rounds: int,
              work: Path, desc: str) -> list[dict]:
    """Measures one group and returns its rows."""
    cfg = builder.model.cfg
    wl = work / f"workload-{cfg.hash()}.npz"
    save_workload(wl, utts)
    raws = measure(specs, builder, wl, rounds, work, desc)
    ref = reference_outputs(builder.model, utts, specs[0].mode)
    rows = []
    for raw in raws:
        sizes = {} if raw.error else disk_sizes(raw.spec, builder.files(raw.spec))
        rows.append(summarize(raw, utts, ref, cfg, sizes))
    return rows


def benchmark_model(checkpoint: Path | None, cache: Path) -> tuple[Path, bool]:
    """The checkpoint to measure and whether it is trained: the shipped one, else a seeded
    random model of the default size (latency does not depend on the weights' values)."""
    if checkpoint is not None:
        return checkpoint, True
    if DEFAULT_CHECKPOINT.is_file():
        return DEFAULT_CHECKPOINT, True
    return random_checkpoint(ModelConfig(), cache), False


def random_checkpoint(cfg: ModelConfig, cache: Path) -> Path:
    import torch

    path = cache / "random" / f"{cfg.hash()}.pt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        save_checkpoint(ConformerASR(cfg).eval(), path)
    return path


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
            for kind in ("schedules", "tuned") if _buildable(builder, kind)]
        results["compute"] = macs.compute_table(("shipped", "conformer-m"))
    results["seconds"] = round(time.time() - t0, 1)
    results["machine"]["load_average_end"] = os.getloadavg()  # other work on the machine shows here
    (out / "results.json").write_text(json.dumps(_json_safe(results), indent=1, allow_nan=False))
    (out / "table.md").write_text(report.markdown(results))
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


def _buildable(builder: Builder, kind: str) -> bool:
    try:
        builder.files(EngineSpec("tvm", tvm=kind))
    except Unavailable:
        return False
    return True


def run_scaling(model: ConformerASR, checkpoint: Path, cache: Path, work: Path, recordings: int,
                rounds: int) -> list[dict]:
    """Latency of torch, ORT and TVM (schedules), 1 thread, against chunk size and model size.

    Chunk sizes keep the attention context at the benchmark model's frames; the other model
    sizes have random weights. A point whose config is the benchmark model's reuses its builds.
    """
    from tvm_conformer.bench.macs import step_macs
    from tvm_conformer.compiler.artifact import sha256_file

    base = model.cfg
    points: dict[ModelConfig, list[str]] = {}  # a config in both series is measured once
    for c in SCALING_CHUNKS:
        cfg = replace(base, chunk_size=c, num_left_chunks=max(1, base.left_frames // c))
        points.setdefault(cfg, []).append(f"chunk{c}")
    for name, (d, n) in SCALING_MODELS.items():
        points.setdefault(replace(base, d_model=d, n_layers=n), []).append(name)
    rows = []
    for cfg, names in tqdm(points.items(), desc="scaling"):
        if cfg == base:
            path = checkpoint
        elif cfg.d_model == base.d_model and cfg.n_layers == base.n_layers:
            path = cache / "scaling" / f"{cfg.hash()}-{sha256_file(checkpoint)[:12]}.pt"
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                scaled = ConformerASR(cfg).eval()
                scaled.load_state_dict(model.state_dict())  # the same weights, another chunking
                save_checkpoint(scaled, path)
        else:
            path = random_checkpoint(cfg, cache)
        scaled, _ = load_checkpoint(path)
        macs = step_macs(cfg)["total"]
        group = [replace(s, threads=1) for s in SCALING_ENGINES]
        measured = run_group(group, Builder(cache, path, scaled), make_workload(cfg, recordings),
                             rounds, work, f"scaling {'='.join(names)}")
        ratios_to_ort(measured)
        for row in measured:
            row.pop("latencies_ms", None)
            rows.append({"point": "=".join(names), "chunk_series": any(n.startswith("chunk") for n in names),
                         "size_series": not all(n.startswith("chunk") for n in names),
                         "chunk_size": cfg.chunk_size, "d_model": cfg.d_model,
                         "n_layers": cfg.n_layers, "step_macs": macs, **row})
    return rows

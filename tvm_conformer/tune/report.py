"""What tuning bought, measured on this machine in one process.

`kernel_report`: per task, its calls per step and share of the kernel time, its latency
untuned, with the family's rules (schedules/ + dlight) and with the database's best record, and
the trials spent on it. `model_report`: the whole streaming step untuned, schedules-only, tuned
and in PyTorch eager, chunk by chunk in turn over the same recording (identical transcripts
required), median per-chunk latency.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tvm_conformer.compiler import database as tdb
from tvm_conformer.compiler.pipeline import PipelineOptions
from tvm_conformer.errors import UserError
from tvm_conformer.paths import DEFAULT_CHECKPOINT, DEFAULT_RECORDING
from tvm_conformer.targets import DeviceTarget, load_target
from tvm_conformer.tune.tasks import Task, extract_tasks

VARIANTS = ("untuned", "schedules", "tuned")


@dataclass
class KernelRow:
    name: str
    calls: int
    groups: list[str]
    us: dict[str, float | None]  # VARIANTS -> median latency; tuned None: no record
    trials: int

    def step_us(self, variant: str) -> float:
        """Microseconds per step in this kernel; without a record the tuned build uses the rules."""
        us = self.us[variant] if self.us[variant] is not None else self.us["schedules"]
        return self.calls * us


def _median_us(mod, args: list, target, rounds: int) -> float:  # noqa: ANN001
    """Median latency of `mod`'s `main` over `rounds` timed runs of >= 10 ms each."""
    import tvm

    lib = tvm.compile(mod, target=target)
    timer = lib.mod.time_evaluator("main", tvm.cpu(), number=1, repeat=rounds, min_repeat_ms=10)
    return statistics.median(timer(*args).results) * 1e6


def kernel_variants(task: Task, family: str, target, db,  # noqa: ANN001
                    parallel_min_flops: float = 0) -> dict:
    """The task's kernel untuned, scheduled by the family's rules, and by its best record."""
    from tvm_conformer.compiler.schedule_rules import family_rules

    best = db.query_schedule(task.mod, target, workload_name="main")
    with target:  # the rules work on a copy: the task's kernel stays untuned
        ruled = family_rules(family, parallel_min_flops)(task.mod)
    return {"untuned": task.mod, "schedules": ruled, "tuned": None if best is None else best.mod}


def random_args(task: Task) -> list:
    """Random inputs (and outputs) for the task's kernel, on this CPU."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    rng = np.random.default_rng(0)
    return [tvm.runtime.tensor(rng.standard_normal([int(d) for d in a.shape]).astype(a.dtype))
            for a in ms.arg_info.ArgInfo.from_prim_func(task.mod["main"])]


def kernel_report(
    device: DeviceTarget, model: str | Path, log_dir: Path, opts: PipelineOptions, threads: int,
    rounds: int = 20,
) -> list[KernelRow]:
    """Every kernel of the step on `threads` threads, heaviest (schedules-only) first."""
    from tvm.s_tir import meta_schedule as ms

    from tvm_conformer.threads import set_threads
    from tvm_conformer.tune.tuner import records_per_task

    set_threads(threads)
    tasks = extract_tasks(model, device, opts)
    target = device.tvm()
    db = ms.database.JSONDatabase(work_dir=str(log_dir))
    trials = records_per_task(db, tasks)
    rows = []
    for task in tasks:
        mods = kernel_variants(task, opts.family, target, db, opts.serial_below())
        args = random_args(task)
        us = {v: (_median_us(mods[v], args, target, rounds) if mods[v] else None) for v in VARIANTS}
        rows.append(KernelRow(task.name, task.weight, sorted(task.groups), us,
                              len(trials[task.name])))
    return sorted(rows, key=lambda r: -r.step_us("schedules"))


def _build(out: Path, device: DeviceTarget, model: str | Path, opts: PipelineOptions) -> Path:
    from tvm_conformer.compiler.compile import compile_artifact

    compile_artifact(out, device, model, opts=opts, quiet=True, use_default_database=False)
    return out


def model_report(
    device: DeviceTarget, model: str | Path, log_dir: Path, opts: PipelineOptions,
    recording: str | Path, threads: int, rounds: int = 3,
) -> dict:
    """Per-chunk latency of the whole step for each build, interleaved, and the transcript of
    each build and of PyTorch eager. PyTorch is not timed here, and runs only after the timing:
    next to TVM's thread pool in one process its threads contend (1288 ms per chunk measured
    once); `bench` times it in a process of its own."""
    from tvm_conformer.audio.wav import load_audio
    from tvm_conformer.model import load_checkpoint
    from tvm_conformer.runtime.backend import TorchBackend
    from tvm_conformer.runtime.recognizer import OnlineRecognizer
    from tvm_conformer.runtime.tvm_backend import TVMBackend

    builds = {"untuned": dataclasses.replace(opts, schedules=False, database=None),
              "schedules": dataclasses.replace(opts, database=None),
              "tuned": dataclasses.replace(opts, database=str(log_dir))}
    samples, sr = load_audio(recording)

    def streams_of(backends: dict) -> tuple[dict, dict]:
        recs = {name: OnlineRecognizer(b) for name, b in backends.items()}
        streams = {name: r.create_stream() for name, r in recs.items()}
        for s in streams.values():
            s.accept_waveform(sr, samples)
            s.input_finished()
        return recs, streams

    with tempfile.TemporaryDirectory(prefix="tvm-conformer-report-") as tmp:
        backends = {name: TVMBackend.load(_build(Path(tmp) / name, device, model, o), threads)
                    for name, o in builds.items()}
        seconds: dict[str, list[float]] = {name: [] for name in backends}
        for _ in range(rounds):
            recs, streams = streams_of(backends)
            # one chunk of each build in turn, so load changes hit all of them alike
            while any(recs[n].is_ready(s) for n, s in streams.items()):
                for name, s in streams.items():
                    if recs[name].is_ready(s):
                        t0 = time.perf_counter()
                        recs[name].decode_stream(s)
                        seconds[name].append(time.perf_counter() - t0)
        texts = {name: recs[name].get_result(s) for name, s in streams.items()}
    recs, streams = streams_of({"torch": TorchBackend(load_checkpoint(model)[0], threads)})
    while recs["torch"].is_ready(streams["torch"]):
        recs["torch"].decode_stream(streams["torch"])
    texts["torch"] = recs["torch"].get_result(streams["torch"])
    return {"recording": str(recording), "transcripts": texts,
            "identical": len(set(texts.values())) == 1, "threads": threads,
            "chunks": len(seconds["tuned"]),
            "chunk_ms": {n: round(statistics.median(s) * 1e3, 3) for n, s in seconds.items() if s}}


def report(
    target: str | DeviceTarget = "host", model: str | Path = DEFAULT_CHECKPOINT,
    log_dir: str | Path | None = None, recording: str | Path = DEFAULT_RECORDING,
    threads: int | None = None, kernels: bool = True,
) -> dict:
    """Kernel table and whole-model latencies for the database in `log_dir` (default
    `tuning_logs/<target>`), measured here (targets that run on this machine only) on `threads`
    threads (default: as many as the database was measured with)."""
    from tvm_conformer.compiler.compat import target_runs_here

    device = load_target(target) if isinstance(target, str) else target
    if not target_runs_here(device):
        raise UserError(f"--report measures on this machine; {device.name} code does not run here")
    log_dir = Path(log_dir) if log_dir else tdb.log_dir_for(device.name)
    manifest = tdb.read_manifest(log_dir)
    if manifest is None:
        raise UserError(f"{log_dir} has no tuning manifest: tune first with "
                        f"`tvm-conformer tune --target {device.name}`")
    tdb.check_database(log_dir)
    opts = PipelineOptions(**{**PipelineOptions(family=device.family).to_dict(),
                              **manifest["pipeline"], "passes": tuple(manifest["pipeline"]["passes"])})
    threads = threads or manifest["threads"]
    opts = dataclasses.replace(opts, threads=threads)
    out: dict = {"target": device.name, "log_dir": str(log_dir), "device": manifest["target"]["device"],
                 "trials": manifest["trials"], "tuning_wall_seconds": manifest["wall_seconds"],
                 "tuning_threads": manifest["threads"]}
    if kernels:
        rows = kernel_report(device, model, log_dir, opts, threads)
        out["kernels"] = [dataclasses.asdict(r) for r in rows]
        out["kernel_ms_per_step"] = {v: round(sum(r.step_us(v) for r in rows) / 1e3, 3)
                                     for v in VARIANTS}
    out["model"] = model_report(device, model, log_dir, opts, recording, threads)
    return out


def format_report(rep: dict) -> str:
    """The report as Markdown tables."""
    lines = [f"# Tuning report: {rep['target']} ({rep['device']})", "",
             f"database {rep['log_dir']}: {rep['trials']} trials in "
             f"{rep['tuning_wall_seconds'] / 60:.1f} min (measured with {rep['tuning_threads']} "
             "thread(s))", ""]
    if "kernels" in rep:
        total = {v: 1e3 * ms for v, ms in rep["kernel_ms_per_step"].items()}
        lines += ["| kernel | calls | share untuned | share sched | untuned us | sched us | "
                  "tuned us | trials |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for k in rep["kernels"]:
            us = k["us"]
            tuned = f"{us['tuned']:.1f}" if us["tuned"] is not None else "-"
            lines.append(
                f"| {k['name'][:60]} | {k['calls']} "
                f"| {k['calls'] * us['untuned'] / total['untuned']:.1%} "
                f"| {k['calls'] * us['schedules'] / total['schedules']:.1%} | {us['untuned']:.1f} "
                f"| {us['schedules']:.1f} | {tuned} | {k['trials']} |")
        lines += ["", "kernel time per step (calls x latency; tuned uses the rules where no "
                  "record): " + ", ".join(f"{v} {ms:.2f} ms" for v, ms in
                                          rep["kernel_ms_per_step"].items()), ""]
    m = rep["model"]
    lines += [f"whole step, median per chunk over {m['chunks']} chunks of {m['recording']}, "
              f"{m['threads']} thread(s), one process, interleaved (PyTorch: see `tvm-conformer "
              "bench --suite versus`, which runs each engine in a process of its own):", "",
              "| build | ms/chunk |", "|---|---:|"]
    lines += [f"| {name} | {ms:.2f} |" for name, ms in m["chunk_ms"].items()]
    if m["identical"]:
        lines += ["", f"transcript (identical for all): {m['transcripts']['torch']!r}"]
    else:
        lines += ["", "WARNING: the transcripts differ:"]
        lines += [f"- {name}: {text!r}" for name, text in m["transcripts"].items()]
    return "\n".join(lines)

"""`tune`: MetaSchedule on the pipeline's kernels, one task at a time, here or on a device.

Each task first gets the schedule `compile` would give it without a database (the family's
rules, `schedules/<family>.py` then dlight's, under the thread policy) and its plain loops
measured and recorded: the search starts from the database's best, and the database never
holds worse. Then
evolutionary search over MetaSchedule's design space, guided by an XGBoost cost model shared by
the session. (A hand schedule's tiles made tunable is no search space here: replaying its trace
with other tile sizes changes the loop structure, which MetaSchedule's replay rejects.) A
builder links every candidate the way `compile` does (cross g++ or ld.lld,
`tvm_conformer.compiler.link`); the runner is this machine or a device behind an RPC tracker.
Records are appended to the JSON database as they are measured, so an interrupted run keeps
them; `resume` skips tasks that have their trials and tops up the others.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from tvm_conformer.compiler import database as tdb
from tvm_conformer.compiler.compat import target_runs_here
from tvm_conformer.compiler.pipeline import PipelineOptions
from tvm_conformer.errors import UserError
from tvm_conformer.paths import DEFAULT_CHECKPOINT, cache_dir
from tvm_conformer.targets import DeviceTarget, load_target
from tvm_conformer.tune.export import export_candidate
from tvm_conformer.tune.tasks import Task, extract_tasks, select_tasks

TRIALS_PER_ROUND = 32  # candidates built and measured between two cost-model updates
BUDGET_CHUNK = 4  # with a time budget: trials between two looks at the clock
FAILED_SECONDS = 1e10  # MetaSchedule's run time of a candidate that failed to build or run
# A worker process imports TVM before its first job, within the job's timeout: slow when loaded.
WORKER_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class RPCDevice:
    """A device behind a TVM RPC tracker: `key` at `tracker_host:tracker_port`."""

    tracker_host: str
    tracker_port: int
    key: str
    workers: int = 1  # devices measured in parallel (boards registered under `key`)


def make_builder(device: DeviceTarget) -> ms.builder.Builder:
    """Builds candidates in parallel and links them for `device` as `compile` does."""
    return ms.builder.LocalBuilder(f_export=functools.partial(export_candidate, device),
                                   max_workers=os.cpu_count() or 1, timeout_sec=WORKER_TIMEOUT_S)


def make_runner(rpc: RPCDevice | None) -> ms.runner.Runner:
    """This machine's CPU, or the RPC device (one timed run per candidate: boards are slow)."""
    if rpc is None:
        return ms.runner.LocalRunner(
            timeout_sec=WORKER_TIMEOUT_S,
            evaluator_config=ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=50),
        )
    return ms.runner.RPCRunner(
        ms.runner.RPCConfig(rpc.tracker_host, rpc.tracker_port, rpc.key, session_timeout_sec=120),
        evaluator_config=ms.runner.EvaluatorConfig(number=1, repeat=1, min_repeat_ms=0),
        max_workers=rpc.workers,
    )


def device_identity(device: DeviceTarget, rpc: RPCDevice | None) -> str:
    """Which hardware measured the records: this CPU's model, or the RPC device."""
    if rpc is None:
        return f"{tdb.host_cpu()} ({platform.machine()})"
    from tvm_conformer.rpc.tracker import request_device

    session = request_device(rpc.tracker_host, rpc.tracker_port, rpc.key, progress=False)
    try:
        cpu = session.get_function("target.llvm_get_system_cpu")()
    except (AttributeError, RuntimeError):  # a runtime-only server has no LLVM
        cpu = "unknown cpu"
    return f"RPC {rpc.key!r} at {rpc.tracker_host}:{rpc.tracker_port} ({cpu}, {device.name})"


def hand_schedule(task: Task, rules: list, target: tvm.target.Target) -> tvm.s_tir.Schedule | None:
    """The task's kernel as the first of the family's rules that takes it schedules it."""
    func = task.mod["main"]
    sch = next((s for r in rules if (s := r.apply(func, target, False)) is not None), None)
    return sch[0] if isinstance(sch, list) else sch


def plain_loops(task: Task) -> tvm.s_tir.Schedule:
    """The kernel as legalized, as a schedule whose trace is not empty (it looks up the root
    block and changes nothing): MetaSchedule's database queries skip records with an empty
    trace, so a best record of the plain loops would never be applied."""
    sch = tvm.s_tir.Schedule(task.mod)
    sch.get_sblock("root")
    return sch


def seed_with_rules(task: Task, rules: list, target: tvm.target.Target, builder: ms.builder.Builder,
                    runner: ms.runner.Runner, db: ms.database.Database) -> int:
    """Measures and records the schedule the family's rules give `task`, and the kernel's
    plain loops (LLVM vectorizes these on its own, which beats the rules on some copies and
    small row reductions on x86), so the search starts from the better and the database keeps
    it if nothing measured beats it. Returns the number of records made."""
    seeds = [s for s in (hand_schedule(task, rules, target), plain_loops(task)) if s is not None]
    args = ms.arg_info.ArgInfo.from_prim_func(task.mod["main"])
    workload = db.commit_workload(task.mod)
    device_type = "cpu" if target.kind.name == "llvm" else target.kind.name
    # one build and one run call for all seeds: each call starts the builder's worker pool
    built = builder.build([ms.builder.BuilderInput(s.mod, target) for s in seeds])
    ok = [b for b in built if b.error_msg is None]
    futures = iter(runner.run([ms.runner.RunnerInput(b.artifact_path, device_type, args)
                               for b in ok]))
    for sch, b in zip(seeds, built, strict=True):
        run_secs = None
        if b.error_msg is None:
            result = next(futures).result()
            run_secs = None if result.error_msg else result.run_secs
            shutil.rmtree(os.path.dirname(b.artifact_path), ignore_errors=True)
        db.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, run_secs, target, args))
    return len(seeds)


def _seconds(run_secs: list | None) -> float:
    """Mean of a candidate's measured run times; FAILED_SECONDS if it has none."""
    return sum(float(s) for s in run_secs) / len(run_secs) if run_secs else FAILED_SECONDS


@derived_object
class _Progress(ms.measure_callback.PyMeasureCallback):
    """Advances the task's and the session's progress bars as candidates are measured."""

    def __init__(self, task_bar: object, total_bar: object) -> None:
        self.task_bar, self.total_bar = task_bar, total_bar
        self.best = FAILED_SECONDS

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results,  # noqa: ANN001
              runner_results) -> None:  # noqa: ANN001
        self.best = min([self.best, *(_seconds(None if r.error_msg else r.run_secs)
                                      for r in runner_results)])
        if self.best < FAILED_SECONDS:
            self.task_bar.set_postfix_str(f"best {self.best * 1e6:.1f} us")
        self.task_bar.update(len(runner_results))
        self.total_bar.update(len(runner_results))


def records_per_task(db: ms.database.JSONDatabase, tasks: list[Task],
                     failed: bool = False) -> dict[str, list[float]]:
    """Measured run times (seconds) of the records of each task that have one: a candidate
    that failed to build or run (a device that died) is no trial done, so `--resume` measures
    the task again. With `failed`, those too, as FAILED_SECONDS."""
    records = db.get_all_tuning_records()
    out: dict[str, list[float]] = {}
    for task in tasks:
        if not db.has_workload(task.mod):
            out[task.name] = []
            continue
        wl = db.commit_workload(task.mod)
        times = [_seconds(r.run_secs) for r in records if r.workload.same_as(wl)]
        out[task.name] = times if failed else [t for t in times if t < FAILED_SECONDS]
    return out


def transfer_records(src_dir: Path, db: ms.database.JSONDatabase, tasks: list[Task],
                     device_identity_: str, manifest: dict) -> dict[str, int]:
    """Copies into `db` the records of `src_dir`'s database (another model's, same target)
    whose kernel is one of `tasks`: kernels are identified by their structure (shapes included),
    so a record applies wherever a kernel is the same. Only when `src_dir` was tuned on this
    device, with these kernel options and this TVM; returns the records copied per task."""
    src_manifest = tdb.read_manifest(src_dir)
    if (src_manifest is None or src_manifest.get("device") != device_identity_
            or src_manifest["pipeline"] != manifest["pipeline"]
            or src_manifest["tvm_version"] != manifest["tvm_version"]):
        return {}
    src = ms.database.JSONDatabase(work_dir=str(src_dir))
    copied: dict[str, int] = {}
    for task in tasks:
        if not src.has_workload(task.mod) or (db.has_workload(task.mod) and records_per_task(db, [task])[task.name]):
            continue
        wl = db.commit_workload(task.mod)
        for rec in src.get_top_k(src.commit_workload(task.mod), 8):
            db.commit_tuning_record(ms.database.TuningRecord(rec.trace, wl, rec.run_secs, rec.target,
                                                             rec.args_info))
            copied[task.name] = copied.get(task.name, 0) + 1
    return copied


@contextlib.contextmanager
def _measuring_threads(threads: int) -> Iterator[None]:
    """TVM_NUM_THREADS for the runner's worker processes (they read it when they start)."""
    old = os.environ.get("TVM_NUM_THREADS")
    os.environ["TVM_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TVM_NUM_THREADS")
        else:
            os.environ["TVM_NUM_THREADS"] = old


@contextlib.contextmanager
def _clean_interrupt() -> Iterator[None]:
    """Ctrl-C while MetaSchedule runs reaches Python inside a callback and comes back as a
    RuntimeError: turn it into KeyboardInterrupt, and stop the builder/runner workers started
    meanwhile (interpreter exit would wait for their jobs)."""
    import psutil

    started = time.time()
    interrupted: list[int] = []

    def on_sigint(signum: int, frame: object) -> None:
        interrupted.append(signum)
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():  # signals reach only main
        yield
        return
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    except BaseException:
        if not interrupted:
            raise
        for child in psutil.Process().children():
            with contextlib.suppress(psutil.Error):
                if (child.create_time() >= started - 1
                        and "tvm.exec.popen_worker" in " ".join(child.cmdline())):
                    child.kill()
        raise KeyboardInterrupt from None
    finally:
        signal.signal(signal.SIGINT, previous)


def _task_logger(log_dir: Path, task: Task) -> logging.Logger:
    """MetaSchedule's per-task log, kept in the cache (not next to the committed database)."""
    path = cache_dir() / "tune-logs" / log_dir.name / f"{task.name[:100]}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"tvm_conformer.tune.{log_dir.name}.{task.name[:100]}")
    if not logger.handlers:
        logger.addHandler(logging.FileHandler(path))
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def _open_log_dir(log_dir: Path, resume: bool, model_hash: str, opts: PipelineOptions) -> dict | None:
    """The existing manifest when resuming; UserError if the directory holds other records."""
    manifest = tdb.read_manifest(log_dir)
    has_records = (log_dir / tdb.RECORDS).is_file() and (log_dir / tdb.RECORDS).stat().st_size > 0
    if not resume:
        if has_records:
            raise UserError(f"{log_dir} already holds tuning records: pass --resume to continue "
                            "them, or choose another --log-dir")
        return None
    if manifest is None:
        if has_records:
            raise UserError(f"{log_dir} has records but no {tdb.MANIFEST}; choose another --log-dir")
        return None
    for torn in tdb.drop_torn_last_records(log_dir):
        print(f"warning: dropped the torn last record {torn} (a run killed while writing it)",
              file=sys.stderr, flush=True)
    tdb.check_database(log_dir)
    why = tdb.mismatch(manifest, model_hash, opts)
    if why is not None:
        raise UserError(f"cannot resume {log_dir}: {why}; choose another --log-dir")
    return manifest


# Above this 1-minute load average per core, local measurements are not worth keeping: other
# processes inflate each candidate's time, the parallel ones most (measured 2026-12-01: a host
# database tuned at load 3.5 on 2 cores made the step 1.2-1.6x slower than the hand schedules).
BUSY_LOAD_PER_CORE = 0.5


def busy_machine_warning(rpc: RPCDevice | None, load: float | None = None,
                         cores: int | None = None) -> float | None:
    """The load average when measuring here (None over RPC); warns on stderr when the machine
    is busy, since the database keeps whatever the noisy measurements ranked best."""
    if rpc is not None:
        return None
    load = os.getloadavg()[0] if load is None else load
    cores = cores or os.cpu_count() or 1
    if load > BUSY_LOAD_PER_CORE * cores:
        print(f"warning: this machine is busy (load average {load:.1f} on {cores} cores): "
              "measurements will be inflated, parallel kernels most, and the database will keep "
              "what they rank best; tune on an idle machine", file=sys.stderr, flush=True)
    return round(load, 2)


def default_log_dir(target: str, model_cfg_hash: str) -> Path:
    """`tuning_logs/<target>` when it is empty or was tuned for this model config, else this
    model's own `tuning_logs/<target>-<config hash>` (which `compile` looks up first)."""
    shared = tdb.log_dir_for(target)
    manifest = tdb.read_manifest(shared)
    if manifest is None or manifest["model"]["config_hash"] == model_cfg_hash:
        return shared
    return tdb.model_log_dir(target, model_cfg_hash)


def hottest_first(tasks: list[Task]) -> list[Task]:
    """Tasks by the flops they compute per step (calls x flops per call), most first: what a
    budget should spend its minutes on."""
    from tvm_conformer.compiler.schedule_rules import kernel_flops

    return sorted(tasks, key=lambda t: -t.weight * kernel_flops(t.mod["main"]))


def tune(
    target: str | DeviceTarget = "host",
    model: str | Path = DEFAULT_CHECKPOINT,
    tasks: str = "depthwise",
    trials: int = 64,
    log_dir: str | Path | None = None,
    rpc: RPCDevice | None = None,
    resume: bool = False,
    threads: int | None = None,
    opts: PipelineOptions | None = None,
    frontend: str = "torch",
    progress: bool = True,
    seed: int | None = None,
    trials_per_round: int = TRIALS_PER_ROUND,
    minutes: float | None = None,
) -> dict:
    """Tunes the tasks `tasks` (a group or a regex) of `model` for `target` with `trials`
    measured candidates each, into `log_dir` (default `tuning_logs/<target>` for the model
    that database was made for, or a fresh one, else `tuning_logs/<target>-<config hash>`, which
    `compile` applies to this model); returns the manifest. On the host `threads` (default the
    target's) sizes the measuring thread pool. `minutes`: a budget, counted from this call; the
    kernels that take the most of a step (calls x flops) are tuned first, and tuning stops once
    it is spent (checked every few trials; a later `--resume` continues with the rest)."""
    from tvm_conformer.compiler.source import open_model

    t_begin = time.time()
    device = load_target(target) if isinstance(target, str) else target
    log_dir = (Path(log_dir) if log_dir
               else default_log_dir(device.name, open_model(model).config_hash))
    with tdb.lock_log_dir(log_dir):  # one `tune` per directory: a second one refuses
        return _tune_locked(device, model, tasks, trials, log_dir, rpc, resume, threads, opts,
                            frontend, progress, seed, trials_per_round, minutes, t_begin)


def _tune_locked(
    target: DeviceTarget, model: str | Path, tasks: str, trials: int, log_dir: Path,
    rpc: RPCDevice | None, resume: bool, threads: int | None, opts: PipelineOptions | None,
    frontend: str, progress: bool, seed: int | None, trials_per_round: int,
    minutes: float | None, t_begin: float,
) -> dict:
    from tqdm import tqdm

    from tvm_conformer.compiler.artifact import sha256_file
    from tvm_conformer.compiler.schedule_rules import rule_list
    from tvm_conformer.compiler.source import open_model

    device = target
    opts = opts or PipelineOptions(family=device.family)
    if trials < 1 or trials_per_round < 1:
        raise UserError("--trials and --trials-per-round must be at least 1")
    if rpc is None and not target_runs_here(device):
        raise UserError(f"code for {device.name} cannot run on this {platform.machine()} machine: "
                        "measure it on the device with --rpc-key KEY --tracker HOST:PORT")
    threads = threads or device.threads
    opts = opts.with_default_threads(threads)  # the seeds follow the policy of the pool they run on
    src = open_model(model)  # a checkpoint or a contract .onnx (tokens.txt beside it)
    log_dir = Path(log_dir) if log_dir else default_log_dir(device.name, src.config_hash)
    if minutes is not None and minutes <= 0:
        raise UserError("--minutes must be positive")
    manifest = _open_log_dir(log_dir, resume, src.config_hash, opts)
    chosen = select_tasks(extract_tasks(model, device, opts, frontend), tasks)
    if minutes is not None:
        chosen = hottest_first(chosen)
    log_dir.mkdir(parents=True, exist_ok=True)
    if manifest is None:
        entry = src.manifest_entry()
        model_info = {"config_hash": src.config_hash,
                      "config": entry.get("config") or entry.get("contract"),
                      "checkpoint": str(model), "checkpoint_sha256": sha256_file(model)}
        runner_name = f"rpc:{rpc.key}" if rpc else "local"
        manifest = tdb.new_manifest(device, device_identity(device, rpc), model_info, opts,
                                    threads, runner_name)

    db = ms.database.JSONDatabase(work_dir=str(log_dir))
    shared = tdb.log_dir_for(device.name)
    if log_dir != shared and rpc is None:
        copied = transfer_records(shared, db, chosen, manifest.get("device"), manifest)
        for task in chosen:  # counted as the database's records, not as this session's trials
            if task.name in copied:
                manifest["tasks"][task.name] = {"weight": task.weight, "groups": sorted(task.groups),
                                                "records": copied[task.name],
                                                "copied_from": str(shared)}
        if copied and progress:
            print(f"{sum(copied.values())} records of {shared} apply to {len(copied)} of this "
                  "model's kernels (same structure and shapes): copied, those kernels start "
                  "from them", file=sys.stderr)
    done = records_per_task(db, chosen)
    todo = [t for t in chosen
            if len(done[t.name]) < trials and not manifest["tasks"].get(t.name, {}).get("exhausted")]
    target_tvm = device.tvm()
    rules = rule_list(device.family, opts.serial_below())
    builder, runner = make_builder(device), make_runner(rpc)
    cost_model = ms.cost_model.XGBModel(num_tuning_cores=os.cpu_count() or 1)
    load = busy_machine_warning(rpc)
    session = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "tasks": tasks,
               "trials_per_task": trials, "threads": threads, "trials": 0, "wall_seconds": 0.0,
               "load_average": load}
    manifest["sessions"].append(session)
    tdb.write_manifest(log_dir, manifest)  # before the first record: a killed run stays resumable
    start = time.time()
    total = tqdm(total=sum(trials - len(done[t.name]) for t in todo), desc="all tasks",
                 unit="trial", position=0, disable=not progress)

    def record(task: Task, finished: bool) -> None:
        times = records_per_task(db, [task])[task.name]
        measured = len(records_per_task(db, [task], failed=True)[task.name])
        entry = manifest["tasks"].setdefault(task.name, {"weight": task.weight,
                                                         "groups": sorted(task.groups)})
        before = entry.get("records", 0)
        entry["records"] = len(times)
        entry["best_us"] = round(min(times) * 1e6, 3) if times and min(times) < FAILED_SECONDS else None
        entry["failed"] = measured - len(times)
        # the search space ran dry before `trials` (failed candidates count as tried here):
        # resuming would find nothing new
        entry["exhausted"] = finished and measured < trials
        session["trials"] += len(times) - before
        session["wall_seconds"] = round(time.time() - start, 1)
        tdb.write_manifest(log_dir, manifest)

    finished: set[str] = set()

    def over_budget() -> bool:
        return minutes is not None and time.time() - t_begin > minutes * 60

    try:
        with _clean_interrupt(), _measuring_threads(threads):
            for i, task in enumerate(todo):
                if over_budget():
                    print(f"tuning budget of {minutes:g} min spent after {i} of {len(todo)} "
                          "kernels (hottest first); `--resume` continues", file=sys.stderr)
                    break
                remaining = trials - len(done[task.name])
                bar = tqdm(total=remaining, desc=f"[{i + 1}/{len(todo)}] {task.name[:40]}",
                           unit="trial", position=1, leave=False, disable=not progress)
                if not done[task.name]:
                    seeded = min(remaining, seed_with_rules(task, rules, target_tvm, builder,
                                                            runner, db))
                    bar.update(seeded)
                    total.update(seeded)
                    remaining -= seeded
                try:
                    while remaining > 0 and not over_budget():
                        # on a budget, a few trials at a time: the budget is checked between them
                        chunk = remaining if minutes is None else min(remaining, BUDGET_CHUNK)
                        ctx = ms.TuneContext(
                            mod=task.mod, target=target_tvm,
                            space_generator="post-order-apply",
                            search_strategy=ms.search_strategy.EvolutionarySearch(
                                population_size=min(512, max(64, 4 * chunk))),
                            task_name=task.name, logger=_task_logger(log_dir, task),
                            rand_state=-1 if seed is None else seed,
                            num_threads=os.cpu_count() or 1,
                        ).clone()
                        ms.tune_tasks(
                            tasks=[ctx], task_weights=[1.0], work_dir=str(log_dir),
                            max_trials_global=chunk, max_trials_per_task=chunk,
                            num_trials_per_iter=min(chunk, trials_per_round),
                            builder=builder, runner=runner, database=db, cost_model=cost_model,
                            measure_callbacks=[
                                *ms.measure_callback.MeasureCallback.create("default"),
                                _Progress(bar, total)],
                            task_scheduler="round-robin",
                        )
                        left = trials - len(records_per_task(db, [task])[task.name])
                        if left >= remaining:
                            break  # nothing new measured: the search space ran dry
                        remaining = left
                finally:
                    bar.close()
                if remaining > 0 and over_budget():
                    print(f"tuning budget of {minutes:g} min spent in kernel {i + 1} of "
                          f"{len(todo)} (hottest first); `--resume` continues", file=sys.stderr)
                    break  # the finally below records this task as unfinished
                record(task, finished=True)
                finished.add(task.name)
    finally:
        # also on Ctrl-C: what the interrupted task measured is in the database already
        for task in chosen:
            if task.name not in finished and (task in todo or task.name not in manifest["tasks"]):
                record(task, finished=False)
        total.close()
    return manifest

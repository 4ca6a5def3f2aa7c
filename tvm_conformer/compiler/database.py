"""Tuning databases: `tuning_logs/<target>/` and the manifest that says what they are valid for.

    database_workload.json        MetaSchedule's JSONDatabase: one kernel (workload) a line
    database_tuning_record.json   one measured schedule a line, appended as it is measured
    manifest.json                 model config hash, pipeline options, TVM version, device,
                                  trials and wall time per task and session

`compile` applies a target's database only when the manifest matches the model config, the
pipeline options that shape the kernels and the TVM version (`default_database`).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tvm_conformer.errors import UserError
from tvm_conformer.paths import TUNING_LOGS_DIR

FORMAT = 1
MANIFEST = "manifest.json"
WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
# Pipeline options that change the kernels (and so the workloads); the others do not.
# `pack_weights` is not among them: it replaces the matmul kernels by others (workloads of their
# own, a weight operand of another shape) and changes no other kernel, and records are looked
# up by the workload's structural hash, so a database tuned either way applies correctly to a
# build made the other way: its matmul records just find no kernel (the rules schedule those).
KERNEL_OPTIONS = ("family", "passes", "precision", "numerics", "fast_exp",
                  "streamline", "parallel_min_flops")


class DatabaseMismatchWarning(UserWarning):
    """A tuning database exists for the target but was tuned for something else."""


def log_dir_for(target: str, logs_dir: Path | None = None) -> Path:
    """`tuning_logs/<target>` (or under `logs_dir`)."""
    return (logs_dir or TUNING_LOGS_DIR) / target


def model_log_dir(target: str, model_cfg_hash: str, logs_dir: Path | None = None) -> Path:
    """`tuning_logs/<target>-<model config hash>`: where `tune --model M` keeps the database of
    a model other than the one `tuning_logs/<target>` was tuned for."""
    return (logs_dir or TUNING_LOGS_DIR) / f"{target}-{model_cfg_hash}"


def kernel_options(opts: Any) -> dict[str, Any]:  # noqa: ANN401 - PipelineOptions
    """The pipeline options a database depends on, as the manifest records them."""
    d = opts.to_dict()
    return {k: d[k] for k in KERNEL_OPTIONS}


def tvm_version() -> str:
    import tvm

    return tvm.__version__


def host_cpu() -> str:
    """This machine's CPU model (from /proc/cpuinfo), e.g. "AMD EPYC 9B45"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model", "Hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def read_manifest(log_dir: Path) -> dict | None:
    """The manifest of a tuning log directory (None if it has none); UserError if corrupted."""
    path = log_dir / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is corrupted (not JSON: {exc}); restore it from git or re-tune "
                        f"with `tvm-conformer tune`") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{path} is not a tuning manifest of format {FORMAT}; re-tune with "
                        "`tvm-conformer tune`")
    return manifest


def check_database(log_dir: Path) -> int:
    """Number of tuning records; UserError naming the file and line if either file is
    corrupted, or if a record does not belong to the workload it names: its arguments must be
    the workload's and its trace must replay on the workload's kernel (two `tune` runs into one
    directory used to attach records to the wrong workloads)."""
    counts = {}
    entries: dict[str, list] = {}
    for name in (WORKLOADS, RECORDS):
        path = log_dir / name
        if not path.is_file():
            raise UserError(f"{log_dir} has a manifest but no {name}; restore it from git or "
                            "re-tune with `tvm-conformer tune`")
        entries[name] = []
        n = 0
        with open(path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):  # noqa: B007 - n counts the lines
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    entry = None
                if not (isinstance(entry, list) and len(entry) == 2):
                    raise UserError(f"{path} line {n} is corrupted (not a JSON record); restore "
                                    "it from git or re-tune with `tvm-conformer tune`")
                if name == RECORDS and not (isinstance(entry[0], int)
                                            and 0 <= entry[0] < counts[WORKLOADS]):
                    raise UserError(
                        f"{path} line {n} refers to workload {entry[0]}, but {WORKLOADS} has "
                        f"{counts[WORKLOADS]}: the pair is out of step (a copy of one file "
                        "without the other); restore both from git or re-tune with "
                        "`tvm-conformer tune`")
                entries[name].append(entry)
        counts[name] = n
    _replay_records(log_dir, entries[WORKLOADS], entries[RECORDS])
    return counts[RECORDS]


def _replay_records(log_dir: Path, workloads: list, records: list) -> None:
    """Every record's trace applied to its own workload's kernel, its arguments compared."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    path = log_dir / RECORDS
    fix = ("records crossed between workloads (two `tune` runs on one --log-dir?); restore "
           "both files from git or re-tune with `tvm-conformer tune` into a new --log-dir")
    parsed: dict[int, tuple] = {}
    for n, (index, record) in enumerate(records, 1):
        if index not in parsed:
            try:
                wl = ms.database.Workload.from_json(workloads[index])
                args = [str(a.as_json()) for a in ms.arg_info.ArgInfo.from_prim_func(wl.mod["main"])]
            except Exception as exc:  # noqa: BLE001 - any unreadable workload
                raise UserError(f"{log_dir / WORKLOADS} line {index + 1} is not a workload "
                                f"({_first_line(exc)}); restore it from git or re-tune") from None
            parsed[index] = (wl, args)
        wl, args = parsed[index]
        try:  # from_json replays the trace on the workload's kernel to rebuild it
            rec = ms.database.TuningRecord.from_json(record, wl)
            rec.trace.apply_to_schedule(tvm.s_tir.Schedule(wl.mod), remove_postproc=False)
        except Exception as exc:  # noqa: BLE001 - TVM raises its own error kinds
            raise UserError(f"{path} line {n} is a record of workload {index} that does not "
                            f"replay on it ({_first_line(exc)}): {fix}") from None
        got = [str(a.as_json()) for a in rec.args_info]
        if got != args:
            raise UserError(f"{path} line {n} is a record of workload {index} that does not fit "
                            f"it (arguments {got} vs the kernel's {args}): {fix}")


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and "not rendered" not in ln]
    return f"{type(exc).__name__}: {lines[-1]}"[:160] if lines else type(exc).__name__


def drop_torn_last_records(log_dir: Path) -> list[str]:
    """Drops a half-written last line (a `tune` killed mid-write: no newline, not JSON) of
    each database file; returns what was dropped, for a warning. Other lines are untouched."""
    dropped = []
    for name in (WORKLOADS, RECORDS):
        path = log_dir / name
        if not path.is_file():
            continue
        data = path.read_bytes()
        if not data or data.endswith(b"\n"):
            continue
        cut = data.rfind(b"\n") + 1
        try:
            json.loads(data[cut:])
        except ValueError:
            with open(path, "r+b") as f:
                f.truncate(cut)
            line = data.count(b"\n") + 1
            dropped.append(f"{path} line {line} ({len(data) - cut} bytes)")
        else:  # a whole record without its newline: keep it, end the line
            with open(path, "ab") as f:
                f.write(b"\n")
    return dropped


LOCK = "tune.lock"


@contextlib.contextmanager
def lock_log_dir(log_dir: Path) -> Iterator[None]:
    """Holds `log_dir` for one `tune`: UserError naming the holder's pid if another has it.
    (flock: the lock dies with its process, so a killed run leaves nothing to clean up.)"""
    import fcntl

    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / LOCK
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise UserError(f"{log_dir} is being tuned by another `tune` (pid {holder}): wait "
                            "for it to finish, or tune into another --log-dir") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


def mismatch(manifest: dict, model_cfg_hash: str, opts: Any) -> str | None:  # noqa: ANN401
    """Why a database with `manifest` does not fit this build, or None if it does."""
    if manifest["model"]["config_hash"] != model_cfg_hash:
        return (f"it was tuned for model config {manifest['model']['config_hash']}, "
                f"this model is {model_cfg_hash}")
    if manifest["pipeline"] != kernel_options(opts):
        return f"it was tuned with pipeline {manifest['pipeline']}, this build uses {kernel_options(opts)}"
    if manifest["tvm_version"] != tvm_version():
        return f"it was tuned with TVM {manifest['tvm_version']}, this is TVM {tvm_version()}"
    return thread_mismatch(manifest, opts)


def thread_mismatch(manifest: dict, opts: Any) -> str | None:  # noqa: ANN401 - PipelineOptions
    """Why a database's records do not fit this build's thread count, or None. Its schedules
    were measured (and parallelized) for its pool: records tuned on 2 threads put parallel
    loops into a 1-thread build, where they are not the fastest either."""
    tuned_on, runs_on = manifest.get("threads"), getattr(opts, "threads", None)
    if tuned_on is not None and runs_on and tuned_on != runs_on:
        return f"it was tuned on {tuned_on} threads, this build runs on {runs_on}"
    return None


def database_dir(target: str, model_cfg_hash: str, logs_dir: Path | None = None) -> Path:
    """Where a build of this model for `target` looks for its database: the model's own
    (`tune --model M` wrote it), else `tuning_logs/<target>`."""
    own = model_log_dir(target, model_cfg_hash, logs_dir)
    return own if read_manifest(own) is not None else log_dir_for(target, logs_dir)


def default_database(
    target: Any,  # noqa: ANN401 - str or DeviceTarget
    model_cfg_hash: str,
    opts: Any,  # noqa: ANN401 - PipelineOptions
    logs_dir: Path | None = None,
) -> str | None:
    """`tuning_logs/<target>-<model config hash>` (what `tune --model M` wrote for this model),
    else `tuning_logs/<target>`, if its manifest matches this model and pipeline, else None.

    A mismatch warns (DatabaseMismatchWarning) and builds without it; a corrupted manifest
    or database raises UserError, so no build silently ignores or misreads it.
    """
    name = target if isinstance(target, str) else target.name
    log_dir = database_dir(name, model_cfg_hash, logs_dir)
    manifest = read_manifest(log_dir)
    if manifest is None:
        return None
    check_database(log_dir)
    why = mismatch(manifest, model_cfg_hash, opts)
    if why is not None:
        warnings.warn(f"not applying the tuning database {log_dir}: {why}; re-tune with "
                      f"`tvm-conformer tune --target {name}` or pass --database DIR",
                      DatabaseMismatchWarning, stacklevel=2)
        return None
    return str(log_dir)


def new_manifest(target: Any, device_identity: str, model: dict, opts: Any,  # noqa: ANN401
                 threads: int, runner: str) -> dict:
    """The manifest of a fresh tuning log directory (no tasks, no sessions yet)."""
    return {
        "format": FORMAT,
        "target": {"name": target.name, "tvm": json.loads(str(target.tvm())),
                   "device": device_identity},
        "model": model,
        "pipeline": kernel_options(opts),
        "tvm_version": tvm_version(),
        "threads": threads,
        "runner": runner,
        "tasks": {},
        "sessions": [],
        "trials": 0,
        "wall_seconds": 0.0,
    }


def write_manifest(log_dir: Path, manifest: dict) -> None:
    """Writes the manifest atomically (a crash leaves the old one or the new one)."""
    manifest["trials"] = sum(t["records"] for t in manifest["tasks"].values())
    manifest["wall_seconds"] = round(sum(s["wall_seconds"] for s in manifest["sessions"]), 1)
    manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    tmp = log_dir / f"{MANIFEST}.{os.getpid()}.tmp"  # never shared with another writer
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    tmp.replace(log_dir / MANIFEST)

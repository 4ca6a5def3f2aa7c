"""A tuning database nothing can corrupt silently (issue 18, items 1, 7, 8): one `tune` per log
directory (a lock), every record replayed on its own workload, a torn last record dropped on
resume, failed measurements retried. Small synthetic databases: two TIR kernels, no model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import tvm
from tvm import te
from tvm.s_tir import meta_schedule as ms

from tvm_conformer.compiler import database as tdb
from tvm_conformer.compiler.pipeline import PipelineOptions
from tvm_conformer.errors import UserError

TARGET = tvm.target.Target({"kind": "llvm"})


def _kernel(shape: tuple[int, int], name: str) -> tvm.IRModule:
    a = te.placeholder(shape, name="A")
    b = te.compute(shape, lambda i, j: a[i, j] * 2.0, name=name)
    return tvm.IRModule({"main": te.create_prim_func([a, b]).with_attr("global_symbol", "main")})


def _scheduled(mod: tvm.IRModule, block: str, factor: int) -> tvm.s_tir.Schedule:
    sch = tvm.s_tir.Schedule(mod)
    i, _ = sch.get_loops(sch.get_sblock(block))
    sch.split(i, [None, factor])
    return sch


def make_database(log_dir: Path, run_secs: list[list[float] | None] | None = None) -> None:
    """Two workloads (16x16 "B", 8x32 "C"), two records each, and a manifest of `abc`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    db = ms.database.JSONDatabase(work_dir=str(log_dir))
    secs = iter(run_secs or [[1e-5]] * 4)
    for shape, block in (((16, 16), "B"), ((8, 32), "C")):
        mod = _kernel(shape, block)
        wl = db.commit_workload(mod)
        args = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
        for factor in (2, 4):
            db.commit_tuning_record(ms.database.TuningRecord(
                _scheduled(mod, block, factor).trace, wl, next(secs), TARGET, args))
    manifest = {"format": tdb.FORMAT, "model": {"config_hash": "abc"},
                "pipeline": tdb.kernel_options(PipelineOptions()),
                "tvm_version": tdb.tvm_version(), "tasks": {}, "sessions": []}
    (log_dir / tdb.MANIFEST).write_text(json.dumps(manifest))


def test_a_consistent_database_passes(tmp_path):
    make_database(tmp_path / "db")
    assert tdb.check_database(tmp_path / "db") == 4


def test_records_crossed_between_workloads_are_refused(tmp_path):
    """Item 1: two `tune` runs number workloads each from their own view, so a record ends
    up on the wrong workload; the old check saw only that the index was in range."""
    log_dir = tmp_path / "db"
    make_database(log_dir)
    lines = (log_dir / tdb.RECORDS).read_text().splitlines()
    crossed = []
    for line in lines:
        wl, rest = json.loads(line)
        crossed.append(json.dumps([1 - wl, rest]))
    (log_dir / tdb.RECORDS).write_text("\n".join(crossed) + "\n")
    with pytest.raises(UserError, match=r"line 1 .*workload 1.*does not (replay|fit)") as exc:
        tdb.check_database(log_dir)
    assert "\n" not in str(exc.value)


def test_one_record_on_the_wrong_workload_is_named(tmp_path):
    log_dir = tmp_path / "db"
    make_database(log_dir)
    lines = (log_dir / tdb.RECORDS).read_text().splitlines()
    wl, rest = json.loads(lines[2])  # the first record of workload 1, moved to workload 0
    lines[2] = json.dumps([0, rest])
    (log_dir / tdb.RECORDS).write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"line 3 "):
        tdb.check_database(log_dir)


def test_a_second_tune_on_the_same_log_dir_refuses_naming_the_holder(tmp_path, tiny_checkpoint):
    """Item 1: the directory is locked while a `tune` writes it."""
    from tvm_conformer.tune.tuner import tune

    log_dir = tmp_path / "db"
    make_database(log_dir)
    with tdb.lock_log_dir(log_dir):
        with pytest.raises(UserError, match=rf"pid {os.getpid()}") as exc:
            tune("host", tiny_checkpoint, tasks="no-such-kernel", log_dir=log_dir, resume=True,
                 progress=False)
    assert "\n" not in str(exc.value)
    with tdb.lock_log_dir(log_dir):  # released: the next run gets it
        pass


def test_the_lock_is_held_by_the_open_file_not_by_a_leftover(tmp_path):
    """A lock file a killed run left behind does not block: flock dies with its holder."""
    log_dir = tmp_path / "db"
    log_dir.mkdir()
    (log_dir / tdb.LOCK).write_text("12345\n")
    with tdb.lock_log_dir(log_dir):
        assert (log_dir / tdb.LOCK).read_text().strip() == str(os.getpid())


def test_resume_drops_a_torn_last_record_with_a_warning(tmp_path, capsys):
    """Item 7: a tune killed mid-write leaves half a line; resume used to stop on it."""
    from tvm_conformer.tune.tuner import _open_log_dir

    log_dir = tmp_path / "db"
    make_database(log_dir)
    path = log_dir / tdb.RECORDS
    whole = path.read_text()
    path.write_text(whole + whole.splitlines()[0][:57])  # no newline: torn
    manifest = _open_log_dir(log_dir, True, "abc", PipelineOptions())
    assert manifest is not None and path.read_text() == whole
    assert "torn" in capsys.readouterr().err
    # a corrupted line that is not the last one is not "torn": still refused
    lines = whole.splitlines()
    path.write_text("\n".join([lines[0][:40], *lines[1:]]) + "\n")
    with pytest.raises(UserError, match="line 1 is corrupted"):
        _open_log_dir(log_dir, True, "abc", PipelineOptions())


def test_compile_with_a_torn_database_is_one_line(tmp_path, tiny_checkpoint):
    """Item 7: `compile --database` on a torn database gave `parallel_for_dynamic ...
    Unexpected EOF` from inside TVM."""
    from tvm_conformer.compiler.compile import compile_artifact

    log_dir = tmp_path / "db"
    make_database(log_dir)
    path = log_dir / tdb.RECORDS
    path.write_text(path.read_text() + '[0, [[["get_sblock"')
    opts = PipelineOptions(database=str(log_dir))
    with pytest.raises(UserError, match="line 5") as exc:
        compile_artifact(tmp_path / "art", "host", tiny_checkpoint, opts=opts, quiet=True)
    assert "\n" not in str(exc.value)


def test_failed_measurements_do_not_count_as_trials(tmp_path):
    """Item 8: a candidate measured on a device that died has no run time; it is not a
    trial done, so `--resume` measures the task again."""
    from types import SimpleNamespace

    from tvm_conformer.tune.tuner import records_per_task

    log_dir = tmp_path / "db"
    make_database(log_dir, run_secs=[[1e-5], None, None, None])
    db = ms.database.JSONDatabase(work_dir=str(log_dir))
    tasks = [SimpleNamespace(name=n, mod=_kernel(s, n)) for s, n in (((16, 16), "B"), ((8, 32), "C"))]
    done = records_per_task(db, tasks)
    assert len(done["B"]) == 1 and len(done["C"]) == 0

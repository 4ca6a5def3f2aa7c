"""Auto-tuning: task groups, a local tune that compile then applies, resume after a kill, RPC."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch

from tvm_conformer.compiler import database as tdb
from tvm_conformer.compiler.pipeline import PipelineOptions
from tvm_conformer.errors import UserError
from tvm_conformer.model import load_checkpoint
from tvm_conformer.targets import load_target

if TYPE_CHECKING:
    from board_fixtures import EmulatedBoard

pytest_plugins = ["board_fixtures"]

CONV1D = "fused_conv1d"  # the convolution module's depthwise conv1d: the smallest depthwise task


@pytest.fixture(scope="module")
def tiny_tasks(tiny_checkpoint: Path) -> list:
    from tvm_conformer.tune.tasks import extract_tasks

    return extract_tasks(tiny_checkpoint, load_target("host"), PipelineOptions())


def _conv_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, torch.nn.Conv1d | torch.nn.Conv2d)]


@pytest.mark.slow
def test_groups_match_the_models_convolutions(tiny_checkpoint: Path, tiny_tasks: list) -> None:
    """depthwise/conv tasks are the model's depthwise/all convs (calls counted per step)."""
    from tvm_conformer.tune.tasks import select_tasks

    model, _ = load_checkpoint(tiny_checkpoint)
    convs = _conv_modules(model.encoder)
    depthwise = [m for m in convs if m.groups == m.in_channels > 1]
    assert sum(t.weight for t in select_tasks(tiny_tasks, "depthwise")) == len(depthwise)
    assert sum(t.weight for t in select_tasks(tiny_tasks, "conv")) == len(convs)
    attention = select_tasks(tiny_tasks, "attention")
    # per block: scores (q k^T), attention (p v), softmax
    assert sum(t.weight for t in attention) == 3 * model.cfg.n_layers
    assert any("softmax" in t.name for t in attention)
    assert select_tasks(tiny_tasks, "all") == tiny_tasks
    assert [t.name for t in select_tasks(tiny_tasks, "^fused_conv1d")] == [
        t.name for t in tiny_tasks if t.name.startswith("fused_conv1d")]
    with pytest.raises(UserError, match="selects no kernel"):
        select_tasks(tiny_tasks, "no-such-kernel")


def _manifest(tmp: Path, config_hash: str, **pipeline: object) -> Path:
    log_dir = tmp / "host"
    log_dir.mkdir(parents=True)
    (log_dir / tdb.WORKLOADS).write_text("")
    (log_dir / tdb.RECORDS).write_text("")
    manifest = {"format": tdb.FORMAT, "model": {"config_hash": config_hash},
                "pipeline": {**tdb.kernel_options(PipelineOptions()), **pipeline},
                "tvm_version": tdb.tvm_version()}
    (log_dir / tdb.MANIFEST).write_text(json.dumps(manifest))
    return log_dir


def test_default_database_applies_only_a_matching_manifest(tmp_path: Path) -> None:
    opts = PipelineOptions()
    assert tdb.default_database("host", "abc", opts, logs_dir=tmp_path) is None  # none there
    log_dir = _manifest(tmp_path, "abc")
    assert tdb.default_database("host", "abc", opts, logs_dir=tmp_path) == str(log_dir)
    with pytest.warns(tdb.DatabaseMismatchWarning, match="model config"):
        assert tdb.default_database("host", "other", opts, logs_dir=tmp_path) is None
    with pytest.warns(tdb.DatabaseMismatchWarning, match="pipeline"):
        fp16 = PipelineOptions(precision="fp16")
        assert tdb.default_database("host", "abc", fp16, logs_dir=tmp_path) is None


def test_stale_tvm_version_warns(tmp_path: Path) -> None:
    log_dir = _manifest(tmp_path, "abc")
    manifest = json.loads((log_dir / tdb.MANIFEST).read_text())
    (log_dir / tdb.MANIFEST).write_text(json.dumps({**manifest, "tvm_version": "0.1"}))
    with pytest.warns(tdb.DatabaseMismatchWarning, match="TVM 0.1"):
        assert tdb.default_database("host", "abc", PipelineOptions(), logs_dir=tmp_path) is None


def test_corrupted_database_is_a_one_line_error(tmp_path: Path) -> None:
    log_dir = _manifest(tmp_path, "abc")
    (log_dir / tdb.WORKLOADS).write_text('["hash", "workload"]\n')
    (log_dir / tdb.RECORDS).write_text('[0, ["trace"]]\n{"truncated": \n')
    with pytest.raises(UserError, match="line 2 is corrupted") as err:
        tdb.default_database("host", "abc", PipelineOptions(), logs_dir=tmp_path)
    assert "\n" not in str(err.value)
    # records of a workload file that was not saved with them (TVM would fail deep inside)
    (log_dir / tdb.RECORDS).write_text('[0, ["trace"]]\n[1, ["trace"]]\n')
    with pytest.raises(UserError, match="line 2 refers to workload 1, but .* has 1") as err:
        tdb.default_database("host", "abc", PipelineOptions(), logs_dir=tmp_path)
    assert "\n" not in str(err.value)
    (log_dir / tdb.MANIFEST).write_text("{not json")
    with pytest.raises(UserError, match="manifest.json is corrupted"):
        tdb.default_database("host", "abc", PipelineOptions(), logs_dir=tmp_path)


def _records(log_dir: Path) -> list[str]:
    path = log_dir / tdb.RECORDS
    return path.read_text().splitlines() if path.is_file() else []


@pytest.mark.slow
def test_local_tune_is_applied_by_compile(tiny_checkpoint: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A short tune writes a database that `compile` picks up by default; numbers still match."""
    from tvm_conformer.compiler.compile import compile_artifact
    from tvm_conformer.runtime.backend import TorchBackend
    from tvm_conformer.runtime.tvm_backend import TVMBackend
    from tvm_conformer.tune.tuner import tune

    monkeypatch.setattr(tdb, "TUNING_LOGS_DIR", tmp_path / "tuning_logs")
    log_dir = tdb.log_dir_for("host")
    manifest = tune("host", tiny_checkpoint, tasks=CONV1D, trials=4, threads=1,
                    progress=False, seed=0)
    model, _ = load_checkpoint(tiny_checkpoint)
    assert manifest["model"]["config_hash"] == model.cfg.hash()
    assert manifest["tvm_version"] == tdb.tvm_version() and manifest["threads"] == 1
    [(name, task)] = manifest["tasks"].items()
    assert name.startswith(CONV1D) and task["records"] == len(_records(log_dir)) >= 1
    assert task["best_us"] > 0 and manifest["sessions"][0]["trials"] == task["records"]
    # every record can be applied: the database's queries see them all (the plain-loop seed
    # once had an empty trace, which they skip)
    from tvm.s_tir import meta_schedule as ms

    from tvm_conformer.tune.tasks import extract_tasks, select_tasks
    from tvm_conformer.tune.tuner import FAILED_SECONDS, records_per_task

    db = ms.database.JSONDatabase(work_dir=str(log_dir))
    [conv] = select_tasks(extract_tasks(tiny_checkpoint, load_target("host"), PipelineOptions()), CONV1D)
    measured = [t for t in records_per_task(db, [conv])[conv.name] if t < FAILED_SECONDS]
    assert len(measured) >= 2  # the two seeds at least
    assert len(db.get_top_k(db.commit_workload(conv.mod), 100)) == len(measured)
    assert json.loads((log_dir / tdb.MANIFEST).read_text()) == manifest

    # built for the thread count it was tuned on (records of another count are not applied:
    # test_database_threads.py)
    one_thread = PipelineOptions(threads=1)
    built = compile_artifact(tmp_path / "art", "host", tiny_checkpoint, opts=one_thread, quiet=True)
    assert built["database"]["path"] == str(log_dir) and built["database"]["default"]
    assert built["database"]["records"] == task["records"]
    tvm_be, torch_be = TVMBackend.load(tmp_path / "art"), TorchBackend(model)
    cfg = model.cfg
    rng = np.random.default_rng(0)
    mask = np.ones((1, cfg.left_frames + cfg.chunk_size), np.float32)
    s_tvm, s_torch = tvm_be.initial_state(), torch_be.initial_state()
    for _ in range(3):  # the caches carry over: later chunks see earlier ones
        feats = rng.standard_normal((1, cfg.chunk_input_frames, cfg.n_mels)).astype(np.float32)
        out_tvm, s_tvm = tvm_be.step(s_tvm, feats, mask)
        out_torch, s_torch = torch_be.step(s_torch, feats, mask)
        np.testing.assert_allclose(out_tvm, out_torch, rtol=1e-4, atol=1e-4)

    untuned = compile_artifact(tmp_path / "plain", "host", tiny_checkpoint, opts=one_thread,
                               quiet=True, use_default_database=False)
    assert untuned["database"] is None


def _tune_cmd(checkpoint: Path, log_dir: Path, trials: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tvm_conformer", "tune", "--target", "host",
            "--model", str(checkpoint), "--tasks", CONV1D, "--trials", str(trials),
            "--trials-per-round", "2", "--threads", "1", "--log-dir", str(log_dir), *extra]


@pytest.mark.slow
def test_resume_after_a_killed_run_keeps_every_record(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Killing a tune after its first records loses none of them, and --resume only appends."""
    log_dir = tmp_path / "logs"
    proc = subprocess.Popen(_tune_cmd(tiny_checkpoint, log_dir, 6), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 900
        while not _records(log_dir):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no record within 15 min"
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its builder/runner workers
        proc.wait()
    before = _records(log_dir)
    assert 1 <= len(before) < 6

    again = subprocess.run(_tune_cmd(tiny_checkpoint, log_dir, 6), capture_output=True, text=True)
    assert again.returncode == 2 and "--resume" in again.stderr  # never overwrites records

    resumed = subprocess.run(_tune_cmd(tiny_checkpoint, log_dir, 6, "--resume"),
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = _records(log_dir)
    assert after[: len(before)] == before and len(after) >= 6
    manifest = json.loads((log_dir / tdb.MANIFEST).read_text())
    assert sum(t["records"] for t in manifest["tasks"].values()) == len(after)

    # everything tuned: a further --resume measures nothing
    done = subprocess.run(_tune_cmd(tiny_checkpoint, log_dir, 6, "--resume"),
                          capture_output=True, text=True)
    assert done.returncode == 0 and _records(log_dir) == after


@pytest.mark.slow
@pytest.mark.board
def test_tune_over_rpc_on_the_emulated_board(emulated_board: EmulatedBoard, tiny_checkpoint: Path,
                                             tmp_path: Path) -> None:
    """Candidates cross-compiled for Cortex-A55 are measured on the board and recorded: the
    two seeds (the rules' schedule, the plain loops) and one from the evolutionary search."""
    from tvm_conformer.tune.tuner import FAILED_SECONDS, RPCDevice, records_per_task, tune

    board = emulated_board
    device = load_target("wearable-a55")
    rpc = RPCDevice(board.tracker_host, board.tracker_port, board.key)
    manifest = tune(device, tiny_checkpoint, tasks=CONV1D, trials=3, log_dir=tmp_path,
                    rpc=rpc, progress=False, seed=0, trials_per_round=2)
    assert manifest["runner"] == f"rpc:{board.key}" and board.key in manifest["target"]["device"]
    assert manifest["target"]["tvm"]["mtriple"] == "aarch64-linux-gnu"
    [task] = manifest["tasks"].values()
    assert task["records"] == 3 and task["best_us"] is not None

    from tvm.s_tir import meta_schedule as ms

    from tvm_conformer.tune.tasks import extract_tasks, select_tasks

    db = ms.database.JSONDatabase(work_dir=str(tmp_path))
    [conv] = select_tasks(extract_tasks(tiny_checkpoint, device, PipelineOptions()), CONV1D)
    times = records_per_task(db, [conv])[conv.name]
    assert len(times) == 3 and all(0 < t < FAILED_SECONDS for t in times)


def test_tuning_on_a_busy_machine_warns(capsys: pytest.CaptureFixture) -> None:
    from tvm_conformer.tune.tuner import busy_machine_warning

    assert busy_machine_warning(None, load=0.4, cores=2) == 0.4
    assert capsys.readouterr().err == ""
    assert busy_machine_warning(None, load=3.5, cores=2) == 3.5
    assert "busy (load average 3.5 on 2 cores)" in capsys.readouterr().err
    assert busy_machine_warning(object(), load=9.0, cores=2) is None  # a device measures itself


def test_report_measures_the_untuned_kernel_and_finds_its_records(shipped_checkpoint: Path) -> None:
    """The report's variants of a kernel of the shipped model: the task's own module stays
    unscheduled (the rules once scheduled it in place, so "untuned" measured the rules and no
    record matched any more), and the committed host database's record of it is found."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from tvm_conformer.paths import TUNING_LOGS_DIR
    from tvm_conformer.tune.report import kernel_variants
    from tvm_conformer.tune.tasks import extract_tasks, select_tasks

    device = load_target("host")
    task = select_tasks(extract_tasks(shipped_checkpoint, device, PipelineOptions()), "depthwise")[0]
    before = tvm.ir.save_json(task.mod)
    log_dir = TUNING_LOGS_DIR / "host"
    db = ms.database.JSONDatabase(work_dir=str(log_dir))
    tuned_for = tvm.target.Target(tdb.read_manifest(log_dir)["target"]["tvm"])  # its CPU, not ours
    variants = kernel_variants(task, "cpu", tuned_for, db)
    assert tvm.ir.save_json(task.mod) == before
    assert variants["schedules"]["main"].attrs["tirx.is_scheduled"]
    assert not task.mod["main"].attrs.get("tirx.is_scheduled")
    assert variants["tuned"] is not None


def test_a_models_own_database_comes_first_and_new_models_get_their_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tvm_conformer.tune.tuner import default_log_dir

    monkeypatch.setattr(tdb, "TUNING_LOGS_DIR", tmp_path)
    assert default_log_dir("host", "xyz") == tmp_path / "host"  # nothing tuned yet: the shared one
    shared = _manifest(tmp_path, "abc")
    assert default_log_dir("host", "abc") == shared
    own = tdb.model_log_dir("host", "xyz")
    assert default_log_dir("host", "xyz") == own  # another model: never into the shipped one
    _manifest(tmp_path / "m", "xyz").rename(own)
    assert tdb.default_database("host", "xyz", PipelineOptions()) == str(own)
    assert tdb.default_database("host", "abc", PipelineOptions()) == str(shared)


def test_a_budget_tunes_the_kernels_with_most_flops_first(tiny_tasks: list) -> None:
    from tvm_conformer.compiler.schedule_rules import kernel_flops
    from tvm_conformer.tune.tuner import hottest_first

    work = [t.weight * kernel_flops(t.mod["main"]) for t in hottest_first(tiny_tasks)]
    assert work == sorted(work, reverse=True) and work[0] > work[-1]
    assert {t.name for t in hottest_first(tiny_tasks)} == {t.name for t in tiny_tasks}


@pytest.mark.slow
def test_a_spent_budget_starts_no_kernel(tiny_checkpoint: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    from tvm_conformer.tune.tuner import tune

    # the budget counts from the call: extracting the tasks alone spends 6 ms
    manifest = tune("host", tiny_checkpoint, tasks="all", trials=4, threads=1,
                    log_dir=tmp_path / "db", progress=False, minutes=1e-4)
    assert manifest["sessions"][-1]["trials"] == 0 and not _records(tmp_path / "db")
    assert "tuning budget of 0.0001 min spent after 0 of" in capsys.readouterr().err
    with pytest.raises(UserError, match="--minutes must be positive"):
        tune("host", tiny_checkpoint, trials=4, log_dir=tmp_path / "db2", minutes=0)

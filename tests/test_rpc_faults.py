"""Faults of a device run end in one-line errors: no tracker, no free device, a device that
disconnects or hangs mid-run (partial results kept), an artifact for another architecture."""

import gc
import os
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tvm_conformer.cli import main
from tvm_conformer.errors import UserError
from tvm_conformer.paths import DEFAULT_RECORDING
from tvm_conformer.rpc.results import read_results
from tvm_conformer.rpc.tracker import free_port

if TYPE_CHECKING:
    from board_fixtures import EmulatedBoard

    from tvm_conformer.rpc.board import BoardHandle

pytest_plugins = ["board_fixtures"]


def _tracker(board: "EmulatedBoard") -> str:
    return f"{board.tracker_host}:{board.tracker_port}"


@pytest.fixture(scope="module")
def spare_board(_board_session: "EmulatedBoard") -> Iterator[Callable[[], "BoardHandle"]]:
    """A running board of its own (a unique key, at the session's tracker) for tests that
    stop or kill it; a new one is started when the last one was killed."""
    from tvm_conformer.rpc.board import start_board

    boards: list[BoardHandle] = []

    def live() -> "BoardHandle":
        if not boards or boards[-1].proc.poll() is not None:
            key = f"pytest-spare-{uuid.uuid4().hex[:8]}"
            tracker = (_board_session.tracker_host, _board_session.tracker_port)
            boards.append(start_board(key, cpu=_board_session.cpu, tracker=tracker, timeout_s=900))
        return boards[-1]

    yield live
    for board in boards:
        _signal_group(board, signal.SIGCONT)
        board.stop()


def _signal_group(board: "BoardHandle", sig: signal.Signals) -> None:
    try:
        os.killpg(board.pid, sig)
    except ProcessLookupError:
        pass


def _break_before_step(monkeypatch: pytest.MonkeyPatch, step: int, fault: Callable[[], None]) -> None:
    """Run `fault` right before the device's `step`-th step (1-based)."""
    from tvm_conformer.rpc.backend import RPCBackend

    real_step = RPCBackend.step

    def step_with_fault(self, state, feats, att_mask):  # noqa: ANN001, ANN202
        if len(self.timings) == step - 1:
            fault()
        return real_step(self, state, feats, att_mask)

    monkeypatch.setattr(RPCBackend, "step", step_with_fault)


@pytest.mark.slow  # compiles the model
def test_unreachable_tracker_is_a_one_line_error(board_artifact: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    tracker = f"127.0.0.1:{free_port()}"
    argv = ["bench", "--rpc-key", "any", "--tracker", tracker, "--artifact", str(board_artifact)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: no RPC tracker at {tracker}") and "\n" not in err


@pytest.mark.board
@pytest.mark.slow
def test_busy_device_is_waited_for_then_a_one_line_error(
    emulated_board: "EmulatedBoard", board_artifact: Path, capsys: pytest.CaptureFixture
) -> None:
    from tvm_conformer.rpc.backend import make_rpc_backend
    from tvm_conformer.rpc.tracker import request_device

    held = request_device(emulated_board.tracker_host, emulated_board.tracker_port,
                          emulated_board.key, progress=False)
    try:
        with pytest.raises(UserError, match=r"all 1 devices with key .* stayed busy") as info:
            make_rpc_backend(board_artifact, emulated_board.key, _tracker(emulated_board),
                             timeout_s=3)
    finally:
        del held
        gc.collect()  # the session ends (the device is free again) when its object is freed
    assert "\n" not in str(info.value)
    assert f"waiting for a free device {emulated_board.key!r}" in capsys.readouterr().err


@pytest.mark.board
@pytest.mark.slow
def test_artifact_for_another_architecture_is_refused_before_upload(
    emulated_board: "EmulatedBoard", tiny_checkpoint: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tvm_conformer.compiler.compile import compile_artifact
    from tvm_conformer.rpc import backend

    compile_artifact(tmp_path, "host", tiny_checkpoint, quiet=True)

    def no_upload(*_args: object) -> None:
        raise AssertionError("uploaded an artifact the device cannot run")

    monkeypatch.setattr(backend, "_deploy", no_upload)
    with pytest.raises(UserError, match=r"built for host \(x86_64\) but device .* is aarch64 "
                                        r".*nothing was uploaded"):
        backend.make_rpc_backend(tmp_path, emulated_board.key, _tracker(emulated_board),
                                progress=False)


@pytest.mark.board
@pytest.mark.slow
def test_hung_device_times_out_and_keeps_partial_results(
    spare_board: Callable[[], "BoardHandle"], board_artifact: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tvm_conformer.rpc.runner import bench_rpc
    from tvm_conformer.rpc.watchdog import DeviceError

    board = spare_board()
    _break_before_step(monkeypatch, 3, lambda: _signal_group(board, signal.SIGSTOP))
    results = tmp_path / "rpc_results.jsonl"
    tracker = f"{board.tracker[0]}:{board.tracker[1]}"
    try:
        with pytest.raises(DeviceError, match=r"did not answer within 10 s while running step 3"):
            bench_rpc(board_artifact, board.key, tracker, [DEFAULT_RECORDING], results,
                      timeout_s=10, progress=False)
    finally:
        _signal_group(board, signal.SIGCONT)
    (record,) = read_results(results)
    assert record["partial"] is True and "did not answer" in record["error"]
    assert len(record["recordings"][0]["step_ms"]) == 2 and not record["recordings"][0]["complete"]


@pytest.mark.board
@pytest.mark.slow
def test_device_disconnect_mid_run_keeps_partial_results(
    spare_board: Callable[[], "BoardHandle"], board_artifact: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
) -> None:
    board = spare_board()
    _break_before_step(monkeypatch, 3, lambda: _signal_group(board, signal.SIGKILL))
    results_dir = tmp_path / "results"
    argv = ["bench", "--rpc-key", board.key, "--tracker", f"{board.tracker[0]}:{board.tracker[1]}",
            "--artifact", str(board_artifact), "--audio", str(DEFAULT_RECORDING),
            "--out", str(results_dir)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress lines
    assert err.startswith(f"error: device {board.key!r} failed while running step 3")
    (record,) = read_results(results_dir / "rpc_results.jsonl")
    assert record["partial"] is True and err.startswith(f"error: {record['error']}; the run so far")
    assert len(record["recordings"][0]["step_ms"]) == 2

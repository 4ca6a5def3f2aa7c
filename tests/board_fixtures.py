"""Pytest plugin: `emulated_board`, a session-wide tracker plus one emulated aarch64 board.

Use it with `pytest_plugins = ["board_fixtures"]` in a test module (tests/ is on sys.path).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BOARD_CPU = "cortex-a55"
BOARD_TARGET = "wearable-a55"  # targets/wearable-a55.toml: aarch64, cortex-a55
CROSS_CXX = "aarch64-linux-gnu-g++"


@dataclass(frozen=True)
class EmulatedBoard:
    """Where the test board is (ask `tracker_host:tracker_port` for device `key`), and the
    C++ cross compiler that links modules for it (`tvm.support.cc.cross_compiler(cross_cxx)`)."""

    tracker_host: str
    tracker_port: int
    key: str
    cpu: str
    cross_cxx: str


def require_tool(tool: str, package: str) -> None:
    """Skip when `tool` is missing, except in CI (`CI` set), where that is a failure."""
    if shutil.which(tool) is None:
        reason = f"{tool} is not installed (apt-get install {package})"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the board tests")
        pytest.skip(reason)


@pytest.fixture
def emulated_board(_board_session: EmulatedBoard) -> EmulatedBoard:
    """The session's board, once it is free again: after a session ends, the stock RPC server
    starts a fresh worker process (which imports TVM, minutes under qemu on a loaded machine)
    before it re-registers, so a test must not start with the previous test's 120 s timeout."""
    import gc
    import time

    from tvm_conformer.rpc.tracker import tracker_summary

    gc.collect()  # a session an earlier test left in a reference cycle ends now, not later
    board, deadline = _board_session, time.monotonic() + 900
    while time.monotonic() < deadline:
        summary = tracker_summary(board.tracker_host, board.tracker_port)
        if int(summary.get("queue_info", {}).get(board.key, {}).get("free", 0)) > 0:
            return board
        time.sleep(1.0)
    pytest.fail(f"the emulated board {board.key} was not free again within 900 s")


@pytest.fixture(scope="session")
def _board_session() -> Iterator[EmulatedBoard]:
    """A tracker on a free loopback port and one emulated board with a unique key."""
    require_tool("qemu-aarch64", "qemu-user")
    require_tool(CROSS_CXX, "g++-aarch64-linux-gnu")
    from tvm_conformer.rpc.board import start_board
    from tvm_conformer.rpc.board_setup import ensure_board_root
    from tvm_conformer.rpc.tracker import start_tracker

    ensure_board_root()
    key = f"pytest-{uuid.uuid4().hex[:8]}"
    # a loaded machine imports tvm slowly (minutes under qemu): generous start-up limits
    with start_tracker(port=0, timeout_s=180) as tracker:
        with start_board(key, cpu=BOARD_CPU, tracker=tracker.address, timeout_s=900):
            yield EmulatedBoard(tracker.host, tracker.port, key, BOARD_CPU, CROSS_CXX)


@pytest.fixture(scope="session")
def board_artifact(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model compiled for the board's core (BOARD_TARGET) and cross-linked as `compile`
    builds it, the project's schedule rules included (no tuning database: it is the host's), so
    the board tests check the rules' code on aarch64 against PyTorch too."""
    require_tool(CROSS_CXX, "g++-aarch64-linux-gnu")
    from tvm_conformer.compiler.compile import compile_artifact
    from tvm_conformer.compiler.pipeline import PipelineOptions

    out = tmp_path_factory.mktemp("board-artifact")
    compile_artifact(out, BOARD_TARGET, tiny_checkpoint, opts=PipelineOptions(family="cpu"),
                     quiet=True, use_default_database=False)
    return out

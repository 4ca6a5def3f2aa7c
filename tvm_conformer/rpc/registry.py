"""The state file of detached processes (`tvm-conformer board up`): the tracker and boards
started, each recorded by pid and start time so that a dead or reused pid is pruned; read and
written under a lock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tvm_conformer.rpc.board_setup import board_dir, locked

if TYPE_CHECKING:
    from tvm_conformer.rpc.board import BoardHandle
    from tvm_conformer.rpc.tracker import TrackerHandle


def _create_time(pid: int) -> float:
    import psutil

    return float(psutil.Process(pid).create_time())


def _alive(entry: dict[str, Any]) -> bool:
    """Whether the process recorded in `entry` still runs (same pid and start time)."""
    import psutil

    try:
        proc = psutil.Process(entry["pid"])
        return abs(proc.create_time() - entry["create_time"]) < 0.5 and proc.status() != "zombie"
    except psutil.NoSuchProcess:
        return False


def _state_path() -> Path:
    return board_dir(None) / "state.json"


@contextmanager
def board_state() -> Iterator[dict[str, Any]]:
    """The state file (tracker and boards, dead entries pruned) under a lock; saved on exit."""
    path = _state_path()
    with locked(path.with_suffix(".lock")):
        state = json.loads(path.read_text()) if path.is_file() else {}
        tracker = state.get("tracker")
        state["tracker"] = tracker if tracker and _alive(tracker) else None
        state["boards"] = [b for b in state.get("boards", []) if _alive(b)]
        yield state
        path.write_text(json.dumps(state, indent=1) + "\n")


def record(handle: TrackerHandle | BoardHandle) -> dict[str, Any]:
    """The state-file entry of a started tracker or board (its fields, log, start time)."""
    entry = {f.name: getattr(handle, f.name) for f in fields(handle) if f.name != "proc"}
    entry["log"] = str(handle.log)
    entry["create_time"] = _create_time(handle.pid)
    return entry

"""Emulated aarch64 boards: the stock TVM RPC server (`python -m tvm.exec.rpc_server`) on the
board's Python under qemu (`board_setup.py`, `qemu.py`), registered at a tracker. `start_board(s)`
runs boards for the caller; `board_up`/`board_down`/`board_status` manage detached ones, recorded
in the state file of `registry.py`."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tvm_conformer.errors import UserError
from tvm_conformer.rpc.address import DEFAULT_TRACKER, parse_tracker
from tvm_conformer.rpc.board_setup import BoardRoot, ensure_board_root
from tvm_conformer.rpc.qemu import CPUS, DEFAULT_CPU, qemu_cpu
from tvm_conformer.rpc.registry import board_state, record
from tvm_conformer.rpc.tracker import (
    PROGRESS_PERIOD_S,
    ProcessGroup,
    free_port,
    log_tail,
    registered_servers,
    say,
    spawn,
    start_tracker,
    stop_group,
    tracker_reachable,
    tracker_summary,
)

DEFAULT_ADDRESS = parse_tracker(DEFAULT_TRACKER)


@dataclass
class BoardHandle(ProcessGroup):
    """A running emulated board (its RPC server); `stop()` ends it (also as a context manager)."""

    key: str
    cpu: str
    port: int
    pid: int
    tracker: tuple[str, int]
    log: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)


def _check_args(cpu: str, count: int) -> None:
    if cpu not in CPUS:
        raise UserError(f"unknown cpu {cpu!r}; choose one of {', '.join(CPUS)}")
    if count < 1:
        raise UserError("--count must be at least 1")


def _spawn_board(
    board: BoardRoot, key: str, cpu: str, tracker: tuple[str, int], host: str
) -> BoardHandle:
    port = free_port(host)
    log = board.base / "logs" / f"board-{key}-{port}.log"
    prefix, env = board.python(cpu)
    cmd = [*prefix, "-m", "tvm.exec.rpc_server", "--tracker", f"{tracker[0]}:{tracker[1]}"]
    cmd += ["--key", key, "--host", host, "--port", str(port), "--port-end", str(port + 1)]
    proc = spawn(cmd, log, env=env)
    return BoardHandle(
        key=key, cpu=cpu, port=port, pid=proc.pid, tracker=tracker, log=log, proc=proc
    )


def _wait_registered(handles: list[BoardHandle], timeout_s: float, progress: bool) -> None:
    """Wait until every board in `handles` is registered at its tracker; stop all on failure."""
    start = time.monotonic()
    next_message = start + PROGRESS_PERIOD_S
    pending = list(handles)
    try:
        while pending:
            for handle in list(pending):
                summary = tracker_summary(*handle.tracker)
                if any(p == handle.port for _, p in registered_servers(summary, handle.key)):
                    pending.remove(handle)
                elif handle.proc is not None and handle.proc.poll() is not None:
                    raise UserError(
                        f"board {handle.key!r} exited during start-up: {log_tail(handle.log)}"
                    )
            now = time.monotonic()
            if pending and now - start > timeout_s:
                raise UserError(
                    f"board {pending[0].key!r} did not register at the tracker within "
                    f"{timeout_s:g} s; log {pending[0].log}: {log_tail(pending[0].log)}"
                )
            if pending and now >= next_message:
                say(progress, f"{len(pending)} board(s) still starting ({now - start:.0f} s)")
                next_message = now + PROGRESS_PERIOD_S
            if pending:
                time.sleep(0.5)
    except BaseException:
        for handle in handles:
            handle.stop()
        raise
    say(progress, f"{len(handles)} board(s) up after {time.monotonic() - start:.0f} s")


def start_boards(
    key: str,
    count: int = 1,
    cpu: str = DEFAULT_CPU,
    tracker: tuple[str, int] = DEFAULT_ADDRESS,
    host: str = "127.0.0.1",
    timeout_s: float = 240.0,
    progress: bool = True,
    board: BoardRoot | None = None,
) -> list[BoardHandle]:
    """Start `count` emulated boards under one `key` (a pool) and wait until all are registered."""
    _check_args(cpu, count)
    board = board or ensure_board_root(progress=progress)
    tracker_summary(*tracker)  # fail early if the tracker is unreachable
    say(
        progress,
        f"starting {count} emulated {cpu} board(s) (qemu -cpu {qemu_cpu(cpu)}) with key {key!r} at tracker "
        f"{tracker[0]}:{tracker[1]} (importing tvm under qemu takes ~10-30 s)",
    )
    handles = [_spawn_board(board, key, cpu, tracker, host) for _ in range(count)]
    _wait_registered(handles, timeout_s, progress)
    return handles


def start_board(
    key: str,
    cpu: str = DEFAULT_CPU,
    tracker: tuple[str, int] = DEFAULT_ADDRESS,
    host: str = "127.0.0.1",
    timeout_s: float = 240.0,
    progress: bool = True,
) -> BoardHandle:
    """Start one emulated board registered at `tracker` under `key` and wait until it is free."""
    return start_boards(key, 1, cpu, tracker, host, timeout_s, progress)[0]


@dataclass(frozen=True)
class BoardsUp:
    """What `board_up` started: the tracker address and the boards."""

    tracker: tuple[str, int]
    boards: list[BoardHandle]


def board_up(
    key: str | None = None,
    cpu: str = DEFAULT_CPU,
    tracker: tuple[str, int] | None = None,
    count: int = 1,
    progress: bool = True,
) -> BoardsUp:
    """Start detached boards (key default `qemu-<cpu>`), and a tracker unless one is given or running."""
    _check_args(cpu, count)
    key = key or f"qemu-{cpu}"
    board = ensure_board_root(progress=progress)
    with board_state() as state:
        if tracker is None and state["tracker"] is not None:
            tracker = (state["tracker"]["host"], state["tracker"]["port"])
            say(progress, f"using the running tracker {tracker[0]}:{tracker[1]}")
        elif tracker is None:
            started = start_tracker(*DEFAULT_ADDRESS, progress=progress)
            state["tracker"] = record(started)
            tracker = started.address
        elif not tracker_reachable(*tracker):
            raise UserError(f"no RPC tracker answers at {tracker[0]}:{tracker[1]}")
    # The state stays unlocked while the boards start, so `board status` answers meanwhile.
    handles = start_boards(key, count, cpu, tracker, progress=progress, board=board)
    with board_state() as state:
        state["boards"] += [record(h) for h in handles]
    return BoardsUp(tracker=tracker, boards=handles)


def board_down(key: str | None = None, progress: bool = True) -> int:
    """Stop the detached boards (only those with `key` if given; else all and our tracker)."""
    stopped = 0
    with board_state() as state:
        keep = []
        for entry in state["boards"]:
            if key is None or entry["key"] == key:
                say(progress, f"stopping board {entry['key']!r} (pid {entry['pid']})")
                stop_group(entry["pid"])
                stopped += 1
            else:
                keep.append(entry)
        state["boards"] = keep
        if key is None and state["tracker"] is not None:
            t = state["tracker"]
            say(progress, f"stopping the tracker {t['host']}:{t['port']} (pid {t['pid']})")
            stop_group(t["pid"])
            state["tracker"] = None
    return stopped


def board_status(trackers: Sequence[tuple[str, int]] = ()) -> str:
    """A text report of the detached tracker and boards and of what each tracker sees.

    `trackers` adds trackers to query besides those recorded by `board_up`.
    """
    with board_state() as state:
        tracker, boards = state["tracker"], state["boards"]
    lines = []
    if tracker is not None:
        lines.append(f"tracker  {tracker['host']}:{tracker['port']}  pid {tracker['pid']}")
    else:
        lines.append("tracker  none running (started by `tvm-conformer board up`)")
    for b in boards:
        t = b["tracker"]
        lines.append(
            f"board    key {b['key']}  cpu {b['cpu']}  rpc {b['port']}  pid {b['pid']}  "
            f"tracker {t[0]}:{t[1]}"
        )
    if not boards:
        lines.append("board    none running (start one with `tvm-conformer board up`)")
    addresses = {(b["tracker"][0], b["tracker"][1]) for b in boards} | set(trackers)
    if tracker is not None:
        addresses.add((tracker["host"], tracker["port"]))
    for host, port in sorted(addresses):
        if tracker_reachable(host, port):
            from tvm import rpc

            session = rpc.connect_tracker(host, port)
            try:
                lines += ["", f"tracker {host}:{port} reports:", session.text_summary().rstrip()]
            finally:
                session.close()
        else:
            lines += ["", f"tracker {host}:{port} does not answer"]
    return "\n".join(lines)

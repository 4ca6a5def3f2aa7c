"""A TVM RPC tracker in a subprocess, and requesting a device from a tracker with a timeout."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from tvm_conformer.errors import UserError

if TYPE_CHECKING:
    from tvm.rpc import RPCSession

# Seconds between two "still waiting" progress messages.
PROGRESS_PERIOD_S = 10.0


def say(progress: bool, message: str) -> None:
    """Print one progress line to stderr when `progress` is set."""
    if progress:
        print(f"[board] {message}", file=sys.stderr, flush=True)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tracker_reachable(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """Whether something accepts TCP connections at `host:port`."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def log_tail(log: Path, lines: int = 5) -> str:
    """The last `lines` lines of a log file, joined with " | " (empty if there is none)."""
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def spawn(cmd: Sequence[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `cmd` in its own session (so its whole process group can be stopped), output to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        return subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def stop_group(pid: int, proc: subprocess.Popen | None = None, timeout_s: float = 5.0) -> None:
    """Stop the process group led by `pid` (SIGTERM, then SIGKILL after `timeout_s`)."""
    try:
        if os.getpgid(pid) != pid:
            return
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc is not None:
        proc.wait()


class ProcessGroup:
    """Mixin of a handle on a process group started by `spawn` (its `pid` and `proc` fields):
    `stop()` ends the group, also on leaving a `with` block."""

    pid: int
    proc: subprocess.Popen | None

    def stop(self) -> None:
        """Stop the process and its workers (the whole group)."""
        stop_group(self.pid, self.proc)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class TrackerHandle(ProcessGroup):
    """A running `tvm.exec.rpc_tracker` subprocess; `stop()` ends it (also as a context manager)."""

    host: str
    port: int
    pid: int
    log: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def address(self) -> tuple[str, int]:
        """`(host, port)` of the tracker."""
        return (self.host, self.port)


def start_tracker(
    host: str = "127.0.0.1",
    port: int = 9190,
    log_dir: Path | None = None,
    timeout_s: float = 30.0,
    progress: bool = True,
) -> TrackerHandle:
    """Start a TVM RPC tracker on `host:port` (a free port when `port` is 0) and wait until it listens."""
    from tvm_conformer.paths import cache_dir

    if port == 0:
        port = free_port(host)
    elif tracker_reachable(host, port, timeout_s=0.5):
        raise UserError(
            f"port {host}:{port} is already in use; use that tracker (--tracker {host}:{port}) "
            "or choose another port"
        )
    log = (log_dir or cache_dir() / "board" / "logs") / f"tracker-{port}.log"
    cmd = [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", host]
    cmd += ["--port", str(port), "--port-end", str(port + 1)]
    say(progress, f"starting the RPC tracker on {host}:{port}")
    proc = spawn(cmd, log)
    handle = TrackerHandle(host=host, port=port, pid=proc.pid, log=log, proc=proc)
    deadline = time.monotonic() + timeout_s
    while not tracker_reachable(host, port, timeout_s=0.5):
        if proc.poll() is not None or time.monotonic() > deadline:
            handle.stop()
            raise UserError(f"the RPC tracker on {host}:{port} did not start: {log_tail(log)}")
        time.sleep(0.2)
    return handle


def tracker_summary(host: str, port: int) -> dict[str, Any]:
    """The tracker's `summary()` dict (`queue_info`, `server_info`); UserError if unreachable."""
    if not tracker_reachable(host, port):
        raise UserError(
            f"no RPC tracker at {host}:{port}; start one with `tvm-conformer board up` "
            "or pass the right --tracker HOST:PORT"
        )
    from tvm import rpc

    tracker = rpc.connect_tracker(host, port)
    try:
        return dict(tracker.summary())
    finally:
        tracker.close()


def registered_servers(summary: dict[str, Any], key: str) -> list[tuple[str, int]]:
    """Addresses of the servers registered under `key` in a tracker summary."""
    return [
        (str(item["addr"][0]), int(item["addr"][1]))
        for item in summary.get("server_info", [])
        if item.get("key") == f"server:{key}"
    ]


def request_device(
    tracker_host: str,
    tracker_port: int,
    key: str,
    timeout_s: float = 60.0,
    progress: bool = True,
    session_timeout_s: float = 0.0,
) -> RPCSession:
    """Wait up to `timeout_s` for a free device `key` at the tracker and open a session to it.

    Raises UserError when the tracker is unreachable or no device with `key` became free in time.
    `session_timeout_s` > 0 lets the server end the session after that many seconds.
    """
    deadline = time.monotonic() + timeout_s
    next_message = time.monotonic()
    while True:
        summary = tracker_summary(tracker_host, tracker_port)
        free = int(summary.get("queue_info", {}).get(key, {}).get("free", 0))
        total = len(registered_servers(summary, key))
        if free > 0:
            break
        now = time.monotonic()
        if now >= deadline:
            if total:
                reason = f"all {total} devices with key {key!r} stayed busy"
            else:
                keys = sorted(
                    {item["key"].split(":", 1)[-1] for item in summary.get("server_info", [])}
                )
                known = ", ".join(keys) if keys else "none"
                reason = f"no device with key {key!r} is registered (registered keys: {known})"
            raise UserError(
                f"{reason} at tracker {tracker_host}:{tracker_port} after {timeout_s:g} s; "
                f"start one with `tvm-conformer board up --key {key}` or check the key"
            )
        if now >= next_message:
            say(
                progress,
                f"waiting for a free device {key!r} at {tracker_host}:{tracker_port} "
                f"({total} registered, {deadline - now:.0f} s left)",
            )
            next_message = now + PROGRESS_PERIOD_S
        time.sleep(1.0)
    from tvm import rpc

    tracker = rpc.connect_tracker(tracker_host, tracker_port)
    try:
        session = tracker.request(key, priority=1, session_timeout=session_timeout_s)
    except (RuntimeError, OSError) as exc:
        raise UserError(
            f"device {key!r} from tracker {tracker_host}:{tracker_port} did not answer: {exc}"
        ) from exc
    finally:
        tracker.close()
    say(progress, f"connected to device {key!r} via {tracker_host}:{tracker_port}")
    return session

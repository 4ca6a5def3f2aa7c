"""A watchdog for remote operations: when one takes longer than its timeout, the watchdog shuts
our TCP connection to the device down, which ends the blocked call; a device that hangs or
disconnects thus ends in a one-line DeviceError, never in a hang."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tvm_conformer.errors import UserError


class DeviceError(UserError):
    """The device failed, disconnected or stopped answering during a remote operation."""


def resolve(host: str) -> str:
    """`host` as an IPv4 address (itself if it does not resolve)."""
    try:
        return socket.gethostbyname(host)
    except OSError:
        return host


def _our_connections(servers: list[tuple[str, int]]) -> list[Any]:
    """This process's TCP connections to any of `servers` (psutil connection tuples)."""
    import psutil

    wanted = {(resolve(host), port) for host, port in servers}
    return [c for c in psutil.Process().net_connections(kind="tcp")
            if c.raddr and (c.raddr.ip, c.raddr.port) in wanted]


def sever(servers: list[tuple[str, int]]) -> None:
    """Shut down our connections to `servers`: a call blocked reading from them returns."""
    for conn in _our_connections(servers):
        try:
            with socket.socket(fileno=os.dup(conn.fd)) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed


@contextmanager
def remote_operation(key: str, what: str, timeout_s: float,
                     servers: list[tuple[str, int]]) -> Iterator[None]:
    """Run a remote operation on device `key` (reachable at `servers`): a failure becomes a
    one-line DeviceError naming `what`, and so does taking longer than `timeout_s` (> 0)."""
    expired = threading.Event()

    def fire() -> None:
        expired.set()
        sever(servers)

    timer = threading.Timer(timeout_s, fire) if timeout_s > 0 else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        yield
    except UserError:
        raise
    except (RuntimeError, OSError) as exc:
        if expired.is_set():
            raise DeviceError(_timeout_message(key, what, timeout_s)) from None
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = lines[-1][:200] if lines else ""
        raise DeviceError(
            f"device {key!r} failed while {what} ({type(exc).__name__}: {detail}); it may have "
            "disconnected or crashed: check its RPC server and run again"
        ) from None
    finally:
        if timer is not None:
            timer.cancel()
    if expired.is_set():  # finished just as the watchdog cut the connection
        raise DeviceError(_timeout_message(key, what, timeout_s))


def _timeout_message(key: str, what: str, timeout_s: float) -> str:
    return (f"device {key!r} did not answer within {timeout_s:g} s while {what}: it hangs or is "
            "overloaded; check it and run again (or raise --timeout)")

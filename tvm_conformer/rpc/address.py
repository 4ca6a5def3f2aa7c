"""Addresses of RPC trackers: `HOST:PORT` as `(host, port)`."""

from __future__ import annotations

from tvm_conformer.errors import UserError

DEFAULT_TRACKER = "127.0.0.1:9190"


def parse_tracker(tracker: str | tuple[str, int]) -> tuple[str, int]:
    """`"HOST:PORT"` (or a `(host, port)` pair) as `(host, port)`; UserError if malformed."""
    if isinstance(tracker, tuple):
        return tracker
    host, sep, port = tracker.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"--tracker expects HOST:PORT (e.g. {DEFAULT_TRACKER}), got {tracker!r}")
    return host, int(port)

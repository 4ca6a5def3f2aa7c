"""Addresses of RPC trackers: `HOST:PORT` (an IPv6 host in brackets: `[::1]:9190`) as
`(host, port)`; every `--tracker` option goes through `parse_tracker`."""

from __future__ import annotations

import re

from tvm_conformer.errors import UserError

DEFAULT_TRACKER = "127.0.0.1:9190"
_HOST_PORT = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]\s]+)):(?P<port>[0-9]+)")


def parse_tracker(text: str | tuple[str, int], option: str = "--tracker") -> tuple[str, int]:
    """`"HOST:PORT"` or `"[IPV6]:PORT"` (or a `(host, port)` pair) as `(host, port)`.

    UserError naming `option` and the expected form when `text` is malformed, or when the port
    is outside 1-65535.
    """
    if isinstance(text, tuple):
        host, port = text
        shown = f"{host}:{port}"
    else:
        match = _HOST_PORT.fullmatch(text.strip())
        if match is None:
            hint = ("; an IPv6 address goes in brackets, e.g. [::1]:9190"
                    if text.count(":") > 1 and "[" not in text else "")
            raise UserError(f"{option} {text!r}: expected HOST:PORT, e.g. {DEFAULT_TRACKER}{hint}")
        host, port, shown = match["ipv6"] or match["host"], int(match["port"]), text
    if not 1 <= port <= 65535:
        raise UserError(f"{option} {shown!r}: port {port} is out of range (1-65535)")
    return host, port


def format_tracker(host: str, port: int) -> str:
    """`(host, port)` as `parse_tracker` reads it back (an IPv6 host in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

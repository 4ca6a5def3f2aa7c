"""`--tracker HOST:PORT`: one parser for every verb, one line for bad input."""

from __future__ import annotations

import pytest

from tvm_conformer.cli import main
from tvm_conformer.errors import UserError
from tvm_conformer.rpc.address import format_tracker, parse_tracker


@pytest.mark.parametrize(("text", "address"), [
    ("10.0.0.2:9190", ("10.0.0.2", 9190)),
    ("localhost:1", ("localhost", 1)),
    ("board.lan:65535", ("board.lan", 65535)),
    ("[::1]:9190", ("::1", 9190)),
    ("[fe80::2]:9000", ("fe80::2", 9000)),
    (("127.0.0.1", 9190), ("127.0.0.1", 9190)),
])
def test_addresses_are_parsed(text: str | tuple[str, int], address: tuple[str, int]) -> None:
    assert parse_tracker(text) == address


@pytest.mark.parametrize("text", ["x", "10.0.0.2", ":9190", "h:", "h:9190x", "h: 9190", "h:-1",
                                  "[::1]", "[::1]9190", "h:\u0663"])
def test_malformed_address_is_one_line(text: str) -> None:
    with pytest.raises(UserError) as info:
        parse_tracker(text)
    assert str(info.value) == f"--tracker {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9190"


def test_bare_ipv6_asks_for_brackets() -> None:
    with pytest.raises(UserError, match=r"expected HOST:PORT.*IPv6 address goes in brackets, "
                                        r"e\.g\. \[::1\]:9190"):
        parse_tracker("::1:9190")


@pytest.mark.parametrize(("text", "port"), [("h:0", 0), ("h:65536", 65536), ("[::1]:70000", 70000),
                                            (("h", 0), 0)])
def test_port_out_of_range(text: str | tuple[str, int], port: int) -> None:
    with pytest.raises(UserError, match=rf"port {port} is out of range \(1-65535\)"):
        parse_tracker(text)


def test_format_reads_back() -> None:
    for address in (("10.0.0.2", 9190), ("::1", 9190)):
        assert parse_tracker(format_tracker(*address)) == address


@pytest.mark.parametrize("argv", [
    ["board", "status", "--tracker", "h:70000"],
    ["board", "up", "--tracker", "h:70000"],
    ["bench", "--rpc-key", "k", "--artifact", "missing", "--tracker", "h:70000"],
    ["transcribe", "--rpc-key", "k", "--tracker", "h:70000"],
    ["tune", "--target", "host", "--rpc-key", "k", "--tracker", "h:70000"],
])
def test_every_verb_reports_a_bad_tracker_in_one_line_before_any_work(
        argv: list[str], capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == "error: --tracker 'h:70000': port 70000 is out of range (1-65535)\n"

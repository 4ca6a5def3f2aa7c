"""`tvm-conformer board setup|up|down|status`: the emulated aarch64 board (TVM RPC under qemu)."""

from __future__ import annotations

import argparse

HELP = "Run emulated aarch64 boards (the stock TVM RPC server under qemu) and an RPC tracker."

CPUS = ("cortex-a55", "cortex-a53", "cortex-a72", "cortex-a76")


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `setup`, `up`, `down` and `status` sub-verbs."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("setup", help="only prepare the aarch64 Python and wheels (cached, once)")
    up = sub.add_parser("up", help="start detached boards (and a tracker on 127.0.0.1:9190)")
    up.add_argument("--cpu", choices=CPUS, default="cortex-a55", help="emulated core")
    up.add_argument("--key", help="device key at the tracker (default qemu-CPU)")
    up.add_argument(
        "--tracker",
        type=_address,
        metavar="HOST:PORT",
        help="register at this tracker (default: the running one, else start 127.0.0.1:9190)",
    )
    up.add_argument("--count", type=int, default=1, help="boards to start under the key")
    down = sub.add_parser("down", help="stop boards (all, and the tracker, unless --key)")
    down.add_argument("--key", help="stop only the boards with this key")
    status = sub.add_parser("status", help="list running boards and what the tracker reports")
    status.add_argument(
        "--tracker",
        type=_address,
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="also query this tracker (repeatable)",
    )


def run(args: argparse.Namespace) -> int:
    """Run one board action."""
    from tvm_conformer.rpc import board, board_setup

    if args.action == "setup":
        root = board_setup.ensure_board_root()
        print(f"board root ready in {root.base}")
    elif args.action == "up":
        up = board.board_up(key=args.key, cpu=args.cpu, tracker=args.tracker, count=args.count)
        host, port = up.tracker
        for handle in up.boards:
            print(f"board {handle.key} ({handle.cpu}) pid {handle.pid} at tracker {host}:{port}")
        print(f"use it with: --tracker {host}:{port} --key {up.boards[0].key}")
    elif args.action == "down":
        stopped = board.board_down(key=args.key)
        print(f"stopped {stopped} board(s)")
    else:
        print(board.board_status(args.tracker))
    return 0

"""`tvm-conformer board setup|up|down|status`: the emulated aarch64 board (TVM RPC under qemu)."""

from __future__ import annotations

import argparse

from tvm_conformer.rpc.address import DEFAULT_TRACKER, format_tracker, parse_tracker
from tvm_conformer.rpc.qemu import CPUS, DEFAULT_CPU

HELP = "Run emulated aarch64 boards (the stock TVM RPC server under qemu) and an RPC tracker."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `setup`, `up`, `down` and `status` sub-verbs."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("setup", help="only prepare the aarch64 Python and wheels (cached, once)")
    up = sub.add_parser("up", help=f"start detached boards (and a tracker on {DEFAULT_TRACKER})")
    up.add_argument("--cpu", choices=CPUS, default=DEFAULT_CPU, help="emulated core")
    up.add_argument("--key", help="device key at the tracker (default qemu-CPU)")
    up.add_argument(
        "--tracker",
        metavar="HOST:PORT",
        help=f"register at this tracker (default: the running one, else start {DEFAULT_TRACKER})",
    )
    up.add_argument("--count", type=int, default=1, help="boards to start under the key")
    down = sub.add_parser("down", help="stop boards (all, and the tracker, unless --key)")
    down.add_argument("--key", help="stop only the boards with this key")
    status = sub.add_parser("status", help="list running boards and what the tracker reports")
    status.add_argument(
        "--tracker",
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
        up = board.board_up(key=args.key, cpu=args.cpu, count=args.count,
                            tracker=parse_tracker(args.tracker) if args.tracker else None)
        tracker = format_tracker(*up.tracker)
        for handle in up.boards:
            print(f"board {handle.key} ({handle.cpu}) pid {handle.pid} at tracker {tracker}")
        print(f"use it with: --tracker {tracker} --key {up.boards[0].key}")
    elif args.action == "down":
        stopped = board.board_down(key=args.key)
        print(f"stopped {stopped} board(s)")
    else:
        print(board.board_status([parse_tracker(t) for t in args.tracker]))
    return 0

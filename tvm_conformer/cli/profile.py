"""`tvm-conformer profile --config NAME`: MACs per second of audio by component, from the graph."""

from __future__ import annotations

import argparse
import json

HELP = ("MACs per second of audio by component (subsampling, attention, feed-forward, convolution, "
        "output), counted from the imported Relax graph, vanilla and depthwise separable subsampling.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from tvm_conformer.bench.macs import CONFIG_NAMES

    p.add_argument("--config", choices=CONFIG_NAMES, action="append",
                   help="shipped (the shipped checkpoint's config), conformer-s or conformer-m "
                        "(Gulati et al. 2020); repeatable (default: all)")
    p.add_argument("--mode", choices=["utterance", "step"], default="utterance",
                   help="utterance: the full forward over --seconds of audio, full context; "
                        "step: the streaming step, one per chunk (default: utterance)")
    p.add_argument("--seconds", type=float, default=10.0, help="utterance length (default: 10)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")


def run(args: argparse.Namespace) -> int:
    from tvm_conformer.bench.macs import CONFIG_NAMES, compute_table, format_table
    from tvm_conformer.errors import UserError

    if args.seconds * 100 < 7:
        raise UserError("--seconds must cover at least 7 fbank frames (0.07 s); pass a longer length")
    rows = compute_table(tuple(args.config or CONFIG_NAMES), args.mode, args.seconds)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(format_table(rows))
        print(f"\nmode {args.mode}" + (f", {args.seconds:g} s utterance" if args.mode == "utterance" else "")
              + "; paper: the subsampling share of Conformer-M falls from 32.8% (vanilla) to 4.0% (dws)")
    return 0

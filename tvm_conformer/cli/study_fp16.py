"""`tvm-conformer study-fp16`: fp32 vs fp16 (with and without the numerics passes) under audio gain."""

from __future__ import annotations

import argparse

from tvm_conformer.paths import DEFAULT_CHECKPOINT

HELP = ("fp16 stability study: stream a split at each audio gain through host builds in fp32, fp16 "
        "with the numerics passes and plain fp16; non-finite chunks, log-prob error, WER; table + plot.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from tvm_conformer.study_fp16 import DEFAULT_GAINS_DB

    p.add_argument("--model", default=str(DEFAULT_CHECKPOINT), help="checkpoint (default: the shipped one)")
    p.add_argument("--data", default="data", help="dataset directory from `make-data` (default: data)")
    p.add_argument("--split", default="test", help="split to stream (default: test)")
    p.add_argument("--limit", type=int, help="first N utterances only (default: all)")
    p.add_argument("--gains", nargs="+", default=[",".join(f"{g:g}" for g in DEFAULT_GAINS_DB)],
                   help="audio gains in dB, comma- or space-separated; write --gains=-40,-20,0 when the "
                        f"list starts with a minus (default: {','.join(f'{g:g}' for g in DEFAULT_GAINS_DB)})")
    p.add_argument("--out", default="bench_results/fp16_study",
                   help="results directory; the builds are kept in OUT/artifacts (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="TVM threads per step (default: 1)")


def parse_gains(items: list[str]) -> tuple[float, ...]:
    """Gains in dB from comma- or space-separated items."""
    from tvm_conformer.errors import UserError

    words = [w for item in items for w in item.split(",") if w.strip()]
    try:
        gains = tuple(float(w) for w in words)
    except ValueError:
        raise UserError(f"--gains takes numbers in dB, e.g. --gains=-40,-20,0,20; got {' '.join(items)!r}") from None
    if not gains:
        raise UserError("--gains is empty; pass at least one gain in dB, e.g. --gains=0,20,40")
    return gains


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tvm_conformer.errors import UserError
    from tvm_conformer.study_fp16 import PLOT_PNG, RESULTS_JSON, TABLE_MD, format_table, run_study

    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be at least 1")
    if args.threads < 1:
        raise UserError("--threads must be at least 1")
    result = run_study(args.model, args.data, args.split, args.limit, parse_gains(args.gains), args.out,
                       args.threads)
    print(format_table(result))
    out = Path(args.out)
    print(f"\nwrote {out / RESULTS_JSON}, {out / TABLE_MD}, {out / PLOT_PNG} in {result['study_seconds']:.0f} s")
    return 0

"""`tvm-conformer report`: the runs of `bench --rpc-key` as a table and a plot."""

from __future__ import annotations

import argparse

HELP = "Show the device benchmark runs (bench --rpc-key) as a Markdown table and a PNG plot."


def add_arguments(p: argparse.ArgumentParser) -> None:
    from tvm_conformer.rpc.results import DEFAULT_RESULTS

    p.add_argument("--results", default=str(DEFAULT_RESULTS),
                   help=f"results file, JSON lines (default: {DEFAULT_RESULTS})")
    p.add_argument("--plot", help="PNG to write (default: the results file with .png)")


def run(args: argparse.Namespace) -> int:
    """Prints the table and writes the plot."""
    from pathlib import Path

    from tvm_conformer.rpc.results import plot, read_results, table

    records = read_results(args.results)
    print(table(records))
    if any(r["device"]["emulated"] for r in records):
        print("\nRuns labelled 'emulation (qemu), not device timings' ran on an emulated board.")
    png = plot(records, args.plot or Path(args.results).with_suffix(".png"))
    print(f"\nwrote {png}")
    return 0

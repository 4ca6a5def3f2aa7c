"""`tvm-conformer targets`: the devices in `targets/` and whether their toolchain is here."""

from __future__ import annotations

import argparse
import json
import shutil

from tvm_conformer.errors import UserError

HELP = "List the devices in targets/: family, TVM target, cross compiler (found or missing), RPC key."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options: one table of every device."""


def run(args: argparse.Namespace) -> int:
    """Print the table."""
    from tvm_conformer.compiler.link import apt_package, linker_tool
    from tvm_conformer.targets import list_targets
    from tvm_conformer.verify.checks import format_table

    rows = [["name", "family", "tvm target", "cross compiler", "status", "peak GFLOP/s",
             "rpc key"]]
    problems: list[str] = []
    for t in list_targets(errors=problems):
        tool = linker_tool(t)
        if tool is None:
            tool, status = "(system c++)", "found"
        else:
            status = "found" if shutil.which(tool) else f"missing: apt-get install {apt_package(tool)}"
        rows.append([t.name, t.family, json.dumps(t.tvm_target, separators=(",", ":")), tool,
                     status, f"{t.peak_gflops():.0f}", t.rpc_key or "-"])
    print(format_table(rows))
    if problems:  # the good devices are listed; each bad file is one line, and the exit code says it
        raise UserError("; ".join(problems))
    return 0

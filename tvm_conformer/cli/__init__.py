"""`tvm-conformer VERB ...`: a thin dispatcher; each verb lives in `cli/<verb>.py`.

A verb module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`, and
only parses arguments: the work is done by the Python API it calls. Verb modules are imported
lazily so that `tvm-conformer --help` does not import torch or TVM.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# verb -> module under tvm_conformer.cli (a verb is added by adding a file and a line here)
VERBS: dict[str, str] = {
    "transcribe": "transcribe",
    "make-data": "make_data",
    "train": "train",
    "evaluate": "evaluate",
    "profile": "profile",
    "compile": "compile",
    "targets": "targets",
    "estimate": "estimate",
    "board": "board",
    "bench": "bench",
    "report": "report",
    "tune": "tune",
    "study-fp16": "study_fp16",
    "export": "export",
}


def _available_verbs() -> dict[str, str]:
    found = {}
    for verb, module in VERBS.items():
        if importlib.util.find_spec(f"tvm_conformer.cli.{module}") is not None:
            found[verb] = module
    return found


def main(argv: list[str] | None = None) -> int:
    from tvm_conformer.errors import UserError

    verbs = _available_verbs()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="tvm-conformer",
        description="Compile, tune, deploy and benchmark a streaming Conformer-CTC with Apache TVM.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    # Only the chosen verb's module is imported; the others are listed by name.
    chosen = argv[0] if argv and argv[0] in verbs else None
    for verb, module in verbs.items():
        if verb == chosen:
            mod = importlib.import_module(f"tvm_conformer.cli.{module}")
            p = sub.add_parser(verb, help=mod.HELP, description=mod.HELP)
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
        else:
            sub.add_parser(verb, help=f"(see `tvm-conformer {verb} --help`)")
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""`tvm-conformer make-data`: generate the synthetic voice-assistant corpus with espeak-ng."""

from __future__ import annotations

import argparse

HELP = "Generate the synthetic speech corpus (espeak-ng voices, FLAC, manifests, fbank cache)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options: output directory, split sizes, seed and worker processes."""
    parser.add_argument("--out", default="data/", help="output directory (default: data/)")
    parser.add_argument("--train", type=int, default=8000, help="training utterances")
    parser.add_argument("--valid", type=int, default=300, help="validation utterances")
    parser.add_argument(
        "--test", type=int, default=300, help="test utterances (also spoken by held-out voices)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed (the output depends only on it and the sizes)",
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes")


def run(args: argparse.Namespace) -> int:
    """Build the dataset and print the hours of audio per split."""
    from tvm_conformer.data.dataset import build_dataset
    from tvm_conformer.errors import UserError

    if min(args.train, args.valid, args.test) < 0 or args.workers < 1:
        raise UserError("--train/--valid/--test must be >= 0 and --workers >= 1; fix the arguments")
    hours = build_dataset(
        args.out, n_train=args.train, n_valid=args.valid, n_test=args.test,
        seed=args.seed, workers=args.workers,
    )  # fmt: skip
    for split, h in hours.items():
        print(f"{split}: {h:.2f} h")
    return 0

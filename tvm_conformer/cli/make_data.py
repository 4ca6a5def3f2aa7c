"""`tvm-conformer make-data`: generate a synthetic speech corpus.

`--corpus templates` (the default, what the shipped checkpoints were trained on): espeak-ng
voices speaking the template sentences of data/corpus.py. `--corpus open`: the open-vocabulary
corpus of data/open_corpus.py (training grammar + general English, espeak-ng + festival in
training, held-out voices and the flite synthesizer in tests, sherpa-onnx fbank options)."""

from __future__ import annotations

import argparse

HELP = "Generate a synthetic speech corpus (FLAC, manifests, fbank cache)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options: output directory, split sizes, seed and worker processes."""
    parser.add_argument("--out", default="data/", help="output directory (default: data/)")
    parser.add_argument("--corpus", default="templates", choices=["templates", "open"],
                        help="templates: espeak-ng + template sentences (the shipped models); "
                             "open: open vocabulary, several synthesizers, generalization tests")
    parser.add_argument("--train", type=int, default=None,
                        help="training recordings (default: 8000 templates, 16000 open)")
    parser.add_argument("--valid", type=int, default=None,
                        help="validation recordings (default: 300 templates, 400 open)")
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

    open_corpus = args.corpus == "open"
    if args.train is None:
        args.train = 16000 if open_corpus else 8000
    if args.valid is None:
        args.valid = 400 if open_corpus else 300
    if min(args.train, args.valid, args.test) < 0 or args.workers < 1:
        raise UserError("--train/--valid/--test must be >= 0 and --workers >= 1; fix the arguments")
    if open_corpus:
        import json

        from tvm_conformer.data.open_corpus import build_open_dataset

        info = build_open_dataset(args.out, n_train=args.train, n_valid=args.valid,
                                  n_test=args.test, seed=args.seed, workers=args.workers)
        for split, s in info["splits"].items():
            print(f"{split}: {s['utterances']} recordings, {s['hours']:.2f} h")
        print(json.dumps(info["text"]))
        return 0
    hours = build_dataset(
        args.out, n_train=args.train, n_valid=args.valid, n_test=args.test,
        seed=args.seed, workers=args.workers,
    )  # fmt: skip
    for split, h in hours.items():
        print(f"{split}: {h:.2f} h")
    return 0

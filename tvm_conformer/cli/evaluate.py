"""`tvm-conformer evaluate`: WER (jiwer) of a backend on a dataset split."""

from __future__ import annotations

import argparse
import json

from tvm_conformer.paths import DEFAULT_CHECKPOINT

HELP = "Word error rate of a backend on a split of a `make-data` dataset (jiwer)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="data")
    p.add_argument("--split", action="append", help="split(s) (default: test, test_heldout_voices)")
    p.add_argument("--backend", default="torch", choices=["torch", "tvm"])
    p.add_argument("--model", help=f"checkpoint (.pt; default: {DEFAULT_CHECKPOINT.name})")
    p.add_argument("--artifact")
    p.add_argument("--decoding", default="greedy", choices=["greedy", "beam", "rescore"],
                   help="greedy CTC, CTC prefix beam search, or beam + attention rescoring (host)")
    p.add_argument("--limit", type=int, help="first N utterances only")
    p.add_argument("--json", help="write the full results (with transcripts) here")
    p.add_argument("--suite", choices=["splits", "open"], default="splits",
                   help="splits: the --split list; open: every test split of an open corpus "
                        "(make-data --corpus open), real speech, and the streaming tests "
                        "(silence 1/3 s, pauses, a long stream, silence/noise alone)")
    p.add_argument("--moonshine", metavar="DIR",
                   help="the moonshine-voice wheel's unzipped moonshine_voice/assets (real "
                        "human readings; `pip download --no-deps moonshine-voice==0.1.5`)")
    p.add_argument("--stream-minutes", type=float, default=10.0,
                   help="length of the long-stream test (open suite)")


def run(args: argparse.Namespace) -> int:
    from tvm_conformer.evaluate import evaluate_split
    from tvm_conformer.runtime.load import make_backend

    backend = make_backend(args.backend, args.model, args.artifact)
    if args.suite == "open":
        return _open(args, backend)
    results = []
    for split in args.split or ["test", "test_heldout_voices"]:
        r = evaluate_split(backend, args.data, split, args.decoding, args.limit, model=args.model)
        results.append(r)
        print(f"{split:22s} {backend.name:6s} WER {100 * r['wer']:6.2f}%  "
              f"({r['utterances']} utts, {r['audio_seconds']:.0f} s audio, RTF {r['rtf']:.3f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


def _open(args: argparse.Namespace, backend) -> int:  # noqa: ANN001
    from tvm_conformer.evaluate import open_suite

    results = open_suite(backend, args.data, args.decoding, args.model, args.limit,
                         args.moonshine, args.stream_minutes)
    for r in results:
        if "wer" in r:
            alone = f"  (alone: {100 * r['wer_alone']:.2f}%)" if "wer_alone" in r else ""
            print(f"{r['name']:26s} WER {100 * r['wer']:6.2f}%  {r['utterances']:4d} utts{alone}")
        else:
            print(f"{r['name']:26s} {r['words']} words: {r['hypotheses'][0]!r}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0

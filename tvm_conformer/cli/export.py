"""`tvm-conformer export --format sherpa-onnx -o DIR`: a checkpoint in the WeNet / sherpa-onnx
streaming-CTC contract (model.onnx + tokens.txt + metadata), for sherpa-onnx unmodified.

    tvm-conformer export --format sherpa-onnx -o build/sherpa-onnx
    tvm-conformer export --format sherpa-onnx -o DIR --model my.pt
"""

from __future__ import annotations

import argparse
import sys

from tvm_conformer.paths import DEFAULT_CHECKPOINT

HELP = "Export a checkpoint for another runtime (sherpa-onnx's WeNet CTC contract)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", default="sherpa-onnx", choices=["sherpa-onnx"],
                   help="sherpa-onnx: model.onnx + tokens.txt of the WeNet streaming-CTC contract")
    p.add_argument("-o", "--out", required=True, help="output directory")
    p.add_argument("--model", default=str(DEFAULT_CHECKPOINT),
                   help=f"checkpoint (default: {DEFAULT_CHECKPOINT.name})")


def run(args: argparse.Namespace) -> int:
    from tvm_conformer.frontend.contract import read_contract
    from tvm_conformer.frontend.contract_export import export_contract
    from tvm_conformer.model import load_checkpoint

    model, _ = load_checkpoint(args.model)
    meta = export_contract(model, args.out, source=str(args.model))
    spec = read_contract(f"{args.out}/model.onnx")  # what we wrote passes our own checks
    print(f"wrote {args.out}/model.onnx and tokens.txt (chunk {spec.chunk_size}, left chunks "
          f"{spec.left_chunks}, vocab {spec.vocab_size})")
    print(f"sherpa-onnx: OnlineRecognizer.from_wenet_ctc(tokens='{args.out}/tokens.txt', "
          f"model='{args.out}/model.onnx', chunk_size={spec.chunk_size}, "
          f"num_left_chunks={spec.left_chunks})")
    print(f"features: {meta['fbank_note']}", file=sys.stderr)
    return 0

"""`tvm-conformer transcribe FILE`: streams a recording chunk by chunk through a backend."""

from __future__ import annotations

import argparse
import json
import sys

from tvm_conformer.errors import UserError
from tvm_conformer.paths import DEFAULT_CHECKPOINT, DEFAULT_RECORDING
from tvm_conformer.rpc.address import DEFAULT_TRACKER, parse_tracker

HELP = "Transcribe a WAV/FLAC file, streaming it chunk by chunk through the chosen backend."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="*", default=[str(DEFAULT_RECORDING)],
                   help="audio files (default: the shipped recording)")
    p.add_argument("--backend", default="torch", choices=["torch", "tvm", "onnx"],
                   help="torch: PyTorch eager; tvm: a compiled TVM artifact; onnx: ONNX Runtime on "
                        "a contract .onnx --model (default: torch)")
    p.add_argument("--model", help=f"checkpoint (.pt; default: {DEFAULT_CHECKPOINT.name}) or a "
                   "model of the WeNet / sherpa-onnx streaming-CTC contract (.onnx)")
    p.add_argument("--tokens", help="with an .onnx --model: its tokens.txt (default: beside it)")
    p.add_argument("--artifact", help="compiled artifact directory (tvm backend; default: "
                   "compile for the host on first use, cached)")
    p.add_argument("--rpc-key", help="run the step on a device registered under this key")
    p.add_argument("--tracker", default=DEFAULT_TRACKER, metavar="HOST:PORT",
                   help=f"RPC tracker (default: {DEFAULT_TRACKER})")
    p.add_argument("--decoding", default="greedy", choices=["greedy", "beam", "rescore"],
                   help="greedy CTC, CTC prefix beam search, or beam + attention rescoring (host)")
    p.add_argument("--threads", type=int, help="threads for the step (default: the backend's)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per file: text, audio_seconds, rtf, ...")


def run(args: argparse.Namespace) -> int:
    from tvm_conformer.audio.wav import load_audio
    from tvm_conformer.runtime.load import make_backend, make_recognizer
    from tvm_conformer.runtime.recognizer import transcribe_samples

    if args.rpc_key:
        from tvm_conformer.rpc.backend import make_rpc_backend

        tracker = parse_tracker(args.tracker)  # before anything is loaded
        backend = make_rpc_backend(args.artifact, args.rpc_key, tracker)
    else:
        backend = make_backend(args.backend, args.model, args.artifact, args.threads, args.tokens)
    rec = make_recognizer(backend, args.decoding, args.model)
    failed = 0
    for path in args.files:
        try:
            samples, sr = load_audio(path)
            tr = transcribe_samples(rec, samples, sr)
        except UserError as exc:
            if len(args.files) == 1:
                raise
            # one bad file among several: report it and go on; the exit code says it at the end
            print(f"error: {exc}", file=sys.stderr, flush=True)
            failed += 1
            continue
        if args.json:
            print(json.dumps({
                "file": str(path), "text": tr.text, "audio_seconds": round(tr.audio_seconds, 3),
                "rtf": tr.rtf, "backend": backend.name, "chunks": len(tr.step_seconds),
                "chunk_ms_median": 1e3 * sorted(tr.step_seconds)[len(tr.step_seconds) // 2]
                if tr.step_seconds else None,
                "rtf_definition": "compute seconds (features + steps + decoding) / audio seconds",
            }), flush=True)
        else:
            print(tr.text if len(args.files) == 1 else f"{path}\t{tr.text}", flush=True)
    if failed:
        raise UserError(f"{failed} of {len(args.files)} files failed")
    return 0

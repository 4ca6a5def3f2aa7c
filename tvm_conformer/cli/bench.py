"""`tvm-conformer bench`: the host benchmark suites, a per-kernel profile of one artifact, or
(`--rpc-key`/`--target`) the streaming step on a device over TVM RPC."""

from __future__ import annotations

import argparse
from pathlib import Path

from tvm_conformer.rpc.address import DEFAULT_TRACKER, parse_tracker

HELP = ("Benchmark every engine on the host (latency, RTF, memory, size, accuracy), profile "
        "kernels, or (--rpc-key/--target) run the streaming step on a device over TVM RPC.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", choices=["quick", "versus", "full", "sizes"], default="full",
                   help="quick: torch, ORT and TVM at 1 thread, 2 recordings (a smoke test); "
                        "versus: PyTorch, ORT, TVM with schedules and tuned, fp32 streaming, 1 and "
                        "2 threads, 6 recordings (the head-to-head, minutes); full: every engine and variant, 1 and 2 threads, full-utterance mode, "
                        "scaling, roofline, kernel profile, MACs; sizes: the versus engines and "
                        "OpenVINO on each --presets model, against the measured physical limit "
                        "(default: full)")
    p.add_argument("--presets", nargs="+", metavar="NAME",
                   help="sizes suite: shipped, wenet-u2pp, fastconformer-l (default: all)")
    p.add_argument("--out", default="bench_results", help="results directory (default: bench_results)")
    p.add_argument("--model", help="checkpoint, a size preset (shipped, wenet-u2pp, "
                                   "fastconformer-l: random weights of that size), or an .onnx "
                                   "file of the streaming-CTC contract (versus/quick: end to end "
                                   "beside sherpa-onnx; with --rpc-key: on the device); default: "
                                   "the shipped one, without it a random model of the default size")
    p.add_argument("--threads", type=int, nargs="+", help="thread counts (default: the suite's)")
    p.add_argument("--rounds", type=int, help="measured rounds (default: the suite's)")
    p.add_argument("--recordings", type=int, help="recordings of data/test to use (default: the suite's)")
    p.add_argument("--cache", help="where compiled engines are kept (default: build/bench)")
    p.add_argument("--profile", action="store_true",
                   help="instead of a suite: time every kernel of one step of --artifact")
    p.add_argument("--artifact", help="artifact to profile (default: the benchmark model built "
                                      "for the host with schedules, cached); with --rpc-key: the "
                                      "build to deploy, or where to compile it for --target "
                                      "(default: build/TARGET-fp32)")
    p.add_argument("--steps", type=int, default=30, help="steps to profile (default: 30)")
    # --- on a device over TVM RPC (rpc/runner.py, rpc/backend.py) ---
    p.add_argument("--rpc-key", help="run on the device registered under this key at the tracker "
                                     "(default with --target: the target file's rpc_key)")
    p.add_argument("--target", help="device target (targets/NAME.toml) to compile for and run on")
    p.add_argument("--tracker", default=DEFAULT_TRACKER, metavar="HOST:PORT",
                   help=f"RPC tracker (default: {DEFAULT_TRACKER})")
    p.add_argument("--audio", nargs="+", metavar="FILE",
                   help="recordings to stream (default: the shipped sample.wav and test_utts/*.flac)")
    p.add_argument("--json", metavar="OUT", help="also write the run's record to OUT (JSON)")
    p.add_argument("--timeout", type=float, default=120.0, metavar="S",
                   help="seconds to wait for a free device, and for each remote operation (default: 120)")


def run(args: argparse.Namespace) -> int:
    """Runs a suite, the kernel profile, or the benchmark on a device."""
    if args.rpc_key or args.target:
        return _rpc(args)
    if args.profile:
        return _profile(args)
    return _host_suite(args)


def _cache(args: argparse.Namespace) -> Path:
    from tvm_conformer.bench.builds import CACHE_DIR

    return Path(args.cache) if args.cache else CACHE_DIR


def _model(args: argparse.Namespace) -> Path | None:
    from tvm_conformer.bench.size_presets import PRESETS, preset_checkpoint
    from tvm_conformer.errors import UserError

    if args.model in PRESETS:  # a named size: random weights of that size (shipped: the shipped)
        return preset_checkpoint(args.model, _cache(args))
    if args.model and not Path(args.model).is_file():
        raise UserError(f"model {args.model} not found: pass --model PATH to an existing .pt "
                        "checkpoint or .onnx file of the streaming-CTC contract")
    return Path(args.model) if args.model else None


def _sizes_suite(args: argparse.Namespace) -> int:
    from tvm_conformer.bench.size_presets import run_sizes

    out = Path(args.out)
    results = run_sizes(out, _cache(args), args.presets,
                        tuple(args.threads) if args.threads else None, args.rounds, args.recordings)
    print((out / "sizes.md").read_text())
    print(f"wrote {out / 'sizes.json'}, {out / 'sizes.md'} and {out / 'sizes.png'} in "
          f"{results['seconds']:.0f} s")
    return 0


def _host_suite(args: argparse.Namespace) -> int:
    from tvm_conformer.bench.harness import run_suite
    from tvm_conformer.bench.report import engine_table
    from tvm_conformer.bench.suites import SUITES
    from tvm_conformer.compiler.source import is_contract_file

    if args.suite == "sizes":
        return _sizes_suite(args)
    out = Path(args.out)
    model = _model(args)
    if model is not None and is_contract_file(model):
        return _contract_suite(args, model, out)
    results = run_suite(SUITES[args.suite], out, model, _cache(args),
                        tuple(args.threads) if args.threads else None, args.rounds, args.recordings)
    print(engine_table(results["stream"]))
    if not results["model"]["trained"]:
        print("note: the shipped checkpoint is missing; these numbers are for RANDOM weights")
    print(f"wrote {out / 'results.json'}, {out / 'table.md'} and plots in {results['seconds']:.0f} s")
    return 0


def _contract_suite(args: argparse.Namespace, model: Path, out: Path) -> int:
    """A contract file: sherpa-onnx, ONNX Runtime and TVM end to end (quick or versus)."""
    from tvm_conformer.bench.harness import run_contract_suite
    from tvm_conformer.bench.suites import SUITES
    from tvm_conformer.errors import UserError

    if args.suite not in ("quick", "versus"):
        raise UserError(f"--suite {args.suite} measures our checkpoints' step engine by engine; a "
                        "contract .onnx model runs --suite versus or quick (end to end beside "
                        "sherpa-onnx)")
    results = run_contract_suite(SUITES[args.suite], out, model, _cache(args),
                                 tuple(args.threads) if args.threads else None, args.rounds,
                                 args.recordings)
    print((out / "table.md").read_text())
    print(f"wrote {out / 'results.json'}, {out / 'table.md'} and {out / 'end_to_end.png'} in "
          f"{results['seconds']:.0f} s")
    return 0


def _profile(args: argparse.Namespace) -> int:
    from tvm_conformer.bench.builds import Builder, benchmark_model
    from tvm_conformer.bench.engines import EngineSpec
    from tvm_conformer.bench.kernel_profile import format_profile, profile_artifact
    from tvm_conformer.compiler.artifact import read_manifest
    from tvm_conformer.model import load_checkpoint

    if args.artifact:
        artifact = args.artifact
        read_manifest(artifact)  # a one-line error for anything that is not an artifact
    else:
        ckpt, _ = benchmark_model(_model(args), _cache(args))
        artifact = Builder(_cache(args), ckpt, load_checkpoint(ckpt)[0]).files(
            EngineSpec("tvm", tvm="schedules"))["artifact"]
    for threads in args.threads or [1]:
        print(format_profile(profile_artifact(artifact, threads, args.steps)))
        print()
    return 0


def _rpc(args: argparse.Namespace) -> int:
    import json

    from tvm_conformer.errors import UserError
    from tvm_conformer.rpc.results import format_run
    from tvm_conformer.rpc.runner import artifact_for, bench_rpc
    from tvm_conformer.targets import load_target

    tracker = parse_tracker(args.tracker)  # before anything is compiled
    key = args.rpc_key or (load_target(args.target).rpc_key if args.target else None)
    if not key:
        raise UserError(f"target {args.target} names no rpc_key: pass --rpc-key KEY")
    artifact = artifact_for(args.target, args.artifact, _model(args))
    results = Path(args.out) / "rpc_results.jsonl"
    record = bench_rpc(artifact, key, tracker, args.audio, results, args.timeout, _model(args))
    print(format_run(record))
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"appended to {results}" + (f"; wrote {args.json}" if args.json else ""))
    return 0

"""`tvm-conformer bench`: the host benchmark suites, or a per-kernel profile of one artifact."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Benchmark every engine on the host (latency, RTF, memory, size, accuracy) or profile kernels."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", choices=["quick", "full"], default="full",
                   help="quick: torch, ORT and TVM at 1 thread, 2 recordings (a smoke test); "
                        "full: every engine and variant, 1 and 2 threads, full-utterance mode, "
                        "scaling, roofline, kernel profile, MACs (default: full)")
    p.add_argument("--out", default="bench_results", help="results directory (default: bench_results)")
    p.add_argument("--model", help="checkpoint (default: the shipped one; without it a random "
                                   "model of the default size, marked as such)")
    p.add_argument("--threads", type=int, nargs="+", help="thread counts (default: the suite's)")
    p.add_argument("--rounds", type=int, help="measured rounds (default: the suite's)")
    p.add_argument("--recordings", type=int, help="recordings of data/test to use (default: the suite's)")
    p.add_argument("--cache", help="where compiled engines are kept (default: build/bench)")
    p.add_argument("--profile", action="store_true",
                   help="instead of a suite: time every kernel of one step of --artifact")
    p.add_argument("--artifact", help="artifact to profile (default: the benchmark model built "
                                      "for the host with schedules, cached)")
    p.add_argument("--steps", type=int, default=30, help="steps to profile (default: 30)")


def run(args: argparse.Namespace) -> int:
    """Runs a suite, or the kernel profile."""
    if args.profile:
        return _profile(args)
    return _host_suite(args)


def _cache(args: argparse.Namespace) -> Path:
    from tvm_conformer.bench.harness import CACHE_DIR

    return Path(args.cache) if args.cache else CACHE_DIR


def _model(args: argparse.Namespace) -> Path | None:
    from tvm_conformer.errors import UserError

    if args.model and not Path(args.model).is_file():
        raise UserError(f"checkpoint {args.model} not found: pass --model PATH to an existing .pt file")
    return Path(args.model) if args.model else None


def _host_suite(args: argparse.Namespace) -> int:
    from tvm_conformer.bench.harness import SUITES, run_suite
    from tvm_conformer.bench.report import engine_table

    out = Path(args.out)
    results = run_suite(SUITES[args.suite], out, _model(args), _cache(args),
                        tuple(args.threads) if args.threads else None, args.rounds, args.recordings)
    print(engine_table(results["stream"]))
    if not results["model"]["trained"]:
        print("note: the shipped checkpoint is missing; these numbers are for RANDOM weights")
    print(f"wrote {out / 'results.json'}, {out / 'table.md'} and plots in {results['seconds']:.0f} s")
    return 0


def _profile(args: argparse.Namespace) -> int:
    from tvm_conformer.bench.engines import EngineSpec
    from tvm_conformer.bench.harness import Builder, benchmark_model
    from tvm_conformer.bench.kernel_profile import format_profile, profile_artifact
    from tvm_conformer.build.artifact import read_manifest
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

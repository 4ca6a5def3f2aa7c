"""`tvm-conformer tune --target NAME`: MetaSchedule on the step's kernels into tuning_logs/NAME."""

from __future__ import annotations

import argparse
import json
import sys

from tvm_conformer.paths import DEFAULT_CHECKPOINT, DEFAULT_RECORDING
from tvm_conformer.rpc.address import DEFAULT_TRACKER, parse_tracker

HELP = "Auto-tune the step's kernels for a target with MetaSchedule (here or over RPC)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default="host", help="device from targets/ (default: host)")
    p.add_argument("--model", default=str(DEFAULT_CHECKPOINT), help="checkpoint (.pt) or a model of the streaming-CTC ONNX contract (.onnx, tokens.txt beside it)")
    p.add_argument("--tasks", default="depthwise",
                   help="depthwise | conv | attention | all | a regex on kernel names "
                        "(default: depthwise)")
    p.add_argument("--trials", type=int, default=64,
                   help="measured candidates per kernel (default: 64)")
    p.add_argument("--log-dir", help="database directory (default: tuning_logs/TARGET, or "
                                     "tuning_logs/TARGET-<config hash> for another model, "
                                     "which `compile --model` applies)")
    p.add_argument("--minutes", type=float,
                   help="time budget: the kernels with the most flops per step first, no new "
                        "kernel once it is spent")
    p.add_argument("--resume", action="store_true",
                   help="continue the database: skip kernels that have their trials")
    p.add_argument("--trials-per-round", type=int, default=32,
                   help="candidates measured between two cost-model updates (default: 32)")
    p.add_argument("--rpc-key", help="measure on the device registered under this key "
                                     "(default for targets that do not run here: the target's)")
    p.add_argument("--tracker", default=DEFAULT_TRACKER, metavar="HOST:PORT",
                   help=f"RPC tracker (default: {DEFAULT_TRACKER})")
    p.add_argument("--rpc-workers", type=int, default=1,
                   help="devices with --rpc-key measured in parallel (default: 1)")
    p.add_argument("--threads", type=int,
                   help="threads when measuring on this machine (default: the target's)")
    p.add_argument("--seed", type=int, help="random seed of the search")
    p.add_argument("--report", action="store_true",
                   help="do not tune: measure kernels and the whole step untuned, schedules-only "
                        "and tuned with the database, here")
    p.add_argument("--recording", default=str(DEFAULT_RECORDING),
                   help="audio for --report's whole-step timing")
    p.add_argument("--json", action="store_true", help="--report: print JSON, not Markdown")


def run(args: argparse.Namespace) -> int:
    if args.report:
        from tvm_conformer.tune.report import format_report, report

        rep = report(args.target, args.model, args.log_dir, args.recording, args.threads)
        print(json.dumps(rep, indent=1) if args.json else format_report(rep))
        return 0
    from tvm_conformer.compiler.compat import target_runs_here
    from tvm_conformer.targets import load_target
    from tvm_conformer.tune.tuner import RPCDevice, tune

    device = load_target(args.target)
    key = args.rpc_key or (None if target_runs_here(device) else device.rpc_key)
    rpc = RPCDevice(*parse_tracker(args.tracker), key, args.rpc_workers) if key else None
    manifest = tune(device, args.model, args.tasks, args.trials, args.log_dir, rpc, args.resume,
                    args.threads, seed=args.seed, trials_per_round=args.trials_per_round,
                    minutes=args.minutes)
    session = manifest["sessions"][-1]
    print(f"tuned {session['trials']} candidates in {session['wall_seconds'] / 60:.1f} min; "
          f"database {manifest['trials']} records over {len(manifest['tasks'])} kernels "
          f"({args.log_dir or 'tuning_logs/ (the default for this model)'})", file=sys.stderr)
    return 0

"""`tvm-conformer estimate`: a roofline lower bound on the real-time factor on a device.

    tvm-conformer estimate --target rpi4                        # counts the default checkpoint
    tvm-conformer estimate --artifact build/rpi4-fp32 --json rpi4.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tvm_conformer.errors import UserError
from tvm_conformer.paths import DEFAULT_CHECKPOINT, REPO_DIR

HELP = ("Estimate a lower bound on a device's real-time factor from the compiled model's MACs "
        "and bytes against the device's peak (a roofline estimate, not a measurement).")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Target, the artifact or checkpoint to count, and where to save the JSON."""
    p.add_argument("--target", help="device name or .toml path (default: the artifact's target)")
    p.add_argument("--artifact", help="compiled artifact directory: count what it was built from")
    p.add_argument("--model", default=str(DEFAULT_CHECKPOINT),
                   help=f"without --artifact: checkpoint to count (default: {DEFAULT_CHECKPOINT.name})")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16"],
                   help="without --artifact: precision to count (default: fp32)")
    p.add_argument("--json", help="save the estimate here (default: ARTIFACT/estimate.json, or "
                   "build/estimates/TARGET-PRECISION.json)")


def run(args: argparse.Namespace) -> int:
    """Count (or read) the work of one step, bound it, print and save the estimate."""
    from tvm_conformer.compiler.roofline import estimate, format_estimate
    from tvm_conformer.targets import load_target

    if args.artifact:
        from tvm_conformer.compiler.artifact import read_manifest
        from tvm_conformer.compiler.roofline import manifest_work
        from tvm_conformer.compiler.source import manifest_chunk_seconds

        manifest = read_manifest(args.artifact, verify=False)
        device = load_target(args.target or manifest["target"]["name"])
        precision = manifest["pipeline"]["precision"]
        work = manifest_work(manifest, args.artifact)
        audio = manifest_chunk_seconds(manifest)
        out = Path(args.json or Path(args.artifact) / "estimate.json")
    else:
        if not args.target:
            raise UserError("give --target NAME (or --artifact DIR of a compiled model)")
        from tvm_conformer.compiler.pipeline import PipelineOptions
        from tvm_conformer.compiler.roofline import model_work

        device, precision = load_target(args.target), args.precision
        # the pipeline `tvm-conformer compile` runs by default
        opts = PipelineOptions(family=device.family, precision=precision)
        work, audio = model_work(args.model, device, opts)
        out = Path(args.json or REPO_DIR / "build" / "estimates" / f"{device.name}-{precision}.json")
    result = estimate(device, work, audio, precision)
    print(format_estimate(result))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result.to_dict(), indent=1))
    print(f"saved {out}")
    return 0

"""`tvm-conformer compile`: the streaming step of a checkpoint, compiled into an artifact directory.

    tvm-conformer compile --target rpi4                      # build/rpi4-fp32/
    tvm-conformer compile --target mali-g78 --precision fp16 --check --report
    tvm-conformer compile --target all --precision fp32,fp16 --check -o build/ci-artifacts --jobs 2
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

from tvm_conformer.errors import UserError
from tvm_conformer.paths import DEFAULT_CHECKPOINT, REPO_DIR

HELP = "Compile the streaming step for a device into an artifact (lib.so, weights, manifest)."

PRECISIONS = ("fp32", "fp16", "int8")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Target, model, pipeline options, outputs and checks."""
    p.add_argument("--target", default="host",
                   help="device name in targets/, a path to a device .toml, a comma list, or "
                        "`all` (default: host)")
    p.add_argument("--model", default=str(DEFAULT_CHECKPOINT),
                   help=f"checkpoint (default: {DEFAULT_CHECKPOINT.name}), or an ONNX file of the "
                        "WeNet / sherpa-onnx streaming-CTC contract (README: Bring your own model)")
    p.add_argument("--tokens", help="with an .onnx --model: its tokens.txt (default: beside it)")
    p.add_argument("--frontend", default="torch", choices=["torch", "onnx"],
                   help="import through torch.export or ONNX (default: torch)")
    p.add_argument("--precision", default="fp32",
                   help="fp32, fp16, int8 (linears in int8: passes/quantize_int8.py), or a comma "
                        "list (default: fp32)")
    passes = p.add_mutually_exclusive_group()
    passes.add_argument("--passes", help="comma list of the pipeline's graph passes (layout, "
                        "einsum, fuse) or `all`; default: none, the fastest on the CPUs measured "
                        "(docs/BENCHMARKS.md), as in `transcribe` and the API")
    passes.add_argument("--no-passes", action="store_true", help="no graph passes (the default)")
    p.add_argument("--no-streamline", action="store_true",
                   help="keep the imported graph's reshapes around linears, `take` and separate "
                        "q/k/v matmuls (passes/streamline_step.py; for comparisons)")
    p.add_argument("--no-pack-weights", action="store_true",
                   help="keep the matmuls' weights row-major instead of packed into panels of the "
                        "kernels' column tile (passes/pack_weights.py; for comparisons)")
    p.add_argument("--database", help="MetaSchedule work dir with database_*.json to apply")
    p.add_argument("--no-schedules", action="store_true",
                   help="leave kernels without a database record unscheduled (no dlight or "
                        "schedules/ rules)")
    p.add_argument("--threads", type=int, default=0,
                   help="threads the artifact runs with (recorded in its manifest; default: the "
                        "target's); 1 compiles every kernel serial, with no thread pool")
    p.add_argument("--parallel-min-flops", type=int, default=None, metavar="N",
                   help="kernels computing fewer flops run on one thread (default: the "
                        "threshold measured on the host, docs/BENCHMARKS.md; 0: wherever a "
                        "rule parallelizes)")
    p.add_argument("-o", "--out", help="artifact directory (default: build/TARGET-PRECISION); with "
                   "several targets or precisions, the directory that holds one per build")
    p.add_argument("--dump-ir", help="write the module after each pipeline phase into this directory")
    p.add_argument("--report", action="store_true",
                   help="print the kernel count and the kernels left without a schedule")
    p.add_argument("--check", action="store_true",
                   help="check the artifact without a device: ELF, NEON/HVX code, OpenCL, loading")
    p.add_argument("--jobs", type=int, default=1,
                   help="with several targets or precisions, builds run at once in this many "
                        "processes (a build uses one core; default: 1)")


def _split(text: str, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    items = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise UserError(f"unknown {what} {(bad or [text])[0]!r}: choose from {', '.join(allowed)}")
    return items


def _passes(args: argparse.Namespace) -> tuple[str, ...]:
    from tvm_conformer.compiler.pipeline import GRAPH_PASSES

    if args.no_passes or not args.passes:
        return ()
    if args.passes.strip() == "all":
        return GRAPH_PASSES
    return _split(args.passes, GRAPH_PASSES, "graph pass")


def _targets(text: str) -> list:  # noqa: ANN202 - list[DeviceTarget]
    from tvm_conformer.targets import list_targets, load_target

    if text == "all":
        return list_targets()
    return [load_target(name.strip()) for name in text.split(",") if name.strip()]


def _build(args: argparse.Namespace, device, precision: str, out: Path) -> tuple[dict, list]:  # noqa: ANN001
    """One artifact, with the report and checks asked for: (manifest, check results)."""
    from tvm_conformer.compiler.compile import compile_artifact
    from tvm_conformer.compiler.pipeline import PipelineOptions
    from tvm_conformer.verify.checks import check_artifact, format_checks

    if args.threads < 0 or (args.parallel_min_flops or 0) < 0:
        raise UserError("--threads and --parallel-min-flops take a count >= 0")
    threading = {"threads": args.threads}
    if args.parallel_min_flops is not None:
        threading["parallel_min_flops"] = args.parallel_min_flops
    opts = PipelineOptions(family=device.family, passes=_passes(args), precision=precision,
                           database=args.database, schedules=not args.no_schedules,
                           streamline=not args.no_streamline,
                           pack_weights=not args.no_pack_weights, **threading)
    manifest = compile_artifact(out, device, args.model, args.frontend, opts, args.dump_ir,
                                tokens=args.tokens)
    kernels = manifest["kernels"]
    if args.report:
        print(f"{out}: {kernels['count']} kernels, {kernels.get('calls_per_step')} launches per "
              f"step, {len(kernels['unscheduled'])} without a schedule: "
              f"{', '.join(kernels['unscheduled']) or 'none'}")
    checks = check_artifact(out) if args.check else []
    if checks:
        print(format_checks(str(out), checks))
    return manifest, checks


def _row(device, precision: str, out: Path, manifest: dict, checks: list) -> list[str]:  # noqa: ANN001
    from tvm_conformer.compiler.artifact import LIB, WEIGHTS
    from tvm_conformer.compiler.roofline import estimate, manifest_work
    from tvm_conformer.compiler.source import manifest_chunk_seconds
    from tvm_conformer.verify.checks import MARK

    bound = estimate(device, manifest_work(manifest, out), manifest_chunk_seconds(manifest),
                     precision)
    return [f"{device.name}-{precision}", "ok" if all(c.ok is not False for c in checks) else "FAIL",
            f"{manifest['compile_seconds']:.1f}",
            f"{((out / LIB).stat().st_size + (out / WEIGHTS).stat().st_size) / 1e6:.2f}",
            str(manifest["kernels"]["count"]), str(len(manifest["kernels"]["unscheduled"])),
            f"{bound.rtf_lower_bound:.5f}", " ".join(f"{c.name}:{MARK[c.ok]}" for c in checks) or "-"]


def _one(args: argparse.Namespace, device, precision: str, out: Path) -> list[str]:  # noqa: ANN001
    """One build of several: its summary row, FAIL with the reason if it did not build."""
    try:
        return _row(device, precision, out, *_build(args, device, precision, out))
    except UserError as exc:
        return [out.name, "FAIL", *["-"] * 5, str(exc)]
    except Exception as exc:  # a compiler bug in one build must not hide the others
        traceback.print_exc()
        last = str(exc).strip().splitlines()[-1]  # TVM puts the reason last
        return [out.name, "FAIL", *["-"] * 5, f"{type(exc).__name__}: "
                f"{'...' if len(last) > 200 else ''}{last[-200:]}"]


def run(args: argparse.Namespace) -> int:
    """Compile each (target, precision); with several, go on after a failure and summarize.
    Exit 1 when a check or (with several builds) a build fails."""
    from tvm_conformer.verify.checks import format_table

    devices = _targets(args.target)
    precisions = _split(args.precision, PRECISIONS, "precision")
    _passes(args)  # a bad list fails before any compile
    if args.jobs < 1:
        raise UserError("--jobs takes a count >= 1")
    if args.database:  # a torn or foreign database fails here in one line, not inside TVM
        from tvm_conformer.compiler.database import check_database

        if not Path(args.database).is_dir():
            raise UserError(f"--database {args.database}: no such directory; pass a tuning log "
                            "directory (tuning_logs/TARGET or a `tune --log-dir`)")
        check_database(Path(args.database))
    builds = [(d, p) for d in devices for p in precisions]
    if len(builds) == 1:
        device, precision = builds[0]
        out = Path(args.out or REPO_DIR / "build" / f"{device.name}-{precision}")
        _, checks = _build(args, device, precision, out)
        return 1 if any(c.ok is False for c in checks) else 0
    root = Path(args.out or REPO_DIR / "build")
    t0 = time.time()
    jobs = [(args, device, precision, root / f"{device.name}-{precision}")
            for device, precision in builds]
    if args.jobs == 1:
        rows = [_one(*job) for job in jobs]
    else:  # fresh interpreters: TVM's state is not fork-safe
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(args.jobs, len(jobs)),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            rows = list(pool.map(_one, *zip(*jobs, strict=True)))
    failed = sum(row[1] == "FAIL" for row in rows)
    header = ["build", "result", "seconds", "MB", "kernels", "unscheduled",
              "RTF >= (estimate)", "checks or error"]
    print(format_table([header, *rows]))
    print(f"{len(rows)} builds, {failed} failed, in {time.time() - t0:.0f} s; RTF >=: roofline "
          "lower bound (`tvm-conformer estimate`), not a measurement", file=sys.stderr)
    return 1 if failed else 0

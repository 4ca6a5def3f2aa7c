"""Builds of one model timed side by side: the measurement behind docs/BENCHMARKS.md's
before/after tables of the compiler's options.

Each variant is a set of `PipelineOptions` fields (JSON); each is compiled once for the host
(rules only, no database unless the variant names one) into OUT/<name>, then one streaming step
of every build is timed in this process, interleaved (the starting build rotating per round),
`--rounds` rounds of `--steps` steps, median and spread of the per-round means. Random
features, full mask (the step has no data-dependent control flow); the log-probs of every build
are compared with PyTorch eager on the same step. The load average is printed before and after:
the machine is shared, only the ratios within one run count.

    .venv/bin/python scripts/compare_builds.py --model M.pt --out build/cmp \
        --variant unpacked='{"pack_weights": false}' --variant packed='{}' --threads 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from tvm_conformer.bench.engines import TvmEngine
from tvm_conformer.compiler.compile import compile_artifact
from tvm_conformer.compiler.pipeline import PipelineOptions
from tvm_conformer.paths import DEFAULT_CHECKPOINT


def _torch_step(model_path: str, feats: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import torch

    from tvm_conformer.model import load_checkpoint
    from tvm_conformer.runtime.backend import TorchBackend

    model, _ = load_checkpoint(model_path)
    backend = TorchBackend(model, 1)
    with torch.no_grad():
        lp, _ = backend.step(backend.initial_state(), feats, mask)
    return lp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument("--out", default="build/compare")
    ap.add_argument("--variant", action="append", required=True, metavar="NAME=JSON",
                    help="a build: PipelineOptions fields as JSON (repeat)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    arts = {}
    for spec in args.variant:
        name, _, fields = spec.partition("=")
        art = Path(args.out) / name
        if not (art / "manifest.json").is_file():
            t0 = time.time()
            compile_artifact(art, "host", args.model, quiet=True, use_default_database=False,
                             opts=PipelineOptions(**json.loads(fields or "{}")))
            print(f"built {name} in {time.time() - t0:.0f} s", flush=True)
        arts[name] = art
    print(f"load average before: {os.getloadavg()}")
    rows: dict[str, list[str]] = {name: [] for name in arts}
    ref = None
    for threads in args.threads:
        engines = {name: TvmEngine(str(a), threads) for name, a in arts.items()}
        cfg = next(iter(engines.values())).manifest["model"]["config"]
        feats = np.random.default_rng(0).standard_normal(
            (1, 4 * cfg["chunk_size"] + 3, cfg["n_mels"]), dtype=np.float32)
        mask = np.ones((1, cfg["chunk_size"] * (cfg["num_left_chunks"] + 1)), np.float32)
        if ref is None:
            ref = _torch_step(args.model, feats, mask)
            for name, e in engines.items():
                lp, _ = e.step(e.initial_state(), feats, mask)
                print(f"{name}: max |dlogp| vs PyTorch {float(np.abs(lp - ref).max()):.2e}")
        states = {name: e.initial_state() for name, e in engines.items()}
        times: dict[str, list[float]] = {name: [] for name in engines}
        names = list(engines)
        for r in range(args.rounds + 1):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                e = engines[name]
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    _, states[name] = e.step(states[name], feats, mask)
                if r:  # the first round warms up
                    times[name].append((time.perf_counter() - t0) / args.steps * 1e3)
                time.sleep(0.02)
        for name in engines:
            t = times[name]
            rows[name].append(f"{np.median(t):.2f} ({min(t):.2f}-{max(t):.2f})")
        del engines
    print(f"load average after: {os.getloadavg()}")
    print("| build | " + " | ".join(f"{t} thread(s), median ms (range)" for t in args.threads) + " |")
    print("| --- |" + " ---: |" * len(args.threads))
    for name, ms in rows.items():
        print(f"| {name} | " + " | ".join(ms) + " |")


if __name__ == "__main__":
    main()

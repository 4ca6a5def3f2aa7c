"""The measurement behind the thread policy (docs/BENCHMARKS.md, "Thread policy").

Builds the shipped model for the host with several `parallel_min_flops` thresholds and with
`threads=1` (every kernel serial), then times one streaming step of each, interleaved, in one
process, at each thread count: the median over 40 rounds of 5 steps. Random features, full
mask: the step has no data-dependent control flow.

    .venv/bin/python scripts/thread_policy_sweep.py [--out build/thread_sweep] [--threads 2 1 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from tvm_conformer.bench.engines import TvmEngine
from tvm_conformer.compiler.compile import compile_artifact
from tvm_conformer.compiler.pipeline import PipelineOptions

VARIANTS = {"rules' choice": {"threads": 2, "parallel_min_flops": 0},
            "300k": {"threads": 2, "parallel_min_flops": 300_000},
            "1M (the default)": {"threads": 2, "parallel_min_flops": 1_000_000},
            "10M": {"threads": 2, "parallel_min_flops": 10_000_000},
            "serial (threads=1)": {"threads": 1}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="build/thread_sweep")
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1, 2])
    ap.add_argument("--rounds", type=int, default=40)
    args = ap.parse_args()
    arts = {}
    for name, kw in VARIANTS.items():
        art = Path(args.out) / name.split()[0].replace("'", "")
        if not (art / "manifest.json").is_file():
            compile_artifact(art, "host", quiet=True, use_default_database=False,
                             opts=PipelineOptions(**kw))
        arts[name] = art
    print("| build | " + " | ".join(f"{t} thread(s)" for t in args.threads) + " |")
    print("| --- |" + " ---: |" * len(args.threads))
    medians: dict[str, list[str]] = {name: [] for name in arts}
    for threads in args.threads:
        engines = {name: TvmEngine(str(a), threads) for name, a in arts.items()}
        cfg = next(iter(engines.values())).manifest["model"]["config"]
        feats = np.random.default_rng(0).standard_normal(
            (1, 4 * cfg["chunk_size"] + 3, cfg["n_mels"]), dtype=np.float32)
        mask = np.ones((1, cfg["chunk_size"] * (cfg["num_left_chunks"] + 1)), np.float32)
        states = {name: e.initial_state() for name, e in engines.items()}
        times: dict[str, list[float]] = {name: [] for name in engines}
        for r in range(args.rounds + 1):
            for name, e in engines.items():
                t0 = time.perf_counter()
                for _ in range(5):
                    _, states[name] = e.step(states[name], feats, mask)
                if r:  # the first round warms up
                    times[name].append((time.perf_counter() - t0) / 5 * 1e3)
        for name in engines:
            medians[name].append(f"{np.median(times[name]):.2f}")
    for name, ms in medians.items():
        print(f"| {name} | " + " | ".join(ms) + " |")


if __name__ == "__main__":
    main()

"""This machine's measured peak (OpenBLAS sgemm, memory copy) and each engine's place under it.

The compute roof is numpy's float32 matmul of two 1024x1024 matrices (OpenBLAS sgemm, 2*1024^3
FLOP), best of several runs, with 1 and 2 threads set through threadpoolctl. It runs in child
processes, once with the environment as it is and once with OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE unset (set on some machines here; they make OpenBLAS pick an older kernel), and
the kernel OpenBLAS reports is recorded for each. The memory roof is a 256 MB numpy copy.

    python -m tvm_conformer.bench.roofline     (one measurement, JSON on stdout)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

GEMM_N = 1024
COPY_BYTES = 256 * 2**20
REPEATS = 10
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def _best_seconds(fn, repeats: int = REPEATS) -> float:  # noqa: ANN001
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _measure_here() -> dict:
    """sgemm GFLOP/s with 1 and 2 threads, copy GB/s, and OpenBLAS's own report."""
    from threadpoolctl import threadpool_info, threadpool_limits

    rng = np.random.default_rng(0)
    a = rng.standard_normal((GEMM_N, GEMM_N), dtype=np.float32)
    b = rng.standard_normal((GEMM_N, GEMM_N), dtype=np.float32)
    gflops = {}
    for n in (1, 2):
        with threadpool_limits(n, user_api="blas"):
            gflops[str(n)] = 2 * GEMM_N**3 / _best_seconds(lambda: a @ b) / 1e9
    src = np.ones(COPY_BYTES // 4, np.float32)
    dst = np.empty_like(src)
    copy_gbs = 2 * COPY_BYTES / _best_seconds(lambda: np.copyto(dst, src), 3) / 1e9  # read + write
    blas = [{k: i.get(k) for k in ("internal_api", "version", "architecture", "filepath")}
            for i in threadpool_info() if i.get("user_api") == "blas"]
    return {"sgemm_gflops": gflops, "copy_gbs": copy_gbs, "blas": blas,
            "env": {k: os.environ.get(k) for k in OPENBLAS_VARS}}


def measure_peak() -> dict:
    """Both measurements (environment as is, OpenBLAS variables unset) and the peak taken:
    the larger sgemm rate per thread count, and the copy bandwidth."""
    runs = {}
    for name, env in (("as_is", dict(os.environ)),
                      ("openblas_vars_unset", {k: v for k, v in os.environ.items() if k not in OPENBLAS_VARS})):
        proc = subprocess.run([sys.executable, "-m", "tvm_conformer.bench.roofline"], env=env,
                              capture_output=True, text=True, check=True)
        runs[name] = json.loads(proc.stdout)
    peak = {n: max(r["sgemm_gflops"][n] for r in runs.values()) for n in ("1", "2")}
    return {"method": f"numpy float32 {GEMM_N}^3 matmul (OpenBLAS sgemm), best of {REPEATS}; "
                      f"copy of {COPY_BYTES // 2**20} MB",
            "runs": runs, "peak_gflops": peak,
            "copy_gbs": max(r["copy_gbs"] for r in runs.values())}


def step_min_bytes(cfg) -> int:  # noqa: ANN001 - ModelConfig
    """Bytes one fp32 step must move at least: its weights, the caches read and written, the
    features and mask in and the log-probs out."""
    from tvm_conformer.model import ConformerASR
    from tvm_conformer.model.asr import StreamingStep

    weights = sum(p.numel() for p in StreamingStep(ConformerASR(cfg)).parameters())
    state = cfg.n_layers * (2 * cfg.left_frames * cfg.d_model + cfg.d_model * (cfg.conv_kernel - 1))
    io = (cfg.chunk_input_frames * cfg.n_mels + cfg.left_frames + cfg.chunk_size
          + cfg.chunk_size * cfg.vocab_size)
    return 4 * (weights + 2 * state + io)


def points(rows: list[dict], flop_per_step: int, min_bytes: int, peak: dict) -> list[dict]:
    """Achieved GFLOP/s of each measured streaming row (FLOP per step / median step time),
    its share of the measured sgemm peak at its thread count, and the step's intensity."""
    out = []
    for r in rows:
        if r["status"] != "ok":
            continue
        achieved = flop_per_step / (r["median_ms"] / 1e3) / 1e9
        roof = peak["peak_gflops"][str(min(r["threads"], 2))]
        out.append({"label": r["label"], "threads": r["threads"], "precision": r["precision"],
                    "gflops": achieved, "of_peak": achieved / roof,
                    "flop_per_step": flop_per_step, "intensity": flop_per_step / min_bytes})
    return out


if __name__ == "__main__":
    print(json.dumps(_measure_here()))

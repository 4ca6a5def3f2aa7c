"""Latency against chunk size and model size (the `full` suite's scaling series)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from tvm_conformer.bench.builds import Builder, random_checkpoint
from tvm_conformer.bench.engines import EngineSpec
from tvm_conformer.bench.measure import run_group
from tvm_conformer.bench.stats import ratios_to_ort
from tvm_conformer.bench.workload import make_workload
from tvm_conformer.model import ConformerASR, ModelConfig, load_checkpoint, save_checkpoint

# Scaling: chunk sizes at a constant 64 frames of attention context; model sizes at chunk 16.
SCALING_CHUNKS = (8, 16, 32)
SCALING_MODELS = {"d96-4": (96, 4), "d144-6": (144, 6), "d256-8": (256, 8)}
SCALING_ENGINES = (EngineSpec("torch"), EngineSpec("ort"), EngineSpec("tvm", tvm="schedules"))


def run_scaling(model: ConformerASR, checkpoint: Path, cache: Path, work: Path, recordings: int,
                rounds: int) -> list[dict]:
    """Latency of torch, ORT and TVM (schedules), 1 thread, against chunk size and model size.

    Chunk sizes keep the attention context at the benchmark model's frames; the other model
    sizes have random weights. A point whose config is the benchmark model's reuses its builds.
    """
    from tvm_conformer.bench.macs import step_macs
    from tvm_conformer.compiler.artifact import sha256_file

    base = model.cfg
    points: dict[ModelConfig, list[str]] = {}  # a config in both series is measured once
    for c in SCALING_CHUNKS:
        cfg = replace(base, chunk_size=c, num_left_chunks=max(1, base.left_frames // c))
        points.setdefault(cfg, []).append(f"chunk{c}")
    for name, (d, n) in SCALING_MODELS.items():
        points.setdefault(replace(base, d_model=d, n_layers=n), []).append(name)
    rows = []
    for cfg, names in tqdm(points.items(), desc="scaling"):
        if cfg == base:
            path = checkpoint
        elif cfg.d_model == base.d_model and cfg.n_layers == base.n_layers:
            path = cache / "scaling" / f"{cfg.hash()}-{sha256_file(checkpoint)[:12]}.pt"
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                scaled = ConformerASR(cfg).eval()
                scaled.load_state_dict(model.state_dict())  # the same weights, another chunking
                save_checkpoint(scaled, path)
        else:
            path = random_checkpoint(cfg, cache)
        scaled, _ = load_checkpoint(path)
        macs = step_macs(cfg)["total"]
        group = [replace(s, threads=1) for s in SCALING_ENGINES]
        measured = run_group(group, Builder(cache, path, scaled), make_workload(cfg, recordings),
                             rounds, work, f"scaling {'='.join(names)}")
        ratios_to_ort(measured)
        for row in measured:
            row.pop("latencies_ms", None)
            rows.append({"point": "=".join(names), "chunk_series": any(n.startswith("chunk") for n in names),
                         "size_series": not all(n.startswith("chunk") for n in names),
                         "chunk_size": cfg.chunk_size, "d_model": cfg.d_model,
                         "n_layers": cfg.n_layers, "step_macs": macs, **row})
    return rows

"""`bench --suite sizes`: the streaming step at the sizes people deploy, against the physical limit.

Presets: the shipped model; WeNet u2++ size (d 256, 4 heads, 12 blocks, ffn 2048, kernel 15,
vocab 5000); FastConformer-L size (d 512, 8 heads, 17 blocks, ffn 2048, kernel 9, vocab 1024)
with OUR 4x depthwise-separable subsampling, not FastConformer's 8x (the model has no 8x
subsampling; the table says so). The two large ones have random, seeded weights: latency does
not depend on the weights' values.

For each preset the engines of `SIZES_ENGINES` run as any suite does (one worker per engine,
interleaved, checked against PyTorch: `harness.run_suite`), into `out/<preset>/`. Each row then
gets: the ratio of its median step to the best peer's at the same thread count (the faster of
ONNX Runtime and OpenVINO), the step's GFLOP/s (2 x the MACs counted from the graph over the
median; int8 rows against the best int8 peer, ONNX Runtime's quantize_dynamic), and its share of the physical limit: the step cannot take less than
max(FLOP / sgemm peak at that thread count, least bytes / copy bandwidth), both measured here
(`roofline.measure_peak`) in the same run; share = that bound / the median. `tvm-tuned` applies
the target's database where its manifest fits the model, else its row says why.

Each preset also runs the full-utterance forward (`bench/utterance.py`: one call over
`workload.UTTERANCE_FRAMES` fbank frames, full attention context) for ONNX Runtime, OpenVINO
and TVM (rules), in a table of its own; its limit is the compute at the sgemm peak.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from tvm_conformer.model import ModelConfig

PRESETS: dict[str, dict[str, Any]] = {
    "shipped": {"config": None, "note": "the shipped checkpoint (trained)"},
    "wenet-u2pp": {"config": ModelConfig(d_model=256, n_heads=4, n_layers=12, ffn_ratio=8,
                                         conv_kernel=15, vocab_size=5000),
                   "note": "WeNet u2++ size, random weights"},
    "fastconformer-l": {"config": ModelConfig(d_model=512, n_heads=8, n_layers=17, ffn_ratio=4,
                                              conv_kernel=9, vocab_size=1024),
                        "note": "FastConformer-L size with our 4x subsampling (not its 8x), "
                                "random weights"},
}
PEERS = ("ort", "openvino")


def preset_checkpoint(name: str, cache: Path) -> Path | None:
    """The checkpoint of preset `name` (None: the shipped one, as `bench` picks it)."""
    from tvm_conformer.bench.builds import random_checkpoint
    from tvm_conformer.errors import UserError

    if name not in PRESETS:
        raise UserError(f"unknown size preset {name!r}: choose from {', '.join(PRESETS)}")
    cfg = PRESETS[name]["config"]
    return None if cfg is None else random_checkpoint(cfg, cache)


def step_limit_ms(flop: float, min_bytes: float, peak: dict, threads: int) -> float:
    """The least time a step can take here: compute at the measured sgemm peak, or the least
    traffic at the measured copy bandwidth, whichever is longer."""
    gflops = peak["peak_gflops"][str(min(threads, 2))]
    return max(flop / (gflops * 1e9), min_bytes / (peak["copy_gbs"] * 1e9)) * 1e3


def size_rows(stream: list[dict], flop: float, min_bytes: float, peak: dict) -> list[dict]:
    """The table's rows from one preset's streaming rows. An int8 row is compared with the best
    int8 peer (ONNX Runtime's quantize_dynamic), an fp32 row with the best fp32 peer; the
    physical limit (fp32 sgemm peak, copy bandwidth) is given for fp32 rows only."""
    best: dict[tuple[int, bool], float] = {}
    for r in stream:
        if r["engine"] in PEERS and r["status"] == "ok":
            k = (r["threads"], r.get("precision") == "int8")
            best[k] = min(best.get(k, float("inf")), r["median_ms"])
    out = []
    for r in stream:
        int8 = r.get("precision") == "int8"
        row = {"label": r["label"], "engine": r["engine"], "threads": r["threads"],
               "precision": r.get("precision", "fp32"), "status": r["status"],
               "error": r.get("error")}
        if r["status"] == "ok":
            limit = None if int8 else step_limit_ms(flop, min_bytes, peak, r["threads"])
            peer = best.get((r["threads"], int8))
            row.update({"median_ms": r["median_ms"],
                        "ratio_to_best_peer": r["median_ms"] / peer if peer else None,
                        "gflops": flop / (r["median_ms"] / 1e3) / 1e9,
                        "limit_ms": limit,
                        "share_of_limit": None if limit is None else limit / r["median_ms"],
                        "max_abs_logp_diff": r["max_abs_logp_diff"],
                        "transcripts_identical": r["transcripts_identical"]})
        out.append(row)
    return out


def run_sizes(out: Path, cache: Path, presets: list[str] | None = None,
              threads: tuple[int, ...] | None = None, rounds: int | None = None,
              recordings: int | None = None) -> dict[str, Any]:
    """Runs every preset, writes sizes.json, sizes.md and sizes.png into `out`."""
    from tvm_conformer.bench import macs, roofline
    from tvm_conformer.bench.harness import run_suite
    from tvm_conformer.bench.suites import SUITES
    from tvm_conformer.model import load_checkpoint

    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    peak = roofline.measure_peak()
    results: dict[str, Any] = {"suite": "sizes", "load_average_start": load_start, "peak": peak,
                               "presets": {}}
    for name in presets or list(PRESETS):
        ckpt = preset_checkpoint(name, cache)
        res = run_suite(SUITES["sizes"], out / name, ckpt, cache, threads, rounds, recordings)
        cfg = load_checkpoint(res["model"]["checkpoint"])[0].cfg
        flop = 2 * macs.step_macs(cfg)["total"]
        min_bytes = roofline.step_min_bytes(cfg)
        frames = res["workload"]["utterance_frames"]
        uflop = 2 * macs.utterance_macs(cfg, frames)["total"]
        results["presets"][name] = {
            "note": PRESETS[name]["note"], "config": cfg.to_dict(),
            "checkpoint": res["model"]["checkpoint"],
            "trained": PRESETS[name]["config"] is None and res["model"]["trained"],
            "flop_per_step": flop, "min_bytes_per_step": min_bytes,
            "rows": size_rows(res["stream"], flop, min_bytes, peak),
            # the full-utterance forward: its limit is the compute alone (its weights' traffic,
            # read once for `frames` frames, is a few percent of it at these sizes)
            "utterance_frames": frames, "flop_per_utterance": uflop,
            "utterance_rows": size_rows(res.get("utterance", []), uflop, 0, peak),
            "load_average": [res["machine"].get("load_average"),
                             res["machine"].get("load_average_end")],
        }
    results["load_average_end"] = os.getloadavg()
    results["seconds"] = round(time.time() - t0, 1)
    (out / "sizes.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "sizes.md").write_text(markdown(results))
    plot(results, out / "sizes.png")
    return results


def _fmt(v: Any, spec: str) -> str:  # noqa: ANN401
    return "" if v is None else format(v, spec)


def _line(r: dict) -> str:
    if r["status"] != "ok":
        return f"| {r['label']} | {r['threads']} | {r['error']} | | | | |"
    return (f"| {r['label']} | {r['threads']} | {r['median_ms']:.2f} | "
            f"{_fmt(r['ratio_to_best_peer'], '.2f')} | {r['gflops']:.1f} | "
            f"{_fmt(r['limit_ms'], '.2f')} | {_fmt(r['share_of_limit'], '.0%')} |")


def markdown(results: dict[str, Any]) -> str:
    peak = results["peak"]
    lines = [f"Measured here: sgemm peak {peak['peak_gflops']['1']:.0f} / "
             f"{peak['peak_gflops']['2']:.0f} GFLOP/s (1 / 2 threads), copy "
             f"{peak['copy_gbs']:.1f} GB/s; load average {results['load_average_start']} at the "
             f"start, {results['load_average_end']} at the end.", ""]
    for name, p in results["presets"].items():
        cfg = p["config"]
        lines += [f"### {name}: {p['note']}", "",
                  f"d {cfg['d_model']}, {cfg['n_heads']} heads, {cfg['n_layers']} blocks, ffn "
                  f"{cfg['d_model'] * cfg['ffn_ratio']}, kernel {cfg['conv_kernel']}, vocab "
                  f"{cfg['vocab_size']}, 4x subsampling; {p['flop_per_step'] / 1e9:.2f} GFLOP and "
                  f"{p['min_bytes_per_step'] / 2**20:.0f} MB per step; load {p['load_average']}", "",
                  "| engine | threads | median ms | x best peer | GFLOP/s | limit ms | share of limit |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        lines += [_line(r) for r in p["rows"]]
        lines.append("")
        if p.get("utterance_rows"):
            lines += [f"Full-utterance forward ({p['utterance_frames']} fbank frames, one call, "
                      f"full attention context; {p['flop_per_utterance'] / 1e9:.1f} GFLOP; limit: "
                      "compute at the sgemm peak):", "",
                      "| engine | threads | median ms | x best peer | GFLOP/s | limit ms | share of limit |",
                      "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
            lines += [_line(r) for r in p["utterance_rows"]]
            lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Median ms per chunk of every engine per preset and thread count, the limit as a line."""
    from tvm_conformer.bench.plots import plt

    presets = list(results["presets"].items())
    fig, axes = plt.subplots(1, len(presets), figsize=(5 * len(presets), 4), squeeze=False)
    for ax, (name, p) in zip(axes[0], presets, strict=True):
        ok = [r for r in p["rows"] if r["status"] == "ok"]
        threads = sorted({r["threads"] for r in ok})
        labels = list(dict.fromkeys(r["label"] for r in ok))
        width = 0.8 / max(len(labels), 1)
        for i, label in enumerate(labels):
            ys = [next((r["median_ms"] for r in ok if r["label"] == label and r["threads"] == t),
                       0.0) for t in threads]
            ax.bar([t + (i - len(labels) / 2) * width for t in range(len(threads))], ys, width,
                   label=label)
        for j, t in enumerate(threads):
            limit = next((r["limit_ms"] for r in ok if r["threads"] == t and r["limit_ms"]), None)
            if limit is None:
                continue
            ax.hlines(limit, j - 0.45, j + 0.45, colors="k", linestyles="dashed")
        ax.set_xticks(range(len(threads)), [f"{t} thread(s)" for t in threads])
        ax.set_ylabel("median ms per chunk (dashed: physical limit)")
        ax.set_title(name)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

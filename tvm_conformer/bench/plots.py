"""PNG plots of the results (matplotlib, Agg): latency spread, end to end, scaling, roofline."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend


def latency(rows: list[dict], path: Path, title: str) -> None:
    """Box plot of every per-chunk latency of each engine (log scale), one box per thread count."""
    ok = [r for r in rows if r["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(ok) + 1.5))
    ax.boxplot([r["latencies_ms"] for r in ok], orientation="horizontal", whis=(5, 95), showfliers=True,
               flierprops={"markersize": 2, "alpha": 0.3})
    ax.set_yticks(range(1, len(ok) + 1), [f"{r['label']} ({r['threads']}t)" for r in ok])
    ax.set_xscale("log")
    ax.set_xlabel("latency per call (ms), whiskers 5th-95th percentile")
    ax.set_title(title)
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def scaling(rows: list[dict], path: Path) -> None:
    """RTF against chunk size, and latency per step against MACs per step (model size)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for label in sorted({r["label"] for r in rows}):
        mine = [r for r in rows if r["label"] == label and r["status"] == "ok"]
        chunks = [r for r in mine if r["chunk_series"]]
        sizes = [r for r in mine if r["size_series"]]
        a.plot([r["chunk_size"] for r in chunks], [r["rtf"] for r in chunks], "o-", label=label)
        b.plot([r["step_macs"] / 1e6 for r in sizes], [r["median_ms"] for r in sizes], "o-", label=label)
        for r in sizes:
            b.annotate(r["point"], (r["step_macs"] / 1e6, r["median_ms"]), fontsize=7)
    a.set(xlabel="chunk size (encoder frames of 40 ms)", ylabel="RTF (step time / audio time)",
          yscale="log", title="chunk size (same model)")
    a.set_xscale("log", base=2)
    chunks = sorted({r["chunk_size"] for r in rows if r["chunk_series"]})
    a.set_xticks(chunks, [str(c) for c in chunks], minor=False)
    a.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    b.set(xlabel="MMAC per step", ylabel="median step latency (ms)", xscale="log", yscale="log",
          title="model size (chunk 16)")
    b.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    for ax in (a, b):
        ax.grid(which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def roofline(peak: dict, points: list[dict], path: Path) -> None:
    """Achieved GFLOP/s of each engine at the step's intensity under the measured roofs."""
    fig, ax = plt.subplots(figsize=(8, 5))
    bw = peak["copy_gbs"]
    xs = np.logspace(-1, 3, 200)
    for n, g in peak["peak_gflops"].items():
        ax.plot(xs, np.minimum(g, bw * xs), "--", lw=1,
                label=f"sgemm {g:.0f} GFLOP/s ({n} thread(s)), copy {bw:.0f} GB/s")
    for p in points:
        ax.scatter(p["intensity"], p["gflops"], s=20)
        ax.annotate(f"{p['label']} {p['threads']}t", (p["intensity"], p["gflops"]), fontsize=6)
    ax.set(xscale="log", yscale="log", xlabel="FLOP per byte (step's minimum traffic)",
           ylabel="GFLOP/s", title="Roofline of the streaming step")
    ax.grid(which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def end_to_end(rows: list[dict], path: Path) -> None:
    """RTF end to end per engine and thread count: median bars, the per-round range as errors."""
    ok = [r for r in rows if r["ok"] and r["rtf_spread"]]
    threads = sorted({r["threads"] for r in ok})
    engines = list(dict.fromkeys(r["engine"] for r in ok))
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(engines) * len(threads) + 1.5))
    height = 0.8 / max(1, len(threads))
    for j, n in enumerate(threads):
        by = {r["engine"]: r for r in ok if r["threads"] == n}
        ys = [i + j * height for i, e in enumerate(engines) if e in by]
        med = [by[e]["rtf_median"] for e in engines if e in by]
        lo = [by[e]["rtf_median"] - by[e]["rtf_spread"][0] for e in engines if e in by]
        hi = [by[e]["rtf_spread"][1] - by[e]["rtf_median"] for e in engines if e in by]
        ax.barh(ys, med, height=height, xerr=[lo, hi], label=f"{n} thread{'s' * (n > 1)}")
    ax.set_yticks([i + height * (len(threads) - 1) / 2 for i in range(len(engines))], engines)
    ax.set_xlabel("real-time factor end to end (features + model + decoding), lower is faster")
    ax.set_title("end to end beside sherpa-onnx's recognizer")
    ax.legend()
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(results: dict, out: Path) -> list[Path]:
    """Every plot the results allow; returns their paths."""
    written = []
    for mode in ("stream", "utterance"):
        if results.get(mode):
            written.append(out / f"latency_{mode}.png")
            latency(results[mode], written[-1], f"{mode}: latency per call, {results['suite']} suite")
    if results.get("end_to_end"):
        written.append(out / "end_to_end.png")
        end_to_end(results["end_to_end"], written[-1])
    if results.get("scaling"):
        written.append(out / "scaling.png")
        scaling(results["scaling"], written[-1])
    if results.get("roofline"):
        written.append(out / "roofline.png")
        roofline(results["peak"], results["roofline"], written[-1])
    return written

"""Results of `tvm-conformer bench --rpc-key`: one JSON line per run, a summary, a table, a plot.

A run's record holds the device (and whether it is emulated), the artifact's manifest, the load
times, every step's timings per recording, and the check against the host; `summarize` derives
the figures the table shows, so runs of different builds and devices can be compared later.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tvm_conformer.errors import UserError

DEFAULT_RESULTS = Path("bench_results") / "rpc_results.jsonl"
DEFINITIONS = {
    "device_ms": "time_evaluator('invoke_stateful') on the device: the pure compute of one step",
    "invoke_ms": "host timer around vm.invoke_stateful: the compute plus one RPC round trip",
    "step_ms": "host timer around the whole step: features up, invoke, log-probs back",
    "rtf": "sum of device_ms of every step / seconds of audio (complete recordings)",
    "rtf_host": "sum of step_ms of every step / seconds of audio (complete recordings)",
    "first_chunk_ms": "step_ms of each recording's first chunk, median over recordings",
    "cold_first_chunk_ms": "step_ms of the first chunk after loading the model",
    "load_s": "upload of lib.so + load_module and VM creation + upload of the weights",
}


def percentiles(values: list[float]) -> dict[str, float] | None:
    """p50, p95 and max of `values` (None when empty)."""
    if not values:
        return None
    a = np.asarray(values, dtype=np.float64)
    return {"p50": float(np.median(a)), "p95": float(np.percentile(a, 95)), "max": float(a.max())}


def summarize(recordings: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's figures (see DEFINITIONS) from its recordings' per-step timings."""
    complete = [r for r in recordings if r["complete"]]
    audio = sum(r["audio_s"] for r in complete)

    def every(name: str, runs: list[dict[str, Any]]) -> list[float]:
        return [x for r in runs for x in r[name]]

    device_timed = all(len(r["device_ms"]) == len(r["step_ms"]) for r in complete)
    firsts = [r["step_ms"][0] for r in recordings if r["step_ms"]]
    return {
        "recordings": len(complete),
        "audio_s": audio,
        "chunks": len(every("step_ms", recordings)),
        "rtf": sum(every("device_ms", complete)) / 1e3 / audio if audio and device_timed else None,
        "rtf_host": sum(every("step_ms", complete)) / 1e3 / audio if audio else None,
        "device_ms": percentiles(every("device_ms", recordings)),
        "invoke_ms": percentiles(every("invoke_ms", recordings)),
        "step_ms": percentiles(every("step_ms", recordings)),
        "first_chunk_ms": float(np.median(firsts)) if firsts else None,
        "cold_first_chunk_ms": firsts[0] if firsts else None,
    }


def append_result(path: str | Path, record: dict[str, Any]) -> None:
    """Append `record` as one JSON line to `path` (created with its directory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a results file; UserError if it is missing or a line is not JSON."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no results file {path}: run `tvm-conformer bench --rpc-key KEY` first, "
                        "or pass --results FILE")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise UserError(f"{path}:{number} is not JSON; remove that line") from None
    if not records:
        raise UserError(f"{path} holds no results yet: run `tvm-conformer bench --rpc-key KEY`")
    return records


def _f(x: float | None, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def _spread(p: dict[str, float] | None) -> str:
    return "n/a" if p is None else f"{p['p50']:.2f} / {p['p95']:.2f} / {p['max']:.2f}"


def _model(record: dict[str, Any]) -> str:
    m = record["artifact"]["manifest"]["model"]
    if "contract" in m:  # a model of the streaming-CTC ONNX contract
        c = m["contract"]
        return (f"{Path(m['checkpoint']).name} (contract: output_size {c['output_size']}, "
                f"{c['num_blocks']} blocks, chunk {c['chunk_size']})")
    c = m["config"]
    return (f"{Path(m['checkpoint']).name} (d={c['d_model']}, {c['n_layers']} blocks, "
            f"chunk {c['chunk_size']})")


def _status(record: dict[str, Any]) -> str:
    """"ok", or why the run stopped before its end."""
    return f"PARTIAL: {record['error'] or 'interrupted'}" if record["partial"] else "ok"


def _cell(text: str) -> str:
    """`text` safe inside a Markdown table cell."""
    return text.replace("|", "\\|")


def format_run(record: dict[str, Any]) -> str:
    """One run as the text `tvm-conformer bench --rpc-key` prints."""
    d, s, load = record["device"], record["summary"], record["load_s"]
    a = record["artifact"]
    lines = []
    if d["emulated"]:
        lines.append(f"*** {d['label'].upper()} *** ({d['emulation_evidence']})")
    lines += [
        f"device: key {d['key']} at tracker {d['tracker']}; arch {d['arch'] or 'unknown'} "
        f"({d['arch_source']}); CPU {d['cpu']}; {d['threads'] or '?'} cores seen by its runtime",
        f"artifact: {a['path']} (target {a['manifest']['target']['name']}, model {_model(record)}); "
        f"lib.so {a['lib_mb']:.2f} MB + weights {a['weights_mb']:.2f} MB",
        f"model load: {load['total_s']:.2f} s (upload {load['upload_s']:.2f} s, load_module "
        f"{load['load_module_s']:.2f} s, weights {load['weights_s']:.2f} s)",
        f"{s['recordings']} recordings, {s['audio_s']:.1f} s of audio, {s['chunks']} chunks",
        f"RTF {_f(s['rtf'], '.4f')} = {DEFINITIONS['rtf']}",
        f"host RTF {_f(s['rtf_host'], '.4f')} = {DEFINITIONS['rtf_host']}",
        "per-chunk latency, ms      p50 / p95 / max",
        f"  device compute        {_spread(s['device_ms'])}   ({DEFINITIONS['device_ms']})",
        f"  host invoke           {_spread(s['invoke_ms'])}   ({DEFINITIONS['invoke_ms']})",
        f"  host step             {_spread(s['step_ms'])}   ({DEFINITIONS['step_ms']})",
        f"first chunk: {_f(s['first_chunk_ms'], '.2f')} ms median over recordings, "
        f"{_f(s['cold_first_chunk_ms'], '.2f')} ms right after loading (host step)",
    ]
    c = record["check"]
    if c is not None:
        lines.append(
            f"check against {c['reference']} on {Path(record['recordings'][0]['file']).name}: max "
            f"|dlogp| {c['max_abs_logp_diff']:.2e} (tolerance {c['tolerance']:g}), transcripts "
            f"{'equal' if c['same_text'] else 'DIFFER'}: {'passed' if c['passed'] else 'FAILED'}")
    lines.append(f"status: {_status(record)}")
    return "\n".join(lines)


def table(records: list[dict[str, Any]]) -> str:
    """Every run as one row of a Markdown table (emulated runs say so in the timings column)."""
    lines = [
        "| # | date | device key | timings | target | model | audio s | chunks | RTF "
        "| device ms p50/p95/max | invoke ms p50/p95/max | first chunk ms | load s | artifact MB "
        "| max dlogp | status |",
        "| ---: | --- | --- | --- | --- | --- | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: "
        "| ---: | --- |",
    ]
    for i, r in enumerate(records, 1):
        s, c = r["summary"], r["check"]
        lines.append(
            f"| {i} | {r['created']} | {r['device']['key']} | {r['label']} | "
            f"{r['artifact']['manifest']['target']['name']} | {_model(r)} | {s['audio_s']:.1f} | "
            f"{s['chunks']} | {_f(s['rtf'], '.4f')} | {_spread(s['device_ms'])} | "
            f"{_spread(s['invoke_ms'])} | {_f(s['first_chunk_ms'], '.2f')} | "
            f"{r['load_s']['total_s']:.2f} | {r['artifact']['lib_mb'] + r['artifact']['weights_mb']:.2f} | "
            f"{_f(c and c['max_abs_logp_diff'], '.1e')} | {_cell(_status(r))} |")
    return "\n".join(lines)


def plot(records: list[dict[str, Any]], path: str | Path) -> Path:
    """Box plots of each run's per-chunk device compute and host invoke latency (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    names = [f"#{i} {r['device']['key']} {r['artifact']['manifest']['target']['name']}"
             + (" [EMULATION]" if r["device"]["emulated"] else "")
             + (" [PARTIAL]" if r["partial"] else "") for i, r in enumerate(records, 1)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.5 * len(records) + 2), sharey=True)
    for ax, name in zip(axes, ("device_ms", "invoke_ms"), strict=True):
        data = [[x for rec in r["recordings"] for x in rec[name]] or [np.nan] for r in records]
        ax.boxplot(data, orientation="horizontal", whis=(5, 95), flierprops={"markersize": 2, "alpha": 0.4})
        ax.set_xscale("log")
        ax.set_xlabel(f"{name[:-3]} latency per chunk (ms), whiskers 5th-95th percentile")
        ax.set_title(DEFINITIONS[name], fontsize=8)
        ax.grid(axis="x", which="both", alpha=0.3)
    axes[0].set_yticks(range(1, len(records) + 1), names, fontsize=8)
    if any(r["device"]["emulated"] for r in records):
        fig.suptitle("[EMULATION] rows ran under qemu: emulation, not device timings", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

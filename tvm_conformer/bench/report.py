"""`table.md`: the benchmark results as Markdown tables, headline first."""

from __future__ import annotations

from typing import Any


def _f(x: Any, fmt: str) -> str:
    return "" if x is None else format(x, fmt)


def _loads(loads: list[float]) -> str:
    return "/".join(f"{x:.1f}" for x in loads)


def engine_table(rows: list[dict]) -> str:
    """One line per engine row; rows that could not run say why."""
    head = ("| engine | threads | passes | precision | median ms | p95 ms | spread | RTF | first chunk ms "
            "| cold first call ms | peak RSS MB | model MB | runtime MB | x ORT | max abs dlogp | same text |")
    lines = [head, "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
             "| ---: | ---: | --- |"]
    for r in rows:
        lead = f"| {r['label']} | {r['threads']} | {'yes' if r['passes'] else 'no'} | {r['precision']} |"
        if r["status"] != "ok":
            lines.append(f"{lead} {r['error']} |" + " |" * 11)
            continue
        rm = r["round_medians_ms"]
        spread = f"{min(rm):.2f}-{max(rm):.2f}"
        lines.append(
            f"{lead} {r['median_ms']:.3f} | {r['p95_ms']:.3f} | {spread} | {r['rtf']:.4f} | "
            f"{r['first_chunk_ms']:.3f} | {r['cold_first_call_ms']:.1f} | {r['peak_rss_mb']:.0f} | "
            f"{r['model_mb']:.2f} | {r['runtime_mb']:.0f} | {_f(r['ratio_to_ort'], '.2f')} | "
            f"{r['max_abs_logp_diff']:.1e} | {'yes' if r['transcripts_identical'] else 'NO'} |")
    return "\n".join(lines)


def scaling_table(rows: list[dict]) -> str:
    lines = ["| point | chunk | d | blocks | MMAC/step | engine | median ms | p95 ms | RTF | x ORT |",
             "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lead = (f"| {r['point']} | {r['chunk_size']} | {r['d_model']} | {r['n_layers']} | "
                f"{r['step_macs'] / 1e6:.1f} | {r['label']} |")
        if r["status"] != "ok":
            lines.append(f"{lead} {r['error']} | | | |")
        else:
            lines.append(f"{lead} {r['median_ms']:.3f} | {r['p95_ms']:.3f} | {r['rtf']:.4f} | "
                         f"{_f(r['ratio_to_ort'], '.2f')} |")
    return "\n".join(lines)


def roofline_table(peak: dict, points: list[dict]) -> str:
    lines = [f"Measured peak ({peak['method']}): "
             + ", ".join(f"{n} thread(s) {g:.1f} GFLOP/s" for n, g in peak["peak_gflops"].items())
             + f"; copy {peak['copy_gbs']:.1f} GB/s.", ""]
    for name, run in peak["runs"].items():
        blas = "; ".join(f"{b['internal_api']} {b['version']} kernel {b['architecture']}" for b in run["blas"])
        gf = ", ".join(f"{n}t {g:.1f}" for n, g in run["sgemm_gflops"].items())
        lines.append(f"- {name} (env {run['env']}): {blas}: sgemm GFLOP/s {gf}")
    lines += ["", "| engine | threads | GFLOP/s | of measured peak | FLOP/byte (min traffic) |",
              "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {p['label']} | {p['threads']} | {p['gflops']:.2f} | {100 * p['of_peak']:.1f}% | "
              f"{p['intensity']:.2f} |" for p in points]
    return "\n".join(lines)


def markdown(results: dict) -> str:
    """The whole of table.md."""
    from tvm_conformer.bench.kernel_profile import KernelProfile, format_profile
    from tvm_conformer.bench.macs import format_table

    m, w = results["model"], results["workload"]
    cfg = m["config"]
    out = [f"# Benchmark ({results['suite']} suite, {results['created']})", "",
           f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores; "
           f"torch {results['machine']['torch']}, onnxruntime {results['machine']['onnxruntime']}, "
           f"TVM {results['machine']['tvm']}. Load average (1, 5, 15 min) at the start "
           f"{_loads(results['machine']['load_average'])}, at the end "
           f"{_loads(results['machine']['load_average_end'])}.",
           f"Model: {m['checkpoint']} ({'trained' if m['trained'] else 'RANDOM weights'}; d={cfg['d_model']}, "
           f"{cfg['n_layers']} blocks, {cfg['n_heads']} heads, kernel {cfg['conv_kernel']}, "
           f"{cfg['subsampling']} subsampling, chunk {cfg['chunk_size']}, {cfg['num_left_chunks']} left chunks).",
           f"Workload: {len(w['recordings'])} recordings, {w['audio_seconds']:.1f} s of audio, "
           f"{w['chunks']} chunks of {1e3 * w['chunk_seconds']:.0f} ms; {results['method']['rounds']} "
           f"measured rounds after 1 warm-up, engines interleaved. RTF: {results['method']['rtf']}. "
           "Spread: lowest-highest per-round median. x ORT: median over ONNX Runtime's at the same "
           "threads. max abs dlogp and same text: against PyTorch eager.", "",
           "## Streaming (one step per chunk, caches carried)", "", engine_table(results["stream"])]
    if results.get("utterance"):
        out += ["", f"## Full utterance ({w['utterance_frames']} fbank frames, fixed shape, full context)",
                "", engine_table(results["utterance"])]
    if results.get("end_to_end"):
        from tvm_conformer.bench.endtoend import table

        out += ["", "## End to end beside sherpa-onnx's recognizer (same recordings)", "",
                table(results["end_to_end"])]
    if results.get("scaling"):
        out += ["", "## Scaling (1 thread; other model sizes have random weights)", "",
                scaling_table(results["scaling"])]
    if results.get("roofline"):
        out += ["", "## Roofline (streaming step)", "", roofline_table(results["peak"], results["roofline"])]
    for prof in results.get("kernel_profile", []):
        out += ["", "## " + format_profile(KernelProfile.from_dict(prof), top=15)]
    if results.get("compute"):
        out += ["", "## MACs per second of audio by component (from the Relax graph)", "",
                format_table(results["compute"])]
    return "\n".join(out) + "\n"

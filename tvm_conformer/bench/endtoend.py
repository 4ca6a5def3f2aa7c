"""End to end (features, model, decoding) against sherpa-onnx's own recognizer.

Engines, each in its own process (`python -m tvm_conformer.bench.endtoend`), all of one
thread count alive at once and driven in turn, a warm-up round first:

- `sherpa-onnx`: `OnlineRecognizer.from_wenet_ctc` on our checkpoint exported in the contract
  (`tvm-conformer export`), features configured as its metadata record; the recording is fed
  whole, then 0.66 s of silence, as sherpa-onnx's examples do;
- `tvm-conformer`: `transcribe` as shipped: the checkpoint's streaming loop over the default
  host build (the checkpoint's features, 0.1 s pieces as a microphone would);
- `tvm-conformer, contract loop`: the exported file compiled by `compile --model FILE.onnx`,
  run through sherpa-onnx's loop in our code (same features, model file and decoding as the
  sherpa-onnx row: the difference is the runtime).

For a model of the contract itself (`bench --model FILE.onnx`: a WeNet or sherpa-onnx export,
none of our checkpoints), the rows are sherpa-onnx, `onnxruntime, contract loop` (ONNX Runtime
on the file through our copy of sherpa-onnx's loop: the step of the same runtime sherpa-onnx
uses) and `tvm-conformer, contract loop` (the file compiled for the host).

RTF: compute seconds (everything from the first sample to the text) / audio seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ENGINES = ("sherpa-onnx", "tvm-conformer", "tvm-conformer, contract loop")
CONTRACT_ENGINES = ("sherpa-onnx", "onnxruntime, contract loop", "tvm-conformer, contract loop")


def engines_for(model: Path) -> tuple[str, ...]:
    from tvm_conformer.compiler.source import is_contract_file

    return CONTRACT_ENGINES if is_contract_file(model) else ENGINES


def prepare(checkpoint: Path, cache: Path) -> dict[str, str]:
    """The exported contract file of `checkpoint` (cached by its hash) and the host builds; a
    contract file is its own export."""
    from tvm_conformer.compiler.artifact import sha256_file
    from tvm_conformer.compiler.source import is_contract_file
    from tvm_conformer.frontend.contract_export import export_contract
    from tvm_conformer.model import load_checkpoint
    from tvm_conformer.runtime.tvm_backend import host_artifact

    if is_contract_file(checkpoint):
        return {"contract": str(checkpoint), "contract_artifact": str(host_artifact(checkpoint))}
    out = cache / f"sherpa-onnx-{sha256_file(checkpoint)[:16]}"
    if not (out / "model.onnx").is_file():
        export_contract(load_checkpoint(checkpoint)[0], out, source=str(checkpoint))
    return {"checkpoint": str(checkpoint), "contract": str(out / "model.onnx"),
            "artifact": str(host_artifact(checkpoint)),
            "contract_artifact": str(host_artifact(out / "model.onnx"))}


def _engine(name: str, files: dict[str, str], threads: int):  # noqa: ANN202 - callable(samples)
    if name == "sherpa-onnx":
        from tvm_conformer.bench.sherpa import decode, recognizer_for

        rec = recognizer_for(files["contract"], threads=threads)
        return lambda samples: decode(rec, samples, 16000).text
    from tvm_conformer.runtime.load import make_backend, make_recognizer
    from tvm_conformer.runtime.recognizer import transcribe_samples

    if name.startswith("onnxruntime"):
        rec = make_recognizer(make_backend("onnx", model=files["contract"], threads=threads))
        return lambda samples: transcribe_samples(rec, samples, 16000).text.strip()
    art = files["artifact"] if name == "tvm-conformer" else files["contract_artifact"]
    rec = make_recognizer(make_backend("tvm", artifact=art, threads=threads))
    return lambda samples: transcribe_samples(rec, samples, 16000).text.strip()


def worker() -> None:
    """One engine: hello {engine, threads, files, audio} -> ok; then {"cmd": "round"} -> times."""
    hello = json.loads(sys.stdin.readline())
    t0 = time.perf_counter()
    run = _engine(hello["engine"], hello["files"], hello["threads"])
    with np.load(hello["audio"]) as z:
        audio = [z[k] for k in sorted(z.files)]
    print(json.dumps({"ok": True, "load_s": time.perf_counter() - t0}), flush=True)
    for line in sys.stdin:
        if json.loads(line).get("cmd") != "round":
            break
        seconds, texts = [], []
        for samples in audio:
            t = time.perf_counter()
            texts.append(run(samples))
            seconds.append(time.perf_counter() - t)
        print(json.dumps({"ok": True, "seconds": seconds, "texts": texts}), flush=True)


def run_end_to_end(checkpoint: Path, cache: Path, recordings: list[tuple[str, str, np.ndarray]],
                   threads: tuple[int, ...], rounds: int, work: Path) -> list[dict[str, Any]]:
    """Rows: engine, threads, median RTF, spread, same text as sherpa-onnx, texts. `checkpoint`:
    ours (exported for sherpa-onnx) or a contract file."""
    files = prepare(checkpoint, cache)
    engines = engines_for(checkpoint)
    audio = work / "e2e-audio.npz"
    np.savez(audio, **{f"{i:04d}": s for i, (_, _, s) in enumerate(recordings)})
    total = sum(len(s) for _, _, s in recordings) / 16000
    rows = []
    for n in threads:
        procs = {}
        for name in engines:
            p = subprocess.Popen([sys.executable, "-m", "tvm_conformer.bench.endtoend"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 stderr=open(work / f"e2e-{n}t-{name[:12]}.log", "w"),  # noqa: SIM115
                                 env={**os.environ, "OMP_NUM_THREADS": str(n)})
            p.stdin.write(json.dumps({"engine": name, "threads": n, "files": files,
                                      "audio": str(audio)}) + "\n")
            p.stdin.flush()
            reply = json.loads(p.stdout.readline() or '{"ok": false}')
            procs[name] = (p, reply)
        per_round: dict[str, list[float]] = {k: [] for k in engines}
        texts: dict[str, list[str]] = {}
        order = list(engines)
        for r in range(rounds + 1):
            k = r % len(order)
            for name in order[k:] + order[:k]:
                p, hello = procs[name]
                if not hello.get("ok"):
                    continue
                p.stdin.write('{"cmd": "round"}\n')
                p.stdin.flush()
                reply = json.loads(p.stdout.readline())
                if r:  # the first round warms up
                    per_round[name].append(sum(reply["seconds"]) / total)
                    texts[name] = reply["texts"]
        for name in engines:
            p, hello = procs[name]
            p.stdin.write('{"cmd": "quit"}\n')
            p.stdin.close()
            p.wait()
            rtfs = sorted(per_round[name])
            ref = texts.get("sherpa-onnx")
            same = None if name not in texts or ref is None else sum(
                a == b for a, b in zip(texts[name], ref, strict=True))
            rows.append({"engine": name, "threads": n, "ok": bool(hello.get("ok")),
                         "rtf_median": float(np.median(rtfs)) if rtfs else float("nan"),
                         "rtf_spread": [rtfs[0], rtfs[-1]] if rtfs else [],
                         "same_text_as_sherpa": same, "recordings": len(recordings),
                         "audio_seconds": total, "load_s": hello.get("load_s"),
                         "texts": texts.get(name, [])})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    out = ["| engine (end to end: features + model + greedy decoding) | threads | RTF median | "
           "per-round RTF | same text as sherpa-onnx |", "| --- | ---: | ---: | --- | --- |"]
    for r in rows:
        spread = "-".join(f"{x:.4f}" for x in r["rtf_spread"]) or "-"
        same = "-" if r["same_text_as_sherpa"] is None else f"{r['same_text_as_sherpa']}/{r['recordings']}"
        out.append(f"| {r['engine']} | {r['threads']} | {r['rtf_median']:.4f} | {spread} | {same} |")
    return "\n".join(out)


if __name__ == "__main__":
    worker()

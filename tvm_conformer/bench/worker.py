"""A benchmark worker: one process, one engine, driven by the harness over a JSON-lines pipe.

    python -m tvm_conformer.bench.worker      (stdin: requests, stdout: one reply per request)

First request: {"spec": EngineSpec dict, "files": {...}, "workload": path} -> {"ok", "load_s"}.
Then {"cmd": "round", "save": path | null}: one pass over every recording of the workload,
timing each step (stream) or forward (utterance) -> {"ok", "seconds": [[s, ...] per recording],
"first_call_s"}; with "save", the outputs are written to that .npz. {"cmd": "quit"} ends it.
The worker imports nothing but its engine's runtime, so its peak RSS is the engine's.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from tvm_conformer.bench.engines import EngineSpec, open_engine
from tvm_conformer.bench.workload import Utterance, load_workload


def _stream(engine, utt: Utterance) -> tuple[list[float], np.ndarray]:  # noqa: ANN001
    state = engine.initial_state()
    seconds, outs = [], []
    for feats, mask in zip(utt.feats, utt.masks, strict=True):
        t0 = time.perf_counter()
        lp, state = engine.step(state, feats, mask)
        seconds.append(time.perf_counter() - t0)
        outs.append(lp)
    return seconds, np.stack(outs)


def _utterance(engine, utt: Utterance) -> tuple[list[float], np.ndarray]:  # noqa: ANN001
    t0 = time.perf_counter()
    lp = engine.forward(utt.window)
    return [time.perf_counter() - t0], lp


def serve(requests, replies) -> None:  # noqa: ANN001 - text streams
    """Answers requests until "quit" or end of input."""
    first = json.loads(requests.readline())
    spec = EngineSpec(**first["spec"])
    if spec.engine in ("ort", "openvino", "tvm"):
        # tvm_ffi imports torch whenever it can; a deployment of these engines has no torch
        sys.modules["torch"] = None
    t0 = time.perf_counter()
    engine = open_engine(spec, first["files"])
    utts = load_workload(Path(first["workload"]))
    run = _stream if spec.mode == "stream" else _utterance
    _reply(replies, {"ok": True, "load_s": time.perf_counter() - t0})
    first_call = True
    for line in requests:
        req = json.loads(line)
        if req["cmd"] == "quit":
            return
        seconds, outs = [], {}
        for i, utt in enumerate(utts):
            s, lp = run(engine, utt)
            seconds.append(s)
            outs[str(i)] = lp
        reply = {"ok": True, "seconds": seconds}
        if first_call:  # the very first call after loading: lazy initialization, JIT compiling
            reply["first_call_s"] = seconds[0][0]
            first_call = False
        if req.get("save"):
            np.savez(req["save"], **outs)
        _reply(replies, reply)


def _reply(replies, obj: dict) -> None:  # noqa: ANN001
    replies.write(json.dumps(obj) + "\n")
    replies.flush()


def one_line(exc: BaseException) -> str:
    """The exception's type and the last line of its message (TVM puts its reason last)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[-1] if lines else ''}"
    return text if len(text) <= 160 else text[:157] + "..."


def main() -> None:
    # Replies go to the original stdout; anything a library prints goes to stderr (the log).
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        serve(sys.stdin, replies)
    except Exception as exc:  # reported to the harness as this engine's failure
        _reply(replies, {"ok": False, "error": one_line(exc)})
        raise


if __name__ == "__main__":
    main()

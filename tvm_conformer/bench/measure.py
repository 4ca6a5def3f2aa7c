"""Interleaved measurement: one worker process per engine (`bench/worker.py`), all of a group
alive at once and driven in turn, one round each (A B C, B C A, ...), after a warm-up round;
`run_group` turns what they report into result rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tvm_conformer.bench.builds import Builder, Unavailable
from tvm_conformer.bench.engines import EngineSpec, worker_env
from tvm_conformer.bench.sizes import disk_sizes
from tvm_conformer.bench.stats import reference_outputs, summarize
from tvm_conformer.bench.workload import Utterance, save_workload

SWITCH_PAUSE_S = 0.05  # between engines: lets the previous pool's spinning threads go idle


class Worker:
    """A worker process (`bench/worker.py`) running one engine."""

    def __init__(self, spec: EngineSpec, files: dict[str, str], workload: Path, log: Path) -> None:
        self.spec = spec
        self._log = open(log, "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tvm_conformer.bench.worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._log, text=True,
            env={**os.environ, **worker_env(spec)},
        )
        self.hello = self.request({"spec": spec.to_dict(), "files": files, "workload": str(workload)})

    def request(self, msg: dict) -> dict:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            return {"ok": False, "error": f"worker exited (code {self.proc.wait()}); see {self._log.name}"}
        return json.loads(line)

    def peak_rss_mb(self) -> float:
        """The worker's peak resident memory (VmHWM): its own, unlike ru_maxrss after a fork,
        which starts from the parent's resident size."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
        return int(kib) / 1024

    def close(self) -> float:
        """Stops the worker; returns its peak resident memory in MB (NaN if it already died)."""
        peak = self.peak_rss_mb() if self.proc.poll() is None else float("nan")
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
            except BrokenPipeError:
                pass
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()
        self._log.close()
        return peak


@dataclass
class Raw:
    """What the workers reported for one engine."""

    spec: EngineSpec
    error: str | None = None
    load_s: float = float("nan")
    first_call_s: float = float("nan")
    rounds: list[list[list[float]]] = field(default_factory=list)  # round -> recording -> seconds
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    peak_rss_mb: float = float("nan")


def measure(specs: list[EngineSpec], builder: Builder, workload: Path, rounds: int, work: Path,
            desc: str) -> list[Raw]:
    """Runs `specs` (one group) interleaved: a warm-up round, then `rounds` measured rounds."""
    raws = [Raw(s) for s in specs]
    workers: dict[int, Worker] = {}
    for i, raw in enumerate(tqdm(raws, desc=f"{desc}: build+load", leave=False)):
        try:
            files = builder.files(raw.spec)
        except Unavailable as exc:
            raw.error = str(exc)
            continue
        w = Worker(raw.spec, files, workload, work / f"{desc}-{raw.spec.label}.log".replace(" ", "_"))
        if w.hello.get("ok"):
            workers[i], raw.load_s = w, w.hello["load_s"]
        else:
            raw.error = w.hello["error"]
            raw.peak_rss_mb = w.close()
    order = list(workers)
    for r in tqdm(range(rounds + 1), desc=f"{desc}: rounds", leave=False):
        k = r % max(1, len(order))  # each round starts with the next engine: A B C, B C A, ...
        for i in order[k:] + order[:k]:
            if raws[i].error:
                continue
            save = work / f"out-{i}.npz" if r == 1 else None
            reply = workers[i].request({"cmd": "round", "save": str(save) if save else None})
            time.sleep(SWITCH_PAUSE_S)
            if not reply["ok"]:
                raws[i].error = reply["error"]
            elif r == 0:
                raws[i].first_call_s = reply["first_call_s"]
            else:
                raws[i].rounds.append(reply["seconds"])
                if save:
                    with np.load(save) as z:
                        raws[i].outputs = {k: z[k] for k in z.files}
    for i, w in workers.items():
        raws[i].peak_rss_mb = w.close()
    return raws


def run_group(specs: list[EngineSpec], builder: Builder, utts: list[Utterance], rounds: int,
              work: Path, desc: str) -> list[dict]:
    """Measures one group and returns its rows."""
    cfg = builder.model.cfg
    wl = work / f"workload-{cfg.hash()}.npz"
    save_workload(wl, utts)
    raws = measure(specs, builder, wl, rounds, work, desc)
    ref = reference_outputs(builder.model, utts, specs[0].mode)
    rows = []
    for raw in raws:
        sizes = {} if raw.error else disk_sizes(raw.spec, builder.files(raw.spec))
        rows.append(summarize(raw, utts, ref, cfg, sizes))
    return rows

"""Per-kernel profile of one streaming step of a compiled artifact.

The VM calls an instrument before and after every Call instruction (`vm.set_instrument`); the
time between the two is one kernel call. The instrument's own cost (a round trip into Python)
is measured on `vm.builtin.null_value` calls, which do nothing, and subtracted. A kernel's bytes
are the sizes of its argument tensors (inputs and outputs: what it must at least read or write).
The VM's overhead is the uninstrumented step time minus the kernels' sum: argument checks,
allocations, builtin calls and dispatch between kernels.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

BUILTIN_PREFIX = "vm.builtin."
CALIBRATION = "vm.builtin.null_value"


@dataclass
class KernelStat:
    name: str
    calls: int  # per step
    us: float  # per step, median over steps
    bytes: int  # per step

    @property
    def gbs(self) -> float:
        return self.bytes / (self.us * 1e3) if self.us > 0 else float("nan")


@dataclass
class KernelProfile:
    artifact: str
    threads: int
    steps: int
    step_us: float  # median uninstrumented step
    instrument_us: float  # subtracted from every call
    kernels: list[KernelStat]
    builtin_calls: int  # per step

    @property
    def kernel_calls(self) -> int:
        return sum(k.calls for k in self.kernels)

    @property
    def kernel_us(self) -> float:
        return sum(k.us for k in self.kernels)

    @property
    def vm_overhead_us(self) -> float:
        return self.step_us - self.kernel_us

    @classmethod
    def from_dict(cls, d: dict) -> KernelProfile:
        """Inverse of `to_dict` (derived fields are recomputed)."""
        kernels = [KernelStat(k["name"], k["calls"], k["us"], k["bytes"]) for k in d["kernels"]]
        return cls(d["artifact"], d["threads"], d["steps"], d["step_us"], d["instrument_us"],
                   kernels, d["builtin_calls"])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kernels"] = [dict(asdict(k), gbs=k.gbs) for k in self.kernels]
        d.update(kernel_calls=self.kernel_calls, kernel_us=self.kernel_us,
                 vm_overhead_us=self.vm_overhead_us)
        return d


def _nbytes(arg) -> int:  # noqa: ANN001 - a VM call argument
    shape = getattr(arg, "shape", None)
    if shape is None or not hasattr(arg, "dtype"):
        return 0
    return int(np.prod([int(s) for s in shape])) * np.dtype(str(arg.dtype)).itemsize


class _Recorder:
    """The instrument: per step, {symbol: [seconds per call]} and bytes of each kernel call."""

    def __init__(self) -> None:
        self.calls: dict[str, list[float]] = {}
        self.bytes: dict[str, int] = {}
        self._t0 = 0.0

    def __call__(self, func, symbol: str, before: bool, ret, *args) -> int:  # noqa: ANN001
        if before:
            if not symbol.startswith(BUILTIN_PREFIX):
                self.bytes[symbol] = self.bytes.get(symbol, 0) + sum(_nbytes(a) for a in args)
            self._t0 = time.perf_counter()
        else:
            self.calls.setdefault(symbol, []).append(time.perf_counter() - self._t0)
        return 0  # VMInstrumentReturnKind.NO_OP


def profile_artifact(artifact: str | Path, threads: int = 1, steps: int = 30,
                     utts: list | None = None) -> KernelProfile:
    """Profiles `steps` steps of the artifact on the workload's chunks (random features without
    one), caches carried; each kernel's time is its median per-step total."""
    from tvm_conformer.bench.engines import TvmEngine

    engine = TvmEngine(str(artifact), threads)
    chunks = _chunks(engine, utts, steps)

    def run_steps(record: _Recorder | None) -> tuple[list[float], list[tuple[dict, dict]]]:
        """Step seconds, and per step what the instrument recorded (when there is one)."""
        times, recorded, state = [], [], engine.initial_state()
        for feats, mask in chunks:
            if record is not None:
                record.calls, record.bytes = {}, {}
            t0 = time.perf_counter()
            _, state = engine.step(state, feats, mask)
            times.append(time.perf_counter() - t0)
            if record is not None:
                recorded.append((record.calls, record.bytes))
        return times, recorded

    run_steps(None)  # warm-up
    step_s = statistics.median(run_steps(None)[0])
    rec = _Recorder()
    engine.vm.set_instrument(rec)  # the engine is profiled only from here on
    _, per_step = run_steps(rec)
    instrument_s = statistics.median(t for calls, _ in per_step for t in calls.get(CALIBRATION, []))
    stats = []
    for name in per_step[0][0]:
        if name.startswith(BUILTIN_PREFIX):
            continue
        totals = [sum(max(0.0, t - instrument_s) for t in calls[name]) for calls, _ in per_step]
        stats.append(KernelStat(name, len(per_step[0][0][name]), statistics.median(totals) * 1e6,
                                per_step[0][1].get(name, 0)))
    stats.sort(key=lambda k: -k.us)
    builtins = sum(len(v) for k, v in per_step[0][0].items() if k.startswith(BUILTIN_PREFIX))
    return KernelProfile(str(artifact), threads, len(chunks), step_s * 1e6, instrument_s * 1e6,
                         stats, builtins)


def _chunks(engine, utts: list | None, steps: int) -> list[tuple[np.ndarray, np.ndarray]]:  # noqa: ANN001
    if utts:
        seq = [(f, m) for u in utts for f, m in zip(u.feats, u.masks, strict=True)]
        return (seq * (steps // len(seq) + 1))[:steps]
    cfg = engine.manifest["model"]["config"]
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((1, 4 * cfg["chunk_size"] + 3, cfg["n_mels"]), dtype=np.float32)
    mask = np.ones((1, cfg["chunk_size"] * (cfg["num_left_chunks"] + 1)), np.float32)
    return [(feats, mask)] * steps


def format_profile(p: KernelProfile, top: int | None = None) -> str:
    """A Markdown table: one line per kernel, then the totals and the VM's overhead."""
    lines = [f"Kernel profile of {p.artifact} ({p.threads} thread(s), median of {p.steps} steps; "
             f"instrument cost {p.instrument_us:.2f} us/call subtracted)", "",
             "| kernel | calls/step | us/step | % of step | bytes/step | GB/s |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for k in p.kernels[:top]:
        lines.append(f"| {k.name} | {k.calls} | {k.us:.1f} | {100 * k.us / p.step_us:.1f} | "
                     f"{k.bytes:,} | {k.gbs:.2f} |")
    if top is not None and len(p.kernels) > top:
        rest = p.kernels[top:]
        lines.append(f"| ({len(rest)} more kernels) | {sum(k.calls for k in rest)} | "
                     f"{sum(k.us for k in rest):.1f} | {100 * sum(k.us for k in rest) / p.step_us:.1f} | "
                     f"{sum(k.bytes for k in rest):,} | |")
    lines += ["", f"- kernels per step: {p.kernel_calls} calls of {len(p.kernels)} distinct kernels; "
              f"{p.builtin_calls} VM builtin calls",
              f"- step (uninstrumented): {p.step_us:.1f} us; kernels: {p.kernel_us:.1f} us; "
              f"VM overhead: {p.vm_overhead_us:.1f} us ({100 * p.vm_overhead_us / p.step_us:.1f}%)"]
    return "\n".join(lines)

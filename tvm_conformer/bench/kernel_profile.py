"""Per-kernel profile of one streaming step of a compiled artifact.

The VM calls an instrument before and after every call instruction (`vm.set_instrument`). One
instrumented step records, in order, every kernel call with its arguments: that gives the
kernels per step and the bytes each moves (the sizes of its argument tensors, inputs and
outputs: what it must at least read or write). Each distinct kernel is then timed by TVM's
`time_evaluator` on a copy of the arguments of its first real call (a loop in C++, so no Python
cost is in the number; caches are warm from the previous repeat). Kernels and the step both take their fastest
repeat: other processes on the machine can only add time. Timing inside the instrument instead would
add a Python round trip with argument conversion to every call (1-2 us, as large as the small
kernels). The VM's overhead is the uninstrumented step time minus the kernels' sum: argument
checks, allocations, builtin calls and dispatch between kernels.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

BUILTIN_PREFIX = "vm.builtin."
REPEAT = 5
TARGET_MS = 2.0  # length of one timed repeat


@dataclass
class KernelStat:
    name: str
    calls: int  # per step
    us: float  # per step: calls x the fastest repeat's time of one call
    bytes: int  # per step

    @property
    def gbs(self) -> float:
        return self.bytes / (self.us * 1e3) if self.us > 0 else float("nan")


@dataclass
class KernelProfile:
    artifact: str
    threads: int
    steps: int  # uninstrumented steps behind step_us
    step_us: float  # fastest uninstrumented step
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
        return cls(d["artifact"], d["threads"], d["steps"], d["step_us"], kernels, d["builtin_calls"])

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
    """The instrument: every kernel call of a step in order with its argument bytes, and a copy
    of the arguments of each kernel's first call (taken before it runs: the memory planner
    reuses the tensors' storage later in the step, so the originals end up holding garbage,
    denormal floats among it, which would slow the kernels down when timed alone)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.args: dict[str, list] = {}
        self.builtins = 0

    def __call__(self, func, symbol: str, before: bool, ret, *args) -> int:  # noqa: ANN001
        if before:
            if symbol.startswith(BUILTIN_PREFIX):
                self.builtins += 1
            else:
                self.calls.append((symbol, sum(_nbytes(a) for a in args)))
                if symbol not in self.args:
                    self.args[symbol] = [a.numpy() if hasattr(a, "numpy") else a for a in args]
        return 0  # VMInstrumentReturnKind.NO_OP


def _time_call(module, name: str, args: list, dev) -> float:  # noqa: ANN001
    """Seconds of one call: the fastest of REPEAT repeats of a loop of about TARGET_MS."""
    once = module.time_evaluator(name, dev, number=1, repeat=3)(*args).min
    number = max(1, min(1000, int(TARGET_MS / 1e3 / max(once, 1e-7))))
    return module.time_evaluator(name, dev, number=number, repeat=REPEAT)(*args).min


def profile_artifact(artifact: str | Path, threads: int = 1, steps: int = 30) -> KernelProfile:
    """Profiles one step of the artifact, after `steps` uninstrumented steps give the step's
    time. Inputs are random features and a full mask: the step has no data-dependent
    control flow, so the values do not change the timing."""
    import tvm

    from tvm_conformer.bench.engines import TvmEngine

    engine = TvmEngine(str(artifact), threads)
    cfg = engine.manifest["model"]["config"]
    rng = np.random.default_rng(0)
    if engine.manifest.get("mode") == "utterance":  # one forward over the build's frames
        feats = rng.standard_normal((1, engine.manifest["frames"], cfg["n_mels"]), np.float32)

        def run() -> None:
            engine.forward(feats)
    else:
        feats = rng.standard_normal((1, 4 * cfg["chunk_size"] + 3, cfg["n_mels"]), np.float32)
        mask = np.ones((1, cfg["chunk_size"] * (cfg["num_left_chunks"] + 1)), np.float32)
        state = engine.initial_state()

        def run() -> None:
            nonlocal state
            _, state = engine.step(state, feats, mask)
    times = []
    for _ in range(steps + 1):  # the first is a warm-up
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    rec = _Recorder()
    engine.vm.set_instrument(rec)  # the engine is only profiled from here on
    run()
    library = tvm.runtime.load_module(str(Path(artifact) / "lib.so"))
    kernels: dict[str, KernelStat] = {}
    for name, nbytes in rec.calls:
        if name not in kernels:
            module = next(m for m in library.imports if m.implements_function(name))
            args = [tvm.runtime.tensor(a, engine.dev) if isinstance(a, np.ndarray) else a
                    for a in rec.args[name]]
            kernels[name] = KernelStat(name, 0, _time_call(module, name, args, engine.dev) * 1e6, 0)
        kernels[name].calls += 1
        kernels[name].bytes += nbytes
    for k in kernels.values():
        k.us *= k.calls  # the timer measured one call
    stats = sorted(kernels.values(), key=lambda k: -k.us)
    return KernelProfile(str(artifact), threads, steps, min(times[1:]) * 1e6, stats, rec.builtins)


def format_profile(p: KernelProfile, top: int | None = None) -> str:
    """A Markdown table: one line per kernel, then the totals and the VM's overhead."""
    lines = [f"Kernel profile of {p.artifact} ({p.threads} thread(s); kernels timed by "
             f"time_evaluator on their recorded arguments; fastest of {REPEAT} repeats, and of "
             f"{p.steps} steps)", "",
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

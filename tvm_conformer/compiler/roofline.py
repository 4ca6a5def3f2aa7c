"""A roofline lower bound on the real-time factor of a compiled model on a device.

One streaming step is counted in the compiled graph after operators are lowered to TIR kernels
and fused (what the device runs): the multiply-accumulates of every matmul/convolution block
(`C[...] += A[...] * B[...]`, times its iteration domain), and the bytes moved when each weight
is read once and every other kernel input and output crosses memory once. A step takes at least
`max(2 * MACs / peak FLOP/s, bytes / memory bandwidth)`; over the audio a chunk covers, that
bounds the real-time factor from below. Element-wise arithmetic is not counted, which keeps the
compute term a lower bound; the memory term assumes the tensors passed between kernels go
through DRAM (caches may hold the small ones: it bounds this kernel graph, not every schedule).
An estimate, not a measurement."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import tvm
import tvm_ffi
from tvm import relax, s_tir, tirx

from tvm_conformer.compiler.pipeline import PipelineOptions
from tvm_conformer.compiler.vectorize import is_multiply_accumulate
from tvm_conformer.errors import UserError
from tvm_conformer.model.config import ModelConfig
from tvm_conformer.targets.registry import DeviceTarget

FRAME_SECONDS = 0.01  # fbank hop
LABEL = "estimate (roofline lower bound), not a measurement"


@dataclass(frozen=True)
class Work:
    """What one streaming step does: multiply-accumulates and bytes moved."""

    macs: int
    weight_bytes: int  # each weight (parameter or constant) read once
    activation_bytes: int  # every other kernel input read, every kernel output written
    kernel_calls: int
    kernel_macs: dict[str, int]  # kernel -> MACs over all its calls in one step (nonzero only)

    @property
    def bytes(self) -> int:
        return self.weight_bytes + self.activation_bytes


def manifest_work(manifest: dict, art: str | Path) -> Work:
    """The work `compile` recorded in an artifact's manifest."""
    if "work" not in manifest:
        raise UserError(f"{art} predates work counts in its manifest: rebuild it with "
                        "`tvm-conformer compile`")
    return Work(**manifest["work"])


def _nbytes(ty: relax.Type) -> int:
    if isinstance(ty, relax.TupleType):
        return sum(_nbytes(field) for field in ty.fields)
    if not isinstance(ty, relax.TensorType):
        return 0
    dtype = tvm.DataType(str(ty.dtype))
    return math.prod(int(d) for d in ty.shape.values) * ((dtype.bits * dtype.lanes + 7) // 8)


def kernel_macs(func: tirx.PrimFunc) -> int:
    """Multiply-accumulates of one call of an unscheduled kernel (loops = block domains)."""
    total = 0

    def visit(block: s_tir.SBlock) -> None:
        nonlocal total
        if is_multiply_accumulate(block):
            total += math.prod(int(iv.dom.extent) for iv in block.iter_vars)

    tvm_ffi.structural_walk(func.body, [(s_tir.SBlock, visit)], order="post")
    return total


def count_work(mod: tvm.IRModule) -> Work:
    """The work of `main` in a fused, unscheduled module (the pipeline's `fused` phase);
    parameters after `num_input` are weights."""
    main = mod["main"]
    n_inputs = int(main.attrs["num_input"]) if "num_input" in (main.attrs or {}) else len(main.params)
    weights = list(main.params[n_inputs:])
    call_tir = tvm.ir.Op.get("relax.call_tir")
    activations = calls = 0
    read_weights: dict[relax.Expr, int] = {}
    per_kernel: dict[str, int] = {}
    for block in main.body.blocks:
        for binding in block.bindings:
            call = binding.value
            if not (isinstance(call, relax.Call) and call.op.same_as(call_tir)):
                continue
            calls += 1
            name = call.args[0].name_hint
            if macs := kernel_macs(mod[call.args[0]]):
                per_kernel[name] = per_kernel.get(name, 0) + macs
            for arg in call.args[1].fields:
                if isinstance(arg, tvm.ir.Constant) or any(arg.same_as(w) for w in weights):
                    read_weights[arg] = _nbytes(arg.ty)
                else:
                    activations += _nbytes(arg.ty)
            activations += _nbytes(binding.var.ty)
    return Work(sum(per_kernel.values()), sum(read_weights.values()), activations, calls,
                per_kernel)


def model_work(
    checkpoint: str | Path, device: DeviceTarget, opts: PipelineOptions, frontend: str = "torch"
) -> tuple[Work, float]:
    """(work of one step, seconds of audio per step) of a checkpoint compiled for `device`
    with `opts`, counted without scheduling kernels or generating code."""
    from tvm_conformer.compiler.compile import import_for_pipeline
    from tvm_conformer.compiler.pipeline import tvm_conformer_pipeline
    from tvm_conformer.compiler.source import open_model

    src = open_model(checkpoint)  # a checkpoint or a contract .onnx
    opts = replace(opts, schedules=False)
    mod, _ = import_for_pipeline(src, frontend, opts)
    works: list[Work] = []

    def observe(phase: str, m: tvm.IRModule) -> None:
        if phase == "fused":  # counted at once: later phases update the module in place
            works.append(count_work(m))

    with device.tvm():
        tvm_conformer_pipeline(opts, None, observe, lift_weights=lambda _f: None)(mod)
    return works[0], src.chunk_seconds


def chunk_seconds(cfg: ModelConfig) -> float:
    """Seconds of audio one streaming step advances: 4 * chunk_size fbank frames of 10 ms."""
    return cfg.chunk_stride_frames * FRAME_SECONDS


@dataclass(frozen=True)
class Estimate:
    """The bound and how it was reached, all per streaming step (one chunk)."""

    target: str
    precision: str
    audio_seconds: float
    macs: int
    weight_bytes: int
    activation_bytes: int
    peak_gflops: float
    mem_bandwidth_gbs: float
    compute_seconds: float
    memory_seconds: float
    rtf_lower_bound: float
    bound_by: str  # "compute" or "memory"
    label: str = LABEL

    def to_dict(self) -> dict:
        return asdict(self)


def estimate(device: DeviceTarget, work: Work, audio_seconds: float, precision: str) -> Estimate:
    """The roofline bound of `work` on `device` (fp16 at `fp16_rate` times the fp32 peak)."""
    peak = device.peak_gflops(precision)
    compute = 2 * work.macs / (peak * 1e9)
    memory = work.bytes / (device.mem_bandwidth_gbs * 1e9)
    return Estimate(
        target=device.name, precision=precision, audio_seconds=audio_seconds, macs=work.macs,
        weight_bytes=work.weight_bytes, activation_bytes=work.activation_bytes,
        peak_gflops=peak, mem_bandwidth_gbs=device.mem_bandwidth_gbs,
        compute_seconds=compute, memory_seconds=memory,
        rtf_lower_bound=max(compute, memory) / audio_seconds,
        bound_by="compute" if compute >= memory else "memory",
    )


def format_estimate(e: Estimate) -> str:
    return "\n".join([
        f"{e.target} ({e.precision}): {LABEL}",
        f"  per chunk of {e.audio_seconds:.2f} s audio: {e.macs / 1e6:.1f} M MACs, "
        f"weights {e.weight_bytes / 1e6:.2f} MB + activations {e.activation_bytes / 1e6:.2f} MB",
        f"  peak {e.peak_gflops:.1f} GFLOP/s -> compute >= {e.compute_seconds * 1e3:.3f} ms; "
        f"{e.mem_bandwidth_gbs:.1f} GB/s -> memory >= {e.memory_seconds * 1e3:.3f} ms",
        f"  RTF >= {e.rtf_lower_bound:.5f} ({e.bound_by}-bound)",
    ])

"""The engines the benchmark compares, and how a worker process opens one.

A worker opens exactly one engine and imports only that engine's runtime: PyTorch for `torch`
and `torch.compile`, onnxruntime for `ort`, and for `tvm` TVM's runtime library alone
(`TVM_USE_RUNTIME_LIB=1`: no compiler library, no torch). So a worker's peak RSS is what a
process that deploys that engine needs. Engines take numpy in and give numpy out, all alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

ENGINES = ("torch", "torch.compile", "ort", "openvino", "tvm")
TVM_KINDS = ("untuned", "schedules", "tuned")  # no schedules / dlight + schedules/ / + database
MODES = ("stream", "utterance")


@dataclass(frozen=True)
class EngineSpec:
    """One row of the benchmark: an engine, its build variant, its thread count and mode."""

    engine: str
    threads: int = 1
    mode: str = "stream"  # stream: the step, caches carried; utterance: one fixed-length forward
    tvm: str = ""  # tvm only: one of TVM_KINDS
    passes: bool = False  # tvm only: the project's graph passes (layout, einsum, fuse)
    precision: str = "fp32"  # tvm: fp32 | fp16 | int8; ort: fp32 | int8 (quantize_dynamic)

    @property
    def label(self) -> str:
        if self.engine != "tvm":
            return self.engine + ("+int8" if self.precision == "int8" else "")
        extras = (["passes"] if self.passes else []) + ([self.precision] if self.precision != "fp32" else [])
        return "+".join([f"tvm-{self.tvm}", *extras])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TorchEngine:
    """PyTorch eager (`TorchBackend`), or the same with `forward_chunk` under `torch.compile`."""

    def __init__(self, checkpoint: str, threads: int, compiled: bool) -> None:
        import torch

        from tvm_conformer.bench.utterance import FullUtterance
        from tvm_conformer.model import load_checkpoint
        from tvm_conformer.runtime.backend import TorchBackend

        torch.set_num_interop_threads(1)
        model, _ = load_checkpoint(checkpoint)
        self.backend = TorchBackend(model, threads)
        self.full = FullUtterance(model).eval()
        if compiled:
            # Replaced on the instance so TorchBackend runs the compiled step; the first call compiles.
            model.forward_chunk = torch.compile(model.forward_chunk, dynamic=False)
            self.full = torch.compile(self.full, dynamic=False)
        self._torch = torch

    def initial_state(self) -> Any:
        return self.backend.initial_state()

    def step(self, state: Any, feats: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, Any]:
        return self.backend.step(state, feats, mask)

    def forward(self, feats: np.ndarray) -> np.ndarray:
        with self._torch.no_grad():
            return self.full(self._torch.from_numpy(feats))[0].numpy()


class OrtEngine:
    """ONNX Runtime, CPU execution provider, all graph optimizations, a fixed intra-op pool."""

    def __init__(self, onnx_path: str, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
        self.shapes = {i.name: i.shape for i in self.session.get_inputs()}

    def initial_state(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.zeros(self.shapes["att_cache"], np.float32),
                np.zeros(self.shapes["cnn_cache"], np.float32))

    def step(self, state: Any, feats: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, Any]:
        lp, att, cnn = self.session.run(
            None, {"feats": feats, "att_cache": state[0], "cnn_cache": state[1], "att_mask": mask})
        return lp[0], (att, cnn)

    def forward(self, feats: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"feats": feats})[0][0]


class TvmEngine:
    """An artifact's `main` on TVM's runtime-only library; weights uploaded once, caches kept
    as TVM tensors between steps (as `TVMBackend` does, without importing torch or relax)."""

    def __init__(self, artifact: str, threads: int) -> None:
        import tvm
        from tvm.runtime.vm import VirtualMachine

        from tvm_conformer.compiler.artifact import LIB, WEIGHTS, load_weights, read_manifest
        from tvm_conformer.compiler.compat import check_runs_here
        from tvm_conformer.runtime.weights import upload_weights
        from tvm_conformer.threads import set_threads

        art = Path(artifact)
        set_threads(threads)
        self.manifest = read_manifest(art)
        check_runs_here(self.manifest, art)
        self.dev = tvm.cpu()
        self.vm = VirtualMachine(tvm.runtime.load_module(str(art / LIB)), self.dev)
        self.weights = upload_weights(load_weights(art / WEIGHTS), self.dev)
        self._tensor = tvm.runtime.tensor

    def initial_state(self) -> tuple[Any, Any]:
        cfg = self.manifest["model"]["config"]
        left = cfg["chunk_size"] * cfg["num_left_chunks"]
        att = np.zeros((cfg["n_layers"], 2, left, cfg["d_model"]), np.float32)
        cnn = np.zeros((cfg["n_layers"], cfg["d_model"], cfg["conv_kernel"] - 1), np.float32)
        return self._tensor(att, self.dev), self._tensor(cnn, self.dev)

    def step(self, state: Any, feats: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, Any]:
        out = self.vm["main"](self._tensor(feats, self.dev), *state, self._tensor(mask, self.dev),
                              *self.weights)
        return out[0].numpy()[0], (out[1], out[2])

    def forward(self, feats: np.ndarray) -> np.ndarray:
        return self.vm["main"](self._tensor(feats, self.dev), *self.weights)[0].numpy()[0]


def open_engine(spec: EngineSpec, files: dict[str, str]) -> TorchEngine | OrtEngine | TvmEngine:
    """The engine of `spec` on the files `prepare` built for it."""
    if spec.engine in ("torch", "torch.compile"):
        return TorchEngine(files["checkpoint"], spec.threads, spec.engine == "torch.compile")
    if spec.engine == "ort":
        return OrtEngine(files["onnx"], spec.threads)
    if spec.engine == "openvino":
        from tvm_conformer.bench.openvino_engine import OpenVinoEngine

        return OpenVinoEngine(files["onnx"], spec.threads)
    return TvmEngine(files["artifact"], spec.threads)


def worker_env(spec: EngineSpec) -> dict[str, str]:
    """Environment of the worker process running `spec` (added to the parent's)."""
    n = str(spec.threads)
    env = {"OMP_NUM_THREADS": n, "TVM_NUM_THREADS": n, "TORCHINDUCTOR_COMPILE_THREADS": "1"}
    if spec.engine == "tvm":
        env["TVM_USE_RUNTIME_LIB"] = "1"
    return env

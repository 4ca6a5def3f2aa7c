"""Full-utterance (non-streaming) mode: the encoder and CTC head over one fixed-length input.

Shapes are static (one length, `workload.UTTERANCE_FRAMES` fbank frames): the exported ONNX
graph and the TVM build take exactly that length; dynamic lengths are not needed to measure.
Attention has full context (non-streaming: every frame sees the whole utterance).
"""

from __future__ import annotations

import json
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tvm_conformer.model import ConformerASR


class FullUtterance(nn.Module):
    """feats (1, T, n_mels) -> CTC log-probs (1, T', V), full context; T is fixed at export.

    `ConformerASR.forward(feats, lens, chunk_size=0)` without the lengths: at a fixed length
    every frame is real, and the length arithmetic does not compile (the torch frontend gives
    `int64 // 2` an int32 constant; with int32 lengths, the clamp to [0, inf) fails to lower).
    """

    def __init__(self, model: ConformerASR) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.ctc = model.ctc

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        x = enc.subsampling(enc.normalize(feats))
        mask = torch.ones(1, x.shape[1], x.shape[1], dtype=torch.bool)
        for block in enc.blocks:
            x, _, _ = block(x, mask)
        return F.log_softmax(self.ctc(x), dim=-1)


def _example(model: ConformerASR, frames: int) -> tuple[torch.Tensor]:
    return (torch.zeros(1, frames, model.cfg.n_mels),)


def export_utterance_onnx(model: ConformerASR, frames: int, path: Path) -> Path:
    """The full forward as ONNX (opset 18, static shapes), like `frontend.export_onnx`."""
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(FullUtterance(model).eval(), _example(model, frames), str(path),
                          input_names=["feats"], output_names=["log_probs"], opset_version=18,
                          dynamo=False)
    onnx.checker.check_model(str(path))
    return path


def import_utterance(model: ConformerASR, frames: int):  # noqa: ANN201 - (IRModule, weights)
    """The full forward in Relax through torch.export, weights as `main`'s parameters named
    after the PyTorch parameters (`p_encoder_blocks_0_ffn1_w1_weight`, ...), and their values."""
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = torch.export.export(FullUtterance(model).eval(), _example(model, frames))
        mod = from_exported_program(ep, keep_params_as_input=True)
    mod, params = relax.frontend.detach_params(mod)
    return mod, [np.ascontiguousarray(p.numpy()) for p in params["main"]]


def build_utterance_artifact(out_dir: Path, model: ConformerASR, frames: int, opts) -> dict:  # noqa: ANN001
    """Compiles the full forward for the host with the project pipeline into an artifact
    directory (lib.so, weights.npz, manifest.json) that `engines.TvmEngine` loads."""
    import tvm

    from tvm_conformer.compiler.artifact import LIB, WEIGHTS, save_weights, write_manifest
    from tvm_conformer.compiler.compat import required_cpu_features
    from tvm_conformer.compiler.compile import run_weight_transform
    from tvm_conformer.compiler.link import export
    from tvm_conformer.compiler.pipeline import tvm_conformer_pipeline
    from tvm_conformer.targets import load_target

    t0 = time.time()
    device = load_target("host")
    mod, weights = import_utterance(model, frames)
    target = device.tvm()
    lifted: list = []
    with target:
        ex = tvm.compile(mod, target=target,
                         relax_pipeline=tvm_conformer_pipeline(opts, lift_weights=lifted.append))
    if lifted:
        weights = run_weight_transform(lifted[0], weights)
    out_dir.mkdir(parents=True, exist_ok=True)
    export(ex, device, out_dir / LIB)
    save_weights(out_dir / WEIGHTS, weights)
    manifest = {"model": {"config": model.cfg.to_dict(), "config_hash": model.cfg.hash(),
                          "checkpoint": "", "checkpoint_sha256": ""},
                "mode": "utterance", "frames": frames, "frontend": "torch",
                "target": {"name": device.name, "family": device.family,
                           "tvm": json.loads(str(target)), "host": None,
                           "elf_machine": device.elf_machine, "threads": opts.threads,
                           "cpu_features": required_cpu_features(target)},
                "pipeline": opts.to_dict(), "io": {"inputs": ["feats"], "outputs": ["log_probs"],
                                                   "weights": len(weights)},
                "tvm_version": tvm.__version__, "built_on": {"machine": platform.machine()},
                "compile_seconds": round(time.time() - t0, 2)}
    write_manifest(out_dir, manifest)
    return manifest

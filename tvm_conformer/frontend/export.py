"""Import the static-shape streaming step into Relax, with weights as separate parameters.

`import_step` returns an IRModule whose `main(feats, att_cache, cnn_cache, att_mask, *weights)`
returns (log_probs, att_cache, cnn_cache), and the weights in `main`'s parameter order. With
`bind=True` the weights are bound into the module as constants instead.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from tvm_conformer.errors import UserError
from tvm_conformer.model.asr import ConformerASR, StreamingStep

FRONTENDS = ("torch", "onnx")
INPUT_NAMES = ("feats", "att_cache", "cnn_cache", "att_mask")
OUTPUT_NAMES = ("log_probs", "new_att_cache", "new_cnn_cache")


def export_onnx(model: ConformerASR, path: str | Path) -> Path:
    """The step as ONNX (opset 18, legacy exporter: static shapes, initializers for weights)."""
    step = StreamingStep(model).eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            step, step.example_inputs(), str(path), input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES), opset_version=18, dynamo=False,
        )
    import onnx

    onnx.checker.check_model(str(path))
    return path


def _from_torch(model: ConformerASR):
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    step = StreamingStep(model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = torch.export.export(step, step.example_inputs())
        mod = from_exported_program(ep, keep_params_as_input=True)
    mod, params = relax.frontend.detach_params(mod)
    return mod, [p.numpy() for p in params["main"]]


def _from_onnx(model: ConformerASR, workdir: Path):
    import onnx
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    path = export_onnx(model, workdir / "step.onnx")
    mod = from_onnx(onnx.load(str(path)), keep_params_in_input=True)
    mod, params = relax.frontend.detach_params(mod)
    return mod, [p.numpy() for p in params["main"]]


def import_step(
    model: ConformerASR, frontend: str = "torch", bind: bool = False, workdir: str | Path | None = None
):
    """(IRModule, weights) for the step; weights is [] when `bind` puts them in the module."""
    import tempfile

    from tvm import relax

    if frontend == "torch":
        mod, weights = _from_torch(model)
    elif frontend == "onnx":
        with tempfile.TemporaryDirectory() as tmp:
            mod, weights = _from_onnx(model, Path(workdir or tmp))
    else:
        raise UserError(f"unknown frontend {frontend!r}: choose one of {', '.join(FRONTENDS)}")
    if bind:
        names = [v.name for v in mod["main"].params[len(INPUT_NAMES) :]]
        mod = relax.transform.BindParams("main", dict(zip(names, weights, strict=True)))(mod)
        weights = []
    return mod, [np.ascontiguousarray(w) for w in weights]

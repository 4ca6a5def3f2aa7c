"""ONNX Runtime's int8 peer: the step's ONNX file through `quantize_dynamic`, as sherpa-onnx and
WeNet ship `model.int8.onnx` (int8 weights of the MatMuls, activations quantized at run time by
DynamicQuantizeLinear, MatMulInteger)."""

from __future__ import annotations

from pathlib import Path


def quantize_step_onnx(src: Path, dst: Path) -> Path:
    """`dst`: `src` with its MatMuls quantized dynamically (weights QInt8), as they ship it."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8)
    return dst

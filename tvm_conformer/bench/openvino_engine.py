"""OpenVINO as a benchmark engine: the CPU plugin on the same ONNX file ONNX Runtime runs.

Configured as a deployment that wants the lowest latency of one stream at a fixed thread count:
`INFERENCE_NUM_THREADS` = the row's threads, `PERFORMANCE_HINT` LATENCY (one stream), and
`INFERENCE_PRECISION_HINT` f32, without which the plugin may run bf16 on CPUs that have it, and
the comparison would no longer be fp32 against fp32 (docs/BENCHMARKS.md). One infer request is
made once and reused; its outputs are copied out each step, as the other engines hand back
numpy arrays they own.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def openvino_config(threads: int) -> dict[str, Any]:
    return {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32"}


class OpenVinoEngine:
    """OpenVINO's CPU plugin, fp32, a fixed number of threads, one stream."""

    def __init__(self, onnx_path: str, threads: int) -> None:
        import openvino as ov

        core = ov.Core()
        self.compiled = core.compile_model(onnx_path, "CPU", openvino_config(threads))
        self.request = self.compiled.create_infer_request()
        self.shapes = {p.get_any_name(): tuple(p.get_partial_shape().to_shape())
                       for p in self.compiled.inputs}

    def initial_state(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.zeros(self.shapes["att_cache"], np.float32),
                np.zeros(self.shapes["cnn_cache"], np.float32))

    def _outputs(self) -> list[np.ndarray]:
        return [np.array(self.request.get_output_tensor(i).data)
                for i in range(len(self.compiled.outputs))]

    def step(self, state: Any, feats: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, Any]:
        self.request.infer({"feats": feats, "att_cache": state[0], "cnn_cache": state[1],
                            "att_mask": mask})
        lp, att, cnn = self._outputs()
        return lp[0], (att, cnn)

    def forward(self, feats: np.ndarray) -> np.ndarray:
        self.request.infer({"feats": feats})
        return self._outputs()[0][0]

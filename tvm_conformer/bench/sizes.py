"""What an engine costs on disk: its model files and the runtime libraries a deployment ships."""

from __future__ import annotations

from pathlib import Path

from tvm_conformer.bench.engines import EngineSpec


def disk_sizes(spec: EngineSpec, files: dict[str, str]) -> dict[str, float]:
    """MB on disk of the model files that ship, and of the runtime libraries that must ship too."""
    if "checkpoint" in files:
        model = [Path(files["checkpoint"])]
    elif "onnx" in files:
        model = [Path(files["onnx"])]
    else:
        model = [Path(files["artifact"]) / n for n in ("lib.so", "weights.npz")]
    return {"model_mb": sum(p.stat().st_size for p in model) / 2**20,
            "runtime_mb": runtime_mb(spec.engine)}


def runtime_mb(engine: str) -> float:
    """Shared libraries of the engine's runtime (what a deployment installs besides Python)."""
    import importlib.util

    if engine == "tvm":
        import tvm_ffi

        spec = importlib.util.find_spec("tvm")
        libs = [Path(spec.origin).parent / "lib" / "libtvm_runtime.so"]
        libs += list(Path(tvm_ffi.__file__).parent.rglob("*.so"))
    else:
        pkg = ("torch" if engine.startswith("torch") else
               "openvino" if engine == "openvino" else "onnxruntime")
        libs = list(Path(importlib.util.find_spec(pkg).origin).parent.rglob("*.so*"))
    return sum(p.stat().st_size for p in libs if p.is_file()) / 2**20

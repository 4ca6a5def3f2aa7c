"""Streaming recognition over a step backend (PyTorch, a local TVM artifact, or a device).

`OnlineRecognizer` and `Stream` are imported on first use, so that the runtime-only modules
(`weights`, which the bench's TVM engine uses in a process without torch) import alone."""

from typing import Any

__all__ = ["OnlineRecognizer", "Stream"]


def __getattr__(name: str) -> Any:  # noqa: ANN401
    if name in __all__:
        from tvm_conformer.runtime import recognizer

        return getattr(recognizer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

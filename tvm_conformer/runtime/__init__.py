"""Streaming recognition over a step backend (PyTorch, a local TVM artifact, or a device)."""

from tvm_conformer.runtime.recognizer import OnlineRecognizer, Stream

__all__ = ["OnlineRecognizer", "Stream"]

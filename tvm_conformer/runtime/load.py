"""Choose and build a step backend by name: the one entry point the CLI and notebooks use."""

from __future__ import annotations

from pathlib import Path

from tvm_conformer.errors import UserError
from tvm_conformer.model import load_checkpoint
from tvm_conformer.paths import DEFAULT_CHECKPOINT
from tvm_conformer.runtime.backend import StepBackend, TorchBackend

BACKENDS = ("torch", "tvm")


def make_backend(
    backend: str = "torch",
    model: str | Path | None = None,
    artifact: str | Path | None = None,
    threads: int | None = None,
) -> StepBackend:
    """`torch`: PyTorch eager on the checkpoint (default: the shipped one); `tvm`: a compiled
    artifact, built for the host on first use and cached when `artifact` is None. An artifact
    given together with a `model` must have been compiled from that checkpoint."""
    if backend == "torch":
        asr, _ = load_checkpoint(model or DEFAULT_CHECKPOINT)
        return TorchBackend(asr, threads)
    if backend == "tvm":
        from tvm_conformer.runtime.tvm_backend import TVMBackend, host_artifact

        if artifact:
            return TVMBackend.load(artifact, threads=threads, expect_model=model)
        return TVMBackend.load(host_artifact(model or DEFAULT_CHECKPOINT), threads=threads)
    raise UserError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")


def make_recognizer(backend: StepBackend, decoding: str = "greedy", model: str | Path | None = None):  # noqa: ANN201
    """An OnlineRecognizer; `rescore` decoding loads the checkpoint's attention decoder."""
    from tvm_conformer.runtime.recognizer import OnlineRecognizer

    rescorer = load_checkpoint(model or DEFAULT_CHECKPOINT)[0] if decoding == "rescore" else None
    return OnlineRecognizer(backend, decoding=decoding, rescorer=rescorer)

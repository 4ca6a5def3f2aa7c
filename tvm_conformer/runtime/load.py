"""Choose and build a step backend by name: the one entry point the CLI and notebooks use."""

from __future__ import annotations

from pathlib import Path

from tvm_conformer.errors import UserError
from tvm_conformer.model import load_checkpoint
from tvm_conformer.paths import DEFAULT_CHECKPOINT
from tvm_conformer.runtime.backend import StepBackend, TorchBackend

BACKENDS = ("torch", "tvm", "onnx")


def make_backend(
    backend: str = "torch",
    model: str | Path | None = None,
    artifact: str | Path | None = None,
    threads: int | None = None,
    tokens: str | Path | None = None,
) -> StepBackend:
    """`torch`: PyTorch eager on the checkpoint (default: the shipped one); `tvm`: a compiled
    artifact, built for the host on first use and cached when `artifact` is None. An artifact
    given together with a `model` must have been compiled from that checkpoint. `onnx`: ONNX
    Runtime on a model of the WeNet / sherpa-onnx contract (`model` a .onnx file, `tokens` its
    tokens.txt, default beside it), fed as sherpa-onnx feeds it."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise UserError(f"--threads takes a count >= 1, not {threads!r}; omit it for the backend's default")
    contract = model is not None and str(model).lower().endswith(".onnx")
    if backend == "onnx":
        if not contract:
            raise UserError("--backend onnx runs a model of the streaming-CTC ONNX contract: "
                            "pass --model FILE.onnx (README: Bring your own model)")
        from tvm_conformer.frontend.contract import read_contract
        from tvm_conformer.runtime.contract import OnnxContractBackend

        return OnnxContractBackend(read_contract(model, tokens), threads)
    if backend == "torch" and contract:
        raise UserError(f"{model} is an ONNX file: run it with --backend onnx (ONNX Runtime) or "
                        "--backend tvm (compiled)")
    if backend == "torch":
        asr, _ = load_checkpoint(model or DEFAULT_CHECKPOINT)
        return TorchBackend(asr, threads)
    if backend == "tvm":
        from tvm_conformer.runtime.tvm_backend import TVMBackend, host_artifact

        if artifact:
            return TVMBackend.load(artifact, threads=threads, expect_model=model)
        return TVMBackend.load(host_artifact(model or DEFAULT_CHECKPOINT, tokens), threads=threads)
    raise UserError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")


def make_recognizer(backend: StepBackend, decoding: str = "greedy", model: str | Path | None = None):  # noqa: ANN201
    """An OnlineRecognizer; `rescore` decoding loads the attention decoder of the checkpoint
    the step comes from (an artifact's: the one its manifest records). A contract model gets
    sherpa-onnx's streaming loop (greedy CTC, as sherpa-onnx decodes it)."""
    from tvm_conformer.runtime.recognizer import OnlineRecognizer

    if getattr(backend, "spec", None) is not None:
        from tvm_conformer.runtime.contract import ContractRecognizer

        if decoding != "greedy":
            raise UserError(f"--decoding {decoding} is for our checkpoints; a contract model is "
                            "decoded greedily, as sherpa-onnx decodes it")
        return ContractRecognizer(backend)

    rescorer = None
    if decoding == "rescore":
        rescorer = load_checkpoint(rescoring_checkpoint(backend, model))[0]
        if rescorer.decoder is None:
            raise UserError("--decoding rescore needs a checkpoint with an attention decoder; "
                            "use --decoding beam")
    return OnlineRecognizer(backend, decoding=decoding, rescorer=rescorer)


def rescoring_checkpoint(backend: StepBackend, model: str | Path | None = None) -> Path:
    """The checkpoint whose decoder rescores `backend`'s hypotheses: for an artifact, the one
    it was compiled from (path and sha256 in its manifest; `model` may say where it is now),
    else `model` (default: the shipped one). UserError if the artifact's is not available."""
    from tvm_conformer.compiler.artifact import sha256_file
    from tvm_conformer.paths import REPO_DIR

    manifest = getattr(backend, "manifest", None)
    if manifest is None:
        return Path(model or DEFAULT_CHECKPOINT)
    recorded, digest = manifest["model"]["checkpoint"], manifest["model"]["checkpoint_sha256"]
    candidates = [Path(model)] if model else [Path(recorded), REPO_DIR / recorded]
    for path in candidates:
        if path.is_file() and sha256_file(path) == digest:
            return path
    where = (f"{model} is not it" if model else "it is not there" if not any(
        p.is_file() for p in candidates) else "the file there has changed")
    raise UserError(f"--decoding rescore needs the decoder of the checkpoint the artifact was "
                    f"compiled from, {recorded} (sha256 {digest[:12]}...), and {where}: pass "
                    "--model PATH to that checkpoint, or use --decoding beam")

"""What a build is made from: one of our checkpoints, or an ONNX file of the WeNet / sherpa-onnx
streaming-CTC contract (frontend/contract.py). The compiler, the tuner and `estimate` see a
model only through this descriptor, so none of them assumes our ModelConfig for a foreign file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tvm_conformer.compiler.artifact import sha256_file

CHECKPOINT = "checkpoint"
CONTRACT = "onnx-contract"


@dataclass
class ModelSource:
    kind: str            # CHECKPOINT or CONTRACT
    path: Path
    config_hash: str     # what a tuning database must have been tuned for
    chunk_seconds: float  # audio one step advances
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    asr: Any = None      # ConformerASR (checkpoint)
    meta: dict | None = None
    spec: Any = None     # ContractSpec (contract)

    def import_step(self, frontend: str, bind: bool):  # noqa: ANN201 - (IRModule, weights)
        if self.kind == CONTRACT:
            from tvm_conformer.frontend.contract import import_contract

            return import_contract(self.spec, bind=bind)
        from tvm_conformer.frontend import import_step

        return import_step(self.asr, frontend, bind=bind)

    def frontend(self, asked: str) -> str:
        """The import path a manifest records: a contract file always goes through ONNX."""
        return "onnx-contract" if self.kind == CONTRACT else asked

    def manifest_entry(self) -> dict:
        """The manifest's `model` section."""
        entry = {"kind": self.kind, "config_hash": self.config_hash, "checkpoint": str(self.path),
                 "checkpoint_sha256": sha256_file(self.path)}
        if self.kind == CONTRACT:
            from tvm_conformer.frontend.contract import TAIL_PADDING_SECONDS

            s = self.spec
            return {**entry, "contract": s.contract(), "tokens": list(s.tokens),
                    "features": dict(s.features), "tail_padding_seconds": TAIL_PADDING_SECONDS}
        return {**entry, "config": self.asr.cfg.to_dict(),
                "valid_wer": (self.meta or {}).get("valid_wer")}


def is_contract_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".onnx"


def open_model(path: str | Path, tokens: str | Path | None = None, **contract_opts: Any) -> ModelSource:  # noqa: ANN401
    """A checkpoint (.pt) or a contract file (.onnx, tokens.txt beside it or `tokens`)."""
    path = Path(path)
    if is_contract_file(path):
        from tvm_conformer.frontend.contract import MAIN_INPUTS, OUTPUTS, read_contract

        spec = read_contract(path, tokens, **contract_opts)
        return ModelSource(CONTRACT, path, spec.hash(), spec.chunk_seconds, MAIN_INPUTS, OUTPUTS,
                           spec=spec)
    from tvm_conformer.compiler.roofline import chunk_seconds
    from tvm_conformer.frontend.export import INPUT_NAMES, OUTPUT_NAMES
    from tvm_conformer.model import load_checkpoint

    asr, meta = load_checkpoint(path)
    return ModelSource(CHECKPOINT, path, asr.cfg.hash(), chunk_seconds(asr.cfg), INPUT_NAMES,
                       OUTPUT_NAMES, asr=asr, meta=meta)


def manifest_chunk_seconds(manifest: dict) -> float:
    """Audio seconds per step of the model an artifact was built from (either kind)."""
    model = manifest["model"]
    if model.get("kind") == CONTRACT:
        c = model["contract"]
        return c["chunk_size"] * c["subsampling_factor"] * c["features"]["frame_shift_ms"] / 1000.0
    from tvm_conformer.compiler.roofline import chunk_seconds
    from tvm_conformer.model import ModelConfig

    return chunk_seconds(ModelConfig(**model["config"]))

"""The recognizer: Conformer encoder, CTC head, optional AED head; checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tvm_conformer.errors import UserError
from tvm_conformer.model.config import ModelConfig
from tvm_conformer.model.conformer import ConformerEncoder
from tvm_conformer.model.decoder import AttentionDecoder


class ConformerASR(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = ConformerEncoder(cfg)
        self.ctc = nn.Linear(cfg.d_model, cfg.vocab_size)
        self.decoder = (
            AttentionDecoder(
                cfg.vocab_size, cfg.d_model, cfg.n_heads, cfg.decoder_layers, cfg.ffn_ratio, cfg.dropout
            )
            if cfg.decoder_layers > 0
            else None
        )

    def forward(
        self,
        feats: torch.Tensor,
        feat_lens: torch.Tensor,
        chunk_size: int | None = None,
        num_left_chunks: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns CTC log-probs (B, T', V), their lengths, and the encoder output (B, T', d)."""
        enc, lens = self.encoder(feats, feat_lens, chunk_size, num_left_chunks)
        return F.log_softmax(self.ctc(enc), dim=-1), lens, enc

    def forward_chunk(
        self,
        feats: torch.Tensor,
        att_cache: torch.Tensor,
        cnn_cache: torch.Tensor,
        att_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Streaming step: (1, 4c+3, n_mels) fbank -> CTC log-probs (1, c, V) and new caches."""
        enc, att, cnn = self.encoder.forward_chunk(feats, att_cache, cnn_cache, att_mask)
        return F.log_softmax(self.ctc(enc), dim=-1), att, cnn


class StreamingStep(nn.Module):
    """The deployable function: `forward_chunk` alone, with the decoder left out."""

    def __init__(self, model: ConformerASR) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.ctc = model.ctc

    def forward(self, feats, att_cache, cnn_cache, att_mask):  # noqa: ANN001, ANN201
        enc, att, cnn = self.encoder.forward_chunk(feats, att_cache, cnn_cache, att_mask)
        return F.log_softmax(self.ctc(enc), dim=-1), att, cnn

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        cfg = self.encoder.cfg
        feats = torch.zeros(1, cfg.chunk_input_frames, cfg.n_mels)
        return (feats, *self.encoder.initial_state())


def save_checkpoint(model: ConformerASR, path: str | Path, meta: dict | None = None) -> None:
    """Weights stored as fp16 to keep the shipped file small; they load back as fp32. Written
    atomically: an interrupted save leaves the previous file as it was."""
    path = Path(path)
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save({"config": model.cfg.to_dict(), "state_dict": state, "meta": meta or {}}, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | Path) -> tuple[ConformerASR, dict]:
    """Loads a checkpoint in eval mode (fp32). Returns the model and its metadata."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found: pass --model PATH to an existing .pt file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        config, state = blob["config"], blob["state_dict"]
        if not isinstance(config, dict) or not isinstance(state, dict):
            raise TypeError("config and state_dict must be dicts")
    except Exception as exc:  # any unreadable or foreign file
        raise UserError(
            f"{path} is not a tvm-conformer checkpoint ({type(exc).__name__}): "
            "use one written by `tvm-conformer train`"
        ) from None
    try:
        cfg = ModelConfig(**config)
    except (TypeError, ValueError) as exc:  # an unknown field, or a value out of range
        raise UserError(f"{path}: its model config is invalid ({exc}); use a checkpoint "
                        "written by `tvm-conformer train`") from None
    model = ConformerASR(cfg)
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except (RuntimeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[-1].strip() if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: the weights do not match its config ({first[:160]}); the file is "
                        "damaged or was edited: use one written by `tvm-conformer train`") from None
    model.eval()
    return model, blob.get("meta", {})

"""Step backends: run `forward_chunk` and keep the caches where the backend computes."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from tvm_conformer.model import ConformerASR, ModelConfig


class StepBackend(Protocol):
    """One static-shape streaming step; `state` is opaque (caches live on the backend's device)."""

    name: str
    config: ModelConfig

    def initial_state(self) -> Any: ...

    def step(self, state: Any, feats: np.ndarray, att_mask: np.ndarray) -> tuple[np.ndarray, Any]:
        """feats (1, 4c+3, n_mels), att_mask (1, left + c) -> (log-probs (c, V), new state)."""
        ...


class TorchBackend:
    """PyTorch eager on the host: the reference every compiled backend is compared with."""

    name = "torch"

    def __init__(self, model: ConformerASR, threads: int | None = None) -> None:
        self.model = model.eval()
        self.config = model.cfg
        if threads:
            torch.set_num_threads(threads)

    def initial_state(self) -> tuple[torch.Tensor, torch.Tensor]:
        att, cnn, _ = self.model.encoder.initial_state()
        return att, cnn

    @torch.no_grad()
    def step(self, state, feats, att_mask):
        att, cnn = state
        lp, att, cnn = self.model.forward_chunk(
            torch.from_numpy(feats), att, cnn, torch.from_numpy(att_mask)
        )
        return lp[0].numpy(), (att, cnn)

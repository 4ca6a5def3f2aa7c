"""Attention decoder (AED) head for CTC+AED multitask training and n-best rescoring.

It is a training aid and a host-side rescorer: deployment drops it.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _sinusoids(length: int, d: int) -> torch.Tensor:
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(length, d)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe


class AttentionDecoder(nn.Module):
    """Pre-norm Transformer decoder over characters; output size vocab_size + 1 (<sos/eos>)."""

    MAX_LEN = 512

    def __init__(self, vocab_size: int, d: int, heads: int, layers: int, ffn_ratio: int, dropout: float):
        super().__init__()
        self.sos_eos = vocab_size
        self.embed = nn.Embedding(vocab_size + 1, d)
        self.register_buffer("pos", _sinusoids(self.MAX_LEN, d), persistent=False)
        layer = nn.TransformerDecoderLayer(
            d, heads, d * ffn_ratio, dropout, batch_first=True, norm_first=True
        )
        self.layers = nn.TransformerDecoder(layer, layers, norm=nn.LayerNorm(d))
        self.out = nn.Linear(d, vocab_size + 1)
        self.scale = math.sqrt(d)

    def forward(
        self, memory: torch.Tensor, memory_lens: torch.Tensor, ys_in: torch.Tensor
    ) -> torch.Tensor:
        """memory: (B, T', d); ys_in: (B, U) starting with <sos>; returns logits (B, U, V + 1)."""
        u = ys_in.shape[1]
        x = self.embed(ys_in) * self.scale + self.pos[:u]
        causal = torch.triu(torch.ones(u, u, dtype=torch.bool, device=ys_in.device), 1)
        mem_pad = torch.arange(memory.shape[1], device=memory.device)[None] >= memory_lens[:, None]
        h = self.layers(x, memory, tgt_mask=causal, memory_key_padding_mask=mem_pad)
        return self.out(h)

    @torch.no_grad()
    def score(self, memory: torch.Tensor, hyps: list[list[int]]) -> torch.Tensor:
        """Log-likelihood of each hypothesis (with <eos>) given one utterance's memory (1, T', d)."""
        if not hyps:
            return torch.zeros(0)
        n = len(hyps)
        u = max(len(h) for h in hyps) + 1
        ys_in = torch.full((n, u), self.sos_eos, dtype=torch.long)
        ys_out = torch.full((n, u), -1, dtype=torch.long)
        for i, h in enumerate(hyps):
            ys_in[i, 1 : len(h) + 1] = torch.tensor(h, dtype=torch.long)
            ys_out[i, : len(h)] = torch.tensor(h, dtype=torch.long)
            ys_out[i, len(h)] = self.sos_eos
        mem = memory.expand(n, -1, -1)
        lens = torch.full((n,), memory.shape[1], dtype=torch.long)
        logp = torch.log_softmax(self.forward(mem, lens, ys_in), dim=-1)
        gathered = logp.gather(2, ys_out.clamp(min=0)[..., None]).squeeze(-1)
        return (gathered * (ys_out >= 0)).sum(dim=1)

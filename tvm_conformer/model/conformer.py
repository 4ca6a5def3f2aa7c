"""Conformer encoder with chunk-based attention and a static-shape streaming step.

Streaming state (batch 1), WeNet-style, all plain tensors so the step exports to a fixed graph:
  att_cache: (n_layers, 2, left_frames, d_model)  keys and values of the last
             `left_frames = chunk_size * num_left_chunks` encoder frames, per layer
  cnn_cache: (n_layers, d_model, conv_kernel - 1)  the causal depthwise conv's left context
  att_mask:  (1, left_frames + chunk_size)  1.0 where a cached or current frame is real: the
             cache is empty at first, and the last chunk of an utterance is padded
Zero caches and a mask of zeros over the cache are the state before the first chunk.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tvm_conformer.model.config import ModelConfig
from tvm_conformer.model.subsampling import Subsampling, subsampled_length

NEG_INF = -1.0e4  # finite, so fp16 builds stay finite; exp() of it underflows to 0 in fp32


def chunk_attention_mask(
    num_frames: int, chunk_size: int, num_left_chunks: int, device: torch.device | None = None
) -> torch.Tensor:
    """(T, T) bool: frame i sees frame j iff j's chunk is i's or one of `num_left_chunks` before.

    `chunk_size <= 0` means full context; `num_left_chunks < 0` means all earlier chunks.
    """
    if chunk_size <= 0:
        return torch.ones(num_frames, num_frames, dtype=torch.bool, device=device)
    chunk = torch.arange(num_frames, device=device) // chunk_size
    diff = chunk[:, None] - chunk[None, :]
    visible = diff >= 0
    if num_left_chunks >= 0:
        visible &= diff <= num_left_chunks
    return visible


class FeedForward(nn.Module):
    def __init__(self, d: int, ratio: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.w1 = nn.Linear(d, d * ratio)
        self.w2 = nn.Linear(d * ratio, d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.w2(self.dropout(F.silu(self.w1(self.norm(x))))))


class MultiHeadSelfAttention(nn.Module):
    """Self-attention whose keys/values may be prefixed with cached ones.

    No positional encoding: the subsampling and the causal convolution module give the model
    its sense of order, which keeps the streaming step free of an offset input.
    """

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.d_k = d // heads
        self.norm = nn.LayerNorm(d)
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.o = nn.Linear(d, d)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, kv_cache: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, d); mask: (B or 1, T, S) bool over S = cached + T keys.

        Returns the output (B, T, d) and the keys/values (B, 2, S, d) it attended to.
        """
        b, t, d = x.shape
        h = self.norm(x)
        k, v = self.k(h), self.v(h)
        kv = torch.stack([k, v], dim=1)  # (B, 2, T, d)
        if kv_cache is not None:
            kv = torch.cat([kv_cache, kv], dim=2)  # (B, 2, S, d)
        s = kv.shape[2]
        # NOTE (B, T, d) -> (B, H, T, d_k)
        q = self.q(h).view(b, t, self.heads, self.d_k).transpose(1, 2)
        k = kv[:, 0].reshape(b, s, self.heads, self.d_k).transpose(1, 2)
        v = kv[:, 1].reshape(b, s, self.heads, self.d_k).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.d_k)  # (B, H, T, S)
        scores = scores.masked_fill(~mask.unsqueeze(1), NEG_INF)
        attn = self.dropout(torch.softmax(scores, dim=-1))
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, t, d)
        return self.dropout(self.o(out)), kv


class ConvModule(nn.Module):
    """Pointwise conv + GLU, causal depthwise conv + BatchNorm + SiLU, pointwise conv."""

    def __init__(self, d: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.kernel = kernel
        self.norm = nn.LayerNorm(d)
        self.pw1 = nn.Linear(d, 2 * d)
        self.dw = nn.Conv1d(d, d, kernel, groups=d)
        self.bn = nn.BatchNorm1d(d)
        self.pw2 = nn.Linear(d, d)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, cache: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, d); cache: (B, d, kernel - 1) or None (zeros: causal padding).

        Returns the output (B, T, d) and the new cache (B, d, kernel - 1).
        """
        y = F.glu(self.pw1(self.norm(x)), dim=-1).transpose(1, 2)  # (B, d, T)
        if cache is None:
            y = F.pad(y, (self.kernel - 1, 0))
        else:
            y = torch.cat([cache, y], dim=2)  # (B, d, kernel - 1 + T)
        new_cache = y[:, :, y.shape[2] - (self.kernel - 1) :]
        y = F.silu(self.bn(self.dw(y))).transpose(1, 2)  # (B, T, d)
        return self.dropout(self.pw2(y)), new_cache


class ConformerBlock(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.ffn1 = FeedForward(d, cfg.ffn_ratio, cfg.dropout)
        self.attn = MultiHeadSelfAttention(d, cfg.n_heads, cfg.dropout)
        self.conv = ConvModule(d, cfg.conv_kernel, cfg.dropout)
        self.ffn2 = FeedForward(d, cfg.ffn_ratio, cfg.dropout)
        self.norm = nn.LayerNorm(d)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        kv_cache: torch.Tensor | None = None,
        cnn_cache: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = x + 0.5 * self.ffn1(x)
        a, kv = self.attn(x, mask, kv_cache)
        x = x + a
        c, new_cnn = self.conv(x, cnn_cache)
        x = x + c
        x = x + 0.5 * self.ffn2(x)
        return self.norm(x), kv, new_cnn


class ConformerEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # Global CMVN of the training features, applied inside the model so every backend has it.
        self.register_buffer("feat_mean", torch.zeros(cfg.n_mels))
        self.register_buffer("feat_istd", torch.ones(cfg.n_mels))
        if cfg.feat_floor > 0:  # set by training (train.trainer.feature_floor)
            self.register_buffer("feat_floor", torch.full((cfg.n_mels,), -1e4))  # no floor until set
        self.subsampling = Subsampling(cfg.n_mels, cfg.d_model, cfg.subsampling)
        self.blocks = nn.ModuleList(ConformerBlock(cfg) for _ in range(cfg.n_layers))

    def normalize(self, feats: torch.Tensor) -> torch.Tensor:
        """The features the subsampling sees: floored (`ModelConfig.feat_floor`), then CMVN."""
        if self.cfg.feat_floor > 0:
            feats = torch.maximum(feats, self.feat_floor)
        return (feats - self.feat_mean) * self.feat_istd

    def forward(
        self,
        feats: torch.Tensor,
        feat_lens: torch.Tensor,
        chunk_size: int | None = None,
        num_left_chunks: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Full-utterance forward with the chunk mask the streaming step is equivalent to.

        feats: (B, T, n_mels); returns (B, T', d) and lengths (B,). chunk_size and
        num_left_chunks default to the config's; chunk_size <= 0 gives full context.
        """
        cs = self.cfg.chunk_size if chunk_size is None else chunk_size
        nl = self.cfg.num_left_chunks if num_left_chunks is None else num_left_chunks
        x = self.subsampling(self.normalize(feats))
        lens = subsampled_length(feat_lens)
        t = x.shape[1]
        valid = torch.arange(t, device=x.device)[None, :] < lens[:, None]  # (B, T')
        mask = chunk_attention_mask(t, cs, nl, x.device)[None] & valid[:, None, :]
        for block in self.blocks:
            x, _, _ = block(x, mask)
        return x, lens

    def forward_chunk(
        self,
        feats: torch.Tensor,
        att_cache: torch.Tensor,
        cnn_cache: torch.Tensor,
        att_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One streaming step (batch 1), shapes fixed by the config.

        feats: (1, 4 * chunk_size + 3, n_mels); att_cache, cnn_cache, att_mask: see module doc.
        Returns the chunk's encoder output (1, chunk_size, d) and the new caches.
        """
        x = self.subsampling(self.normalize(feats))  # (1, chunk, d)
        mask = (att_mask > 0.5)[:, None, :]  # (1, 1, left + chunk): same for every query
        new_att, new_cnn = [], []
        for i, block in enumerate(self.blocks):
            x, kv, cnn = block(x, mask, att_cache[i : i + 1], cnn_cache[i : i + 1])
            left = att_cache.shape[2]
            new_att.append(kv[:, :, kv.shape[2] - left :])  # keep the last `left` frames
            new_cnn.append(cnn)
        return x, torch.cat(new_att, dim=0), torch.cat(new_cnn, dim=0)

    def initial_state(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Zero caches and an all-zero cache mask: the state before the first chunk."""
        cfg = self.cfg
        att = torch.zeros(cfg.n_layers, 2, cfg.left_frames, cfg.d_model)
        cnn = torch.zeros(cfg.n_layers, cfg.d_model, cfg.conv_kernel - 1)
        mask = torch.zeros(1, cfg.left_frames + cfg.chunk_size)
        return att, cnn, mask

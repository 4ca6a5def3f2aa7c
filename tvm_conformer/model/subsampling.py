"""4x time subsampling of log-mel frames: vanilla Conv2d or depthwise separable.

Both have rate 4 and right context 6: output frame i sees input frames [4i, 4i + 7).
With two 3x3 stride-2 convolutions and no time padding, T input frames give
T1 = (T - 1) // 2 and T' = (T1 - 1) // 2 output frames.
"""

from __future__ import annotations

import torch
from torch import nn

RATE = 4
RIGHT_CONTEXT = 6


def subsampled_length(num_frames: int | torch.Tensor) -> int | torch.Tensor:
    """Output frames of the subsampling for `num_frames` input frames (0 if too short)."""
    if isinstance(num_frames, torch.Tensor):
        return torch.clamp(((num_frames - 1) // 2 - 1) // 2, min=0)
    return max(((num_frames - 1) // 2 - 1) // 2, 0)


class Subsampling(nn.Module):
    """(B, T, n_mels) -> (B, T', d_model).

    vanilla: Conv2d(1, C, 3, s2) ReLU Conv2d(C, C, 3, s2) ReLU (the second conv dominates: C*C*9
    MACs per output position); dws: the second conv becomes a depthwise 3x3 stride-2 conv followed
    by a pointwise 1x1 conv (C*9 + C*C MACs), as in the paper, Squeezeformer and FastConformer.
    """

    def __init__(self, n_mels: int, d_model: int, kind: str) -> None:
        super().__init__()
        channels = d_model
        self.kind = kind
        self.conv1 = nn.Conv2d(1, channels, 3, stride=2)
        if kind == "vanilla":
            self.conv2 = nn.Conv2d(channels, channels, 3, stride=2)
        else:
            self.depthwise = nn.Conv2d(channels, channels, 3, stride=2, groups=channels)
            self.pointwise = nn.Conv2d(channels, channels, 1)
        freq = ((n_mels - 1) // 2 - 1) // 2
        self.out = nn.Linear(channels * freq, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x.unsqueeze(1)))  # (B, C, T1, F1)
        if self.kind == "vanilla":
            x = torch.relu(self.conv2(x))
        else:
            x = torch.relu(self.pointwise(self.depthwise(x)))  # (B, C, T', F')
        b, c, t, f = x.shape
        # NOTE (B, C, T', F') -> (B, T', C * F'): channels and frequency flattened per frame
        return self.out(x.transpose(1, 2).reshape(b, t, c * f))

"""Model hyper-parameters, saved in every checkpoint and artifact manifest."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields

from tvm_conformer.audio.features import check_fbank

SUBSAMPLING_KINDS = ("dws", "vanilla")
# the smallest value that builds a model and streams (num_left_chunks 0: the chunk alone)
_AT_LEAST = {"n_mels": 1, "d_model": 1, "n_heads": 1, "n_layers": 1, "ffn_ratio": 1,
             "vocab_size": 2, "decoder_layers": 0, "chunk_size": 1, "num_left_chunks": 0}


@dataclass(frozen=True)
class ModelConfig:
    """A Conformer-CTC encoder with chunk-based streaming attention.

    Time runs at 100 fbank frames/s in and 25 encoder frames/s out (4x subsampling).
    A streaming chunk is `chunk_size` encoder frames (= 4 * chunk_size fbank frames of hop, plus 3
    frames of right context for the subsampling); attention sees `num_left_chunks` earlier chunks.
    """

    n_mels: int = 80
    d_model: int = 144
    n_heads: int = 4
    n_layers: int = 6
    ffn_ratio: int = 4
    conv_kernel: int = 15
    dropout: float = 0.1
    subsampling: str = "dws"  # "dws" (depthwise separable) or "vanilla" (two 3x3 Conv2d)
    vocab_size: int = 29
    decoder_layers: int = 1  # attention-decoder (AED) head; 0 = CTC only
    chunk_size: int = 16
    num_left_chunks: int = 4
    # fbank options the model was trained on (audio.features.check_fbank); None = the legacy
    # options of checkpoints saved before this field existed (snip_edges true, high_freq 0)
    fbank: dict | None = None
    # floor of the log-mel features, in LSB of int16 noise: each bin is raised to at least the
    # level white noise of this many LSB gives it (the encoder's `feat_floor`), so that digital
    # silence (log of the fbank's epsilon, -15.9) is what dither would make of it; 0 = none
    feat_floor: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name == "fbank":
                continue  # checked by check_fbank below
            value = getattr(self, f.name)
            kind = type(f.default)  # every field has a default of its type
            ok = isinstance(value, str) if kind is str else (
                not isinstance(value, bool) and isinstance(value, (int, float) if kind is float else int)
                and math.isfinite(value))
            if not ok:
                raise ValueError(f"{f.name} must be a finite {kind.__name__}, not {value!r}")
        for name, low in _AT_LEAST.items():
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, not {getattr(self, name)!r}")
        if self.feat_floor < 0:
            raise ValueError(f"feat_floor must be >= 0, not {self.feat_floor!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout!r}")
        if self.subsampling not in SUBSAMPLING_KINDS:
            raise ValueError(f"subsampling must be one of {SUBSAMPLING_KINDS}, not {self.subsampling!r}")
        if self.d_model % self.n_heads:
            raise ValueError("d_model must be divisible by n_heads")
        if self.conv_kernel < 2:
            raise ValueError("conv_kernel must be at least 2")
        if self.fbank is not None:
            object.__setattr__(self, "fbank", check_fbank(self.fbank))

    @property
    def fbank_options(self) -> dict:
        """The full fbank option dict (LEGACY_FBANK for checkpoints without the field)."""
        return check_fbank(self.fbank)

    @property
    def left_frames(self) -> int:
        """Encoder frames of attention cache: `chunk_size * num_left_chunks`."""
        return self.chunk_size * self.num_left_chunks

    @property
    def chunk_input_frames(self) -> int:
        """Fbank frames one streaming chunk consumes: 4 * (chunk_size - 1) + 7."""
        return 4 * self.chunk_size + 3

    @property
    def chunk_stride_frames(self) -> int:
        """Fbank frames between the starts of consecutive chunks."""
        return 4 * self.chunk_size

    def to_dict(self) -> dict:
        return asdict(self)

    def hash(self) -> str:
        """Key of what is compiled and tuned: the network's shapes and weights layout. The fbank
        options run on the host before the network and change no compiled shape, so they are
        left out (a model re-trained on other features keeps its tuning database); so is a
        feat_floor of 0 (configs from before the field keep their hash)."""
        cfg = {k: v for k, v in self.to_dict().items()
               if k != "fbank" and not (k == "feat_floor" and not v)}
        return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]

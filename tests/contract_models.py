"""Test-only: write ONNX files of the WeNet / sherpa-onnx streaming-CTC contract with random
weights, from a small Conformer written here to WeNet's export signature. Nothing of
tvm_conformer's model code is used: these stand for the models users bring.

    forward(x (1, T, 80), offset i64 [1], required_cache_size i64 [1],
            attn_cache (blocks, heads, cache, 2 * d / heads), conv_cache (blocks, 1, d, kernel - 1),
            attn_mask bool (1, 1, cache + chunk)) -> (log_probs (1, chunk, vocab), attn_cache, conv_cache)

with T = (chunk - 1) * 4 + 6 + 1 (Conv2d 4x subsampling: right context 6), metadata as
sherpa-onnx's `scripts/wenet/export-onnx-streaming.py` writes it, and a tokens.txt.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass(frozen=True)
class Spec:
    name: str
    d: int = 64
    heads: int = 4
    blocks: int = 2
    kernel: int = 15
    vocab: int = 29
    chunk: int = 16
    left_chunks: int = 4
    use_offset: bool = False  # absolute sinusoidal positions at `offset - required_cache_size`
    cmvn: bool = True         # global CMVN inside the graph, as WeNet exports it
    seed: int = 0
    dynamic_axes: bool = False  # as sherpa-onnx's script exports: N and T dynamic

    @property
    def cache(self) -> int:
        return self.chunk * self.left_chunks

    @property
    def frames(self) -> int:
        return (self.chunk - 1) * 4 + 6 + 1


# the shapes the tests cover (each compiles in well under a minute)
SPECS = (
    Spec("small"),                                                        # d 64, 4 heads, 2 blocks, k 15
    Spec("even-kernel-bpe", d=96, heads=2, blocks=3, kernel=8, vocab=5000,  # WeNet's kernel 8
         use_offset=True, seed=1, dynamic_axes=True),
    Spec("short-chunk", d=80, heads=8, blocks=1, kernel=4, chunk=8, left_chunks=2,
         cmvn=False, use_offset=True, seed=2),
)
SMALL = SPECS[0]


class _Subsampling(nn.Module):
    """Two 3x3 stride-2 Conv2d with ReLU (WeNet's Conv2dSubsampling4): 4x, right context 6."""

    def __init__(self, d: int, n_mels: int = 80) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, d, 3, 2), nn.ReLU(), nn.Conv2d(d, d, 3, 2), nn.ReLU())
        self.out = nn.Linear(d * (((n_mels - 1) // 2 - 1) // 2), d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x.unsqueeze(1))  # (1, d, t, f)
        b, c, t, f = y.shape
        return self.out(y.transpose(1, 2).reshape(b, t, c * f))


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, kernel: int) -> None:
        super().__init__()
        self.h, self.dk = heads, d // heads
        self.ff1 = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.SiLU(), nn.Linear(2 * d, d))
        self.ln_att = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln_conv = nn.LayerNorm(d)
        self.pw1 = nn.Conv1d(d, 2 * d, 1)
        self.dw = nn.Conv1d(d, d, kernel, groups=d)  # causal: the left context is the cache
        self.bn = nn.BatchNorm1d(d)
        self.pw2 = nn.Conv1d(d, d, 1)
        self.ff2 = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.SiLU(), nn.Linear(2 * d, d))
        self.ln_out = nn.LayerNorm(d)

    def forward(self, x, att_cache, conv_cache, mask, keep):  # noqa: ANN001, ANN201
        x = x + 0.5 * self.ff1(x)
        t = x.shape[1]
        q, k, v = self.qkv(self.ln_att(x)).view(1, t, 3, self.h, self.dk).permute(2, 0, 3, 1, 4)
        k = torch.cat([att_cache[None, :, :, : self.dk], k], dim=2)  # (1, h, cache + t, dk)
        v = torch.cat([att_cache[None, :, :, self.dk :], v], dim=2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.dk)
        masked = ~mask.unsqueeze(1)  # (1, 1, 1, cache + t)
        att = torch.softmax(scores.masked_fill(masked, float("-inf")), dim=-1).masked_fill(masked, 0.0)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(1, t, -1))
        new_att = torch.cat([k, v], dim=-1)[0]
        new_att = new_att[:, new_att.shape[1] - keep :]  # the last required_cache_size frames
        y = self.ln_conv(x).transpose(1, 2)  # (1, d, t)
        y = nn.functional.glu(self.pw1(y), dim=1)
        y = torch.cat([conv_cache, y], dim=2)
        new_conv = y[:, :, y.shape[2] - conv_cache.shape[2] :]
        y = self.pw2(nn.functional.silu(self.bn(self.dw(y))))
        x = x + y.transpose(1, 2)
        x = x + 0.5 * self.ff2(x)
        return self.ln_out(x), new_att, new_conv


class ContractModel(nn.Module):
    """A small streaming Conformer-CTC with WeNet's ONNX signature (random weights)."""

    def __init__(self, spec: Spec) -> None:
        super().__init__()
        self.spec = spec
        torch.manual_seed(spec.seed)  # the same weights every time (the tests rebuild it)
        g = torch.Generator().manual_seed(spec.seed)
        self.register_buffer("mean", torch.randn(80, generator=g) * 2 + 8)
        self.register_buffer("istd", torch.rand(80, generator=g) * 0.5 + 0.25)
        self.embed = _Subsampling(spec.d)
        self.blocks = nn.ModuleList(_Block(spec.d, spec.heads, spec.kernel) for _ in range(spec.blocks))
        self.ctc = nn.Linear(spec.d, spec.vocab)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        with torch.no_grad():  # a wide spread of logits: greedy picks with clear margins
            self.ctc.weight.mul_(8.0)
        self.eval()

    def forward(self, x, offset, required_cache_size, attn_cache, conv_cache, attn_mask):  # noqa: ANN001, ANN201
        s = self.spec
        if s.cmvn:
            x = (x - self.mean) * self.istd
        x = self.embed(x)
        t = x.shape[1]
        # positions: sherpa-onnx starts offset at required_cache_size, so the first chunk is at 0
        start = (offset - required_cache_size).to(torch.float32)
        if s.use_offset:
            pos = start + torch.arange(t, dtype=torch.float32)  # (t,)
            freq = torch.exp(torch.arange(0, s.d, 2, dtype=torch.float32) * (-math.log(1e4) / s.d))
            ang = pos[:, None] * freq[None]
            pe = torch.stack([torch.sin(ang), torch.cos(ang)], dim=-1).reshape(t, s.d)
            x = x * math.sqrt(s.d) * 0.1 + pe
        else:  # consumed without effect, so the exporter keeps the input
            x = x + 0.0 * start
        atts, convs = [], []
        for i, blk in enumerate(self.blocks):
            x, a, c = blk(x, attn_cache[i], conv_cache[i], attn_mask, s.cache)
            atts.append(a)
            convs.append(c)
        lp = torch.log_softmax(self.ctc(x), dim=-1)
        return lp, torch.stack(atts), torch.stack(convs)

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        s = self.spec
        mask = torch.ones(1, 1, s.cache + s.chunk, dtype=torch.bool)
        mask[:, :, : s.cache] = False
        return (torch.randn(1, s.frames, 80), torch.tensor([s.cache]), torch.tensor([s.cache]),
                torch.zeros(s.blocks, s.heads, s.cache, 2 * s.d // s.heads),
                torch.zeros(s.blocks, 1, s.d, s.kernel - 1), mask)


INPUTS = ["x", "offset", "required_cache_size", "attn_cache", "conv_cache", "attn_mask"]
OUTPUTS = ["log_probs", "next_att_cache", "next_conv_cache"]


def metadata(spec: Spec) -> dict[str, str]:
    return {"model_type": "wenet_ctc", "version": "1", "model_author": "tvm-conformer tests",
            "comment": f"random weights, {spec.name}", "chunk_size": str(spec.chunk),
            "left_chunks": str(spec.left_chunks), "head": str(spec.heads),
            "num_blocks": str(spec.blocks), "output_size": str(spec.d),
            "cnn_module_kernel": str(spec.kernel), "right_context": "6",
            "subsampling_factor": "4", "vocab_size": str(spec.vocab)}


def tokens(vocab: int) -> list[str]:
    """`<blank>` 0, `<unk>` 1, then letters (vocab 29) or word pieces with `▁` (vocab 5000)."""
    if vocab == 29:
        return ["<blank>", "<unk>", "'", *"abcdefghijklmnopqrstuvwxyz"][:vocab]
    letters = "abcdefghijklmnopqrstuvwxyz"
    out = ["<blank>", "<unk>"]
    i = 0
    while len(out) < vocab - 1:
        a, b, c = letters[i % 26], letters[(i // 26) % 26], letters[(i // 676) % 26]
        out.append(("▁" if i % 3 == 0 else "") + a + b + (c if i >= 676 else ""))
        i += 1
    return [*out, "<sos/eos>"]


def write(spec: Spec, out_dir: str | Path) -> tuple[Path, Path]:
    """Writes OUT/model.onnx and OUT/tokens.txt; returns their paths."""
    import onnx

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = ContractModel(spec)
    path = out / "model.onnx"
    dyn = None
    if spec.dynamic_axes:  # what sherpa-onnx's script declares
        dyn = {"x": {0: "N", 1: "T"}, "attn_cache": {2: "T"}, "attn_mask": {2: "T"},
               "log_probs": {0: "N"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, model.example_inputs(), str(path), input_names=INPUTS,
                          output_names=OUTPUTS, opset_version=13, dynamo=False, dynamic_axes=dyn)
    m = onnx.load(str(path))
    del m.metadata_props[:]
    for k, v in metadata(spec).items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(path))
    tok = out / "tokens.txt"
    tok.write_text("".join(f"{s} {i}\n" for i, s in enumerate(tokens(spec.vocab))))
    return path, tok


if __name__ == "__main__":  # scripts/ci_cross_compile.sh: python tests/contract_models.py NAME DIR
    import sys

    by_name = {s.name: s for s in SPECS}
    if len(sys.argv) != 3 or sys.argv[1] not in by_name:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(by_name)}}} OUT_DIR")
    model_path, tokens_path = write(by_name[sys.argv[1]], sys.argv[2])
    print(f"wrote {model_path} and {tokens_path}")

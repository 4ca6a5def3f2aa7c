"""Multiply-accumulates of the Conformer by component, counted from the imported Relax graph.

Every `matmul`, `conv1d` and `conv2d` of `main` counts `prod(output shape) * reduction size`
(matmul: the last dimension of its first operand; convolution: `prod(weight.shape[1:])`, which
is `C_in / groups * kernel`, so depthwise convolutions count right). An operation belongs to the
component of the nearest PyTorch parameter upstream of it in the dataflow (the torch frontend
names them `p_encoder_blocks_0_ffn1_w1_weight`, ...): a projection finds its own weight, the
attention products find the q/k/v projections they consume. Elementwise work is not counted.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import replace

from tvm_conformer.model import ConformerASR, ModelConfig

COMPONENTS = ("subsampling", "attention", "feed_forward", "convolution", "output")
_BLOCK_PART = {"ffn1": "feed_forward", "ffn2": "feed_forward", "attn": "attention", "conv": "convolution"}
MAC_OPS = ("relax.matmul", "relax.nn.conv1d", "relax.nn.conv2d")
FRAMES_PER_SECOND = 100  # fbank frames

# Conformer-S/M of Gulati et al. 2020 (80 mel bins in, 4x subsampling), with our streaming setup.
CONFIGS = {
    "conformer-s": ModelConfig(d_model=144, n_layers=16, n_heads=4, conv_kernel=32),
    "conformer-m": ModelConfig(d_model=256, n_layers=16, n_heads=4, conv_kernel=32),
}
CONFIG_NAMES = ("shipped", *CONFIGS)
# The paper's subsampling share of the encoder's MACs, vanilla and depthwise separable.
PAPER_SUBSAMPLING_SHARE = {"vanilla": 0.328, "dws": 0.040}


def named_config(name: str) -> ModelConfig:
    """`shipped` (the shipped checkpoint's config, the default config when it is absent),
    `conformer-s` or `conformer-m`."""
    from tvm_conformer.errors import UserError

    if name == "shipped":
        from tvm_conformer.paths import DEFAULT_CHECKPOINT

        if DEFAULT_CHECKPOINT.is_file():
            import torch

            return ModelConfig(**torch.load(DEFAULT_CHECKPOINT, weights_only=True)["config"])
        return ModelConfig()
    if name not in CONFIGS:
        raise UserError(f"unknown config {name!r}: choose one of {', '.join(CONFIG_NAMES)}")
    return CONFIGS[name]


def component(param: str) -> str | None:
    """The component a PyTorch parameter (as the torch frontend names it) belongs to."""
    name = param.removeprefix("p_")
    if name.startswith("encoder_subsampling_"):
        return "subsampling"
    if name.startswith("ctc_"):
        return "output"
    m = re.match(r"encoder_blocks_\d+_(ffn1|ffn2|attn|conv)_", name)
    return _BLOCK_PART[m.group(1)] if m else None


def _shape(expr) -> list[int]:  # noqa: ANN001 - relax.Expr
    return [int(x) for x in expr.ty.shape.values]


def op_macs(call, out_shape: list[int]) -> int:  # noqa: ANN001 - relax.Call
    """MACs of one matmul or convolution call with output shape `out_shape`."""
    if call.op.name == "relax.matmul":
        return math.prod(out_shape) * _shape(call.args[0])[-1]
    return math.prod(out_shape) * math.prod(_shape(call.args[1])[1:])


def count_macs(func) -> dict[str, int]:  # noqa: ANN001 - relax.Function
    """MACs per component of `func` (static shapes), plus "total" (and "other" if unattributed)."""
    import tvm
    from tvm import relax

    params = {p: component(p.name) for p in func.params}
    producers: dict = {}  # var -> the vars its value reads
    found: list = []  # (var, macs) of every MAC op
    for block in func.body.blocks:
        for b in block.bindings:
            reads: list = []
            relax.analysis.post_order_visit(
                b.value, lambda e, reads=reads: reads.append(e) if isinstance(e, relax.Var) else None)
            producers[b.var] = reads
            v = b.value
            if isinstance(v, relax.Call) and isinstance(v.op, tvm.ir.Op) and v.op.name in MAC_OPS:
                found.append((b.var, op_macs(v, _shape(b.var))))
    totals = dict.fromkeys(COMPONENTS, 0)
    for var, macs in found:
        comp = _nearest_component(var, producers, params) or "other"
        totals[comp] = totals.get(comp, 0) + macs
    totals["total"] = sum(totals[c] for c in totals)
    return totals


def _nearest_component(var, producers: dict, params: dict) -> str | None:  # noqa: ANN001
    """Breadth-first up the dataflow from `var` to the first parameter with a component."""
    seen, queue = {var}, deque(producers.get(var, []))
    while queue:
        v = queue.popleft()
        if v in seen:
            continue
        seen.add(v)
        if params.get(v):
            return params[v]
        queue.extend(producers.get(v, []))
    return None


def step_macs(cfg: ModelConfig) -> dict[str, int]:
    """MACs of one streaming step (one chunk) of a model with config `cfg`."""
    from tvm_conformer.frontend import import_step

    mod, _ = import_step(ConformerASR(cfg).eval())
    return count_macs(mod["main"])


def utterance_macs(cfg: ModelConfig, frames: int) -> dict[str, int]:
    """MACs of the full-utterance forward over `frames` fbank frames."""
    from tvm_conformer.bench.utterance import import_utterance

    mod, _ = import_utterance(ConformerASR(cfg).eval(), frames)
    return count_macs(mod["main"])


def macs_per_second(cfg: ModelConfig, mode: str = "utterance", seconds: float = 10.0) -> dict[str, float]:
    """MACs per second of audio by component: over a `seconds`-long utterance (full forward,
    every frame attending to the whole utterance's keys), or streaming (one step per chunk)."""
    if mode == "step":
        per = step_macs(cfg)
        audio = cfg.chunk_size * 4 / FRAMES_PER_SECOND  # 4 fbank frames per encoder frame
    else:
        per = utterance_macs(cfg, int(seconds * FRAMES_PER_SECOND))
        audio = seconds
    return {k: v / audio for k, v in per.items()}


def compute_table(names: tuple[str, ...] = CONFIG_NAMES, mode: str = "utterance",
                  seconds: float = 10.0) -> list[dict]:
    """One row per config and subsampling kind: MACs/s by component, shares, the paper's share."""
    rows = []
    for name in names:
        for kind in ("vanilla", "dws"):
            cfg = replace(named_config(name), subsampling=kind)
            per_s = macs_per_second(cfg, mode, seconds)
            rows.append({
                "config": name, "subsampling": kind, "mode": mode, "seconds": seconds,
                "d_model": cfg.d_model, "n_layers": cfg.n_layers, "conv_kernel": cfg.conv_kernel,
                "macs_per_second": per_s,
                "share": {c: per_s[c] / per_s["total"] for c in per_s if c != "total"},
                "paper_subsampling_share": PAPER_SUBSAMPLING_SHARE[kind] if name == "conformer-m" else None,
            })
    return rows


def format_table(rows: list[dict]) -> str:
    """A Markdown table of `compute_table` rows (MMAC per second of audio, and shares)."""
    head = ("| config | subsampling kind | " + " | ".join(COMPONENTS)
            + " | total MMAC/s | subsampling share | paper |")
    lines = [head, "|" + " --- |" * (len(COMPONENTS) + 5)]
    for r in rows:
        m = r["macs_per_second"]
        cells = [f"{m[c] / 1e6:.1f} ({100 * r['share'][c]:.1f}%)" for c in COMPONENTS]
        paper = r["paper_subsampling_share"]
        lines.append(f"| {r['config']} (d={r['d_model']}, {r['n_layers']} blocks) | {r['subsampling']} | "
                     + " | ".join(cells) + f" | {m['total'] / 1e6:.1f} | "
                     f"{100 * r['share']['subsampling']:.1f}% | "
                     + (f"{100 * paper:.1f}%" if paper is not None else "") + " |")
    return "\n".join(lines)

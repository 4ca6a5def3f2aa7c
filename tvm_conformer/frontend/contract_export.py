"""Our checkpoints in the WeNet / sherpa-onnx streaming-CTC contract (frontend/contract.py):
model.onnx + tokens.txt + metadata, runnable by sherpa-onnx's `OnlineRecognizer.from_wenet_ctc`.

The contract's tensors are ours rearranged: attn_cache (blocks, heads, cache, 2 * d_k) holds
each head's keys then values, ours (blocks, 2, cache, d) keys and values with the heads side by
side; conv_cache (blocks, 1, d, k - 1) is ours with a batch axis; the bool attn_mask is ours as
0/1. Our step needs no positions, so offset and required_cache_size are consumed without
effect (an unused input would be dropped by the exporter).

Features: the metadata records the fbank options the checkpoint was trained on (`fbank_*`
keys, which `read_contract` reads back). sherpa-onnx ignores them: when they differ from its
defaults (snip_edges false, high_freq -400), its recognizer must be configured with them
(`feature_options_note` says how); a model trained on sherpa-onnx's options needs nothing.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from tvm_conformer.frontend.contract import INPUTS, OUTPUTS, SHERPA_FEATURES
from tvm_conformer.model.asr import ConformerASR

# the options of checkpoints saved before ModelConfig recorded them (audio/features.py)
_LEGACY_FBANK = {"snip_edges": True, "low_freq": 20.0, "high_freq": 0.0, "dither": 0.0}
FBANK_KEYS = ("snip_edges", "low_freq", "high_freq", "dither")


def model_fbank(model: ConformerASR) -> dict:
    """The fbank options `model` was trained on (the legacy ones if its config has none)."""
    opts = getattr(model.cfg, "fbank_options", None)
    return dict(opts) if isinstance(opts, dict) else dict(_LEGACY_FBANK)


def differs_from_sherpa(fbank: dict) -> dict:
    """{option: (ours, sherpa-onnx's default)} for each option that differs."""
    return {k: (fbank[k], SHERPA_FEATURES[k]) for k in FBANK_KEYS if fbank[k] != SHERPA_FEATURES[k]}


class ContractStep(nn.Module):
    def __init__(self, model: ConformerASR) -> None:
        super().__init__()
        self.encoder, self.ctc, self.cfg = model.encoder, model.ctc, model.cfg

    def forward(self, x, offset, required_cache_size, attn_cache, conv_cache, attn_mask):  # noqa: ANN001, ANN201
        cfg = self.cfg
        h, dk, n, left = cfg.n_heads, cfg.d_model // cfg.n_heads, cfg.n_layers, cfg.left_frames
        k = attn_cache[..., :dk].transpose(1, 2).reshape(n, left, cfg.d_model)
        v = attn_cache[..., dk:].transpose(1, 2).reshape(n, left, cfg.d_model)
        att = torch.stack([k, v], dim=1)  # (n, 2, left, d)
        unused = (offset - required_cache_size).to(x.dtype) * 0.0  # keeps both inputs
        mask = attn_mask[:, 0].to(x.dtype)  # (1, left + chunk)
        enc, att, cnn = self.encoder.forward_chunk(x + unused, att, conv_cache[:, 0], mask)
        lp = torch.log_softmax(self.ctc(enc), dim=-1)
        kv = att.reshape(n, 2, left, h, dk).permute(0, 3, 2, 1, 4).reshape(n, h, left, 2 * dk)
        return lp, kv, cnn[:, None]

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        cfg = self.cfg
        h, dk, left = cfg.n_heads, cfg.d_model // cfg.n_heads, cfg.left_frames
        mask = torch.zeros(1, 1, left + cfg.chunk_size, dtype=torch.bool)
        mask[..., left:] = True
        return (torch.zeros(1, cfg.chunk_input_frames, cfg.n_mels), torch.tensor([left]),
                torch.tensor([left]), torch.zeros(cfg.n_layers, h, left, 2 * dk),
                torch.zeros(cfg.n_layers, 1, cfg.d_model, cfg.conv_kernel - 1), mask)


def contract_tokens() -> list[str]:
    """Our CTC symbols for tokens.txt: `<blank>`, the apostrophe, `▁` for the space, a-z."""
    from tvm_conformer.model.tokenizer import CharTokenizer

    tok = CharTokenizer()
    syms = ["<blank>"] + [tok.decode([i]) for i in range(1, tok.vocab_size)]
    return ["▁" if s == " " else s for s in syms]


def export_contract(model: ConformerASR, out_dir: str | Path, source: str = "") -> dict:
    """Writes OUT/model.onnx and OUT/tokens.txt; returns the metadata written."""
    import onnx

    cfg = model.cfg
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    step = ContractStep(model.eval()).eval()
    path = out / "model.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(step, step.example_inputs(), str(path), input_names=list(INPUTS),
                          output_names=list(OUTPUTS), opset_version=13, dynamo=False)
    fbank = model_fbank(model)
    diff = differs_from_sherpa(fbank)
    meta = {"model_type": "wenet_ctc", "version": "1", "model_author": "tvm-conformer",
            "comment": f"streaming Conformer-CTC exported by tvm-conformer from {source}",
            "chunk_size": cfg.chunk_size, "left_chunks": cfg.num_left_chunks,
            "head": cfg.n_heads, "num_blocks": cfg.n_layers, "output_size": cfg.d_model,
            "cnn_module_kernel": cfg.conv_kernel, "right_context": 6,
            "subsampling_factor": 4, "vocab_size": cfg.vocab_size,
            **{f"fbank_{k}": fbank[k] for k in FBANK_KEYS},
            "fbank_note": feature_options_note(fbank) if diff else "sherpa-onnx's default features"}
    m = onnx.load(str(path))
    del m.metadata_props[:]
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=str(v))
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    toks = contract_tokens()
    assert len(toks) == cfg.vocab_size
    (out / "tokens.txt").write_text("".join(f"{s} {i}\n" for i, s in enumerate(toks)), encoding="utf-8")
    return meta


def feature_options_note(fbank: dict) -> str:
    """How to configure sherpa-onnx for these features (one line)."""
    diff = differs_from_sherpa(fbank)
    if not diff:
        return "sherpa-onnx's default features: nothing to configure"
    sets = ", ".join(f"{k}={fbank[k]!r}" for k in diff)
    return ("trained on features that differ from sherpa-onnx's defaults "
            f"({', '.join(f'{k} {a} vs {b}' for k, (a, b) in diff.items())}): set "
            f"recognizer.config.feat_config {sets} (tvm_conformer.bench.sherpa.recognizer_for)")

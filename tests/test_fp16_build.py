"""fp16 host builds of the streaming step (with and without the numerics passes) against PyTorch
fp32, and the premises of `tvm-conformer study-fp16`."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tvm_conformer.audio.features import compute_fbank
from tvm_conformer.cli.study_fp16 import parse_gains
from tvm_conformer.compiler.compile import compile_artifact
from tvm_conformer.compiler.pipeline import PipelineOptions
from tvm_conformer.errors import UserError
from tvm_conformer.model import ConformerASR, load_checkpoint
from tvm_conformer.runtime.backend import StepBackend, TorchBackend
from tvm_conformer.runtime.tvm_backend import TVMBackend
from tvm_conformer.study_fp16 import feature_shift

# fp16 (unit roundoff 2^-11) with fp16 accumulators through 2 blocks and 3 chained chunks:
# the measured worst error is ~0.01 on outputs of magnitude up to ~5
ATOL, RTOL = 0.03, 0.01
# A log-mel shift at which the first block's LayerNorm rows (d = 32) of the tiny model have squared
# deviations summing far beyond fp16's max 65504 (from a shift of ~1300 on), while every input
# and activation still fits in fp16. An audio gain gives such a shift only at ~+13000 dB: the
# shipped model overflows from ~+60 dB (`tvm-conformer study-fp16`), this random one much later.
SHIFT = 3000.0
FP16_MAX = 65504.0
CHUNKS = 3


@pytest.fixture(scope="module")
def builds(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    """numerics -> the fp16 host artifact (its IR dumped in ARTIFACT/ir)."""
    out = tmp_path_factory.mktemp("fp16")
    arts = {}
    for numerics in (True, False):
        art = out / f"numerics-{numerics}"
        compile_artifact(art, "host", tiny_checkpoint, opts=PipelineOptions(precision="fp16", numerics=numerics),
                         dump_ir=art / "ir", quiet=True, use_default_database=False)
        arts[numerics] = art
    return arts


@pytest.fixture(scope="module")
def model(tiny_checkpoint: Path) -> ConformerASR:
    return load_checkpoint(tiny_checkpoint)[0]


def _chunks(model: ConformerASR, shift: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """(feats, att_mask) of CHUNKS consecutive chunks of log-mel-like features plus `shift`."""
    cfg, enc = model.cfg, model.encoder
    rng = np.random.default_rng(0)
    out = []
    for i in range(CHUNKS):
        z = rng.standard_normal((1, cfg.chunk_input_frames, cfg.n_mels))
        feats = (enc.feat_mean.numpy() + z / enc.feat_istd.numpy() + shift).astype(np.float32)
        cached = min(i * cfg.chunk_size, cfg.left_frames)  # as the recognizer masks its cache
        mask = np.zeros((1, cfg.left_frames + cfg.chunk_size), np.float32)
        mask[0, cfg.left_frames - cached :] = 1.0
        out.append((feats, mask))
    return out


def _stream(backend: StepBackend, chunks: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """Every output (log-probs, att_cache, cnn_cache) of every chunk, the caches carried along."""
    state = backend.initial_state()
    outs = []
    for feats, mask in chunks:
        log_probs, state = backend.step(state, feats, mask)
        outs += [np.asarray(log_probs), *(t.numpy() for t in state)]
    return outs


def _layer_norm_sq_dev_sum(model: ConformerASR, chunks: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """The largest sum of squared deviations of a row entering the first block's first LayerNorm."""
    seen = []
    hook = model.encoder.blocks[0].ffn1.norm.register_forward_hook(
        lambda _m, inp, _o: seen.append(float(((inp[0] - inp[0].mean(-1, keepdim=True)) ** 2).sum(-1).max()))
    )
    try:
        _stream(TorchBackend(model), chunks)
    finally:
        hook.remove()
    return max(seen)


@pytest.mark.slow  # compiles artifacts
@pytest.mark.parametrize("numerics", [True, False])
def test_fp16_build_matches_pytorch_fp32_on_normal_inputs(builds, model, numerics: bool) -> None:
    chunks = _chunks(model, shift=0.0)
    assert _layer_norm_sq_dev_sum(model, chunks) < FP16_MAX  # nothing overflows: both builds agree
    got = _stream(TVMBackend.load(builds[numerics]), chunks)
    for out, ref in zip(got, _stream(TorchBackend(model), chunks), strict=True):
        np.testing.assert_allclose(out, ref, atol=ATOL, rtol=RTOL)


@pytest.mark.slow  # compiles artifacts
def test_large_input_breaks_plain_fp16_layer_norm_and_not_the_numerics_build(builds, model) -> None:
    chunks = _chunks(model, shift=SHIFT)
    assert _layer_norm_sq_dev_sum(model, chunks) > FP16_MAX  # the plain variance sum overflows
    ref = _stream(TorchBackend(model), chunks)
    for out, r in zip(_stream(TVMBackend.load(builds[True]), chunks), ref, strict=True):
        np.testing.assert_allclose(out, r, atol=ATOL, rtol=RTOL)
    plain = _stream(TVMBackend.load(builds[False]), chunks)
    # TVM's plain LayerNorm turns the overflowed (inf) variance into a zero row and returns beta:
    # the log-probs are garbage (finite here; NaN where a row sum overflows too)
    lp, lp_ref = plain[0], ref[0]
    wrong = ~np.isfinite(lp) | (np.abs(lp - lp_ref) > 1.0)
    assert wrong.any()
    assert not np.array_equal(lp.argmax(-1), lp_ref.argmax(-1))


def _functions(script: str) -> dict[str, str]:
    """TVMScript module text -> {function name: its text}."""
    parts = re.split(r"\n    @(?:T\.prim_func|R\.function)[^\n]*\n    def ", script)
    return {p.split("(", 1)[0]: p for p in parts[1:]}


@pytest.mark.slow  # compiles artifacts
@pytest.mark.parametrize("numerics", [True, False])
def test_fp16_graph_and_kernels_compute_in_fp16(builds, numerics: bool) -> None:
    ir = builds[numerics] / "ir"
    graph = _functions(next(ir.glob("*-graph.py")).read_text())["main"]
    # the only fp32 values are the inputs and outputs, cast at the boundary
    fp32 = [line for line in graph.splitlines() if re.search(r'dtype="float32"\) = ', line)]
    assert fp32 and all("= R.astype(" in line for line in fp32)
    assert "R.nn.layer_norm(" not in graph
    if numerics:  # LayerNorm pre-normalized (rsqrt), softmax rescaled (exp/sum)
        assert "R.rsqrt(" in graph and "R.exp(" in graph
        assert "R.variance(" not in graph and "R.nn.softmax(" not in graph
    else:  # LayerNorm decomposed to mean/variance, softmax kept: both in fp16
        assert "R.variance(" in graph and "R.nn.softmax(" in graph
    # every kernel but the boundary casts computes and accumulates in fp16
    kernels = _functions(next(ir.glob("*-fused.py")).read_text())
    fp32_kernels = {name for name, text in kernels.items() if '"float32"' in text and name != "main"}
    assert fp32_kernels and all("cast" in name for name in fp32_kernels)


@pytest.mark.parametrize("gain_db", [-40.0, 0.0, 60.0])
def test_audio_gain_shifts_log_mel_by_2_ln_gain(gain_db: float) -> None:
    """The premise of `study-fp16`: the Kaldi fbank of g * x is the fbank of x plus 2 ln g."""
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    samples = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    gained = samples * np.float32(10 ** (gain_db / 20))
    shift = compute_fbank(gained) - compute_fbank(samples)
    np.testing.assert_allclose(shift, 2 * np.log(10 ** (gain_db / 20)), atol=5e-3)
    assert feature_shift(gain_db) == pytest.approx(2 * np.log(10 ** (gain_db / 20)))


def test_gains_parse_from_commas_and_spaces() -> None:
    assert parse_gains(["-40,-20", "0", "20,"]) == (-40.0, -20.0, 0.0, 20.0)
    with pytest.raises(UserError):
        parse_gains(["0,loud"])

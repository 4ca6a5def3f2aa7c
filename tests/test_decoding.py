"""CTC prefix beam search against brute-force enumeration; attention rescoring against an
unbatched teacher-forced score; `--decoding beam/rescore` end to end."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import jiwer
import numpy as np
import pytest
import torch

from tvm_conformer.cli import main
from tvm_conformer.decode.ctc import ctc_greedy, ctc_prefix_beam_search
from tvm_conformer.decode.rescoring import attention_rescore
from tvm_conformer.model.decoder import AttentionDecoder
from tvm_conformer.model.tokenizer import BLANK
from tvm_conformer.paths import ASSETS_DIR


def _collapse(path: tuple[int, ...]) -> tuple[int, ...]:
    out, prev = [], BLANK
    for t in path:
        if t != prev and t != BLANK:
            out.append(t)
        prev = t
    return tuple(out)


def _brute_force(log_probs: np.ndarray) -> dict[tuple[int, ...], float]:
    """log P(labels) = log of the sum over every alignment (V^T paths) that collapses to them."""
    frames, vocab = log_probs.shape
    total: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(vocab), repeat=frames):
        lp = float(sum(log_probs[t, k] for t, k in enumerate(path)))
        key = _collapse(path)
        total[key] = np.logaddexp(total[key], lp) if key in total else lp
    return total


def _random_log_probs(rng: np.random.Generator, frames: int, vocab: int, sharp: float) -> np.ndarray:
    logits = rng.standard_normal((frames, vocab)) * sharp
    return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)


@pytest.mark.parametrize("frames, vocab", [(1, 3), (4, 3), (6, 3), (5, 4)])
@pytest.mark.parametrize("seed", range(3))
def test_prefix_beam_search_with_a_full_beam_is_the_exact_label_distribution(frames, vocab, seed):
    lp = _random_log_probs(np.random.default_rng([frames, vocab, seed]), frames, vocab, sharp=2.0)
    exact = _brute_force(lp)
    got = ctc_prefix_beam_search(lp, beam=10**6, token_prune=-math.inf)
    assert {tuple(k) for k, _ in got} == set(exact)  # every label sequence, nothing else
    for labels, score in got:
        assert score == pytest.approx(exact[tuple(labels)], abs=1e-9)
    scores = [s for _, s in got]
    assert scores == sorted(scores, reverse=True)  # best first
    assert np.logaddexp.reduce(scores) == pytest.approx(0.0, abs=1e-9)  # a distribution


@pytest.mark.parametrize("seed", range(5))
def test_a_narrow_beam_finds_the_best_labels_of_a_peaked_distribution(seed):
    lp = _random_log_probs(np.random.default_rng(seed), 6, 4, sharp=4.0)
    exact = _brute_force(lp)
    best = max(exact, key=exact.get)
    got = ctc_prefix_beam_search(lp, beam=4)
    assert len(got) <= 4
    assert tuple(got[0][0]) == best
    for labels, score in got:  # a pruned beam only loses paths: never above the exact score
        assert score <= exact[tuple(labels)] + 1e-9


def test_greedy_is_the_collapsed_best_path():
    lp = _random_log_probs(np.random.default_rng(7), 8, 5, sharp=3.0)
    assert tuple(ctc_greedy(lp)) == _collapse(tuple(lp.argmax(1)))


def _unbatched_score(decoder: AttentionDecoder, memory: torch.Tensor, hyp: list[int]) -> float:
    """Teacher-forced log-likelihood of one hypothesis followed by <eos>, one at a time."""
    ys_in = torch.tensor([[decoder.sos_eos, *hyp]])
    with torch.no_grad():
        logp = torch.log_softmax(decoder(memory, torch.tensor([memory.shape[1]]), ys_in), -1)[0]
    targets = [*hyp, decoder.sos_eos]
    return float(sum(logp[i, t] for i, t in enumerate(targets)))


def test_attention_rescoring_picks_the_best_combined_score():
    torch.manual_seed(0)
    decoder = AttentionDecoder(vocab_size=7, d=16, heads=2, layers=1, ffn_ratio=2, dropout=0.0).eval()
    memory = torch.randn(1, 9, 16)
    nbest = [([1, 2, 3], -1.0), ([1, 2], -1.5), ([4], -2.5), ([5, 6, 5, 6], -1.2), ([], -4.0)]
    att = [_unbatched_score(decoder, memory, h) for h, _ in nbest]
    # the batched, padded score equals the one-by-one teacher-forced score
    np.testing.assert_allclose(decoder.score(memory, [h for h, _ in nbest]).numpy(), att, atol=1e-5)
    for w in (0.0, 0.3, 0.5, 1.0):
        combined = [w * c + (1 - w) * a for (_, c), a in zip(nbest, att, strict=True)]
        assert attention_rescore(decoder, memory, nbest, ctc_weight=w) == nbest[int(np.argmax(combined))][0]
    assert attention_rescore(decoder, memory, nbest, ctc_weight=1.0) == [1, 2, 3]  # CTC alone
    assert attention_rescore(decoder, memory, []) == []


@pytest.mark.slow  # the shipped model streams the recording three times
def test_beam_and_rescore_decoding_transcribe_the_recording(capsys):
    expected = (ASSETS_DIR / "sample.txt").read_text().strip()
    texts = {}
    for decoding in ("greedy", "beam", "rescore"):
        assert main(["transcribe", "--decoding", decoding]) == 0
        texts[decoding] = capsys.readouterr().out.strip()
        assert jiwer.cer(expected, texts[decoding]) <= 0.1, (decoding, texts[decoding])


def test_rescore_needs_a_decoder(capsys, tmp_path: Path, tiny_checkpoint: Path):
    blob = torch.load(tiny_checkpoint, weights_only=True)
    cfg = dict(blob["config"], decoder_layers=0)
    state = {k: v for k, v in blob["state_dict"].items() if not k.startswith("decoder.")}
    torch.save(dict(blob, config=cfg, state_dict=state), tmp_path / "ctc_only.pt")
    code = main(["transcribe", "--model", str(tmp_path / "ctc_only.pt"), "--decoding", "rescore"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "attention decoder" in err

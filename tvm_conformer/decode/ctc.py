"""CTC decoders over log-probs of shape (T, V) with blank id 0."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from tvm_conformer.model.tokenizer import BLANK


def ctc_greedy(log_probs: np.ndarray) -> list[int]:
    """Best path: argmax per frame, repeats merged, blanks removed."""
    best = np.asarray(log_probs).argmax(axis=-1)
    out, prev = [], BLANK
    for tok in best.tolist():
        if tok != prev and tok != BLANK:
            out.append(tok)
        prev = tok
    return out


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))


def ctc_prefix_beam_search(
    log_probs: np.ndarray, beam: int = 8, token_prune: float = -12.0
) -> list[tuple[list[int], float]]:
    """CTC prefix beam search (Graves 2012 / Hannun 2014), no language model.

    Returns up to `beam` (tokens, log-prob) pairs, best first. Per frame only tokens whose
    log-prob exceeds `token_prune` (or the frame's best) are expanded.
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    # prefix -> (log P ending in blank, log P ending in non-blank)
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, -math.inf)}
    for frame in lp:
        cand = np.nonzero(frame >= min(token_prune, frame.max()))[0]
        nxt: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [-math.inf, -math.inf])
        for prefix, (pb, pnb) in beams.items():
            total = _logaddexp(pb, pnb)
            for tok in cand.tolist():
                p = float(frame[tok])
                if tok == BLANK:
                    e = nxt[prefix]
                    e[0] = _logaddexp(e[0], total + p)
                    continue
                last = prefix[-1] if prefix else None
                ext = nxt[prefix + (tok,)]
                if tok == last:
                    # a repeat only extends the prefix after a blank; otherwise it merges
                    ext[1] = _logaddexp(ext[1], pb + p)
                    same = nxt[prefix]
                    same[1] = _logaddexp(same[1], pnb + p)
                else:
                    ext[1] = _logaddexp(ext[1], total + p)
        # a repeat after a non-blank-only prefix creates an extension of probability 0: drop it,
        # or a wide beam returns impossible labels (and rescoring with ctc_weight 0 may pick one)
        live = [kv for kv in nxt.items() if _logaddexp(*kv[1]) > -math.inf]
        ranked = sorted(live, key=lambda kv: _logaddexp(*kv[1]), reverse=True)[:beam]
        beams = {k: (v[0], v[1]) for k, v in ranked}
    return [(list(k), _logaddexp(*v)) for k, v in beams.items()]

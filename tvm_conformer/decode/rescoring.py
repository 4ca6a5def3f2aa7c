"""Attention rescoring: re-rank the CTC n-best with the AED head on the host."""

from __future__ import annotations

import torch

from tvm_conformer.model.decoder import AttentionDecoder


def attention_rescore(
    decoder: AttentionDecoder,
    encoder_out: torch.Tensor,
    nbest: list[tuple[list[int], float]],
    ctc_weight: float = 0.5,
) -> list[int]:
    """Best of `nbest` by ctc_weight * CTC score + (1 - ctc_weight) * decoder log-likelihood.

    encoder_out: (1, T', d) of one utterance.
    """
    if not nbest:
        return []
    att = decoder.score(encoder_out, [h for h, _ in nbest])
    scores = [ctc_weight * c + (1.0 - ctc_weight) * float(a) for (_, c), a in zip(nbest, att, strict=True)]
    return nbest[max(range(len(nbest)), key=scores.__getitem__)][0]

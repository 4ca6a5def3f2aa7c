"""CTC decoding on the host: greedy, prefix beam search, attention rescoring."""

from tvm_conformer.decode.ctc import ctc_greedy, ctc_prefix_beam_search

__all__ = ["ctc_greedy", "ctc_prefix_beam_search"]

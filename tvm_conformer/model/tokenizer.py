"""Character tokenizer: CTC blank, apostrophe, space and a-z; one extra id for <sos/eos>."""

from __future__ import annotations

from collections.abc import Sequence

BLANK = 0
_CHARS = "' abcdefghijklmnopqrstuvwxyz"


class CharTokenizer:
    """Maps normalized text (lowercase a-z, space, apostrophe) to ids and back."""

    def __init__(self) -> None:
        self.blank = BLANK
        self._to_id = {c: i + 1 for i, c in enumerate(_CHARS)}
        self._to_char = {i + 1: c for i, c in enumerate(_CHARS)}
        self.vocab_size = len(_CHARS) + 1  # CTC output size (blank included)
        self.sos_eos = self.vocab_size  # decoder-only symbol; decoder output size vocab_size + 1

    def encode(self, text: str) -> list[int]:
        unknown = sorted({c for c in text if c not in self._to_id})
        if unknown:
            raise ValueError(f"text has characters outside the tokenizer's alphabet: {unknown}")
        return [self._to_id[c] for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self._to_char.get(int(i), "") for i in ids)

"""A byte-level tokenizer: token id = UTF-8 byte value (as keras-hub's `ByteTokenizer`).

Works offline and for any text; the vocabulary is the 256 byte values, so any
model with at least 256 logits can be driven by it.
"""

from __future__ import annotations

from collections.abc import Sequence

from tflight.errors import LanguageModelError

__all__ = ["ByteTokenizer"]


class ByteTokenizer:
    """UTF-8 bytes as token ids 0-255; `decode` replaces invalid sequences."""

    vocabulary_size = 256

    def encode(self, text: str) -> list[int]:
        """The token ids of `text`."""
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        """The text of `ids` (ids above 255 are refused)."""
        bad = [i for i in ids if not 0 <= int(i) < 256]
        if bad:
            raise LanguageModelError(
                f"token id {bad[0]} is not a byte; the byte tokenizer decodes ids 0-255 only",
                argument="tokenizer", value=int(bad[0]))
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

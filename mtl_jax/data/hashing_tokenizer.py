"""Text to fixed-length token ids without a vocabulary file: the hashing trick.

``HashingTokenizer(vocab_size, max_length)`` lower-cases a text, splits it into words (runs of
letters, digits and apostrophes; HTML line breaks dropped) and maps word ``w`` to

    id(w) = 1 + crc32(w) mod (vocab_size - 1),

keeping the first ``max_length`` ids and padding with 0. CRC-32 is fixed by the standard (unlike
Python's per-process ``hash``), so ids are the same in every process, run and machine, and no
vocabulary has to be built, stored or shipped; distinct words collide with probability about
``1 / vocab_size`` each, which a large enough ``vocab_size`` makes harmless for classification
(Weinberger et al. 2009). The ids feed ``model = "text_encoder"`` (its ``vocab_size`` and
``max_length`` must match; 0 is its padding id).

References: K. Weinberger, A. Dasgupta, J. Langford, A. Smola, J. Attenberg. "Feature Hashing
for Large Scale Multitask Learning", ICML 2009.
"""
from __future__ import annotations

import dataclasses
import re
import zlib

import numpy as np

WORD = re.compile(r"[a-z0-9']+")
BREAK = re.compile(r"<br\s*/?>")


@dataclasses.dataclass(frozen=True)
class HashingTokenizer:
    vocab_size: int = 2 ** 15
    max_length: int = 128

    def __post_init__(self):
        if self.vocab_size < 2 or self.max_length < 1:
            raise ValueError(f"HashingTokenizer needs vocab_size >= 2 and max_length >= 1, got {self.vocab_size}, "
                             f"{self.max_length}")

    def words(self, text: str | bytes) -> list[str]:
        if isinstance(text, np.ndarray):
            text = text.item()
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return WORD.findall(BREAK.sub(" ", text.lower()))

    def __call__(self, text: str | bytes) -> np.ndarray:
        """``int32 [max_length]`` ids of ``text``'s first ``max_length`` words, 0-padded."""
        ids = np.zeros(self.max_length, np.int32)
        words = self.words(text)[:self.max_length]
        for position, word in enumerate(words):
            ids[position] = 1 + zlib.crc32(word.encode("utf-8")) % (self.vocab_size - 1)
        return ids

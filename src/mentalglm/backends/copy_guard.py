"""A decode-time guard against reading text back: the token that would make the reply repeat a long run of a
given text (a label definition from the prompt, the post outside its quotation) is pushed down while it is written.

QC rejects an explanation that repeats 16+ characters of a definition or of the post (``instruct/qc.py``); the
embedded 0.5B did that in 10 of 150 hybrid explanations (results/analyze-bench/hybrid-explanations.json, before this
guard), and each cost a redraw or the attribution fallback. Checking afterwards can only throw a draft away; under
the guard, once the reply's last ``RUN_CHARS`` characters occur in one of the texts, every token that starts with a
character continuing such an occurrence loses ``PENALTY`` logits, so the model writes something else there.

A bias, not a ban: where a grammar allows only that token (a quote the grammar copies from the post), it still
comes, and the sampler is never left with nothing. Text is compared as QC compares it (``comparable``: NFKC, lower
case, letters and digits only).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence

import numpy as np

RUN_CHARS = 10  # a shared run may reach this before it is pushed away; QC rejects 16 (MAX_DEFINITION_RUN)
PENALTY = 100.0


def comparable(text: str) -> str:
    """Text as QC and the guard compare it: NFKC, lower case, letters and digits only."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", text).lower() if ch.isalnum())


def first_character_index(pieces: Sequence[bytes]) -> dict[str, np.ndarray]:
    """Token ids by the first comparable character of their text (a vocabulary's pieces, token id = position)."""
    index: dict[str, list[int]] = {}
    for token, piece in enumerate(pieces):
        text = comparable(piece.decode("utf-8", errors="ignore"))
        if text:
            index.setdefault(text[0], []).append(token)
    return {ch: np.array(ids, dtype=np.intp) for ch, ids in index.items()}


class CopyGuard:
    """Which characters may not come next, given the reply so far; and, as a logits processor, the bias."""

    def __init__(self, texts: Sequence[str], run_chars: int = RUN_CHARS) -> None:
        self.texts = [t for t in (comparable(text) for text in texts) if len(t) > run_chars]
        self.run_chars = run_chars

    def avoided(self, reply: str) -> set[str]:
        """The characters that would carry a run of ``run_chars``+ characters shared with a text one further."""
        tail = comparable(reply)[-self.run_chars:]
        if len(tail) < self.run_chars:
            return set()
        out: set[str] = set()
        for text in self.texts:
            at = text.find(tail)
            while at >= 0:
                end = at + len(tail)
                if end < len(text):
                    out.add(text[end])
                at = text.find(tail, at + 1)
        return out

    def processor(self, index: dict[str, np.ndarray], decode: Callable[[Sequence[int]], str],
                  ) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """A llama.cpp logits processor: ``(input_ids, scores) -> scores``; the first call's ids are the prompt."""
        prompt: list[int] = []

        def bias(input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
            if not prompt:
                prompt.append(len(input_ids))
            for ch in self.avoided(decode(list(input_ids[prompt[0]:]))):
                ids = index.get(ch)
                if ids is not None:
                    scores[ids] -= PENALTY
            return scores

        return bias

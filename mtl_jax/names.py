"""Suggestions for a misspelt name: one helper for every "unknown ..." error."""
from __future__ import annotations

import difflib
from typing import Iterable


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'a' or 'b'?"`` for the candidates closest to ``name`` (case-insensitive),
    or ``""`` when none is close."""
    candidates = [str(c) for c in candidates]
    folded = {c.lower(): c for c in candidates}
    close = difflib.get_close_matches(str(name).lower(), list(folded), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(folded[c]) for c in close)}?" if close else ""

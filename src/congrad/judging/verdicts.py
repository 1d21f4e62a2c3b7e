"""What a judge is given and what it returns: a :class:`Candidate` (prompt, language, response) and a
:class:`Verdict` (a score in [0, 5] or none, per-sample values and problems), and how an LLM judge's text
is read (:func:`parse_score`).

Judges (:mod:`.llm`, :mod:`.rule`) share one method, ``judge(candidates, policy) -> list[Verdict]``, where
``policy`` is the :class:`~congrad.generation.sampling.TextGenerator` of the policy being trained.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from congrad.data.formats import Text

MIN_SCORE, MAX_SCORE = 0.0, 5.0
UNPARSEABLE, OUT_OF_RANGE = "unparseable", "out_of_range"

FIRST, SECOND, TIE = "first", "second", "tie"  # outcomes of a pairwise comparison

# "Score: 4", "**Score:** 4.5", "score = 3/5", "Final score is 2"; the last one in the text counts.
_SCORE = re.compile(r"score\W{0,3}\s*(?:[:：=]|is)\s*\**\s*(-?\d+(?:[.,]\d+)?)", re.IGNORECASE)
# "Winner: A", "**Winner:** B", "winner is tie"; the last one counts.
_WINNER = re.compile(r"winner\W{0,3}\s*(?:[:：=]|is)\s*\**\s*(A|B|tie)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Candidate:
    """One response to judge, with its prompt and the prompt's language."""

    prompt: Text
    language: str
    response: str


@dataclass(frozen=True)
class Comparison:
    """Two responses to one prompt, in the order a judge sees them."""

    prompt: Text
    language: str
    first: str
    second: str


@dataclass
class Verdict:
    """``score`` is the mean of the valid samples, or None when no sample was valid (the response is then
    dropped); ``problems`` holds one entry per sample: None, ``unparseable`` or ``out_of_range``."""

    score: float | None
    samples: list[float | None]
    problems: list[str | None]
    texts: list[str] = field(default_factory=list)  # the judge's raw outputs (LLM judges)


def parse_score(text: str) -> tuple[float | None, str | None]:
    """``(score, None)`` for a valid judgement, else ``(None, "unparseable" | "out_of_range")``."""
    matches = _SCORE.findall(text)
    if not matches:
        return None, UNPARSEABLE
    value = float(matches[-1].replace(",", "."))
    if not MIN_SCORE <= value <= MAX_SCORE:
        return None, OUT_OF_RANGE
    return value, None


def verdict_from_texts(texts: Sequence[str]) -> Verdict:
    parsed = [parse_score(text) for text in texts]
    samples = [value for value, _ in parsed]
    valid = [value for value in samples if value is not None]
    score = round(sum(valid) / len(valid), 4) if valid else None
    return Verdict(score, samples, [problem for _, problem in parsed], list(texts))


def parse_winner(text: str) -> str | None:
    """:data:`FIRST`, :data:`SECOND` or :data:`TIE` from a pairwise judgement, None when it names none."""
    matches = _WINNER.findall(text)
    if not matches:
        return None
    return {"a": FIRST, "b": SECOND, "tie": TIE}[matches[-1].lower()]


def majority(outcomes: Sequence[str | None]) -> str | None:
    """The most frequent valid outcome of sampled judgements; a tie between outcomes is a :data:`TIE`; None
    when no judgement was valid."""
    valid = [o for o in outcomes if o is not None]
    if not valid:
        return None
    counts = {o: valid.count(o) for o in (FIRST, SECOND, TIE)}
    best = max(counts.values())
    leaders = [o for o, c in counts.items() if c == best]
    return leaders[0] if len(leaders) == 1 else TIE

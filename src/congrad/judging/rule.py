"""A transparent rule-based judge for tiny or randomly initialised models and for tests, where asking the
model to judge means nothing. Its results check the pipeline; they are not self-rewarding results."""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, ClassVar

from pydantic import Field

from congrad.data.tokenization import flatten_text
from congrad.generation.sampling import TextGenerator
from congrad.judging.verdicts import FIRST, MAX_SCORE, SECOND, TIE, Candidate, Comparison, Verdict
from congrad.utils.schema import Instantiated

WEIGHTS = ("script_weight", "length_weight", "repetition_weight")


class RuleJudgeSettings(Instantiated):
    """``judge=rule``: the arguments of :class:`RuleJudge`."""

    group: ClassVar[str] = "judge"
    script_weight: Annotated[float, Field(ge=0)]
    length_weight: Annotated[float, Field(ge=0)]
    repetition_weight: Annotated[float, Field(ge=0)]
    min_chars: Annotated[int, Field(ge=1)]
    max_chars: Annotated[int, Field(ge=1)]

    @classmethod
    def relations(cls, values: dict[str, Any]) -> Iterator[str]:
        low, high = values.get("min_chars"), values.get("max_chars")
        if low is not None and high is not None and low > high:
            yield f"judge.min_chars={low}: must be at most judge.max_chars ({high})"
        weights = [values.get(name) for name in WEIGHTS]
        if None not in weights and not math.isclose(sum(weights), MAX_SCORE):
            yield (
                f"judge.script_weight + judge.length_weight + judge.repetition_weight = {sum(weights):g}: must be "
                f"{MAX_SCORE:g} (the weights sum to the top of the rubric scale)"
            )


class RuleJudge:
    """Score = ``script_weight`` × the share of the response's letters written in a script of the prompt
    + ``length_weight`` × the length term (1 inside [``min_chars``, ``max_chars``], falling linearly to 0
    at an empty response and at twice ``max_chars``) + ``repetition_weight`` × the share of distinct
    character 4-grams (1: nothing repeats). The weights sum to 5, the top of the rubric scale.

    A script is the first word of a letter's Unicode name (LATIN, CYRILLIC, CJK, HIRAGANA, ...); a prompt's
    scripts are those of at least 10% of its letters.
    """

    name = "rule"

    def __init__(
        self,
        script_weight: float = 2.0,
        length_weight: float = 1.0,
        repetition_weight: float = 2.0,
        min_chars: int = 20,
        max_chars: int = 400,
    ):
        RuleJudgeSettings.check(
            script_weight=script_weight,
            length_weight=length_weight,
            repetition_weight=repetition_weight,
            min_chars=min_chars,
            max_chars=max_chars,
        )
        self.weights = (script_weight, length_weight, repetition_weight)
        self.min_chars, self.max_chars = min_chars, max_chars

    def judge(self, candidates: Sequence[Candidate], policy: TextGenerator | None = None) -> list[Verdict]:
        scores = [round(self.score(flatten_text(c.prompt), c.response), 4) for c in candidates]
        return [Verdict(score, [score], [None]) for score in scores]

    def compare(self, comparisons: Sequence[Comparison], policy: TextGenerator | None = None) -> list[str]:
        """The response with the higher score wins; equal scores (to 1e-9) are a tie."""
        outcomes = []
        for c in comparisons:
            prompt = flatten_text(c.prompt)
            diff = self.score(prompt, c.first) - self.score(prompt, c.second)
            outcomes.append(TIE if abs(diff) <= 1e-9 else FIRST if diff > 0 else SECOND)
        return outcomes

    def score(self, prompt: str, response: str) -> float:
        terms = (
            script_share(response, prompt_scripts(prompt)),
            self._length(len(response)),
            distinct_ngram_share(response, 4),
        )
        return sum(w * t for w, t in zip(self.weights, terms))

    def _length(self, n: int) -> float:
        if n < self.min_chars:
            return n / self.min_chars
        if n <= self.max_chars:
            return 1.0
        return max(0.0, 2.0 - n / self.max_chars)


def script(char: str) -> str | None:
    """The script of a letter (first word of its Unicode name); None for anything else."""
    if not char.isalpha():
        return None
    name = unicodedata.name(char, "")
    return name.split(" ", 1)[0] if name else None


def prompt_scripts(prompt: str, min_share: float = 0.1) -> set[str]:
    scripts = [s for s in map(script, prompt) if s]
    return {s for s in set(scripts) if scripts.count(s) >= min_share * len(scripts)}


def script_share(text: str, scripts: set[str]) -> float:
    letters = [s for s in map(script, text) if s]
    return sum(s in scripts for s in letters) / len(letters) if letters else 0.0


def distinct_ngram_share(text: str, n: int) -> float:
    grams = [text[i : i + n] for i in range(len(text) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0

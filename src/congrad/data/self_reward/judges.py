"""Judges: a score in [0, 5] for each response to a prompt.

:class:`LLMJudge` is LLM-as-a-judge with the additive 0–5 rubric of Self-Rewarding Language Models (Yuan et
al. 2024): a language model reads the prompt, the response and the rubric (``conf/judge/_llm.yaml``),
writes a short justification and ends with ``Score: <points>``; ``n_samples`` judgements are sampled and
the valid ones averaged. The model is the policy itself (self-rewarding) unless a judge model is given.

:class:`RuleJudge` is a transparent rule-based scorer for tiny or randomly initialised models and for
tests, where asking the model to judge means nothing. Its results check the pipeline; they are not
self-rewarding results.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

from congrad.data.formats import Text
from congrad.data.self_reward.generation import Sampling, TextGenerator
from congrad.data.tokenization import flatten_text
from congrad.errors import CongradError

MIN_SCORE, MAX_SCORE = 0.0, 5.0
UNPARSEABLE, OUT_OF_RANGE = "unparseable", "out_of_range"

# "Score: 4", "**Score:** 4.5", "score = 3/5", "Final score is 2"; the last one in the text counts.
_SCORE = re.compile(r"score\W{0,3}\s*(?:[:：=]|is)\s*\**\s*(-?\d+(?:[.,]\d+)?)", re.IGNORECASE)


@dataclass(frozen=True)
class Candidate:
    """One response to judge, with its prompt and the prompt's language."""

    prompt: Text
    language: str
    response: str


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


class LLMJudge:
    """``template`` has the fields ``{prompt}`` and ``{response}`` (literal braces doubled); ``model`` is a
    :class:`TextGenerator` of a judge model, or None to judge with the policy."""

    def __init__(self, template: str, n_samples: int = 3, temperature: float = 0.7, top_p: float = 0.9,
                 max_new_tokens: int = 256, max_prompt_length: int = 2048, model: TextGenerator | None = None):
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        if fields != {"prompt", "response"}:
            raise CongradError("judge.template must use exactly the fields {prompt} and {response}, "
                               f"found {sorted(fields)}")
        if n_samples < 1:
            raise CongradError(f"judge.n_samples must be at least 1, got {n_samples}")
        self.template = template
        self.sampling = Sampling(num_responses=n_samples, temperature=temperature, top_p=top_p,
                                 max_new_tokens=max_new_tokens)
        self.max_prompt_length = max_prompt_length
        self.model = model

    @property
    def name(self) -> str:
        """``self`` when the policy judges (self-rewarding), ``model`` for a judge model of its own."""
        return "self" if self.model is None else "model"

    def judge(self, candidates: Sequence[Candidate], policy: TextGenerator) -> list[Verdict]:
        generator = self.model or policy
        prompts = [self.template.format(prompt=flatten_text(c.prompt), response=c.response) for c in candidates]
        outputs = generator.generate(prompts, self.sampling, desc="judge", max_prompt_length=self.max_prompt_length)
        return [verdict_from_texts(texts) for texts in outputs]


class RuleJudge:
    """Score = ``script_weight`` × the share of the response's letters written in a script of the prompt
    + ``length_weight`` × the length term (1 inside [``min_chars``, ``max_chars``], falling linearly to 0
    at an empty response and at twice ``max_chars``) + ``repetition_weight`` × the share of distinct
    character 4-grams (1: nothing repeats). The weights sum to 5, the top of the rubric scale.

    A script is the first word of a letter's Unicode name (LATIN, CYRILLIC, CJK, HIRAGANA, ...); a prompt's
    scripts are those of at least 10% of its letters.
    """

    name = "rule"

    def __init__(self, script_weight: float = 2.0, length_weight: float = 1.0, repetition_weight: float = 2.0,
                 min_chars: int = 20, max_chars: int = 400):
        total = script_weight + length_weight + repetition_weight
        if abs(total - MAX_SCORE) > 1e-6:
            raise CongradError(f"the rule judge's weights must sum to {MAX_SCORE:g}, got {total:g}")
        if not 0 < min_chars <= max_chars:
            raise CongradError(f"need 0 < min_chars <= max_chars, got {min_chars}, {max_chars}")
        self.weights = (script_weight, length_weight, repetition_weight)
        self.min_chars, self.max_chars = min_chars, max_chars

    def judge(self, candidates: Sequence[Candidate], policy: TextGenerator | None = None) -> list[Verdict]:
        scores = [round(self.score(flatten_text(c.prompt), c.response), 4) for c in candidates]
        return [Verdict(score, [score], [None]) for score in scores]

    def score(self, prompt: str, response: str) -> float:
        terms = (script_share(response, prompt_scripts(prompt)), self._length(len(response)),
                 distinct_ngram_share(response, 4))
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
    grams = [text[i: i + n] for i in range(len(text) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0

"""LLM-as-a-judge with the additive 0–5 rubric of Self-Rewarding Language Models (Yuan et al. 2024).

A language model reads the prompt, the response and the rubric (``conf/judge/_llm.yaml``), writes a short
justification and ends with ``Score: <points>``; ``n_samples`` judgements are sampled and the valid ones
averaged. The model is the policy itself (self-rewarding) unless a judge model is given.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

from congrad.data.tokenization import flatten_text
from congrad.errors import ConfigError
from congrad.generation.sampling import Sampling, TextGenerator
from congrad.judging.verdicts import Candidate, Comparison, Verdict, majority, parse_winner, verdict_from_texts


class LLMJudge:
    """``template`` has the fields ``{prompt}`` and ``{response}``, ``pairwise_template`` ``{prompt}``,
    ``{first}`` and ``{second}`` (literal braces doubled); ``model`` is a :class:`TextGenerator` of a judge
    model, or None to judge with the model the caller passes (the policy, in self-rewarding)."""

    def __init__(self, template: str, pairwise_template: str | None = None, n_samples: int = 3,
                 temperature: float = 0.7, top_p: float = 0.9, max_new_tokens: int = 256,
                 max_prompt_length: int = 2048, model: TextGenerator | None = None):
        _check_fields("judge.template", template, {"prompt", "response"})
        if pairwise_template is not None:
            _check_fields("judge.pairwise_template", pairwise_template, {"prompt", "first", "second"})
        if n_samples < 1:
            raise ConfigError(f"judge.n_samples must be at least 1, got {n_samples}")
        self.template = template
        self.pairwise_template = pairwise_template
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

    def compare(self, comparisons: Sequence[Comparison], policy: TextGenerator) -> list[str | None]:
        """Per comparison, the majority of ``n_samples`` sampled verdicts (first, second or tie), None when no
        verdict could be read."""
        if self.pairwise_template is None:
            raise ConfigError("judge.pairwise_template is not set: the judge cannot compare two responses")
        generator = self.model or policy
        prompts = [self.pairwise_template.format(prompt=flatten_text(c.prompt), first=c.first, second=c.second)
                   for c in comparisons]
        outputs = generator.generate(prompts, self.sampling, desc="judge pairs",
                                     max_prompt_length=self.max_prompt_length)
        return [majority([parse_winner(text) for text in texts]) for texts in outputs]


def _check_fields(key: str, template: str, expected: set[str]) -> None:
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    if fields != expected:
        raise ConfigError(f"{key} must use exactly the fields {', '.join('{' + f + '}' for f in sorted(expected))}, "
                          f"found {sorted(fields)}")

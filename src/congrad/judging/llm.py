"""LLM-as-a-judge with the additive 0–5 rubric of Self-Rewarding Language Models (Yuan et al. 2024).

A language model reads the prompt, the response and the rubric (``conf/judge/_llm.yaml``), writes a short
justification and ends with ``Score: <points>``; ``n_samples`` judgements are sampled and the valid ones
averaged. The model is the policy itself (self-rewarding) unless a judge model is given: a local one
(:class:`~congrad.generation.sampling.TextGenerator`) or a server (:mod:`.api`).

With ``cache_dir`` every sampled judgement is stored as it comes (:mod:`.cache`) and never asked for again.
"""

from __future__ import annotations

import logging
import string
from collections.abc import Sequence
from dataclasses import asdict
from typing import Annotated, ClassVar

from pydantic import Field

from congrad.data.tokenization import flatten_text
from congrad.errors import ConfigError, JudgeUnavailable
from congrad.generation.sampling import Sampling, TextGenerator
from congrad.judging.cache import VerdictCache, verdict_key
from congrad.judging.verdicts import Candidate, Comparison, Verdict, majority, parse_winner, verdict_from_texts
from congrad.utils import cost
from congrad.utils.schema import FreeForm, Instantiated, Text

log = logging.getLogger(__name__)


class LLMJudgeSettings(Instantiated):
    """``judge=self`` and ``judge=model``: the arguments of :class:`LLMJudge`; ``model`` is a judge model's
    config (its ``_target_`` builds a :class:`TextGenerator`), or null for the policy."""

    group: ClassVar[str] = "judge"
    template: Text
    pairwise_template: Text | None
    n_samples: Annotated[int, Field(ge=1)]
    temperature: Annotated[float, Field(ge=0)]
    top_p: Annotated[float, Field(gt=0, le=1)]
    max_new_tokens: Annotated[int, Field(ge=1)]
    max_prompt_length: Annotated[int, Field(ge=1)]
    model: FreeForm | None
    cache_dir: Text | None


class LLMJudge:
    """``template`` has the fields ``{prompt}`` and ``{response}``, ``pairwise_template`` ``{prompt}``,
    ``{first}`` and ``{second}`` (literal braces doubled); ``model`` is the judge model (a
    :class:`TextGenerator`, or anything with its ``identity`` and ``generate_each``), or None to judge with
    the model the caller passes (the policy, in self-rewarding); ``cache_dir``: the verdict cache (None:
    none)."""

    def __init__(
        self,
        template: str,
        pairwise_template: str | None = None,
        n_samples: int = 3,
        temperature: float = 0.7,
        top_p: float = 0.9,
        max_new_tokens: int = 256,
        max_prompt_length: int = 2048,
        model: TextGenerator | None = None,
        cache_dir: str | None = None,
    ):
        _check_fields("judge.template", template, {"prompt", "response"})
        if pairwise_template is not None:
            _check_fields("judge.pairwise_template", pairwise_template, {"prompt", "first", "second"})
        LLMJudgeSettings.check(n_samples=n_samples, temperature=temperature, top_p=top_p)
        self.template = template
        self.pairwise_template = pairwise_template
        self.sampling = Sampling(
            num_responses=n_samples, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens
        )
        self.max_prompt_length = max_prompt_length
        self.model = model
        self.cache = VerdictCache(cache_dir) if cache_dir else None

    @property
    def name(self) -> str:
        """``self`` when the policy judges (self-rewarding), ``model`` for a judge model of its own."""
        return "self" if self.model is None else "model"

    def judge(self, candidates: Sequence[Candidate], policy: TextGenerator) -> list[Verdict]:
        prompts = [self.template.format(prompt=flatten_text(c.prompt), response=c.response) for c in candidates]
        outputs = self._judgements(self.model or policy, self.template, prompts, "judge")
        return [verdict_from_texts(texts) for texts in outputs]

    def compare(self, comparisons: Sequence[Comparison], policy: TextGenerator) -> list[str | None]:
        """Per comparison, the majority of ``n_samples`` sampled verdicts (first, second or tie), None when no
        verdict could be read."""
        if self.pairwise_template is None:
            raise ConfigError("judge.pairwise_template is not set: the judge cannot compare two responses")
        prompts = [
            self.pairwise_template.format(prompt=flatten_text(c.prompt), first=c.first, second=c.second)
            for c in comparisons
        ]
        outputs = self._judgements(self.model or policy, self.pairwise_template, prompts, "judge pairs")
        return [majority([parse_winner(text) for text in texts]) for texts in outputs]

    def _judgements(self, generator, template: str, prompts: list[str], desc: str) -> list[list[str]]:
        """``n_samples`` judge texts per prompt: those the cache holds, the others from ``generator`` (one
        request per distinct prompt and sample), each batch stored as it comes: a run stopped half-way keeps
        what it was given."""
        n = self.sampling.num_responses
        items = [(prompt, j) for prompt in prompts for j in range(n)]
        texts: list[str | None] = [None] * len(items)
        keys: list[str] = []
        if self.cache is not None:
            judge_id = generator.identity
            settings = {**asdict(self.sampling), "max_prompt_length": self.max_prompt_length}
            settings.pop("num_responses")
            keys = [verdict_key(judge_id, template, prompt, j, settings) for prompt, j in items]
            found = self.cache.get(keys)
            texts = [found.get(key) for key in keys]
        wanted: dict[tuple[str, int], list[int]] = {}  # each missing (prompt, sample) -> where it goes
        for i, text in enumerate(texts):
            if text is None:
                wanted.setdefault(items[i], []).append(i)
        asked = list(wanted)
        cost.add_judge_requests(cached=len(items) - len(asked))
        done = 0
        try:
            for positions, new in generator.generate_each(
                asked, self.sampling, desc=desc, max_prompt_length=self.max_prompt_length
            ):
                for position, text in zip(positions, new):
                    for i in wanted[asked[position]]:
                        texts[i] = text
                if self.cache is not None:
                    self.cache.put(
                        [(keys[wanted[asked[p]][0]], judge_id, *asked[p], text) for p, text in zip(positions, new)]
                    )
                done += len(positions)
                cost.add_judge_requests(sent=len(positions))
        except JudgeUnavailable as err:
            if self.cache is None:
                raise
            raise JudgeUnavailable(
                f"{err}; {done} of the {len(asked)} judgements asked for are stored in the verdict cache "
                f"({self.cache.directory}): rerun the same command to continue from them"
            ) from None
        log.info(
            "%s: %d judgements, %d from the verdict cache, %d asked of the judge",
            desc,
            len(items),
            len(items) - len(asked),
            len(asked),
        )
        return [texts[k * n : (k + 1) * n] for k in range(len(prompts))]


def _check_fields(key: str, template: str, expected: set[str]) -> None:
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    if fields != expected:
        raise ConfigError(
            f"{key} must use exactly the fields {', '.join('{' + f + '}' for f in sorted(expected))}, "
            f"found {sorted(fields)}"
        )

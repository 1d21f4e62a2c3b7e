"""The work of each self-rewarding iteration, from the config and the prompt pool's size alone, before anything
loads (``python -m congrad.plan``).

The pool's size per language comes from the pool preset's ``rows`` (the hub's row counts ship with the presets:
``conf/prompts/``), else from reading a local pool (offline: it is what the loop reads), else it is unknown and
the per-language cap stands in for it (a bound: the plan says so). Then, per iteration: the prompts (the cap
and ``per_iteration``'s slice per language), K responses each, the judge's calls (an LLM judge samples
``judge.n_samples`` verdicts per response; the rule judge scores each once, generating nothing), the tokens to
generate (at most ``max_new_tokens`` per response and per verdict), at most one candidate pair per prompt, one
ConGrad pass per epoch (when the filter is on) and the optimizer steps over the kept share of the training
pairs (``filter.keep_ratio``; all of them with a threshold).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from congrad.data.formats import requested_languages
from congrad.data.prompts import load_prompts
from congrad.data.sources import LANG


@dataclass(frozen=True)
class Pool:
    """Prompts per language the loop draws from, and where the numbers come from."""

    per_language: dict[str, int]
    source: str  # "the preset's rows", "the file", "the cap (the pool's size per language is not known here)"
    exact: bool


@dataclass(frozen=True)
class IterationWork:
    iteration: int
    prompts: int
    responses: int
    judge_calls: int
    tokens_to_generate: int  # at most: responses and verdicts at their max_new_tokens
    candidate_pairs: int  # at most: one per prompt
    congrad_passes: int
    training_steps: int  # at most: optimizer steps over the kept share of the candidates


def pool(cfg: DictConfig) -> Pool:
    """The prompt pool's size per language of ``self_reward.prompts`` (module docstring)."""
    section = cfg.self_reward.prompts
    languages = requested_languages(
        OmegaConf.to_container(section.languages, resolve=True) if section.get("languages") is not None else None,
        "self_reward.prompts.languages",
    )
    cap = section.get("per_language")
    rows = OmegaConf.to_container(section.rows, resolve=True) if section.get("rows") else {}
    by_language = {lang: n for lang, n in rows.items() if lang != "all"}
    if by_language and (languages is None or languages <= set(by_language)):
        counts = {lang: by_language[lang] for lang in sorted(languages or by_language)}
        source, exact = "the preset's rows", True
    elif _local(str(section.path)):
        plain = OmegaConf.to_container(section, resolve=True)
        counts = {}
        for prompt in load_prompts(**{**plain, "per_language": None}):
            counts[prompt.language] = counts.get(prompt.language, 0) + 1
        source, exact = "the file", True
    elif cap is not None and languages is not None:
        counts, exact = {lang: cap for lang in sorted(languages)}, False
        source = "the cap (the pool's rows per language are not known here: at most this many)"
    else:
        return Pool({}, "unknown: give self_reward.prompts.per_language and data.languages", False)
    if cap is not None:
        counts = {lang: min(n, cap) for lang, n in counts.items()}
    return Pool(counts, source, exact)


def _local(path: str) -> bool:
    if LANG in path:
        return Path(path.split(LANG)[0]).parent.exists()
    return Path(path).exists()


def iteration_work(cfg: DictConfig, pool_size: Pool) -> list[IterationWork]:
    """The work of every iteration (module docstring)."""
    sr, judge = cfg.self_reward, cfg.judge
    per_iteration = sr.prompts.get("per_iteration")
    llm_judge = "n_samples" in judge
    k = int(sr.generation.num_responses)
    filtering = OmegaConf.select(cfg, "callbacks.congrad") is not None
    keep = 1.0 if not filtering or cfg.filter.get("threshold") is not None else float(cfg.filter.keep_ratio)
    epochs = int(cfg.trainer.max_epochs)
    devices = cfg.trainer.get("devices", 1)
    devices = int(devices) if str(devices).isdigit() else 1
    per_step = int(cfg.data.batch_size) * devices
    work = []
    for t in range(1, int(cfg.iterations) + 1):
        prompts = sum(
            n if per_iteration is None else min(n, int(per_iteration)) for n in pool_size.per_language.values()
        )
        responses = prompts * k
        calls = responses * (int(judge.n_samples) if llm_judge else 1)
        tokens = responses * int(sr.generation.max_new_tokens) + (calls * int(judge.max_new_tokens) if llm_judge else 0)
        training = prompts - round(prompts * float(cfg.data.val_fraction))
        kept = math.ceil(keep * training)
        steps = epochs * math.ceil(math.ceil(kept / per_step) / int(cfg.trainer.accumulate_grad_batches))
        work.append(IterationWork(t, prompts, responses, calls, tokens, prompts, epochs if filtering else 0, steps))
    return work


def work_lines(cfg: DictConfig) -> list[str]:
    """The plan's table of the work per iteration."""
    found = pool(cfg)
    sizes = ", ".join(f"{lang} {n}" for lang, n in found.per_language.items()) or "?"
    lines = [
        f"  self-rewarding work per iteration (pool {cfg.self_reward.prompts.path}: {sizes} prompts per "
        f"language, from {found.source})"
    ]
    per_iteration = cfg.self_reward.prompts.get("per_iteration")
    short = [
        lang
        for lang, n in found.per_language.items()
        if per_iteration is not None and n < int(per_iteration) * int(cfg.iterations)
    ]
    if short:
        lines.append(
            f"  (the pool has too few prompts in {', '.join(short)} for {cfg.iterations} slices of "
            f"self_reward.prompts.per_iteration={per_iteration}: the loop will stop)"
        )
    header = (
        "iteration",
        "prompts",
        "responses",
        "judge calls",
        "tokens to generate",
        "candidate pairs",
        "ConGrad passes",
        "training steps",
    )
    lines.append("  " + "  ".join(f"{h:>{max(len(h), 9)}}" for h in header))
    for w in iteration_work(cfg, found):
        values = (
            w.iteration,
            w.prompts,
            w.responses,
            w.judge_calls,
            w.tokens_to_generate,
            w.candidate_pairs,
            w.congrad_passes,
            w.training_steps,
        )
        lines.append("  " + "  ".join(f"{v:>{max(len(h), 9)},}" for h, v in zip(header, values)))
    lines.append(
        "  (tokens at most max_new_tokens each; pairs at most one per prompt; training steps over "
        + ("them" if found.exact else "them, with the pool's size a bound")
        + ")"
    )
    return lines

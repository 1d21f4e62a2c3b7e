"""One evaluation: a policy against a baseline on the held-out sets, per language.

- *Preference accuracy and margin* on held-out pairs: the implicit reward β·(log π − log π_baseline) of the
  chosen answer against the rejected one (exactly equal is a tie, counted apart).
- *Win rate*: the policy and the baseline answer the held-out prompts with the same sampling settings and
  seed (or, with ``eval.win_rate.against=reference``, the policy's answer meets the prompt's reference answer,
  as AlpacaEval's ``reference_outputs``); the judge compares every pair of answers twice, once in each order
  (a judge's preference for a position cancels out); each judgement is a win, tie or loss for the policy; win rate =
  (wins + ties/2) / judgements, with a bootstrap 95% CI over prompts.
- *Language fidelity*: the share of the policy's answers whose language (py3langid) is the prompt's.
- *Alignment tax*: the policy's mean per-token NLL of reference texts minus the baseline's
  (``nll_delta`` > 0: the policy finds correct text less likely), and multiple-choice benchmarks run by
  lm-evaluation-harness (:mod:`.harness`) on both: per task and language both scores, their difference and
  the number of questions; per language their means (``mc_accuracy``, ``mc_accuracy_baseline``, ``mc_delta``)
  and the questions counted (``mc_n``).

A part switched off (``eval.<part>.enabled=false``) leaves its metrics out of the results.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from pydantic import Field

from congrad.data.eval_sets import read_eval_part
from congrad.data.formats import PREFERENCE, PROMPTS, REFERENCE_TEXTS, Languages
from congrad.data.sources import SourceSettings
from congrad.errors import ConfigError
from congrad.evaluation import metrics
from congrad.evaluation.harness import Harness, HarnessSettings
from congrad.evaluation.likelihoods import LikelihoodModel
from congrad.generation.langid import detect, same_language
from congrad.generation.sampling import Sampling, SamplingSettings, TextGenerator
from congrad.judging.verdicts import Comparison
from congrad.models.factory import build_policy
from congrad.utils.device import Device, resolve_device
from congrad.utils.schema import Settings

log = logging.getLogger(__name__)


class EvalPartSettings(SourceSettings):
    """``eval.pairs``, ``eval.nll``: a held-out source, on or off, and the languages read from it."""

    enabled: bool
    languages: Languages | None


class WinRateSettings(EvalPartSettings):
    """``eval.win_rate``: its prompts, against what the policy's answers are judged, how they are sampled,
    and the bootstrap resamples of its interval."""

    against: Literal["baseline", "reference"]
    generation: SamplingSettings
    bootstrap: Annotated[int, Field(ge=1)]


class EvalSettings(Settings):
    """The ``eval`` group: which languages, the seen ones among them, the adapters the baseline merges,
    and the parts of the evaluation."""

    group: ClassVar[str] = "eval"
    languages: Languages | None
    seen: Languages | None
    baseline_adapters: list[str]
    device: Device
    batch_size: Annotated[int, Field(ge=1)]
    pairs: EvalPartSettings
    win_rate: WinRateSettings
    nll: EvalPartSettings
    harness: HarnessSettings


@dataclass
class EvalSets:
    """The held-out data, read and validated once (a part that is off holds None); ``harness``: the
    multiple-choice benchmarks, resolved and their data loaded."""

    pairs: list | None
    prompts: list | None
    texts: list | None
    harness: Harness | None

    @property
    def languages(self) -> list[str]:
        found = set(self.harness.languages if self.harness is not None else ())
        for rows in (self.pairs, self.prompts, self.texts):
            found |= {row.language for row in rows or ()}
        return sorted(found)


def load_eval_sets(eval_cfg: DictConfig, work_dir: str | Path, seed: int = 0) -> EvalSets:
    """Every enabled part, read as a data source from its section (docs/data.md, "Data sources"; ``per_language``: the
    first N rows of a language) and limited to ``eval.languages``; a missing file is an error naming its key.
    The harness tasks generated for local files go into ``work_dir``."""
    kinds = {"pairs": PREFERENCE, "win_rate": PROMPTS, "nll": REFERENCE_TEXTS}
    languages = None if eval_cfg.languages is None else list(eval_cfg.languages)
    parts = {
        part: read_eval_part(kind, eval_cfg[part], f"eval.{part}", languages) if eval_cfg[part].enabled else None
        for part, kind in kinds.items()
    }
    if parts["win_rate"] is not None and eval_cfg.win_rate.get("against", "baseline") == "reference":
        lacking = [p for p in parts["win_rate"] if p.reference is None]
        if lacking:
            raise ConfigError(
                f"eval.win_rate.against=reference: {len(lacking)} of {len(parts['win_rate'])} prompts "
                f"have no reference answer (the first: id {lacking[0].id}); give each a `reference` "
                "(or name its field in eval.win_rate.columns.reference)"
            )
    harness = Harness(eval_cfg.harness, work_dir, languages, seed) if eval_cfg.harness.enabled else None
    sets = EvalSets(parts["pairs"], parts["win_rate"], parts["nll"], harness)
    sets = sets if languages is None else _only(sets, languages)
    seen = eval_cfg.get("seen")
    unknown = sorted(set(seen or ()) - set(sets.languages))
    if unknown:  # a seen language without a number would silently leave the seen means
        raise ConfigError(
            f"eval.seen: no evaluation rows for {', '.join(unknown)} (languages with rows: {', '.join(sets.languages)})"
        )
    return sets


def _only(sets: EvalSets, languages: Sequence[str]) -> EvalSets:
    keep = set(languages)
    missing = keep - set(sets.languages)
    if missing:
        raise ConfigError(f"eval.languages: no evaluation rows for {', '.join(sorted(missing))}")

    def pick(rows):
        return None if rows is None else [r for r in rows if r.language in keep]

    return EvalSets(pick(sets.pairs), pick(sets.prompts), pick(sets.texts), sets.harness)


def model_config(model_cfg: DictConfig, adapters: Sequence[str]) -> DictConfig:
    """``model_cfg`` for a policy to evaluate: the base model with ``adapters`` merged, in order, no fresh
    LoRA, no gradient checkpointing."""
    cfg = OmegaConf.create(OmegaConf.to_container(model_cfg, resolve=True))
    with open_dict(cfg):
        cfg.merge_adapters = list(adapters)
        cfg.lora = None
        cfg.gradient_checkpointing = False
    return cfg


class Evaluator:
    """Evaluates policies (adapters merged into the configured base model) against one baseline.

    ``cfg`` is a composed config with ``eval``, ``model``, ``data`` (lengths), ``dpo.beta`` (the scale of the
    implicit reward; 1 when there is no ``dpo``), ``judge`` and ``seed``. The baseline is the base model with
    ``eval.baseline_adapters`` merged (none by default: π_0). A judge that is the policy itself (``judge=self``)
    is, in evaluation, the baseline: the policy under test never judges its own answers. ``work_dir``: where
    the harness tasks generated for ``eval.harness.files`` go (the output directory).
    """

    def __init__(self, cfg: DictConfig, judge, work_dir: str | Path, sets: EvalSets | None = None):
        self.cfg, self.eval_cfg, self.judge = cfg, cfg.eval, judge
        self.sets = sets or load_eval_sets(cfg.eval, work_dir, cfg.seed)
        self.device = resolve_device(cfg.eval.device)
        self.beta = float(OmegaConf.select(cfg, "dpo.beta", default=1.0))
        self._baseline = None
        self._baseline_values: dict[str, object] = {}  # each part's baseline side, computed once

    def baseline(self):
        if self._baseline is None:
            self._baseline = build_policy(model_config(self.cfg.model, self.eval_cfg.baseline_adapters or []))
        return self._baseline

    def policy(self, adapters: Sequence[str]):
        """``(tokenizer, model)``: the base model with ``adapters`` merged (the baseline itself when they are
        the baseline's: a policy compared with itself is then exactly equal)."""
        if list(adapters) == list(self.eval_cfg.baseline_adapters or []):
            return self.baseline()
        return build_policy(model_config(self.cfg.model, adapters))

    def evaluate(self, tokenizer, policy, description: dict, seen: Sequence[str] | None) -> tuple[dict, list[dict]]:
        """``(results, generations)`` of ``policy`` (a causal LM with the baseline's tokenizer; ``description``
        says what it is, e.g. its adapters); ``seen``: the languages trained on (None: every evaluated
        language counts as seen)."""
        _, baseline = self.baseline()
        languages = self.sets.languages
        seen_set = set(languages if seen is None else seen)
        per_language = {lang: {"seen": lang in seen_set} for lang in languages}
        generations: list[dict] = []
        models = [self._likelihoods(m, tokenizer) for m in (policy, baseline)]
        if self.sets.pairs is not None:
            self._pairs(models, per_language)
        outcomes = None
        if self.sets.prompts is not None:
            outcomes, generations = self._win_rate(policy, baseline, tokenizer, per_language)
        if self.sets.texts is not None:
            self._nll(models, per_language)
        results = {
            "policy": description,
            "baseline": {"adapters": list(self.eval_cfg.baseline_adapters or [])},
            "languages": per_language,
        }
        if self.sets.prompts is not None:  # whose answers the win rate compares the policy's with
            results["baseline"]["win_rate_against"] = self.eval_cfg.win_rate.get("against", "baseline")
        if self.sets.harness is not None and self.sets.harness.tasks:
            results["harness"] = self._harness(policy, baseline, tokenizer, per_language)
        # the seen group is every language trained on (that eval.languages asks for), also one without
        # evaluation rows: the means then say they miss it
        asked = None if self.eval_cfg.languages is None else set(self.eval_cfg.languages)
        groups = {
            "seen": sorted(seen_set if asked is None else seen_set & asked),
            "unseen": [lang for lang in languages if lang not in seen_set],
        }
        for group, langs in groups.items():
            summary = metrics.macro(per_language, langs)
            if "win_rate" in summary and outcomes is not None:
                summary["win_rate_ci"] = list(
                    metrics.bootstrap_ci(
                        [outcomes[lang] for lang in langs if lang in outcomes],
                        self.eval_cfg.win_rate.bootstrap,
                        self.cfg.seed,
                    )
                )
            results[group] = summary
        return results, generations

    # ---- parts ---------------------------------------------------------------------------------------
    def _both(self, part: str, sides: list, compute):
        """``[compute(policy side), compute(baseline side)]``, the baseline's computed once per evaluator
        (it is the same for every policy evaluated against it)."""
        if part not in self._baseline_values:
            self._baseline_values[part] = compute(sides[1])
        return [compute(sides[0]), self._baseline_values[part]]

    def _likelihoods(self, model, tokenizer) -> LikelihoodModel:
        data = self.cfg.data
        return LikelihoodModel(
            model, tokenizer, self.device, self.eval_cfg.batch_size, data.max_length, data.max_prompt_length
        )

    def _pairs(self, models: list[LikelihoodModel], per_language: dict) -> None:
        rows = self.sets.pairs
        (pw, pl_), (bw, bl) = self._both("pairs", models, lambda model: model.pair_logps(rows))
        margins = self.beta * ((pw - bw) - (pl_ - bl))
        for lang, idx in _by_language(rows).items():
            per_language[lang].update(metrics.preference_stats(margins[idx]))

    def _win_rate(self, policy, baseline, tokenizer, per_language: dict) -> tuple[dict, list[dict]]:
        section = self.eval_cfg.win_rate
        prompts = self.sets.prompts
        sampling = Sampling(num_responses=1, **section.generation)
        texts = [p.prompt for p in prompts]

        def answer(model):  # the same seed for both: a policy equal to the baseline answers alike
            pl.seed_everything(self.cfg.seed, verbose=False)
            generator = TextGenerator(
                model,
                tokenizer,
                batch_size=self.eval_cfg.batch_size,
                max_prompt_length=self.cfg.data.max_prompt_length,
                device=str(self.device),
                progress=False,
            )
            return [responses[0] for responses in generator.generate(texts, sampling, desc="eval: generate")]

        if section.get("against", "baseline") == "reference":  # AlpacaEval's reference_outputs
            ours, theirs = answer(policy), [p.reference for p in prompts]
        else:
            ours, theirs = self._both("answers", [policy, baseline], answer)
        judge_generator = TextGenerator(
            baseline, tokenizer, batch_size=self.eval_cfg.batch_size, device=str(self.device), progress=False
        )
        comparisons = [Comparison(p.prompt, p.language, a, b) for p, a, b in zip(prompts, ours, theirs)]
        swapped = [Comparison(p.prompt, p.language, b, a) for p, a, b in zip(prompts, ours, theirs)]
        pl.seed_everything(self.cfg.seed, verbose=False)
        verdicts = self.judge.compare(comparisons + swapped, judge_generator)
        first, second = verdicts[: len(prompts)], verdicts[len(prompts) :]
        outcomes: dict[str, list[list[str]]] = defaultdict(list)
        generations = []
        for p, a, b, v1, v2 in zip(prompts, ours, theirs, first, second):
            judged = [metrics.policy_outcome(v1, True), metrics.policy_outcome(v2, False)]
            detected = detect(a).language
            outcomes[p.language].append([o for o in judged if o is not None])
            generations.append(
                {
                    "id": p.id,
                    "language": p.language,
                    "prompt": p.prompt,
                    "policy": a,
                    "baseline": b,
                    "policy_language": detected,
                    "baseline_language": detect(b).language,
                    "verdict_policy_first": v1,
                    "verdict_policy_second": v2,
                    "outcomes": judged,
                }
            )
        for lang, prompt_outcomes in outcomes.items():
            flat = [o for per_prompt in prompt_outcomes for o in per_prompt]
            low, high = metrics.bootstrap_ci([prompt_outcomes], section.bootstrap, self.cfg.seed)
            rows = [g for g in generations if g["language"] == lang]
            per_language[lang].update(
                {
                    "win_rate": metrics.win_rate(flat),
                    "win_rate_ci": [low, high],
                    "wins": flat.count(metrics.WIN),
                    "ties": flat.count(metrics.TIE),
                    "losses": flat.count(metrics.LOSS),
                    "unjudged": 2 * len(prompt_outcomes) - len(flat),
                    "language_fidelity": sum(same_language(g["policy_language"], lang) for g in rows) / len(rows),
                }
            )
        return outcomes, generations

    def _nll(self, models: list[LikelihoodModel], per_language: dict) -> None:
        texts = self.sets.texts
        (p_nll, counts), (b_nll, _) = self._both("nll", models, lambda model: model.text_nll([t.text for t in texts]))
        for lang, idx in _by_language(texts).items():
            n = counts[idx].sum().clamp(min=1)
            per_language[lang]["nll_delta"] = float((p_nll[idx].sum() - b_nll[idx].sum()) / n)

    def _harness(self, policy, baseline, tokenizer, per_language: dict) -> dict:
        """Per harness task ``{"language", "seen", "metric", "policy", "baseline", "delta", "n"}``; per language
        the means over its tasks and their questions."""
        harness = self.sets.harness
        ours, theirs = self._both(
            "harness", [policy, baseline], lambda model: harness.scores(model, tokenizer, self.device)
        )
        tasks = {}
        for task in harness.tasks:
            mine, base = ours[task.name], theirs[task.name]
            tasks[task.name] = {
                "language": task.language,
                "seen": per_language[task.language]["seen"],
                "metric": mine["metric"],
                "policy": mine["score"],
                "baseline": base["score"],
                "delta": mine["score"] - base["score"],
                "n": mine["n"],
            }
        for lang in harness.languages:
            rows = [t for t in tasks.values() if t["language"] == lang]
            per_language[lang].update(
                {
                    "mc_accuracy": sum(t["policy"] for t in rows) / len(rows),
                    "mc_accuracy_baseline": sum(t["baseline"] for t in rows) / len(rows),
                    "mc_delta": sum(t["delta"] for t in rows) / len(rows),
                    "mc_n": sum(t["n"] for t in rows),
                }
            )
        return tasks


def _by_language(rows: Sequence) -> dict[str, torch.Tensor]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[row.language].append(i)
    return {lang: torch.tensor(idx) for lang, idx in groups.items()}

"""The numbers of an evaluation, from plain values (no models): pairwise outcomes and the win rate with its
bootstrap confidence interval, preference accuracy from reward margins, macro means over languages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from congrad.judging.verdicts import FIRST, SECOND, TIE

WIN, LOSS = "win", "loss"  # a pairwise judgement seen from the policy (TIE is shared)
OUTCOME_VALUE = {WIN: 1.0, TIE: 0.5, LOSS: 0.0}


def policy_outcome(verdict: str | None, policy_shown_first: bool) -> str | None:
    """A judge's verdict on (first, second) as the policy's win, tie or loss; None stays None (unjudged)."""
    if verdict is None or verdict == TIE:
        return verdict
    if verdict not in (FIRST, SECOND):
        raise ValueError(f"unknown verdict {verdict!r}")
    return WIN if (verdict == FIRST) == policy_shown_first else LOSS


def win_rate(outcomes: Sequence[str]) -> float:
    """(wins + ties / 2) / n over judgements (each prompt judged in both orders counts twice)."""
    if not outcomes:
        return float("nan")
    return sum(OUTCOME_VALUE[o] for o in outcomes) / len(outcomes)


def bootstrap_ci(
    groups: Sequence[Sequence[Sequence[str]]], n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of the macro win rate of ``groups`` (one per language; within a language,
    one list of judgement outcomes per prompt). Prompts are resampled with replacement within each
    language — the two orders of one prompt stay together, as they are not independent — and each
    replicate averages the languages' win rates."""
    generator = torch.Generator().manual_seed(seed)
    replicates = torch.zeros(n_boot, dtype=torch.float64)
    used = 0
    for prompts in groups:
        prompts = [p for p in prompts if p]
        if not prompts:
            continue
        sums = torch.tensor([sum(OUTCOME_VALUE[o] for o in p) for p in prompts], dtype=torch.float64)
        counts = torch.tensor([len(p) for p in prompts], dtype=torch.float64)
        picks = torch.randint(len(prompts), (n_boot, len(prompts)), generator=generator)
        replicates += sums[picks].sum(1) / counts[picks].sum(1)
        used += 1
    if not used:
        return float("nan"), float("nan")
    replicates /= used
    alpha = (1 - level) / 2
    low, high = torch.quantile(replicates, torch.tensor([alpha, 1 - alpha], dtype=torch.float64)).tolist()
    return low, high


def preference_stats(margins: torch.Tensor) -> dict[str, float]:
    """From reward margins of held-out pairs (chosen − rejected implicit rewards): the share with chosen
    ahead (a tie, margin exactly 0, is not ahead), the number of ties, the mean margin."""
    return {
        "n_pairs": int(margins.numel()),
        "preference_accuracy": float((margins > 0).double().mean()),
        "preference_ties": int((margins == 0).sum()),
        "reward_margin": float(margins.double().mean()),
    }


SUMMED = ("n_pairs", "preference_ties", "wins", "ties", "losses", "mc_n")  # counts add up over languages


def macro(per_language: Mapping[str, Mapping[str, float]], languages: Sequence[str]) -> dict:
    """Macro means over a group of ``languages`` (the seen or the unseen ones) of every metric, each over the
    languages that have it (counts are summed instead), with ``"languages"``: how many the group has, and
    ``"missing"``: ``{metric: [codes]}`` for every metric some of them lack (a language with no held-out
    prompts has no win rate, one without rows at all has nothing), so a mean over fewer languages than its
    group says so. ``seen`` is left out, and CI entries are not averaged (the macro CI is computed by
    :func:`bootstrap_ci` on the prompts of the languages that have them) but their missing languages count."""
    if not languages:
        return {}
    rows = {lang: per_language.get(lang, {}) for lang in languages}
    keys = list(dict.fromkeys(k for row in rows.values() for k in row if k != "seen"))
    out: dict = {}
    missing = {}
    for key in keys:
        having = [lang for lang in languages if key in rows[lang]]
        if len(having) < len(languages):
            missing[key] = [lang for lang in languages if key not in rows[lang]]
        if key == "win_rate_ci":
            continue
        values = [float(rows[lang][key]) for lang in having]
        out[key] = sum(values) if key in SUMMED else sum(values) / len(values)
    out["languages"] = len(languages)
    if missing:
        out["missing"] = missing
    return out

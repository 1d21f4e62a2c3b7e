"""Best vs. worst response per prompt (step 3 of a self-rewarding iteration; README, "How it works")."""

from __future__ import annotations

from collections.abc import Sequence

TOO_FEW, TIE, SMALL_GAP, IDENTICAL = "too_few", "tie", "small_gap", "identical"
NO_PAIR_REASONS = (TOO_FEW, TIE, SMALL_GAP, IDENTICAL)


def best_vs_worst(
    responses: Sequence[str], scores: Sequence[float | None], min_score_gap: float
) -> tuple[tuple[int, int] | None, str | None]:
    """``((chosen, rejected), None)``: the indices of the best and the worst scored response (the first of
    equals); or ``(None, reason)``: fewer than two scored responses, a tie, a gap under ``min_score_gap``,
    or the same text on both sides."""
    scored = [i for i, score in enumerate(scores) if score is not None]
    if len(scored) < 2:
        return None, TOO_FEW
    best = max(scored, key=lambda i: scores[i])
    worst = min(scored, key=lambda i: scores[i])
    gap = scores[best] - scores[worst]
    if gap == 0:
        return None, TIE
    if gap < min_score_gap:
        return None, SMALL_GAP
    if responses[best] == responses[worst]:
        return None, IDENTICAL
    return (best, worst), None

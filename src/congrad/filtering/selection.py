"""Score candidate pairs by the cosine of their sketch with a direction, and choose which to keep."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor

from congrad.filtering.aggregates import LanguageAggregates, language_rows
from congrad.utils.schema import Settings, show

BELOW_THRESHOLD = "below threshold"
BELOW_KEEP_RATIO = "below keep_ratio cut"


class SelectionSettings(Settings):
    """The kept set's keys of the ``filter`` group: one rule (``keep_ratio`` or ``threshold``) and a floor."""

    group: ClassVar[str] = "filter"
    keep_ratio: Annotated[float, Field(gt=0, le=1)] | None
    threshold: Annotated[float, Field(ge=-1, le=1)] | None
    per_language: bool
    min_per_language: Annotated[int, Field(ge=0)]

    @classmethod
    def relations(cls, values: dict[str, Any]) -> Iterator[str]:
        if "keep_ratio" in values and "threshold" in values:
            keep_ratio, threshold = values["keep_ratio"], values["threshold"]
            if (keep_ratio is None) == (threshold is None):
                yield (
                    f"filter.keep_ratio={show(keep_ratio)}, filter.threshold={show(threshold)}: set exactly one "
                    "of them (keep_ratio in (0, 1] keeps the best share; threshold in [-1, 1] keeps scores above "
                    "it), the other to null"
                )


def cosine_scores(sketches: Tensor, direction: Tensor) -> Tensor:
    """cos(ĝ_i, direction) for sketches [N, w] and a direction [w] -> [N]; a zero vector scores 0."""
    return torch.mv(_unit(sketches), _unit(direction))


def own_language_scores(sketches: Tensor, languages: Sequence[str], aggregates: LanguageAggregates) -> Tensor:
    """Aggregator ``none``: each sketch's cosine with its own language's aggregate -> [N]."""
    codes = aggregates.languages
    missing = sorted(set(languages) - set(codes))
    if missing:
        raise ValueError(f"no aggregate for language(s) {', '.join(missing)}; have {', '.join(codes)}")
    matrix = aggregates.matrix().to(sketches.device)
    scores = sketches.new_zeros(sketches.shape[0], dtype=torch.float32)
    for lang, rows in language_rows(languages, sketches.device).items():
        scores[rows] = cosine_scores(sketches[rows], matrix[codes.index(lang)]).float()
    return scores


def select(
    scores: Tensor,
    languages: Sequence[str],
    *,
    keep_ratio: float | None = None,
    threshold: float | None = None,
    per_language: bool = False,
    min_per_language: int = 0,
) -> Tensor:
    """The kept mask [N] (bool) of pairs with ``scores`` [N] and ``languages``.

    Exactly one rule: ``keep_ratio`` keeps the ceil(keep_ratio·n) best of the n pairs (all pairs, or each
    language's own when ``per_language``); ``threshold`` keeps s > threshold. The floor then also keeps each
    language's ``min_per_language`` best pairs (all of them if it has fewer). "Best" is by score descending,
    then index ascending, so equal scores always resolve the same way.
    """
    SelectionSettings.check(keep_ratio=keep_ratio, threshold=threshold, min_per_language=min_per_language)
    if scores.ndim != 1 or scores.shape[0] != len(languages):
        raise ValueError(f"expected scores [N] with N = {len(languages)} languages, got {tuple(scores.shape)}")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    groups = language_rows(languages, scores.device)
    if threshold is not None:
        kept = scores > threshold
    else:
        kept = torch.zeros_like(scores, dtype=torch.bool)
        pools = groups.values() if per_language else [torch.arange(len(scores), device=scores.device)]
        for rows in pools:
            kept[_best(scores, rows, _keep_count(keep_ratio, len(rows)))] = True
    for rows in groups.values():
        kept[_best(scores, rows, min_per_language)] = True
    return kept


def drop_reason(*, keep_ratio: float | None = None, threshold: float | None = None) -> str:
    """Why :func:`select` with these settings dropped a pair (the floor only ever adds pairs)."""
    return BELOW_THRESHOLD if _rule(keep_ratio, threshold) == "threshold" else BELOW_KEEP_RATIO


def _rule(keep_ratio: float | None, threshold: float | None) -> str:
    SelectionSettings.check(keep_ratio=keep_ratio, threshold=threshold)
    return "threshold" if threshold is not None else "keep_ratio"


def _keep_count(keep_ratio: float, n: int) -> int:
    # rounded first so that e.g. 0.3·10 = 3.0000000000000004 keeps 3, not 4
    return math.ceil(round(keep_ratio * n, 9))


def _best(scores: Tensor, rows: Tensor, k: int) -> Tensor:
    """The k best of ``rows`` (ascending indices); a stable descending sort keeps ties in index order."""
    order = torch.sort(scores[rows], descending=True, stable=True).indices
    return rows[order[:k]]


def _unit(x: Tensor) -> Tensor:
    """x scaled to unit norm along the last dimension; a zero vector stays zero."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return x / torch.where(norm > 0, norm, 1.0)

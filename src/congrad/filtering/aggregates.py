"""Per-language aggregate of the sketches: an EMA, over epochs, of each language's mean sketch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, ClassVar

import torch
from pydantic import Field
from torch import Tensor

from congrad.utils.schema import Settings


class AggregateSettings(Settings):
    """The aggregates' key of the ``filter`` group."""

    group: ClassVar[str] = "filter"
    ema: Annotated[float, Field(ge=0, lt=1)]


class LanguageAggregates:
    """m_ℓ ← γ·m_ℓ + (1−γ)·mean of this epoch's sketches of language ℓ, with γ = ``ema``.

    One epoch's scoring pass feeds every sketch through :meth:`add` (in batches); :meth:`finish_epoch`
    then folds the pass's per-language means into the EMA. A language seen for the first time starts at its
    mean (no shrinking toward zero); a language absent from the pass keeps its old aggregate. γ = 0 makes
    m_ℓ the latest mean. Sums are float32 on the sketches' device; each language's rows are reduced with a
    plain ``sum`` (no atomics), so ranks that add the same sketches hold bit-identical aggregates.
    """

    def __init__(self, ema: float = 0.0):
        AggregateSettings.check(ema=ema)
        self.ema = ema
        self._means: dict[str, Tensor] = {}
        self._sums: dict[str, Tensor] = {}
        self._counts: dict[str, int] = {}

    @property
    def languages(self) -> list[str]:
        """Codes that have an aggregate, sorted: the row order of :meth:`matrix`."""
        return sorted(self._means)

    def matrix(self) -> Tensor:
        """The aggregates as rows [L, w], in :attr:`languages` order ([0, 0] before any epoch finished)."""
        if not self._means:
            return torch.empty(0, 0)
        return torch.stack([self._means[lang] for lang in self.languages])

    def add(self, sketches: Tensor, languages: Sequence[str]) -> None:
        """Accumulate a batch of sketches [B, w] whose languages are ``languages`` (length B)."""
        if sketches.ndim != 2 or sketches.shape[0] != len(languages):
            raise ValueError(
                f"expected sketches [B, w] with B = {len(languages)} languages, got {tuple(sketches.shape)}"
            )
        for lang, rows in language_rows(languages, sketches.device).items():
            batch_sum = sketches[rows].sum(0, dtype=torch.float32)
            self._sums[lang] = self._sums[lang] + batch_sum if lang in self._sums else batch_sum
            self._counts[lang] = self._counts.get(lang, 0) + len(rows)

    def finish_epoch(self) -> None:
        """Fold this pass's means into the aggregates and start a new pass."""
        for lang, total in self._sums.items():
            epoch_mean = total / self._counts[lang]
            old = self._means.get(lang)
            self._means[lang] = epoch_mean if old is None else self.ema * old + (1.0 - self.ema) * epoch_mean
        self._sums.clear()
        self._counts.clear()

    def state_dict(self) -> dict:
        """Languages and aggregates, between passes (``ema`` is configuration and stays with the caller)."""
        if self._sums:
            raise RuntimeError("a scoring pass is in progress; call finish_epoch() before state_dict()")
        return {"languages": self.languages, "means": self.matrix()}

    def load_state_dict(self, state: dict) -> None:
        if len(state["languages"]) != state["means"].shape[0]:
            raise ValueError("state_dict: one aggregate row per language expected")
        self._means = dict(zip(state["languages"], state["means"].unbind(0)))
        self._sums.clear()
        self._counts.clear()


def language_rows(languages: Sequence[str], device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """Language -> the ascending indices of its entries in ``languages``, as a LongTensor on ``device``."""
    rows: dict[str, list[int]] = {}
    for i, lang in enumerate(languages):
        rows.setdefault(lang, []).append(i)
    return {lang: torch.tensor(idx, device=device) for lang, idx in rows.items()}

"""Per-language means of per-pair metrics over an epoch, reduced across ranks before logging."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch


class LanguageMeans:
    """Running sums and counts of per-pair metrics, overall and per language.

    Languages are fixed at construction so every rank holds the same tensors and the cross-rank sum is a
    plain all-reduce; a language that no pair of this epoch had is left out of :meth:`compute`.
    """

    def __init__(self, names: Sequence[str], languages: Sequence[str]):
        self.names = list(names)
        self.languages = list(languages)
        self._row = {lang: i for i, lang in enumerate(self.languages)}
        self.sums = torch.zeros(len(self.languages), len(self.names), dtype=torch.float64)
        self.counts = torch.zeros(len(self.languages), dtype=torch.float64)

    def update(self, languages: Sequence[str], values: Mapping[str, torch.Tensor]) -> None:
        stacked = torch.stack([values[n].detach().double().cpu() for n in self.names], dim=1)  # [B, M]
        unknown = set(languages) - self._row.keys()
        if unknown:
            raise KeyError(f"languages {sorted(unknown)} are not among the tracked {self.languages}")
        rows = torch.tensor([self._row[lang] for lang in languages])
        self.sums.index_add_(0, rows, stacked)
        self.counts.index_add_(0, rows, torch.ones(len(rows), dtype=torch.float64))

    def compute(
        self, reduce_sum: Callable[[torch.Tensor], torch.Tensor] = lambda t: t, overall: bool = True
    ) -> dict[str, float]:
        """``{"<name>": mean, "<name>/<lang>": mean}`` (the overall means only with ``overall``);
        ``reduce_sum`` sums a tensor over ranks."""
        sums, counts = reduce_sum(self.sums.clone()), reduce_sum(self.counts.clone())
        out: dict[str, float] = {}
        if overall and counts.sum() > 0:
            for j, name in enumerate(self.names):
                out[name] = float(sums[:, j].sum() / counts.sum())
        for i, lang in enumerate(self.languages):
            if counts[i] > 0:
                for j, name in enumerate(self.names):
                    out[f"{name}/{lang}"] = float(sums[i, j] / counts[i])
        return out

    def reset(self) -> None:
        self.sums.zero_()
        self.counts.zero_()

"""The ConGrad method on a set of candidate sketches, one pass at a time: aggregate per language, resolve
conflicts into a consensus, score every candidate, select (README, "How it works").

:class:`ConGrad` holds the state that lives across epochs (the per-language EMA aggregates and the
number of passes, which seeds the surgery order); a checkpoint stores it through ``state_dict``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from congrad.errors import NonFiniteError
from congrad.filtering.aggregates import LanguageAggregates
from congrad.filtering.selection import cosine_scores, drop_reason, own_language_scores, select
from congrad.filtering.surgery import consensus, cosine_matrix


@dataclass
class PassResult:
    """Scores and the kept mask of one pass, with what explains them."""

    scores: Tensor  # [N] float32
    kept: Tensor  # [N] bool
    languages: list[str]  # [N]
    aggregate_languages: list[str]  # [L], rows of the matrices
    cosine_before: Tensor  # [L, L] cosines of the aggregates
    cosine_after: Tensor  # [L, L] cosines of the per-language vectors after surgery
    drop_reason: str
    settings: dict = field(default_factory=dict)

    def per_language(self) -> dict[str, dict]:
        """``{lang: {"total", "kept", "score_mean"}}`` in sorted language order."""
        out = {}
        for lang in sorted(set(self.languages)):
            rows = torch.tensor([i for i, code in enumerate(self.languages) if code == lang])
            out[lang] = {
                "total": len(rows),
                "kept": int(self.kept[rows].sum()),
                "score_mean": float(self.scores[rows].mean()),
            }
        return out


class ConGrad:
    def __init__(
        self,
        aggregator: str = "pcgrad",
        keep_ratio: float | None = 0.75,
        threshold: float | None = None,
        per_language: bool = False,
        min_per_language: int = 1,
        ema: float = 0.0,
        gradvac_target: float = 0.0,
        normalize: bool = True,
        seed: int = 0,
    ):
        self.aggregator = aggregator
        self.normalize = normalize
        self.selection = dict(keep_ratio=keep_ratio, threshold=threshold, per_language=per_language,
                              min_per_language=min_per_language)
        drop_reason(keep_ratio=keep_ratio, threshold=threshold)  # validates the rule now, not after a pass
        self.options = {"target": gradvac_target} if aggregator == "gradvac" else {}
        self.seed = seed
        self.aggregates = LanguageAggregates(ema=ema)
        self.passes = 0

    def settings(self) -> dict:
        return {"aggregator": self.aggregator, **self.selection, "ema": self.aggregates.ema, **self.options,
                "normalize": self.normalize, "seed": self.seed}

    def step(self, sketches: Tensor, languages: Sequence[str]) -> PassResult:
        """Fold ``sketches`` [N, w] into the aggregates, build the consensus, score and select all N.

        With ``normalize`` every pair enters its language's aggregate at unit norm (one vote per pair). The
        scores are cosines and do not depend on a pair's norm either way, but the aggregates do: once the
        policy has fit most pairs, a pair's DPO gradient is scaled by σ(−h), so the pairs the policy still
        gets wrong (e.g. mislabelled ones) carry most of the norm and steer the consensus toward themselves
        (README, "Results").
        """
        sketches = sketches.float()
        _check_finite(sketches, languages)
        votes = sketches / sketches.norm(dim=1, keepdim=True).clamp(min=1e-12) if self.normalize else sketches
        self.aggregates.add(votes, languages)
        self.aggregates.finish_epoch()
        matrix = self.aggregates.matrix().to(sketches.device)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.passes)
        direction, projected = consensus(matrix, self.aggregator, generator, **self.options)
        self.passes += 1
        if self.aggregator == "random":  # the control arm: same keep rule, scores unrelated to gradients
            scores = torch.rand(len(languages), generator=generator)
        elif direction is None:
            scores = own_language_scores(sketches, languages, self.aggregates)
        else:
            scores = cosine_scores(sketches, direction)
        scores = scores.float().cpu()
        kept = select(scores, list(languages), **self.selection)
        return PassResult(
            scores=scores,
            kept=kept,
            languages=list(languages),
            aggregate_languages=self.aggregates.languages,
            cosine_before=cosine_matrix(matrix).cpu(),
            cosine_after=cosine_matrix(projected).cpu(),
            drop_reason=drop_reason(keep_ratio=self.selection["keep_ratio"], threshold=self.selection["threshold"]),
            settings=self.settings(),
        )

    def state_dict(self) -> dict:
        return {"aggregates": self.aggregates.state_dict(), "passes": self.passes, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.aggregates.load_state_dict(state["aggregates"])
        self.passes = state["passes"]
        self.seed = state["seed"]


def _check_finite(sketches: Tensor, languages: Sequence[str]) -> None:
    """A NaN or infinite pair gradient means the policy has diverged: say so instead of scoring garbage."""
    finite = torch.isfinite(sketches).all(dim=1)
    if bool(finite.all()):
        return
    bad = (~finite).nonzero().flatten().tolist()
    codes = ", ".join(sorted({languages[i] for i in bad}))
    raise NonFiniteError(
        f"the ConGrad pass got non-finite gradients for {len(bad)} of {len(languages)} pairs (languages {codes}): "
        "the policy's weights have diverged (or were loaded that way). Look at dpo.optimizer.lr, "
        "trainer.gradient_clip_val and trainer.precision, or at the weights of model.lora.adapter_path"
    )

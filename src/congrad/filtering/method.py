"""The ConGrad method on a set of candidate sketches, one pass at a time: aggregate per language, resolve
conflicts into a consensus, score every candidate, select (README, "How it works").

:class:`ConGrad` holds the state that lives across epochs (the per-language EMA aggregates and the
number of passes, which seeds the surgery order); a checkpoint stores it through ``state_dict``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from congrad.errors import CongradError, NonFiniteError
from congrad.filtering.aggregates import AggregateSettings, LanguageAggregates
from congrad.filtering.selection import SelectionSettings, cosine_scores, drop_reason, own_language_scores, select
from congrad.filtering.surgery import SurgerySettings, consensus, cosine_matrix

# A pair whose sketch norm is at most ROUNDING_LEVEL times the median norm of its pass has no preference
# signal: it gets no vote and no score, and is dropped (NO_SIGNAL). A pair's DPO gradient is
# β·σ(−h)·(∇log π(y_w|x) − ∇log π(y_l|x)) (the reference terms have no gradient); where the two completions
# are the same tokens (equal texts, or texts that truncation cut to the same start) the difference is zero
# and float32 leaves rounding of its two terms: about 1e-7 of their size (measured: 1e-7 against a median
# of 1.4), which one vote per pair (normalize) would otherwise turn into a full vote and a score like a real
# pair's. A real pair falls under 1e-5 of the median only when its weight σ(−h) is under 1e-5 of the median
# pair's, i.e. its margin h is at least 11.5 above the median's: a pair the policy already fits so well that
# training on it changes nothing either. The median, not the mean or the maximum, so that a few pairs with
# huge gradients (the ones the policy gets most wrong) do not move the bar; 1e-5 is 84 float32 epsilons,
# well above rounding and well below any pair that still trains.
ROUNDING_LEVEL = 1e-5
NO_SIGNAL = (
    "no preference signal: its gradient is at rounding level (chosen and rejected are the same tokens, or the policy"
    " already fits the pair so well that training on it changes nothing)"
)


@dataclass
class PassResult:
    """Scores and the kept mask of one pass, with what explains them."""

    scores: Tensor  # [N] float32; NaN for a pair without a preference signal (no score)
    kept: Tensor  # [N] bool
    languages: list[str]  # [N]
    aggregate_languages: list[str]  # [L], rows of the matrices
    cosine_before: Tensor  # [L, L] cosines of the aggregates
    cosine_after: Tensor  # [L, L] cosines of the per-language vectors after surgery
    drop_reason: str  # why a scored pair was not kept
    settings: dict = field(default_factory=dict)
    no_signal: Tensor | None = None  # [N] bool: pairs without a preference signal (ROUNDING_LEVEL); None: none

    def reason(self, i: int) -> str | None:
        """Why pair ``i`` was not kept (None when it was)."""
        if bool(self.kept[i]):
            return None
        return NO_SIGNAL if self.no_signal is not None and bool(self.no_signal[i]) else self.drop_reason

    def score(self, i: int) -> float | None:
        value = float(self.scores[i])
        return None if math.isnan(value) else value

    def per_language(self) -> dict[str, dict]:
        """``{lang: {"total", "kept", "no_signal", "score_mean"}}`` in sorted language order; ``score_mean``
        over the scored pairs (None when none was)."""
        out = {}
        for lang in sorted(set(self.languages)):
            rows = torch.tensor([i for i, code in enumerate(self.languages) if code == lang])
            scores = self.scores[rows]
            scored = scores[~torch.isnan(scores)]
            out[lang] = {
                "total": len(rows),
                "kept": int(self.kept[rows].sum()),
                "no_signal": int(torch.isnan(scores).sum()),
                "score_mean": float(scored.mean()) if len(scored) else None,
            }
        return out


class FilterSettings(SurgerySettings, SelectionSettings, AggregateSettings):
    """The ``filter`` group: the arguments of :class:`ConGrad`."""

    group: ClassVar[str] = "filter"
    normalize: bool
    seed: int


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
        FilterSettings.check(
            aggregator=aggregator,
            keep_ratio=keep_ratio,
            threshold=threshold,
            per_language=per_language,
            min_per_language=min_per_language,
            ema=ema,
            gradvac_target=gradvac_target,
            normalize=normalize,
            seed=seed,
        )
        self.aggregator = aggregator
        self.normalize = normalize
        self.selection = dict(
            keep_ratio=keep_ratio, threshold=threshold, per_language=per_language, min_per_language=min_per_language
        )
        self.options = {"target": gradvac_target} if aggregator == "gradvac" else {}
        self.seed = seed
        self.aggregates = LanguageAggregates(ema=ema)
        self.passes = 0

    def settings(self) -> dict:
        return {
            "aggregator": self.aggregator,
            **self.selection,
            "ema": self.aggregates.ema,
            **self.options,
            "normalize": self.normalize,
            "seed": self.seed,
        }

    def step(self, sketches: Tensor, languages: Sequence[str]) -> PassResult:
        """Fold ``sketches`` [N, w] into the aggregates, build the consensus, score and select all N.

        With ``normalize`` every pair enters its language's aggregate at unit norm (one vote per pair). The
        scores are cosines and do not depend on a pair's norm either way, but the aggregates do: once the
        policy has fit most pairs, a pair's DPO gradient is scaled by σ(−h), so the pairs the policy still
        gets wrong (e.g. mislabelled ones) carry most of the norm and steer the consensus toward themselves
        (docs/results.md).
        """
        sketches = sketches.float()
        _check_finite(sketches, languages)
        no_signal = without_signal(sketches)
        signal = (~no_signal).nonzero().flatten()
        if len(signal) == 0:
            raise CongradError(
                f"none of the {len(languages)} pairs has a DPO gradient above rounding level in the sketched "
                "parameters (sketch.params): nothing to score. Are chosen and rejected the same texts, or do the "
                "selected parameters get no gradient from the loss?"
            )
        kept_sketches = sketches[signal.to(sketches.device)]
        kept_languages = [languages[i] for i in signal.tolist()]
        if self.normalize:
            votes = kept_sketches / kept_sketches.norm(dim=1, keepdim=True)
        else:
            votes = kept_sketches
        self.aggregates.add(votes, kept_languages)
        self.aggregates.finish_epoch()
        matrix = self.aggregates.matrix().to(sketches.device)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.passes)
        direction, projected = consensus(matrix, self.aggregator, generator, **self.options)
        self.passes += 1
        if self.aggregator == "random":  # the control arm: same keep rule, scores unrelated to gradients
            scored = torch.rand(len(signal), generator=generator)
        elif direction is None:
            scored = own_language_scores(kept_sketches, kept_languages, self.aggregates)
        else:
            scored = cosine_scores(kept_sketches, direction)
        scores = torch.full((len(languages),), math.nan)
        scores[signal] = scored.float().cpu()
        kept = torch.zeros(len(languages), dtype=torch.bool)
        kept[signal] = select(scores[signal], kept_languages, **self.selection)
        return PassResult(
            no_signal=no_signal.cpu(),
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


def without_signal(sketches: Tensor) -> Tensor:
    """[N] bool: the sketches [N, w] whose norm is at most :data:`ROUNDING_LEVEL` times the pass's median
    norm (a zero sketch always)."""
    norms = torch.linalg.vector_norm(sketches, dim=1, dtype=torch.float64)
    return norms <= ROUNDING_LEVEL * norms.median()


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

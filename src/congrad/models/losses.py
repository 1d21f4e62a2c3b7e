"""Preference losses on sequence log-probabilities (DPO and its variants).

All inputs are per-pair sequence log-probabilities, i.e. the SUM of the completion tokens' log-probs (TRL's
convention). With Δ = (pi_w - ref_w) - (pi_l - ref_l) and the length term of LP-DPO,

    h = beta * Δ + length_penalty * (|y_w| - |y_l|)

the loss types are
    sigmoid  -(1 - eps) * log σ(h) - eps * log σ(-h)                    (DPO; eps = label smoothing, cDPO)
    robust   (-(1 - eps) * log σ(h) + eps * log σ(-h)) / (1 - 2 eps)     (Chowdhury et al. 2024)
    ipo      (h / beta - 1 / (2 beta))^2                                 (Azar et al. 2023)

where IPO replaces each log-ratio by its per-token average, (pi - ref) / |y|, as TRL does (the squared loss
would otherwise grow with the completion length).

The length penalty is LP-DPO / R-DPO (Park et al. 2024). R-DPO maximises E[r - α|y|] - beta * KL, so the
implicit reward is beta * log-ratio + α|y| and the length term is ADDED inside the sigmoid: a pair whose
chosen answer is longer starts with a larger margin and gets less gradient, so the policy is not pushed
towards longer answers merely because the chosen ones tend to be longer.

``label_smoothing`` (eps) with ``sigmoid`` is conservative DPO (cDPO, Mitchell 2023): each label is taken
to be flipped with probability eps. TRL 1.16 differs here: its ``sigmoid`` ignores ``label_smoothing``
(TRL uses it for ``robust``, where it means the same as ours, and for ``exo_pair``).
"""

from __future__ import annotations

import typing
from typing import Annotated, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from congrad.utils.schema import Settings

LossType = Literal["sigmoid", "ipo", "robust"]
LOSS_TYPES = typing.get_args(LossType)


class LossSettings(Settings):
    """The loss's keys of the ``dpo`` group."""

    group: ClassVar[str] = "dpo"
    beta: Annotated[float, Field(gt=0)]
    loss_type: LossType
    label_smoothing: Annotated[float, Field(ge=0, lt=0.5)]
    length_penalty: Annotated[float, Field(ge=0)]


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    length_penalty: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Per-pair preference losses ``[B]`` (not reduced).

    ``chosen_lengths`` / ``rejected_lengths`` (completion tokens per pair) are needed by the length penalty
    and by ``ipo``.
    """
    LossSettings.check(beta=beta, loss_type=loss_type, label_smoothing=label_smoothing)
    if (length_penalty or loss_type == "ipo") and (chosen_lengths is None or rejected_lengths is None):
        raise ValueError("length_penalty and loss_type='ipo' need chosen_lengths and rejected_lengths")
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    if loss_type == "ipo":
        chosen_logratios = chosen_logratios / chosen_lengths.clamp(min=1).to(chosen_logratios.dtype)
        rejected_logratios = rejected_logratios / rejected_lengths.clamp(min=1).to(rejected_logratios.dtype)
    h = beta * (chosen_logratios - rejected_logratios)
    if length_penalty:
        h = h + length_penalty * (chosen_lengths - rejected_lengths).to(h.dtype)
    if loss_type == "sigmoid":
        return -(1 - label_smoothing) * F.logsigmoid(h) - label_smoothing * F.logsigmoid(-h)
    if loss_type == "robust":
        return (-(1 - label_smoothing) * F.logsigmoid(h) + label_smoothing * F.logsigmoid(-h)) / (
            1 - 2 * label_smoothing
        )
    return (h / beta - 1 / (2 * beta)) ** 2


def implicit_rewards(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO's implicit reward beta * (log pi - log ref) of summed log-probs, the quantity TRL logs as
    ``rewards/*`` (for every loss type, IPO included)."""
    return beta * (policy_logps - ref_logps).detach()

"""Preference losses on sequence log-probabilities (DPO and its variants).

All inputs are per-pair sequence log-probabilities, i.e. the SUM of the completion tokens' log-probs (TRL's
convention). With policy and reference log-ratios

    h = beta * ((pi_w - ref_w) - (pi_l - ref_l)) - length_penalty * (|y_w| - |y_l|)

the loss types are
    sigmoid  -(1 - eps) * log σ(h) - eps * log σ(-h)                    (DPO; eps = label smoothing, cDPO)
    robust   (-(1 - eps) * log σ(h) + eps * log σ(-h)) / (1 - 2 eps)     (Chowdhury et al. 2024)
    ipo      (h / beta - 1 / (2 beta))^2                                 (Azar et al. 2023)

The length penalty is LP-DPO / R-DPO (Park et al. 2024): it is subtracted inside the sigmoid, so a chosen
response does not win just by being longer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from congrad.errors import ConfigError

LOSS_TYPES = ("sigmoid", "ipo", "robust")


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
    """Per-pair preference losses ``[B]`` (not reduced)."""
    if loss_type not in LOSS_TYPES:
        raise ConfigError(f"dpo.loss_type must be one of {', '.join(LOSS_TYPES)}, got {loss_type!r}")
    if beta <= 0:
        raise ConfigError(f"dpo.beta must be > 0, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ConfigError(f"dpo.label_smoothing must be in [0, 0.5), got {label_smoothing}")
    logits = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    h = beta * logits
    if length_penalty:
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("length_penalty needs chosen_lengths and rejected_lengths")
        h = h - length_penalty * (chosen_lengths - rejected_lengths).to(h.dtype)
    if loss_type == "sigmoid":
        return -(1 - label_smoothing) * F.logsigmoid(h) - label_smoothing * F.logsigmoid(-h)
    if loss_type == "robust":
        return (-(1 - label_smoothing) * F.logsigmoid(h) + label_smoothing * F.logsigmoid(-h)) / (
            1 - 2 * label_smoothing
        )
    return (h / beta - 1 / (2 * beta)) ** 2


def implicit_rewards(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO's implicit reward beta * (log pi - log ref), the quantity TRL logs as ``rewards/*``."""
    return beta * (policy_logps - ref_logps).detach()

"""Public import path of the preference losses (``congrad.losses.dpo_loss``); see :mod:`congrad.models.losses`."""

from congrad.models.losses import LOSS_TYPES, dpo_loss, implicit_rewards

__all__ = ["LOSS_TYPES", "dpo_loss", "implicit_rewards"]

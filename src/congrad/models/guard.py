"""Stop a fit whose loss or gradient stops being finite, and warn when the weights blow up.

:class:`NonFiniteGuard` is part of every DPO fit (:meth:`congrad.models.DPOModule.configure_callbacks`):

- before each backward it notes whether the loss is finite, and the languages of the batch;
- before each optimizer step (after backward, before gradient clipping) it checks the loss and the global
  norm of the gradients, decided alike on every rank. ``dpo.on_nonfinite=error`` (the default) raises
  :class:`~congrad.errors.NonFiniteError`: the run stops with a message naming the step, the languages of
  the batch and the settings to look at, and exits 3. Nothing is written after it: Lightning saves no
  checkpoint on an exception and the adapter is saved only at the end of a finished fit, so the last good
  checkpoint and adapter stay as they were. ``dpo.on_nonfinite=skip`` drops the step's gradients instead
  (the optimizer step changes nothing), counts the skipped steps and logs the count as
  ``train/skipped_steps``;
- after each optimizer step it compares the norm of the trainable weights with their norm when training
  started: at :data:`WEIGHT_GROWTH` times (100×) or more it warns (and again at each further 100×), since
  weights can blow up without a NaN (a learning rate of 1e9 drives LoRA weights to 1e9 with a frozen loss);
- at the end of every validation and of every training epoch, before the epoch's checkpoint and (after the
  last epoch) the adapter are written, a non-finite validation loss, non-finite weights or weights past that
  bound stop the run with :class:`~congrad.errors.NonFiniteError` (exit 3), whatever ``dpo.on_nonfinite``
  says: that setting skips single steps, and a policy that diverged on a step that was not skipped (the last
  one, say) is never saved as a trained one. The epoch's checkpoint is not written either, so the last
  checkpoint is the last epoch that ended sound.

Norms are computed in float64: in float32 the squares of weights around 1e19 overflow.

Under ``16-mixed`` precision the gradient scaler expects and skips steps with infinite gradients itself,
so only the loss is checked there.
"""

from __future__ import annotations

import logging
import math
import typing
from collections.abc import Sequence
from typing import ClassVar, Literal

import pytorch_lightning as pl
import torch

from congrad.errors import NonFiniteError
from congrad.utils.schema import Settings

log = logging.getLogger(__name__)

OnNonfinite = Literal["error", "skip"]
ON_NONFINITE = typing.get_args(OnNonfinite)
WEIGHT_GROWTH = 100.0


class GuardSettings(Settings):
    """The guard's key of the ``dpo`` group."""

    group: ClassVar[str] = "dpo"
    on_nonfinite: OnNonfinite


class NonFiniteGuard(pl.Callback):
    def __init__(self, on_nonfinite: str = "error"):
        GuardSettings.check(on_nonfinite=on_nonfinite)
        self.on_nonfinite = on_nonfinite
        self.skipped = 0
        self._languages: list[str] = []
        self._losses: list[torch.Tensor] = []  # the losses since the last optimizer step (accumulation)
        self._stepped = False
        self._initial_norm: float | None = None
        self._warn_at = WEIGHT_GROWTH

    # ---- per batch ------------------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._initial_norm = _norm(_trainable(pl_module))
        self._warn_at = WEIGHT_GROWTH

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._languages.extend(batch.get("language", ()) if isinstance(batch, dict) else ())

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        self._losses.append(loss.detach().float().sum())

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        """One synchronisation per step: the check is a tensor until the ranks agree on it."""
        params = _trainable(pl_module)
        losses, self._losses = self._losses, []
        languages, self._languages = self._languages, []
        self._stepped = True
        loss = torch.stack(losses).sum() if losses else torch.zeros((), device=pl_module.device)
        grads = [p.grad for p in params if p.grad is not None]
        grad_norm = _norm_tensor(grads) if grads and not _scaler_handles_inf(trainer) else torch.zeros_like(loss)
        bad = (~torch.isfinite(loss) | ~torch.isfinite(grad_norm)).float()
        if not float(trainer.strategy.reduce(bad, reduce_op="sum")):  # every rank decides alike
            return
        loss, grad_norm = float(loss), float(grad_norm)
        what = (
            f"the loss is {loss}"
            if not math.isfinite(loss)
            else f"the gradient norm is {grad_norm}"
            if not math.isfinite(grad_norm)
            else "the loss or gradient of another rank is not finite"
        )
        where = (
            f"step {trainer.global_step} (epoch {trainer.current_epoch}, batch "
            f"{trainer.fit_loop.epoch_loop.batch_idx}) on a batch of {_describe(languages)}"
        )
        if self.on_nonfinite == "error":
            raise NonFiniteError(
                f"training diverged at {where}: {what}. Nothing was saved after it{_last_good(trainer)}. "
                f"Look at {_settings_now(trainer)}; dpo.on_nonfinite=skip skips such steps instead."
            )
        for p in params:
            p.grad = None  # the optimizer step leaves these weights (and their moments) alone
        self.skipped += 1
        pl_module.log(
            "train/skipped_steps", float(self.skipped), on_step=True, on_epoch=False, batch_size=max(1, len(languages))
        )
        if self.skipped == 1 or self.skipped % 100 == 0:
            log.warning(
                "skipped %s: %s (%d steps skipped so far; dpo.on_nonfinite=skip). Look at %s.",
                where,
                what,
                self.skipped,
                _settings_now(trainer),
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._stepped or self._initial_norm is None:
            return
        self._stepped = False
        if math.isinf(self._warn_at):  # warned of an overflowing norm already
            return
        norm = _norm(_trainable(pl_module))  # inf when float32 overflows (weights around 1e19 and more)
        reference = max(self._initial_norm, 1e-3)
        if norm < self._warn_at * reference:  # False for nan and inf: they warn too
            return
        while norm >= self._warn_at * reference and math.isfinite(self._warn_at):
            self._warn_at *= WEIGHT_GROWTH
        if not math.isfinite(norm):
            self._warn_at = math.inf  # overflowed: said once
        if trainer.is_global_zero:
            log.warning(
                "step %d: the norm of the trainable weights is %.3g, %.3g times its value when training started "
                "(%.3g): training is probably diverging. Look at %s. (This warning comes at each %g-fold growth.)",
                trainer.global_step,
                norm,
                norm / reference,
                self._initial_norm,
                _settings_now(trainer),
                WEIGHT_GROWTH,
            )

    # ---- per epoch: nothing diverged is saved -------------------------------------------------------
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        loss = trainer.callback_metrics.get("val/loss")
        if loss is not None and not math.isfinite(float(loss)):
            self._stop(trainer, f"the validation loss is {float(loss)}")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._initial_norm is None:
            return
        norm = _norm(_trainable(pl_module))
        reference = max(self._initial_norm, 1e-3)
        grown = float(
            trainer.strategy.reduce(
                torch.tensor(float(not norm < WEIGHT_GROWTH * reference), device=pl_module.device), reduce_op="sum"
            )
        )
        if not grown:  # every rank decides alike (under FSDP each sees its shard)
            return
        what = (
            "the trainable weights are not finite"
            if not math.isfinite(norm)
            else f"the norm of the trainable weights is {norm:.3g}, {norm / reference:.3g} times its value when "
            f"training started ({self._initial_norm:.3g}; the bound is {WEIGHT_GROWTH:g} times)"
        )
        self._stop(trainer, what)

    def _stop(self, trainer: pl.Trainer, what: str) -> None:
        raise NonFiniteError(
            f"training diverged by the end of epoch {trainer.current_epoch} (step {trainer.global_step}): {what}. "
            f"Neither this epoch's checkpoint nor the adapter was saved{_last_good(trainer)}. "
            f"Look at {_settings_now(trainer)}."
        )

    def on_train_end(self, trainer, pl_module) -> None:
        if self.skipped:
            log.warning(
                "%d optimizer steps were skipped for a non-finite loss or gradient (dpo.on_nonfinite=skip)",
                self.skipped,
            )

    def state_dict(self) -> dict:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict) -> None:
        self.skipped = state_dict.get("skipped", 0)


def _trainable(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in module.parameters() if p.requires_grad]


def _norm_tensor(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The global L2 norm of ``tensors`` as a float64 scalar on their device: inf or nan exactly when one of
    them is not finite (no float32 or bfloat16 value squares past float64's range). Of a sharded tensor
    (FSDP2's DTensor) only this rank's shard counts: the ranks then agree through one reduction of the
    flag they derive from it."""
    local = [(t.to_local() if hasattr(t, "to_local") else t).detach() for t in tensors]
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(local, 2, dtype=torch.float64)))


def _norm(tensors: Sequence[torch.Tensor]) -> float:
    return float(_norm_tensor(tensors)) if tensors else 0.0


def _scaler_handles_inf(trainer: pl.Trainer) -> bool:
    return getattr(trainer.precision_plugin, "scaler", None) is not None


def _describe(languages: Sequence[str]) -> str:
    counts: dict[str, int] = {}
    for code in languages:
        counts[code] = counts.get(code, 0) + 1
    if not counts:
        return "unknown languages"
    return "languages " + ", ".join(f"{code} ({n})" for code, n in sorted(counts.items()))


def _settings_now(trainer: pl.Trainer) -> str:
    lrs = sorted({group["lr"] for opt in trainer.optimizers for group in opt.param_groups})
    lr = ", ".join(f"{value:g}" for value in lrs) or "?"
    return (
        f"dpo.optimizer.lr (the learning rate is now {lr}), trainer.gradient_clip_val (now "
        f"{trainer.gradient_clip_val}) and trainer.precision (now {trainer.precision})"
    )


def _last_good(trainer: pl.Trainer) -> str:
    callback = trainer.checkpoint_callback
    path = getattr(callback, "last_model_path", "") or getattr(callback, "best_model_path", "")
    return f": the last good checkpoint is {path}" if path else ""

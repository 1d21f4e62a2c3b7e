"""The DPO LightningModule: a policy, its reference, and the preference loss.

The reference is the policy with its LoRA adapter disabled (no second copy of the weights, as TRL does
with a peft model), or a frozen copy of the initial policy for full fine-tuning. Sequence log-probs are
sums over completion tokens. Metrics follow TRL's names (``rewards/chosen``, ``rewards/margins``, …) with
``train/`` or ``val/`` in front; per-language means are logged as ``…/<lang>`` at the end of each epoch.
"""

from __future__ import annotations

import contextlib
import copy
from functools import partial
from typing import Any, Callable, Sequence

import pytorch_lightning as pl
import torch

from congrad.models.guard import NonFiniteGuard
from congrad.models.logps import sequence_logps
from congrad.models.losses import dpo_loss, implicit_rewards
from congrad.models.metrics import LanguageMeans

METRIC_NAMES = (
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
)


def _is_peft(model: torch.nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


class DPOModule(pl.LightningModule):
    def __init__(
        self,
        policy: torch.nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        beta: float = 0.1,
        loss_type: str = "sigmoid",
        length_penalty: float = 0.0,
        label_smoothing: float = 0.0,
        languages: Sequence[str] = (),
        on_nonfinite: str = "error",
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["policy", "optimizer", "scheduler"])
        self.policy = policy
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.loss = partial(
            dpo_loss, beta=beta, loss_type=loss_type, length_penalty=length_penalty, label_smoothing=label_smoothing
        )
        self.beta = beta
        self.loss_type = loss_type
        self.languages = sorted(languages)
        self.guard = NonFiniteGuard(on_nonfinite)  # a non-finite loss or gradient stops the fit (or skips the step)
        # Full fine-tuning keeps a frozen copy of the initial policy as the reference.
        self.reference = None if _is_peft(policy) else copy.deepcopy(policy).requires_grad_(False).eval()
        self.metrics = {stage: LanguageMeans(METRIC_NAMES, self.languages) for stage in ("train", "val")}
        # Checkpoints hold only the trainable parameters; the frozen rest is rebuilt from the config.
        self.strict_loading = False

    # ---- log-probs -------------------------------------------------------------------------------
    def _logps(self, model: torch.nn.Module, batch: dict) -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        logps = sequence_logps(logits, batch["input_ids"], batch["completion_mask"])
        if self.loss_type == "ipo":  # IPO works on per-token averages (as TRL does)
            logps = logps / batch["completion_mask"][:, 1:].sum(-1).clamp(min=1)
        return logps

    @contextlib.contextmanager
    def _reference_model(self):
        if self.reference is not None:
            yield self.reference
        else:
            with self.policy.disable_adapter():
                yield self.policy

    @torch.no_grad()
    def reference_logps(self, batch: dict) -> torch.Tensor:
        with self._reference_model() as ref:
            return self._logps(ref, batch)

    def pair_losses(self, batch: dict, ref_logps: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-pair losses and TRL's metrics for a concatenated batch (rows ``[:B]`` chosen, ``[B:]`` rejected)."""
        if ref_logps is None:
            ref_logps = self.reference_logps(batch)
        policy_logps = self._logps(self.policy, batch)
        lengths = batch["completion_mask"][:, 1:].sum(-1)
        b = len(batch["index"])
        pc, pr, rc, rr = policy_logps[:b], policy_logps[b:], ref_logps[:b], ref_logps[b:]
        losses = self.loss(pc, pr, rc, rr, chosen_lengths=lengths[:b], rejected_lengths=lengths[b:])
        chosen_rewards = implicit_rewards(pc, rc, self.beta)
        rejected_rewards = implicit_rewards(pr, rr, self.beta)
        return {
            "loss": losses,
            "rewards/chosen": chosen_rewards,
            "rewards/rejected": rejected_rewards,
            "rewards/margins": chosen_rewards - rejected_rewards,
            "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
            "logps/chosen": pc.detach(),
            "logps/rejected": pr.detach(),
        }

    # ---- steps -------------------------------------------------------------------------------------
    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        out = self.pair_losses(batch)
        self.metrics[stage].update(batch["language"], out)
        loss = out["loss"].mean()
        if stage == "train":
            batch_size = len(batch["index"])
            for name in METRIC_NAMES:
                self.log(f"train/{name}", out[name].mean(), on_step=True, on_epoch=False, prog_bar=name == "loss",
                         batch_size=batch_size)
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def _log_epoch(self, stage: str) -> None:
        reduce_sum = partial(self.trainer.strategy.reduce, reduce_op="sum")
        # The overall train means were logged per step; per-language means come once per epoch.
        values = self.metrics[stage].compute(reduce_sum, overall=stage == "val")
        self.metrics[stage].reset()
        self.log_dict({f"{stage}/{k}": v for k, v in values.items()}, prog_bar=False)

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._log_epoch("val")
        else:
            self.metrics["val"].reset()

    # ---- optimisation and checkpoints --------------------------------------------------------------
    def configure_callbacks(self):
        return [self.guard]

    def configure_optimizers(self):
        params = [p for p in self.policy.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params=params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        trainable = {f"policy.{name}" for name, p in self.policy.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}

"""The DPO LightningModule: a policy, its reference, and the preference loss.

The reference is the policy with its LoRA adapter disabled (no second copy of the weights, as TRL does
with a peft model), or a frozen copy of the initial policy for full fine-tuning. Either way it is the
policy the run starts from: trained adapters to start from are merged into the base before a fresh
adapter goes on (:func:`congrad.models.factory.build_policy`). Sequence log-probs are
sums over completion tokens. Metrics follow TRL's names (``rewards/chosen``, ``rewards/margins``, …,
``logits/chosen``, ``logits/rejected``, ``num_tokens``) with ``train/`` or ``val/`` in front; per-language
means are logged as ``…/<lang>`` at the end of each epoch. As in TRL, every logged value covers all ranks:
per-step training metrics are reduced over the ranks' batches before they are logged.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Sequence
from functools import partial
from typing import Annotated, Any, ClassVar

import pytorch_lightning as pl
import torch
from pydantic import Field

from congrad.models.guard import GuardSettings, NonFiniteGuard
from congrad.models.logps import completion_logit_sums, sequence_logps
from congrad.models.losses import LossSettings, dpo_loss, implicit_rewards
from congrad.models.metrics import LanguageMeans
from congrad.utils.schema import Instantiated, PassThrough

# per-pair metrics: means over pairs (per step, and per language per epoch)
METRIC_NAMES = (
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
)
# means over completion tokens
LOGIT_NAMES = ("logits/chosen", "logits/rejected")
# what batch_sums adds up, in order
SUM_NAMES = (
    *METRIC_NAMES,
    "pairs",
    "logits/chosen",
    "tokens/chosen",
    "logits/rejected",
    "tokens/rejected",
    "input_tokens",
)


def batch_sums(out: dict, batch: dict) -> torch.Tensor:
    """The additive statistics of one batch, in the order of :data:`SUM_NAMES` (float64): each per-pair metric
    summed over the pairs, the number of pairs, per side the summed per-token mean logits and the number of
    completion tokens, and the non-padding input tokens. Summed over ranks or batches, :func:`trl_metrics`
    turns them into TRL's means over all of them."""
    b = len(batch["index"])
    logit_sums, lengths = out["logit_sums"], out["lengths"]
    values = [
        *(out[name].detach().sum() for name in METRIC_NAMES),
        torch.tensor(b),
        logit_sums[:b].sum(),
        lengths[:b].sum(),
        logit_sums[b:].sum(),
        lengths[b:].sum(),
        batch["attention_mask"].sum(),
    ]
    device = out["loss"].device
    return torch.stack([v.to(device=device, dtype=torch.float64) for v in values])


def trl_metrics(sums: torch.Tensor) -> dict[str, float]:
    """TRL's metrics from :func:`batch_sums` (added up): per-pair metrics averaged over the pairs,
    ``logits/*`` over the completion tokens (0 without any, as TRL)."""
    s = dict(zip(SUM_NAMES, sums.tolist()))
    metrics = {name: s[name] / s["pairs"] for name in METRIC_NAMES}
    for side in ("chosen", "rejected"):
        tokens = s[f"tokens/{side}"]
        metrics[f"logits/{side}"] = s[f"logits/{side}"] / tokens if tokens else 0.0
    return metrics


def _is_peft(model: torch.nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


class OptimizerSettings(PassThrough):
    lr: Annotated[float, Field(gt=0)]
    weight_decay: Annotated[float, Field(ge=0)]


class SchedulerSettings(PassThrough):
    num_warmup_steps: Annotated[int, Field(ge=0)]


class DPOSettings(Instantiated, LossSettings, GuardSettings):
    """The ``dpo`` group: the arguments of :class:`DPOModule`; the optimizer's and the scheduler's own
    arguments pass through to their ``_target_``."""

    group: ClassVar[str] = "dpo"
    optimizer: OptimizerSettings
    scheduler: SchedulerSettings | None


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
        DPOSettings.check(
            beta=beta,
            loss_type=loss_type,
            length_penalty=length_penalty,
            label_smoothing=label_smoothing,
            on_nonfinite=on_nonfinite,
        )
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
        self.val_sums = torch.zeros(len(SUM_NAMES), dtype=torch.float64)
        # non-padding input tokens trained on so far, all ranks together (TRL's num_tokens); kept in checkpoints
        self.num_tokens = 0
        # Checkpoints hold only the trainable parameters; the frozen rest is rebuilt from the config.
        self.strict_loading = False

    # ---- log-probs -------------------------------------------------------------------------------
    @staticmethod
    def _logits(model: torch.nn.Module, batch: dict) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits

    def _logps(self, model: torch.nn.Module, batch: dict) -> torch.Tensor:
        """Summed completion log-probs per row, for every loss type (IPO averages inside its loss only)."""
        return sequence_logps(self._logits(model, batch), batch["input_ids"], batch["completion_mask"])

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
        """Per-pair losses and TRL's metrics for a concatenated batch (rows ``[:B]`` chosen, ``[B:]`` rejected).

        ``ref_logps`` (``[2B]``, as :meth:`reference_logps` returns them) are summed log-probs; rewards and
        ``logps/*`` are computed from summed log-probs for every loss type, as TRL logs them."""
        if ref_logps is None:
            ref_logps = self.reference_logps(batch)
        logits = self._logits(self.policy, batch)
        policy_logps = sequence_logps(logits, batch["input_ids"], batch["completion_mask"])
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
            # per row [2B]: completion tokens, and their summed per-token mean logits (for TRL's logits/*)
            "lengths": lengths,
            "logit_sums": completion_logit_sums(logits, batch["completion_mask"]),
        }

    # ---- steps -------------------------------------------------------------------------------------
    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        out = self.pair_losses(batch)
        self.metrics[stage].update(batch["language"], out)
        sums = batch_sums(out, batch)
        if stage == "train":
            self._log_train_step(sums, batch_size=len(batch["index"]))
        else:
            self.val_sums += sums.cpu()
        return out["loss"].mean()

    def _log_train_step(self, sums: torch.Tensor, batch_size: int) -> None:
        """TRL's per-step metrics over the batches of all ranks (one all-reduce of the batch sums), and the
        running token count."""
        sums = self._reduce_sum(sums)
        self.num_tokens += int(sums[SUM_NAMES.index("input_tokens")])
        values = {**trl_metrics(sums), "num_tokens": float(self.num_tokens)}
        for name, value in values.items():
            self.log(
                f"train/{name}", value, on_step=True, on_epoch=False, prog_bar=name == "loss", batch_size=batch_size
            )

    def _reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks, on the module's device (NCCL reduces CUDA tensors only); back on the tensor's device."""
        return self.trainer.strategy.reduce(tensor.to(self.device), reduce_op="sum").to(tensor.device)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def _log_epoch(self, stage: str) -> None:
        # The overall train means were logged per step; per-language means come once per epoch.
        values = self.metrics[stage].compute(self._reduce_sum, overall=stage == "val")
        if stage == "val":
            logits = trl_metrics(self._reduce_sum(self.val_sums))
            values.update({name: logits[name] for name in LOGIT_NAMES})
        self._reset(stage)
        self.log_dict({f"{stage}/{k}": v for k, v in values.items()}, prog_bar=False)

    def _reset(self, stage: str) -> None:
        self.metrics[stage].reset()
        if stage == "val":
            self.val_sums.zero_()

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._log_epoch("val")
        else:
            self._reset("val")

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
        checkpoint["num_tokens"] = self.num_tokens

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.num_tokens = checkpoint.get("num_tokens", 0)

"""One DPO run from a composed config: the pieces (policy, data, DPO module) built the one way every caller
builds them, and the Lightning fit around them.

Whether ``python train.py`` runs one fit or the self-rewarding loop of fits is decided above this module,
in :mod:`congrad.run`.

Resuming (``ckpt_path``), the checkpoint is read and checked first, the data next (its rows must be those
the checkpoint was trained on, unless ``resume_rescore=true``), the model last: a wrong path, file or data
set stops the run before the expensive part (:mod:`congrad.utils.checkpoints`). Every fit also saves a
resumable checkpoint when SIGTERM or Ctrl-C stops it (:mod:`congrad.utils.interrupt`).
"""

from __future__ import annotations

import logging
import re
import shlex
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pydantic import Field

from congrad.errors import CongradError
from congrad.models import DPOModule, build_policy
from congrad.utils import cost
from congrad.utils.checkpoints import RecordData, check_resume_data, check_resume_model, inspect_checkpoint
from congrad.utils.instantiate import instantiate_group
from congrad.utils.interrupt import GracefulStop
from congrad.utils.io import write_json
from congrad.utils.loggers import closing
from congrad.utils.schema import PassThrough, checked

log = logging.getLogger(__name__)


def _precision(value: Any) -> str | None:
    from lightning_fabric import connector

    allowed = [a for alias in typing.get_args(connector._PRECISION_INPUT) for a in typing.get_args(alias)]
    shown = ", ".join(dict.fromkeys(str(a) for a in allowed))
    return None if value in allowed and not isinstance(value, bool) else f"one of {shown}"


def _accelerator(value: Any) -> str | None:
    from pytorch_lightning.accelerators import AcceleratorRegistry

    allowed = ["auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators())]
    return None if value in allowed else "one of " + ", ".join(allowed)


def _strategy(value: Any) -> str | None:
    from pytorch_lightning.strategies import StrategyRegistry

    if isinstance(value, dict) and isinstance(value.get("_target_"), str):  # a strategy object, e.g. trainer=fsdp's
        return None
    if value in ["auto", *StrategyRegistry.available_strategies()]:
        return None
    return "auto, ddp, fsdp, deepspeed, ... (a Lightning strategy name), or a config with a _target_"


def _devices(value: Any) -> str | None:
    def whole(v):
        return isinstance(v, int) and not isinstance(v, bool)

    ok = (
        value == "auto"
        or (whole(value) and (value >= 1 or value == -1))
        or (isinstance(value, (list, tuple)) and value and all(whole(d) and d >= 0 for d in value))
        or (isinstance(value, str) and re.fullmatch(r"\d+(,\d*)*|-1", value) is not None)
    )
    return None if ok else "auto, a number of devices >= 1 (-1: all), or a list of device indices"


class TrainerSettings(PassThrough):
    """The ``trainer`` group: ``pytorch_lightning.Trainer``'s arguments. Those declared here are checked
    before anything loads; any other passes through to the Trainer, which checks it."""

    group: ClassVar[str] = "trainer"
    max_epochs: Annotated[int, Field(ge=1)]
    accelerator: checked(_accelerator, str)
    strategy: checked(_strategy)
    devices: checked(_devices)
    precision: checked(_precision)
    gradient_clip_val: Annotated[float, Field(ge=0)] | None
    accumulate_grad_batches: Annotated[int, Field(ge=1)]
    log_every_n_steps: Annotated[int, Field(ge=1)]
    check_val_every_n_epoch: Annotated[int, Field(ge=1)] | None
    reload_dataloaders_every_n_epochs: Annotated[int, Field(ge=0)]


@dataclass
class Pieces:
    """What a DPO run is made of: the tokenizer, the data (set up) and the DPO module around the policy."""

    tokenizer: Any
    datamodule: Any  # congrad.data.datamodule.PreferenceDataModule
    module: DPOModule


def build_module(cfg: DictConfig, tokenizer=None, policy=None, languages: Sequence[str] = ()) -> tuple[Any, DPOModule]:
    """``(tokenizer, DPOModule)`` from ``cfg.model`` (unless a built ``policy`` and its tokenizer are given)
    and ``cfg.dpo``."""
    if policy is None:
        tokenizer, policy = build_policy(cfg.model)
    return tokenizer, hydra.utils.instantiate(cfg.dpo, policy=policy, languages=list(languages))


def build_pieces(
    cfg: DictConfig, tokenizer=None, policy=None, check_data: Callable[[Any], None] | None = None
) -> Pieces:
    """Policy (from ``cfg.model`` unless given), data from ``cfg.data`` (loaded, split and tokenized), and
    the DPO module from ``cfg.dpo``, which tracks the data's languages. The data loads before the model
    (only the tokenizer is needed for it), so a bad row stops the run early; ``check_data(datamodule)``
    runs in between."""
    if cfg.data.get("path") is None:
        raise CongradError("data.path is not set: give a preference set (data.path=FILE)")
    if policy is None:
        tokenizer = hydra.utils.instantiate(cfg.model.tokenizer)
    datamodule = hydra.utils.instantiate(cfg.data, tokenizer=tokenizer)
    datamodule.setup("fit")
    if check_data is not None:
        check_data(datamodule)
    if policy is None:
        tokenizer, policy = build_policy(cfg.model, tokenizer=tokenizer)
    _, module = build_module(cfg, tokenizer, policy, datamodule.languages)
    return Pieces(tokenizer, datamodule, module)


def fit(
    cfg: DictConfig,
    tokenizer=None,
    policy=None,
    metrics: dict[str, float] | None = None,
    callbacks: Sequence[pl.Callback] = (),
) -> dict[str, float]:
    """Build the pieces (the policy unless given), loggers and callbacks from ``cfg``; fit; return the final
    metrics. ``metrics`` are logged once before training (what produced the data, e.g. pair counts), with
    the truncation counts of the datamodule.

    The Lightning callbacks of a fit, and where each is added:

    - from config, ``conf/callbacks/``: ``ConGradCallback`` (the filter's pass each epoch and the pruning,
      ``congrad.yaml``), ``ModelCheckpoint`` (``model_checkpoint.yaml``), ``SavePretrained`` (the adapter,
      ``save_pretrained.yaml``);
    - from the caller, ``callbacks``: the ``EvaluationCallback`` after the fit, which logs to the same loggers
      before they close (:func:`congrad.evaluation.callback.evaluation_callbacks`, from ``congrad.run`` and
      the self-rewarding loop);
    - here: ``RecordData`` (the data's fingerprint in every checkpoint) and ``GracefulStop`` (SIGTERM and
      Ctrl-C end the batch, save a checkpoint and say how to resume);
    - by the module itself: ``NonFiniteGuard`` (``DPOModule.configure_callbacks``: divergence stops the run).
    """
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = cfg.get("ckpt_path")
    resume = inspect_checkpoint(ckpt_path) if ckpt_path else None
    check_data = None
    if resume is not None:

        def check_data(datamodule):
            if not check_resume_data(resume, datamodule.fingerprint, bool(cfg.get("resume_rescore", False))):
                log.warning(
                    "resuming %s on other training rows (resume_rescore=true): the ConGrad filter scores them afresh",
                    ckpt_path,
                )

    pieces = build_pieces(cfg, tokenizer, policy, check_data=check_data)
    if resume is not None:
        check_resume_model(resume, pieces.module)
    datamodule = pieces.datamodule
    report = datamodule.report
    write_json(output_dir / "data_report.json", report.to_dict())
    log.info(
        "data: %d pairs from %s (%d skipped, %d excluded by language); train %d, val %d; languages %s; "
        "truncated: prompt %d, chosen %d, rejected %d, lost eos %d",
        report.loaded,
        report.source,
        report.skipped,
        report.excluded_by_language,
        len(datamodule.train_rows),
        len(datamodule.val_rows),
        ", ".join(datamodule.languages),
        *(report.truncated[part] for part in ("prompt", "chosen", "rejected", "lost_eos")),
    )
    metrics = {**(metrics or {}), **datamodule.truncation_metrics()}

    loggers = instantiate_group(cfg.get("logger"))
    stop = GracefulStop(_resume_command())
    callbacks = [*instantiate_group(cfg.get("callbacks")), *callbacks, RecordData(), stop]
    with closing(loggers):  # W&B runs are finished on every way out, marked failed unless the fit finished
        trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, logger=loggers, callbacks=callbacks)
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
            logger.log_metrics(metrics, step=0)
        try:
            with cost.stage("train"):  # the ConGrad pass and the evaluation inside it are stages of their own
                trainer.fit(pieces.module, datamodule=datamodule, ckpt_path=ckpt_path)
        except SystemExit:  # Lightning's way out of SIGTERM (status 0) and Ctrl-C (status 1)
            if stop.signum is None:
                raise
            raise stop.error() from None
        if (meter := cost.current()) is not None and trainer.is_global_zero:
            cost.log_cost(loggers, meter.snapshot(), step=trainer.global_step)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def _resume_command() -> str:
    """``python train.py`` with this run's command-line overrides (but ``ckpt_path``), for messages."""
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith(("ckpt_path=", "+ckpt_path="))]
    except Exception:  # not inside a Hydra run (tests, notebooks)
        return "python train.py <the same overrides>"
    return " ".join(["python train.py", *map(shlex.quote, overrides)])

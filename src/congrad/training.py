"""One DPO training run from a composed ``train.yaml`` config."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from congrad.models import build_policy
from congrad.utils.instantiate import instantiate_group
from congrad.utils.io import write_json

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, float]:
    """Build data, policy, module, loggers and callbacks from ``cfg``; fit; return the final metrics."""
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)

    tokenizer, policy = build_policy(cfg.model)
    datamodule = hydra.utils.instantiate(cfg.data, tokenizer=tokenizer)
    datamodule.setup("fit")
    report = datamodule.report
    write_json(output_dir / "data_report.json", report.to_dict())
    log.info(
        "data: %d pairs from %s (%d skipped, %d excluded by language); train %d, val %d; languages %s",
        report.loaded, report.source, report.skipped, report.excluded_by_language,
        len(datamodule.train_rows), len(datamodule.val_rows), ", ".join(datamodule.languages),
    )

    module = hydra.utils.instantiate(cfg.dpo, policy=policy, languages=datamodule.languages)
    loggers = instantiate_group(cfg.get("logger"))
    callbacks = instantiate_group(cfg.get("callbacks"))
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, logger=loggers, callbacks=callbacks)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    _close_wandb(loggers)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def _close_wandb(loggers: list) -> None:
    """Finish W&B runs so the next run in the same process (sweeps, iterations) starts a fresh one."""
    if any(isinstance(lg, pl.loggers.WandbLogger) for lg in loggers):
        import wandb

        wandb.finish()

"""Training from a composed ``train.yaml`` config: one DPO fit, or the self-rewarding loop around it.

``iterations=0`` (the default) or an explicit ``data.path`` is one DPO run on that preference set;
``iterations=N`` with the ``self_reward`` group set (``+experiment=tiny_self_reward``, ...) and no
``data.path`` runs N self-rewarding iterations (:mod:`congrad.self_rewarding`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from congrad.data.tokenization import TRUNCATED_PARTS
from congrad.errors import CongradError
from congrad.models import build_policy
from congrad.utils.instantiate import instantiate_group
from congrad.utils.io import write_json

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, float]:
    """Run what ``cfg`` asks for; return the final metrics (of the last iteration)."""
    if self_reward_enabled(cfg):
        from congrad.self_rewarding import run_self_reward

        return run_self_reward(cfg)
    return fit(cfg)


def self_reward_enabled(cfg: DictConfig) -> bool:
    iterations = cfg.get("iterations") or 0
    if cfg.get("self_reward") is None:
        if iterations:
            raise CongradError(
                f"iterations={iterations} needs the self-rewarding loop: add self_reward=default (and a judge, "
                "e.g. judge=self), or use an experiment that sets it (+experiment=tiny_self_reward)"
            )
        return False
    if cfg.data.get("path") is not None:
        if iterations:
            log.info("data.path is set: one DPO run on %s; the self-rewarding loop is skipped", cfg.data.path)
        return False
    if not iterations:
        raise CongradError("the self-rewarding loop needs iterations>=1 (or a preference set: data.path=FILE)")
    return True


def fit(cfg: DictConfig, tokenizer=None, policy=None, metrics: dict[str, float] | None = None) -> dict[str, float]:
    """Build data, policy (unless given), module, loggers and callbacks from ``cfg``; fit; return the final
    metrics. ``metrics`` are logged once before training (what produced the data, e.g. pair counts), with
    the truncation counts of the datamodule."""
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    if cfg.data.get("path") is None:
        raise CongradError("data.path is not set: give a preference set (data.path=FILE)")

    if policy is None:
        tokenizer, policy = build_policy(cfg.model)
    datamodule = hydra.utils.instantiate(cfg.data, tokenizer=tokenizer)
    datamodule.setup("fit")
    report = datamodule.report
    write_json(output_dir / "data_report.json", report.to_dict())
    log.info(
        "data: %d pairs from %s (%d skipped, %d excluded by language); train %d, val %d; languages %s; "
        "truncated: prompt %d, chosen %d, rejected %d, lost eos %d",
        report.loaded, report.source, report.skipped, report.excluded_by_language,
        len(datamodule.train_rows), len(datamodule.val_rows), ", ".join(datamodule.languages),
        *(report.truncated[part] for part in TRUNCATED_PARTS),
    )
    metrics = {**(metrics or {}), **truncation_metrics(report.truncated)}

    module = hydra.utils.instantiate(cfg.dpo, policy=policy, languages=datamodule.languages)
    loggers = instantiate_group(cfg.get("logger"))
    callbacks = instantiate_group(cfg.get("callbacks"))
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, logger=loggers, callbacks=callbacks)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        logger.log_metrics(metrics, step=0)

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    _close_wandb(loggers)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def truncation_metrics(truncated: dict) -> dict[str, float]:
    """``data/truncated/<part>`` (pairs whose prompt / chosen / rejected was cut, or that lost an eos) and
    ``data/truncated/lost_eos/<lang>``, from the datamodule's report."""
    metrics = {f"data/truncated/{part}": float(truncated[part]) for part in TRUNCATED_PARTS}
    for language, counts in truncated["by_language"].items():
        metrics[f"data/truncated/lost_eos/{language}"] = float(counts["lost_eos"])
    return metrics


def _close_wandb(loggers: list) -> None:
    """Finish W&B runs so the next run in the same process (sweeps, iterations) starts a fresh one."""
    if any(isinstance(lg, pl.loggers.WandbLogger) for lg in loggers):
        import wandb

        wandb.finish()

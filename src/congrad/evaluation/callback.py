"""The evaluation after a fit: the policy just trained against the baseline (π_0 by default), into
``<run dir>/eval/`` (``iteration_<t>/eval/`` in the self-rewarding loop), logged to the run's loggers."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from congrad.evaluation.evaluator import Evaluator
from congrad.evaluation.outputs import log_results, table, write_outputs
from congrad.utils import cost

log = logging.getLogger(__name__)


class EvaluationCallback(pl.Callback):
    """``cfg``: the run's composed config (``eval``, ``model``, ``data``, ``dpo``, ``seed``); ``judge``: the
    instantiated ``judge`` group; ``seen``: the languages trained on (None: those of the training data).

    The held-out sets are read, and the harness tasks resolved and their data loaded, when the fit starts
    (on rank 0): a missing file, an unknown task or a data set that cannot be loaded stops the run before
    training, not after it."""

    def __init__(self, cfg: DictConfig, judge, out_dir: str | Path, seen: Sequence[str] | None = None):
        self.cfg, self.judge, self.out_dir, self.seen = cfg, judge, Path(out_dir), seen
        self.evaluator: Evaluator | None = None
        self.results: dict | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.is_global_zero and self.evaluator is None:
            with cost.stage("evaluate"):
                self.evaluator = Evaluator(self.cfg, self.judge, self.out_dir)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            with cost.stage("evaluate"):
                self._evaluate(trainer, pl_module)
        trainer.strategy.barrier("evaluation")  # the other ranks wait: no rank tears down while rank 0 evaluates

    def _evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        evaluator = self.evaluator or Evaluator(self.cfg, self.judge, self.out_dir)
        seen = list(self.seen) if self.seen is not None else trainer.datamodule.languages
        description = {"trained_in": str(self.out_dir.parent), "step": trainer.global_step}
        tokenizer = trainer.datamodule.tokenizer
        self.results, generations = evaluator.evaluate(tokenizer, pl_module.policy, description, seen)
        plots = write_outputs(self.out_dir, self.results, generations)
        log_results(trainer.loggers, self.results, step=trainer.global_step, plots=plots)
        log.info("evaluation against the baseline (%s):\n%s", self.out_dir, table(self.results))


def evaluation_callbacks(
    cfg: DictConfig, out_dir: str | Path, seen: Sequence[str] | None = None, judge=None
) -> list[pl.Callback]:
    """``[EvaluationCallback]`` for a fit of ``cfg`` (none when ``eval`` is null), judged by ``judge`` (None:
    ``cfg.judge``, built here). The seen languages are ``eval.seen``, else ``seen``, else ``langset.seen``,
    else ``data.languages``, else (in the callback) the languages of the training data."""
    if cfg.get("eval") is None:
        return []
    for candidate in (
        cfg.eval.get("seen"),
        seen,
        OmegaConf.select(cfg, "langset.seen"),
        OmegaConf.select(cfg, "data.languages"),
    ):
        if candidate is not None:
            seen = list(candidate)
            break
    judge = judge if judge is not None else hydra.utils.instantiate(cfg.judge)
    return [EvaluationCallback(cfg, judge, out_dir, seen)]

"""The evaluation after a fit: the policy just trained against the baseline (π_0 by default), into
``<run dir>/eval/`` (``iteration_<t>/eval/`` in the self-rewarding loop), logged to the run's loggers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from congrad.evaluation.evaluator import EvalSets, Evaluator, load_eval_sets
from congrad.evaluation.outputs import log_results, table, write_outputs
from congrad.utils import cost

log = logging.getLogger(__name__)


class EvaluationCallback(pl.Callback):
    """``cfg``: the run's composed config (``eval``, ``model``, ``data``, ``dpo``, ``seed``); ``judge``: the
    instantiated ``judge`` group; ``seen``: the languages trained on (None: those of the training data);
    ``sets``: the held-out data, read (and checked) before training (None: read after it)."""

    def __init__(self, cfg: DictConfig, judge, out_dir: str | Path, seen: Sequence[str] | None = None,
                 sets: EvalSets | None = None):
        self.cfg, self.judge, self.out_dir, self.seen, self.sets = cfg, judge, Path(out_dir), seen, sets
        self.results: dict | None = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            with cost.stage("evaluate"):
                self._evaluate(trainer, pl_module)
        trainer.strategy.barrier("evaluation")  # the other ranks wait: no rank tears down while rank 0 evaluates

    def _evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        evaluator = Evaluator(self.cfg, self.judge, self.sets)
        seen = list(self.seen) if self.seen is not None else trainer.datamodule.languages
        description = {"trained_in": str(self.out_dir.parent), "step": trainer.global_step}
        tokenizer = trainer.datamodule.tokenizer
        self.results, generations = evaluator.evaluate(tokenizer, pl_module.policy, description, seen)
        plot = write_outputs(self.out_dir, self.results, generations)
        log_results(trainer.loggers, self.results, step=trainer.global_step, plot=plot)
        log.info("evaluation against the baseline (%s):\n%s", self.out_dir, table(self.results))


def evaluation_callbacks(cfg: DictConfig, out_dir: str | Path, seen: Sequence[str] | None = None,
                         judge=None) -> list[pl.Callback]:
    """``[EvaluationCallback]`` for a fit of ``cfg`` (none when ``eval`` is null), judged by ``judge`` (None:
    ``cfg.judge``, built here). The seen languages are ``eval.seen``, else ``seen``, else ``langset.seen``,
    else ``data.languages``, else (in the callback) the languages of the training data. The held-out files
    are read now: a missing one, or an ``eval.languages`` or ``eval.seen`` without rows, stops the run
    before training, not after it."""
    if cfg.get("eval") is None:
        return []
    for candidate in (cfg.eval.get("seen"), seen, OmegaConf.select(cfg, "langset.seen"),
                      OmegaConf.select(cfg, "data.languages")):
        if candidate is not None:
            seen = list(candidate)
            break
    judge = judge if judge is not None else hydra.utils.instantiate(cfg.judge)
    return [EvaluationCallback(cfg, judge, out_dir, seen, load_eval_sets(cfg.eval))]

"""What ``python train.py`` runs: one DPO fit (:mod:`congrad.training`) or, with the ``self_reward`` group
and ``iterations=N``, the self-rewarding loop around fits (:mod:`congrad.selfreward.loop`); each fit is
followed by an evaluation against the baseline (:mod:`congrad.evaluation`) unless ``~eval`` removed it.

``iterations=0`` (the default) or an explicit ``data.path`` is one DPO run on that preference set;
``iterations=N`` with the ``self_reward`` group set (``+experiment=tiny_self_reward``, ...) and no
``data.path`` runs N self-rewarding iterations. Either way the run directory gets ``cost.json``
(:mod:`congrad.utils.cost`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig
from pytorch_lightning.utilities import rank_zero_only

from congrad.errors import CongradError
from congrad.evaluation.callback import evaluation_callbacks
from congrad.selfreward.loop import run_self_reward
from congrad.training import fit
from congrad.utils import cost

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, float]:
    """Run what ``cfg`` asks for, with the evaluation after every fit unless ``eval`` is null; return the
    final metrics (of the last iteration)."""
    if self_reward_enabled(cfg):
        return run_self_reward(cfg)
    run_dir = Path(cfg.paths.output_dir)
    with cost.recording(run_dir / cost.FILE if rank_zero_only.rank == 0 else None):
        return fit(cfg, callbacks=evaluation_callbacks(cfg, run_dir / "eval"))


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

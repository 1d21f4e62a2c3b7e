"""What the benchmarks share: the offline environment, rank statistics and a mean ± sd formatter. The project's
config and pieces come from the library (``congrad.utils.project.compose_config``, ``congrad.training``), so model
sizes and DPO settings come from conf/, never from a benchmark."""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import hydra  # noqa: E402
import pytorch_lightning as pl  # noqa: E402

from congrad.filtering.method import ConGrad  # noqa: E402
from congrad.filtering.sketch_pass import train_mode_without_dropout  # noqa: E402
from congrad.filtering.sketching import PerPairSketcher  # noqa: E402


def mean_sd(values: Sequence[float]) -> str:
    """``mean ± sd`` (sample sd; ``± -`` for a single value)."""
    if len(values) < 2:
        return f"{values[0]:.3f} ±   -  "
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks of ``x`` [N]; tied values share their average rank."""
    _, group, counts = torch.unique(x, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    return (ends - (counts - 1) / 2.0)[group]


def auroc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney U / (n1·n0))."""
    r = ranks(scores.double())
    n1, n0 = int(positive.sum()), int((~positive).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    return float((r[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = ranks(a.double()), ranks(b.double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra @ rb) / (ra.norm() * rb.norm()))


# ---- the library's pieces as the studies use them --------------------------------------------------------
def exact_gradients(cfg, module, datamodule) -> torch.Tensor:
    """[N, d]: each candidate's gradient of its own DPO loss (one backward per pair), selected parameters
    laid end to end — the vectors the sketches compress."""
    sketcher = PerPairSketcher.from_config(module, cfg.sketch)
    with train_mode_without_dropout(module.policy):  # as in the sketch pass
        return torch.cat(
            [sketcher.exact_gradients(batch) for batch in datamodule.candidate_dataloader(cfg.sketch.batch_size)]
        )


def filter_results(cfg, vectors: torch.Tensor, languages: list[str], aggregators: list[str], **settings) -> dict:
    """The ConGrad pass of every aggregator over the same vectors (sketches, or exact gradients), with
    ``cfg.filter`` and ``settings`` (e.g. ``per_language=True``) over it."""
    filter_cfg = {**dict(cfg.filter), **settings}
    return {agg: ConGrad(**{**filter_cfg, "aggregator": agg}).step(vectors, languages) for agg in aggregators}


def make_trainer(cfg, out_dir: Path, **overrides) -> pl.Trainer:
    """A bare Trainer of ``cfg.trainer``: no logger, callbacks or checkpoints (the studies fix the kept set)."""
    return hydra.utils.instantiate(
        cfg.trainer,
        default_root_dir=str(out_dir),
        logger=False,
        callbacks=[],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **overrides,
    )

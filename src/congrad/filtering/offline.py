"""ConGrad on a preference set outside training (``filter.py``): one scoring pass with the given policy."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from congrad.filtering.conflict_filter import ConflictFilter
from congrad.filtering.report import write_filter_outputs
from congrad.filtering.scoring import sketch_candidates
from congrad.filtering.sketching import PerPairSketcher
from congrad.models import build_policy

log = logging.getLogger(__name__)


def filter_preferences(cfg: DictConfig) -> Path:
    """Score every row of ``cfg.data.path``; write the three files into ``cfg.output_dir``."""
    pl.seed_everything(cfg.seed, workers=True)
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if cfg.device == "auto" else cfg.device)
    tokenizer, policy = build_policy(cfg.model)
    datamodule = hydra.utils.instantiate(cfg.data, tokenizer=tokenizer)
    datamodule.setup("fit")
    module = hydra.utils.instantiate(cfg.dpo, policy=policy, languages=datamodule.languages).to(device)

    sketch = cfg.sketch
    sketcher = PerPairSketcher.from_config(module, sketch)
    sketches = sketch_candidates(sketcher, datamodule.candidate_dataloader(sketch.batch_size), device)
    rows = datamodule.train_rows
    conflict_filter = ConflictFilter(seed=sketch.seed, **cfg.filter)
    result = conflict_filter.step(sketches, [row.language for row in rows])

    report = datamodule.report
    out_dir = Path(cfg.output_dir)
    write_filter_outputs(
        out_dir, rows, result, report,
        extra_summary={"sketch": OmegaConf.to_container(sketch, resolve=True), "method": sketcher.method},
    )
    log.info("kept %d of %d pairs; wrote %s", int(result.kept.sum()), len(rows), out_dir)
    for lang, stats in result.per_language().items():
        log.info("  %s: kept %d/%d, mean score %.3f", lang, stats["kept"], stats["total"], stats["score_mean"])
    return out_dir

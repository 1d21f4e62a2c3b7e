"""ConGrad outside training (``filter.py``): one scoring pass over a preference file with the configured
policy, and the three output files."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from congrad.filtering.method import ConGrad
from congrad.filtering.outputs import write_filter_outputs
from congrad.filtering.sketch_pass import sketch_candidates
from congrad.filtering.sketching import PerPairSketcher
from congrad.training import build_pieces
from congrad.utils.device import resolve_device

log = logging.getLogger(__name__)


def filter_file(cfg: DictConfig) -> Path:
    """Score every row of ``cfg.data.path``; write the three files into ``cfg.output_dir``."""
    pl.seed_everything(cfg.seed, workers=True)
    device = resolve_device(cfg.device)
    pieces = build_pieces(cfg)
    module = pieces.module.to(device)

    sketch = cfg.sketch
    sketcher = PerPairSketcher.from_config(module, sketch)
    sketches = sketch_candidates(sketcher, pieces.datamodule.candidate_dataloader(sketch.batch_size), device)
    rows = pieces.datamodule.train_rows
    result = ConGrad(**cfg.filter).step(sketches, [row.language for row in rows])

    out_dir = Path(cfg.output_dir)
    write_filter_outputs(
        out_dir, rows, result, pieces.datamodule.report,
        extra_summary={"sketch": OmegaConf.to_container(sketch, resolve=True), "method": sketcher.method},
    )
    log.info("kept %d of %d pairs; wrote %s", int(result.kept.sum()), len(rows), out_dir)
    for lang, stats in result.per_language().items():
        log.info("  %s: kept %d/%d, mean score %.3f", lang, stats["kept"], stats["total"], stats["score_mean"])
    return out_dir

"""ConGrad outside training (``filter.py``): one scoring pass over a preference file with the configured
policy, and the output files.

``output_dir`` is checked (a directory, or creatable; writable) and locked before the data or the model
load: a second ``filter.py`` writing the same directory stops at once with a clear error. The files are
replaced as one set (:mod:`congrad.filtering.outputs`).
"""

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
from congrad.utils import cost
from congrad.utils.device import resolve_device
from congrad.utils.fileset import locked_directory, prepare_output_dir

log = logging.getLogger(__name__)


def filter_file(cfg: DictConfig) -> Path:
    """Score every row of ``cfg.data.path``; write the output files into ``cfg.output_dir``, and what the run
    cost into the run's log folder (``cost.json`` beside ``filter.log``)."""
    out_dir = prepare_output_dir(cfg.output_dir)
    log_dir = OmegaConf.select(cfg, "paths.output_dir", default=None)
    with (
        locked_directory(out_dir, f"output_dir={out_dir}"),
        cost.recording(Path(log_dir) / cost.FILE if log_dir else None),
    ):
        return _filter_into(cfg, out_dir)


def _filter_into(cfg: DictConfig, out_dir: Path) -> Path:
    pl.seed_everything(cfg.seed, workers=True)
    device = resolve_device(cfg.device)
    pieces = build_pieces(cfg)
    module = pieces.module.to(device)

    sketch = cfg.sketch
    sketcher = PerPairSketcher.from_config(module, sketch)
    sketches = sketch_candidates(sketcher, pieces.datamodule.candidate_dataloader(sketch.batch_size), device)
    rows = pieces.datamodule.train_rows
    result = ConGrad(**cfg.filter).step(sketches, [row.language for row in rows])

    run_dir = OmegaConf.select(cfg, "paths.output_dir", default=None)
    write_filter_outputs(
        out_dir,
        rows,
        result,
        pieces.datamodule.report,
        extra_summary={
            "sketch": OmegaConf.to_container(sketch, resolve=True),
            "method": sketcher.method,
            "log_dir": str(run_dir) if run_dir else None,
        },
    )
    log.info("kept %d of %d pairs; wrote %s", int(result.kept.sum()), len(rows), out_dir)
    for lang, stats in result.per_language().items():
        mean = "none scored" if stats["score_mean"] is None else f"mean score {stats['score_mean']:.3f}"
        log.info("  %s: kept %d/%d, %s", lang, stats["kept"], stats["total"], mean)
    return out_dir

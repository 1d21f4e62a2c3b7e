"""What the benchmarks share: the offline environment, and a mean ± sd formatter. The project's config and
pieces come from the library (``congrad.utils.project.compose_config``, ``congrad.training``), so model
sizes and DPO settings come from conf/, never from a benchmark."""

from __future__ import annotations

import os
import statistics
from typing import Sequence

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def mean_sd(values: Sequence[float]) -> str:
    """``mean ± sd`` (sample sd; ``± -`` for a single value)."""
    if len(values) < 2:
        return f"{values[0]:.3f} ±   -  "
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"

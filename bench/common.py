"""Helpers shared by the benchmarks: the project's Hydra config, composed outside a Hydra run, and the
DPO module built from it — so model sizes and DPO settings come from conf/, never from a benchmark."""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))  # conf/paths reads it
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the top-level `kernels` package

import hydra  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


def compose_config(overrides: Sequence[str] = (), config_name: str = "train") -> DictConfig:
    """``conf/<config_name>.yaml`` with Hydra ``overrides``, as the entry points would see it."""
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))


def build_module(cfg: DictConfig, languages: Sequence[str] = ()):
    """``(tokenizer, DPOModule)`` from ``cfg.model`` and ``cfg.dpo``."""
    from congrad.models import build_policy

    tokenizer, policy = build_policy(cfg.model)
    module = hydra.utils.instantiate(cfg.dpo, policy=policy, languages=list(languages))
    return tokenizer, module


def mean_sd(values: Sequence[float]) -> str:
    """``mean ± sd`` (sample sd; ``± -`` for a single value)."""
    if len(values) < 2:
        return f"{values[0]:.3f} ±   -  "
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"

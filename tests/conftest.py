"""Test-session environment: no network, offline W&B, Triton kernels interpreted on CPU-only machines.

Set at import time, before anything imports triton, wandb or the Hugging Face hub client.
"""

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def compose_config(tmp_path):
    """Compose ``conf/<name>.yaml`` with overrides, as the entry points would, with the run dir in tmp_path."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    def compose_resolved(config_name: str = "train", overrides: tuple[str, ...] = (), output_dir=tmp_path,
                         resolve: bool = True):
        with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
            cfg = compose(config_name=config_name, return_hydra_config=True, overrides=list(overrides))
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
            del cfg["hydra"]
        if resolve:  # unresolved, interpolations follow later changes (e.g. paths.output_dir per iteration)
            OmegaConf.resolve(cfg)
        return cfg

    return compose_resolved

"""Where the project's own files are: ``conf/`` (the Hydra configs) and ``data/`` (shipped sets, text tables).

congrad runs from its repository (the entry points, ``conf/`` and ``data/`` live at its root, the library is
installed from ``src/`` in editable mode). The root is ``$PROJECT_ROOT`` when set (the entry points set it
to their own folder), else the folder three levels above this package.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from congrad.errors import CongradError


def project_root() -> Path:
    root = Path(os.environ.get("PROJECT_ROOT") or Path(__file__).resolve().parents[3])
    if not (root / "conf").is_dir():
        raise CongradError(f"{root} holds no conf/ folder: set PROJECT_ROOT to the congrad repository")
    return root


def compose_config(
    config_name: str = "train", overrides: Sequence[str] = (), output_dir: str | os.PathLike | None = None
):
    """``conf/<config_name>.yaml`` composed with Hydra ``overrides`` outside a Hydra run (tests, benchmarks),
    as the entry point would see it. The Hydra config is registered, so keys that interpolate ``${hydra:...}``
    resolve; ``output_dir`` sets ``paths.output_dir`` (the run directory) and, for filter.py's config, the
    required ``output_dir``. The result is unresolved: interpolations follow later changes."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    os.environ.setdefault("PROJECT_ROOT", str(project_root()))
    with initialize_config_dir(version_base="1.3", config_dir=str(project_root() / "conf")):
        cfg = compose(config_name=config_name, return_hydra_config=True, overrides=list(overrides))
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        if output_dir is not None:
            cfg.paths.output_dir = str(output_dir)
            if "output_dir" in cfg.keys() and OmegaConf.is_missing(cfg, "output_dir"):  # `in` skips ??? keys
                cfg.output_dir = str(output_dir)
        del cfg["hydra"]
    return cfg

"""The one place where ``device: auto`` is resolved."""

from __future__ import annotations

import torch

from congrad.errors import ConfigError


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto``: CUDA when available, else the CPU; anything else as torch reads it (``cpu``, ``cuda:1``)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"device: {device!r} is not a device (use auto, cpu or cuda[:N])") from err

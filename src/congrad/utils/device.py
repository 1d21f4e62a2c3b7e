"""The one place where ``device: auto`` is resolved."""

from __future__ import annotations

import re
from typing import Any

import torch

from congrad.errors import ConfigError
from congrad.utils.schema import checked


def _device(value: Any) -> str | None:
    ok = isinstance(value, str) and re.match(r"^(auto|cpu|mps|cuda(:\d+)?)$", value)
    return None if ok else "auto, cpu, cuda or cuda:N"


Device = checked(_device, str)
"""A ``device`` setting: ``auto`` (:func:`resolve_device`), ``cpu``, ``mps``, ``cuda`` or ``cuda:N``."""


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto``: CUDA when available, else the CPU; anything else as torch reads it (``cpu``, ``cuda:1``)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"device: {device!r} is not a device (use auto, cpu or cuda[:N])") from err

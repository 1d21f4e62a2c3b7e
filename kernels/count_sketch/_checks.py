"""Argument checks shared by the torch reference and the Triton launcher (one set of error messages)."""

from __future__ import annotations

import operator
import os
from dataclasses import dataclass

import torch

from .hashing import log2_width, seed_keys


def interpret_enabled() -> bool:
    """Whether ``TRITON_INTERPRET`` asks for Triton's interpreter (Triton kernels on CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on", "yes")


SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Global coordinates are hashed as 64-bit integers; keep offset + D well inside int64.
MAX_COORDINATE = 1 << 62


@dataclass
class Args:
    x2: torch.Tensor  # [N, D] view of x (rows x columns), last dimension not necessarily contiguous
    squeeze: bool  # x was 1-D: return [width]
    width: int
    log_w: int
    keys: tuple[int, int, int, int]
    offset: int
    out: torch.Tensor | None  # as given by the caller ([width] or [N, width]), or None

    @property
    def rows(self) -> int:
        return self.x2.shape[0]

    @property
    def dim(self) -> int:
        return self.x2.shape[1]


def check_args(x, width, seed, offset, out) -> Args:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"x must be a float32, bfloat16 or float16 tensor, got {x.dtype} (convert it first, e.g. x.float())"
        )
    if x.dim() not in (1, 2):
        raise ValueError(f"x must be [D] or [N, D], got a {x.dim()}-d tensor of shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"x is empty (shape {tuple(x.shape)}); nothing to sketch")
    log_w = log2_width(width)
    width = 1 << log_w
    keys = seed_keys(seed)
    if isinstance(offset, bool):
        raise TypeError("offset must be a non-negative integer, got a bool")
    try:
        offset = operator.index(offset)
    except TypeError:
        raise TypeError(f"offset must be a non-negative integer, got {type(offset).__name__}") from None
    x2 = x.unsqueeze(0) if x.dim() == 1 else x
    if offset < 0 or offset + x2.shape[1] > MAX_COORDINATE:
        raise ValueError(f"offset must be >= 0 with offset + D <= 2**62, got offset={offset}, D={x2.shape[1]}")
    expected = (width,) if x.dim() == 1 else (x.shape[0], width)
    if out is not None:
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"out must be a torch.Tensor or None, got {type(out).__name__}")
        if out.dtype != torch.float32:
            raise TypeError(f"out must be float32, got {out.dtype}")
        if tuple(out.shape) != expected:
            raise ValueError(f"out must have shape {expected}, got {tuple(out.shape)}")
        if out.device != x.device:
            raise ValueError(f"out is on {out.device} but x is on {x.device}")
    return Args(x2=x2, squeeze=x.dim() == 1, width=width, log_w=log_w, keys=keys, offset=offset, out=out)

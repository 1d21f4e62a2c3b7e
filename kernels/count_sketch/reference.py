"""Torch implementation of the count sketch: the reference for the Triton kernel, and the CPU path.

It evaluates the hash of :mod:`congrad.kernels.hashing` on int64 tensors and adds signed values into their buckets
with ``index_add_``. Long rows are processed in pieces of about ``PIECE_ELEMENTS`` values (pieces
aligned to the chunk grid), so memory stays bounded whatever D is; each piece hashes its chunks once and
its coordinates once — no index tensor of size D is ever built.
"""

from __future__ import annotations

import torch

from ._checks import check_args
from .hashing import chunk_params, seed_keys, log2_width, sign_mask, xor_permute

# Values handled per piece (over all rows together; at least one chunk). On CPU small enough that the int64
# temporaries of the hash stay in cache (2**16 is ~2.5x faster per value than 2**22); on a GPU large
# enough to amortise the kernel launches.
PIECE_ELEMENTS = 1 << 16
PIECE_ELEMENTS_CUDA = 1 << 24


def _chunk_table(c_start: int, c_stop: int, keys, width: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """XOR masks and sign keys of chunks ``c_start .. c_stop - 1`` (int64 tensors of uint32 values)."""
    c = torch.arange(c_start, c_stop, dtype=torch.int64, device=device)
    return chunk_params(c & 0xFFFFFFFF, c >> 32, *keys, width - 1)


def _signs(sign_bits: torch.Tensor) -> torch.Tensor:
    """+1.0 / -1.0 from :func:`congrad.kernels.hashing.sign_mask` values."""
    return torch.where(sign_bits != 0, -1.0, 1.0).to(torch.float32)


def _hash_range(g0: int, g1: int, width: int, log_w: int, keys, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Buckets (int64) and signs (float32 ±1) of the global coordinates ``g0 .. g1 - 1``."""
    c0 = g0 >> log_w
    xmask, skey = _chunk_table(c0, ((g1 - 1) >> log_w) + 1, keys, width, device)
    g = torch.arange(g0, g1, dtype=torch.int64, device=device)
    local_chunk = (g >> log_w) - c0
    p = g & (width - 1)
    buckets = xor_permute(p, xmask.index_select(0, local_chunk))
    return buckets, _signs(sign_mask(p, skey.index_select(0, local_chunk)))


def bucket_and_sign(coords: torch.Tensor, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The hash itself: bucket (int64, in ``[0, width)``) and sign (float32, ±1) of each global coordinate.

    ``coords`` is an integer tensor of any shape with values in ``[0, 2**62]``; the outputs have its shape
    and device. ``count_sketch(x, width, seed)[b] == Σ_{j: bucket[j]=b} sign[j] * x[j]`` for
    ``bucket, sign = bucket_and_sign(arange(D), width, seed)``.
    """
    if not isinstance(coords, torch.Tensor) or coords.dtype.is_floating_point or coords.dtype.is_complex \
            or coords.dtype == torch.bool:
        raise TypeError("coords must be an integer tensor")
    log_w = log2_width(width)
    width = 1 << log_w
    keys = seed_keys(seed)
    g = coords.to(torch.int64)
    if g.numel() and int(g.min()) < 0:
        raise ValueError("coords must be non-negative")
    c = g >> log_w
    xmask, skey = chunk_params(c & 0xFFFFFFFF, c >> 32, *keys, width - 1)
    p = g & (width - 1)
    return xor_permute(p, xmask), _signs(sign_mask(p, skey))


def count_sketch_reference(x: torch.Tensor, width: int, seed: int, *, offset: int = 0,
                           out: torch.Tensor | None = None) -> torch.Tensor:
    """Count sketch of ``x`` (``[D]`` or ``[N, D]``) into ``width`` buckets, in torch, on x's device.

    Same contract as :func:`congrad.kernels.count_sketch`; the result agrees with the Triton kernel to float
    rounding (the two add the same terms in different orders).
    """
    a = check_args(x, width, seed, offset, out)
    n, d = a.rows, a.dim
    device = x.device
    result = torch.zeros(n, a.width, dtype=torch.float32, device=device)
    # Piece length: a multiple of the width, about PIECE_ELEMENTS values over all rows.
    budget = PIECE_ELEMENTS_CUDA if x.is_cuda else PIECE_ELEMENTS
    piece = max(a.width, (budget // n) >> a.log_w << a.log_w)
    g, end = a.offset, a.offset + d
    while g < end:
        g1 = min((g // piece + 1) * piece, end)
        buckets, signs = _hash_range(g, g1, a.width, a.log_w, a.keys, device)
        values = a.x2[:, g - a.offset: g1 - a.offset].to(torch.float32) * signs
        result.index_add_(1, buckets, values)
        g = g1
    if a.out is not None:
        a.out += result.view_as(a.out)
        return a.out
    return result[0] if a.squeeze else result

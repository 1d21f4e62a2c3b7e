"""Torch implementation of the count sketch: the reference for the Triton kernel, and the CPU path.

It evaluates the hash of :mod:`congrad.kernels.hashing` on int64 tensors and adds signed values into their buckets
with ``index_add_``. Long rows are processed in pieces of about ``PIECE_ELEMENTS`` values (pieces
aligned to the chunk grid), so memory stays bounded whatever D is; each piece hashes its chunks once and
its coordinates once — no index tensor of size D is ever built.

Hashing costs about twenty integer operations per coordinate, far more than the ``index_add_`` that uses
the result, and a per-pair sketch pass hashes the same coordinates (each parameter at its offset) on every
call. So on the CPU the buckets (int64: ``index_add_`` is far slower with int32 indices) and signs (float32)
of each piece are kept in a cache of at most ``HASH_CACHE_BYTES`` (12 bytes per coordinate;
:func:`set_hash_cache_bytes`), keyed by the piece's coordinate range, width and seed. Once the cache is full
nothing is evicted and further pieces are hashed on every call: a pass that cycles through more coordinates
than fit keeps the hits it has instead of evicting what it is about to need. Cached or not, the result is bit
for bit the same (the same values added into the same buckets in the same order).
"""

from __future__ import annotations

import threading

import torch

from ._checks import check_args
from .hashing import chunk_params, log2_width, seed_keys, sign_mask, xor_permute

# Values handled per piece (over all rows together; at least one chunk). On CPU small enough that the int64
# temporaries of the hash stay in cache (2**16 is ~2.5x faster per value than 2**22); on a GPU large
# enough to amortise the kernel launches.
PIECE_ELEMENTS = 1 << 16
PIECE_ELEMENTS_CUDA = 1 << 24
# The CPU hash cache: its bound (buckets int64 + signs float32: 12 bytes per coordinate), and the values per
# cached piece (over all rows together): large, so a cached sketch is a few index_add_ calls.
HASH_CACHE_BYTES = HASH_CACHE_BYTES_DEFAULT = 256 << 20
CACHED_PIECE_ELEMENTS = 1 << 22

_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
_cache_bytes = 0


def set_hash_cache_bytes(limit: int) -> None:
    """Bound the CPU hash cache to ``limit`` bytes (0 disables it) and empty it."""
    global HASH_CACHE_BYTES
    HASH_CACHE_BYTES = int(limit)
    clear_hash_cache()


def clear_hash_cache() -> None:
    global _cache_bytes
    _cache.clear()
    _cache_bytes = 0


def hash_cache_bytes() -> int:
    """Bytes held by the CPU hash cache now."""
    return _cache_bytes


def _cached_hash_range(g0: int, g1: int, width: int, log_w: int, keys) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Buckets and signs of the CPU coordinates ``g0 .. g1 - 1`` from the cache, hashed (in pieces of
    ``PIECE_ELEMENTS``) and stored there if they fit; None if they are not cached and do not fit."""
    global _cache_bytes
    key = (g0, g1, width, keys)
    hit = _cache.get(key)
    if hit is not None:
        return hit
    size = 12 * (g1 - g0)
    if _cache_bytes + size > HASH_CACHE_BYTES:
        return None
    cpu = torch.device("cpu")
    step = max(width, PIECE_ELEMENTS >> log_w << log_w)
    parts = [_hash_range(g, min(g + step, g1), width, log_w, keys, cpu) for g in range(g0, g1, step)]
    hashed = (torch.cat([b for b, _ in parts]), torch.cat([s for _, s in parts])) if len(parts) > 1 else parts[0]
    _cache[key] = hashed
    _cache_bytes += size
    return hashed


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
    if (
        not isinstance(coords, torch.Tensor)
        or coords.dtype.is_floating_point
        or coords.dtype.is_complex
        or coords.dtype == torch.bool
    ):
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


_scratch = threading.local()


def _values_buffer(rows: int, cols: int, device) -> torch.Tensor:
    """A reusable float32 ``[rows, cols]`` buffer for the signed values of one piece (CPU): a fresh tensor of
    megabytes would be mapped and page-faulted on every call."""
    if device.type != "cpu":
        return torch.empty(rows, cols, dtype=torch.float32, device=device)
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.numel() < rows * cols:
        buf = _scratch.buf = torch.empty(rows * cols, dtype=torch.float32)
    return buf[: rows * cols].view(rows, cols)


def _accumulate(result: torch.Tensor, a, g0: int, g1: int, buckets: torch.Tensor, signs: torch.Tensor) -> None:
    """``result[:, h(g)] += s(g) · x[:, g - offset]`` for the coordinates ``g0 .. g1 - 1``, in their order."""
    values = _values_buffer(a.rows, g1 - g0, result.device)
    if a.rows == 1:  # 1-D ops; scatter_add_ adds in the same order as index_add_, faster on the CPU
        torch.mul(a.x2[0, g0 - a.offset : g1 - a.offset], signs, out=values[0])  # float32 (type promotion)
        result[0].scatter_add_(0, buckets, values[0])
    else:
        torch.mul(a.x2[:, g0 - a.offset : g1 - a.offset], signs, out=values)
        result.index_add_(1, buckets, values)


def count_sketch_reference(
    x: torch.Tensor, width: int, seed: int, *, offset: int = 0, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Count sketch of ``x`` (``[D]`` or ``[N, D]``) into ``width`` buckets, in torch, on x's device.

    Same contract as :func:`congrad.kernels.count_sketch`; the result agrees with the Triton kernel to float
    rounding (the two add the same terms in different orders).
    """
    a = check_args(x, width, seed, offset, out)
    n, d = a.rows, a.dim
    device = x.device
    result = torch.zeros(n, a.width, dtype=torch.float32, device=device)
    # Piece length: a multiple of the width, about PIECE_ELEMENTS values over all rows (CACHED_PIECE_ELEMENTS
    # for pieces the CPU hash cache holds; a piece that does not fit is walked in small pieces instead).
    # Every bucket receives its terms in coordinate order whatever the pieces, so the result does not
    # depend on them.
    budget = PIECE_ELEMENTS_CUDA if x.is_cuda else PIECE_ELEMENTS
    piece = max(a.width, (budget // n) >> a.log_w << a.log_w)
    cached = device.type == "cpu" and HASH_CACHE_BYTES > 0
    big = max(a.width, (CACHED_PIECE_ELEMENTS // n) >> a.log_w << a.log_w) if cached else piece
    g, end = a.offset, a.offset + d
    while g < end:
        g1 = min((g // big + 1) * big, end)
        hashed = _cached_hash_range(g, g1, a.width, a.log_w, a.keys) if cached else None
        if hashed is not None:
            _accumulate(result, a, g, g1, *hashed)
        else:
            while g < g1:
                stop = min((g // piece + 1) * piece, g1)
                _accumulate(result, a, g, stop, *_hash_range(g, stop, a.width, a.log_w, a.keys, device))
                g = stop
        g = g1
    if a.out is not None:
        a.out += result.view_as(a.out)
        return a.out
    return result[0] if a.squeeze else result

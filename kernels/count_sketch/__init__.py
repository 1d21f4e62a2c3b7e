"""Count sketch of per-sample gradients: a Triton kernel and a torch reference sharing one hash.

``count_sketch(x, width, seed, *, offset=0, out=None)`` maps ``x`` (``[D]`` or ``[N, D]``; float32,
bfloat16 or float16) to float32 ``[width]`` / ``[N, width]`` with
``S(x)[b] = Σ_{j: h(offset + j) = b} s(offset + j) · x[j]``, where the bucket ``h`` and sign ``s`` of a
*global* coordinate depend only on that coordinate, ``width`` and ``seed``. Hence sketches of pieces of a
long vector, each at its own offset, add up to the sketch of the whole vector, and ``out=`` accumulates
them in place. The sketch is linear and unbiased for inner products: ``E <S a, S b> = <a, b>`` over seeds.

* :mod:`congrad.kernels.hashing` — the hash family, why inner products stay unbiased, the variance, and how one
  definition of the arithmetic serves both implementations.
* :mod:`congrad.kernels.triton_kernel` — the atomic-free gather layout of the GPU kernel.
* :mod:`congrad.kernels.reference` — the torch implementation (bounded memory for any D).

Dispatch of :func:`count_sketch`: a CUDA tensor goes to the Triton kernel (to the torch reference, on the
GPU, if Triton is not installed); a CPU tensor to the torch reference. :func:`count_sketch_triton` runs the
Triton kernel explicitly, on CPU tensors too when ``TRITON_INTERPRET=1`` was set before Triton was imported
(Triton's interpreter: how the tests exercise the kernel without a GPU; far too slow for real work).

Requirements: ``width`` a power of two in ``[2**8, 2**22]``; ``seed`` any integer (modulo 2**64);
``offset`` an integer ``>= 0`` with ``offset + D <= 2**62``; ``out``, when given, a float32 tensor of the
result's shape on x's device. Input with a non-unit stride in its last dimension is copied to a contiguous
one first (the Triton path reads rows with any row stride in place).
"""

from __future__ import annotations

import warnings

import torch

from .hashing import MAX_LOG_WIDTH, MIN_LOG_WIDTH, seed_keys
from .reference import bucket_and_sign, count_sketch_reference

MIN_WIDTH = 1 << MIN_LOG_WIDTH
MAX_WIDTH = 1 << MAX_LOG_WIDTH

_warned_no_triton = False


def count_sketch_triton(
    x: torch.Tensor, width: int, seed: int, *, offset: int = 0, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Count sketch with the Triton kernel (CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``)."""
    from .triton_kernel import count_sketch_triton as run

    return run(x, width, seed, offset=offset, out=out)


def _triton_available() -> bool:
    from . import triton_kernel

    return triton_kernel.triton is not None


def count_sketch(
    x: torch.Tensor, width: int, seed: int, *, offset: int = 0, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Count sketch of ``x`` (``[D]`` or ``[N, D]``) into ``width`` buckets: float32 ``[width]`` / ``[N, width]``.

    ``offset``: element ``j`` of each row is hashed as global coordinate ``offset + j``, so
    ``count_sketch(cat([a, b]), w, s) == count_sketch(a, w, s) + count_sketch(b, w, s, offset=len(a))``
    (to float rounding). ``out``: a float32 tensor of the result's shape; the sketch is added into it and it
    is returned. Raises TypeError for a non-float dtype and ValueError for a bad width, rank, offset or an
    empty ``x``. See the package docstring for the dispatch between the Triton kernel and the reference.
    """
    global _warned_no_triton
    if isinstance(x, torch.Tensor) and x.is_cuda:
        if _triton_available():
            return count_sketch_triton(x, width, seed, offset=offset, out=out)
        if not _warned_no_triton and x.is_cuda:
            warnings.warn(
                "Triton is not installed: congrad.kernels.count_sketch uses the (slower) torch reference on the GPU",
                RuntimeWarning,
                stacklevel=2,
            )
            _warned_no_triton = True
    return count_sketch_reference(x, width, seed, offset=offset, out=out)


__all__ = [
    "count_sketch",
    "count_sketch_reference",
    "count_sketch_triton",
    "bucket_and_sign",
    "seed_keys",
    "MIN_WIDTH",
    "MAX_WIDTH",
]

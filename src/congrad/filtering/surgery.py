"""Consensus of per-language aggregate sketches, with or without gradient surgery.

The aggregates are the rows m_1..m_L of a matrix ``grads`` [L, w]. PCGrad and GradVac both walk, for each
language ℓ, over the other languages k in a random order and update g_ℓ ← g_ℓ + a·m_k, where the
coefficient a depends only on g_ℓ·m_k, ‖g_ℓ‖ and ‖m_k‖ (m_k is always the ORIGINAL aggregate).

Why this runs on L×L matrices: every update adds a multiple of an original row, so each g_ℓ stays in their
span, g_ℓ = Σ_j C[ℓ, j]·m_j, and every quantity a rule needs is read from C and the Gram matrix
G = M·Mᵀ (g_ℓ·m_k = (C·G)[ℓ, k], ‖g_ℓ‖² = Σ_j C[ℓ, j]·(C·G)[ℓ, j]). The w-long vectors are touched twice —
once for G, once for C·M — however many projections happen. Both products run in float64, over column
chunks to bound memory, so a conflict test (the sign of a dot product) depends neither on w nor on whether
the user enabled TF32 matmuls.

Order: for ℓ = 0..L−1 in turn, ``torch.randperm(L − 1, generator=generator)`` permutes the other languages
taken in ascending index order. ``generator=None`` means a fresh CPU generator seeded with 0, so the same
aggregates always give the same consensus. Rows are processed independently, so the walk is vectorised
over ℓ: step t applies every language's t-th update at once.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable
from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from congrad.errors import ConfigError
from congrad.utils.schema import Settings

Aggregator = Literal["pcgrad", "gradvac", "mean", "none", "random"]
AGGREGATORS = typing.get_args(Aggregator)


class SurgerySettings(Settings):
    """The surgery's keys of the ``filter`` group."""

    group: ClassVar[str] = "filter"
    aggregator: Aggregator
    gradvac_target: Annotated[float, Field(gt=-1, lt=1)]


_CHUNK = 1 << 16  # columns per float64 block: L·2^16·8 bytes (50 MB at L = 100)

# (g_ℓ·m_k, ‖g_ℓ‖², ‖m_k‖²) for every ℓ at one step -> the coefficient a_ℓ of g_ℓ ← g_ℓ + a_ℓ·m_k
Rule = Callable[[Tensor, Tensor, Tensor], Tensor]


def pcgrad(grads: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """PCGrad consensus Σ_ℓ g_ℓ of ``grads`` [L, w]; returns [w]. See :func:`pcgrad_project`."""
    return pcgrad_project(grads, generator).sum(0)


def pcgrad_project(grads: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """PCGrad (Yu et al. 2020) per-language vectors [L, w].

    If g_ℓ·m_k < 0, g_ℓ ← g_ℓ − (g_ℓ·m_k / ‖m_k‖²)·m_k. A zero m_k never conflicts (its dot is exactly 0).
    """
    return _surgery(grads, generator, _pcgrad_rule)


def gradvac(grads: Tensor, generator: torch.Generator | None = None, target: float = 0.0) -> Tensor:
    """GradVac consensus Σ_ℓ g_ℓ of ``grads`` [L, w]; returns [w]. See :func:`gradvac_project`."""
    return gradvac_project(grads, generator, target).sum(0)


def gradvac_project(grads: Tensor, generator: torch.Generator | None = None, target: float = 0.0) -> Tensor:
    """Gradient Vaccine (Wang et al. 2021) per-language vectors [L, w], with a fixed target similarity.

    When cos(g_ℓ, m_k) = φ is below the target φ̂, g_ℓ ← g_ℓ + a·m_k with the paper's closed form
    a = ‖g_ℓ‖·(φ̂·√(1−φ²) − φ·√(1−φ̂²)) / (‖m_k‖·√(1−φ̂²)), which turns g_ℓ within span(g_ℓ, m_k) until
    cos(g_ℓ, m_k) = φ̂ exactly. The paper's φ̂ is an EMA of the cosines seen over training steps (starting
    at 0); a single filtering pass has no such history, so φ̂ is a fixed setting here. With φ̂ = 0 the rule
    is exactly PCGrad's projection; φ̂ > 0 also pulls positively but weakly aligned languages together.
    """
    SurgerySettings.check(gradvac_target=target)
    return _surgery(grads, generator, _gradvac_rule(target))


def mean(grads: Tensor) -> Tensor:
    """The plain mean of the aggregates [L, w] -> [w], no surgery."""
    _check(grads)
    return grads.mean(0)


def consensus(
    grads: Tensor, aggregator: str, generator: torch.Generator | None = None, **options
) -> tuple[Tensor | None, Tensor]:
    """(consensus [w], per-language vectors [L, w]) of the aggregates ``grads`` by ``aggregator``.

    ``pcgrad`` / ``gradvac``: the surgered vectors and their sum (``options`` go to the aggregator, e.g.
    ``target`` for gradvac). ``mean``: the unchanged aggregates and their mean. ``none``: no common
    direction — the consensus is None and each sample is scored against its own language's aggregate
    (:func:`congrad.filtering.selection.own_language_scores`). ``random``: no direction either; the control
    arm scores samples by uniform draws (:class:`congrad.filtering.method.ConGrad`).
    """
    SurgerySettings.check(aggregator=aggregator)
    if aggregator in ("pcgrad", "gradvac"):
        project = pcgrad_project if aggregator == "pcgrad" else gradvac_project
        projected = project(grads, generator, **options)
        return projected.sum(0), projected
    if options:
        raise ConfigError(f"filter.aggregator={aggregator} takes no options, got {sorted(options)}")
    if aggregator == "mean":
        return mean(grads), grads
    _check(grads)
    return None, grads


def cosine_matrix(vectors: Tensor) -> Tensor:
    """Pairwise cosines [L, L] of the rows of ``vectors`` [L, w]; a zero row has cosine 0 with everything."""
    _check(vectors)
    gram = _gram(vectors)
    norms = gram.diagonal().sqrt()
    outer = norms[:, None] * norms[None, :]
    cos = torch.where(outer > 0, gram / outer, 0.0).clamp(-1.0, 1.0)
    return cos.to(vectors.dtype)


def _pcgrad_rule(dot: Tensor, norm2: Tensor, norm2_k: Tensor) -> Tensor:
    return torch.where(dot < 0, -dot / norm2_k, 0.0)


def _gradvac_rule(target: float) -> Rule:
    sin_target = math.sqrt(1.0 - target**2)

    def rule(dot: Tensor, norm2: Tensor, norm2_k: Tensor) -> Tensor:
        norm2 = norm2.clamp_min(0.0)  # float round-off of Σ C·(C·G) can dip just below 0
        norms = (norm2 * norm2_k).sqrt()
        valid = norms > 0
        cos = torch.where(valid, dot / norms, 0.0).clamp(-1.0, 1.0)
        sin = (1.0 - cos**2).sqrt()
        a = (norm2 / norm2_k).sqrt() * (target * sin - cos * sin_target) / sin_target
        return torch.where(valid & (cos < target), a, 0.0)

    return rule


def _surgery(grads: Tensor, generator: torch.Generator | None, rule: Rule) -> Tensor:
    """Apply ``rule`` along each language's random walk over the others; returns the vectors [L, w]."""
    _check(grads)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    gram = _gram(grads).cpu()
    n = gram.shape[0]
    coef = torch.eye(n, dtype=torch.float64)
    dots = gram.clone()  # dots[ℓ, j] = g_ℓ·m_j = (coef @ gram)[ℓ, j]
    rows = torch.arange(n)
    for k in _walk_order(n, generator).T:  # k[ℓ]: the language g_ℓ meets at this step
        a = rule(dots[rows, k], (coef * dots).sum(1), gram[k, k])
        coef[rows, k] += a
        dots += a[:, None] * gram[k]
    return _combine(coef, grads)


def _walk_order(n: int, generator: torch.Generator) -> Tensor:
    """[n, n−1]: row ℓ is a random order of the indices other than ℓ (see the module docstring)."""
    ascending = torch.arange(n - 1).expand(n, n - 1)
    others = ascending + (ascending >= torch.arange(n)[:, None])
    perms = torch.stack([torch.randperm(n - 1, generator=generator) for _ in range(n)])
    return others.gather(1, perms)


def _gram(v: Tensor) -> Tensor:
    """v·vᵀ in float64, [L, L], on v's device."""
    gram = torch.zeros(v.shape[0], v.shape[0], dtype=torch.float64, device=v.device)
    for block in v.split(_CHUNK, dim=1):
        block = block.double()
        gram += block @ block.T
    return gram


def _combine(coef: Tensor, v: Tensor) -> Tensor:
    """coef·v computed in float64, returned in v's dtype and device."""
    coef = coef.to(v.device)
    return torch.cat([(coef @ block.double()).to(v.dtype) for block in v.split(_CHUNK, dim=1)], dim=1)


def _check(grads: Tensor) -> None:
    if grads.ndim != 2 or grads.shape[0] == 0:
        raise ValueError(f"expected aggregates of shape [L, w] with L >= 1, got {tuple(grads.shape)}")

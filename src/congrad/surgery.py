"""Public import path of the gradient-surgery contract: ``congrad.surgery.pcgrad(grads, generator=None)``.

Re-exports the aggregators implemented in :mod:`congrad.filtering.surgery`.
"""

from congrad.filtering.surgery import (
    AGGREGATORS,
    consensus,
    cosine_matrix,
    gradvac,
    gradvac_project,
    mean,
    pcgrad,
    pcgrad_project,
)

__all__ = [
    "AGGREGATORS",
    "consensus",
    "cosine_matrix",
    "gradvac",
    "gradvac_project",
    "mean",
    "pcgrad",
    "pcgrad_project",
]

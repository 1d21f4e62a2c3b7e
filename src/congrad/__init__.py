"""congrad: conflicting-gradient filtering for multilingual preference alignment.

The public functions, importable from here (loaded on first use, so ``import congrad`` stays light):

- :func:`count_sketch` (:mod:`congrad.kernels`): count sketch of ``[D]`` or ``[N, D]`` into ``width`` buckets;
- :func:`pcgrad` (:mod:`congrad.filtering.surgery`): PCGrad consensus of per-language vectors ``[L, w]``;
- :func:`dpo_loss` (:mod:`congrad.models.losses`): per-pair DPO / LP-DPO / IPO / robust losses.
"""

from importlib import import_module

__version__ = "0.1.0"

_PUBLIC = {
    "count_sketch": "congrad.kernels",
    "pcgrad": "congrad.filtering.surgery",
    "dpo_loss": "congrad.models.losses",
}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'congrad' has no attribute {name!r}")

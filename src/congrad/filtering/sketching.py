"""Sketched per-pair gradients of the DPO loss.

For every pair i of a batch, ĝ_i = S(∇_θ L_i) ∈ R^w where θ are the selected parameters (``params``:
``lora``, ``all`` or a regex over parameter names) laid end to end in ``named_parameters`` order, and S is
a fixed linear sketch (count sketch through :func:`congrad.kernels.count_sketch`, or a seeded Gaussian
projection). Because S is linear and hashes *global* coordinates, each parameter is sketched on its own at
its offset and the pieces add up to the sketch of the whole gradient.

Two methods give the same sketches:

``loop``     one forward + backward per pair; the oracle.
``hooks``    one forward + backward for the whole batch. Every module that owns a selected parameter
             (``nn.Linear``, ``nn.Embedding``, or any other leaf module such as a norm) gets a forward hook
             that puts a capture node (:mod:`congrad.filtering.capture`) behind its output; in the backward
             the node receives δ = ∂L/∂output together with the module's input, and
             :mod:`congrad.filtering.layer_sketch` turns them into each pair's sketched gradient of that
             module's parameters — for a Linear weight Σ_t δ_t x_tᵀ over the pair's tokens, formed a block of
             rows and a chunk of pairs at a time (``chunk_bytes`` bounds it), sketched at its offset, dropped.
             Memory grows with one block, never with batch × parameter count, and no per-pair gradient of a
             whole layer is formed when it does not fit the budget, so ``params=all`` works at 8B shapes.
             ``auto`` picks ``hooks`` when every selected parameter is owned by such modules only.

What is exact. Both methods compute every pair's gradient of the selected parameters exactly (float32
accumulation, in a different order) and apply the *same* sketch to it: ``hooks`` equals ``loop`` to float
rounding, for LoRA, for full weight matrices, embeddings and norms alike (tests/test_sketching.py). The only
approximation of the method is the sketch itself (unbiased inner products, variance in
:mod:`congrad.kernels.hashing`).

Memory. The capture node saves the module's input through autograd's saved-tensor mechanism, so under
gradient checkpointing the inputs are recomputed with the checkpointed region in the backward instead of
being held through the pass: the pass holds the activations of a checkpointed training step plus one
block of per-pair gradients and the ``[B, w]`` sketches (bench/memory.py measures it). The backward runs
with respect to a scalar anchor only: autograd forms no parameter gradient at all, which also makes the
pass work unchanged when parameters are sharded (FSDP): it reads activations, never parameters.
"""

from __future__ import annotations

import math
import re
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from congrad.errors import ConfigError
from congrad.filtering.capture import capture, new_anchor
from congrad.filtering.layer_sketch import LayerSketcher
from congrad.kernels import MAX_WIDTH, MIN_WIDTH, count_sketch
from congrad.utils.schema import Settings, checked

Method = Literal["auto", "hooks", "loop"]
Sketch = Literal["count", "gaussian"]
METHODS = typing.get_args(Method)
SKETCHES = typing.get_args(Sketch)


def _width(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and MIN_WIDTH <= value <= MAX_WIDTH
    if ok and value & (value - 1) == 0:
        return None
    low, high = MIN_WIDTH.bit_length() - 1, MAX_WIDTH.bit_length() - 1
    return f"a power of two from {MIN_WIDTH} (2^{low}) to {MAX_WIDTH} (2^{high})"


def _params(value: Any) -> str | None:
    if value in ("lora", "all"):
        return None
    if isinstance(value, str) and value:
        try:
            re.compile(value)
            return None
        except re.error as err:
            return f"lora, all, or a regular expression over parameter names (this one does not compile: {err})"
    return "lora, all, or a regular expression over parameter names"


class SketchSettings(Settings):
    """The ``sketch`` group: what is sketched (``params``), how (``kind``, ``width``, ``seed``, ``method``)
    and in what pieces (``chunk_mb`` of layer inputs at a time, ``batch_size`` pairs per pass)."""

    group: ClassVar[str] = "sketch"
    kind: Sketch
    width: checked(_width, int)
    seed: int
    params: checked(_params, str)
    method: Method
    chunk_mb: Annotated[float, Field(gt=0)]
    batch_size: Annotated[int, Field(ge=1)] | None


def select_parameters(model: nn.Module, params: str) -> list[tuple[str, nn.Parameter]]:
    """The parameters whose gradient is sketched: ``lora`` (LoRA adapter weights), ``all``, or a regex
    searched in each parameter's name."""
    named = list(model.named_parameters())
    if params == "lora":
        chosen = [(n, p) for n, p in named if "lora_" in n]
    elif params == "all":
        chosen = named
    else:
        pattern = re.compile(params)
        chosen = [(n, p) for n, p in named if pattern.search(n)]
    if not chosen:
        raise ConfigError(f"sketch.params={params!r} selects no parameter of the model")
    return chosen


def gaussian_sketch(
    x: Tensor, width: int, seed: int, *, offset: int = 0, out: Tensor | None = None, block: int = 1024
) -> Tensor:
    """A seeded Gaussian random projection R^D -> R^w (entries N(0, 1/w)), the Flora-style alternative to
    the count sketch. Generated in blocks of ``block`` global coordinates, each from its own seed, so it
    is linear in pieces the same way the count sketch is. Slow: for comparisons, not for large models."""
    x2 = x.reshape(-1, x.shape[-1]).float()
    result = torch.zeros(x2.shape[0], width, device=x.device) if out is None else out.view(-1, width)
    start = offset
    end = offset + x2.shape[1]
    while start < end:
        b = start // block
        stop = min(end, (b + 1) * block)
        g = torch.Generator().manual_seed((seed * 2**32 + b) % 2**63)
        proj = torch.randn(block, width, generator=g)[start - b * block : stop - b * block].to(x.device)
        result += x2[:, start - offset : stop - offset] @ proj / math.sqrt(width)
        start = stop
    return result.view(*x.shape[:-1], width) if out is None else out


@dataclass
class _Slot:
    """A selected parameter, where its coordinates start in the sketched vector."""

    name: str
    param: nn.Parameter
    offset: int


@dataclass
class _Owner:
    """A module that owns selected parameters directly: how its gradients are sketched (``linear``,
    ``embedding`` or ``replay``), and its selected parameters by attribute name -> offset. Names, not
    parameter objects: a sharding wrapper may swap the objects for unsharded ones during the forward."""

    module: nn.Module
    kind: str
    slots: dict[str, int]


class PerPairSketcher:
    """Sketches ``[B, w]`` of the per-pair gradients of ``module.pair_losses`` for a batch.

    ``module`` is a :class:`congrad.models.DPOModule` (anything with ``policy`` and ``pair_losses``).
    """

    def __init__(
        self,
        module,
        width: int,
        seed: int,
        params: str = "lora",
        method: str = "auto",
        sketch: str = "count",
        chunk_bytes: int = 256 * 2**20,
    ):
        SketchSettings.check(method=method, kind=sketch)
        self.module, self.width, self.seed = module, width, seed
        self.chunk_bytes = chunk_bytes
        self.kind = sketch
        self.project = count_sketch if sketch == "count" else gaussian_sketch
        self.slots, offset = [], 0
        for name, param in select_parameters(module.policy, params):
            self.slots.append(_Slot(name, param, offset))
            offset += param.numel()  # the full size, also for a sharded (DTensor) parameter
        self.dim = offset
        self.owners, uncovered = self._owners()
        if method == "hooks" and uncovered:
            raise ConfigError(
                f"sketch.method=hooks covers parameters of nn.Linear, nn.Embedding and other leaf modules only; "
                f"{len(uncovered)} selected parameters are not (e.g. {uncovered[0]}): use sketch.method=loop or "
                f"narrow sketch.params"
            )
        self.method = ("loop" if uncovered else "hooks") if method == "auto" else method
        self._replaying = False

    @classmethod
    def from_config(cls, module, sketch) -> PerPairSketcher:
        """From the ``sketch`` config group (width, seed, params, method, kind, chunk_mb)."""
        return cls(
            module,
            width=sketch["width"],
            seed=sketch["seed"],
            params=sketch["params"],
            method=sketch["method"],
            sketch=sketch["kind"],
            chunk_bytes=int(sketch["chunk_mb"] * 2**20),
        )

    def _owners(self) -> tuple[list[_Owner], list[str]]:
        """The modules that own selected parameters, and the names of selected parameters the hooks method
        cannot sketch (owned, possibly besides a supported module, by a module it cannot replay)."""
        slot_of = {id(s.param): s for s in self.slots}
        owners, unsupported = [], set()
        for module in self.module.policy.modules():
            owned = {
                attr: slot_of[id(p)] for attr, p in module._parameters.items() if p is not None and id(p) in slot_of
            }
            if not owned:
                continue
            kind = _kind(module)
            if kind is None:
                unsupported |= {s.name for s in owned.values()}
            else:
                owners.append(_Owner(module, kind, {attr: s.offset for attr, s in owned.items()}))
        return owners, [s.name for s in self.slots if s.name in unsupported]

    def __call__(self, batch: dict, ref_logps: Tensor | None = None) -> Tensor:
        """Sketches ``[B, w]`` (float32) for a concatenated batch; the model's ``.grad`` are left untouched."""
        if self.method == "loop":
            with self._only_selected_trainable():
                return self._loop(batch, ref_logps)
        return self._hooks(batch, ref_logps)

    def exact_gradients(self, batch: dict, ref_logps: Tensor | None = None) -> Tensor:
        """The unsketched per-pair gradients ``[B, d]`` (float32; the selected parameters end to end, at their
        offsets), one backward per pair: what the sketches compress. d floats per pair — for studies and
        tests on small models, never for large ones."""
        with self._only_selected_trainable():
            return torch.stack(
                [
                    torch.cat(
                        [
                            (torch.zeros_like(s.param) if g is None else g).flatten().float()
                            for s, g in zip(self.slots, grads)
                        ]
                    )
                    for grads in self._pair_gradients(batch, ref_logps)
                ]
            )

    # ---- the oracle: one backward per pair ----------------------------------------------------------
    def _pair_gradients(self, batch: dict, ref_logps: Tensor | None) -> Iterator[tuple[Tensor | None, ...]]:
        """For each pair of the batch, the gradients of its own loss w.r.t. the selected parameters (None
        where a parameter does not take part)."""
        b = len(batch["index"])
        if ref_logps is None:
            ref_logps = self.module.reference_logps(batch)
        params = [s.param for s in self.slots]
        for i in range(b):
            loss = self.module.pair_losses(_pair(batch, i), ref_logps=ref_logps[[i, b + i]])["loss"].sum()
            yield torch.autograd.grad(loss, params, allow_unused=True)

    def _loop(self, batch: dict, ref_logps: Tensor | None) -> Tensor:
        out = torch.zeros(len(batch["index"]), self.width, device=batch["input_ids"].device)
        for i, grads in enumerate(self._pair_gradients(batch, ref_logps)):
            for slot, grad in zip(self.slots, grads):
                if grad is not None:
                    self.project(grad.reshape(1, -1), self.width, self.seed, offset=slot.offset, out=out[i : i + 1])
        return out

    # ---- batched: module inputs and output-gradients, captured where autograd has them -----------------
    def _hooks(self, batch: dict, ref_logps: Tensor | None) -> Tensor:
        b = len(batch["index"])
        device = batch["input_ids"].device
        out = torch.zeros(b, self.width, device=device)
        if ref_logps is None:
            ref_logps = self.module.reference_logps(batch)
        anchor = new_anchor(device)
        layers = LayerSketcher(self.project, self.kind, self.width, self.seed, self.chunk_bytes)
        handles = [
            owner.module.register_forward_hook(
                partial(self._forward_hook, owner, layers, anchor, out), with_kwargs=True
            )
            for owner in self.owners
        ]
        try:
            with torch.enable_grad():
                loss = self.module.pair_losses(batch, ref_logps=ref_logps)["loss"].sum()
                if loss.requires_grad:  # fires the capture nodes; no parameter gradient is formed
                    torch.autograd.grad(loss, [anchor], allow_unused=True)
        finally:
            for h in handles:
                h.remove()
        return out

    def _forward_hook(
        self,
        owner: _Owner,
        layers: LayerSketcher,
        anchor: Tensor,
        out: Tensor,
        module: nn.Module,
        args: tuple,
        kwargs: dict,
        output,
    ):
        # Runs in the forward and again in a checkpointed region's recompute (whose nodes only supply
        # recomputed tensors to the forward's nodes); not under no_grad (the reference) or in a replay.
        if self._replaying or not torch.is_grad_enabled():
            return None
        if owner.kind == "replay" and (len(args) != 1 or kwargs or not isinstance(output, Tensor)):
            raise ConfigError(
                f"sketch.method=hooks replays {type(module).__name__} on one tensor input, but it "
                f"was called with {len(args)} positional and {len(kwargs)} keyword arguments: use "
                f"sketch.method=loop or narrow sketch.params"
            )
        sink = partial(self._sketch_module, owner, layers, out)
        return capture(output, anchor, sink, args[0])

    def _sketch_module(self, owner: _Owner, layers: LayerSketcher, out: Tensor, delta: Tensor, x: Tensor) -> None:
        """Pair i's sketched gradient of ``owner``'s selected parameters from its input ``x`` (token ids for
        an embedding) and output-gradient ``delta`` (rows ``i`` and ``B + i`` belong to pair i)."""
        delta = delta.detach()
        if owner.kind == "linear":
            if "weight" in owner.slots:
                layers.linear_weight(x, delta, owner.slots["weight"], out)
            if "bias" in owner.slots:
                layers.linear_bias(delta, owner.slots["bias"], out)
        elif owner.kind == "embedding":
            module = owner.module
            scale = float(module.embed_scale.to(module.weight.dtype)) if _is_scaled_embedding(module) else 1.0
            layers.embedding(module, x, delta, owner.slots["weight"], out, scale=scale)
        else:
            self._replaying = True
            try:
                layers.replay(owner.module, owner.slots, x, delta, out)
            finally:
                self._replaying = False

    @contextmanager
    def _only_selected_trainable(self) -> Iterator[None]:
        """Gradients flow to the selected parameters only (and to all of them, frozen or not)."""
        model = self.module.policy
        before = {id(p): p.requires_grad for p in model.parameters()}
        selected = {id(s.param) for s in self.slots}
        for p in model.parameters():
            p.requires_grad_(id(p) in selected)
        try:
            yield
        finally:
            for p in model.parameters():
                p.requires_grad_(before[id(p)])


def _kind(module: nn.Module) -> str | None:
    """How the hooks method sketches the gradients of a module's own parameters, or None if it cannot.

    ``linear`` and ``embedding`` only for modules that compute exactly what ``nn.Linear`` / ``nn.Embedding``
    compute: their own forward, or, for an embedding, its output times a scalar ``embed_scale`` (Gemma's
    scaled word embeddings). Any other leaf module, subclasses with a forward of their own included, is
    replayed. A module with children that owns parameters directly cannot be sketched by hooks.
    """
    forward = type(module).forward
    if isinstance(module, nn.Linear) and forward is nn.Linear.forward:
        return "linear"
    if isinstance(module, nn.Embedding) and (forward is nn.Embedding.forward or _is_scaled_embedding(module)):
        # max_norm renormalises rows in place, scale_grad_by_freq counts tokens over the whole batch
        plain = module.max_norm is None and not module.scale_grad_by_freq and not module.sparse
        return "embedding" if plain else None
    return "replay" if next(module.children(), None) is None else None


def _is_scaled_embedding(module: nn.Module) -> bool:
    """transformers' ``*ScaledWordEmbedding`` (Gemma 1-3): ``nn.Embedding.forward(ids) * embed_scale``."""
    return (
        type(module).__name__.endswith("ScaledWordEmbedding")
        and isinstance(getattr(module, "embed_scale", None), Tensor)
        and module.embed_scale.numel() == 1
    )


def _pair(batch: dict, i: int) -> dict:
    """Pair i of a concatenated batch as a batch of one (padding trimmed)."""
    b = len(batch["index"])
    rows = [i, b + i]
    length = int(batch["attention_mask"][rows].sum(-1).max())
    return {
        "input_ids": batch["input_ids"][rows, :length],
        "attention_mask": batch["attention_mask"][rows, :length],
        "completion_mask": batch["completion_mask"][rows, :length],
        "index": batch["index"][i : i + 1],
        "language": [batch["language"][i]],
    }

"""Sketched per-pair gradients of the DPO loss.

For every pair i of a batch, ĝ_i = S(∇_θ L_i) ∈ R^w where θ are the selected parameters (``params``:
``lora``, ``all`` or a regex over parameter names) laid end to end in ``named_parameters`` order, and S is
a fixed linear sketch (count sketch through :func:`congrad.kernels.count_sketch`, or a seeded Gaussian
projection). Because S is linear and hashes *global* coordinates, each parameter is sketched on its own at
its offset and the pieces add up to the sketch of the whole gradient.

Two methods give the same sketches:

``loop``     one forward + backward per pair; the oracle.
``hooks``    one forward + backward for the whole batch. For every ``nn.Linear`` that owns a selected
             weight, a forward hook keeps the layer input x and a hook on its output receives δ = ∂L/∂y.
             Rows of different pairs never mix in a transformer, so pair i's weight gradient is
             Σ_t δ_{i,t} x_{i,t}ᵀ over the tokens of its chosen and rejected rows. That is formed for a
             chunk of pairs at a time (``chunk_bytes`` bounds it), sketched, and dropped: memory grows with
             one layer × one chunk, never with batch × parameter count. Selected parameters outside a
             Linear (norm scales, embeddings) need ``loop``; ``auto`` picks ``hooks`` when it can.

The hooks keep a layer's input until its gradient arrives. Without gradient checkpointing autograd holds
those same tensors anyway, so the pass costs no extra activation memory; with checkpointing they stay alive
through the pass although autograd itself would recompute them (at Llama-3-8B, 16 × 512 tokens, bf16:
about 14 GB for all LoRA layer inputs) — the result is the same, the memory saving is partly lost.
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor, nn

from congrad.errors import ConfigError
from congrad.kernels import count_sketch

METHODS = ("auto", "hooks", "loop")
SKETCHES = ("count", "gaussian")


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


def gaussian_sketch(x: Tensor, width: int, seed: int, *, offset: int = 0, out: Tensor | None = None,
                    block: int = 1024) -> Tensor:
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


class PerPairSketcher:
    """Sketches ``[B, w]`` of the per-pair gradients of ``module.pair_losses`` for a batch.

    ``module`` is a :class:`congrad.models.DPOModule` (anything with ``policy`` and ``pair_losses``).
    """

    def __init__(self, module, width: int, seed: int, params: str = "lora", method: str = "auto",
                 sketch: str = "count", chunk_bytes: int = 256 * 2**20):
        if method not in METHODS:
            raise ConfigError(f"sketch.method must be one of {', '.join(METHODS)}, got {method!r}")
        if sketch not in SKETCHES:
            raise ConfigError(f"sketch.kind must be one of {', '.join(SKETCHES)}, got {sketch!r}")
        self.module, self.width, self.seed = module, width, seed
        self.chunk_bytes = chunk_bytes
        self.project = count_sketch if sketch == "count" else gaussian_sketch
        self.slots, offset = [], 0
        for name, param in select_parameters(module.policy, params):
            self.slots.append(_Slot(name, param, offset))
            offset += param.numel()
        self.layers = self._owning_linear_layers()
        covered = {id(slot.param) for slots in self.layers.values() for slot in slots}
        uncovered = [s.name for s in self.slots if id(s.param) not in covered]
        if method == "hooks" and uncovered:
            raise ConfigError(
                f"sketch.method=hooks covers parameters of nn.Linear layers only; {len(uncovered)} selected "
                f"parameters are not (e.g. {uncovered[0]}): use sketch.method=loop or narrow sketch.params"
            )
        self.method = ("loop" if uncovered else "hooks") if method == "auto" else method

    @classmethod
    def from_config(cls, module, sketch) -> "PerPairSketcher":
        """From the ``sketch`` config group (width, seed, params, method, kind, chunk_mb)."""
        return cls(module, width=sketch["width"], seed=sketch["seed"], params=sketch["params"],
                   method=sketch["method"], sketch=sketch["kind"], chunk_bytes=int(sketch["chunk_mb"] * 2**20))

    def _owning_linear_layers(self) -> dict[nn.Linear, list[_Slot]]:
        """Each ``nn.Linear`` that owns a selected weight or bias -> those parameters' slots."""
        slot_of = {id(s.param): s for s in self.slots}
        layers: dict[nn.Linear, list[_Slot]] = {}
        for layer in self.module.policy.modules():
            if isinstance(layer, nn.Linear):
                for p in (layer.weight, layer.bias):
                    if p is not None and id(p) in slot_of:
                        layers.setdefault(layer, []).append(slot_of[id(p)])
        return layers

    def __call__(self, batch: dict, ref_logps: Tensor | None = None) -> Tensor:
        """Sketches ``[B, w]`` (float32) for a concatenated batch; the model's ``.grad`` are left untouched."""
        with self._only_selected_trainable():
            if self.method == "loop":
                return self._loop(batch, ref_logps)
            return self._hooks(batch, ref_logps)

    def exact_gradients(self, batch: dict, ref_logps: Tensor | None = None) -> Tensor:
        """The unsketched per-pair gradients ``[B, d]`` (float32; the selected parameters end to end, at their
        offsets), one backward per pair: what the sketches compress. d floats per pair — for studies and
        tests on small models, never for large ones."""
        with self._only_selected_trainable():
            return torch.stack([
                torch.cat([(torch.zeros_like(s.param) if g is None else g).flatten().float()
                           for s, g in zip(self.slots, grads)])
                for grads in self._pair_gradients(batch, ref_logps)
            ])

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

    # ---- batched: layer inputs and output-gradients ---------------------------------------------------
    def _hooks(self, batch: dict, ref_logps: Tensor | None) -> Tensor:
        b = len(batch["index"])
        out = torch.zeros(b, self.width, device=batch["input_ids"].device)
        handles = []

        def forward_hook(layer, inputs, output):
            if not output.requires_grad:
                return
            x = inputs[0].detach()
            output.register_hook(lambda grad: self._sketch_layer(self.layers[layer], layer, x, grad, out))

        for layer in self.layers:
            handles.append(layer.register_forward_hook(forward_hook))
        try:
            loss = self.module.pair_losses(batch, ref_logps=ref_logps)["loss"].sum()
            params = [s.param for s in self.slots]
            torch.autograd.grad(loss, params, allow_unused=True)  # fires the output hooks; grads discarded
        finally:
            for h in handles:
                h.remove()
        return out

    def _sketch_layer(self, slots: list[_Slot], layer: nn.Linear, x: Tensor, delta: Tensor, out: Tensor) -> None:
        """Sketch pair i's gradient of each selected parameter of ``layer`` from its input ``x`` and
        output-gradient ``delta`` (``[2B, T, d]``, rows ``i`` and ``B + i`` belong to pair i), a chunk of
        pairs at a time, upcast to float32 chunk by chunk."""
        b = out.shape[0]
        delta = delta.detach()
        for slot in slots:
            is_weight = slot.param is layer.weight
            per_pair = slot.param.numel() * 4 + 2 * x[0].numel() * 4 + 2 * delta[0].numel() * 4
            chunk = max(1, self.chunk_bytes // per_pair)
            for start in range(0, b, chunk):
                stop = min(b, start + chunk)
                grad = None
                for rows in (slice(start, stop), slice(b + start, b + stop)):  # chosen, rejected
                    d = delta[rows].float()
                    part = torch.bmm(d.transpose(1, 2), x[rows].float()) if is_weight else d.sum(1)
                    grad = part if grad is None else grad.add_(part)
                self.project(grad.reshape(stop - start, -1), self.width, self.seed,
                             offset=slot.offset, out=out[start:stop])

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

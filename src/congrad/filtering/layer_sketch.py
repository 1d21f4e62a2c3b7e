"""Per-pair gradient sketches of one module's parameters, from what the module saw in the forward and the
gradient of its output.

A batch holds ``2B`` rows: rows ``i`` (chosen) and ``B + i`` (rejected) are pair ``i``. A transformer never
mixes rows, so pair i's gradient of a parameter depends only on its two rows' inputs ``x`` and
output-gradients ``δ``. Every function here writes ``S(g_i)`` — the sketch of pair i's gradient of the
parameter, placed at the parameter's ``offset`` in the concatenated vector — added into ``out[i]``, for all
pairs, with memory bounded by ``chunk_bytes`` (float32) whatever the layer's size.

Linear weight ``W`` (``d_out × d_in``): ``G_i = Σ_t δ_t x_tᵀ`` over the ``2T`` tokens of the pair.
    Formed a block of rows ``G_i[r0:r1] = δ[:, r0:r1]ᵀ x`` at a time (and for as many pairs at once as the
    budget allows), sketched at coordinate ``offset + r0·d_in`` — the row-major position of ``W[r0, 0]`` —
    and dropped. The full ``d_out × d_in`` matrix of a pair exists only when it fits the budget; at
    Llama-3-8B's widest layers (``lm_head``: 128256 × 4096, 2.1 GB in float32) a block is a few thousand
    rows. The arithmetic is the weight gradient's own: per pair one ``[r, 2T] × [2T, d_in]`` product, in
    total the FLOPs of one batched weight-gradient, plus one write and one read of ``B·d_out·d_in`` floats.
    **Exact**: the same hash of the same coordinates as the count sketch of the flattened gradient; only the
    float32 summation order differs.
Linear bias: ``Σ_t δ_t``. Exact.
Embedding weight ``E`` (``V × d``): ``G_i[v] = Σ_{t: id_t = v} δ_t``, nonzero only in the rows of the pair's
    (at most ``2T``) distinct tokens; those rows are summed and sketched at ``offset + v·d``, the other
    ``V − 2T`` rows are never formed (the padding index gets no gradient, as in ``nn.Embedding``; Gemma's
    scaled embeddings multiply δ by their scale first). Exact. An embedding tied to the LM head gets both
    contributions at the same offset, as its gradient does.
Any other leaf module (RMSNorm and LayerNorm scales, …): its forward is replayed on the pair's two rows
    with ``torch.func.vjp`` against ``δ``, one pair at a time, giving the pair's gradient of the module's own
    parameters. Exact, and assumes what every transformer layer satisfies: the module treats rows
    independently. Meant for small parameters (one gradient of the module's size per pair).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from congrad.kernels import bucket_and_sign

Project = Callable[..., Tensor]  # project(values [n, D], width, seed, *, offset, out) like count_sketch


def pair_rows(t: Tensor, start: int, stop: int, b: int) -> Tensor:
    """``[stop - start, 2T, ...]``: for each pair of the range, its chosen row's tokens then its rejected
    row's (``t`` is ``[2B, T, ...]``)."""
    return torch.cat([t[start:stop], t[b + start : b + stop]], dim=1)


class LayerSketcher:
    """The sketch arithmetic of one pass: the projection (``count`` or ``gaussian``), its width and seed, and
    the memory budget of one formed block."""

    def __init__(self, project: Project, kind: str, width: int, seed: int, chunk_bytes: int):
        self.project, self.kind, self.width, self.seed = project, kind, width, seed
        self.chunk_bytes = max(1, int(chunk_bytes))

    # ---- nn.Linear ---------------------------------------------------------------------------------------
    def linear_weight(self, x: Tensor, delta: Tensor, offset: int, out: Tensor) -> None:
        b = out.shape[0]
        x, delta = _tokens(x, b), _tokens(delta, b)
        t2, d_in, d_out = 2 * x.shape[1], x.shape[-1], delta.shape[-1]
        # per pair: its x (float32, [2T, d_in]) and, per block of r rows, δ [2T, r] and G [r, d_in]
        whole = 4 * (t2 * d_in + t2 * d_out + d_out * d_in)
        if whole <= self.chunk_bytes:
            pairs, rows = max(1, min(b, self.chunk_bytes // whole)), d_out
        else:
            pairs = 1
            rows = max(1, min(d_out, (self.chunk_bytes - 4 * t2 * d_in) // (4 * (t2 + d_in))))
        for start in range(0, b, pairs):
            stop = min(b, start + pairs)
            xs = pair_rows(x, start, stop, b).float()
            for r0 in range(0, d_out, rows):
                r1 = min(d_out, r0 + rows)
                ds = pair_rows(delta[..., r0:r1], start, stop, b).float()
                grad = torch.bmm(ds.transpose(1, 2), xs)  # [pairs, r1 - r0, d_in]
                self.project(
                    grad.reshape(stop - start, -1),
                    self.width,
                    self.seed,
                    offset=offset + r0 * d_in,
                    out=out[start:stop],
                )
                del grad, ds

    def linear_bias(self, delta: Tensor, offset: int, out: Tensor) -> None:
        b = out.shape[0]
        delta = _tokens(delta, b)
        pairs = max(1, min(b, self.chunk_bytes // max(1, 4 * 2 * delta[0].numel())))
        for start in range(0, b, pairs):
            stop = min(b, start + pairs)
            grad = pair_rows(delta, start, stop, b).float().sum(1)
            self.project(grad, self.width, self.seed, offset=offset, out=out[start:stop])

    # ---- nn.Embedding ------------------------------------------------------------------------------------
    def embedding(
        self, module: nn.Embedding, ids: Tensor, delta: Tensor, offset: int, out: Tensor, scale: float = 1.0
    ) -> None:
        """``scale``: the module's output is ``scale`` times the looked-up rows (Gemma's scaled embeddings)."""
        b = out.shape[0]
        ids, delta = ids.reshape(2 * b, -1), _tokens(delta, b)
        vocab, d = module.num_embeddings, delta.shape[-1]
        # per pair and token-feature: δ in float32, its per-token sums, and the hash of each coordinate
        # (int64 coordinate, bucket and target, float32 sign): about 36 bytes
        pairs = max(1, min(b, self.chunk_bytes // max(1, 36 * 2 * delta[0].numel())))
        for start in range(0, b, pairs):
            stop = min(b, start + pairs)
            tok = pair_rows(ids, start, stop, b)  # [c, 2T]
            vals = pair_rows(delta, start, stop, b).float()  # [c, 2T, d]
            if scale != 1.0:
                vals = vals * scale
            if module.padding_idx is not None:
                vals = vals.masked_fill((tok == module.padding_idx).unsqueeze(-1), 0.0)
            pair = torch.arange(stop - start, device=tok.device).unsqueeze(1).expand_as(tok)
            keys, inverse = torch.unique(pair * vocab + tok, return_inverse=True)
            summed = vals.new_zeros(len(keys), d).index_add_(0, inverse.reshape(-1), vals.reshape(-1, d))
            self.rows(summed, offset + (keys % vocab) * d, keys // vocab, out[start:stop])

    def rows(self, values: Tensor, row_offsets: Tensor, pair: Tensor, out: Tensor) -> None:
        """Add the sketch of each row ``values[k]`` (``[n, d]``), placed at global coordinate
        ``row_offsets[k]``, into ``out[pair[k]]``."""
        if self.kind == "count":
            coords = row_offsets.unsqueeze(1) + torch.arange(values.shape[1], device=values.device)
            buckets, signs = bucket_and_sign(coords, self.width, self.seed)
            target = pair.unsqueeze(1) * self.width + buckets
            out.view(-1).index_add_(0, target.reshape(-1), (values * signs).reshape(-1))
        else:
            for k in range(len(values)):
                p = int(pair[k])
                self.project(values[k : k + 1], self.width, self.seed, offset=int(row_offsets[k]), out=out[p : p + 1])

    # ---- any other leaf module ---------------------------------------------------------------------------
    def replay(self, module: nn.Module, slots: dict[str, int], x: Tensor, delta: Tensor, out: Tensor) -> None:
        """Per-pair gradients of ``module``'s own parameters named in ``slots`` (name -> offset), by replaying
        its forward on each pair's rows. Call with the sketcher's forward hooks inactive."""
        b = out.shape[0]
        names = list(slots)
        params = [getattr(module, n).detach() for n in names]
        grads = [torch.empty(b, p.numel(), dtype=torch.float32, device=out.device) for p in params]
        for i in range(b):
            rows = [i, b + i]
            xi, di = x[rows], delta[rows]

            def forward(*ps, xi=xi):
                return torch.func.functional_call(module, dict(zip(names, ps)), (xi,))

            _, vjp = torch.func.vjp(forward, *params)
            for g, gi in zip(grads, vjp(di)):
                g[i] = gi.reshape(-1).float()
        for name, g in zip(names, grads):
            self.project(g, self.width, self.seed, offset=slots[name], out=out)


def _tokens(t: Tensor, b: int) -> Tensor:
    """``[2B, T, d]`` view of a layer's input or output-gradient (rows first); a clear error otherwise."""
    if t.shape[0] != 2 * b:
        raise ValueError(
            f"sketch.method=hooks expects layer tensors with the batch's {2 * b} rows first, got "
            f"shape {tuple(t.shape)}: use sketch.method=loop for this model"
        )
    return t.reshape(2 * b, -1, t.shape[-1])

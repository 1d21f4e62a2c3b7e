"""Handing a module's output-gradient, together with what the module saw in its forward, to a callback in the
backward — holding the forward's tensors the way autograd holds them, not longer.

``capture(output, anchor, sink, *saved)`` returns ``output`` unchanged (a view of it) behind a node whose
backward calls ``sink(grad_output, *saved)``. The ``saved`` tensors (a layer's input, token ids) go through
``ctx.save_for_backward``, so they obey whatever ``torch.autograd.graph.saved_tensors_hooks`` are active —
in particular those of non-reentrant gradient checkpointing:

* without checkpointing autograd keeps them until the node's backward ran, as it keeps a Linear's input
  for its weight gradient (the same storage: a layer's input saved twice costs nothing extra), then frees
  them;
* inside a checkpointed region autograd does *not* keep them: the forward stores a placeholder, and when
  the backward reaches the region it re-runs the region's forward (where the forward hook that called
  ``capture`` runs again) and hands the recomputed tensors to this node. So they live exactly as long as
  the checkpointed step's own recomputed activations: one region at a time.

``anchor`` is a scalar leaf that requires grad; every captured node gets a zero gradient for it. The
sketch pass differentiates the loss with respect to the anchor alone, which makes autograd run the backward
of every captured node (and of everything between them and the loss) and nothing else: no parameter
gradient is formed or accumulated, whether parameters require grad or not, sharded or not.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


class _Capture(torch.autograd.Function):
    @staticmethod
    def forward(ctx, output: Tensor, anchor: Tensor, sink: Callable[..., None], *saved: Tensor) -> Tensor:
        ctx.sink = sink
        ctx.anchor_like = (anchor.shape, anchor.dtype, anchor.device)
        ctx.save_for_backward(*saved)
        ctx.n_saved = len(saved)
        return output.view_as(output)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        saved = ctx.saved_tensors  # unpacked once: under checkpointing a second unpack is an error
        ctx.sink(grad_output, *saved)
        del saved
        shape, dtype, device = ctx.anchor_like
        return (grad_output, torch.zeros(shape, dtype=dtype, device=device), None, *([None] * ctx.n_saved))


def capture(output: Tensor, anchor: Tensor, sink: Callable[..., None], *saved: Tensor) -> Tensor:
    """``output`` (as a view) behind a node that calls ``sink(grad_output, *saved)`` in the backward; see the
    module docstring. ``saved`` are detached first: they are data for the sink, not part of the graph."""
    return _Capture.apply(output, anchor, sink, *(t.detach() for t in saved))


def new_anchor(device: torch.device | str) -> Tensor:
    """The scalar leaf to pass to :func:`capture` and to differentiate with respect to."""
    return torch.zeros((), device=device, requires_grad=True)

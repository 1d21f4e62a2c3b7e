"""Sequence log-probabilities of completions under a causal LM."""

from __future__ import annotations

import torch


def sequence_logps(logits: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Sum of the log-probs of the completion tokens, per row: ``[N]``.

    ``logits[:, t]`` predicts ``input_ids[:, t + 1]``; ``completion_mask[:, t]`` marks the tokens whose
    log-prob counts (completion tokens, never prompt or padding). Computed as ``logit - logsumexp`` in
    float32; half-precision logits are upcast one row at a time, so no float32 copy of the whole
    ``[N, T, V]`` logits is made (at a 128k vocabulary that copy would dwarf the model's activations).
    """
    logits = logits[:, :-1]
    targets = input_ids[:, 1:].unsqueeze(-1)
    rows = [logits] if logits.dtype == torch.float32 else logits.split(1)
    token_logps = torch.cat(
        [
            torch.gather(chunk.float(), 2, tgt).squeeze(-1) - torch.logsumexp(chunk.float(), dim=-1)
            for chunk, tgt in zip(rows, targets.split(len(rows[0])))
        ]
    )
    return (token_logps * completion_mask[:, 1:]).sum(-1)


def completion_logit_sums(logits: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Per row, the sum over completion tokens of the mean logit over the vocabulary: ``[N]``, float32, no
    gradient. Divided by the completion tokens this is TRL's ``logits/chosen`` / ``logits/rejected`` (the
    mean of its per-token ``mean_logits`` where the completion mask is set)."""
    with torch.no_grad():
        return (logits[:, :-1].mean(-1).float() * completion_mask[:, 1:]).sum(-1)

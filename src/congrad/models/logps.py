"""Sequence log-probabilities of completions under a causal LM."""

from __future__ import annotations

import torch


def sequence_logps(logits: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Sum of the log-probs of the completion tokens, per row: ``[N]``.

    ``logits[:, t]`` predicts ``input_ids[:, t + 1]``; ``completion_mask[:, t]`` marks the tokens whose
    log-prob counts (completion tokens, never prompt or padding). Computed as ``logit - logsumexp`` in
    float32 one row at a time, so no float32 copy of the whole ``[N, T, V]`` logits is made (at a 128k
    vocabulary that copy would dwarf the model's activations).
    """
    targets = input_ids[:, 1:]
    mask = completion_mask[:, 1:].float()
    rows = []
    for row_logits, row_targets in zip(logits[:, :-1], targets):
        row_logits = row_logits.float()
        picked = torch.gather(row_logits, 1, row_targets.unsqueeze(-1)).squeeze(-1)
        rows.append(picked - torch.logsumexp(row_logits, dim=-1))
    return (torch.stack(rows) * mask).sum(-1)

"""The scoring pass: sketch the per-pair gradient of every candidate with the current policy."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from congrad.filtering.sketching import PerPairSketcher


def move_batch(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def sketch_candidates(sketcher: PerPairSketcher, dataloader, device: torch.device,
                      progress: bool = True) -> torch.Tensor:
    """Sketches ``[N, w]`` (float32, on the CPU) of every candidate the dataloader serves, in its order.

    The policy is put in eval mode (no dropout) for the pass and restored after. All sketches are kept
    on the CPU: N × w floats (40 MB for 10k pairs at w = 1024).
    """
    policy = sketcher.module.policy
    was_training = policy.training
    policy.eval()
    try:
        sketches = [
            sketcher(move_batch(batch, device)).cpu()
            for batch in tqdm(dataloader, desc="ConGrad: sketching gradients", unit="batch", disable=not progress,
                              leave=False)
        ]
    finally:
        policy.train(was_training)
    return torch.cat(sketches)

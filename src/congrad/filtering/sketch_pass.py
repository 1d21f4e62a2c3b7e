"""The scoring pass: sketch the per-pair gradient of every candidate with the current policy."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from tqdm.auto import tqdm

from congrad.filtering.sketching import PerPairSketcher
from congrad.utils import cost


def move_batch(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@contextmanager
def train_mode_without_dropout(model: nn.Module) -> Iterator[None]:
    """Train mode with every ``nn.Dropout`` at p = 0, restored afterwards.

    Not ``eval()``: transformers applies gradient checkpointing only in train mode, and the scoring pass's
    backward needs it as much as training does. (Attention dropout that a model reads from its config, 0 for
    Llama and Gemma, is not touched.)
    """
    was_training = model.training
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    saved = [m.p for m in dropouts]
    model.train()
    for m in dropouts:
        m.p = 0.0
    try:
        yield
    finally:
        for m, p in zip(dropouts, saved):
            m.p = p
        model.train(was_training)


def sketch_candidates(
    sketcher: PerPairSketcher, dataloader, device: torch.device, progress: bool = True
) -> torch.Tensor:
    """Sketches ``[N, w]`` (float32, on the CPU) of every candidate the dataloader serves, in its order.

    All sketches are kept on the CPU: N × w floats (160 MB for 10k pairs at w = 4096).
    """
    with cost.stage("sketch"), train_mode_without_dropout(sketcher.module.policy):
        sketches = torch.cat(
            [
                sketcher(move_batch(batch, device)).cpu()
                for batch in tqdm(
                    dataloader, desc="ConGrad: sketching gradients", unit="batch", disable=not progress, leave=False
                )
            ]
        )
    cost.add_sketched(len(sketches))
    return sketches

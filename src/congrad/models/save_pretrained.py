"""Save the trained policy in Hugging Face format at the end of training.

With LoRA this writes the peft adapter (``adapter_config.json`` + ``adapter_model.safetensors``), loadable
with ``PeftModel.from_pretrained(base, path)``; with full fine-tuning, the whole model. The tokenizer is
saved beside it. The directory appears atomically. A sharded policy (``trainer=fsdp``) is gathered first.
"""

from __future__ import annotations

import pytorch_lightning as pl

from congrad.utils.io import atomic_path


class SavePretrained(pl.Callback):
    def __init__(self, dirpath: str):
        self.dirpath = dirpath

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        full = _gathered_state_dict(pl_module.policy)  # collective: every rank takes part
        if not trainer.is_global_zero:
            return
        with atomic_path(self.dirpath, is_dir=True) as tmp:
            pl_module.policy.save_pretrained(tmp, **({"state_dict": full} if full is not None else {}))
            tokenizer = getattr(trainer.datamodule, "tokenizer", None)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)


def _gathered_state_dict(model) -> dict | None:
    """The full state dict of a model whose parameters are sharded (FSDP2 DTensors), gathered to the CPU on
    every rank; None for an unsharded model (save_pretrained reads it directly)."""
    from torch.distributed.tensor import DTensor

    if not any(isinstance(p, DTensor) for p in model.parameters()):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

"""Save the trained policy in Hugging Face format at the end of training.

With LoRA this writes the peft adapter (``adapter_config.json`` + ``adapter_model.safetensors``), loadable
with ``PeftModel.from_pretrained(base, path)``; with full fine-tuning, the whole model. The tokenizer is
saved beside it. The directory appears atomically.
"""

from __future__ import annotations

import pytorch_lightning as pl

from congrad.utils.io import atomic_path


class SavePretrained(pl.Callback):
    def __init__(self, dirpath: str):
        self.dirpath = dirpath

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        with atomic_path(self.dirpath, is_dir=True) as tmp:
            pl_module.policy.save_pretrained(tmp)
            tokenizer = getattr(trainer.datamodule, "tokenizer", None)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)

"""Save the trained policy in Hugging Face format at the end of training.

With LoRA this writes the peft adapter (``adapter_config.json`` + ``adapter_model.safetensors``), loadable
with ``PeftModel.from_pretrained(base, path)``, and ``base.json``: what ``base`` is, i.e. the tokenizer
and backbone configs and the trained adapters merged into the backbone before this adapter was trained
(``model.merge_adapters``, then ``model.lora.adapter_path``), in order. :func:`load_trained_policy` rebuilds
the trained policy from the directory alone. With full fine-tuning, the whole model is saved. The tokenizer
is saved beside it. The directory appears atomically. A sharded policy (``trainer=fsdp``) is gathered first.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from congrad.models.factory import merge_adapters, starting_adapters
from congrad.utils.io import atomic_path, write_json

BASE_FILE = "base.json"


class SavePretrained(pl.Callback):
    """``model``: the ``model`` config group the policy was built from (recorded in ``base.json``)."""

    def __init__(self, dirpath: str, model: DictConfig | None = None):
        self.dirpath = dirpath
        self.model = model

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        full = _gathered_state_dict(pl_module.policy)  # collective: every rank takes part
        if not trainer.is_global_zero:
            return
        with atomic_path(self.dirpath, is_dir=True) as tmp:
            pl_module.policy.save_pretrained(tmp, **({"state_dict": full} if full is not None else {}))
            tokenizer = getattr(trainer.datamodule, "tokenizer", None)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            if self.model is not None and hasattr(pl_module.policy, "peft_config"):
                write_json(tmp / BASE_FILE, base_record(self.model))


def base_record(model_cfg: DictConfig) -> dict:
    """``{"tokenizer", "backbone", "merged_adapters"}``: the configs that build the base, and the trained
    adapters (absolute paths) merged into it, in order."""
    return {
        "tokenizer": OmegaConf.to_container(model_cfg.tokenizer, resolve=True),
        "backbone": OmegaConf.to_container(model_cfg.backbone, resolve=True),
        "merged_adapters": [str(Path(path).resolve()) for path in starting_adapters(model_cfg)],
    }


def load_trained_policy(adapter_dir: str | Path):
    """``(tokenizer, policy)``: the trained policy of a run, rebuilt from its adapter directory (the base of
    ``base.json`` with its adapters merged, and the adapter on top)."""
    from peft import PeftModel

    record = json.loads((Path(adapter_dir) / BASE_FILE).read_text(encoding="utf-8"))
    tokenizer = hydra.utils.instantiate(record["tokenizer"])
    base = hydra.utils.instantiate(record["backbone"], tokenizer=tokenizer)
    return tokenizer, PeftModel.from_pretrained(merge_adapters(base, record["merged_adapters"]), adapter_dir)


def _gathered_state_dict(model) -> dict | None:
    """The full state dict of a model whose parameters are sharded (FSDP2 DTensors), gathered to the CPU on
    every rank; None for an unsharded model (save_pretrained reads it directly)."""
    from torch.distributed.tensor import DTensor

    if not any(isinstance(p, DTensor) for p in model.parameters()):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

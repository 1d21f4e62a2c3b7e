"""Building the policy: tokenizer, causal LM (tiny from a config, or a pretrained one by hub id or path),
and the LoRA adapter.

``build_policy(model_cfg)`` is what the entry points call with the ``model`` config group; the pieces are
also usable on their own. A pretrained model that cannot be loaded raises :class:`ModelLoadError` with a
message that says what to set, instead of a stack trace.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import hydra
import torch
from omegaconf import DictConfig
from pydantic import Field
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from congrad.errors import ModelLoadError
from congrad.utils import hub
from congrad.utils.schema import FreeForm, PassThrough, Settings, Text

Dtype = Literal["float32", "bfloat16", "float16", "float64"]


class TokenizerSettings(PassThrough):
    name_or_path: Text
    revision: Text | None
    if_missing: Text | None


class BackboneSettings(PassThrough):
    """The model's ``_target_`` (:func:`load_causal_lm`, :func:`build_tiny_llama`); other arguments pass to it."""

    dtype: Dtype
    name_or_path: Text
    revision: Text | None
    if_missing: Text | None
    attn_implementation: Text | None


class LoraSettings(Settings):
    """:func:`apply_lora`'s arguments, or the trained adapter to start from (:data:`LORA_SOURCES`)."""

    r: Annotated[int, Field(ge=1)]
    alpha: Annotated[float, Field(gt=0)]
    dropout: Annotated[float, Field(ge=0, lt=1)]
    target_modules: list[str] | Text
    adapter_path: Text | None
    init_from: Text | None


class ModelSettings(Settings):
    """The ``model`` group (:func:`build_policy`). ``architecture`` is the hub config's shape, read by the
    memory plan; ``merge_adapters`` is written by the self-rewarding loop and the evaluation."""

    group: ClassVar[str] = "model"
    name_or_path: Text
    revision: Text | None
    tokenizer: TokenizerSettings
    backbone: BackboneSettings
    architecture: FreeForm
    gradient_checkpointing: bool
    lora: LoraSettings | None
    merge_adapters: list[str]


def _from_pretrained(load: Callable, what: str, name_or_path: str, if_missing: str | None = None, **kwargs: Any):
    """``load(name_or_path)`` from a local folder or cache first; from the hub only when it is reachable.

    ``if_missing``: for a model that only exists locally, the command that creates ``name_or_path``; a
    missing directory then stops with that command instead of the hub's advice.
    """
    if if_missing and not Path(name_or_path).exists():
        raise ModelLoadError(f"{name_or_path} does not exist; create it once with:\n  {if_missing}")
    try:
        return load(name_or_path, local_files_only=True, **kwargs)
    except Exception as local_err:
        err = local_err
        if not Path(name_or_path).exists() and hub.reachable():
            try:
                return load(name_or_path, **kwargs)
            except Exception as hub_err:
                err = hub_err
    raise ModelLoadError(
        f"could not load the {what} of '{name_or_path}' ({type(err).__name__}: {str(err).splitlines()[0]}): "
        + hub.how_to_provide(name_or_path, "model.name_or_path")
    ) from err


def load_tokenizer(name_or_path: str, revision: str | None = None, if_missing: str | None = None, **kwargs: Any):
    """A pretrained tokenizer; makes sure a pad token exists (the eos token, as TRL does)."""
    tokenizer = _from_pretrained(
        AutoTokenizer.from_pretrained, "tokenizer", name_or_path, if_missing, revision=revision, **kwargs
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(
    name_or_path: str,
    tokenizer=None,
    dtype: str = "bfloat16",
    attn_implementation: str | None = None,
    revision: str | None = None,
    if_missing: str | None = None,
    **kwargs: Any,
) -> PreTrainedModel:
    """A pretrained causal LM by hub id or local path."""
    model = _from_pretrained(
        AutoModelForCausalLM.from_pretrained,
        "weights",
        name_or_path,
        if_missing,
        revision=revision,
        dtype=getattr(torch, dtype),
        attn_implementation=attn_implementation,
        **kwargs,
    )
    if tokenizer is not None and model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


def build_tiny_llama(
    tokenizer,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    max_position_embeddings: int = 512,
    init_seed: int = 0,
    dtype: str = "float32",
    attn_implementation: str = "eager",
) -> LlamaForCausalLM:
    """A randomly initialised Llama sized to ``tokenizer``; no download.

    The weights depend only on ``init_seed`` (the global RNG is left untouched), so a run resumed from a
    checkpoint that stores only the adapter rebuilds the same frozen base.
    """
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        attn_implementation=attn_implementation,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        model = LlamaForCausalLM(config)
    return model.to(getattr(torch, dtype))


def apply_lora(
    model: PreTrainedModel,
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.0,
    target_modules: Sequence[str] | str = "all-linear",
):
    """Wrap ``model`` with a fresh LoRA adapter (its B matrices are zero: the wrapped model is unchanged)."""
    from peft import LoraConfig, get_peft_model

    modules = target_modules if isinstance(target_modules, str) else list(target_modules)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=modules, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def merge_adapters(model: PreTrainedModel, adapter_paths: Sequence[str]) -> PreTrainedModel:
    """Fold trained LoRA adapters (peft format) into the weights, in order: adapter k was trained on top
    of the merge of adapters 1..k-1, so the result is the policy the last one produced."""
    from peft import PeftModel

    for path in adapter_paths:
        model = PeftModel.from_pretrained(model, path).merge_and_unload()
    return model


def starting_adapters(model_cfg: DictConfig) -> list[str]:
    """The trained adapters the policy starts from, in merge order: ``model_cfg.merge_adapters``, then
    ``model_cfg.lora.adapter_path``."""
    adapters = list(model_cfg.get("merge_adapters") or [])
    lora = model_cfg.get("lora")
    if lora is not None and lora.get("adapter_path"):
        adapters.append(lora.adapter_path)
    return adapters


# the LoRA settings that name a trained adapter rather than shape a fresh one
LORA_SOURCES = ("adapter_path", "init_from")


def build_policy(model_cfg: DictConfig, tokenizer=None):
    """``(tokenizer, policy)`` from the ``model`` config group.

    ``model_cfg.tokenizer`` (unless the ``tokenizer`` it makes is given) and ``model_cfg.backbone`` are
    instantiated (the backbone receives the tokenizer); the trained adapters of :func:`starting_adapters`
    are merged into it, in order; ``model_cfg.lora`` (null for full fine-tuning) wraps the result with a
    fresh adapter. The starting
    policy is then the disabled adapter, which makes it the DPO reference: training from a trained adapter
    (``lora.adapter_path``) keeps the policy it starts from as the reference, as TRL does, and trains a new
    adapter on top of it, as each iteration of the self-rewarding loop does. ``lora.init_from`` instead goes on
    training that adapter (its settings and weights), unmerged: the reference stays the model under it.
    """
    if tokenizer is None:
        tokenizer = hydra.utils.instantiate(model_cfg.tokenizer)
    model = hydra.utils.instantiate(model_cfg.backbone, tokenizer=tokenizer)
    model = merge_adapters(model, starting_adapters(model_cfg))
    if model_cfg.get("gradient_checkpointing", False):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
        model.enable_input_require_grads()  # frozen embeddings + checkpointing: keep a grad path to the adapters
    lora = model_cfg.get("lora")
    if lora is not None and lora.get("init_from"):
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, lora.init_from, is_trainable=True)
    elif lora is not None:
        model = apply_lora(model, **{key: value for key, value in lora.items() if key not in LORA_SOURCES})
    return tokenizer, model

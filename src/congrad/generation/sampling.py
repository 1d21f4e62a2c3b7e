"""Sampling K responses per prompt from a causal LM, in batches with Hugging Face ``generate``.

Prompts are rendered exactly as :mod:`congrad.data.tokenization` renders the prompt of a preference
pair (chat template with the generation prompt, or the plain text after BOS), so the pairs built from
the responses are trained on the very context they were sampled in. Long prompts keep their end.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Any

import torch
from pydantic import Field

from congrad.data.formats import Text
from congrad.data.tokenization import as_messages, flatten_text, token_ids
from congrad.utils import cost
from congrad.utils.device import resolve_device
from congrad.utils.schema import Settings


class SamplingSettings(Settings):
    """How responses are sampled (:class:`Sampling`), under ``self_reward.generation`` and
    ``eval.win_rate.generation``."""

    temperature: Annotated[float, Field(ge=0)]
    top_p: Annotated[float, Field(gt=0, le=1)]
    top_k: Annotated[int, Field(ge=0)]
    max_new_tokens: Annotated[int, Field(ge=1)]


@dataclass(frozen=True)
class Sampling:
    """``temperature`` 0 means greedy decoding; ``top_k`` 0 switches top-k off."""

    num_responses: int = 4
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 0
    max_new_tokens: int = 256


class TextGenerator:
    """A causal LM, its tokenizer and how to batch them; the model is moved to ``device`` on use."""

    def __init__(
        self,
        model,
        tokenizer,
        batch_size: int = 16,
        max_prompt_length: int = 512,
        device: str = "auto",
        progress: bool = True,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_prompt_length = max_prompt_length
        self.device = resolve_device(device)
        self.progress = progress
        self._identity: str | None = None

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        dtype: str = "bfloat16",
        revision: str | None = None,
        attn_implementation: str | None = None,
        **kwargs: Any,
    ) -> TextGenerator:
        """A generator around a model of its own (a judge other than the policy), loaded once."""
        from congrad.models.factory import load_causal_lm, load_tokenizer

        tokenizer = load_tokenizer(name_or_path, revision=revision)
        model = load_causal_lm(
            name_or_path, tokenizer=tokenizer, dtype=dtype, revision=revision, attn_implementation=attn_implementation
        )
        return cls(model.requires_grad_(False), tokenizer, **kwargs)

    def prompt_ids(self, prompt: Text, max_prompt_length: int | None = None) -> list[int]:
        tokenizer = self.tokenizer
        if tokenizer.chat_template:
            text = tokenizer.apply_chat_template(
                as_messages(prompt, "user"), add_generation_prompt=True, tokenize=False
            )
            ids = token_ids(tokenizer, text)
        else:
            ids = token_ids(tokenizer, flatten_text(prompt))
            if tokenizer.bos_token_id is not None and ids[:1] != [tokenizer.bos_token_id]:
                ids = [tokenizer.bos_token_id, *ids]
        return ids[-(max_prompt_length or self.max_prompt_length) :]

    def generate(
        self, prompts: Sequence[Text], sampling: Sampling, desc: str = "generate", max_prompt_length: int | None = None
    ) -> list[list[str]]:
        """``sampling.num_responses`` decoded responses (special tokens removed, stripped) per prompt;
        ``max_prompt_length`` overrides the generator's own (a judge's prompt holds a whole rubric)."""
        out: list[list[str]] = [[] for _ in prompts]
        n = sampling.num_responses
        for batch, texts in self._batches(prompts, sampling, desc, max_prompt_length):
            for j, i in enumerate(batch):
                out[i] = texts[j * n : (j + 1) * n]
        return out

    def generate_each(
        self,
        items: Sequence[tuple[Text, int]],
        sampling: Sampling,
        desc: str = "generate",
        max_prompt_length: int | None = None,
    ) -> Iterator[tuple[list[int], list[str]]]:
        """One response per ``(prompt, sample index)`` item, yielded a batch at a time as ``(positions of the
        items, their texts)``, so a caller can store them as they come. Every item is a fresh sample (the
        index only names it); the items of one prompt are sampled together. ``sampling.num_responses`` is
        not used."""
        by_prompt: dict[str, list[int]] = {}
        for position, (prompt, _) in enumerate(items):
            by_prompt.setdefault(json.dumps(prompt, ensure_ascii=False), []).append(position)
        by_count: dict[int, list[list[int]]] = {}
        for positions in by_prompt.values():
            by_count.setdefault(len(positions), []).append(positions)
        for count, groups in sorted(by_count.items()):
            prompts = [items[positions[0]][0] for positions in groups]
            for batch, texts in self._batches(prompts, replace(sampling, num_responses=count), desc, max_prompt_length):
                yield ([p for i in batch for p in groups[i]], texts)

    @torch.no_grad()
    def _batches(
        self, prompts: Sequence[Text], sampling: Sampling, desc: str, max_prompt_length: int | None
    ) -> Iterator[tuple[list[int], list[str]]]:
        """``(prompt indices, their num_responses texts each, in order)`` per generate call."""
        from tqdm.auto import tqdm

        encoded = [self.prompt_ids(p, max_prompt_length) for p in prompts]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # similar lengths batch together
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        with self._inference_mode():
            for batch in tqdm(batches, desc=desc, unit="batch", disable=not self.progress):
                yield batch, self._generate_batch([encoded[i] for i in batch], sampling)

    @property
    def identity(self) -> str:
        """What a verdict cache knows this model by: a sha256 over its weights and buffers (names, dtypes,
        shapes, bytes), its tokenizer's chat template and its end-of-sequence ids, computed once. A LoRA
        adapter whose B matrices are all zero (a fresh one) changes no output and is left out, so the policy
        of a self-rewarding iteration hashes as its merged base. The hash reads every weight once, on the
        CPU (about a second per GB)."""
        if self._identity is None:
            self._identity = "local:" + weights_fingerprint(self.model, self.tokenizer, self._eos_ids())
        return self._identity

    def _generate_batch(self, batch: list[list[int]], sampling: Sampling) -> list[str]:
        width = max(len(ids) for ids in batch)
        pad_id = self._pad_id()
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, ids in enumerate(batch):  # left padding: every prompt ends where generation starts
            input_ids[r, width - len(ids) :] = torch.tensor(ids)
            attention_mask[r, width - len(ids) :] = 1
        n = sampling.num_responses  # each prompt n times in a row (also greedy, where generate refuses n > 1)
        greedy = sampling.temperature == 0
        generated = self.model.generate(
            input_ids=input_ids.repeat_interleave(n, dim=0).to(self.device),
            attention_mask=attention_mask.repeat_interleave(n, dim=0).to(self.device),
            do_sample=not greedy,
            temperature=None if greedy else sampling.temperature,
            top_p=None if greedy else sampling.top_p,
            top_k=None if greedy else sampling.top_k,
            max_new_tokens=sampling.max_new_tokens,
            pad_token_id=pad_id,
            eos_token_id=self._eos_ids(),
            use_cache=True,
        )
        new = generated[:, width:]
        cost.add_tokens(generated_tokens(new, self._eos_ids()))
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [text.strip() for text in texts]

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return self.tokenizer.eos_token_id if pad is None else pad

    def _eos_ids(self) -> list[int]:
        """The tokenizer's eos and every eos of the model's generation config (chat models end turns with
        their own token, e.g. Llama-3's ``<|eot_id|>``)."""
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids = configured if isinstance(configured, list) else [configured]
        return sorted({i for i in [*ids, self.tokenizer.eos_token_id] if i is not None})

    @contextlib.contextmanager
    def _inference_mode(self):
        was_training = self.model.training
        self.model.to(self.device).eval()
        try:
            yield
        finally:
            self.model.train(was_training)


def generated_tokens(new: torch.Tensor, eos_ids: Sequence[int]) -> int:
    """Tokens a batch generated: per sequence, up to and including its first end-of-sequence token (what
    follows is padding)."""
    ended = torch.isin(new, torch.tensor(list(eos_ids), dtype=new.dtype, device=new.device))
    lengths = torch.where(ended.any(dim=1), ended.int().argmax(dim=1) + 1, new.shape[1])
    return int(lengths.sum())


def weights_fingerprint(model, tokenizer, eos_ids: Sequence[int]) -> str:
    """See :attr:`TextGenerator.identity`."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    lora_b = [t for name, t in tensors if "lora_B" in name]
    if lora_b and all(not bool(t.detach().any()) for t in lora_b):  # peft's names, back to the base model's
        tensors = [
            (name.removeprefix("base_model.model.").replace(".base_layer", ""), t)
            for name, t in tensors
            if "lora_" not in name
        ]
    digest = hashlib.sha256()
    for name, tensor in tensors:
        data = tensor.detach().contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
        digest.update(data.view(-1).view(torch.uint8).cpu().numpy().tobytes())
    digest.update(json.dumps([getattr(tokenizer, "chat_template", None), len(tokenizer), list(eos_ids)]).encode())
    return digest.hexdigest()

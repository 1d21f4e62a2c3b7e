"""Turning preference rows into token ids and padded batches, following TRL's DPO conventions.

Texts. With a chat template, a string prompt becomes one user message and a string completion one
assistant message. The prompt text is the template with the generation prompt; a completion's text is
the template of prompt + completion with the prompt text removed from its front. Should a template render
the prompt differently when an answer follows it, the completion starts where the two renderings stop
agreeing (their longest common prefix), so no text is lost or repeated. Without a chat template the
strings are used as they are (prompt and completion concatenated, no separator added); a
conversational field is flattened by joining its message contents with a blank line.

Special tokens. Template text is tokenized with ``add_special_tokens=False`` because templates write
their own BOS; without a template the tokenizer's BOS (if it has one) is put in front of the prompt once.
Completions end with exactly one eos: trailing whitespace after the template's end of turn is dropped
(generation stops at eos, so nothing after it is ever predicted) and eos is appended unless it is
already the last token.

Truncation, prompt first (TRL before 1.0): a prompt longer than ``max_prompt_length`` keeps its END (the
question is usually last); then, if prompt + the longer completion exceeds ``max_length``, both completions
keep their START, cut to ``max_length - len(prompt)`` tokens (a cut completion loses its eos). TRL 1.16 has
no ``max_prompt_length``: it cuts each whole prompt + completion sequence at ``max_length`` from the end
(``truncation_mode="keep_start"``) and drops pairs whose prompt alone fills ``max_length``. Ours keeps the
question and the start of both answers; the datamodule counts what was cut (:func:`truncated_parts`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Annotated, Any, ClassVar

import torch
from pydantic import Field

from congrad.data.formats import PreferenceRow, Text
from congrad.errors import CongradError
from congrad.utils.schema import Settings


def encode_pair(
    tokenizer, row: PreferenceRow, max_length: int, max_prompt_length: int
) -> dict[str, list[int]]:
    """Token ids of one pair: ``{"prompt_ids", "chosen_ids", "rejected_ids"}``, truncated as above."""
    LengthSettings.check(max_length=max_length, max_prompt_length=max_prompt_length)
    return truncate_pair(**pair_token_ids(tokenizer, row), max_length=max_length,
                         max_prompt_length=max_prompt_length)


def pair_token_ids(tokenizer, row: PreferenceRow) -> dict[str, list[int]]:
    """Token ids of one pair, not truncated: ``{"prompt_ids", "chosen_ids", "rejected_ids"}``."""
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise CongradError("the tokenizer has no eos_token; set one (completions must end with it)")
    if tokenizer.chat_template:
        prompt_text, chosen_text, rejected_text = _chat_texts(tokenizer, row)
        prompt_ids = token_ids(tokenizer, prompt_text)
    else:
        prompt_text, chosen_text, rejected_text = (
            flatten_text(t) for t in (row.prompt, row.chosen, row.rejected)
        )
        prompt_ids = token_ids(tokenizer, prompt_text)
        bos_id = tokenizer.bos_token_id
        if bos_id is not None and prompt_ids[:1] != [bos_id]:
            prompt_ids = [bos_id, *prompt_ids]
    return {
        "prompt_ids": prompt_ids,
        "chosen_ids": _completion_ids(tokenizer, chosen_text, eos_id),
        "rejected_ids": _completion_ids(tokenizer, rejected_text, eos_id),
    }


class LengthSettings(Settings):
    """The token budget of a pair (``data``): the prompt and a completion share ``max_length``."""

    group: ClassVar[str] = "data"
    max_length: Annotated[int, Field(ge=2)]
    max_prompt_length: Annotated[int, Field(ge=1)]

    @classmethod
    def relations(cls, values: dict[str, Any]) -> Iterator[str]:
        length, prompt = values.get("max_length"), values.get("max_prompt_length")
        if isinstance(length, int) and isinstance(prompt, int) and not prompt < length:
            yield (
                f"data.max_prompt_length={prompt}: must be less than data.max_length ({length}), which holds "
                "the prompt and a completion"
            )


def truncate_pair(
    prompt_ids: list[int],
    chosen_ids: list[int],
    rejected_ids: list[int],
    max_length: int,
    max_prompt_length: int,
) -> dict[str, list[int]]:
    """Prompt-first truncation: the prompt keeps its end, then the completions keep their start."""
    prompt_ids = prompt_ids[-max_prompt_length:]
    budget = max_length - len(prompt_ids)
    return {
        "prompt_ids": prompt_ids,
        "chosen_ids": chosen_ids[:budget],
        "rejected_ids": rejected_ids[:budget],
    }


TRUNCATED_PARTS = ("prompt", "chosen", "rejected", "lost_eos")


def truncated_parts(full: dict[str, list[int]], kept: dict[str, list[int]]) -> dict[str, bool]:
    """What truncation cut from a pair (``full`` before, ``kept`` after :func:`truncate_pair`): the prompt,
    the chosen or the rejected completion, and ``lost_eos`` (a completion lost its end of sequence, which is
    its last token)."""
    cut = {part: len(kept[f"{part}_ids"]) < len(full[f"{part}_ids"]) for part in ("prompt", "chosen", "rejected")}
    return {**cut, "lost_eos": cut["chosen"] or cut["rejected"]}


def collate_pairs(features: list[dict], pad_token_id: int) -> dict:
    """Right-padded batch of B pairs as 2B sequences: rows 0..B-1 prompt+chosen, B..2B-1 prompt+rejected
    (see :func:`collate_sequences`). ``index`` and ``language`` describe the B pairs, in order."""
    sequences = [(f["prompt_ids"], f["chosen_ids"]) for f in features] + [
        (f["prompt_ids"], f["rejected_ids"]) for f in features
    ]
    return {
        **collate_sequences(sequences, pad_token_id),
        "index": torch.tensor([f["index"] for f in features], dtype=torch.long),
        "language": [f["language"] for f in features],
    }


def collate_sequences(sequences: list[tuple[list[int], list[int]]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``completion_mask`` of (prompt, completion) token
    lists. ``completion_mask`` is 1 exactly at the positions of completion tokens in ``input_ids`` (the
    tokens whose log-probs are summed; the logits predicting them sit one position earlier)."""
    width = max(len(prompt) + len(completion) for prompt, completion in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    completion_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for r, (prompt, completion) in enumerate(sequences):
        n, m = len(prompt), len(completion)
        input_ids[r, : n + m] = torch.tensor(prompt + completion, dtype=torch.long)
        attention_mask[r, : n + m] = 1
        completion_mask[r, n : n + m] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}


def _chat_texts(tokenizer, row: PreferenceRow) -> tuple[str, str, str]:
    prompt_messages = as_messages(row.prompt, "user")
    prompt_text = tokenizer.apply_chat_template(prompt_messages, add_generation_prompt=True, tokenize=False)

    def completion_text(completion: Text) -> str:
        full = tokenizer.apply_chat_template(
            prompt_messages + as_messages(completion, "assistant"), tokenize=False
        )
        return full[len(os.path.commonprefix([prompt_text, full])) :]  # character-wise

    return prompt_text, completion_text(row.chosen), completion_text(row.rejected)


def _completion_ids(tokenizer, text: str, eos_id: int) -> list[int]:
    ids = token_ids(tokenizer, text.rstrip())
    return ids if ids[-1:] == [eos_id] else [*ids, eos_id]


def token_ids(tokenizer, text: str) -> list[int]:
    """Token ids of text that already holds its special tokens (a rendered chat template)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def as_messages(text: Text, role: str) -> list[dict]:
    """A string as one message of ``role``; a conversational field as it is."""
    return [{"role": role, "content": text}] if isinstance(text, str) else list(text)


def flatten_text(text: Text) -> str:
    """A conversational field as plain text (message contents joined by blank lines), for tokenizers
    without a chat template and for judges."""
    return text if isinstance(text, str) else "\n\n".join(message["content"] for message in text)

"""Log-likelihoods under one causal LM, for evaluation: preference pairs and reference texts (multiple-choice
questions are scored by lm-evaluation-harness, :mod:`.harness`). Prompts and completions are encoded exactly
as in training (:func:`congrad.data.tokenization.encode_pair`: chat template, one eos per completion,
prompt-first truncation), so a held-out pair is scored the way a training pair is."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from congrad.data.formats import PreferenceRow
from congrad.data.tokenization import collate_sequences, encode_pair, token_ids
from congrad.models.logps import sequence_logps


class LikelihoodModel:
    """A model, its tokenizer, and how to batch them (``max_length`` / ``max_prompt_length`` as in ``data``)."""

    def __init__(
        self,
        model,
        tokenizer,
        device: torch.device,
        batch_size: int = 8,
        max_length: int = 512,
        max_prompt_length: int = 256,
    ):
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.batch_size, self.max_length, self.max_prompt_length = batch_size, max_length, max_prompt_length
        pad = tokenizer.pad_token_id
        self.pad_id = tokenizer.eos_token_id if pad is None else pad

    @torch.no_grad()
    def completion_logps(self, sequences: Sequence[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
        """For (prompt ids, completion ids): the summed log-prob of the completion tokens ``[N]`` and their
        number ``[N]`` (a completion's first token counts only when a prompt token precedes it)."""
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][0]) + len(sequences[i][1]))
        sums, counts = torch.zeros(len(sequences)), torch.zeros(len(sequences))
        self.model.to(self.device).eval()
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            batch = {
                k: v.to(self.device) for k, v in collate_sequences([sequences[i] for i in rows], self.pad_id).items()
            }
            logits = self.model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
            ).logits
            sums[rows] = sequence_logps(logits, batch["input_ids"], batch["completion_mask"]).float().cpu()
            counts[rows] = batch["completion_mask"][:, 1:].sum(-1).float().cpu()
        return sums, counts

    def pair_logps(self, rows: Sequence[PreferenceRow]) -> tuple[torch.Tensor, torch.Tensor]:
        """Sequence log-probs (sums, as in training) of the chosen and of the rejected completions ``[N]``."""
        encoded = [encode_pair(self.tokenizer, row, self.max_length, self.max_prompt_length) for row in rows]
        sequences = [(e["prompt_ids"], e["chosen_ids"]) for e in encoded] + [
            (e["prompt_ids"], e["rejected_ids"]) for e in encoded
        ]
        sums, _ = self.completion_logps(sequences)
        return sums[: len(rows)], sums[len(rows) :]

    def text_nll(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed negative log-likelihood ``[N]`` of plain texts (no chat template; after the tokenizer's BOS
        when it has one) and the number of predicted tokens ``[N]``."""
        bos = self.tokenizer.bos_token_id
        sequences = []
        for text in texts:
            ids = token_ids(self.tokenizer, text)[: self.max_length]
            prompt = [bos] if bos is not None and ids[:1] != [bos] else []
            sequences.append((prompt, ids))
        sums, counts = self.completion_logps(sequences)
        return -sums, counts

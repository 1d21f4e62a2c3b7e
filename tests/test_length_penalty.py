"""LP-DPO (R-DPO) from first principles: on a set where the chosen answer is systematically the longer one
(in 3 of 4 pairs it is the other answer plus more tokens, in 1 of 4 the other way round), training with a
length penalty alpha > 0 leaves the policy with shorter answers than plain DPO (alpha = 0), same seed, same
steps, AdamW as in the default config.

Why: plain DPO mostly pushes the policy to go on where the shorter answer stops. With alpha > 0 the
longer-chosen pairs start with a margin of alpha * (|y_w| - |y_l|) > 0 and get little gradient, while the
shorter-chosen pairs start behind and get more, so the push reverses.

Two length statistics: the exact probability that the policy stops where the pair's shorter answer stops,
P(eos | prompt, shorter content), read off one forward pass; and the mean length of seeded samples.
"""

import functools

import torch

from congrad.models import DPOModule
from congrad.models.factory import build_tiny_llama

VOCAB, PAD, EOS = 16, 0, 1
PROMPT_TOKENS, ANSWER_TOKENS = range(2, 8), range(8, VOCAB)
MAX_NEW_TOKENS = 16


class Vocab:
    """The three facts build_tiny_llama reads from a tokenizer."""

    pad_token_id, bos_token_id, eos_token_id = PAD, None, EOS

    def __len__(self):
        return VOCAB


def mostly_longer_chosen_pairs(n=32, seed=0):
    """(prompt, chosen content, rejected content): the short answer is 2-3 tokens, the long one is the short
    one plus 3-4 more; the long one is chosen in 3 of 4 pairs."""
    g = torch.Generator().manual_seed(seed)

    def draw(tokens, k):
        return [tokens[i] for i in torch.randint(len(tokens), (k,), generator=g).tolist()]

    pairs = []
    for i in range(n):
        prompt = draw(PROMPT_TOKENS, 3 + int(torch.randint(3, (1,), generator=g)))
        short = draw(ANSWER_TOKENS, 2 + int(torch.randint(2, (1,), generator=g)))
        long = short + draw(ANSWER_TOKENS, 3 + int(torch.randint(2, (1,), generator=g)))
        pairs.append((prompt, long, short) if i % 4 else (prompt, short, long))
    return pairs


def batch_of(pairs):
    """A concatenated batch (rows [:B] prompt+chosen+eos, rows [B:] prompt+rejected+eos), as collate_pairs builds."""
    rows = [(p, c + [EOS]) for p, c, _ in pairs] + [(p, r + [EOS]) for p, _, r in pairs]
    width = max(len(p) + len(c) for p, c in rows)
    ids = torch.full((len(rows), width), PAD)
    attn = torch.zeros(len(rows), width, dtype=torch.long)
    comp = torch.zeros(len(rows), width, dtype=torch.long)
    for i, (p, c) in enumerate(rows):
        ids[i, : len(p) + len(c)] = torch.tensor(p + c)
        attn[i, : len(p) + len(c)] = 1
        comp[i, len(p) : len(p) + len(c)] = 1
    return {
        "input_ids": ids,
        "attention_mask": attn,
        "completion_mask": comp,
        "index": torch.arange(len(pairs)),
        "language": ["en"] * len(pairs),
    }


def train(length_penalty, pairs, steps=10):
    """A tiny Llama, fully fine-tuned (the reference: a frozen copy), one batch of all pairs per step."""
    policy = build_tiny_llama(
        Vocab(), hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, init_seed=0
    )
    module = DPOModule(
        policy,
        optimizer=functools.partial(torch.optim.AdamW, lr=3e-3),
        beta=0.1,
        length_penalty=length_penalty,
        languages=["en"],
    )
    optimizer = module.configure_optimizers()
    batch = batch_of(pairs)
    for _ in range(steps):
        optimizer.zero_grad()
        module.pair_losses(batch)["loss"].mean().backward()
        optimizer.step()
    return module.policy.eval()


def p_stop_early(model, pairs):
    """Mean over pairs of P(eos | prompt, shorter content), exactly, in one forward pass (right padding
    leaves the earlier positions of a causal LM unchanged)."""
    rows = [prompt + min(chosen, rejected, key=len) for prompt, chosen, rejected in pairs]
    ids = torch.full((len(rows), max(map(len, rows))), PAD)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    last = torch.tensor([len(row) - 1 for row in rows])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=(ids != PAD).long()).logits
    return torch.softmax(logits[torch.arange(len(rows)), last], -1)[:, EOS].mean().item()


def mean_sampled_length(model, pairs, samples_per_prompt=16, seed=0):
    """Mean length (tokens up to and including eos, at most MAX_NEW_TOKENS) of seeded samples; prompts of
    one length are sampled together so that no padding is needed."""
    torch.manual_seed(seed)
    lengths = []
    for n in sorted({len(p) for p, _, _ in pairs}):
        ids = torch.tensor([p for p, _, _ in pairs if len(p) == n]).repeat_interleave(samples_per_prompt, 0)
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                top_k=0,
                max_new_tokens=MAX_NEW_TOKENS,
                eos_token_id=EOS,
                pad_token_id=PAD,
            )
        for row in out[:, n:].tolist():
            lengths.append(row.index(EOS) + 1 if EOS in row else MAX_NEW_TOKENS)
    return sum(lengths) / len(lengths)


def test_a_length_penalty_leaves_shorter_answers_than_plain_dpo():
    pairs = mostly_longer_chosen_pairs()
    start, plain, penalised = train(0.0, pairs, steps=0), train(0.0, pairs), train(1.0, pairs)
    stop = {name: p_stop_early(m, pairs) for name, m in [("start", start), ("plain", plain), ("lp", penalised)]}
    # plain DPO learns to go on past the shorter answer; with the penalty the policy stops there more often
    assert stop["plain"] < 0.75 * stop["start"], stop
    assert stop["lp"] > 2 * stop["plain"], stop
    length = {name: mean_sampled_length(m, pairs) for name, m in [("plain", plain), ("lp", penalised)]}
    assert length["lp"] < length["plain"] - 2, length  # tokens; 512 samples each, the same seed

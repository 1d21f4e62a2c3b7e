"""Sequence log-probs, the reference model, and one optimisation step of the DPO module on a tiny Llama."""

import functools

import pytest
import torch

from congrad.models import DPOModule
from congrad.models.factory import apply_lora, build_tiny_llama
from congrad.models.logps import sequence_logps

VOCAB, PAD, EOS = 97, 0, 1


class Vocab:
    """The three facts build_tiny_llama reads from a tokenizer."""

    pad_token_id, bos_token_id, eos_token_id = PAD, None, EOS

    def __len__(self):
        return VOCAB


def tiny_llama(seed=0):
    return build_tiny_llama(
        Vocab(), hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, init_seed=seed
    )


def make_batch(prompt_lens=(3, 5), chosen_lens=(4, 2), rejected_lens=(2, 6), seed=0):
    """A concatenated batch as collate_pairs builds it: rows [:B] prompt+chosen, rows [B:] prompt+rejected."""
    g = torch.Generator().manual_seed(seed)
    rows, masks = [], []
    for completions in (chosen_lens, rejected_lens):
        for p, c in zip(prompt_lens, completions):
            rows.append(torch.randint(2, VOCAB, (p + c,), generator=g))
            masks.append(torch.tensor([0] * p + [1] * c))
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD)
    attn = torch.zeros(len(rows), width, dtype=torch.long)
    comp = torch.zeros(len(rows), width, dtype=torch.long)
    for i, (r, m) in enumerate(zip(rows, masks)):
        ids[i, : len(r)], attn[i, : len(r)], comp[i, : len(r)] = r, 1, m
    return {
        "input_ids": ids,
        "attention_mask": attn,
        "completion_mask": comp,
        "index": torch.arange(len(prompt_lens)),
        "language": ["de", "hi"][: len(prompt_lens)],
    }


def test_sequence_logps_is_the_sum_over_completion_tokens():
    torch.manual_seed(0)
    batch = make_batch()
    logits = torch.randn(*batch["input_ids"].shape, VOCAB)
    got = sequence_logps(logits, batch["input_ids"], batch["completion_mask"])
    for n in range(len(got)):
        expected = 0.0
        for t in range(1, batch["input_ids"].shape[1]):
            if batch["completion_mask"][n, t]:
                expected += torch.log_softmax(logits[n, t - 1].double(), -1)[batch["input_ids"][n, t]].item()
        assert got[n].item() == pytest.approx(expected, abs=1e-4)


def test_half_precision_logits_are_upcast_row_by_row_to_the_same_values():
    torch.manual_seed(2)
    batch = make_batch()
    logits = torch.randn(*batch["input_ids"].shape, VOCAB).bfloat16()
    half = sequence_logps(logits, batch["input_ids"], batch["completion_mask"])
    full = sequence_logps(logits.float(), batch["input_ids"], batch["completion_mask"])
    assert half.dtype == torch.float32 and torch.allclose(half, full)


def test_prompt_and_padding_logits_do_not_count():
    torch.manual_seed(1)
    batch = make_batch()
    logits = torch.randn(*batch["input_ids"].shape, VOCAB)
    base = sequence_logps(logits, batch["input_ids"], batch["completion_mask"])
    # logits at position t predict token t+1; positions whose next token is not a completion token are unused
    unused = torch.ones_like(batch["completion_mask"], dtype=torch.bool)
    unused[:, :-1] = batch["completion_mask"][:, 1:] == 0
    garbage = torch.where(unused.unsqueeze(-1), torch.randn_like(logits) * 100, logits)
    assert torch.allclose(sequence_logps(garbage, batch["input_ids"], batch["completion_mask"]), base)


def test_right_padding_does_not_change_a_rows_logps():
    model = tiny_llama().eval()
    batch = make_batch()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        together = sequence_logps(logits, batch["input_ids"], batch["completion_mask"])
        for n in range(batch["input_ids"].shape[0]):
            length = int(batch["attention_mask"][n].sum())
            ids = batch["input_ids"][n : n + 1, :length]
            alone = sequence_logps(model(input_ids=ids).logits, ids, batch["completion_mask"][n : n + 1, :length])
            assert alone.item() == pytest.approx(together[n].item(), abs=1e-4)


def make_module(lora: bool, lr=1e-2, **dpo_kwargs):
    policy = tiny_llama()
    if lora:
        policy = apply_lora(policy, r=4, alpha=8, target_modules=["q_proj", "v_proj", "up_proj"])
    optimizer = functools.partial(torch.optim.AdamW, lr=lr)
    return DPOModule(policy, optimizer=optimizer, beta=0.1, languages=["de", "hi"], **dpo_kwargs)


@pytest.mark.parametrize("lora", [True, False], ids=["lora-reference", "frozen-copy-reference"])
def test_reference_equals_policy_at_init_and_stays_fixed_while_training(lora):
    module = make_module(lora)
    batch = make_batch()
    ref_before = module.reference_logps(batch)
    with torch.no_grad():
        policy_before = module._logps(module.policy, batch)
    assert torch.allclose(ref_before, policy_before, atol=1e-6)
    out = module.pair_losses(batch)
    assert torch.allclose(out["loss"], torch.full((2,), 0.6931472), atol=1e-5)  # log 2 at the reference point

    optimizer = module.configure_optimizers()
    for _ in range(5):
        optimizer.zero_grad()
        module.pair_losses(batch)["loss"].mean().backward()
        optimizer.step()
    with torch.no_grad():
        policy_after = module._logps(module.policy, batch)
    assert torch.equal(module.reference_logps(batch), ref_before)
    assert not torch.allclose(policy_after, policy_before, atol=1e-4)
    # the loss fell and the policy now prefers the chosen completions relative to the reference
    after = module.pair_losses(batch)
    assert after["loss"].mean() < out["loss"].mean()
    assert after["rewards/accuracies"].mean() == 1.0
    assert torch.allclose(after["rewards/margins"], after["rewards/chosen"] - after["rewards/rejected"])


def test_only_trainable_parameters_are_optimised_and_checkpointed():
    module = make_module(lora=True)
    optimizer = module.configure_optimizers()
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    trainable = {id(p) for p in module.policy.parameters() if p.requires_grad}
    assert optimised == trainable and trainable
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["state_dict"] and all("lora_" in k for k in checkpoint["state_dict"])


def test_ipo_logs_summed_logps_as_trl_and_averages_only_inside_its_loss():
    module = make_module(lora=True, loss_type="ipo")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # move the policy away from its reference
        for name, p in module.policy.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    batch = make_batch()
    ids, mask, comp = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    with torch.no_grad():
        policy = sequence_logps(module.policy(input_ids=ids, attention_mask=mask).logits, ids, comp).tolist()
        with module.policy.disable_adapter():
            ref = sequence_logps(module.policy(input_ids=ids, attention_mask=mask).logits, ids, comp).tolist()
        out = module.pair_losses(batch)
    lengths = comp.sum(-1).tolist()
    beta, b = module.beta, 2
    for i in range(b):
        c, r = i, b + i  # the rows of pair i's chosen and rejected completion
        assert out["logps/chosen"][i].item() == pytest.approx(policy[c], abs=1e-4)
        assert out["logps/rejected"][i].item() == pytest.approx(policy[r], abs=1e-4)
        assert out["rewards/chosen"][i].item() == pytest.approx(beta * (policy[c] - ref[c]), abs=1e-5)
        assert out["rewards/rejected"][i].item() == pytest.approx(beta * (policy[r] - ref[r]), abs=1e-5)
        assert out["rewards/accuracies"][i].item() == float(policy[c] - ref[c] > policy[r] - ref[r])
        averaged = (policy[c] - ref[c]) / lengths[c] - (policy[r] - ref[r]) / lengths[r]
        assert out["loss"][i].item() == pytest.approx((averaged - 1 / (2 * beta)) ** 2, rel=1e-4)
    assert out["rewards/chosen"].abs().min() > 1e-3  # the policy did move: the checks above are not all zeros

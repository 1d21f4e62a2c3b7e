"""TRL's logits/* and num_tokens, and metrics that cover every rank's batch: checked against plain loops
over tokens and against the whole batch in one process."""

import csv

import hydra
import pytest
import torch
from test_dpo_module import VOCAB, make_module

from congrad.data.synthetic import make_preference_rows
from congrad.data.tokenization import collate_pairs
from congrad.models.dpo_module import METRIC_NAMES, SUM_NAMES, batch_sums, trl_metrics
from congrad.utils.io import write_jsonl


def features(n, seed=0):
    """n pairs of random token ids with prompts and completions of varied lengths."""
    g = torch.Generator().manual_seed(seed)

    def ids(k):
        return torch.randint(2, VOCAB, (k,), generator=g).tolist()

    return [
        {
            "prompt_ids": ids(2 + i % 3),
            "chosen_ids": ids(3 + i % 4),
            "rejected_ids": ids(2 + (i * 5) % 6),
            "index": i,
            "language": ["de", "hi"][i % 2],
        }
        for i in range(n)
    ]


def moved_module():
    """A LoRA module whose policy is away from its reference, so rewards are not all zero."""
    module = make_module(lora=True)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in module.policy.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module


def mean_logits_by_loop(model, pairs, side):
    """TRL's logits/<side>: the mean over all completion tokens of the batch of the mean logit over the
    vocabulary at the position that predicts the token."""
    total, count = 0.0, 0
    for f in pairs:
        completion = f[f"{side}_ids"]
        ids = torch.tensor([f["prompt_ids"] + completion])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
        n = len(f["prompt_ids"])
        for t in range(n, n + len(completion)):
            total += logits[t - 1].double().mean().item()
            count += 1
    return total / count


def test_logits_metrics_are_trl_mean_logits_over_the_completion_tokens():
    module = moved_module()
    pairs = features(4)
    with torch.no_grad():
        out = module.pair_losses(collate_pairs(pairs, pad_token_id=0))
    metrics = trl_metrics(batch_sums(out, collate_pairs(pairs, pad_token_id=0)))
    for side in ("chosen", "rejected"):
        assert metrics[f"logits/{side}"] == pytest.approx(mean_logits_by_loop(module.policy, pairs, side), abs=1e-5)
    assert metrics["logits/chosen"] != pytest.approx(metrics["logits/rejected"], abs=1e-6)


def test_sums_added_over_ranks_give_the_metrics_of_all_their_pairs():
    """Two ranks holding 3 and 1 pairs: the summed statistics give the means over all 4 pairs (and over all
    their completion tokens), which a mean of the two ranks' means would not."""
    module = moved_module()
    pairs = features(4)
    rank_batches = [collate_pairs(pairs[:3], pad_token_id=0), collate_pairs(pairs[3:], pad_token_id=0)]
    with torch.no_grad():
        summed = sum(batch_sums(module.pair_losses(b), b) for b in rank_batches)
        whole_batch = collate_pairs(pairs, pad_token_id=0)
        whole = module.pair_losses(whole_batch)
    metrics = trl_metrics(summed)
    for name in METRIC_NAMES:
        assert metrics[name] == pytest.approx(whole[name].mean().item(), abs=1e-5), name
    assert metrics["rewards/margins"] != pytest.approx(
        sum(trl_metrics(batch_sums(module.pair_losses(b), b))["rewards/margins"] for b in rank_batches) / 2, abs=1e-4
    )
    for side in ("chosen", "rejected"):
        assert metrics[f"logits/{side}"] == pytest.approx(mean_logits_by_loop(module.policy, pairs, side), abs=1e-5)
    non_padding = sum(2 * len(f["prompt_ids"]) + len(f["chosen_ids"]) + len(f["rejected_ids"]) for f in pairs)
    assert summed[SUM_NAMES.index("input_tokens")].item() == non_padding == whole_batch["attention_mask"].sum().item()


def test_a_fit_logs_logits_and_the_running_token_count(compose_config, tmp_path):
    """Two epochs over 24 pairs without filtering: num_tokens ends at twice the non-padding tokens of the
    training pairs and grows at every step; logits/* are logged per step and per validation epoch."""
    path = tmp_path / "pairs.jsonl"
    write_jsonl(path, make_preference_rows(["en", "de"], pairs_per_language=12, seed=2))
    cfg = compose_config(
        "train",
        [
            f"data.path={path}",
            "data.batch_size=4",
            "~callbacks",
            "logger=csv",
            "trainer.max_epochs=2",
            "trainer.log_every_n_steps=1",
        ],
    )
    from congrad.training import fit

    fit(cfg)
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    num_tokens = [float(r["train/num_tokens"]) for r in rows if r.get("train/num_tokens")]
    tokenizer = hydra.utils.instantiate(cfg.model.tokenizer)
    dm = hydra.utils.instantiate(cfg.data, tokenizer=tokenizer)
    dm.setup()
    per_epoch = sum(
        len(f["prompt_ids"]) * 2 + len(f["chosen_ids"]) + len(f["rejected_ids"]) for f in dm._train_features
    )
    assert num_tokens[-1] == 2 * per_epoch
    assert all(b > a for a, b in zip(num_tokens, num_tokens[1:])) and len(num_tokens) == 2 * -(-len(dm.train_rows) // 4)
    for stage in ("train", "val"):
        logits = [float(r[f"{stage}/logits/chosen"]) for r in rows if r.get(f"{stage}/logits/chosen")]
        assert logits and all(abs(v) < 100 for v in logits)

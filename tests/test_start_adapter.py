"""DPO from a trained adapter (model.lora.adapter_path): the reference is the policy the run starts from
(the adapter merged into the base, as TRL's frozen copy of the starting adapter), a fresh adapter is trained
on top, and the saved adapter's base.json names what it sits on, so the trained policy can be rebuilt."""

import json

import pytest
import torch
from peft import PeftModel

from congrad.data.synthetic import make_preference_rows
from congrad.models import build_policy
from congrad.models.factory import build_tiny_llama
from congrad.models.logps import sequence_logps
from congrad.models.save_pretrained import load_trained_policy
from congrad.training import fit
from congrad.utils.io import write_jsonl


@pytest.fixture
def start_adapter(compose_config, tmp_path):
    """A trained adapter in peft format: the default tiny policy with random LoRA B matrices."""
    _, policy = build_policy(compose_config("train").model)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    policy.save_pretrained(tmp_path / "start")
    return tmp_path / "start"


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    write_jsonl(path, make_preference_rows(["en", "de"], pairs_per_language=8, seed=4))
    return path


def starting_policy(tokenizer, adapter, seed=0):
    """The policy as the adapter left it: the base (same seed) with the adapter active, not merged."""
    return PeftModel.from_pretrained(build_tiny_llama(tokenizer, init_seed=seed), adapter).eval()


def logps(model, batch):
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return sequence_logps(logits, batch["input_ids"], batch["completion_mask"])


def test_the_reference_is_the_starting_policy_and_a_fresh_adapter_is_trained(compose_config, start_adapter, pairs_file):
    import hydra

    cfg = compose_config("train", [f"data.path={pairs_file}", f"model.lora.adapter_path={start_adapter}"])
    tokenizer, policy = build_policy(cfg.model)
    dm = hydra.utils.instantiate(cfg.data, tokenizer=tokenizer)
    dm.setup()
    module = hydra.utils.instantiate(cfg.dpo, policy=policy, languages=dm.languages)
    batch = next(iter(dm.val_dataloader()))
    expected = logps(starting_policy(tokenizer, start_adapter), batch)
    base_only = logps(build_tiny_llama(tokenizer, init_seed=0), batch)
    assert not torch.allclose(expected, base_only, atol=1e-3)  # the starting adapter does change the policy
    torch.testing.assert_close(module.reference_logps(batch), expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(logps(module.policy, batch), expected, rtol=1e-5, atol=1e-4)  # B = 0: no change yet
    trainable = {n: p for n, p in module.policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert all(p.abs().sum() == 0 for n, p in trainable.items() if "lora_B" in n)  # fresh, not the starting one


def test_the_saved_adapter_names_its_base_and_rebuilds_the_trained_policy(
    compose_config, start_adapter, pairs_file, tmp_path
):
    out = tmp_path / "run"
    cfg = compose_config(
        "train",
        [
            f"data.path={pairs_file}",
            f"model.lora.adapter_path={start_adapter}",
            "~callbacks.congrad",
            "~callbacks.model_checkpoint",
            "~logger",
            "~eval",
            "trainer.max_epochs=1",
            "data.batch_size=4",
        ],
        output_dir=out,
    )
    tokenizer, policy = build_policy(cfg.model)
    fit(cfg, tokenizer, policy)
    record = json.loads((out / "adapter" / "base.json").read_text())
    assert record["merged_adapters"] == [str(start_adapter.resolve())]
    assert record["backbone"]["init_seed"] == cfg.model.backbone.init_seed

    ids = torch.tensor([tokenizer("Wie entsteht ein Regenbogen?")["input_ids"]])
    policy.eval()
    with torch.no_grad():
        trained = policy(input_ids=ids).logits
        _, rebuilt = load_trained_policy(out / "adapter")
        torch.testing.assert_close(rebuilt.eval()(input_ids=ids).logits, trained, rtol=1e-4, atol=1e-4)
        # the adapter alone, on the bare base, is not the trained policy
        bare = PeftModel.from_pretrained(build_tiny_llama(tokenizer, init_seed=0), out / "adapter").eval()
        assert not torch.allclose(bare(input_ids=ids).logits, trained, atol=1e-3)
        # and training moved the policy away from where it started
        assert not torch.allclose(starting_policy(tokenizer, start_adapter)(input_ids=ids).logits, trained, atol=1e-4)


def test_init_from_goes_on_training_the_adapter_with_the_base_as_reference(compose_config, start_adapter, pairs_file):
    """model.lora.init_from (the loop's reference=initial): the policy is the base with the adapter active and
    trainable, unmerged, so the disabled adapter, the DPO reference, is the base itself."""
    import hydra

    cfg = compose_config("train", [f"data.path={pairs_file}", f"+model.lora.init_from={start_adapter}"])
    tokenizer, policy = build_policy(cfg.model)
    dm = hydra.utils.instantiate(cfg.data, tokenizer=tokenizer)
    dm.setup()
    chosen = next(iter(dm.val_dataloader()))
    base = build_tiny_llama(tokenizer).eval()
    policy.eval()
    assert torch.allclose(logps(policy, chosen), logps(starting_policy(tokenizer, start_adapter), chosen), atol=1e-5)
    with policy.disable_adapter():
        assert torch.allclose(logps(policy, chosen), logps(base, chosen), atol=1e-5)
    trainable = {name for name, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    start = PeftModel.from_pretrained(build_tiny_llama(tokenizer), start_adapter)
    loaded = dict(start.named_parameters())
    assert all(torch.equal(p, loaded[name]) for name, p in policy.named_parameters() if "lora_B" in name)

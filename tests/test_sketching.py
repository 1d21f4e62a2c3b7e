"""Per-pair sketched gradients: the batched hooks method against a plain per-pair backward."""

import pytest
import torch
from test_dpo_module import EOS, PAD, VOCAB, make_batch, make_module, tiny_llama

from congrad import kernels
from congrad.filtering.sketch_pass import train_mode_without_dropout
from congrad.filtering.sketching import PerPairSketcher, gaussian_sketch, select_parameters
from congrad.models.factory import apply_lora

WIDTH, SEED = 1024, 7


def exact_pair_gradients(module, batch, params):
    """Oracle: for each pair, a plain backward of its loss alone; the selected gradients laid end to end."""
    named = select_parameters(module.policy, params)
    for _, p in named:
        p.requires_grad_(True)
    b = len(batch["index"])
    ref = module.reference_logps(batch)
    out = []
    for i in range(b):
        rows = [i, b + i]
        pair = {
            k: (v[rows] if k in ("input_ids", "attention_mask", "completion_mask") else v) for k, v in batch.items()
        }
        pair["index"], pair["language"] = batch["index"][i : i + 1], batch["language"][i : i + 1]
        module.policy.zero_grad(set_to_none=True)
        module.pair_losses(pair, ref_logps=ref[rows])["loss"].sum().backward()
        out.append(torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel()) for _, p in named]))
    module.policy.zero_grad(set_to_none=True)
    return torch.stack(out)


def trained_module():
    """A LoRA module a few steps away from the reference, so every adapter matrix has a gradient."""
    module = make_module(lora=True, lr=3e-2)
    batch = make_batch(prompt_lens=(3, 5, 4, 2), chosen_lens=(4, 2, 3, 5), rejected_lens=(2, 6, 3, 3), seed=1)
    optimizer = module.configure_optimizers()
    for _ in range(3):
        optimizer.zero_grad()
        module.pair_losses(batch)["loss"].mean().backward()
        optimizer.step()
    module.policy.zero_grad(set_to_none=True)
    return module.eval()


@pytest.fixture(scope="module")
def module():
    return trained_module()


@pytest.fixture(scope="module")
def batch():
    return make_batch(prompt_lens=(4, 2, 6), chosen_lens=(3, 5, 2), rejected_lens=(6, 1, 3), seed=5) | {
        "language": ["de", "hi", "de"]
    }


def test_loop_method_is_the_sketch_of_the_exact_pair_gradient(module, batch):
    exact = exact_pair_gradients(module, batch, "lora")
    loop = PerPairSketcher(module, WIDTH, SEED, params="lora", method="loop")(batch)
    assert torch.allclose(loop, kernels.count_sketch(exact, WIDTH, SEED), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("params", ["lora", r"layers\.1\..*(q_proj|down_proj)\.base_layer"])
def test_hooks_equal_loop(module, batch, params):
    loop = PerPairSketcher(module, WIDTH, SEED, params=params, method="loop")(batch)
    hooks_sketcher = PerPairSketcher(module, WIDTH, SEED, params=params, method="auto")
    assert hooks_sketcher.method == "hooks"
    hooks = hooks_sketcher(batch)
    assert loop.abs().sum() > 0
    assert torch.allclose(hooks, loop, atol=1e-5, rtol=1e-4)


def test_hooks_chunking_does_not_change_the_sketch(module, batch):
    whole = PerPairSketcher(module, WIDTH, SEED, method="hooks")(batch)
    one_pair_per_chunk = PerPairSketcher(module, WIDTH, SEED, method="hooks", chunk_bytes=1)(batch)
    assert torch.allclose(whole, one_pair_per_chunk, atol=1e-6)


def test_sketching_leaves_grads_and_trainability_untouched(module, batch):
    before = {n: p.requires_grad for n, p in module.policy.named_parameters()}
    PerPairSketcher(module, WIDTH, SEED, params="all", method="loop")(batch)
    assert {n: p.requires_grad for n, p in module.policy.named_parameters()} == before
    assert all(p.grad is None for p in module.policy.parameters())


def test_auto_falls_back_to_loop_for_parameters_hooks_cannot_replay():
    module = make_module(lora=True)
    layer = module.policy.get_base_model().model.layers[0]  # not a leaf: hooks cannot replay its own parameters
    layer.register_parameter("extra", torch.nn.Parameter(torch.zeros(3)))
    assert PerPairSketcher(module, WIDTH, SEED, params="all").method == "loop"
    with pytest.raises(ValueError, match="leaf modules"):
        PerPairSketcher(module, WIDTH, SEED, params="all", method="hooks")
    assert PerPairSketcher(module, WIDTH, SEED, params="lora").method == "hooks"
    with pytest.raises(ValueError, match="selects no parameter"):
        PerPairSketcher(module, WIDTH, SEED, params="no_such_layer")


def tied_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=PAD,
        eos_token_id=EOS,
        tie_word_embeddings=True,
        attn_implementation="eager",
    )
    with torch.random.fork_rng():
        torch.manual_seed(1)
        return LlamaForCausalLM(config)


def tiny_gemma2():
    """Gemma-2's peculiarities: scaled word embeddings tied to the LM head, (1 + w) norm scales, four norms
    per layer, soft-capped logits, sliding-window attention."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        sliding_window=4,
        pad_token_id=PAD,
        eos_token_id=EOS,
        bos_token_id=None,
        attn_implementation="eager",
    )
    with torch.random.fork_rng():
        torch.manual_seed(2)
        return Gemma2ForCausalLM(config)


def perturbed(policy, lora=False):
    """A DPO module around ``policy`` (optionally with a LoRA adapter), moved off its reference point."""
    from congrad.models import DPOModule

    if lora:
        policy = apply_lora(policy, r=4, alpha=8, target_modules=["q_proj", "down_proj"])
    module = DPOModule(policy, optimizer=torch.optim.AdamW)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(3)
        for p in module.policy.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return module.eval()


@pytest.mark.parametrize("model", ["llama+lora", "llama tied", "gemma2"])
def test_hooks_equal_loop_for_full_matrices_embeddings_and_norms(batch, model):
    """sketch.params=all by hooks: Linear weights (row blocks), embeddings (the rows of the pair's tokens,
    scaled for Gemma, tied to the LM head), norm scales (replayed); equal to the per-pair oracle, with or
    without a memory budget that forces one pair and a few rows per block."""
    policy = {"llama+lora": lambda: tiny_llama(), "llama tied": tied_llama, "gemma2": tiny_gemma2}[model]()
    module = perturbed(policy, lora=model.endswith("lora"))
    sketcher = PerPairSketcher(module, WIDTH, SEED, params="all")
    assert sketcher.method == "hooks"
    assert {o.kind for o in sketcher.owners} == {"linear", "embedding", "replay"}
    exact = PerPairSketcher(module, WIDTH, SEED, params="all", method="loop").exact_gradients(batch)
    oracle = kernels.count_sketch(exact, WIDTH, SEED)
    torch.testing.assert_close(
        PerPairSketcher(module, WIDTH, SEED, params="all", method="loop")(batch), oracle, atol=1e-6, rtol=1e-5
    )
    torch.testing.assert_close(sketcher(batch), oracle, atol=1e-6, rtol=1e-5)
    rows = PerPairSketcher(module, WIDTH, SEED, params="all", method="hooks", chunk_bytes=4 * 32 * 100)
    torch.testing.assert_close(rows(batch), oracle, atol=1e-6, rtol=1e-5)


def test_hooks_hold_layer_inputs_no_longer_than_checkpointed_autograd(batch):
    """Under gradient checkpointing the captured layer inputs are the recomputed ones: none of the forward's
    is alive once the forward is done, and in the backward at most one layer's at a time. Without
    checkpointing autograd holds them all anyway (the check tells the two apart)."""
    from torch.multiprocessing.reductions import StorageWeakRef

    alive = {}
    for checkpointing in (False, True):
        policy = apply_lora(tiny_llama(), r=4, alpha=8, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"])
        if checkpointing:
            policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        module = perturbed(policy)
        sketcher = PerPairSketcher(module, WIDTH, SEED, method="hooks")
        layers = [o.module for o in sketcher.owners]
        per_layer = len(layers) // len(policy.get_base_model().model.layers)
        seen, counts = [], {"after forward": None, "in backward": 0}

        def record(mod, args, output, seen=seen, counts=counts):
            if torch.is_grad_enabled():
                seen.append(StorageWeakRef(args[0].untyped_storage()))
                if counts["after forward"] is not None:  # a recompute, inside the backward
                    counts["in backward"] = max(counts["in backward"], sum(not r.expired() for r in seen))

        def at_lm_head(mod, args, output, seen=seen, counts=counts):
            if torch.is_grad_enabled():
                counts["after forward"] = sum(not r.expired() for r in seen)

        handles = [m.register_forward_hook(record) for m in layers]
        handles.append(policy.get_base_model().lm_head.register_forward_hook(at_lm_head))
        with train_mode_without_dropout(policy):
            sketches = sketcher(batch)
        for h in handles:
            h.remove()
        loop = PerPairSketcher(module, WIDTH, SEED, method="loop")(batch)
        torch.testing.assert_close(sketches, loop, atol=1e-6, rtol=1e-5)
        alive[checkpointing] = counts
    assert alive[False]["after forward"] == 2 * per_layer and alive[False]["in backward"] == 0
    assert alive[True]["after forward"] == 0
    assert 0 < alive[True]["in backward"] <= per_layer


def spearman(a, b):
    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    return torch.corrcoef(torch.stack([ra, rb]))[0, 1].item()


def test_sketched_scores_rank_like_exact_scores(module):
    batch = make_batch(
        prompt_lens=tuple(range(2, 14)),
        chosen_lens=(3, 5, 2, 4, 6, 1, 2, 3, 7, 2, 4, 5),
        rejected_lens=(2, 2, 5, 6, 1, 3, 4, 4, 2, 6, 3, 1),
        seed=11,
    )
    exact = exact_pair_gradients(module, batch, "lora")
    direction = exact.mean(0)
    exact_scores = torch.nn.functional.cosine_similarity(exact, direction[None], dim=1)
    sketches = PerPairSketcher(module, 4096, SEED, method="hooks")(batch)
    sketch_scores = torch.nn.functional.cosine_similarity(sketches, sketches.mean(0)[None], dim=1)
    assert spearman(exact_scores, sketch_scores) > 0.9


def test_gaussian_sketch_is_linear_in_pieces_and_preserves_inner_products_on_average():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3000, generator=g)
    whole = gaussian_sketch(x, 256, seed=3)
    pieces = gaussian_sketch(x[:, :1234], 256, seed=3) + gaussian_sketch(x[:, 1234:], 256, seed=3, offset=1234)
    assert torch.allclose(whole, pieces, atol=1e-4)
    estimates = torch.tensor([float(gaussian_sketch(x, 256, seed=s).prod(0).sum()) for s in range(40)])
    exact = float(x.prod(0).sum())
    spread = x.norm(dim=1).prod().item() / 16  # ≈ sd of one estimate: |a||b| / sqrt(w)
    assert abs(estimates.mean().item() - exact) < 5 * spread / 40**0.5


def test_scoring_pass_has_no_dropout_and_works_under_gradient_checkpointing(batch):
    from test_dpo_module import tiny_llama

    from congrad.filtering.sketch_pass import sketch_candidates
    from congrad.models import DPOModule
    from congrad.models.factory import apply_lora

    policy = apply_lora(tiny_llama(), r=4, alpha=8, dropout=0.5, target_modules=["q_proj", "v_proj", "up_proj"])
    policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    policy.enable_input_require_grads()
    module = DPOModule(policy, optimizer=torch.optim.AdamW, languages=["de", "hi"])
    for p in policy.parameters():  # move off the reference point so that every adapter matrix has a gradient
        if p.requires_grad:
            p.data.normal_(0, 0.05, generator=torch.Generator().manual_seed(p.numel()))
    module.eval()
    calls = []
    mlp = policy.get_base_model().model.layers[0].mlp
    forward = mlp.forward
    mlp.forward = lambda *args, **kwargs: calls.append(1) or forward(*args, **kwargs)  # module hooks skip recomputes
    first = sketch_candidates(PerPairSketcher(module, WIDTH, SEED, method="hooks"), [batch], "cpu", progress=False)
    del mlp.forward
    assert len(calls) == 3, "reference forward, policy forward, and the checkpointed recompute in the backward"
    again = sketch_candidates(PerPairSketcher(module, WIDTH, SEED, method="hooks"), [batch], "cpu", progress=False)
    loop = sketch_candidates(PerPairSketcher(module, WIDTH, SEED, method="loop"), [batch], "cpu", progress=False)
    assert torch.equal(first, again), "no dropout noise"
    assert torch.allclose(first, loop, atol=1e-5, rtol=1e-4)
    assert not policy.training
    assert all(m.p == 0.5 for m in policy.modules() if isinstance(m, torch.nn.Dropout))

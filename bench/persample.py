"""What the per-pair sketch pass costs: pairs/s of the batched (``hooks``) and ``loop`` methods against one plain
forward+backward over the same batch.

For a batch of B pairs of T tokens (2B sequences: chosen rows, then rejected rows; random token ids, the
first quarter of each row a shared prompt), timed in one run, interleaved, after ``--warmup`` rounds:

  plain   one forward + backward of the batch's summed DPO loss into the LoRA gradients (a training
          step without the optimizer)
  hooks   PerPairSketcher(method="hooks"): one forward + backward; each pair's LoRA weight gradient is
          formed from the layer inputs and output-gradients (bmm) and count-sketched
  loop    PerPairSketcher(method="loop"): one forward + backward per pair (the oracle)
  hooks[all]  (``--params lora all``, the default) the same pass sketching every parameter of the model:
          full weight matrices in row blocks (sketch.chunk_mb), the embedding rows of the pair's tokens,
          the norm scales — the paper's full-matrix gradients; its ratio to hooks (LoRA) is printed

All three get the same precomputed reference log-probs; the reference forward is timed on its own line.
Printed per shape: median seconds per batch (over ``--reps``), pairs/s, and the ratio to plain. The goal
is hooks/plain ≤ 1.5. A breakdown of the hooks pass follows: time spent inside the per-layer sketch hook
(per-pair bmm + count sketch), of which in ``count_sketch``, and the rest (forward, backward, hook
bookkeeping) — measured in separate instrumented rounds (synchronising after every call), so they add up
to a bit more than the hooks median.

    python bench/persample.py                    # CPU: the tiny model of conf/model/tiny.yaml, 16x128
    python bench/persample.py --preset small     # CPU: a wider, deeper Llama
    python bench/persample.py --device cuda      # GPU: preset 1b (layers of a 1B Llama, bf16, LoRA r=16),
                                                 # 8x512 and 16x256 tokens

Model sizes are Hydra overrides of conf/model/tiny.yaml (the tokenizer, and so the vocabulary of 512,
stays the tiny one: the LM head is small, so the ratios describe the transformer layers).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections import defaultdict

import common  # noqa: F401  (offline environment)

import torch  # noqa: E402

from congrad.filtering.sketching import PerPairSketcher  # noqa: E402
from congrad.training import build_module  # noqa: E402
from congrad.utils.device import resolve_device  # noqa: E402
from congrad.utils.project import compose_config  # noqa: E402

PRESETS = {
    "tiny": [],
    "small": [
        "model.backbone.hidden_size=256",
        "model.backbone.intermediate_size=688",
        "model.backbone.num_hidden_layers=4",
        "model.backbone.num_attention_heads=8",
        "model.backbone.num_key_value_heads=4",
        "model.backbone.max_position_embeddings=2048",
    ],
    # the layer shapes of Llama-3.2-1B (16 layers there), bf16 weights, float32 adapters
    "1b": [
        "model.backbone.hidden_size=2048",
        "model.backbone.intermediate_size=8192",
        "model.backbone.num_hidden_layers=8",
        "model.backbone.num_attention_heads=32",
        "model.backbone.num_key_value_heads=8",
        "model.backbone.max_position_embeddings=4096",
        "model.backbone.dtype=bfloat16",
        "model.backbone.attn_implementation=sdpa",
        "model.lora.r=16",
        "model.lora.alpha=32",
    ],
}


def random_batch(pairs: int, tokens: int, vocab: int, device: torch.device, seed: int = 0) -> dict:
    """A concatenated batch (rows ``[:B]`` chosen, ``[B:]`` rejected) of random ids, no padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (2 * pairs, tokens), generator=g)
    prompt = tokens // 4
    ids[pairs:, :prompt] = ids[:pairs, :prompt]
    completion = torch.zeros_like(ids)
    completion[:, prompt:] = 1
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "completion_mask": completion.to(device),
        "index": torch.arange(pairs, device=device),
        "language": ["en"] * pairs,
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def instrument(sketcher: PerPairSketcher, device: torch.device, totals: dict) -> None:
    """Accumulate the time spent in the sketcher's per-layer hook and in its projection into ``totals``."""
    layer_fn, project_fn = sketcher._sketch_module, sketcher.project

    def sketch_layer(*args, **kwargs):
        sync(device)
        start = time.perf_counter()
        layer_fn(*args, **kwargs)
        sync(device)
        totals["sketch hook"] += time.perf_counter() - start
        totals["hook calls"] += 1

    def project(*args, **kwargs):
        sync(device)
        start = time.perf_counter()
        out = project_fn(*args, **kwargs)
        sync(device)
        totals["count_sketch"] += time.perf_counter() - start
        totals["count_sketch calls"] += 1
        return out

    sketcher._sketch_module, sketcher.project = sketch_layer, project


def bench_shape(module, cfg, pairs: int, tokens: int, args, device: torch.device) -> None:
    vocab = module.policy.get_input_embeddings().weight.shape[0]
    batch = random_batch(pairs, tokens, vocab, device)
    policy = module.policy
    policy.eval()
    width, seed = args.width or cfg.sketch.width, cfg.sketch.seed
    chunk = int(cfg.sketch.chunk_mb * 2**20)
    sketchers = {
        m: PerPairSketcher(module, width, seed, params=cfg.sketch.params, method=m, chunk_bytes=chunk)
        for m in ("hooks", "loop")
        if m in args.methods
    }
    for params in args.params:
        if params != cfg.sketch.params and "hooks" in args.methods:
            sketchers[f"hooks[{params}]"] = PerPairSketcher(
                module, width, seed, params=params, method="hooks", chunk_bytes=chunk
            )
    ref = module.reference_logps(batch)

    def plain():
        policy.zero_grad(set_to_none=True)
        module.pair_losses(batch, ref_logps=ref)["loss"].sum().backward()

    fns = {"reference fwd": lambda: module.reference_logps(batch)}
    if "plain" in args.methods:
        fns["plain"] = plain
    fns.update({m: (lambda s=s: s(batch, ref)) for m, s in sketchers.items()})
    times, peak = defaultdict(list), {}
    for rep in range(args.warmup + args.reps):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t = timed(fn, device)
            if rep >= args.warmup:
                times[name].append(t)
                if device.type == "cuda":
                    peak[name] = torch.cuda.max_memory_allocated(device) / 2**30
    policy.zero_grad(set_to_none=True)

    med = {name: statistics.median(ts) for name, ts in times.items()}
    base = med.get("plain")
    sizes = ", ".join(f"{name}: {len(s.slots)} tensors, {s.dim:,} coordinates" for name, s in sketchers.items())
    print(
        f"\nB={pairs} pairs x T={tokens} tokens ({2 * pairs} sequences), width {width}, median of {args.reps}; {sizes}"
    )
    print(
        f"{'':<15}{'s/batch':>10}{'pairs/s':>10}{'x plain':>9}{'min s':>9}{'max s':>9}"
        + (f"{'peak GiB':>10}" if peak else "")
    )
    for name, t in med.items():
        ratio = f"{t / base:9.2f}" if base else f"{'-':>9}"
        print(
            f"{name:<15}{t:10.4f}{pairs / t:10.1f}{ratio}{min(times[name]):9.4f}{max(times[name]):9.4f}"
            + (f"{peak[name]:10.2f}" if peak else "")
        )

    for name in med:
        if name.startswith("hooks[") and "hooks" in med:
            print(f"{name} / hooks ({cfg.sketch.params}): {med[name] / med['hooks']:.2f}")
    if "hooks" in sketchers and args.breakdown_reps:
        probe = PerPairSketcher(module, width, seed, params=cfg.sketch.params, method="hooks", chunk_bytes=chunk)
        totals = defaultdict(float)
        instrument(probe, device, totals)
        total = sum(timed(lambda: probe(batch, ref), device) for _ in range(args.breakdown_reps))
        n = args.breakdown_reps
        hook, sketch = totals["sketch hook"] / n, totals["count_sketch"] / n
        print(
            f"hooks breakdown (instrumented, mean of {n}): total {total / n:.4f} s = "
            f"fwd+bwd+bookkeeping {total / n - hook:.4f} s + sketch hook {hook:.4f} s "
            f"[{totals['hook calls'] / n:.0f} calls: bmm/reshape {hook - sketch:.4f} s, "
            f"count_sketch {sketch:.4f} s in {totals['count_sketch calls'] / n:.0f} calls]"
        )
        if base:
            print(
                f"  as multiples of plain: rest {(total / n - hook) / base:.2f}, bmm/reshape "
                f"{(hook - sketch) / base:.2f}, count_sketch {sketch / base:.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="cpu | cuda | auto")
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default=None, help="model size (default: tiny on CPU, 1b on CUDA)"
    )
    parser.add_argument("--layers", type=int, default=None, help="override the preset's number of layers")
    parser.add_argument(
        "--shapes", nargs="+", default=None, help="BxT pairs x tokens (default: 16x128 on CPU, 8x512 16x256 on CUDA)"
    )
    parser.add_argument("--methods", nargs="+", default=["plain", "hooks", "loop"])
    parser.add_argument(
        "--params",
        nargs="+",
        default=["lora", "all"],
        help="sketch.params values timed with hooks (besides the config's, which hooks/loop use)",
    )
    parser.add_argument("--width", type=int, default=None, help="sketch width (default: conf/sketch)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--breakdown-reps", type=int, default=3, help="0 skips the hooks breakdown")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("override", nargs="*", default=[], help="extra Hydra overrides of conf/train.yaml")
    args = parser.parse_args()

    device = resolve_device(args.device)
    preset = args.preset or ("1b" if device.type == "cuda" else "tiny")
    shapes = args.shapes or (["8x512", "16x256"] if device.type == "cuda" else ["16x128"])
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")

    overrides = list(PRESETS[preset])
    if args.layers is not None:
        overrides.append(f"model.backbone.num_hidden_layers={args.layers}")
    cfg = compose_config("train", overrides + args.override)
    torch.manual_seed(0)
    _, module = build_module(cfg)
    module.to(device)
    backbone = cfg.model.backbone
    n_params = sum(p.numel() for p in module.policy.parameters())
    n_lora = sum(p.numel() for n, p in module.policy.named_parameters() if "lora_" in n)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} thread(s)"
    print(
        f"{where}; preset {preset}: hidden {backbone.hidden_size}, intermediate {backbone.intermediate_size}, "
        f"{backbone.num_hidden_layers} layers, {backbone.dtype}, {backbone.attn_implementation} attention; "
        f"{n_params / 1e6:.1f}M parameters, LoRA r={cfg.model.lora.r}: {n_lora / 1e6:.2f}M; torch {torch.__version__}"
    )
    for shape in shapes:
        pairs, tokens = (int(v) for v in shape.lower().split("x"))
        bench_shape(module, cfg, pairs, tokens, args, device)


if __name__ == "__main__":
    main()

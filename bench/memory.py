"""Peak memory of one DPO training step and of one ConGrad sketch pass on the same batch, each measured in a
process of its own, for a Llama-shaped model with gradient checkpointing on and off.

What is measured (one fresh process per line, so nothing one measurement allocates or caches leaks into
another; the model is built in that process, from conf/ with the preset's overrides, LoRA as configured):

  train     one optimisation step as Lightning runs it: the reference forward (no grad) and the policy
            forward + backward of the mean DPO loss, the optimizer step, gradients set to None; under bf16
            autocast on a GPU (the trainer's bf16-mixed). A first step is run before the measured one, so
            the optimizer state exists already and counts as resting memory.
  sketch    one ConGrad pass over the same batch: PerPairSketcher (sketch.method=auto -> hooks) in train
            mode without dropout, as the callback runs it (no autocast: Lightning applies it to the training
            step only), reference forward included. Also run once before the measured pass.
  held      (``--held``) the sketch pass plus forward hooks that keep every hooked layer's input until the
            pass ends: what the previous hooks design held, for comparison.
  reference (``--reference``) the reference forward alone.

How. GPU: ``torch.cuda.max_memory_allocated`` over the measured operation after ``reset_peak_memory_stats``;
resting = ``memory_allocated`` just before it. CPU: the profiler's record of every tensor allocation and
free (``profile_memory=True``, replayed by ``torch.profiler._memory_profiler.MemoryProfile``): the peak of the
bytes allocated minus freed since the operation started — exact for tensor memory, blind to the Python heap
and allocator slack; resting = the bytes of the parameters, buffers, optimizer state and the count-sketch
hash cache (``congrad.kernels.reference``) at that point. The peak resident set size
(``ru_maxrss``) of the warm-up run above the resident size just before it is printed as a coarse
cross-check (it includes first-use allocations, misses memory the allocator reuses, and cannot go below
the process's earlier peak).

Printed per case: resting and peak (resting + the operation's peak above it) in MiB, and the ratios of the
sketch pass's peak to the training step's. The goal: with checkpointing, sketch ≤ 1.2 × train (a PASS/FAIL
line; the exit status is 1 if it fails).

    python bench/memory.py                          # CPU: preset small, 4 pairs x 128 tokens
    python bench/memory.py --held --reference       # also the previous design and the reference forward
    python bench/memory.py --plan                   # also congrad.plan's estimate of each figure
    python bench/memory.py --device cuda --preset 8b --layers 4 --shapes 16x512   # GPU, Llama-3-8B layers
    python bench/memory.py --json out.json

Presets are Hydra overrides of conf/model/tiny.yaml (Llama layers built in code) with the vocabulary of the
real model (``SizedVocab``): ``small`` (CPU-sized, Llama-3 proportions), ``1b``, ``3b``, ``8b`` (the
layer shapes of Llama-3.2-1B/3B and Llama-3-8B, bf16 weights, sdpa attention).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import warnings
from pathlib import Path

import common  # noqa: F401  (offline environment)

HERE = Path(__file__).resolve().parent

PRESETS = {
    # hidden, intermediate, layers, heads, kv heads, vocab, dtype
    "small": dict(
        hidden_size=256,
        intermediate_size=896,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=1,
        vocab=2048,
        dtype="float32",
    ),
    "1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab=128256,
        dtype="bfloat16",
    ),
    "3b": dict(
        hidden_size=3072,
        intermediate_size=8192,
        num_hidden_layers=28,
        num_attention_heads=24,
        num_key_value_heads=8,
        vocab=128256,
        dtype="bfloat16",
    ),
    "8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab=128256,
        dtype="bfloat16",
    ),
}


class SizedVocab:
    """A stand-in tokenizer of ``vocab_size`` tokens (all the backbone builder reads from one), so a model built
    in code gets the vocabulary of a real one: ``model.tokenizer._target_=memory.SizedVocab`` (importable as
    ``memory`` from ``bench/``, which is ``sys.path[0]`` for ``python bench/memory.py``)."""

    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2

    def __init__(self, vocab_size: int = 512, **_: object):
        self.vocab_size = vocab_size

    def __len__(self) -> int:
        return self.vocab_size


def overrides_for(preset: str, layers: int | None, checkpointing: bool, extra: list[str]) -> list[str]:
    p = dict(PRESETS[preset])
    vocab, dtype = p.pop("vocab"), p.pop("dtype")
    if layers is not None:
        p["num_hidden_layers"] = layers
    out = [f"model.backbone.{k}={v}" for k, v in p.items()]
    out += [
        "model.backbone.max_position_embeddings=8192",
        f"model.backbone.dtype={dtype}",
        "model.backbone.attn_implementation=sdpa",
        "model.tokenizer._target_=memory.SizedVocab",
        f"model.tokenizer.vocab_size={vocab}",
        f"model.gradient_checkpointing={str(checkpointing).lower()}",
        "model.lora.r=16",
        "model.lora.alpha=32",
    ]
    return out + list(extra)


# ---- the child process: one measurement ----------------------------------------------------------------
def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _cpu_peak(fn) -> int:
    """Peak of tensor bytes allocated minus freed while ``fn`` runs (CPU)."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action, MemoryProfile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        fn()
    current = peak = 0
    for _, action, (key, _), size in MemoryProfile(prof.profiler.kineto_results).timeline:
        if key.device.type != "cpu":
            continue
        if action == Action.CREATE:
            current += size
        elif action == Action.DESTROY:
            current -= size
        peak = max(peak, current)
    del torch
    return peak


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(spec: dict) -> dict:
    import torch

    warnings.filterwarnings("ignore")
    from congrad.filtering.sketch_pass import train_mode_without_dropout
    from congrad.filtering.sketching import PerPairSketcher
    from congrad.kernels import reference as cs_reference
    from congrad.training import build_module
    from congrad.utils.project import compose_config

    from persample import random_batch

    torch.manual_seed(0)
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    cfg = compose_config("train", spec["overrides"])
    with device:  # parameters initialised where they live (fast for GPU-sized models)
        _, module = build_module(cfg)
    module.to(device)
    policy = module.policy
    vocab = policy.get_input_embeddings().weight.shape[0]
    batch = random_batch(spec["pairs"], spec["tokens"], vocab, device)
    cuda = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    state: list = []

    mode = spec["mode"]
    if mode == "train":
        optimizer = module.configure_optimizers()
        optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
        policy.train()

        def op():
            with autocast:
                loss = module.pair_losses(batch)["loss"].mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        state = [t for group in optimizer.state.values() for t in group.values() if torch.is_tensor(t)]
    else:
        sketcher = PerPairSketcher.from_config(module, cfg.sketch)
        held = []
        if mode == "held":

            def keep(mod, args, output):
                if torch.is_grad_enabled():
                    held.append(args[0].detach())

            for owner in sketcher.owners:
                owner.module.register_forward_hook(keep)

        def op():
            if mode == "reference":
                module.reference_logps(batch)
                return
            with train_mode_without_dropout(policy):
                sketcher(batch)
            held.clear()

    rss_before = _rss_bytes()
    op()  # warm-up: optimizer state, hash cache, lazy initialisation; its resident-set peak is the cross-check
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    if mode == "train":
        state = [t for group in optimizer.state.values() for t in group.values() if torch.is_tensor(t)]
    if cuda:
        torch.cuda.synchronize(device)
        resting = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        op()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - resting
    else:
        resting = (
            _tensor_bytes(module.parameters())
            + _tensor_bytes(module.buffers())
            + _tensor_bytes(state)
            + cs_reference.hash_cache_bytes()
        )
        peak = _cpu_peak(op)
    return {"resting": resting, "peak_above": peak, "peak": resting + peak, "rss_peak_above": max(0, rss)}


def run_child(spec: dict) -> dict:
    result = subprocess.run(
        [sys.executable, str(HERE / "memory.py"), "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=HERE.parent,
    )
    if result.returncode != 0:
        raise RuntimeError(f"measurement {spec['mode']} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---- the parent: cases, table ------------------------------------------------------------------------
def mib(v: float) -> str:
    return f"{v / 2**20:10.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="auto", help="cpu | cuda | auto")
    ap.add_argument("--preset", choices=sorted(PRESETS), default=None, help="default: small on CPU, 1b on CUDA")
    ap.add_argument("--layers", type=int, default=None, help="override the preset's number of layers")
    ap.add_argument("--shapes", nargs="+", default=None, help="BxT pairs x tokens (default 8x256 CPU, 16x512 CUDA)")
    ap.add_argument("--checkpointing", nargs="+", default=["on", "off"], choices=["on", "off"])
    ap.add_argument("--held", action="store_true", help="also the previous design (inputs held through the pass)")
    ap.add_argument("--reference", action="store_true", help="also the reference forward alone")
    ap.add_argument("--plan", action="store_true", help="also congrad.plan's estimates")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads in the measuring processes")
    ap.add_argument("--json", metavar="PATH", help="write all figures to PATH")
    ap.add_argument("override", nargs="*", default=[], help="extra Hydra overrides of conf/train.yaml")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    import torch

    from congrad.utils.device import resolve_device

    device = resolve_device(args.device)
    preset = args.preset or ("1b" if device.type == "cuda" else "small")
    shapes = args.shapes or (["16x512"] if device.type == "cuda" else ["4x128"])
    modes = ["train", "sketch"] + (["held"] if args.held else []) + (["reference"] if args.reference else [])
    p = PRESETS[preset]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} thread(s)"
    print(
        f"# {where}; preset {preset}: hidden {p['hidden_size']}, intermediate {p['intermediate_size']}, "
        f"{args.layers or p['num_hidden_layers']} layers, heads {p['num_attention_heads']}/"
        f"{p['num_key_value_heads']}, vocab {p['vocab']}, {p['dtype']}, LoRA r=16 on all linear layers; "
        f"torch {torch.__version__}" + (f"; overrides: {' '.join(args.override)}" if args.override else "")
    )
    print(
        f"# peak = resting + the operation's peak above it (MiB); "
        f"{'max_memory_allocated' if device.type == 'cuda' else 'tensor allocations (profiler)'}"
    )
    rows, failed = [], False
    for shape in shapes:
        pairs, tokens = (int(v) for v in shape.lower().split("x"))
        for ckpt in args.checkpointing:
            overrides = overrides_for(preset, args.layers, ckpt == "on", args.override)
            figures = {}
            for mode in modes:
                spec = {
                    "mode": mode,
                    "device": str(device),
                    "overrides": overrides,
                    "pairs": pairs,
                    "tokens": tokens,
                    "threads": args.threads,
                }
                figures[mode] = run_child(spec)
            estimate = _estimates(overrides, pairs, tokens, device) if args.plan else {}
            rows.append({"pairs": pairs, "tokens": tokens, "checkpointing": ckpt, "figures": figures, "plan": estimate})
            print(f"\n{pairs} pairs x {tokens} tokens, gradient checkpointing {ckpt}")
            print(
                f"{'':12}{'resting':>10}{'peak':>10}{'above':>10}{'rss above':>10}{'x train':>9}"
                + (f"{'plan':>10}{'plan err':>10}" if estimate else "")
            )
            train = figures["train"]["peak"]
            for mode, f in figures.items():
                line = (
                    f"{mode:<12}{mib(f['resting'])}{mib(f['peak'])}{mib(f['peak_above'])}"
                    f"{mib(f['rss_peak_above'])}{f['peak'] / train:9.2f}"
                )
                if mode in estimate:
                    line += f"{mib(estimate[mode])}{100 * (estimate[mode] / f['peak'] - 1):9.1f}%"
                print(line, flush=True)
            ratio = figures["sketch"]["peak"] / train
            if ckpt == "on":
                failed |= ratio > 1.2
                print(
                    f"{'PASS' if ratio <= 1.2 else 'FAIL'}  sketch pass / training step = {ratio:.2f} "
                    f"with checkpointing (goal <= 1.2)"
                )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"preset": preset, "device": str(device), "cases": rows}, indent=1))
    sys.exit(1 if failed else 0)


def _estimates(overrides: list[str], pairs: int, tokens: int, device) -> dict[str, float]:
    """congrad.plan's estimate of each measured figure for this configuration (bytes)."""
    from congrad.plan import estimate_from_config
    from congrad.utils.project import compose_config

    cfg = compose_config("train", overrides)
    est = estimate_from_config(cfg, pairs=pairs, tokens=tokens, mixed_precision=device.type == "cuda")
    return {"train": est.train, "sketch": est.sketch, "reference": est.reference}


if __name__ == "__main__":
    main()

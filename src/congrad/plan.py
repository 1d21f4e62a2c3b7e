"""Know before you launch: the estimated peak memory per GPU of a configured run, from the config alone, and
for the self-rewarding loop the work of each iteration (:mod:`congrad.selfreward.work`).

    python -m congrad.plan +experiment=llama3_10lang
    python -m congrad.plan +experiment=llama3_10lang trainer.devices=4 --gpu-memory 80
    python -m congrad.plan +experiment=gemma2_10lang data.max_length=2048 --candidates 20000 --json plan.json

Options before or among the Hydra overrides: ``--gpu-memory GiB`` (per GPU, default 80), ``--candidates N``
(pairs scored per ConGrad pass, default 10000), ``--json PATH``. The settings are checked as the entry points
check them (``congrad.settings``), and so are the options: what is wrong is one line and exit 2. The exit
status gates a launch: 0 when the run fits, :data:`DOES_NOT_FIT` (4) when it does not. No weights are loaded
and nothing is downloaded: the model is instantiated on the meta device from the ``architecture`` block of
its config (``conf/model/*.yaml``; for ``model=tiny`` it is the backbone's own numbers), which gives the
exact parameter count and the shapes of every linear layer, LoRA included.

What is counted (bytes per GPU; N = 2·B·T tokens of a micro-batch of B pairs padded to T = data.max_length
tokens; a = 2 bytes per activation under bf16/fp16 (weights or mixed precision), else 4):

* resting: the weights (divided by the devices under FSDP, plus two unsharded layers in flight); LoRA
  adapters in float32 with their gradients and AdamW's two moments (16 bytes per trainable parameter);
  for full fine-tuning the gradients and moments in the weight dtype and the frozen reference copy.
* activations autograd saves, per token and layer, for a Llama/Gemma decoder layer:
  every norm's float32 input (4·h each); with checkpointing nothing else but the layer input (a·h);
  without, the norm outputs feeding trained linear layers, q and k/v repeated to all heads, the
  attention output (sdpa) and its copy feeding o_proj, the MLP's gate, activation, up and product
  (4·I), the LoRA A outputs (r per adapted layer), and for eager attention the softmax probabilities
  (T per head, float32 and a copy in a; Gemma-2's soft-capping adds one more).
* logits: the float32 logits saved for the log-softmax (N·V·4; Gemma-2's final soft-capping keeps
  another N·V·a), and in the backward their gradients: three more float32 copies at a = 4 (measured), two
  copies in a at a = 2 (sequence_logps upcasts half-precision logits row by row).
* backward working set: the larger of the logits' and one layer's (with checkpointing: that layer's
  recomputed activations) plus two N·I·a gradient temporaries of the MLP.
* ConGrad pass: the policy's forward + backward as above at the scoring batch (``sketch.batch_size`` or
  ``data.eval_batch_size``), no parameter gradients, plus one block of per-pair layer gradients (bounded by
  ``sketch.chunk_mb``) and the ``[B, w]`` sketches; the reference forward comes first. Host memory: the
  N × w float32 sketches of all candidates and the L × w per-language state.
* reference pass: the reference forward alone (no grad): one layer's transient activations or the
  logits, whichever is larger.
* generation: the KV cache (2 · layers · kv heads · head dim · (prompt + new tokens) · sequences · a) and
  the prefill's transient activations of one layer.

Compute (FLOPs per epoch, :func:`flops`): a forward pass costs 2 FLOPs per weight of every matrix product
(the decoder's linear layers, LoRA included, and the output layer) per token, plus 4·layers·T·heads·head_dim
for attention. A training step and a ConGrad pass both run the reference forward, the policy's forward and
its backward to the activations (3 forwards; 4 with gradient checkpointing); the step adds the weight
gradients of the trained parameters (2 FLOPs per trained weight per token), the pass the same per-pair
gradients of the sketched ones plus the count sketch of each pair's gradient (1 per sketched coordinate
and pair). Before every epoch the pass scores all ``--candidates``; the epoch trains on the kept share
(``filter.keep_ratio``; all of them with a threshold).

Not counted: the CUDA context and allocator fragmentation (the verdict keeps ``RESERVE_GIB`` free),
optimizer-step temporaries, DDP's gradient buckets beyond the adapters' size. Validated against
bench/memory.py on CPU (float32, sdpa) shapes within 25%; the bf16 terms follow the same accounting and
are not yet checked on a GPU.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from congrad.errors import ConfigError, CongradError
from congrad.utils.entry import exit_on_user_error
from congrad.utils.fileset import prepare_output_dir
from congrad.utils.io import write_json

GIB = 2**30
RESERVE_GIB = 2.0  # CUDA context, allocator slack
DOES_NOT_FIT = 4  # the exit status when the verdict is "does NOT fit" (2 is a setting to fix, as everywhere)
LORA_ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class ModelShape:
    """What the estimate needs to know about the model, read from a meta-device instance."""

    model_type: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    norms_per_layer: int
    params: int
    linear: dict[str, tuple[int, int]]  # per-layer linear module name -> (in, out)
    attn_softcap: bool = False
    final_softcap: bool = False
    layer_params: int = 0


def model_shape(architecture: dict) -> ModelShape:
    """Instantiate ``architecture`` (a transformers config: ``model_type`` and its fields) on the meta device
    and read off the numbers: no weights, no download."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    arch = dict(architecture)
    config = AutoConfig.for_model(arch.pop("model_type"), **arch)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    layer = model.model.layers[0]
    linear = {
        name.rsplit(".", 1)[-1]: (m.in_features, m.out_features)
        for name, m in layer.named_modules()
        if isinstance(m, torch.nn.Linear)
    }
    norms = sum(1 for m in layer.modules() if "RMSNorm" in type(m).__name__ or "LayerNorm" in type(m).__name__)
    # per-head q/k norms (Gemma-3) act on head_dim, not on hidden; count full-width ones only
    norms = sum(1 for n, m in layer.named_children() if "norm" in n.lower()) or norms
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return ModelShape(
        model_type=config.model_type,
        hidden=config.hidden_size,
        intermediate=config.intermediate_size,
        layers=config.num_hidden_layers,
        heads=config.num_attention_heads,
        kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
        head_dim=head_dim,
        vocab=config.vocab_size,
        tied=bool(getattr(config, "tie_word_embeddings", False)),
        norms_per_layer=norms,
        params=sum(p.numel() for p in model.parameters()),
        linear=linear,
        attn_softcap=getattr(config, "attn_logit_softcapping", None) is not None,
        final_softcap=getattr(config, "final_logit_softcapping", None) is not None,
        layer_params=sum(p.numel() for p in layer.parameters()),
    )


def lora_targets(shape: ModelShape, target_modules) -> list[str]:
    """The per-layer linear modules a LoRA config adapts (``all-linear`` or a list of names)."""
    if target_modules is None or target_modules == "all-linear":
        return list(shape.linear)
    names = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    return [n for n in shape.linear if any(n == t or re.fullmatch(t, n) for t in names)]


@dataclass
class Settings:
    """The run's numbers that drive memory (see :func:`settings_from_config`)."""

    pairs: int  # training micro-batch, pairs
    tokens: int  # sequence length T (padded)
    sketch_pairs: int  # ConGrad scoring batch, pairs
    weight_bytes: int
    act_bytes: int  # training step (autocast)
    pass_act_bytes: int  # ConGrad pass / generation (no autocast)
    checkpointing: bool
    attention: str  # sdpa | eager | flash_attention_2 ...
    lora_r: int | None  # None: full fine-tuning
    lora_targets: list[str] = field(default_factory=list)
    sketch_params: str = "lora"
    chunk_bytes: int = 256 * 2**20
    width: int = 4096
    on_cpu: bool = False  # CPU runs also keep the count sketch's hash cache
    devices: int = 1
    strategy: str = "auto"
    candidates: int = 10000
    keep_ratio: float = 1.0  # share of the candidates an epoch trains on
    languages: int = 10
    gen_sequences: int = 64
    gen_prompt: int = 512
    gen_new: int = 512


@dataclass
class Estimate:
    """Bytes per GPU of each phase's peak (``train``, ``reference``, ``sketch``, ``generation``), the resting
    parts, and host-side ConGrad sizes."""

    weights: float
    trainable_state: float
    train: float
    reference: float
    sketch: float
    generation: float
    sketches_host: float
    filter_state: float
    parts: dict[str, float] = field(default_factory=dict)


def _layer_saved_per_token(s: ModelShape, st: Settings, a: int, all_linear: bool) -> float:
    """Bytes autograd keeps per token for one decoder layer without checkpointing (excluding attention's T²
    terms)."""
    h, i, qd = s.hidden, s.intermediate, s.heads * s.head_dim
    trained = set(s.linear) if (all_linear or st.lora_r is None) else set(st.lora_targets)
    saved = s.norms_per_layer * h * 4  # float32 input of every norm
    if trained & {"q_proj", "k_proj", "v_proj"}:
        saved += h * a  # the normalised input of the attention projections
    saved += 3 * qd * a  # q, k, v (k/v repeated to every head)
    if st.attention != "eager":
        saved += qd * a  # sdpa / flash keep their output
    if "o_proj" in trained:
        saved += qd * a  # the contiguous attention output feeding o_proj
    if trained & {"gate_proj", "up_proj"}:
        saved += h * a
    saved += 3 * i * a  # gate output (activation's input), activation output, up output
    if "down_proj" in trained:
        saved += i * a  # their product, down_proj's input
    if st.lora_r:
        saved += len(st.lora_targets) * st.lora_r * a
    return saved


def _attention_probs_per_token(s: ModelShape, st: Settings, a: int) -> float:
    if st.attention != "eager":
        return 0.0
    per = s.heads * st.tokens * (4 + a)  # float32 softmax output and its copy in a, per token and head row
    if s.attn_softcap:
        per += s.heads * st.tokens * a
    return per


def estimate(s: ModelShape, st: Settings) -> Estimate:
    """The peak bytes per GPU of each phase (see the module docstring for what is counted)."""
    wb = st.weight_bytes
    sharded = st.strategy in ("fsdp", "fsdp2") and st.devices > 1
    layer_bytes = s.layer_params * wb
    weights = s.params * wb / st.devices + 2 * layer_bytes if sharded else s.params * wb
    if st.lora_r is None:  # full fine-tuning: gradients, AdamW moments (weight dtype), frozen reference copy
        trainable = s.params * wb * 3 / (st.devices if sharded else 1) + weights
    else:
        n_lora = sum(st.lora_r * sum(s.linear[t]) for t in st.lora_targets) * s.layers
        trainable = 16 * n_lora / (st.devices if sharded else 1)
    resting = weights + trainable
    parts = {"weights": weights, "trainable state": trainable}

    def policy_pass(pairs: int, a: int, all_linear: bool) -> tuple[float, float]:
        """(forward+backward peak above resting, reference-forward peak above resting) for one batch."""
        n = 2 * pairs * st.tokens
        h, i, v = s.hidden, s.intermediate, s.vocab
        layer = n * (_layer_saved_per_token(s, st, a, all_linear) + _attention_probs_per_token(s, st, a))
        saved_layers = s.layers * n * h * a if st.checkpointing else s.layers * layer
        final = n * h * 4
        logits_saved = n * v * 4 + (n * v * a if s.final_softcap else 0)
        logits_work = logits_saved + (3 * n * v * 4 if a == 4 else 2 * n * v * a)
        mlp_tmp = 2 * n * i * a
        layer_phase = saved_layers + (layer if st.checkpointing else 0) + mlp_tmp
        train = max(saved_layers + final + logits_work, layer_phase)
        # reference forward, no grad: one layer's transients (norm in float32, attention, 3 MLP tensors) or
        # the logits with the hidden states
        ref_layer = n * (3 * i * a + 5 * h * a + h * 4) + n * _attention_probs_per_token(s, st, a)
        reference = max(ref_layer, n * v * a + 2 * n * h * a)
        return max(train, reference), reference

    train_act, ref_act = policy_pass(st.pairs, st.act_bytes, all_linear=False)
    all_linear = st.sketch_params != "lora"
    sketch_act, _ = policy_pass(st.sketch_pairs, st.pass_act_bytes, all_linear=all_linear)
    # one block of per-pair gradients of the widest sketched layer, and the batch's sketches
    widest = (
        max(s.linear.values(), key=lambda io: io[0] * io[1])
        if all_linear
        else max(((st.lora_r, s.linear[t][1]) for t in st.lora_targets), key=lambda io: io[0] * io[1], default=(0, 0))
    )
    if all_linear:
        widest = max(widest, (s.hidden, s.vocab), key=lambda io: io[0] * io[1])
    t2 = 2 * st.tokens
    x_in = max(s.linear[t][0] for t in (s.linear if all_linear else st.lora_targets))
    block = min(st.chunk_bytes, st.sketch_pairs * 4 * (t2 * (x_in + widest[1]) + widest[0] * widest[1]))
    sketch_extra = block + st.sketch_pairs * st.width * 4
    if st.on_cpu:  # congrad.kernels.reference caches 12 bytes per sketched coordinate, up to its bound
        from congrad.kernels import reference

        sketched = s.params if all_linear else sum(st.lora_r * sum(s.linear[t]) for t in st.lora_targets) * s.layers
        sketch_extra += min(12 * sketched, reference.HASH_CACHE_BYTES_DEFAULT)
    parts.update(
        {
            "training activations": train_act,
            "reference activations": ref_act,
            "ConGrad pass activations": sketch_act,
            "ConGrad pass gradient block + sketches": sketch_extra,
        }
    )
    sketch_resting = weights + (trainable if st.lora_r is None else trainable / 4)  # adapters, no grads/moments

    # generation: KV cache + one layer of the prefill + the sampling step's logits
    seqs, total = st.gen_sequences, st.gen_prompt + st.gen_new
    kv = 2 * s.layers * s.kv_heads * s.head_dim * total * seqs * st.pass_act_bytes
    prefill_tokens = seqs * st.gen_prompt
    prefill = prefill_tokens * (3 * s.intermediate + 6 * s.hidden) * st.pass_act_bytes
    if st.attention == "eager":
        prefill += seqs * s.heads * st.gen_prompt**2 * (4 + st.pass_act_bytes)
    sampling = 3 * seqs * s.vocab * 4
    parts["KV cache"] = kv
    generation = sketch_resting + kv + prefill + sampling

    return Estimate(
        weights=weights,
        trainable_state=trainable,
        train=resting + train_act,
        reference=resting + ref_act,
        sketch=sketch_resting + sketch_act + sketch_extra,
        generation=generation,
        sketches_host=st.candidates * st.width * 4,
        filter_state=2 * st.languages * st.width * 4,
        parts=parts,
    )


@dataclass
class Flops:
    """FLOPs of one epoch: the ConGrad pass over every candidate and the training on the kept pairs."""

    sketch: float
    train: float

    @property
    def ratio(self) -> float:
        return self.sketch / self.train if self.train else math.inf


def flops(s: ModelShape, st: Settings) -> Flops:
    """See the module docstring."""
    lora = {t: st.lora_r * sum(s.linear[t]) for t in st.lora_targets} if st.lora_r else {}
    base = s.layers * sum(i * o for i, o in s.linear.values()) + s.hidden * s.vocab  # weights in matrix products
    adapters = s.layers * sum(lora.values())
    forward = 2 * (base + adapters) + 4 * s.layers * st.tokens * s.heads * s.head_dim  # per token
    passes = 4 if st.checkpointing else 3
    trained = adapters if st.lora_r else base
    sketched = adapters if st.sketch_params == "lora" and st.lora_r else base + adapters
    tokens = 2 * st.tokens  # chosen and rejected, padded to T
    per_pair_train = tokens * (passes * forward + 2 * trained)
    per_pair_sketch = tokens * (passes * forward + 2 * sketched) + sketched
    return Flops(sketch=st.candidates * per_pair_sketch, train=st.keep_ratio * st.candidates * per_pair_train)


# ---- from a composed config ------------------------------------------------------------------------------
def _bytes_of(dtype: str) -> int:
    return 2 if str(dtype) in ("bfloat16", "float16", "bf16", "fp16", "half") else 4


def settings_from_config(
    cfg,
    *,
    pairs: int | None = None,
    tokens: int | None = None,
    mixed_precision: bool | None = None,
    candidates: int = 10000,
) -> tuple[ModelShape, Settings]:
    """The model shape and the memory-relevant settings of a composed ``train.yaml`` config. ``pairs``,
    ``tokens`` (micro-batch and sketch batch), ``mixed_precision`` override what the config says."""
    from omegaconf import OmegaConf

    model = cfg.model
    if "architecture" not in model:
        raise ConfigError("the model config has no `architecture` block (see conf/model/llama3_8b.yaml)")
    shape = model_shape(OmegaConf.to_container(model.architecture, resolve=True))
    wb = _bytes_of(model.backbone.get("dtype", "float32"))
    precision = str(cfg.trainer.get("precision", "32-true"))
    mixed = ("16" in precision) if mixed_precision is None else mixed_precision
    lora = model.get("lora")
    data, sketch = cfg.data, cfg.sketch
    sketch_pairs = pairs or sketch.get("batch_size") or data.get("eval_batch_size") or data.batch_size
    sr = cfg.get("self_reward") or {}
    gen = sr.get("generation", {}) if sr else {}
    strategy = cfg.trainer.get("strategy", "auto")
    if not isinstance(strategy, str):  # a strategy object (trainer=fsdp: congrad.sharding.FSDP2Strategy; trainer=ddp)
        target = str(strategy.get("_target_", ""))
        strategy = "fsdp" if "FSDP" in target else "ddp" if "DDP" in target else target
    devices = cfg.trainer.get("devices", 1)
    languages = len(data.get("languages") or []) or 10
    st = Settings(
        pairs=pairs or data.batch_size,
        tokens=tokens or data.max_length,
        sketch_pairs=sketch_pairs,
        weight_bytes=wb,
        act_bytes=2 if (mixed or wb == 2) else 4,
        pass_act_bytes=wb,
        checkpointing=bool(model.get("gradient_checkpointing", False)),
        attention=str(model.backbone.get("attn_implementation") or "sdpa"),
        lora_r=int(lora.r) if lora is not None else None,
        lora_targets=lora_targets(
            shape,
            OmegaConf.to_container(lora.target_modules, resolve=True)
            if lora is not None and not isinstance(lora.target_modules, str)
            else (lora.target_modules if lora is not None else None),
        ),
        sketch_params=str(sketch.params),
        chunk_bytes=int(sketch.chunk_mb * 2**20),
        width=int(sketch.width),
        devices=int(devices) if str(devices).isdigit() else 1,
        strategy=strategy,
        candidates=candidates,
        keep_ratio=float(cfg.filter.get("keep_ratio") or 1.0) if cfg.get("filter") is not None else 1.0,
        languages=languages,
        on_cpu=str(cfg.trainer.get("accelerator")) == "cpu" and not mixed_precision,
        gen_sequences=int(sr.get("batch_size", 16)) * int(gen.get("num_responses", 4)) if sr else 64,
        gen_prompt=int(data.get("max_prompt_length") or 512),
        gen_new=int(gen.get("max_new_tokens", 512)),
    )
    return shape, st


def estimate_from_config(
    cfg,
    *,
    pairs: int | None = None,
    tokens: int | None = None,
    mixed_precision: bool | None = None,
    candidates: int = 10000,
) -> Estimate:
    shape, st = settings_from_config(
        cfg, pairs=pairs, tokens=tokens, mixed_precision=mixed_precision, candidates=candidates
    )
    return estimate(shape, st)


# ---- the command ------------------------------------------------------------------------------------------
def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def report(cfg, shape: ModelShape, st: Settings, est: Estimate, gpu_gib: float) -> tuple[str, bool]:
    usable = gpu_gib - RESERVE_GIB
    g = lambda v: f"{v / GIB:8.2f}"  # noqa: E731
    name = cfg.model.get("name_or_path") or cfg.model.backbone.get("_target_", "").rsplit(".", 1)[-1]
    lines = [
        f"congrad plan: {cfg.get('task_name', 'train')} — {name}",
        f"  model: {shape.model_type}, {shape.layers} layers, hidden {shape.hidden}, intermediate "
        f"{shape.intermediate}, heads {shape.heads}/{shape.kv_heads} x {shape.head_dim}, vocab {shape.vocab}"
        f"{' (tied)' if shape.tied else ''}; {_count(shape.params)} parameters, "
        f"{'bf16' if st.weight_bytes == 2 else 'fp32'} weights, {st.attention} attention",
        "  "
        + (f"LoRA r={st.lora_r} on {', '.join(st.lora_targets)}" if st.lora_r else "full fine-tuning")
        + f"; gradient checkpointing {'on' if st.checkpointing else 'off'}",
        f"  {st.devices} x {gpu_gib:g} GiB GPU(s), strategy {st.strategy}; keeping {RESERVE_GIB:g} GiB free",
        "",
        f"  {'per GPU':58s}{'GiB':>8s}   fits",
        f"  {'weights':58s}{g(est.weights)}",
        f"  {'trainable state (adapters, gradients, AdamW)':58s}{g(est.trainable_state)}",
    ]
    phases = [
        (
            f"training step ({st.pairs} pairs x {st.tokens} tokens, "
            f"{'bf16' if st.act_bytes == 2 else 'fp32'} activations)",
            est.train,
        ),
        (f"reference pass ({st.pairs} pairs x {st.tokens} tokens, no grad)", est.reference),
        (f"generation ({st.gen_sequences} sequences x {st.gen_prompt}+{st.gen_new} tokens)", est.generation),
        (
            f"ConGrad pass ({st.sketch_pairs} pairs x {st.tokens} tokens, params={st.sketch_params}, w={st.width})",
            est.sketch,
        ),
    ]
    ok = True
    for label, value in phases:
        fits = value <= usable * GIB
        ok &= fits
        lines.append(f"  {label:58s}{g(value)}   {'yes' if fits else 'NO'}")
    lines += [
        "",
        "  compute per epoch (FLOPs)",
        *_flops_lines(st, flops(shape, st)),
        "",
        "  host memory (CPU)",
        f"  {f'sketches: {st.candidates} candidates x {st.width} x 4 B':58s}{g(est.sketches_host)}",
        f"  {f'filter state: {st.languages} languages x {st.width} x 4 B (aggregates, EMA)':58s}{g(est.filter_state)}",
        "",
        f"  verdict: {'fits' if ok else 'does NOT fit'} on {st.devices} x {gpu_gib:g} GiB"
        + (
            ""
            if ok
            else " (lower data.batch_size / sketch.batch_size / data.max_length, turn on "
            "model.gradient_checkpointing, or add devices with trainer=fsdp)"
        ),
    ]
    return "\n".join(lines), ok


def _flops_lines(st: Settings, f: Flops) -> list[str]:
    kept = round(st.keep_ratio * st.candidates)
    return [
        f"  {f'ConGrad pass: {st.candidates} candidates x 2 x {st.tokens} tokens':58s}{f.sketch:10.3g}",
        f"  {f'training: {kept} kept pairs (forward, backward, reference)':58s}{f.train:10.3g}",
        f"  {'ConGrad pass / training':58s}{f.ratio:10.2f}",
    ]


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    """The command: prints the plan; 0 when the run fits, :data:`DOES_NOT_FIT` when it does not."""
    ap = argparse.ArgumentParser(
        prog="python -m congrad.plan", description=__doc__.split("\n\n")[0], exit_on_error=False
    )
    ap.add_argument("--gpu-memory", type=float, default=80.0, help="GiB per GPU (default 80)")
    ap.add_argument("--candidates", type=int, default=10000, help="pairs scored per ConGrad pass")
    ap.add_argument("--json", metavar="PATH", help="also write the figures to PATH")
    try:
        args, overrides = ap.parse_known_args(sys.argv[1:] if argv is None else argv)
    except argparse.ArgumentError as err:
        raise ConfigError(str(err)) from None
    _check_options(args)
    import os
    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from congrad.selfreward.work import iteration_work, pool, work_lines
    from congrad.settings import check_settings

    cfg = _compose(overrides)
    check_settings(cfg)
    shape, st = settings_from_config(cfg, candidates=args.candidates)
    est = estimate(shape, st)
    text, ok = report(cfg, shape, st, est, args.gpu_memory)
    loop = cfg.get("self_reward") is not None and cfg.data.get("path") is None and cfg.iterations > 0
    print(text + ("\n\n" + "\n".join(work_lines(cfg)) if loop else ""))
    if args.json:
        write_json(
            args.json,
            {
                "shape": asdict(shape),
                "settings": asdict(st),
                "estimate": asdict(est),
                "flops": {**asdict(flops(shape, st)), "ratio": flops(shape, st).ratio},
                "gpu_memory_gib": args.gpu_memory,
                "fits": ok,
                "iterations": [asdict(w) for w in iteration_work(cfg, pool(cfg))] if loop else [],
            },
        )
    return 0 if ok else DOES_NOT_FIT


def _check_options(args: argparse.Namespace) -> None:
    problems = []
    if not (math.isfinite(args.gpu_memory) and args.gpu_memory > 0):
        problems.append(f"--gpu-memory {args.gpu_memory:g}: must be a number of GiB > 0")
    if args.candidates < 1:
        problems.append(f"--candidates {args.candidates}: must be an integer >= 1")
    if args.json is not None:
        path = Path(args.json).expanduser()
        if path.is_dir():
            problems.append(f"--json {args.json} is a directory: give the name of the file to write")
        else:
            try:
                prepare_output_dir(path.parent, f"--json {args.json}: its folder {path.parent}")
            except CongradError as err:
                problems.append(str(err))
        args.json = str(path)
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} options are out of bounds:\n  " + "\n  ".join(problems))


def _compose(overrides: list[str]):
    """``conf/train.yaml`` with ``overrides``; an unknown group option or an override Hydra cannot parse is
    one line."""
    from hydra.errors import HydraException, MissingConfigException

    from congrad.utils.project import compose_config

    try:
        return compose_config("train", overrides)
    except HydraException as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        options = getattr(err, "options", None) if isinstance(err, MissingConfigException) else None
        shown = [name for name in options or () if not name.startswith("_")]  # _name: a base, not an option
        raise ConfigError(first + (f" (available: {', '.join(shown)})" if shown else "")) from None


if __name__ == "__main__":
    sys.exit(main())

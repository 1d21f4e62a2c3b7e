"""Evidence on a real multilingual model: does ConGrad pick better pairs than all / random / own-language?

The set-up of ``conf/experiment/gemma3_270m_arms.yaml``: Gemma-3-270m (multilingual base model) with a
fresh LoRA adapter, prompts as "Question: ...\\nAnswer:", ``data/planted_8lang.jsonl`` (16 pairs in each of 8
seen languages; in de, ru and hi 25% of the pairs flipped: chosen and rejected swapped), the held-out
sets of ``data/eval/`` (topics no training pair is about) in the 8 seen and 4 unseen languages.

Part 1 — scoring quality (seed 0). One exact per-pair gradient pass (one backward per pair, the LoRA
gradient end to end) at the reference point (policy = reference), then every aggregator on the same
vectors: exact, and count-sketched at each width (the sketch is linear, so the sketch of the exact
gradient is what the batched pass computes; checked on the first batch). Printed: AUROC of clean vs
flipped pairs (all pairs ranked together, and within the flipped languages), the share of flipped and of
clean pairs dropped at keep 0.75 (global and per language), Spearman of sketched vs exact scores. The
same after a short DPO warm-up on all pairs, with what explains the difference: the DPO weight σ(−h) of
a pair's gradient (small once a pair is fit) and the norms of clean and flipped pairs' gradients.

Part 2 — downstream, per seed: one batched sketch pass (the pass train.py's callback makes before the
first epoch; with one epoch it is the only one), the kept set of every arm from it, then LoRA DPO for one
epoch from the same initialisation and in the same data order on each arm's pairs, and the evaluation of
each trained policy against the base model (``congrad.evaluation``): held-out preference accuracy,
language fidelity of greedy answers, NLL delta, win rate by the rule judge. Arms: all pairs, pcgrad, mean,
none (own language), random (same size, same rule), each filter also with ``filter.per_language=true``;
run arm by arm over the seeds (``--arms`` picks them and their order), and an arm whose kept set equals an
earlier arm's of the same seed takes that arm's evaluation instead of training the same thing twice. Every run is written as ``<out>/arms/<arm>-s<seed>/`` (``eval/`` + ``.hydra/config.yaml``), so
``python -m congrad.report <out>/arms`` makes the table.

    python bench/realmodel.py                   # the study: scoring ~2 h on one core, then ~8 min per arm on 2
    python bench/realmodel.py --quick           # the tiny random-init model, a minute: checks the script
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
import warnings
from datetime import datetime
from pathlib import Path

from common import auroc, exact_gradients, filter_results, make_trainer, spearman

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf, open_dict  # noqa: E402

from congrad.evaluation.evaluator import Evaluator  # noqa: E402
from congrad.evaluation.outputs import write_outputs  # noqa: E402
from congrad.filtering.method import ConGrad  # noqa: E402
from congrad.filtering.sketch_pass import sketch_candidates  # noqa: E402
from congrad.filtering.sketching import PerPairSketcher  # noqa: E402
from congrad.judging.rule import RuleJudge  # noqa: E402
from congrad.kernels import count_sketch  # noqa: E402
from congrad.report import main as report_main  # noqa: E402
from congrad.training import build_pieces  # noqa: E402
from congrad.utils.io import write_json  # noqa: E402
from congrad.utils.project import compose_config, project_root  # noqa: E402

SCORED = ["pcgrad", "mean", "gradvac", "none", "random"]
FILTER_ARMS = ["pcgrad", "mean", "none", "random"]
FLIP_LANGUAGES = ["de", "ru", "hi"]


def config(args, seed: int, out: Path):
    overrides = ["+experiment=gemma3_270m_arms", f"seed={seed}", *args.override]
    if args.quick:
        overrides += ["model=tiny", "~model.tokenizer.chat_template", "eval.win_rate.generation.max_new_tokens=8"]
    cfg = compose_config("train", overrides, output_dir=out)
    OmegaConf.resolve(cfg)
    return cfg


def setup(cfg):
    """The pieces at the initialisation of ``cfg.seed``: the same LoRA initialisation every time."""
    pl.seed_everything(cfg.seed, verbose=False)
    return build_pieces(cfg)


# ---- part 1: scoring quality ----------------------------------------------------------------------------
def dropped(kept: torch.Tensor, flipped: torch.Tensor) -> tuple[float, float]:
    return float((~kept & flipped).sum() / flipped.sum()), float((~kept & ~flipped).sum() / (~flipped).sum())


def score_quality(cfg, pieces, widths: list[int], label: str) -> dict:
    module, datamodule = pieces.module, pieces.datamodule
    rows = datamodule.train_rows
    languages = [row.language for row in rows]
    flipped = torch.tensor([bool(row.raw.get("flipped")) for row in rows])
    in_flip = torch.tensor([lang in FLIP_LANGUAGES for lang in languages])
    t0 = time.perf_counter()
    exact = exact_gradients(cfg, module, datamodule)
    seconds = time.perf_counter() - t0
    first = next(iter(datamodule.candidate_dataloader(cfg.sketch.batch_size)))
    batched = PerPairSketcher.from_config(module, cfg.sketch)(first)  # the batched pass at the configured width
    reference = count_sketch(exact[: len(first["index"])], cfg.sketch.width, cfg.sketch.seed)
    check = float((batched.cpu() - reference).norm() / reference.norm())

    vectors = {"exact": exact, **{w: count_sketch(exact, w, cfg.sketch.seed) for w in widths}}
    out = {"label": label, "pairs": len(rows), "flipped": int(flipped.sum()), "d": exact.shape[1],
           "exact_pass_seconds": round(seconds, 1), "batched_vs_exact_sketch_rel_error": check, "by": {}}
    for key, vecs in vectors.items():
        per_global = filter_results(cfg, vecs, languages, SCORED, per_language=False)
        per_language = filter_results(cfg, vecs, languages, SCORED, per_language=True)
        for agg in SCORED:
            scores = per_global[agg].scores
            entry = {
                "auroc": auroc(scores, ~flipped),
                "auroc_in_flipped_languages": auroc(scores[in_flip], ~flipped[in_flip]),
                "dropped_flipped_clean_global": dropped(per_global[agg].kept, flipped),
                "dropped_flipped_clean_per_language": dropped(per_language[agg].kept, flipped),
                "kept_per_language_global": {lang: s["kept"] for lang, s in per_global[agg].per_language().items()},
            }
            if key != "exact":
                entry["spearman_vs_exact"] = spearman(scores, out_exact[agg]) if agg != "random" else float("nan")
            out["by"].setdefault(str(key), {})[agg] = entry
        if key == "exact":
            out_exact = {agg: per_global[agg].scores for agg in SCORED}
            out["cosine_before_surgery"] = {"languages": per_global["pcgrad"].aggregate_languages,
                                            "matrix": per_global["pcgrad"].cosine_before.tolist()}
    norms = exact.norm(dim=1)
    with torch.no_grad():
        weights = torch.cat([1 - torch.exp(-module.pair_losses(b)["loss"])  # σ(−h): the gradient's DPO weight
                             for b in datamodule.candidate_dataloader(cfg.sketch.batch_size)])
    out["gradient_norm_mean"] = {"clean": float(norms[~flipped].mean()), "flipped": float(norms[flipped].mean())}
    out["dpo_weight_mean"] = {"clean": float(weights[~flipped].mean()), "flipped": float(weights[flipped].mean())}
    # the aggregates from unit-norm gradients (one vote per pair) and from raw sums
    out["auroc_pcgrad_exact_by_normalize"] = {
        str(normalize).lower(): auroc(filter_results(cfg, exact, languages, ["pcgrad"], per_language=False,
                                                     normalize=normalize)["pcgrad"].scores, ~flipped)
        for normalize in (True, False)
    }
    return out


def print_quality(q: dict, widths: list[int]) -> None:
    print(f"\n== scoring {q['pairs']} pairs ({q['flipped']} flipped in {', '.join(FLIP_LANGUAGES)}), {q['label']}; "
          f"d = {q['d']} LoRA coordinates; exact pass {q['exact_pass_seconds']} s; batched sketch vs sketch of "
          f"the exact gradient: relative error {q['batched_vs_exact_sketch_rel_error']:.1e}")
    columns = [str(w) for w in widths] + ["exact"]
    for title, key in (("AUROC clean vs flipped (all pairs)", "auroc"),
                       ("AUROC within de/ru/hi", "auroc_in_flipped_languages"),
                       ("Spearman sketched vs exact scores", "spearman_vs_exact")):
        print(f"\n{title}\n{'aggregator':<11}" + "".join(f"{'w=' + c if c != 'exact' else c:>10}" for c in columns))
        for agg in SCORED:
            print(f"{agg:<11}" + "".join(f"{q['by'][c][agg].get(key, float('nan')):10.3f}" for c in columns))
    c = columns[-2] if len(columns) > 1 else "exact"
    print(f"\nkeep 0.75 at w={c}: flipped / clean pairs dropped (global rule | per-language rule)")
    for agg in SCORED:
        e = q["by"][c][agg]
        g, p = e["dropped_flipped_clean_global"], e["dropped_flipped_clean_per_language"]
        print(f"  {agg:<9} {g[0]:5.0%} / {g[1]:4.0%}   |  {p[0]:5.0%} / {p[1]:4.0%}   kept: "
              + ", ".join(f"{k} {v}" for k, v in e["kept_per_language_global"].items()))
    print(f"mean gradient norm clean {q['gradient_norm_mean']['clean']:.3g}, flipped {q['gradient_norm_mean']['flipped']:.3g}; "
          f"mean DPO weight σ(−h) clean {q['dpo_weight_mean']['clean']:.3f}, flipped {q['dpo_weight_mean']['flipped']:.3f}; "
          "exact pcgrad AUROC with filter.normalize=true {true:.3f}, false {false:.3f}"
          .format(**q["auroc_pcgrad_exact_by_normalize"]))


# ---- part 2: downstream arms ---------------------------------------------------------------------------
ARMS = ["all"] + [f"{a}{suffix}" for suffix in ("", "-pl") for a in FILTER_ARMS]


def arm_settings(name: str) -> tuple[str | None, bool]:
    """(aggregator or None for all pairs, per_language) of an arm name such as ``pcgrad-pl``."""
    if name not in ARMS:
        raise SystemExit(f"unknown arm {name!r}; arms: {', '.join(ARMS)}")
    return (None if name == "all" else name.removesuffix("-pl")), name.endswith("-pl")


def kept_sets(cfg, pieces, arms: list[str]) -> dict[str, list[int]]:
    module, datamodule = pieces.module, pieces.datamodule
    sketcher = PerPairSketcher.from_config(module, cfg.sketch)
    sketches = sketch_candidates(sketcher, datamodule.candidate_dataloader(cfg.sketch.batch_size), torch.device("cpu"),
                                 progress=False)
    languages = [row.language for row in datamodule.train_rows]
    kept = {}
    for name in arms:
        agg, per_language = arm_settings(name)
        if agg is None:
            kept[name] = list(range(len(languages)))
            continue
        settings = {**dict(cfg.filter), "aggregator": agg, "per_language": per_language}
        result = ConGrad(**settings).step(sketches, languages)
        kept[name] = result.kept.nonzero().flatten().tolist()
    return kept


def run_arm(cfg, evaluator: Evaluator, name: str, kept: list[int], out: Path, same_as: str | None = None) -> dict:
    """Train on ``kept`` and evaluate; an arm whose kept set equals the earlier arm ``same_as`` of the same seed
    would train identically (same initialisation, data and order), so it takes that arm's evaluation."""
    agg, per_language = arm_settings(name)
    run_dir = out / "arms" / f"{name}-s{cfg.seed}"
    if same_as is not None:
        shutil.copytree(out / "arms" / f"{same_as}-s{cfg.seed}" / "eval", run_dir / "eval", dirs_exist_ok=True)
        results = json.loads((run_dir / "eval" / "results.json").read_text())
    else:
        results = train_and_evaluate(cfg, evaluator, name, kept, run_dir)
    run_cfg = OmegaConf.create(OmegaConf.to_container(cfg))
    with open_dict(run_cfg):
        run_cfg.filter.aggregator = agg or cfg.filter.aggregator
        run_cfg.filter.per_language = per_language
        if agg is None:
            run_cfg.callbacks.congrad = None
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(run_cfg, run_dir / ".hydra" / "config.yaml")
    return results


def train_and_evaluate(cfg, evaluator: Evaluator, name: str, kept: list[int], run_dir: Path) -> dict:
    pieces = setup(cfg)
    pieces.datamodule.set_active_indices(kept)
    make_trainer(cfg, run_dir / "trainer", max_epochs=1).fit(pieces.module, datamodule=pieces.datamodule)
    flipped = sum(bool(pieces.datamodule.train_rows[i].raw.get("flipped")) for i in kept)
    description = {"arm": name, "seed": cfg.seed, "pairs": len(kept), "flipped": flipped}
    results, generations = evaluator.evaluate(pieces.tokenizer, pieces.module.policy, description, cfg.eval.seen)
    write_outputs(run_dir / "eval", results, generations)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--widths", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--warmup-steps", type=int, default=16, help="DPO steps on all pairs before the second scoring")
    parser.add_argument("--arms", nargs="+", default=ARMS, help=f"in this order (default: {' '.join(ARMS)})")
    parser.add_argument("--skip-scoring", action="store_true")
    parser.add_argument("--skip-arms", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="default: logs/realmodel/<date>_<time>")
    parser.add_argument("--quick", action="store_true", help="the tiny random-init model, one seed: a smoke run")
    parser.add_argument("override", nargs="*", default=[], help="extra Hydra overrides of the experiment")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.widths, args.warmup_steps = args.seeds[:1], args.widths[:1], 2
    out = args.out or project_root() / "logs" / "realmodel" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    print(f"writing to {out}; torch threads {torch.get_num_threads()}", flush=True)
    summary: dict = {"seeds": args.seeds, "widths": args.widths, "overrides": args.override, "quick": args.quick}
    t_start = time.perf_counter()

    if not args.skip_scoring:
        cfg = config(args, args.seeds[0], out)
        pieces = setup(cfg)
        summary["reference_point"] = score_quality(cfg, pieces, args.widths, "at the reference point (policy = reference)")
        print_quality(summary["reference_point"], args.widths)
        make_trainer(cfg, out / "warmup", max_steps=args.warmup_steps).fit(pieces.module, datamodule=pieces.datamodule)
        summary["after_warmup"] = score_quality(cfg, pieces, args.widths, f"after {args.warmup_steps} DPO steps on all pairs")
        print_quality(summary["after_warmup"], args.widths)
        summary["scoring_seconds"] = round(time.perf_counter() - t_start, 1)
        print(f"\n[scoring: {summary['scoring_seconds']} s]", flush=True)
        write_json(out / "summary.json", summary)

    if not args.skip_arms:
        summary["arms"] = {}
        configs = {seed: config(args, seed, out) for seed in args.seeds}
        # one baseline (the base model) for every arm
        evaluator = Evaluator(configs[args.seeds[0]], RuleJudge(), out / "arms")
        # per seed, made when a seed's first arm comes up; a rerun on the same --out takes the kept sets and the
        # finished arms of the runs before it (a study can be stopped and resumed, or extended by seeds or arms)
        saved = json.loads((out / "kept_sets.json").read_text()) if (out / "kept_sets.json").is_file() else {}
        kept: dict[int, dict[str, list[int]]] = {}
        for seed in args.seeds:
            if all(f"{a}-s{seed}" in saved for a in args.arms):
                kept[seed] = {a: saved[f"{a}-s{seed}"] for a in args.arms}
        for name in args.arms:  # arm by arm over the seeds: a run cut short still has every arm it reached in full
            for seed in args.seeds:
                t0 = time.perf_counter()
                if seed not in kept:
                    kept[seed] = kept_sets(configs[seed], setup(configs[seed]), args.arms)
                    saved.update({f"{a}-s{seed}": k for a, k in kept[seed].items()})
                    write_json(out / "kept_sets.json", saved)
                done = out / "arms" / f"{name}-s{seed}" / "eval" / "results.json"
                same_as = next((a for a in args.arms[: args.arms.index(name)] if kept[seed][a] == kept[seed][name]), None)
                if done.is_file():
                    results = json.loads(done.read_text())
                else:
                    results = run_arm(configs[seed], evaluator, name, kept[seed][name], out, same_as)
                summary["arms"][f"{name}-s{seed}"] = {"pairs": len(kept[seed][name]), "same_kept_set_as": same_as,
                                                      "seen": results["seen"], "unseen": results["unseen"]}
                print(f"seed {seed} {name:<10} {len(kept[seed][name]):4d} pairs  seen acc "
                      f"{results['seen'].get('preference_accuracy', float('nan')):.3f}  unseen acc "
                      f"{results['unseen'].get('preference_accuracy', float('nan')):.3f}  "
                      f"({time.perf_counter() - t0:.0f} s, total {time.perf_counter() - t_start:.0f} s"
                      f"{', same kept set as ' + same_as if same_as else ''})", flush=True)
                write_json(out / "summary.json", summary)
        report_main([str(out / "arms"), "--no-wandb"])
    summary["total_seconds"] = round(time.perf_counter() - t_start, 1)
    write_json(out / "summary.json", summary)
    print(f"\n[total: {summary['total_seconds']} s] {out}")


if __name__ == "__main__":
    main()

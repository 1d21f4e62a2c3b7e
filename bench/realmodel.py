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
none (own language), random (same size, same rule), each filter also with ``filter.per_language=true``, and
the two made by hand: ``clean`` (every pair but the planted flips) and ``clean-random`` (a random subset of
``clean`` as large as pcgrad's kept set). Run arm by arm over the seeds, or with ``--by-seed`` every arm of a
seed before the next (``--arms`` picks them and their order); an arm whose kept set equals an earlier arm's of
the same seed takes that arm's evaluation instead of training the same thing twice. Every run is written as
``<out>/arms/<arm>-s<seed>/`` (``eval/`` + ``.hydra/config.yaml``); a rerun on the same ``--out`` skips the
finished ones and reuses the kept sets (``kept_sets.json``; what each pass saw: ``passes.json``), so a study
can be stopped and resumed or extended by seeds and arms. The tables (``bench/study_tables.py``, also
written to ``<out>/tables.md``) name arms by their directory: ``congrad.report`` reads the arm from the
config, where ``all``, ``clean`` and ``clean-random`` are alike (no filter callback).

Interference (``--alone LANG ...``): per language, DPO on that language's clean pairs alone, evaluated on
that language, next to the joint ``clean`` arm (``<out>/alone/<lang>-s<seed>/``).

    python bench/realmodel.py                   # the study: scoring ~2 h on one core, then ~8 min per arm on 2
    python bench/realmodel.py --quick           # the tiny random-init model, a minute: checks the script
    python bench/realmodel.py --experiment gemma3_270m_study --skip-scoring --by-seed --seeds 0 1 \
        --arms all pcgrad clean clean-random --out logs/realmodel/round2    # the second round (docs/results.md)
"""

from __future__ import annotations

import argparse
import contextlib
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
from congrad.training import build_pieces  # noqa: E402
from congrad.utils.io import write_json  # noqa: E402
from congrad.utils.project import compose_config, project_root  # noqa: E402

import study_tables  # noqa: E402  (after common: it sets the offline environment)

SCORED = ["pcgrad", "mean", "gradvac", "none", "random"]
FILTER_ARMS = ["pcgrad", "mean", "none", "random"]
FLIP_LANGUAGES = ["de", "ru", "hi"]
DATA_ARMS = ["clean", "clean-random"]
"""Kept sets made by hand: every pair but the planted flips (what a perfect filter keeps), and a random subset
of it as large as pcgrad's kept set of the same seed (removing flips vs training on fewer pairs)."""


def config(args, seed: int, out: Path):
    overrides = [f"+experiment={args.experiment}", f"seed={seed}", *args.override]
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
    out = {
        "label": label,
        "pairs": len(rows),
        "flipped": int(flipped.sum()),
        "d": exact.shape[1],
        "exact_pass_seconds": round(seconds, 1),
        "batched_vs_exact_sketch_rel_error": check,
        "by": {},
    }
    out_exact = {}  # the exact gradients' scores ("exact" comes first), which every width is ranked against
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
            out["cosine_before_surgery"] = {
                "languages": per_global["pcgrad"].aggregate_languages,
                "matrix": per_global["pcgrad"].cosine_before.tolist(),
            }
    norms = exact.norm(dim=1)
    with torch.no_grad():
        weights = torch.cat(
            [
                1 - torch.exp(-module.pair_losses(b)["loss"])  # σ(−h): the gradient's DPO weight
                for b in datamodule.candidate_dataloader(cfg.sketch.batch_size)
            ]
        )
    out["gradient_norm_mean"] = {"clean": float(norms[~flipped].mean()), "flipped": float(norms[flipped].mean())}
    out["dpo_weight_mean"] = {"clean": float(weights[~flipped].mean()), "flipped": float(weights[flipped].mean())}
    # the aggregates from unit-norm gradients (one vote per pair) and from raw sums
    out["auroc_pcgrad_exact_by_normalize"] = {
        str(normalize).lower(): auroc(
            filter_results(cfg, exact, languages, ["pcgrad"], per_language=False, normalize=normalize)["pcgrad"].scores,
            ~flipped,
        )
        for normalize in (True, False)
    }
    return out


def print_quality(q: dict, widths: list[int]) -> None:
    print(
        f"\n== scoring {q['pairs']} pairs ({q['flipped']} flipped in {', '.join(FLIP_LANGUAGES)}), {q['label']}; "
        f"d = {q['d']} LoRA coordinates; exact pass {q['exact_pass_seconds']} s; batched sketch vs sketch of "
        f"the exact gradient: relative error {q['batched_vs_exact_sketch_rel_error']:.1e}"
    )
    columns = [str(w) for w in widths] + ["exact"]
    for title, key in (
        ("AUROC clean vs flipped (all pairs)", "auroc"),
        ("AUROC within de/ru/hi", "auroc_in_flipped_languages"),
        ("Spearman sketched vs exact scores", "spearman_vs_exact"),
    ):
        print(f"\n{title}\n{'aggregator':<11}" + "".join(f"{'w=' + c if c != 'exact' else c:>10}" for c in columns))
        for agg in SCORED:
            print(f"{agg:<11}" + "".join(f"{q['by'][c][agg].get(key, float('nan')):10.3f}" for c in columns))
    c = columns[-2] if len(columns) > 1 else "exact"
    print(f"\nkeep 0.75 at w={c}: flipped / clean pairs dropped (global rule | per-language rule)")
    for agg in SCORED:
        e = q["by"][c][agg]
        g, p = e["dropped_flipped_clean_global"], e["dropped_flipped_clean_per_language"]
        print(
            f"  {agg:<9} {g[0]:5.0%} / {g[1]:4.0%}   |  {p[0]:5.0%} / {p[1]:4.0%}   kept: "
            + ", ".join(f"{k} {v}" for k, v in e["kept_per_language_global"].items())
        )
    print(
        f"mean gradient norm clean {q['gradient_norm_mean']['clean']:.3g}, "
        f"flipped {q['gradient_norm_mean']['flipped']:.3g}; "
        f"mean DPO weight σ(−h) clean {q['dpo_weight_mean']['clean']:.3f}, "
        f"flipped {q['dpo_weight_mean']['flipped']:.3f}; "
        "exact pcgrad AUROC with filter.normalize=true {true:.3f}, false {false:.3f}".format(
            **q["auroc_pcgrad_exact_by_normalize"]
        )
    )


# ---- part 2: downstream arms ---------------------------------------------------------------------------
ARMS = ["all"] + [f"{a}{suffix}" for suffix in ("", "-pl") for a in FILTER_ARMS] + DATA_ARMS


def arm_settings(name: str) -> tuple[str | None, bool]:
    """(aggregator or None for a kept set made without a filter, per_language) of an arm name such as
    ``pcgrad-pl``."""
    if name not in ARMS:
        raise SystemExit(f"unknown arm {name!r}; arms: {', '.join(ARMS)}")
    return (None if name == "all" or name in DATA_ARMS else name.removesuffix("-pl")), name.endswith("-pl")


def precision_context(cfg):
    """The sketch pass and the evaluation under the precision the trainer trains in: bf16 autocast for
    ``trainer.precision=bf16-mixed`` (on a CPU with AMX the matrix products run several times faster)."""
    if str(cfg.trainer.get("precision", "32-true")).startswith("bf16"):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def filter_pass(cfg, pieces) -> tuple[torch.Tensor, list[str]]:
    """The sketches [N, w] of every training pair (one batched pass) and the pairs' languages."""
    sketcher = PerPairSketcher.from_config(pieces.module, cfg.sketch)
    with precision_context(cfg):
        sketches = sketch_candidates(
            sketcher, pieces.datamodule.candidate_dataloader(cfg.sketch.batch_size), torch.device("cpu"), progress=False
        )
    return sketches.float(), [row.language for row in pieces.datamodule.train_rows]


def kept_sets(cfg, sketches: torch.Tensor, rows) -> tuple[dict[str, list[int]], dict]:
    """Every arm's kept set (all of :data:`ARMS`) from one pass's sketches, and what the pass saw: the
    language × language cosines of the aggregates before and after surgery (pcgrad), each arm's kept pairs
    per language and flipped pairs kept."""
    languages = [row.language for row in rows]
    flipped = [bool(row.raw.get("flipped")) for row in rows]
    clean = [i for i, f in enumerate(flipped) if not f]
    kept: dict[str, list[int]] = {"all": list(range(len(rows))), "clean": clean}
    info: dict = {}
    for name in ARMS:
        agg, per_language = arm_settings(name)
        if agg is None:
            continue
        settings = {**dict(cfg.filter), "aggregator": agg, "per_language": per_language}
        result = ConGrad(**settings).step(sketches, languages)
        kept[name] = result.kept.nonzero().flatten().tolist()
        if name == "pcgrad":
            info.update(
                aggregate_languages=result.aggregate_languages,
                cosine_before=result.cosine_before.tolist(),
                cosine_after=result.cosine_after.tolist(),
            )
    order = torch.randperm(len(clean), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    kept["clean-random"] = sorted(clean[i] for i in order[: len(kept["pcgrad"])])
    info["kept_per_language"] = {
        name: {lang: sum(languages[i] == lang for i in k) for lang in sorted(set(languages))}
        for name, k in kept.items()
    }
    info["flipped_kept"] = {name: sum(flipped[i] for i in k) for name, k in kept.items()}
    return kept, info


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


def train_and_evaluate(
    cfg, evaluator: Evaluator, name: str, kept, run_dir: Path, seen: list[str] | None = None, **trainer_overrides
) -> dict:
    """Train on ``kept`` (indices of the training rows, or a function of the rows that returns them) and
    evaluate the trained policy; the run's train and evaluation seconds go into its results."""
    t0 = time.perf_counter()
    pieces = setup(cfg)
    kept = kept(pieces.datamodule.train_rows) if callable(kept) else kept
    pieces.datamodule.set_active_indices(kept)
    make_trainer(cfg, run_dir / "trainer", **{"max_epochs": 1, **trainer_overrides}).fit(
        pieces.module, datamodule=pieces.datamodule
    )
    t1 = time.perf_counter()
    flipped = sum(bool(pieces.datamodule.train_rows[i].raw.get("flipped")) for i in kept)
    description = {
        "arm": name,
        "seed": cfg.seed,
        "pairs": len(kept),
        "flipped": flipped,
        "train_seconds": round(t1 - t0, 1),
    }
    with precision_context(cfg):
        results, generations = evaluator.evaluate(
            pieces.tokenizer, pieces.module.policy, description, cfg.eval.seen if seen is None else seen
        )
    results["policy"]["eval_seconds"] = round(time.perf_counter() - t1, 1)
    write_outputs(run_dir / "eval", results, generations)
    return results


def seed_kept_sets(args, configs: dict, out: Path) -> dict[int, dict[str, list[int]]]:
    """Per seed, every arm's kept set: from ``kept_sets.json`` when an earlier run on ``out`` made them, else
    from one sketch pass at that seed's initialisation (its sketches saved in ``sketches/``, what it saw in
    ``passes.json``)."""
    saved = json.loads((out / "kept_sets.json").read_text()) if (out / "kept_sets.json").is_file() else {}
    passes = json.loads((out / "passes.json").read_text()) if (out / "passes.json").is_file() else {}
    kept = {}
    for seed in args.seeds:
        if not all(f"{a}-s{seed}" in saved for a in args.arms):
            t0 = time.perf_counter()
            pieces = setup(configs[seed])
            sketches, _ = filter_pass(configs[seed], pieces)
            (out / "sketches").mkdir(exist_ok=True)
            torch.save(sketches, out / "sketches" / f"s{seed}.pt")
            sets, info = kept_sets(configs[seed], sketches, pieces.datamodule.train_rows)
            passes[f"s{seed}"] = {**info, "seconds": round(time.perf_counter() - t0, 1)}
            saved.update({f"{a}-s{seed}": k for a, k in sets.items()})
            write_json(out / "passes.json", passes)
            write_json(out / "kept_sets.json", saved)
            print(
                f"seed {seed}: sketch pass {passes[f's{seed}']['seconds']:.0f} s; kept "
                + ", ".join(f"{a} {len(k)} ({info['flipped_kept'][a]} flipped)" for a, k in sets.items()),
                flush=True,
            )
        kept[seed] = {a: saved[f"{a}-s{seed}"] for a in args.arms}
    return kept


def run_arms(args, out: Path, t_start: float) -> dict:
    """Every arm × seed, trained and evaluated into ``<out>/arms/<arm>-s<seed>/``; finished runs are kept."""
    configs = {seed: config(args, seed, out) for seed in args.seeds}
    evaluator = Evaluator(configs[args.seeds[0]], RuleJudge(), out / "arms")  # one baseline (the base model)
    summary = {}
    # arm by arm over the seeds (a run cut short has every arm it reached in full), or with --by-seed seed by
    # seed over the arms (it has every arm, paired, for the seeds it reached); the kept sets of a seed are made
    # when its first run comes up
    order = (
        [(a, s) for s in args.seeds for a in args.arms]
        if args.by_seed
        else [(a, s) for a in args.arms for s in args.seeds]
    )
    kept: dict[int, dict[str, list[int]]] = {}
    for name, seed in order:
        t0 = time.perf_counter()
        if seed not in kept:
            kept.update(seed_kept_sets(argparse.Namespace(**{**vars(args), "seeds": [seed]}), configs, out))
        done = out / "arms" / f"{name}-s{seed}" / "eval" / "results.json"
        same_as = next((a for a in args.arms[: args.arms.index(name)] if kept[seed][a] == kept[seed][name]), None)
        if done.is_file():
            results = json.loads(done.read_text())
        else:
            results = run_arm(configs[seed], evaluator, name, kept[seed][name], out, same_as)
        summary[f"{name}-s{seed}"] = {
            "pairs": len(kept[seed][name]),
            "same_kept_set_as": same_as,
            "seen": results["seen"],
            "unseen": results["unseen"],
        }
        print(
            f"seed {seed} {name:<12} {len(kept[seed][name]):4d} pairs  seen acc "
            f"{results['seen'].get('preference_accuracy', float('nan')):.3f}  unseen acc "
            f"{results['unseen'].get('preference_accuracy', float('nan')):.3f}  "
            f"({time.perf_counter() - t0:.0f} s, total {time.perf_counter() - t_start:.0f} s"
            f"{', same kept set as ' + same_as if same_as else ''})",
            flush=True,
        )
    return summary


def run_alone(args, out: Path, t_start: float) -> dict:
    """Interference: per language of ``--alone``, DPO on that language's clean pairs alone, one epoch (each pair
    seen once, as in the joint ``clean`` arm), evaluated on that language only, into
    ``<out>/alone/<lang>-s<seed>/``. The scheduler's warm-up is off: with 3-4 steps a warm-up would
    leave the run at a fraction of the learning rate the joint run trains each language's pairs with."""
    summary = {}
    for lang in args.alone:
        evaluator = None
        for seed in args.seeds:
            t0 = time.perf_counter()
            run_dir = out / "alone" / f"{lang}-s{seed}"
            done = run_dir / "eval" / "results.json"
            if done.is_file():
                results = json.loads(done.read_text())
            else:
                cfg = config(args, seed, out)
                with open_dict(cfg):
                    cfg.eval.languages, cfg.eval.seen = [lang], [lang]
                    cfg.dpo.scheduler.num_warmup_steps = 0
                evaluator = evaluator or Evaluator(cfg, RuleJudge(), out / "alone")  # its rows, its baseline once

                def clean_pairs_of(rows, lang=lang):
                    return [i for i, row in enumerate(rows) if row.language == lang and not row.raw.get("flipped")]

                results = train_and_evaluate(cfg, evaluator, f"alone-{lang}", clean_pairs_of, run_dir, seen=[lang])
                OmegaConf.save(cfg, run_dir / "config.yaml")
            summary[f"{lang}-s{seed}"] = results["languages"][lang]
            accuracy = results["languages"][lang].get("preference_accuracy", float("nan"))
            print(
                f"seed {seed} alone {lang}  acc {accuracy:.3f}"
                f"  ({time.perf_counter() - t0:.0f} s, total {time.perf_counter() - t_start:.0f} s)",
                flush=True,
            )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--widths", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--warmup-steps", type=int, default=16, help="DPO steps on all pairs before the second scoring")
    parser.add_argument("--arms", nargs="+", default=ARMS, help=f"in this order (default: {' '.join(ARMS)})")
    parser.add_argument("--skip-scoring", action="store_true")
    parser.add_argument("--skip-arms", action="store_true")
    parser.add_argument("--by-seed", action="store_true", help="every arm of a seed before the next seed")
    parser.add_argument("--experiment", default="gemma3_270m_arms", help="the conf/experiment/ set-up")
    parser.add_argument(
        "--alone",
        nargs="*",
        default=[],
        metavar="LANG",
        help="interference: also train on each of these languages alone (clean pairs)",
    )
    parser.add_argument(
        "--groups",
        nargs="*",
        default=[],
        metavar="NAME=LANG,LANG",
        help="also tabulate these groups of languages (e.g. verbose=en,de,ru,zh)",
    )
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
        summary["reference_point"] = score_quality(
            cfg, pieces, args.widths, "at the reference point (policy = reference)"
        )
        print_quality(summary["reference_point"], args.widths)
        make_trainer(cfg, out / "warmup", max_steps=args.warmup_steps).fit(pieces.module, datamodule=pieces.datamodule)
        summary["after_warmup"] = score_quality(
            cfg, pieces, args.widths, f"after {args.warmup_steps} DPO steps on all pairs"
        )
        print_quality(summary["after_warmup"], args.widths)
        summary["scoring_seconds"] = round(time.perf_counter() - t_start, 1)
        print(f"\n[scoring: {summary['scoring_seconds']} s]", flush=True)
        write_json(out / "summary.json", summary)

    if not args.skip_arms:
        summary["arms"] = run_arms(args, out, t_start)
    if args.alone:
        summary["alone"] = run_alone(args, out, t_start)
    if not args.skip_arms or args.alone:
        print(study_tables.write_tables(out, groups=args.groups), flush=True)
    summary["total_seconds"] = round(time.perf_counter() - t_start, 1)
    write_json(out / "summary.json", summary)
    print(f"\n[total: {summary['total_seconds']} s] {out}")


if __name__ == "__main__":
    main()

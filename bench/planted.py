"""Planted conflicts: does ConGrad find the pairs whose preference was flipped, and does dropping them help?

Data. The synthetic multilingual set (``congrad.data.synthetic``): ``--pairs`` pairs in each of 8 seen
languages (Latin, Cyrillic, Han, Devanagari and Arabic scripts); in ``--flip-languages`` (de, ru, hi) a
``--flip-fraction`` (25%) of the pairs have chosen and rejected swapped. Those flipped pairs are the ground
truth. A second draw (another seed, never flipped, pairs that also occur in the training set removed)
gives held-out pairs of the 8 seen languages and of 4 unseen ones (it, pt, ja, ko).

Part 1 — scoring. The tiny policy of ``conf/model/tiny.yaml`` (random init, fresh LoRA adapter: the
reference point, policy = reference, unless ``--warmup-steps``) scores every training pair with the
library's pipeline (PerPairSketcher -> sketch_candidates -> ConGrad.step), for each sketch width and
aggregator. "exact" is the same pipeline on the unsketched per-pair gradients (one backward per pair, the
LoRA gradients laid end to end), and "random" draws uniform scores.

  AUROC     probability that a clean pair scores above a flipped one (rank-based, Mann-Whitney; ties
            count half): 1 = perfect separation, 0.5 = chance, < 0.5 = flipped pairs score higher.
            "all" ranks every pair together (what the global keep_ratio does); "in flipped langs" only the
            pairs of the flipped languages.
  Spearman  rank correlation of the sketched scores with the exact-gradient scores (same aggregator).
  dropped   share of the flipped pairs (and of the clean pairs) that keep_ratio removes: a perfect filter
            at keep 0.75 drops 100% of the flipped pairs.

Part 2 — training. For each seed, the tiny policy is DPO-trained (conf/dpo, conf/trainer; no ConGrad
callback, the subsets are fixed before training) from the same initialisation on (a) all pairs, (b) the
pairs ConGrad keeps (pcgrad, keep_ratio, scored at that initialisation), (c) a random subset of the same
size. Printed: preference accuracy (implicit reward of chosen > rejected) on the held-out clean pairs,
mean ± sd over seeds, for the seen languages (also split into the flipped ones and the rest) and the
unseen ones, and how many flipped pairs each arm trained on.

    python bench/planted.py              # the full run (about 10 minutes on 2 CPU cores)
    python bench/planted.py --quick      # a 1-2 minute smoke run of everything

Nothing is written into the repository (temporary directories only); no logger is used.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path

from common import auroc, exact_gradients, filter_results, make_trainer, mean_sd, spearman

import hydra  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from congrad.data.synthetic import make_preference_rows  # noqa: E402
from congrad.filtering.selection import select  # noqa: E402
from congrad.filtering.sketch_pass import sketch_candidates  # noqa: E402
from congrad.filtering.sketching import PerPairSketcher  # noqa: E402
from congrad.kernels import count_sketch  # noqa: E402
from congrad.training import build_pieces  # noqa: E402
from congrad.utils.io import write_jsonl  # noqa: E402
from congrad.utils.project import compose_config  # noqa: E402

SEEN = ["en", "de", "fr", "es", "ru", "zh", "hi", "ar"]
UNSEEN = ["it", "pt", "ja", "ko"]


# ---- data ---------------------------------------------------------------------------------------------
def make_data(args, out_dir: Path) -> tuple[Path, Path]:
    """The training set (with planted flips) and the held-out clean set; returns their paths."""
    train = make_preference_rows(SEEN, args.pairs, args.data_seed, args.flip_fraction, args.flip_languages)

    def key(row, swap=False):
        fields = ("prompt", "rejected", "chosen") if swap else ("prompt", "chosen", "rejected")
        return tuple(json.dumps(row[f], ensure_ascii=False) for f in fields)

    seen_keys = {key(r) for r in train} | {key(r, swap=True) for r in train}
    heldout = make_preference_rows(SEEN + UNSEEN, args.heldout_pairs, args.data_seed + 1000)
    heldout = [r for r in heldout if key(r) not in seen_keys]
    write_jsonl(out_dir / "train.jsonl", train)
    write_jsonl(out_dir / "heldout.jsonl", heldout)
    return out_dir / "train.jsonl", out_dir / "heldout.jsonl"


def config(args, seed: int, data_path: Path, out_dir: Path):
    overrides = [
        f"seed={seed}",
        f"data.path={data_path}",
        "data.val_fraction=0",
        "~callbacks",
        "~logger",
        f"paths.output_dir={out_dir}",
        f"filter.keep_ratio={args.keep_ratio}",
    ]
    if args.epochs is not None:
        overrides.append(f"trainer.max_epochs={args.epochs}")
    return compose_config("train", overrides + args.override)


def setup(cfg, seed: int):
    """(module, datamodule) of ``cfg`` at the initialisation of ``seed`` (policy = reference)."""
    pl.seed_everything(seed, verbose=False)  # LoRA init draws from the global RNG
    pieces = build_pieces(cfg)
    return pieces.module, pieces.datamodule


# ---- scoring ------------------------------------------------------------------------------------------
def sketcher_for(cfg, module, width: int) -> PerPairSketcher:
    return PerPairSketcher.from_config(module, {**cfg.sketch, "width": width})


def score_kept(cfg, module, datamodule, width: int, aggregator: str) -> list[int]:
    sketches = sketch_candidates(
        sketcher_for(cfg, module, width),
        datamodule.candidate_dataloader(cfg.sketch.batch_size),
        torch.device("cpu"),
        progress=False,
    )
    languages = [row.language for row in datamodule.train_rows]
    result = filter_results(cfg, sketches, languages, [aggregator])[aggregator]
    return result.kept.nonzero().flatten().tolist()


def warm_up(cfg, module, datamodule, steps: int, out_dir: Path) -> None:
    trainer = make_trainer(cfg, out_dir, max_steps=steps)
    trainer.fit(module, datamodule=datamodule)


def scoring_part(args, train_path: Path, tmp: Path) -> None:
    seed = args.seeds[0]
    cfg = config(args, seed, train_path, tmp / "scoring")
    module, datamodule = setup(cfg, seed)
    if args.warmup_steps:
        warm_up(cfg, module, datamodule, args.warmup_steps, tmp / "warmup")
    rows = datamodule.train_rows
    languages = [row.language for row in rows]
    flipped = torch.tensor([bool(row.raw.get("flipped")) for row in rows])
    in_flip_langs = torch.tensor([lang in args.flip_languages for lang in languages])
    clean = ~flipped
    point = (
        f"after {args.warmup_steps} DPO warm-up steps"
        if args.warmup_steps
        else "at the reference point (random init, policy = reference)"
    )
    print(
        f"\n== Part 1: scoring {len(rows)} pairs ({int(flipped.sum())} flipped: "
        f"{args.flip_fraction:.0%} of {', '.join(args.flip_languages)}), tiny model {point}, seed {seed}"
    )

    t0 = time.perf_counter()
    exact = exact_gradients(cfg, module, datamodule)
    t_exact = time.perf_counter() - t0
    results = {"exact": filter_results(cfg, exact, languages, args.aggregators)}
    timings = {"exact": t_exact}
    sketches_at = {}
    for width in args.widths:
        sketcher = sketcher_for(cfg, module, width)
        t0 = time.perf_counter()
        sketches = sketch_candidates(
            sketcher, datamodule.candidate_dataloader(cfg.sketch.batch_size), torch.device("cpu"), progress=False
        )
        timings[width] = time.perf_counter() - t0
        sketches_at[width] = sketches
        results[width] = filter_results(cfg, sketches, languages, args.aggregators)
    print(
        f"sketch method {sketcher.method}, {cfg.sketch.kind} sketch of d = {exact.shape[1]} LoRA gradient "
        f"coordinates ({int((exact.abs().sum(0) > 0).sum())} nonzero)"
    )
    ref_width = args.ref_width if args.ref_width in sketches_at else args.widths[-1]
    oracle = count_sketch(exact, ref_width, cfg.sketch.seed) if cfg.sketch.kind == "count" else None
    if oracle is not None:
        err = (sketches_at[ref_width] - oracle).norm() / oracle.norm()
        print(f"check: batched sketches vs count_sketch(exact gradients) at w={ref_width}: relative error {err:.1e}")

    generator = torch.Generator().manual_seed(seed)
    random_scores = torch.rand(len(rows), generator=generator)
    random_kept = select(
        random_scores,
        languages,
        keep_ratio=args.keep_ratio,
        per_language=cfg.filter.per_language,
        min_per_language=cfg.filter.min_per_language,
    )

    columns = [*args.widths, "exact"]
    header = "".join(f"{('w=' + str(c)) if c != 'exact' else 'exact':>9}" for c in columns)
    print("\nAUROC clean vs flipped, all pairs ranked together (1 = perfect, 0.5 = chance)")
    print(f"{'aggregator':<12}{header}")
    for agg in args.aggregators:
        print(f"{agg:<12}" + "".join(f"{auroc(results[c][agg].scores, clean):9.3f}" for c in columns))
    print(f"{'random':<12}" + f"{auroc(random_scores, clean):9.3f}" * len(columns))

    sub = in_flip_langs
    print(f"\nAUROC clean vs flipped, within the flipped languages only ({int(sub.sum())} pairs)")
    print(f"{'aggregator':<12}{header}")
    for agg in args.aggregators:
        print(f"{agg:<12}" + "".join(f"{auroc(results[c][agg].scores[sub], clean[sub]):9.3f}" for c in columns))
    print(f"{'random':<12}" + f"{auroc(random_scores[sub], clean[sub]):9.3f}" * len(columns))

    print("\nSpearman of sketched vs exact-gradient scores")
    print(f"{'aggregator':<12}" + "".join(f"{'w=' + str(w):>9}" for w in args.widths))
    for agg in args.aggregators:
        print(
            f"{agg:<12}"
            + "".join(f"{spearman(results[w][agg].scores, results['exact'][agg].scores):9.3f}" for w in args.widths)
        )
    print(
        f"{'time (s)':<12}"
        + "".join(f"{timings[w]:9.1f}" for w in args.widths)
        + f"   (exact gradients: {timings['exact']:.1f} s)"
    )

    n_flip, n_clean = int(flipped.sum()), int(clean.sum())
    scope = "within each language" if cfg.filter.per_language else "global"
    print(
        f"\nkeep_ratio {args.keep_ratio} ({scope}, min_per_language {cfg.filter.min_per_language}): share of "
        f"flipped / clean pairs dropped"
    )
    print(f"{'aggregator':<12}" + "".join(f"{('w=' + str(c)) if c != 'exact' else 'exact':>14}" for c in columns))

    def dropped(kept):
        return f"{(~kept & flipped).sum() / n_flip:6.0%} /{(~kept & clean).sum() / n_clean:4.0%}"

    for agg in args.aggregators:
        print(f"{agg:<12}" + "".join(f"{dropped(results[c][agg].kept):>14}" for c in columns))
    print(f"{'random':<12}" + f"{dropped(random_kept):>14}" * len(columns))

    main = results[ref_width]
    if "pcgrad" in main:
        r = main["pcgrad"]
        print(f"\npcgrad at w={ref_width}, per language: kept/total (flipped dropped/flipped)")
        parts = []
        for lang in SEEN:
            idx = torch.tensor([i for i, code in enumerate(languages) if code == lang])
            f = flipped[idx]
            text = f"{lang} {int(r.kept[idx].sum())}/{len(idx)}"
            if f.any():
                text += f" ({int((~r.kept[idx] & f).sum())}/{int(f.sum())})"
            parts.append(text)
        print("  " + ", ".join(parts))
        print(f"cosines of the per-language aggregates at w={ref_width} (before surgery):")
        codes = r.aggregate_languages
        print("      " + "".join(f"{c:>6}" for c in codes))
        for code, row in zip(codes, r.cosine_before.tolist()):
            print(f"  {code:<4}" + "".join(f"{v:6.2f}" for v in row))


# ---- training -----------------------------------------------------------------------------------------
@torch.no_grad()
def accuracy_by_language(module, datamodule) -> dict[str, list[float]]:
    module.eval()
    out: dict[str, list[float]] = {}
    for batch in datamodule.candidate_dataloader():
        acc = module.pair_losses(batch)["rewards/accuracies"].tolist()
        for lang, a in zip(batch["language"], acc):
            out.setdefault(lang, []).append(a)
    return out


def training_part(args, train_path: Path, heldout_path: Path, tmp: Path) -> None:
    groups = {
        "seen": SEEN,
        "seen: flipped langs": [lang for lang in SEEN if lang in args.flip_languages],
        "seen: other langs": [lang for lang in SEEN if lang not in args.flip_languages],
        "unseen": UNSEEN,
    }
    arms = ("all pairs", "ConGrad-kept", "random subset")
    acc = {arm: {g: [] for g in groups} for arm in arms}
    n_train = {arm: [] for arm in arms}
    n_flipped = {arm: [] for arm in arms}
    heldout_sizes = None
    t_start = time.perf_counter()
    for seed in args.seeds:
        cfg = config(args, seed, train_path, tmp / f"train_{seed}")
        module, datamodule = setup(cfg, seed)
        n = len(datamodule.train_rows)
        flipped = [bool(row.raw.get("flipped")) for row in datamodule.train_rows]
        kept = score_kept(cfg, module, datamodule, args.ref_width, "pcgrad")
        shuffled = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        subsets = {"all pairs": list(range(n)), "ConGrad-kept": kept, "random subset": sorted(shuffled[: len(kept)])}
        for arm, indices in subsets.items():
            module, datamodule = setup(cfg, seed)  # the same initialisation for every arm
            datamodule.set_active_indices(indices)
            trainer = make_trainer(cfg, tmp / f"train_{seed}")
            trainer.fit(module, datamodule=datamodule)
            heldout = hydra.utils.instantiate(
                cfg.data, tokenizer=datamodule.tokenizer, path=str(heldout_path), languages=None
            )
            heldout.setup("fit")
            by_lang = accuracy_by_language(module, heldout)
            heldout_sizes = {g: sum(len(by_lang.get(lang, [])) for lang in langs) for g, langs in groups.items()}
            for g, langs in groups.items():
                values = [a for lang in langs for a in by_lang.get(lang, [])]
                acc[arm][g].append(sum(values) / len(values))
            n_train[arm].append(len(indices))
            n_flipped[arm].append(sum(flipped[i] for i in indices))
        print(f"  seed {seed} done ({time.perf_counter() - t_start:.0f} s)", flush=True)

    epochs = cfg.trainer.max_epochs
    print(
        f"\nheld-out preference accuracy on clean pairs (implicit reward chosen > rejected), mean ± sd over "
        f"seeds {args.seeds}; {epochs} epochs, batch {cfg.data.batch_size}, lr {cfg.dpo.optimizer.lr}, "
        f"beta {cfg.dpo.beta}"
    )
    names = list(groups)
    print(f"{'arm':<15}{'pairs':>6}{'flipped':>9}" + "".join(f"{g + f' ({heldout_sizes[g]})':>26}" for g in names))
    for arm in arms:
        mean_pairs = sum(n_train[arm]) / len(n_train[arm])
        mean_flipped = sum(n_flipped[arm]) / len(n_flipped[arm])
        print(f"{arm:<15}{mean_pairs:6.0f}{mean_flipped:9.1f}" + "".join(f"{mean_sd(acc[arm][g]):>26}" for g in names))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=60, help="training pairs per seen language")
    parser.add_argument(
        "--heldout-pairs",
        type=int,
        default=40,
        help="held-out pairs drawn per language (before removing those that also occur in training)",
    )
    parser.add_argument("--flip-fraction", type=float, default=0.25)
    parser.add_argument("--flip-languages", nargs="+", default=["de", "ru", "hi"])
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 1024, 4096, 16384])
    parser.add_argument("--ref-width", type=int, default=4096, help="width of the training arm's filter")
    parser.add_argument(
        "--aggregators",
        nargs="+",
        default=["pcgrad", "mean", "none"],
        help="also: gradvac (equal to pcgrad at filter.gradvac_target=0)",
    )
    parser.add_argument("--keep-ratio", type=float, default=0.75)
    parser.add_argument(
        "--warmup-steps",
        type=int,
        default=0,
        help="DPO steps on all pairs before scoring (0: score at the reference point)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: conf/trainer)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (the tiny model gains nothing from more, and oversubscribes)",
    )
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--quick", action="store_true", help="small smoke run of every part")
    parser.add_argument("override", nargs="*", default=[], help="extra Hydra overrides of conf/train.yaml")
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.heldout_pairs, args.widths, args.seeds = 24, 12, [256, 4096], args.seeds[:2]
        args.epochs = args.epochs or 1
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="congrad-planted-") as tmp:
        tmp = Path(tmp)
        train_path, heldout_path = make_data(args, tmp)
        scoring_part(args, train_path, tmp)
        print(f"\n[part 1: {time.perf_counter() - t0:.0f} s]", flush=True)
        if not args.skip_training:
            print(f"\n== Part 2: DPO training, {len(args.seeds)} seeds × 3 arms")
            training_part(args, train_path, heldout_path, tmp)
    print(f"\n[total: {time.perf_counter() - t0:.0f} s]")


if __name__ == "__main__":
    main()

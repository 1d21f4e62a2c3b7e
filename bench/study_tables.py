"""The tables of a ``bench/realmodel.py`` study directory (docs/results.md), from what its runs wrote.

- ``arms/<arm>-s<seed>/eval/results.json``: arm × metric, mean ± sd over seeds, seen and unseen, ≈ where the
  paired difference to ``all`` is within noise (``congrad.report``'s table, written to ``arms/report.*``);
  with ``groups``, the same over groups of languages (e.g. the two style rules of a conflict set);
- ``passes.json``: per seed, what the sketch pass saw: the mean cosine of the language aggregates within and
  between groups, flipped pairs kept per arm, and how far pcgrad's kept set is from mean's;
- ``alone/<lang>-s<seed>/``: interference, per language, the joint (``clean`` arm) minus the alone run, mean
  and 95% t-interval over seeds;
- ``rescore/<name>/``: ``train.py`` runs of several epochs (the filter's pass at each epoch): per epoch the
  kept set, its flipped pairs (``--flips``: the training set with ``"flipped": true`` rows), the pairs the
  pass dropped for want of a signal, and how many pairs entered or left it; the final evaluation, seen and
  unseen.

These files are all the tables read: ``--archive DIR`` copies them into ``DIR`` in the same layout (a few
hundred kB for a study), so that a study's figures can be kept with the code and later runs (more seeds, more
arms) added to them; ``DIR`` is then itself a study directory.

    python bench/study_tables.py logs/realmodel/round2 --groups verbose=en,de,ru,zh concise=fr,es,hi,ar
    python bench/study_tables.py logs/realmodel/round2 --archive docs/studies/round2
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
from pathlib import Path

from congrad.evaluation.metrics import macro
from congrad.report import BASELINE_ARM, METRICS, Run, markdown, summarise, write_report

PLANTED = Path(__file__).resolve().parents[1] / "data" / "planted_8lang.jsonl"
RUN_DIR = re.compile(r"(?P<arm>.+)-s(?P<seed>\d+)$")
JOINT_ARM = "clean"  # the joint run that an alone run is compared with: every language's clean pairs
READ_FILES = (  # every file the tables below read, relative to the study directory
    "arms/*/eval/results.json",
    "alone/*/eval/results.json",
    "passes.json",
    "kept_sets.json",
    "rescore/*/eval/results.json",
    "rescore/*/filter/epoch_*/scores.jsonl",
)


def _runs(root: Path) -> list[Run]:
    runs = []
    for results in sorted(root.glob("*/eval/results.json")):
        match = RUN_DIR.match(results.parents[1].name)
        if match:
            runs.append(Run(results.parents[1], match["arm"], int(match["seed"]), json.loads(results.read_text())))
    return runs


def arms_table(out: Path) -> str:
    runs = _runs(out / "arms")
    if not runs:
        return ""
    rows = summarise(runs)
    write_report(out / "arms", rows)
    return markdown(rows)


def group_tables(out: Path, groups: dict[str, list[str]]) -> str:
    """The arms table over groups of languages, two groups per table (``congrad.report`` lays out two)."""
    runs, parts = _runs(out / "arms"), []
    names = list(groups)
    for first, second in zip(names[::2], names[1::2] + [None] * (len(names) % 2)):
        views = [
            Run(
                r.path,
                r.arm,
                r.seed,
                {
                    "seen": macro(r.results["languages"], groups[first]),
                    "unseen": macro(r.results["languages"], groups.get(second, [])),
                },
            )
            for r in runs
        ]
        text = markdown(summarise(views)).replace("### seen languages", f"### {first} ({', '.join(groups[first])})")
        if second:
            text = text.replace("### unseen languages", f"### {second} ({', '.join(groups[second])})")
        parts.append(text)
    return "\n".join(parts)


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:+.3f}"
    return f"{statistics.mean(values):+.3f} ± {statistics.stdev(values):.3f}"


def passes_table(out: Path, groups: dict[str, list[str]]) -> str:
    path = out / "passes.json"
    if not path.is_file():
        return ""
    passes = json.loads(path.read_text())
    kept = json.loads((out / "kept_sets.json").read_text())
    seeds = sorted(int(k[1:]) for k in passes)
    lines = [f"Sketch passes at the reference point, seeds {', '.join(map(str, seeds))} (mean ± sd over seeds).", ""]
    blocks = {"all languages": None, **{f"within {g}": (g, g) for g in groups}}
    names = list(groups)
    blocks.update({f"{a} × {b}": (a, b) for i, a in enumerate(names) for b in names[i + 1 :]})
    lines += ["| aggregate cosines (before surgery) | mean | min |", "|---|---|---|"]
    for label, pair in blocks.items():
        means, mins = [], []
        for p in passes.values():
            langs, matrix = p["aggregate_languages"], p["cosine_before"]
            cells = [
                matrix[i][j]
                for i, a in enumerate(langs)
                for j, b in enumerate(langs)
                if i < j
                and (
                    pair is None
                    or (a in groups[pair[0]] and b in groups[pair[1]])
                    or (a in groups[pair[1]] and b in groups[pair[0]])
                )
            ]
            if cells:
                means.append(statistics.mean(cells))
                mins.append(min(cells))
        lines.append(f"| {label} | {_mean_sd(means)} | {_mean_sd(mins)} |")
    arms = list(next(iter(passes.values()))["flipped_kept"])
    lines += [
        "",
        "| " + " | ".join(["arm", "pairs kept", "flipped kept", *(f"kept in {g}" for g in groups)]) + " |",
        "|---|---|---|" + "---|" * len(groups),
    ]
    for arm in arms:
        sizes = [len(kept[f"{arm}-s{s}"]) for s in seeds if f"{arm}-s{s}" in kept]
        flips = [passes[f"s{s}"]["flipped_kept"][arm] for s in seeds]
        per_group = [
            [sum(passes[f"s{s}"]["kept_per_language"][arm].get(lang, 0) for lang in groups[g]) for s in seeds]
            for g in groups
        ]
        cells = ["/".join(map(str, sizes)), "/".join(map(str, flips)), *("/".join(map(str, v)) for v in per_group)]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    if all(f"{a}-s{s}" in kept for a in ("pcgrad", "mean") for s in seeds):
        diffs = [len(set(kept[f"pcgrad-s{s}"]) ^ set(kept[f"mean-s{s}"])) for s in seeds]
        lines += ["", f"pairs in exactly one of the pcgrad and mean kept sets, per seed: {'/'.join(map(str, diffs))}"]
    return "\n".join(lines) + "\n"


def interference_table(out: Path) -> str:
    """Per language: joint (the ``clean`` arm, evaluated on every language) minus alone (that language's clean
    pairs only, evaluated on it), paired by seed: mean and 95% t-interval over seeds (``congrad.report``'s
    paired test, with the alone run in the place of its baseline arm)."""
    alone = _runs(out / "alone")
    if not alone:
        return ""
    joint = {r.seed: r for r in _runs(out / "arms") if r.arm == JOINT_ARM}
    languages = sorted({r.arm for r in alone}, key=[r.arm for r in alone].index)
    metrics = [m for m in METRICS if any(m in r.results["languages"][r.arm] for r in alone)]
    lines = [
        f"Joint ({JOINT_ARM} arm) − alone, per language: mean [95% t-interval] over the seeds both have; "
        "* marks an interval that excludes 0.",
        "",
        "| language | seeds | " + " | ".join(metrics) + " |",
        "|---|---|" + "---|" * len(metrics),
    ]
    for lang in languages:
        runs = [
            Run(r.path, BASELINE_ARM, r.seed, {"seen": r.results["languages"][lang]}) for r in alone if r.arm == lang
        ]
        runs += [
            Run(joint[r.seed].path, "joint", r.seed, {"seen": joint[r.seed].results["languages"][lang]})
            for r in runs
            if r.seed in joint
        ]
        rows = {row["metric"]: row for row in summarise(runs) if row["arm"] == "joint" and "diff" in row}
        seeds = len({r.seed for r in runs if r.arm == "joint"})
        cells = []
        for m in metrics:
            row = rows.get(m)
            cells.append(
                "-"
                if row is None
                else f"{row['diff']:+.3f} [{row['diff_low']:+.3f}, {row['diff_high']:+.3f}]"
                + ("" if row["within_noise"] else " *")
            )
        lines.append(f"| {lang} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def rescoring_table(out: Path, flips: Path = PLANTED) -> str:
    runs = sorted(p for p in (out / "rescore").glob("*/eval/results.json"))
    if not runs:
        return ""
    flipped = {row["id"] for row in map(json.loads, flips.read_text().splitlines()) if row.get("flipped")}
    lines = [
        "Runs of several epochs with the filter's pass at each (`rescore/`): the kept set per epoch; in / out:",
        "pairs that entered / left it since the epoch before.",
        "",
        "| run | epoch | kept | flipped kept | no signal | in / out |",
        "|---|---|---|---|---|---|",
    ]
    finals = []
    for results in runs:
        run = results.parents[1]
        before = None
        for epoch_dir in sorted((run / "filter").glob("epoch_*"), key=lambda d: int(d.name.split("_")[1])):
            rows = [json.loads(line) for line in (epoch_dir / "scores.jsonl").read_text().splitlines()]
            kept = {r["id"] for r in rows if r["kept"]}
            no_signal = sum(str(r.get("reason", "")).startswith("no preference signal") for r in rows)
            moved = "-" if before is None else f"{len(kept - before)} / {len(before - kept)}"
            lines.append(
                f"| {run.name} | {epoch_dir.name.split('_')[1]} | {len(kept)}/{len(rows)} | {len(kept & flipped)} "
                f"| {no_signal} | {moved} |"
            )
            before = kept
        finals.append((run.name, json.loads(results.read_text())))
    metrics = [m for m in METRICS if any(m in (r.get("seen") or {}) for _, r in finals)]
    lines += ["", "| run | group | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for name, results in finals:
        for group in ("seen", "unseen"):
            values = results.get(group) or {}
            cells = [f"{values[m]:.3f}" if m in values else "-" for m in metrics]
            lines.append(f"| {name} | {group} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(out: Path, groups: list[str] | dict[str, list[str]] = ()) -> str:
    """Every table the directory has data for, as one markdown text (also written to ``<out>/tables.md``)."""
    groups = parse_groups(groups) if not isinstance(groups, dict) else groups
    parts = [
        arms_table(out),
        group_tables(out, groups) if groups else "",
        passes_table(out, groups),
        interference_table(out),
        rescoring_table(out),
    ]
    text = "\n".join(p for p in parts if p)
    (out / "tables.md").write_text(text, encoding="utf-8")
    return text


def archive(out: Path, dest: Path) -> list[Path]:
    """Copy the files the tables read from the study directory ``out`` into ``dest`` (same layout; a file
    already in ``dest`` is replaced, others there are kept): the copied paths, relative to ``dest``."""
    copied = []
    for pattern in READ_FILES:
        for source in sorted(out.glob(pattern)):
            relative = source.relative_to(out)
            (dest / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest / relative)
            copied.append(relative)
    return copied


def parse_groups(specs) -> dict[str, list[str]]:
    """``["verbose=en,de", "concise=fr,es"]`` -> ``{"verbose": ["en", "de"], "concise": ["fr", "es"]}``."""
    groups = {}
    for spec in specs:
        name, _, langs = spec.partition("=")
        if not name or not langs:
            raise SystemExit(f"--groups: expected NAME=LANG,LANG,..., got {spec!r}")
        groups[name] = langs.split(",")
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--groups", nargs="*", default=[], metavar="NAME=LANG,LANG")
    parser.add_argument("--archive", type=Path, metavar="DIR", help="copy the files the tables read into DIR")
    args = parser.parse_args()
    if args.archive:
        print(f"copied {len(archive(args.out, args.archive))} files to {args.archive}")
    print(write_tables(args.out, args.groups))


if __name__ == "__main__":
    main()

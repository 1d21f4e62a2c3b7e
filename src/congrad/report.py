"""``python -m congrad.report MULTIRUN_DIR``: the filter arms of a sweep side by side.

Collects every run below the directory that has an evaluation (``eval/results.json``; for a
self-rewarding run, that of its last iteration) and writes, into the directory:

``report.md``   arm × metric, mean ± sd over seeds, for the seen and the unseen languages; an arm whose
                difference to the "all pairs" arm is within noise is marked ``≈`` (the paired differences
                over seeds have a 95% t-interval that holds 0)
``report.csv``  the same numbers, one row per arm, group and metric, with the paired difference to "all"
``report.png``  one panel per metric: bars per arm (mean ± sd), seen and unseen side by side

and logs the table to W&B (offline unless ``--online``). The arm of a run is read from its config: "all"
when the ConGrad callback was off (``callbacks.congrad=null``), else ``filter.aggregator``, with
``/per-language`` when ``filter.per_language`` was on.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from congrad.errors import CongradError
from congrad.utils.io import atomic_path

METRICS = ("preference_accuracy", "win_rate", "language_fidelity", "nll_delta", "mc_accuracy")
GROUPS = ("seen", "unseen")
BASELINE_ARM = "all"
# two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom (the paired test of a few seeds)
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)


@dataclass
class Run:
    path: Path
    arm: str
    seed: int
    results: dict


def collect(root: Path) -> list[Run]:
    runs = []
    for config in sorted(root.rglob(".hydra/config.yaml")):
        run_dir = config.parent.parent
        results = _results_of(run_dir)
        if results is None:
            continue
        cfg = OmegaConf.load(config)
        runs.append(Run(run_dir, arm_of(cfg), int(cfg.seed), results))
    if not runs:
        raise CongradError(f"{root}: no run with an evaluation (eval/results.json) below it")
    return runs


def arm_of(cfg) -> str:
    if OmegaConf.select(cfg, "callbacks.congrad") is None:
        return BASELINE_ARM
    arm = str(cfg.filter.aggregator)
    return f"{arm}/per-language" if cfg.filter.get("per_language") else arm


def _results_of(run_dir: Path) -> dict | None:
    iterations = sorted(run_dir.glob("iteration_*/eval/results.json"), key=lambda p: int(p.parents[1].name[10:]))
    path = iterations[-1] if iterations else run_dir / "eval" / "results.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def summarise(runs: list[Run]) -> list[dict]:
    """One row per arm, group and metric: the per-seed values, mean, sd, and the paired difference to the
    "all" arm (mean, 95% t-interval over the seeds both have, and whether it holds 0)."""
    values: dict[tuple[str, str, str], dict[int, float]] = defaultdict(dict)
    for run in runs:
        for group in GROUPS:
            for metric in METRICS:
                value = (run.results.get(group) or {}).get(metric)
                if value is not None:
                    if run.seed in values[run.arm, group, metric]:
                        raise CongradError(f"{run.path}: a second run of arm {run.arm} with seed {run.seed}")
                    values[run.arm, group, metric][run.seed] = float(value)
    rows = []
    for (arm, group, metric), by_seed in sorted(values.items(), key=lambda kv: (_arm_order(kv[0][0]), kv[0][1:])):
        seeds = sorted(by_seed)
        row = {"arm": arm, "group": group, "metric": metric, "seeds": seeds,
               "values": [by_seed[s] for s in seeds], "mean": statistics.mean(by_seed.values()),
               "sd": statistics.stdev(by_seed.values()) if len(seeds) > 1 else math.nan}
        base = values.get((BASELINE_ARM, group, metric), {})
        paired = [by_seed[s] - base[s] for s in seeds if s in base]
        if arm != BASELINE_ARM and len(paired) > 1:
            mean_d, sd_d = statistics.mean(paired), statistics.stdev(paired)
            half = T975[min(len(paired) - 1, len(T975)) - 1] * sd_d / math.sqrt(len(paired))
            row.update(diff=mean_d, diff_low=mean_d - half, diff_high=mean_d + half,
                       within_noise=mean_d - half <= 0 <= mean_d + half)
        rows.append(row)
    return rows


def _arm_order(arm: str) -> tuple[int, str]:
    return (0 if arm == BASELINE_ARM else 1, arm)


def markdown(rows: list[dict]) -> str:
    arms = sorted({r["arm"] for r in rows}, key=_arm_order)
    cells = {(r["arm"], r["group"], r["metric"]): r for r in rows}
    lines = [f"Mean ± sd over seeds; ≈: the paired difference to \"{BASELINE_ARM}\" is within noise "
             "(95% t-interval over seeds holds 0).", ""]
    for group in GROUPS:
        metrics = [m for m in METRICS if any((a, group, m) in cells for a in arms)]
        if not metrics:
            continue
        lines += [f"### {group} languages", "", "| arm | seeds | " + " | ".join(metrics) + " |",
                  "|---|---|" + "---|" * len(metrics)]
        for arm in arms:
            present = [cells[arm, group, m] for m in metrics if (arm, group, m) in cells]
            if not present:
                continue
            seeds = len(present[0]["seeds"])
            lines.append(f"| {arm} | {seeds} | " + " | ".join(_cell(cells.get((arm, group, m))) for m in metrics) + " |")
        lines.append("")
    return "\n".join(lines)


def _cell(row: dict | None) -> str:
    if row is None:
        return "-"
    text = f"{row['mean']:.3f} ± {row['sd']:.3f}" if not math.isnan(row["sd"]) else f"{row['mean']:.3f}"
    return text + (" ≈" if row.get("within_noise") else "")


def write_report(root: Path, rows: list[dict]) -> None:
    with atomic_path(root / "report.md") as tmp:
        tmp.write_text(markdown(rows) + "\n", encoding="utf-8")
    buffer = io.StringIO()
    fields = ["arm", "group", "metric", "seeds", "values", "mean", "sd", "diff", "diff_low", "diff_high",
              "within_noise"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "seeds": " ".join(map(str, row["seeds"])),
                         "values": " ".join(f"{v:.6f}" for v in row["values"])})
    with atomic_path(root / "report.csv") as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
    figure = report_figure(rows)
    with atomic_path(root / "report.png") as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    import matplotlib.pyplot as plt

    plt.close(figure)


def report_figure(rows: list[dict]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in METRICS if any(r["metric"] == m for r in rows)]
    arms = sorted({r["arm"] for r in rows}, key=_arm_order)
    cells = {(r["arm"], r["group"], r["metric"]): r for r in rows}
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2), squeeze=False,
                             constrained_layout=True)
    for ax, metric in zip(axes[0], metrics):
        for k, (group, colour) in enumerate(zip(GROUPS, ("tab:blue", "tab:orange"))):
            xs = [i + (k - 0.5) * 0.38 for i in range(len(arms))]
            found = [cells.get((arm, group, metric)) for arm in arms]
            ax.bar(xs, [r["mean"] if r else math.nan for r in found], width=0.38, color=colour, label=group,
                   yerr=[0 if not r or math.isnan(r["sd"]) else r["sd"] for r in found], capsize=2)
        ax.set_xticks(range(len(arms)), arms, rotation=45, ha="right", fontsize=8)
        ax.set_title(metric, fontsize=9)
    axes[0, 0].legend(fontsize=8)
    return fig


def log_to_wandb(root: Path, rows: list[dict], online: bool) -> None:
    import wandb

    run = wandb.init(project="congrad", dir=str(root), name=f"report-{root.name}", job_type="report",
                     mode="online" if online else "offline")
    columns = ["arm", "group", "metric", "mean", "sd", "diff", "within_noise"]
    run.log({"report": wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])})
    run.finish()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Collect a multirun of filter arms into one table.")
    parser.add_argument("multirun_dir", type=Path)
    parser.add_argument("--no-wandb", action="store_true", help="do not log the table to W&B")
    parser.add_argument("--online", action="store_true", help="log to W&B online (default: offline)")
    args = parser.parse_args(argv)
    try:
        rows = summarise(collect(args.multirun_dir))
    except CongradError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    write_report(args.multirun_dir, rows)
    if not args.no_wandb:
        log_to_wandb(args.multirun_dir, rows, args.online)
    print(markdown(rows))
    print(f"wrote {args.multirun_dir / 'report.md'}, report.csv, report.png")


if __name__ == "__main__":
    main()

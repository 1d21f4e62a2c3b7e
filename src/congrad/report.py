"""``python -m congrad.report MULTIRUN_DIR``: the filter arms of a sweep side by side.

Collects every training run below the directory that has an evaluation (``eval/results.json``; for a
self-rewarding run, that of its last iteration) and writes, into the directory:

``report.md``   arm × metric, mean ± sd over seeds, for the seen and the unseen languages; an arm whose
                difference to the "all pairs" arm is within noise is marked ``≈`` (the paired differences
                over seeds have a 95% t-interval that holds 0)
``report.csv``  the same numbers, one row per arm, group and metric, with the paired difference to "all"
``report.png``  one panel per metric: bars per arm (mean ± sd), seen and unseen side by side

and logs the table to W&B (offline unless ``--online``). The arm of a run is read from its config: "all"
when the ConGrad callback was off (``callbacks.congrad=null``), else ``filter.aggregator``, with
``/per-language`` when ``filter.per_language`` was on.

A sweep with jobs that failed, did not finish or are missing still gives a table, of the jobs that finished:
``report.md`` and the console list every other run by name and why (its status and message from
``job_status.json``, no results yet, a damaged ``results.json``, a job of the multirun without a directory),
an arm with fewer seeds than the others says so in its ``seeds`` column, and a sweep without a finished
"all" arm says that the ≈ marks cannot be computed.
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

from congrad.errors import CongradError, exit_status
from congrad.utils.io import atomic_path
from congrad.utils.sweep import job_status, process_ended

METRICS = ("preference_accuracy", "win_rate", "language_fidelity", "nll_delta", "mc_accuracy")
GROUPS = ("seen", "unseen")
BASELINE_ARM = "all"
# two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom (the paired test of a few seeds)
T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


@dataclass
class Run:
    path: Path
    arm: str
    seed: int
    results: dict


@dataclass
class Left:
    """A run, or a job of the multirun, that is not in the table, and why."""

    name: str
    why: str
    overrides: list[str]


def collect(root: Path) -> tuple[list[Run], list[Left]]:
    """The finished runs below ``root``, and those left out with the reason. A left-out run is named by its
    directory (relative to ``root``) and the overrides that tell it apart from the other jobs."""
    expected = _sweep_jobs(root)
    runs, left, found = [], [], []
    for config in sorted(root.rglob(".hydra/config.yaml")):
        run_dir = config.parent.parent
        name, overrides = _relative(root, run_dir), _overrides(run_dir)
        try:
            cfg = OmegaConf.load(config)
            if "trainer" not in cfg:  # an evaluate.py or filter.py output, not a training run
                continue
            arm, seed = arm_of(cfg), int(cfg.seed)
        except Exception as err:  # a half-written run: name it, never a traceback
            results, why = None, f"its {config.relative_to(run_dir)} cannot be read ({type(err).__name__})"
        else:
            results, why = _results_of(run_dir, cfg)
        found.append(overrides)
        if why is None:
            runs.append(Run(run_dir, arm, seed, results))
        else:
            left.append(Left(name, why, overrides))
    have = {tuple(sorted(o)) for o in found}
    left += [
        Left(f"job #{num}", "missing: no run directory (never started, or removed)", overrides)
        for num, overrides in enumerate(expected)
        if tuple(sorted(overrides)) not in have
    ]
    every = [set(o) for o in [*found, *expected]]
    common = set.intersection(*every) if every else set()
    for entry in left:
        distinct = [o for o in entry.overrides if o not in common]
        entry.name += f" ({' '.join(distinct)})" if distinct else ""
    if not runs:
        reasons = "".join(f"\n  {entry.name}: {entry.why}" for entry in left)
        raise CongradError(f"{root}: no run with an evaluation (eval/results.json) below it{reasons}")
    return runs, left


def arm_of(cfg) -> str:
    if OmegaConf.select(cfg, "callbacks.congrad") is None:
        return BASELINE_ARM
    arm = str(cfg.filter.aggregator)
    return f"{arm}/per-language" if cfg.filter.get("per_language") else arm


def _results_of(run_dir: Path, cfg) -> tuple[dict | None, str | None]:
    """``(results, None)``, or ``(None, why)`` when the run has none to give."""
    iterations = int(cfg.get("iterations") or 0)
    loop = cfg.get("self_reward") is not None and cfg.data.get("path") is None and iterations > 0
    path = run_dir / f"iteration_{iterations}" / "eval" / "results.json" if loop else run_dir / "eval" / "results.json"
    relative = path.relative_to(run_dir)
    status = job_status(run_dir)
    if status is not None and status.get("status"):  # whatever it left behind, the job failed
        return None, f"failed with status {status['status']}: {status.get('message')}"
    if not path.is_file():
        if cfg.get("eval") is None:
            return None, "trained without an evaluation (~eval)"
        progress = ""
        if loop:
            done = len(list(run_dir.glob("iteration_*/iteration.json")))
            progress = f" ({done} of {iterations} iterations finished)"
        if status is not None and "started" in status:
            if process_ended(status):
                return None, (
                    f"killed: started {status['started']}, its process {status['pid']} on {status['host']} has "
                    f"ended without a status (SIGKILL, the out-of-memory killer, or a crash){progress}"
                )
            return None, (
                f"unfinished: started {status['started']}, no status at its end (still running, or killed){progress}"
            )
        if status is not None:  # a status file that cannot be read
            return None, f"{status.get('message')}{progress}"
        return None, f"no {relative}: unfinished or failed{progress}"
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return None, f"{relative} is damaged ({err})"
    problem = _malformed(results)
    return (None, f"{relative} is damaged ({problem})") if problem else (results, None)


def _malformed(results) -> str | None:
    if not isinstance(results, dict):
        return "not a JSON object"
    for group in GROUPS:
        values = results.get(group)
        if values is None:
            continue
        if not isinstance(values, dict):
            return f"'{group}' is not an object"
        for metric in METRICS:
            value = values.get(metric)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                return f"'{group}.{metric}' is not a number: {value!r}"
    return None


def _overrides(run_dir: Path) -> list[str]:
    try:
        return [str(o) for o in OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")]
    except Exception:
        return []


def _sweep_jobs(root: Path) -> list[list[str]]:
    """The override lists of the jobs a multirun launched, as Hydra's basic sweeper computes them."""
    path = root / "multirun.yaml"
    if not path.is_file():
        return []
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        config = OmegaConf.load(path)
        if not str(OmegaConf.select(config, "hydra.sweeper._target_") or "").endswith("BasicSweeper"):
            return []
        params = [f"{key}={value}" for key, value in (config.hydra.sweeper.get("params") or {}).items()]
        overrides = OverridesParser.create().parse_overrides([*params, *config.hydra.overrides.task])
        return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
    except Exception as err:
        print(f"warning: {path}: the jobs of the multirun cannot be listed ({err})", file=sys.stderr)
        return []


def _relative(root: Path, path: Path) -> str:
    return str(path.relative_to(root)) if path != root else "."


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
        row = {
            "arm": arm,
            "group": group,
            "metric": metric,
            "seeds": seeds,
            "values": [by_seed[s] for s in seeds],
            "mean": statistics.mean(by_seed.values()),
            "sd": statistics.stdev(by_seed.values()) if len(seeds) > 1 else math.nan,
        }
        base = values.get((BASELINE_ARM, group, metric), {})
        paired = [by_seed[s] - base[s] for s in seeds if s in base]
        if arm != BASELINE_ARM and len(paired) > 1:
            mean_d, sd_d = statistics.mean(paired), statistics.stdev(paired)
            half = T975[min(len(paired) - 1, len(T975)) - 1] * sd_d / math.sqrt(len(paired))
            row.update(
                diff=mean_d,
                diff_low=mean_d - half,
                diff_high=mean_d + half,
                within_noise=mean_d - half <= 0 <= mean_d + half,
            )
        rows.append(row)
    return rows


def _arm_order(arm: str) -> tuple[int, str]:
    return (0 if arm == BASELINE_ARM else 1, arm)


def markdown(rows: list[dict], left: list[Left] = ()) -> str:
    arms = sorted({r["arm"] for r in rows}, key=_arm_order)
    cells = {(r["arm"], r["group"], r["metric"]): r for r in rows}
    lines = [
        f'Mean ± sd over seeds; ≈: the paired difference to "{BASELINE_ARM}" is within noise '
        "(95% t-interval over seeds holds 0).",
        "",
        *notes(rows, left),
    ]
    for group in GROUPS:
        metrics = [m for m in METRICS if any((a, group, m) in cells for a in arms)]
        if not metrics:
            continue
        counts = {
            arm: max(len(cells[arm, group, m]["seeds"]) for m in metrics if (arm, group, m) in cells)
            for arm in arms
            if any((arm, group, m) in cells for m in metrics)
        }
        most = max(counts.values())
        lines += [
            f"### {group} languages",
            "",
            "| arm | seeds | " + " | ".join(metrics) + " |",
            "|---|---|" + "---|" * len(metrics),
        ]
        for arm, n in counts.items():
            seeds = f"{n} of {most}" if n < most else str(n)
            values = " | ".join(_cell(cells.get((arm, group, m))) for m in metrics)
            lines.append(f"| {arm} | {seeds} | {values} |")
        lines.append("")
    return "\n".join(lines)


def notes(rows: list[dict], left: list[Left] = ()) -> list[str]:
    """What the table leaves out: the runs not in it and why, arms with fewer seeds, a missing baseline."""
    lines = []
    if left:
        lines += [f"Not in the table ({len(left)}):", *(f"- {entry.name}: {entry.why}" for entry in left), ""]
    seeds = defaultdict(set)
    for row in rows:
        seeds[row["arm"]].update(row["seeds"])
    every = set().union(*seeds.values())
    fewer = [
        f"{arm} (no seed {', '.join(map(str, sorted(every - have)))})"
        for arm, have in sorted(seeds.items(), key=lambda kv: _arm_order(kv[0]))
        if have != every
    ]
    if fewer:
        lines += [f"Arms with fewer seeds than the others: {'; '.join(fewer)}.", ""]
    if BASELINE_ARM not in seeds:
        lines += [
            f'No run of the "{BASELINE_ARM}" arm finished: the ≈ marks (the paired difference to '
            f'"{BASELINE_ARM}") cannot be computed.',
            "",
        ]
    return lines


def _cell(row: dict | None) -> str:
    if row is None:
        return "-"
    text = f"{row['mean']:.3f} ± {row['sd']:.3f}" if not math.isnan(row["sd"]) else f"{row['mean']:.3f}"
    return text + (" ≈" if row.get("within_noise") else "")


def write_report(root: Path, rows: list[dict], left: list[Left] = ()) -> None:
    with atomic_path(root / "report.md") as tmp:
        tmp.write_text(markdown(rows, left) + "\n", encoding="utf-8")
    buffer = io.StringIO()
    fields = [
        "arm",
        "group",
        "metric",
        "seeds",
        "values",
        "mean",
        "sd",
        "diff",
        "diff_low",
        "diff_high",
        "within_noise",
    ]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {**row, "seeds": " ".join(map(str, row["seeds"])), "values": " ".join(f"{v:.6f}" for v in row["values"])}
        )
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
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2), squeeze=False, constrained_layout=True)
    for ax, metric in zip(axes[0], metrics):
        for k, (group, colour) in enumerate(zip(GROUPS, ("tab:blue", "tab:orange"))):
            xs = [i + (k - 0.5) * 0.38 for i in range(len(arms))]
            found = [cells.get((arm, group, metric)) for arm in arms]
            ax.bar(
                xs,
                [r["mean"] if r else math.nan for r in found],
                width=0.38,
                color=colour,
                label=group,
                yerr=[0 if not r or math.isnan(r["sd"]) else r["sd"] for r in found],
                capsize=2,
            )
        ax.set_xticks(range(len(arms)), arms, rotation=45, ha="right", fontsize=8)
        ax.set_title(metric, fontsize=9)
    axes[0, 0].legend(fontsize=8)
    return fig


def log_to_wandb(root: Path, rows: list[dict], online: bool) -> None:
    import wandb

    run = wandb.init(
        project="congrad",
        dir=str(root),
        name=f"report-{root.name}",
        job_type="report",
        mode="online" if online else "offline",
    )
    columns = ["arm", "group", "metric", "mean", "sd", "diff", "within_noise"]
    try:
        run.log({"report": wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])})
    except BaseException as err:
        run.finish(exit_code=exit_status(err))
        raise
    run.finish()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Collect a multirun of filter arms into one table.")
    parser.add_argument("multirun_dir", type=Path)
    parser.add_argument("--no-wandb", action="store_true", help="do not log the table to W&B")
    parser.add_argument("--online", action="store_true", help="log to W&B online (default: offline)")
    args = parser.parse_args(argv)
    try:
        runs, left = collect(args.multirun_dir)
        rows = summarise(runs)
    except CongradError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    write_report(args.multirun_dir, rows, left)
    if not args.no_wandb:
        log_to_wandb(args.multirun_dir, rows, args.online)
    print(markdown(rows, left))
    print(f"wrote {args.multirun_dir / 'report.md'}, report.csv, report.png")


if __name__ == "__main__":
    main()

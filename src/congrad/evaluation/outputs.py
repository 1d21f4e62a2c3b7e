"""What an evaluation leaves behind, each file written atomically:

``results.json``       ``{"policy", "baseline", "languages": {code: {"seen", metrics...}}, "harness": {task:
                       {"language", "seen", "metric", "policy", "baseline", "delta", "n"}}, "seen": {macro
                       means}, "unseen": {...}}`` (``harness`` when that part ran); a group's ``"missing"``
                       names, per metric, the languages its mean leaves out (the console table says it too)
``per_language.csv``   one row per language, one column per metric
``harness.csv``        one row per harness task: language, seen, metric, policy, baseline, delta, n
``generations.jsonl``  per held-out prompt: both answers, their detected languages, both verdicts
``per_language.png``   one bar per language per metric, seen and unseen coloured apart
``harness.png``        per harness task: policy and baseline scores, their difference, n

and the same numbers as metrics (``eval/seen/win_rate``, ``eval/win_rate/de``,
``eval/harness/<task>/delta``, ...), tables and the plots in the loggers (W&B).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from congrad.utils.io import atomic_path, write_json, write_jsonl

METRICS = (
    "preference_accuracy",
    "reward_margin",
    "win_rate",
    "language_fidelity",
    "nll_delta",
    "mc_accuracy",
    "mc_accuracy_baseline",
    "mc_delta",
)
COUNTS = ("n_pairs", "preference_ties", "wins", "ties", "losses", "unjudged", "mc_n")
HARNESS_COLUMNS = ("task", "language", "seen", "metric", "policy", "baseline", "delta", "n")
SHARES = ("preference_accuracy", "win_rate", "language_fidelity", "mc_accuracy", "mc_accuracy_baseline")


def columns(results: dict) -> list[str]:
    """The metrics present in ``results`` (a part switched off has none), in a fixed order."""
    present = set().union(*(row.keys() for row in results["languages"].values()))
    return [m for m in (*METRICS, "win_rate_ci", *COUNTS) if m in present]


def harness_rows(results: dict) -> list[list]:
    """One row per harness task, in :data:`HARNESS_COLUMNS` order (none when the part did not run)."""
    return [[name, *(_cell(task[c]) for c in HARNESS_COLUMNS[1:])] for name, task in results.get("harness", {}).items()]


def write_outputs(out_dir: str | Path, results: dict, generations: list[dict]) -> dict[str, Path]:
    """The files into ``out_dir``; returns the plots' paths by name (``per_language``, ``harness``)."""
    out_dir = Path(out_dir)
    write_json(out_dir / "results.json", results)
    write_jsonl(out_dir / "generations.jsonl", generations)
    names = columns(results)
    _write_csv(
        out_dir / "per_language.csv",
        ["language", "seen", *names],
        [[lang, row["seen"], *(_cell(row.get(name)) for name in names)] for lang, row in results["languages"].items()],
    )
    figures = {"per_language": per_language_figure(results)}
    if results.get("harness"):
        _write_csv(out_dir / "harness.csv", list(HARNESS_COLUMNS), harness_rows(results))
        figures["harness"] = harness_figure(results)
    import matplotlib.pyplot as plt

    plots = {}
    for name, figure in figures.items():
        plots[name] = out_dir / f"{name}.png"
        with atomic_path(plots[name]) as tmp:
            figure.savefig(tmp, format="png", dpi=100)
        plt.close(figure)
    return plots


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")


def table(results: dict) -> str:
    """The results as a text table: one line per language, then the seen and unseen macro means."""
    names = [m for m in columns(results) if m in METRICS]
    header = f"{'language':<10}{'seen':>5}" + "".join(f"{_short(n):>11}" for n in names)
    lines = [header]
    for lang, row in results["languages"].items():
        lines.append(f"{lang:<10}{'yes' if row['seen'] else 'no':>5}" + "".join(_fmt(row.get(n)) for n in names))
    for group in ("seen", "unseen"):
        summary = results.get(group) or {}
        if summary:
            label = f"{group} ({summary['languages']})"
            lines.append(f"{label:<15}" + "".join(_fmt(summary.get(n)) for n in names))
    if results.get("harness"):
        width = max(len(name) for name in results["harness"]) + 2
        lines.append("")
        lines.append(
            f"{'harness task':<{width}}{'lang':>5}{'metric':>9}{'policy':>9}{'baseline':>9}{'delta':>9}{'n':>8}"
        )
        for name, task in results["harness"].items():
            lines.append(
                f"{name:<{width}}{task['language']:>5}{task['metric']:>9}{task['policy']:9.3f}"
                f"{task['baseline']:9.3f}{task['delta']:+9.3f}{task['n']:8d}"
            )
    for group in ("seen", "unseen"):
        lines += coverage_notes(group, results.get(group) or {})
    return "\n".join(lines)


def coverage_notes(group: str, summary: dict) -> list[str]:
    """One line per set of languages that some of a group's means leave out, e.g. ``seen: win_rate,
    language_fidelity over 1 of 2 languages (none for sw)``."""
    by_absent: dict[tuple, list[str]] = {}
    for name, absent in (summary.get("missing") or {}).items():
        if name in METRICS:
            by_absent.setdefault(tuple(absent), []).append(name)
    total = summary.get("languages", 0)
    return [
        f"{group}: {', '.join(names)} over {total - len(absent)} of {total} languages (none for {', '.join(absent)})"
        for absent, names in by_absent.items()
    ]


def log_results(loggers, results: dict, step: int, plots: dict[str, Path] | None = None, prefix: str = "eval") -> None:
    """Macro means as ``<prefix>/<group>/<metric>``, per language as ``<prefix>/<metric>/<lang>``, per harness
    task as ``<prefix>/harness/<task>/<policy|baseline|delta|n>``; W&B also gets the tables and the plots."""
    values = {}
    for group in ("seen", "unseen"):
        for name, value in (results.get(group) or {}).items():
            if isinstance(value, (int, float)) and name != "languages":
                values[f"{prefix}/{group}/{name}"] = float(value)
    for lang, row in results["languages"].items():
        for name in METRICS:
            if name in row:
                values[f"{prefix}/{name}/{lang}"] = float(row[name])
    for name, task in results.get("harness", {}).items():
        for key in ("policy", "baseline", "delta", "n"):
            values[f"{prefix}/harness/{name}/{key}"] = float(task[key])
    names = columns(results)
    for logger in loggers:
        logger.log_metrics(values, step=step)
        if type(logger).__name__ == "WandbLogger":
            data = [
                [lang, row["seen"], *(_cell(row.get(n)) for n in names)] for lang, row in results["languages"].items()
            ]
            logger.log_table(key=f"{prefix}/per_language", columns=["language", "seen", *names], data=data)
            if results.get("harness"):
                logger.log_table(key=f"{prefix}/harness", columns=list(HARNESS_COLUMNS), data=harness_rows(results))
            for name, plot in (plots or {}).items():
                logger.log_image(key=f"{prefix}/{name}", images=[str(plot)])


def per_language_figure(results: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m for m in columns(results) if m in METRICS]
    langs = list(results["languages"])
    fig, axes = plt.subplots(
        len(names),
        1,
        figsize=(1.2 + 0.5 * len(langs), 1.9 * max(1, len(names))),
        squeeze=False,
        constrained_layout=True,
    )
    colours = ["tab:blue" if results["languages"][lang]["seen"] else "tab:orange" for lang in langs]
    for ax, name in zip(axes[:, 0], names):
        heights = [results["languages"][lang].get(name, math.nan) for lang in langs]
        ax.bar(range(len(langs)), heights, color=colours)
        ax.set_xticks(range(len(langs)), langs)
        ax.set_ylabel(_short(name), fontsize=8)
        if name in SHARES:
            ax.set_ylim(0, 1)
        if name == "win_rate":
            ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    axes[0, 0].set_title("per language (blue: seen in training, orange: unseen)", fontsize=9)
    return fig


def harness_figure(results: dict):
    """Per harness task: the policy's and the baseline's score side by side, and their difference; the tick
    labels carry the language and n."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = results["harness"]
    names = list(tasks)
    x = range(len(names))
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(max(4.5, 1.6 + 0.7 * len(names)), 4.8), sharex=True, constrained_layout=True
    )
    top.bar([i - 0.2 for i in x], [tasks[n]["policy"] for n in names], width=0.4, label="policy", color="tab:blue")
    top.bar([i + 0.2 for i in x], [tasks[n]["baseline"] for n in names], width=0.4, label="baseline", color="tab:gray")
    top.set_ylim(0, 1)
    top.set_ylabel("score", fontsize=8)
    top.legend(fontsize=7)
    colours = ["tab:blue" if tasks[n]["seen"] else "tab:orange" for n in names]
    bottom.bar(list(x), [tasks[n]["delta"] for n in names], color=colours)
    bottom.axhline(0, color="grey", lw=0.8)
    bottom.set_ylabel("difference", fontsize=8)
    bottom.set_xticks(
        list(x), [f"{n}\n{tasks[n]['language']}, n={tasks[n]['n']}" for n in names], fontsize=6, rotation=30, ha="right"
    )
    top.set_title("harness tasks: " + ", ".join(sorted({t["metric"] for t in tasks.values()})), fontsize=9)
    bottom.set_title("policy - baseline (blue: seen in training, orange: unseen)", fontsize=8)
    return fig


def _short(name: str) -> str:
    return {
        "preference_accuracy": "pref_acc",
        "reward_margin": "margin",
        "language_fidelity": "lang_fid",
        "mc_accuracy": "mc_acc",
        "mc_accuracy_baseline": "mc_base",
    }.get(name, name)


def _fmt(value) -> str:
    return f"{value:11.3f}" if isinstance(value, (int, float)) else f"{'-':>11}"


def _cell(value):
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, list):
        return " ".join(f"{v:.4f}" for v in value)
    return value

"""What an evaluation leaves behind, each file written atomically:

``results.json``       ``{"policy", "baseline", "languages": {code: {"seen", metrics...}}, "seen": {macro means},
                       "unseen": {...}}``; a group's ``"missing"`` names, per metric, the languages its mean
                       leaves out (the console table says it too)
``per_language.csv``   one row per language, one column per metric
``generations.jsonl``  per held-out prompt: both answers, their detected languages, both verdicts
``per_language.png``   one bar per language per metric, seen and unseen coloured apart

and the same numbers as metrics (``eval/seen/win_rate``, ``eval/win_rate/de``, ...), a table and the plot
in the loggers (W&B).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from congrad.utils.io import atomic_path, write_json, write_jsonl

METRICS = ("preference_accuracy", "reward_margin", "win_rate", "language_fidelity", "nll_delta", "mc_accuracy",
           "mc_accuracy_baseline")
COUNTS = ("n_pairs", "preference_ties", "wins", "ties", "losses", "unjudged")


def columns(results: dict) -> list[str]:
    """The metrics present in ``results`` (a part switched off has none), in a fixed order."""
    present = set().union(*(row.keys() for row in results["languages"].values()))
    return [m for m in (*METRICS, "win_rate_ci", *COUNTS) if m in present]


def write_outputs(out_dir: str | Path, results: dict, generations: list[dict]) -> Path:
    """The four files into ``out_dir``; returns the plot's path."""
    out_dir = Path(out_dir)
    write_json(out_dir / "results.json", results)
    write_jsonl(out_dir / "generations.jsonl", generations)
    names = columns(results)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["language", "seen", *names])
    for lang, row in results["languages"].items():
        writer.writerow([lang, row["seen"], *(_cell(row.get(name)) for name in names)])
    with atomic_path(out_dir / "per_language.csv") as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
    plot = out_dir / "per_language.png"
    figure = per_language_figure(results)
    with atomic_path(plot) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return plot


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
    return [f"{group}: {', '.join(names)} over {total - len(absent)} of {total} languages (none for "
            f"{', '.join(absent)})" for absent, names in by_absent.items()]


def log_results(loggers, results: dict, step: int, plot: Path | None = None, prefix: str = "eval") -> None:
    """Macro means as ``<prefix>/<group>/<metric>``, per language as ``<prefix>/<metric>/<lang>``; W&B also
    gets the table and the plot."""
    values = {}
    for group in ("seen", "unseen"):
        for name, value in (results.get(group) or {}).items():
            if isinstance(value, (int, float)) and name != "languages":
                values[f"{prefix}/{group}/{name}"] = float(value)
    for lang, row in results["languages"].items():
        for name in METRICS:
            if name in row:
                values[f"{prefix}/{name}/{lang}"] = float(row[name])
    names = columns(results)
    for logger in loggers:
        logger.log_metrics(values, step=step)
        if type(logger).__name__ == "WandbLogger":
            data = [[lang, row["seen"], *(_cell(row.get(n)) for n in names)] for lang, row in results["languages"].items()]
            logger.log_table(key=f"{prefix}/per_language", columns=["language", "seen", *names], data=data)
            if plot is not None:
                logger.log_image(key=f"{prefix}/per_language", images=[str(plot)])


def per_language_figure(results: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m for m in columns(results) if m in METRICS]
    langs = list(results["languages"])
    fig, axes = plt.subplots(len(names), 1, figsize=(1.2 + 0.5 * len(langs), 1.9 * max(1, len(names))),
                             squeeze=False, constrained_layout=True)
    colours = ["tab:blue" if results["languages"][lang]["seen"] else "tab:orange" for lang in langs]
    for ax, name in zip(axes[:, 0], names):
        heights = [results["languages"][lang].get(name, math.nan) for lang in langs]
        ax.bar(range(len(langs)), heights, color=colours)
        ax.set_xticks(range(len(langs)), langs)
        ax.set_ylabel(_short(name), fontsize=8)
        if name in ("preference_accuracy", "win_rate", "language_fidelity", "mc_accuracy", "mc_accuracy_baseline"):
            ax.set_ylim(0, 1)
        if name == "win_rate":
            ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    axes[0, 0].set_title("per language (blue: seen in training, orange: unseen)", fontsize=9)
    return fig


def _short(name: str) -> str:
    return {"preference_accuracy": "pref_acc", "reward_margin": "margin", "language_fidelity": "lang_fid",
            "mc_accuracy_baseline": "mc_base"}.get(name, name)


def _fmt(value) -> str:
    return f"{value:11.3f}" if isinstance(value, (int, float)) else f"{'-':>11}"


def _cell(value):
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, list):
        return " ".join(f"{v:.4f}" for v in value)
    return value

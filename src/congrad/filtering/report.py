"""The files a filtering pass leaves behind (the ``filter.py`` contract, also written by the callback):

``scores.jsonl``  one line per input row, in input order: ``{"id", "language", "score", "kept"}``, plus
                  ``"reason"`` for every row that was not kept (a dropped pair, or a bad row that was skipped)
``kept.jsonl``    the kept rows, unchanged
``summary.json``  per-language counts, the language × language cosine matrices of the aggregates before
                  and after surgery, the settings
``conflict.png``  those two matrices as heatmaps

Every file is written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from congrad.filtering.conflict_filter import FilterResult
from congrad.utils.io import atomic_path, write_json, write_jsonl


def score_lines(rows: Sequence, result: FilterResult, skipped_rows: Sequence[dict] = ()) -> list[dict]:
    """The ``scores.jsonl`` lines: scored ``rows`` (PreferenceRow, aligned with ``result``) and the
    ``skipped_rows`` of the load report, merged in input order."""
    lines = []
    for row, score, kept in zip(rows, result.scores.tolist(), result.kept.tolist()):
        line = {"id": row.id, "language": row.language, "score": score, "kept": kept}
        if not kept:
            line["reason"] = result.drop_reason
        lines.append((row.index, line))
    for bad in skipped_rows:
        line = {"id": bad.get("id"), "language": bad.get("language"), "score": None, "kept": False,
                "reason": f"bad row: {bad['field']}: {bad['reason']}"}
        lines.append((bad["row"], line))
    return [line for _, line in sorted(lines, key=lambda item: item[0])]


def summary(result: FilterResult, extra: dict | None = None) -> dict:
    return {
        "languages": result.per_language(),
        "total": len(result.languages),
        "kept": int(result.kept.sum()),
        "cosine": {
            "languages": result.aggregate_languages,
            "before_surgery": result.cosine_before.tolist(),
            "after_surgery": result.cosine_after.tolist(),
        },
        "settings": result.settings,
        **(extra or {}),
    }


def write_filter_outputs(out_dir: str | Path, rows: Sequence, result: FilterResult,
                         skipped_rows: Sequence[dict] = (), extra_summary: dict | None = None) -> Path:
    """Write the four files into ``out_dir``; returns the heatmap's path."""
    out_dir = Path(out_dir)
    write_jsonl(out_dir / "scores.jsonl", score_lines(rows, result, skipped_rows))
    write_jsonl(out_dir / "kept.jsonl", (row.raw for row, kept in zip(rows, result.kept.tolist()) if kept))
    write_json(out_dir / "summary.json", summary(result, extra_summary))
    heatmap = out_dir / "conflict.png"
    figure = conflict_figure(result)
    with atomic_path(heatmap) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    _close(figure)
    return heatmap


def conflict_figure(result: FilterResult):
    """Heatmaps of the language × language cosines before and after surgery."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    langs = result.aggregate_languages
    size = 2.5 + 0.45 * len(langs)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size), constrained_layout=True)
    for ax, matrix, title in zip(axes, (result.cosine_before, result.cosine_after),
                                 ("aggregates", f"after {result.settings.get('aggregator', '')}")):
        image = ax.imshow(matrix.numpy(), vmin=-1, vmax=1, cmap="RdBu")
        ax.set_title(f"cosine: {title}")
        ax.set_xticks(range(len(langs)), langs)
        ax.set_yticks(range(len(langs)), langs)
        if len(langs) <= 16:
            for i in range(len(langs)):
                for j in range(len(langs)):
                    ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=axes, shrink=0.8)
    return fig


def _close(figure) -> None:
    import matplotlib.pyplot as plt

    plt.close(figure)

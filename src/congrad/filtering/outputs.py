"""The files a filtering pass leaves behind (the ``filter.py`` contract, also written by the callback):

``scores.jsonl``  one line per input row, in input order: ``{"id", "language", "score", "kept"}``, plus
                  ``"reason"`` for every row that was not kept (a dropped pair, a bad row that was skipped,
                  a row of a language outside ``data.languages``, a pair without a preference signal);
                  unscored rows have ``"score": null``
``kept.jsonl``    the kept rows, unchanged
``summary.json``  per-language counts (total, kept, skipped), the language × language cosine matrices of the
                  aggregates before and after surgery, the settings
``conflict.png``  those two matrices as heatmaps

The four are replaced as one set (:func:`congrad.utils.fileset.write_file_set`): a reader, or a run killed at
any moment, finds the complete previous set or the complete new one, never a mix.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from congrad.filtering.method import PassResult
from congrad.utils.fileset import write_file_set
from congrad.utils.io import write_json, write_jsonl


def score_lines(rows: Sequence, result: PassResult, report=None) -> list[dict]:
    """The ``scores.jsonl`` lines: the scored ``rows`` (PreferenceRow, aligned with ``result``) and, from the
    data's load ``report``, the rows skipped as bad and those excluded by ``data.languages`` — in input order."""
    lines = []
    for i, row in enumerate(rows):
        line = {"id": row.id, "language": row.language, "score": result.score(i), "kept": bool(result.kept[i])}
        if not line["kept"]:
            line["reason"] = result.reason(i)
        lines.append((row.label, line))  # the report's "row" is the same number, in the same order
    for bad in report.skipped_rows if report else ():
        reason = f"bad row: field '{bad['field']}': {bad['reason']}"
        lines.append((bad["row"], _unscored(bad, reason)))
    for excluded in report.excluded_rows if report else ():
        lines.append((excluded["row"], _unscored(excluded, "language not in data.languages")))
    return [line for _, line in sorted(lines, key=lambda item: item[0])]


def _unscored(entry: dict, reason: str) -> dict:
    return {"id": entry["id"], "language": entry["language"], "score": None, "kept": False, "reason": reason}


def summary(result: PassResult, report=None, extra: dict | None = None) -> dict:
    per_language = {lang: {**stats, "skipped": 0} for lang, stats in result.per_language().items()}
    for bad in report.skipped_rows if report else ():
        if bad["language"] in per_language:
            per_language[bad["language"]]["skipped"] += 1
    return {
        "languages": per_language,
        "total": len(result.languages),
        "kept": int(result.kept.sum()),
        "skipped": report.skipped if report else 0,
        "cosine": {
            "languages": result.aggregate_languages,
            "before_surgery": result.cosine_before.tolist(),
            "after_surgery": result.cosine_after.tolist(),
        },
        "settings": result.settings,
        **({"data": report.to_dict()} if report else {}),
        **(extra or {}),
    }


def write_filter_outputs(
    out_dir: str | Path,
    rows: Sequence,
    result: PassResult,
    report=None,
    extra_summary: dict | None = None,
    keep_as: str | None = None,
) -> Path:
    """Replace the four files in ``out_dir`` as one set; returns the heatmap's path. ``report``: the data's
    LoadReport, whose skipped and excluded rows get a line too (filter.py passes it; inside training the
    candidates are the training split only, so it does not). ``keep_as``: the set also stays, never
    rewritten, as ``out_dir/<keep_as>/`` (the callback's ``epoch_<e>``)."""
    out_dir = Path(out_dir)
    lines = score_lines(rows, result, report)
    kept_rows = [row.raw for row, kept in zip(rows, result.kept.tolist()) if kept]
    summary_ = summary(result, report, extra_summary)
    figure = conflict_figure(result)
    try:
        folder = write_file_set(
            out_dir,
            {
                "scores.jsonl": lambda path: write_jsonl(path, lines),
                "kept.jsonl": lambda path: write_jsonl(path, kept_rows),
                "summary.json": lambda path: write_json(path, summary_),
                "conflict.png": lambda path: figure.savefig(path, format="png", dpi=110),
            },
            keep_as=keep_as,
        )
    finally:
        _close(figure)
    return folder / "conflict.png"


def conflict_figure(result: PassResult):
    """Heatmaps of the language × language cosines before and after surgery."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    langs = result.aggregate_languages
    size = 2.5 + 0.45 * len(langs)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size), constrained_layout=True)
    for ax, matrix, title in zip(
        axes,
        (result.cosine_before, result.cosine_after),
        ("aggregates", f"after {result.settings.get('aggregator', '')}"),
    ):
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

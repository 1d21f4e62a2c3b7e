"""filter.py's output contract (docs/filtering.md) and its handling of bad rows, run as a user runs it."""

import json
import os
import subprocess
import sys
import tempfile

import pytest
from conftest import ROOT

from congrad.data.sources import read_json_lines
from congrad.data.synthetic import make_preference_rows

pytestmark = pytest.mark.slow(seconds=35)

LANGUAGES = ["en", "de", "ru", "zh"]


def run_filter(*overrides, log_dir=None):
    """filter.py as a user runs it; Hydra's log folder goes to ``log_dir`` (a temporary one by default), not
    into the repository's logs/."""
    log_dir = log_dir or tempfile.mkdtemp(prefix="filter-logs-")
    return subprocess.run(
        [sys.executable, str(ROOT / "filter.py"), f"hydra.run.dir={log_dir}", *overrides],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def read_jsonl(path):
    return [row for _, row in read_json_lines(path)]


@pytest.fixture
def pairs_with_bad_rows(tmp_path):
    rows = make_preference_rows(LANGUAGES, pairs_per_language=6, seed=1)
    bad = [dict(rows[2], id="bad-empty", chosen=""), dict(rows[9], id="bad-lang", language="xx")]
    lines = [json.dumps(r, ensure_ascii=False) for r in rows[:5] + bad[:1] + rows[5:17] + bad[1:] + rows[17:]]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, [json.loads(line) for line in lines]


def test_output_contract_with_skipped_bad_rows(pairs_with_bad_rows, tmp_path):
    path, inputs = pairs_with_bad_rows
    out = tmp_path / "out"
    result = run_filter(
        f"data.path={path}",
        f"output_dir={out}",
        "data.on_bad_row=skip",
        "sketch.width=1024",
        "filter.keep_ratio=0.5",
        "filter.min_per_language=2",
        log_dir=tmp_path / "logs",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    spent = json.loads((tmp_path / "logs" / "cost.json").read_text())  # what the run cost, beside filter.log
    assert spent["finished"] and spent["sketch_passes"] == 1 and spent["seconds"]["sketch"] > 0
    assert spent["pairs_sketched"] == len(inputs) - 2  # every row but the two skipped ones
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")], "no temporary files left behind"
    assert {p.name for p in out.iterdir() if not p.name.startswith(".")} == {
        "scores.jsonl",
        "kept.jsonl",
        "summary.json",
        "conflict.png",
    }, "the output files alone (logs go elsewhere)"

    scores = read_jsonl(out / "scores.jsonl")
    assert [s["id"] for s in scores] == [r["id"] for r in inputs], "one line per input row, in input order"
    for line in scores:
        assert {"id", "language", "score", "kept"} <= set(line)
        if not line["kept"]:
            assert line["reason"]
    skipped = {s["id"]: s for s in scores if s["score"] is None}
    assert set(skipped) == {"bad-empty", "bad-lang"} and not any(s["kept"] for s in skipped.values())
    assert "chosen" in skipped["bad-empty"]["reason"] and "language" in skipped["bad-lang"]["reason"]
    scored = [s for s in scores if s["score"] is not None]
    assert all(-1.0 <= s["score"] <= 1.0 for s in scored)
    # oracle: the best-scored half overall, plus each language's two best (the floor)
    best = sorted(scored, key=lambda s: -s["score"])
    expected = {s["id"] for s in best[: len(best) // 2]}
    for lang in LANGUAGES:
        expected |= {s["id"] for s in [x for x in best if x["language"] == lang][:2]}
    assert {s["id"] for s in scored if s["kept"]} == expected
    n_kept = len(expected)

    kept_ids = [s["id"] for s in scores if s["kept"]]
    by_id = {r["id"]: r for r in inputs}
    assert read_jsonl(out / "kept.jsonl") == [by_id[i] for i in kept_ids], "kept rows unchanged, in input order"

    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["languages"]) == set(LANGUAGES)
    for lang, stats in summary["languages"].items():
        lines = [s for s in scored if s["language"] == lang]
        assert stats["total"] == len(lines) and stats["kept"] == sum(s["kept"] for s in lines) >= 2
    assert summary["languages"]["en"]["skipped"] == 1  # the row with the empty chosen answer
    assert summary["skipped"] == 2 and summary["kept"] == n_kept
    cosine = summary["cosine"]
    assert cosine["languages"] == sorted(LANGUAGES)
    for matrix in (cosine["before_surgery"], cosine["after_surgery"]):
        assert len(matrix) == len(LANGUAGES) and all(len(row) == len(LANGUAGES) for row in matrix)
        assert all(abs(matrix[i][i] - 1.0) < 1e-5 for i in range(len(LANGUAGES)))
    assert summary["settings"]["aggregator"] == "pcgrad" and summary["settings"]["keep_ratio"] == 0.5
    assert summary["sketch"]["width"] == 1024
    assert (out / "conflict.png").stat().st_size > 0


def test_a_bad_row_is_an_error_naming_file_row_and_field(pairs_with_bad_rows, tmp_path):
    path, _ = pairs_with_bad_rows
    out = tmp_path / "out"
    result = run_filter(f"data.path={path}", f"output_dir={out}")
    assert result.returncode == 2
    assert f"{path}: row 6: field 'chosen'" in result.stderr  # line 6 of the file
    assert "Traceback" not in result.stderr
    assert not (out / "scores.jsonl").exists()

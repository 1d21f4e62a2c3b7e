"""The arms comparison: a real (tiny) multirun over filter arms × seeds with ``+sweep=arms``, collected by
``python -m congrad.report`` into one table whose numbers are checked against the per-run results."""

import csv
import json
import os
import statistics
import subprocess
import sys

import pytest

from conftest import ROOT, SMALL_EVAL

pytestmark = pytest.mark.slow(seconds=30)


def test_arms_sweep_and_report(tmp_path):
    from congrad.data.synthetic import make_preference_rows
    from congrad.utils.io import write_jsonl

    data = tmp_path / "pairs.jsonl"
    write_jsonl(data, make_preference_rows(["en", "de", "zh"], pairs_per_language=6, seed=5))
    sweep = tmp_path / "sweep"
    job = [sys.executable, str(ROOT / "train.py"), "-m", "+sweep=arms", "arm=all,random", "seed=0,1",
           f"data.path={data}", "data.languages=[en,zh]", "trainer.max_epochs=1", "~logger.wandb",
           "eval.languages=[en,de,zh]", *SMALL_EVAL, f"hydra.sweep.dir={sweep}"]
    result = subprocess.run(job, capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    runs = {}
    for job_dir in sweep.iterdir():
        if (job_dir / "eval" / "results.json").is_file():
            overrides = (job_dir / ".hydra" / "overrides.yaml").read_text()
            arm = "all" if "arm=all" in overrides else "random"
            seed = 0 if "seed=0" in overrides else 1
            runs[arm, seed] = json.loads((job_dir / "eval" / "results.json").read_text())
    assert set(runs) == {("all", 0), ("all", 1), ("random", 0), ("random", 1)}
    assert runs["all", 0]["unseen"]["languages"] == 1  # de was not trained on

    report = subprocess.run([sys.executable, "-m", "congrad.report", str(sweep), "--no-wandb"],
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    rows = list(csv.DictReader((sweep / "report.csv").open()))
    for row in rows:
        values = [runs[row["arm"], seed][row["group"]][row["metric"]] for seed in (0, 1)]
        assert float(row["mean"]) == pytest.approx(statistics.mean(values), abs=1e-6)
        assert float(row["sd"]) == pytest.approx(statistics.stdev(values), abs=1e-6)
        if row["arm"] == "random":
            base = [runs["all", seed][row["group"]][row["metric"]] for seed in (0, 1)]
            assert float(row["diff"]) == pytest.approx(statistics.mean(values) - statistics.mean(base), abs=1e-6)
    assert {(r["arm"], r["group"]) for r in rows} == {(a, g) for a in ("all", "random") for g in ("seen", "unseen")}
    table = (sweep / "report.md").read_text()
    assert "| all | 2 |" in table and "| random | 2 |" in table and "### unseen languages" in table
    assert (sweep / "report.png").stat().st_size > 0


def test_report_of_a_directory_without_runs_is_a_clear_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "congrad.report", str(tmp_path), "--no-wandb"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "no run with an evaluation" in result.stderr

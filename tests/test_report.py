"""The arms comparison: a real (tiny) multirun over filter arms × seeds with ``+sweep=arms``, collected by
``python -m congrad.report`` into one table whose numbers are checked against the per-run results; then the
same sweep with a job missing, a damaged results.json and a job killed before its end, each named with why."""

import csv
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys

import pytest
from conftest import ROOT, SMALL_EVAL

pytestmark = pytest.mark.slow(seconds=30)


def test_arms_sweep_and_report(tmp_path, capsys):
    from congrad.data.synthetic import make_preference_rows
    from congrad.report import main as report_main
    from congrad.utils.io import write_jsonl

    data = tmp_path / "pairs.jsonl"
    write_jsonl(data, make_preference_rows(["en", "de", "zh"], pairs_per_language=6, seed=5))
    sweep = tmp_path / "sweep"
    job = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        "+sweep=arms",
        "arm=all,random",
        "seed=0,1",
        f"data.path={data}",
        "data.languages=[en,zh]",
        "trainer.max_epochs=1",
        "~logger.wandb",
        "eval.languages=[en,de,zh]",
        *SMALL_EVAL,
        f"hydra.sweep.dir={sweep}",
    ]
    result = subprocess.run(job, capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    runs, dirs = {}, {}
    for job_dir in sweep.iterdir():
        if (job_dir / "eval" / "results.json").is_file():
            overrides = (job_dir / ".hydra" / "overrides.yaml").read_text()
            arm = "all" if "arm=all" in overrides else "random"
            seed = 0 if "seed=0" in overrides else 1
            runs[arm, seed] = json.loads((job_dir / "eval" / "results.json").read_text())
            dirs[arm, seed] = job_dir
    assert set(runs) == {("all", 0), ("all", 1), ("random", 0), ("random", 1)}
    assert runs["all", 0]["unseen"]["languages"] == 1  # de was not trained on

    report = subprocess.run(
        [sys.executable, "-m", "congrad.report", str(sweep), "--no-wandb"], capture_output=True, text=True, timeout=300
    )
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

    # A job that is missing (its directory removed): named, and its arm has fewer seeds than the other.
    # (python -m congrad.report, here to save a process start)
    shutil.rmtree(dirs["random", 1])
    report_main([str(sweep), "--no-wandb"])
    table = (sweep / "report.md").read_text()
    assert "- job #3 (arm=random seed=1): missing: no run directory" in table
    assert "| random | 1 of 2 |" in table and "| all | 2 |" in table
    assert "Arms with fewer seeds than the others: random (no seed 1)." in table
    assert "job #3 (arm=random seed=1): missing" in capsys.readouterr().out, "the console says it too"
    rows = {(r["arm"], r["group"], r["metric"]): r for r in csv.DictReader((sweep / "report.csv").open())}
    for (arm, group, metric), row in rows.items():
        expected = [runs[arm, seed][group][metric] for seed in ((0, 1) if arm == "all" else (0,))]
        assert float(row["mean"]) == pytest.approx(statistics.mean(expected), abs=1e-6), "the finished jobs only"

    # A damaged results.json (cut short) and a job killed before its end (its status file as it was written at
    # its start, no results; its process, the sweep's, has ended): both named with why; without a finished
    # "all" arm there are no ≈ marks. With the pid of a live process the same job may still be running.
    damaged = dirs["all", 0] / "eval" / "results.json"
    damaged.write_text(damaged.read_text()[:40])
    killed = dirs["all", 1]
    (killed / "eval" / "results.json").unlink()
    status = json.loads((killed / "job_status.json").read_text())
    assert status["host"] == socket.gethostname() and status["pid"] != os.getpid()
    (killed / "job_status.json").write_text(json.dumps({**status, "status": None, "message": None, "ended": None}))
    report_main([str(sweep), "--no-wandb"])
    table = (sweep / "report.md").read_text()
    assert f"- {dirs['all', 0].name} (arm=all seed=0): eval/results.json is damaged (" in table
    assert (
        f"- {killed.name} (arm=all seed=1): killed: started {status['started']}, its process {status['pid']} on "
        f"{status['host']} has ended without a status"
    ) in table
    running = {**status, "status": None, "message": None, "ended": None, "pid": os.getpid()}
    (killed / "job_status.json").write_text(json.dumps(running))
    report_main([str(sweep), "--no-wandb"])
    table = (sweep / "report.md").read_text()
    assert (
        f"- {killed.name} (arm=all seed=1): unfinished: started {status['started']}, no status at its end "
        "(still running, or killed)"
    ) in table
    assert "- job #3 (arm=random seed=1): missing" in table
    assert 'No run of the "all" arm finished: the ≈ marks' in table and "≈ |" not in table.split("###")[1]
    assert "| random | 1 |" in table


def test_report_of_a_directory_without_runs_is_a_clear_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "congrad.report", str(tmp_path), "--no-wandb"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "no run with an evaluation" in result.stderr


def test_half_written_runs_are_named_never_a_traceback(tmp_path, capsys):
    """Runs cut off while their files were written: a config that is not YAML any more, a status file cut
    short. Each is named with why; the one finished run makes the table."""
    from congrad.report import main as report_main

    def run(name, config="trainer: {}\nseed: 0\ncallbacks: {congrad: null}\neval: {}\n", status=None, results=None):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "config.yaml").write_text(config)
        if status is not None:
            (tmp_path / name / "job_status.json").write_text(status)
        if results is not None:
            (tmp_path / name / "eval").mkdir()
            (tmp_path / name / "eval" / "results.json").write_text(json.dumps(results))

    run("0", results={"seen": {"win_rate": 0.5}, "unseen": {}})
    run("1", config="trainer: {}\nseed: [0\n")
    run("2", status='{"sweep": "s", "job": 2, "sta')
    report_main([str(tmp_path), "--no-wandb"])
    table = (tmp_path / "report.md").read_text()
    assert "- 1: its .hydra/config.yaml cannot be read (" in table
    assert f"- 2: {tmp_path / '2' / 'job_status.json'} cannot be read (" in table
    assert "| all | 1 | 0.500 |" in table and "Traceback" not in capsys.readouterr().err

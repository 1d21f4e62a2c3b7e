"""One job's failure is that job's alone: in a Hydra multirun every job runs whatever the others did, each
job's status lands in its own directory, and the multirun ends by naming the failed jobs with a non-zero
status; a single run keeps the exit statuses of "Exit codes and resuming"."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow(seconds=15)

APP = ROOT / "tests" / "sweep_app.py"


def app(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(APP), *args], capture_output=True, text=True, timeout=120, env=os.environ.copy()
    )


def status_of(job_dir) -> dict:
    return json.loads((job_dir / "job_status.json").read_text())


@pytest.mark.parametrize("outcome, status", [("ok", 0), ("user", 2), ("diverged", 3), ("fault", 1), ("sigint", 130)])
def test_a_single_run_keeps_its_exit_status(tmp_path, outcome, status):
    result = app(f"+outcome={outcome}", f"hydra.run.dir={tmp_path}")
    assert result.returncode == status, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    if outcome == "fault":  # a bug keeps its traceback
        assert "Traceback" in result.stderr and "KeyError: 'a key that is not there'" in result.stderr
    elif outcome != "ok":
        assert "Traceback" not in result.stderr and lines[-1].startswith("error: ")
    expected = {"user": "error: filter.keep_ratio=1.5", "sigint": "error: interrupted (SIGINT)"}.get(outcome, "")
    assert expected in result.stderr
    assert not (tmp_path / "job_status.json").exists(), "a status file is a multirun's"


def test_every_job_of_a_multirun_runs_and_the_failed_ones_are_named(tmp_path):
    result = app("-m", "+outcome=ok,user,diverged,fault,ok", f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 2, "the status of the first failed job"
    statuses = [status_of(tmp_path / str(n)) for n in range(5)]
    assert [s["status"] for s in statuses] == [0, 2, 3, 1, 0]
    assert [s["job"] for s in statuses] == list(range(5)) and len({s["sweep"] for s in statuses}) == 1
    assert statuses[1]["message"] == "filter.keep_ratio=1.5: must be a number in (0, 1], or null"
    assert statuses[3]["message"] == "KeyError: 'a key that is not there'"
    assert statuses[2]["overrides"] == ["+outcome=diverged"] and statuses[2]["run_dir"] == str(tmp_path / "2")
    job_log = (tmp_path / "3" / "sweep_app.log").read_text()
    assert "Traceback" in job_log and "KeyError" in job_log, "a fault's traceback is in its job's log"
    summary = result.stderr[result.stderr.index("error: 3 of 5 jobs failed") :]
    for job, status, outcome, message in (
        (1, 2, "user", "filter.keep_ratio=1.5: must be"),
        (2, 3, "diverged", "training diverged at step 2"),
        (3, 1, "fault", "KeyError: 'a key that is not there'"),
    ):
        assert f"#{job} status {status}: {message}" in summary
        assert f"overrides: +outcome={outcome}\n" in summary and f"run dir: {tmp_path / str(job)}" in summary
    assert "#0 " not in summary and "#4 " not in summary


def test_ctrl_c_in_a_job_stops_a_sweep_that_runs_in_its_own_process(tmp_path):
    result = app("-m", "+outcome=ok,sigint,ok", f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 130, result.stderr[-2000:]
    assert [status_of(tmp_path / str(n))["status"] for n in range(2)] == [0, 130]
    assert not (tmp_path / "2").exists(), "the jobs after it are not run"
    assert "error: the sweep was stopped in job #1 (status 130); the jobs after it were not run" in result.stderr


def test_a_train_py_sweep_with_a_diverging_middle_job(tmp_path, capsys):
    """Three jobs of ``python train.py -m``; the middle one diverges (lr 1e20). The other two train and save
    their adapters; the multirun names the failed job and exits 3; the report lists every job by name and
    why. (That a failed fit finishes its W&B run and the next one gets its own: test_divergence.py.)"""
    from congrad.data.synthetic import make_preference_rows
    from congrad.report import main as report_main
    from congrad.utils.io import write_jsonl

    data = tmp_path / "pairs.jsonl"
    write_jsonl(data, make_preference_rows(["en", "de"], pairs_per_language=4, seed=1))
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "-m",
            f"data.path={data}",
            "data.batch_size=1",
            "trainer.max_epochs=1",
            "~eval",
            "~logger.wandb",
            "sketch.width=256",
            "callbacks.congrad.progress=false",
            "+trainer.enable_progress_bar=false",
            "dpo.optimizer.lr=1e-4,1e20,2e-4",
            f"hydra.sweep.dir={sweep}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),
    )
    assert result.returncode == 3, (result.stdout + result.stderr)[-3000:]
    for job in ("0", "2"):
        assert (sweep / job / "adapter" / "adapter_model.safetensors").is_file()
        assert status_of(sweep / job)["status"] == 0
    failed = status_of(sweep / "1")
    assert failed["status"] == 3 and failed["message"].startswith("training diverged at step ")
    assert not (sweep / "1" / "adapter").exists()
    summary = result.stderr[result.stderr.index("error: 1 of 3 jobs failed") :]
    assert "#1 status 3: training diverged at step " in summary
    assert "dpo.optimizer.lr=1e+20" in summary and f"run dir: {sweep / '1'}" in summary

    with pytest.raises(SystemExit) as raised:  # python -m congrad.report SWEEP, here to save a process start
        report_main([str(sweep), "--no-wandb"])
    assert raised.value.code == 2
    errors = capsys.readouterr().err
    assert "1 (dpo.optimizer.lr=1e+20): failed with status 3: training diverged at step " in errors
    assert "0 (dpo.optimizer.lr=0.0001): trained without an evaluation (~eval)" in errors

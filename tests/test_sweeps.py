"""Sweeps with ``python train.py -m``: a sweep preset over sketch widths, run by Hydra's basic launcher and
by submitit's local launcher; every job runs the tiny self-rewarding loop in its own directory, and its
W&B run is grouped by sweep and tagged with language set and width; a failing job ends only itself."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow(seconds=50)

ROOT = Path(__file__).resolve().parents[1]
JOB = [
    "+experiment=tiny_self_reward",
    "+sweep=width",
    "iterations=1",
    "data.languages=[en,zh]",
    "self_reward.prompts.per_language=2",
    "self_reward.generation.max_new_tokens=8",
    "trainer.max_epochs=1",
    "~eval",
]


def run_sweep(sweep_dir: Path, *extra: str, status: int = 0) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", *JOB, *extra, f"hydra.sweep.dir={sweep_dir}"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "WANDB_MODE": "offline"},
    )
    assert result.returncode == status, (result.stdout + result.stderr)[-3000:]
    return result


def check_jobs(sweep_dir: Path) -> None:
    groups = set()
    for job, width in (("0", 256), ("1", 512)):
        it = sweep_dir / job / "iteration_1"
        for name in ("generations.jsonl", "pairs.jsonl", "filter/kept.jsonl", "adapter/adapter_config.json"):
            assert (it / name).is_file(), f"{job}: {name}"
        hparams = yaml.safe_load((it / "hparams.yaml").read_text())
        assert hparams["sketch"]["width"] == width
        wandb = hparams["logger"]["wandb"]
        assert {"langset:all", f"width:{width}"} <= set(wandb["tags"])
        groups.add(wandb["group"])
        assert list((it / "wandb").glob("offline-run-*"))
    assert len(groups) == 1 and groups.pop().startswith("tiny_self_reward-sweep-")


def test_multirun_over_two_widths_with_the_basic_launcher(tmp_path):
    result = run_sweep(tmp_path, "sketch.width=256,512")
    assert "Launching 2 jobs locally" in result.stdout + result.stderr
    check_jobs(tmp_path)


def test_multirun_with_the_submitit_local_launcher(tmp_path):
    """Each job in a process of its own; a third job with a width that is no power of two fails alone: its
    status is written in its directory by its own process, and the sweep names it and exits 2."""
    result = run_sweep(
        tmp_path, "hydra/launcher=local", "hydra.launcher.timeout_min=5", "sketch.width=256,512,300", status=2
    )
    check_jobs(tmp_path)
    assert list((tmp_path / ".submitit").glob("*/*_result.pkl"))
    statuses = {job: json.loads((tmp_path / job / "job_status.json").read_text()) for job in ("0", "1", "2")}
    assert [statuses[job]["status"] for job in ("0", "1", "2")] == [0, 0, 2]
    assert statuses["2"]["message"].startswith("sketch.width=300: ")
    assert "error: 1 of 3 jobs failed" in result.stderr and "#2 status 2: sketch.width=300: " in result.stderr

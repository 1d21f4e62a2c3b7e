"""A run directory belongs to one run: train.py's and evaluate.py's are locked while they run (a second run
into one stops at once, naming the process that holds it, before Hydra writes a file there); a directory that
holds another run's results is refused, unless the run resumes it (ckpt_path inside an unfinished run, the
self-rewarding loop in its own directory) or overwrite=true clears it first; evaluate.py never writes into
the run it evaluates."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

from congrad.data.synthetic import make_preference_rows
from congrad.errors import CongradError
from congrad.rundir import RunDirectory, claim
from congrad.utils.fileset import locked_directory
from congrad.utils.io import write_jsonl

pytestmark = pytest.mark.slow(seconds=30)

QUICK = [
    "trainer.max_epochs=1",
    "~eval",
    "data.batch_size=2",
    "sketch.width=256",
    "callbacks.congrad.progress=false",
    "+trainer.enable_progress_bar=false",
    "~logger.wandb",
]


def finished_run(directory: Path) -> Path:
    """``directory`` laid out as a finished train.py run leaves it (the files that mark it, not their content)."""
    for name in ("adapter/adapter_config.json", "checkpoints/last.ckpt", "eval/results.json", ".hydra/config.yaml"):
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text("the earlier run")
    return directory


def claimed(directory, cfg, program="train"):
    """What claiming ``directory`` for ``cfg`` says: None when the run may use it, else the error's line."""
    try:
        claim(directory, cfg, program, {"train": "hydra.run.dir", "evaluate": "output_dir"}[program])
    except CongradError as err:
        return str(err)
    return None


def run_py(script, *overrides, wait=True, env=None):
    args = [sys.executable, str(ROOT / f"{script}.py"), *overrides]
    if not wait:
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    return subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)


def test_a_finished_run_is_refused_and_an_unfinished_one_resumes_in_place(compose_config, tmp_path):
    run = finished_run(tmp_path / "run")
    assert claimed(run, compose_config("train")) == (
        f"hydra.run.dir={run} holds a finished run (adapter/, eval/results.json, checkpoints/last.ckpt): a new run "
        "there would mix its files with that run's; give another directory (without hydra.run.dir= each run gets a "
        "new one), or set overwrite=true to clear it first"
    )
    last = run / "checkpoints" / "last.ckpt"
    assert claimed(run, compose_config("train", [f"ckpt_path={last}"])).startswith(
        f"hydra.run.dir={run} holds a finished run"
    )  # continuing a finished run goes into a new directory
    for done in ("adapter", "eval"):
        (run / done / ("adapter_config.json" if done == "adapter" else "results.json")).unlink()
        (run / done).rmdir()
    assert claimed(run, compose_config("train")) == (  # stopped by a signal: only its checkpoint
        f"hydra.run.dir={run} holds a run that did not finish (checkpoints/last.ckpt): a new run there would mix "
        f"its files with that run's; resume it with ckpt_path={last}, give another directory (without "
        "hydra.run.dir= each run gets a new one), or set overwrite=true to clear it first"
    )
    assert claimed(run, compose_config("train", [f"ckpt_path={last}"])) is None
    assert claimed(run, compose_config("train", [f"ckpt_path={tmp_path / 'other' / 'last.ckpt'}"])) is not None
    assert claimed(tmp_path / "new", compose_config("train")) is None


def test_the_self_rewarding_loop_resumes_in_its_own_directory_and_nothing_else_does(compose_config, tmp_path):
    (tmp_path / "iteration_1" / "adapter").mkdir(parents=True)
    (tmp_path / "iteration_2").mkdir()
    assert claimed(tmp_path, compose_config("train", ["+experiment=tiny_self_reward"])) is None
    assert claimed(tmp_path, compose_config("train")) == (
        f"hydra.run.dir={tmp_path} holds a run that did not finish (iteration_1/, iteration_2/): a new run there "
        "would mix its files with that run's; give another directory (without hydra.run.dir= each run gets a new "
        "one), or set overwrite=true to clear it first"
    )
    (tmp_path / "adapter").mkdir()  # a DPO run's adapter beside: not the loop's directory
    assert claimed(tmp_path, compose_config("train", ["+experiment=tiny_self_reward"])).startswith(
        f"hydra.run.dir={tmp_path} holds a finished run (adapter/, iteration_1/, iteration_2/)"
    )


def test_overwrite_clears_everything_but_the_lock_unless_the_run_reads_from_it(compose_config, tmp_path):
    run = finished_run(tmp_path / "run")
    (run / ".lock").write_text("")
    adapter = run / "adapter"
    (adapter / "adapter_model.safetensors").write_text("weights")
    refused = claimed(run, compose_config("train", ["overwrite=true", f"model.lora.adapter_path={adapter}"]))
    assert refused == (
        f"overwrite=true would clear hydra.run.dir={run}, but {adapter}, which this run reads, is "
        "inside it: give another directory, or move what the run reads out of it"
    )
    assert claimed(
        run, compose_config("train", ["overwrite=true", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"])
    ).startswith("overwrite=true would clear")
    assert (adapter / "adapter_config.json").is_file(), "nothing removed"
    assert claimed(run, compose_config("train", ["overwrite=true"])) is None
    assert [p.name for p in run.iterdir()] == [".lock"]


def test_evaluate_py_refuses_an_earlier_evaluation_and_the_run_it_evaluates(compose_config, tmp_path):
    out = tmp_path / "out"
    (out / "iteration_1").mkdir(parents=True)
    (out / "iteration_1" / "results.json").write_text("{}")
    cfg = compose_config("evaluate", [f"output_dir={out}"])
    assert claimed(out, cfg, "evaluate") == (
        f"output_dir={out} holds a finished run (iteration_1/results.json): a new run there would mix its files "
        "with that run's; give another output_dir, or set overwrite=true to clear it first"
    )
    (out / "cost.json").write_text('{"finished": false}')  # it stopped in iteration 2: the rerun continues it
    assert claimed(out, cfg, "evaluate") is None
    (out / "cost.json").write_text('{"finished": true}')
    assert claimed(out, cfg, "evaluate") is not None
    assert claimed(out, compose_config("evaluate", [f"output_dir={out}", "overwrite=true"]), "evaluate") is None

    run = finished_run(tmp_path / "run")
    before = (run / ".hydra" / "config.yaml").read_bytes()
    result = run_py("evaluate", f"run_dir={run}", f"output_dir={run}/", "overwrite=true")
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: output_dir={run} is the run_dir it evaluates: the evaluation would replace that run's .hydra/ (the "
        "config that describes its training) with its own; give another output_dir"
    )
    assert (run / ".hydra" / "config.yaml").read_bytes() == before and not (run / ".lock").exists()


def test_two_train_py_on_one_directory_and_a_run_into_a_finished_one(tmp_path):
    """As users run them: into a finished run's directory without and with overwrite=true; a second train.py
    while the first holds the directory stops at once naming it, before Hydra writes anything there."""
    run = finished_run(tmp_path / "run")
    data = tmp_path / "pairs.jsonl"
    write_jsonl(data, make_preference_rows(["en", "de"], pairs_per_language=4, seed=1))
    common = [f"hydra.run.dir={run}", f"data.path={data}", *QUICK]

    refused = run_py("train", *common)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
    assert refused.stderr.strip().splitlines()[-1].startswith(f"error: hydra.run.dir={run} holds a finished run")
    assert (run / "eval" / "results.json").read_text() == "the earlier run"

    # a second train.py while a run holds the directory (held here, so the first cannot finish too soon)
    with locked_directory(run, "the test"):
        start = time.time()
        second = run_py("train", *common, "overwrite=true", "seed=7")
        assert second.returncode == 2, second.stderr[-3000:]
        assert (
            second.stderr.strip()
            .splitlines()[-1]
            .startswith(
                f"error: hydra.run.dir={run} is in use by pid {os.getpid()} on {socket.gethostname()}, started "
            )
        )
        assert time.time() - start < 30
    assert (run / "eval" / "results.json").read_text() == "the earlier run", "the refused run wrote nothing"

    first = run_py("train", *common, "overwrite=true", wait=False)
    try:
        deadline = time.time() + 120
        while f"pid {first.pid} " not in ((run / ".lock").read_text() if (run / ".lock").exists() else ""):
            assert first.poll() is None and time.time() < deadline, first.stdout.read()[-3000:]
            time.sleep(0.05)
        with pytest.raises(CongradError, match=f"in use by pid {first.pid} "):  # train.py holds it while it runs
            with locked_directory(run, f"hydra.run.dir={run}"):
                pass
        assert first.wait(timeout=240) == 0, first.stdout.read()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
    assert not (run / "eval").exists(), "cleared: the earlier run's evaluation is gone"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch_000.ckpt", "last.ckpt"]
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    overrides = (run / ".hydra" / "overrides.yaml").read_text()
    assert "overwrite=true" in overrides and "seed=7" not in overrides, "the second run wrote nothing there"


def test_a_multirun_into_a_sweep_directory_with_finished_jobs_is_refused(tmp_path):
    finished_run(tmp_path / "0")
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "sweep_app.py"), "-m", "+outcome=ok,ok", f"hydra.sweep.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: hydra.sweep.dir={tmp_path}: its job directory 0/ holds a finished run (adapter/, eval/results.json, "
        "checkpoints/last.ckpt): a new run there would mix its files with that run's; give another directory, or "
        "set overwrite=true to clear it first"
    )
    assert not (tmp_path / "1").exists() and not (tmp_path / "multirun.yaml").exists()


def test_filter_py_and_other_programs_are_left_alone(compose_config, tmp_path):
    """filter.py locks its output_dir itself; its Hydra run directory holds logs only."""
    from omegaconf import OmegaConf

    finished_run(tmp_path)
    config = OmegaConf.create({"hydra": {"run": {"dir": str(tmp_path)}}})
    callback = RunDirectory()
    callback.on_run_start(config, config_name="filter")
    assert not (tmp_path / ".lock").exists()

"""SIGTERM (how SLURM preempts) and Ctrl-C stop training after the current batch, save a resumable
checkpoint and exit 143 / 130; resuming from it continues with the next batch, in the same order."""

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict

import pytest
import pytorch_lightning as pl
import torch
from conftest import ROOT, wandb_exit_codes

from congrad.data.synthetic import make_preference_rows
from congrad.errors import Interrupted
from congrad.training import fit
from congrad.utils.io import write_jsonl

pytestmark = pytest.mark.slow(seconds=34)

LANGUAGES = ["en", "de", "fr"]
RECORDERS = []


class Served(pl.Callback):
    """Records the pair indices every training batch served; sends ``signum`` to this process after the
    batch at ``global_step == at_step`` (like a user pressing Ctrl-C mid-epoch)."""

    def __init__(self, at_step=None, signum=int(signal.SIGINT)):
        self.at_step, self.signum = at_step, signum
        self.served = defaultdict(list)
        RECORDERS.append(self)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.served[trainer.current_epoch] += batch["index"].tolist()
        if trainer.global_step == self.at_step:
            os.kill(os.getpid(), self.signum)


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    write_jsonl(path, make_preference_rows(LANGUAGES, pairs_per_language=6, seed=2))
    return path


COMMON = ["sketch.width=1024", "~logger", "callbacks.congrad.progress=false"]


def overrides(pairs_file, *extra):
    return [
        f"data.path={pairs_file}",
        "data.batch_size=2",
        "trainer.max_epochs=1",
        *COMMON,
        "+trainer.enable_progress_bar=false",
        "+callbacks.served._target_=test_interrupts.Served",
        *extra,
    ]


def test_ctrl_c_stops_after_the_batch_and_the_resumed_run_serves_the_rest_in_order(
    compose_config, pairs_file, tmp_path
):
    RECORDERS.clear()
    before = signal.getsignal(signal.SIGINT)  # Python's handler; ignored where a shell started us in the background
    fit(compose_config("train", overrides(pairs_file), output_dir=tmp_path / "full"))
    full = RECORDERS[-1].served

    stopped_dir = tmp_path / "stopped"
    with pytest.raises(Interrupted) as raised:
        fit(compose_config("train", overrides(pairs_file, "+callbacks.served.at_step=3"), output_dir=stopped_dir))
    assert raised.value.exit_code == 130 and "interrupted by SIGINT at epoch 0, step 3" in str(raised.value)
    checkpoint = stopped_dir / "checkpoints" / "last.ckpt"
    assert f"ckpt_path={checkpoint}" in str(raised.value)
    assert not (stopped_dir / "adapter").exists(), "no adapter as if training had finished"
    stopped = RECORDERS[-1].served
    assert stopped == {0: full[0][:6]}, "three batches of two, then the stop"
    state = torch.load(checkpoint, weights_only=True)
    assert state["global_step"] == 3 and state["callbacks"]["ConGradCallback"]["kept_for_epoch"] == 0
    assert signal.getsignal(signal.SIGINT) is before, "Ctrl-C is handled again as it was before the run"

    fit(compose_config("train", overrides(pairs_file, f"ckpt_path={checkpoint}"), output_dir=tmp_path / "resumed"))
    resumed = RECORDERS[-1].served
    assert stopped[0] + resumed[0] == full[0], "the rest of epoch 0, nothing twice, nothing left out"
    assert (tmp_path / "resumed" / "adapter" / "adapter_model.safetensors").is_file()


def test_sigterm_to_a_real_run_saves_a_checkpoint_exits_143_and_the_run_resumes(compose_config, pairs_file, tmp_path):
    """Kill ``python train.py`` as SLURM preempts it, once training has started; resume with ckpt_path=. Its
    offline W&B run is finished, with the exit code 143: complete for ``wandb sync``, marked failed."""
    settings = [f"data.path={pairs_file}", "data.batch_size=1", "trainer.max_epochs=2", *COMMON]
    args = [sys.executable, str(ROOT / "train.py"), *[s for s in settings if s != "~logger"], "logger=wandb"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    stopped = tmp_path / "stopped"
    log = open(tmp_path / "stopped.log", "w+")
    process = subprocess.Popen([*args, f"hydra.run.dir={stopped}"], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 240
        while "SIGTERM or Ctrl-C stops after the current batch" not in (tmp_path / "stopped.log").read_text():
            assert process.poll() is None and time.time() < deadline, (tmp_path / "stopped.log").read_text()[-3000:]
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 143, (tmp_path / "stopped.log").read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    output = (tmp_path / "stopped.log").read_text()
    checkpoint = stopped / "checkpoints" / "last.ckpt"
    assert "error: interrupted by SIGTERM at epoch " in output and f"ckpt_path={checkpoint}" in output
    assert "Traceback" not in output
    assert not (stopped / "adapter").exists()
    assert list(wandb_exit_codes(stopped).values()) == [143]
    state = torch.load(checkpoint, weights_only=True)
    assert state["congrad"]["data"]["rows"] > 0 and "ConGradCallback" in state["callbacks"]

    assert state["global_step"] < 2 * state["congrad"]["data"]["rows"], "stopped before the end"

    # the command the message gives, run in-process in the same directory (as a requeued SLURM job with a fixed
    # hydra.run.dir resumes): it finishes the two epochs and replaces last.ckpt, no last-v1.ckpt beside it
    fit(compose_config("train", [*settings, f"ckpt_path={checkpoint}"], output_dir=stopped))
    assert (stopped / "adapter" / "adapter_model.safetensors").is_file()
    assert sorted(p.name for p in (stopped / "checkpoints").iterdir()) == ["epoch_001.ckpt", "last.ckpt"]
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1


def test_sigterm_during_evaluate_py_ends_it_with_143_and_its_wandb_run_finished_as_failed(tmp_path):
    """SIGTERM while ``evaluate.py`` generates (sent by the process to itself at its first batch, as SLURM
    would send it then): one line, exit 143, and the offline W&B run, open since the start, is finished
    with exit code 143 instead of being left unsyncable."""
    out = tmp_path / "out"
    args = [
        sys.executable,
        str(ROOT / "tests" / "faults.py"),
        "generate",
        "1",
        str(ROOT / "evaluate.py"),
        f"output_dir={out}",
        "eval.languages=[en,de]",
        "eval.pairs.enabled=false",
        "eval.nll.enabled=false",
        "eval.harness.enabled=false",
        "eval.win_rate.per_language=1",
        "eval.win_rate.generation.max_new_tokens=4",
        "eval.device=cpu",
    ]
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=300, env={**os.environ, "WANDB_MODE": "offline"}
    )
    assert result.returncode == 143, result.stderr[-3000:]
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: interrupted by SIGTERM during the evaluation into {out}")
    )
    assert "Traceback" not in result.stderr
    assert list(wandb_exit_codes(out).values()) == [143]
    assert not (out / "results.json").exists()

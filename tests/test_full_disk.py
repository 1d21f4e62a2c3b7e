"""Out of space, or a directory that takes nothing: every output of train.py and evaluate.py fails with one
line naming the path and exit 2, and what was written before stays complete. The file systems are real: a
small tmpfs filled to the last byte, a read-only tmpfs (root; see conftest)."""

import os
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, fill

from congrad.data.synthetic import make_preference_rows
from congrad.utils.io import OutputError, write_jsonl

pytestmark = pytest.mark.slow(seconds=30)

QUIET = [
    "~eval",
    "~logger",
    "callbacks.congrad.progress=false",
    "+trainer.enable_progress_bar=false",
    "sketch.width=1024",
    "data.batch_size=4",
]
FULL = "No space left on device"


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    write_jsonl(path, make_preference_rows(["en", "de"], pairs_per_language=6, seed=3))
    return path


def train(*overrides, **popen):
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *QUIET, *overrides],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        **popen,
    )


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr[-4000:]
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def test_a_full_disk_while_checkpointing_leaves_the_last_complete_checkpoint(pairs_file, tmp_path, small_fs):
    """Two epochs, checkpoints on a tmpfs that fills up once the first epoch's last.ckpt is there: the second
    epoch's checkpoint cannot be written. One line names it, exit 2; last.ckpt is the first epoch's, byte for
    byte and loadable, and no partial file is left (Lightning's own writer copies from the system temp dir
    into the destination and leaves a truncated file)."""
    checkpoints = small_fs(4096) / "checkpoints"
    process = train(
        f"data.path={pairs_file}",
        "trainer.max_epochs=2",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"callbacks.model_checkpoint.dirpath={checkpoints}",
    )
    last = checkpoints / "last.ckpt"
    first = None
    while process.poll() is None and first is None:
        if last.exists():
            first = last.read_bytes()
            fill(checkpoints.parent)
        time.sleep(0.02)
    _, stderr = process.communicate(timeout=600)
    assert first is not None, stderr[-4000:]
    assert process.returncode == 2, stderr[-4000:]
    assert error_lines(stderr) == [
        f"error: cannot write {checkpoints / 'epoch_001.ckpt'}: {FULL}; what was there before is unchanged"
    ]
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch_000.ckpt", "last.ckpt"]
    assert last.read_bytes() == first
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 0


def test_a_full_disk_while_saving_the_adapter_leaves_the_previous_one(pairs_file, tmp_path, small_fs):
    adapter = small_fs(1024) / "adapter"
    adapter.mkdir()
    previous = {"adapter_config.json": b'{"r": 8}', "adapter_model.safetensors": b"the previous adapter"}
    for name, content in previous.items():
        (adapter / name).write_bytes(content)
    fill(adapter.parent)
    process = train(
        f"data.path={pairs_file}",
        "trainer.max_epochs=1",
        f"hydra.run.dir={tmp_path / 'run'}",
        "callbacks.model_checkpoint=null",
        f"callbacks.save_pretrained.dirpath={adapter}",
    )
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 2, stderr[-4000:]
    assert error_lines(stderr) == [f"error: cannot write {adapter}: {FULL}; what was there before is unchanged"]
    assert {p.name: p.read_bytes() for p in adapter.iterdir()} == previous
    assert sorted(p.name for p in adapter.parent.iterdir()) == ["adapter", "filler"]  # no temporary left


def test_a_full_disk_while_writing_evaluation_results_leaves_the_previous_ones(tmp_path, small_fs):
    from congrad.evaluation.outputs import write_outputs

    out = small_fs(512) / "eval"
    results = {
        "policy": {"adapters": []},
        "baseline": {"adapters": []},
        "languages": {"de": {"seen": True, "win_rate": 0.5}},
        "seen": {"win_rate": 0.5, "languages": 1},
        "unseen": {},
    }
    write_outputs(out, results, [{"id": "p", "language": "de"}])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    fill(out.parent)
    with pytest.raises(OutputError) as raised:
        write_outputs(out, {**results, "seen": {"win_rate": 0.75, "languages": 1}}, [])
    assert str(raised.value) == f"cannot write {out / 'results.json'}: {FULL}; what was there before is unchanged"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_run_directory_that_takes_nothing_is_one_line_before_hydra_writes_there(read_only_dir, small_fs, tmp_path):
    """train.py's run directory read-only (named with a ~, expanded), evaluate.py's output_dir (its run
    directory) read-only or on a full disk: one line each, exit 2, not Hydra's traceback."""
    full = small_fs(256)
    fill(full)
    home = read_only_dir.parent
    cases = [
        (
            "train.py",
            ["hydra.run.dir='~/read-only/run'", "~eval"],
            f"hydra.run.dir={read_only_dir / 'run'} cannot be created (",
        ),
        ("train.py", [f"hydra.run.dir={read_only_dir}", "~eval"], f"hydra.run.dir={read_only_dir} is not writable ("),
        ("evaluate.py", [f"output_dir={read_only_dir}"], f"output_dir={read_only_dir} is not writable ("),
        ("evaluate.py", [f"output_dir={full}"], f"output_dir={full} is not writable ({FULL})"),
    ]
    for script, overrides, expected in cases:
        done = subprocess.run(
            [sys.executable, str(ROOT / script), *overrides],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "HOME": str(home)},
        )
        assert done.returncode == 2, (script, overrides, done.stderr[-3000:])
        assert done.stderr.startswith(f"error: {expected}") and done.stderr.count("\n") == 1, done.stderr[-3000:]
    assert not (ROOT / "~").exists() and not (tmp_path / "~").exists()

"""The self-rewarding loop under faults, and what its resume reuses: SIGTERM while iteration 2 generates,
judges and trains, each followed by the rerun in the same run directory, ends with the pairs and kept sets
of an uninterrupted run; a damaged ``generations.jsonl`` is generated again, never half-read; generations
made from other prompts or settings are refused by name; ``language_match`` applies when pairing; a missing
adapter of a finished iteration is named. Real ``train.py`` processes, the tiny model, no evaluation."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, wandb_exit_codes

from congrad.errors import CongradError
from congrad.run import train

pytestmark = pytest.mark.slow(seconds=30)

TINY = [
    "+experiment=tiny_self_reward",
    "iterations=2",
    "data.languages=[en,de,zh]",
    "self_reward.prompts.per_language=3",
    "self_reward.generation.num_responses=3",
    "self_reward.generation.max_new_tokens=8",
    "trainer.max_epochs=2",
    "data.batch_size=2",
    "~eval",
    "sketch.width=256",
    "filter.keep_ratio=0.5",
    "filter.min_per_language=1",
    "callbacks.congrad.progress=false",
    "+trainer.enable_progress_bar=false",
]
ITERATION_FILES = (
    "generations.jsonl",
    "pairs.jsonl",
    "filter/epoch_0/kept.jsonl",
    "filter/epoch_1/kept.jsonl",
    "filter/kept.jsonl",
)


def train_py(run_dir: Path, *extra: str, fault: tuple[str, int] | None = None) -> subprocess.CompletedProcess:
    """``python train.py TINY extra hydra.run.dir=run_dir``; with ``fault``, SIGTERM at that point."""
    driver = [str(ROOT / "tests" / "faults.py"), fault[0], str(fault[1])] if fault else []
    return subprocess.run(
        [sys.executable, *driver, str(ROOT / "train.py"), *TINY, *extra, f"hydra.run.dir={run_dir}"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"},
    )


def train_here(run_dir: Path, *extra: str) -> None:
    """The same run in this process."""
    from congrad.utils.project import compose_config

    train(compose_config("train", [*TINY, *extra], output_dir=run_dir))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run: what every interrupted one must end with."""
    run_dir = tmp_path_factory.mktemp("reference")
    train_here(run_dir, "~logger.wandb")
    return run_dir


def started_from(reference: Path, run_dir: Path, *iteration_2: str) -> Path:
    """``run_dir`` holding the reference's finished iteration 1 and the named files of its iteration 2: a run
    that was stopped in iteration 2."""
    shutil.copytree(reference / "iteration_1", run_dir / "iteration_1")
    (run_dir / "iteration_2").mkdir()
    for name in iteration_2:
        if (reference / "iteration_2" / name).is_file():  # (the record is new: code before it wrote none)
            shutil.copy(reference / "iteration_2" / name, run_dir / "iteration_2" / name)
    return run_dir


def same_as(reference: Path, run_dir: Path, names=ITERATION_FILES) -> None:
    for t in (1, 2):
        for name in names:
            path = f"iteration_{t}/{name}"
            assert (run_dir / path).read_bytes() == (reference / path).read_bytes(), path


def test_sigterm_while_generating_judging_and_training_then_reruns_end_as_an_uninterrupted_run(
    reference, tmp_path, caplog
):
    kept = [json.loads(line) for line in (reference / "iteration_2" / "filter" / "kept.jsonl").read_text().splitlines()]
    scored = (reference / "iteration_2" / "filter" / "scores.jsonl").read_text().splitlines()
    assert 0 < len(kept) < len(scored), "a kept set that is a choice"
    run_dir = started_from(reference, tmp_path / "run")
    finished = {p: p.stat().st_mtime_ns for p in (run_dir / "iteration_1").rglob("*") if p.is_file()}
    for point, nth, phase in (
        ("generate", 1, "while generating and judging"),
        ("judge", 1, "while generating and judging"),
        ("train", 2, "while training"),
    ):
        result = train_py(run_dir, fault=(point, nth))
        assert result.returncode == 143, result.stderr[-3000:]
        line = result.stderr.strip().splitlines()[-1]
        assert line.startswith(
            f"error: interrupted by SIGTERM in iteration 2 {phase}: rerun with hydra.run.dir={run_dir} to resume"
        ), line
        assert "Traceback" not in result.stderr
        assert not (run_dir / "iteration_2" / "iteration.json").exists()
        written = (run_dir / "iteration_2" / "generations.jsonl").is_file()
        assert written == (point == "train"), "generations are written once they are judged"
    assert "its generations are reused" in line
    assert list(wandb_exit_codes(run_dir / "iteration_2").values()) == [143], "the stopped fit's W&B run: failed"

    with caplog.at_level("INFO", logger="congrad"):
        train_here(run_dir)  # the rerun, here to save a process start
    assert f"iteration 2: reusing {run_dir / 'iteration_2' / 'generations.jsonl'}" in caplog.text
    assert "iteration 1: finished before, skipped" in caplog.text
    same_as(reference, run_dir)
    assert {p: p.stat().st_mtime_ns for p in finished} == finished, "the finished iteration was not touched"
    reference_of_2 = json.loads((run_dir / "iteration_2" / "iteration.json").read_text())["reference"]
    assert reference_of_2["merged_adapters"] == [str(run_dir / "iteration_1" / "adapter")]
    assert sorted(wandb_exit_codes(run_dir / "iteration_2").values()) == [0, 143]


def test_a_generations_file_cut_short_is_generated_again(reference, tmp_path, caplog):
    """Cut at a line boundary it still parses: the record of what was written tells, the file is generated
    again with the same seed, and the iteration ends as it would have."""
    run_dir = started_from(reference, tmp_path / "run", "generations.jsonl", "generations.meta.json")
    path = run_dir / "iteration_2" / "generations.jsonl"
    path.write_text("".join(path.read_text(encoding="utf-8").splitlines(keepends=True)[:4]), encoding="utf-8")
    with caplog.at_level("WARNING", logger="congrad"):
        train_here(run_dir, "~logger.wandb")
    assert f"{path} is not the file that was written" in caplog.text
    same_as(reference, run_dir)


def test_generations_made_from_other_prompts_or_settings_are_refused_by_name(reference, tmp_path):
    run_dir = started_from(reference, tmp_path / "run", "generations.jsonl", "generations.meta.json")
    before = (run_dir / "iteration_2" / "generations.jsonl").read_bytes()
    edited = tmp_path / "prompts.jsonl"  # the shipped prompts with the first English one reworded
    lines = (ROOT / "data" / "prompts_tiny.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    first_en = next(i for i, line in enumerate(lines) if json.loads(line)["language"] == "en")
    lines[first_en] = json.dumps({**json.loads(lines[first_en]), "prompt": "What is a comet?"}) + "\n"
    edited.write_text("".join(lines), encoding="utf-8")
    for change, named in (
        (f"self_reward.prompts.path={edited}", f"9 from self_reward.prompts.path={edited} now"),
        ("self_reward.prompts.per_language=2", "other prompts: 9 from "),
        ("self_reward.generation.num_responses=2", "self_reward.generation.num_responses=3 then, 2 now"),
        ("judge.min_chars=10", "judge.min_chars=20 then, 10 now"),
    ):
        with pytest.raises(CongradError) as raised:
            train_here(run_dir, "~logger.wandb", change)
        message = str(raised.value)
        assert message.startswith(f"{run_dir / 'iteration_2' / 'generations.jsonl'} was made from other settings")
        assert named in message and "move it and generations.meta.json away" in message
    assert (run_dir / "iteration_2" / "generations.jsonl").read_bytes() == before, "nothing was overwritten"


def test_language_match_applies_when_pairing_so_its_advice_works_in_the_same_directory(tmp_path):
    """The tiny model's answers are in no language: with language_match every response is dropped and the
    iteration stops with "no preference pairs", advising language_match=false; rerun so in the same
    directory, the generations are reused and pairs form."""
    with pytest.raises(CongradError, match="no preference pairs .* self_reward.language_match=false"):
        train_here(tmp_path, "iterations=1", "~logger.wandb", "self_reward.language_match=true")
    generations = tmp_path / "iteration_1" / "generations.jsonl"
    written = generations.stat().st_mtime_ns
    report = json.loads((tmp_path / "iteration_1" / "self_reward.json").read_text())
    assert report["counts"]["total"]["dropped_language"] == report["counts"]["total"]["responses"]
    train_here(tmp_path, "iterations=1", "~logger.wandb", "self_reward.language_match=false")
    assert generations.stat().st_mtime_ns == written, "reused, not generated again"
    assert (tmp_path / "iteration_1" / "iteration.json").is_file()
    report = json.loads((tmp_path / "iteration_1" / "self_reward.json").read_text())
    assert report["counts"]["total"]["pairs"] > 0 and "dropped_language" not in report["counts"]["total"]


def test_a_missing_adapter_of_a_finished_iteration_is_named_with_what_to_do(reference, tmp_path):
    run_dir = started_from(reference, tmp_path / "run")
    shutil.rmtree(run_dir / "iteration_1" / "adapter")
    with pytest.raises(CongradError) as raised:
        train_here(run_dir, "~logger.wandb")
    message = str(raised.value)
    assert message.startswith(
        f"iteration_1 is finished ({run_dir / 'iteration_1' / 'iteration.json'}) but its "
        f"trained adapter {run_dir / 'iteration_1' / 'adapter'} is missing"
    )
    assert f"restore it, or delete {run_dir / 'iteration_1' / 'iteration.json'}" in message


def test_a_rerun_with_the_other_reference_policy_is_refused_before_anything_loads(reference, tmp_path):
    """Finished with reference=previous (iteration 2's reference merges iteration 1's adapter), rerun with
    reference=initial, which would build iteration 3 from π_0 and iteration 2's adapter: refused by name
    (iteration 1, the same under both, passes)."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    with pytest.raises(CongradError) as raised:
        train_here(run_dir, "~logger.wandb", "iterations=3", "self_reward.reference=initial")
    assert str(raised.value).startswith(
        f"iteration_2 is finished ({run_dir / 'iteration_2' / 'iteration.json'}) with "
        "self_reward.reference=previous, but this run has self_reward.reference=initial"
    )
    assert not (run_dir / "iteration_3").exists()

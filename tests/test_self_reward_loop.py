"""The self-rewarding loop end to end on the tiny model: every artifact of every iteration, the reference
chain, and resuming at the first unfinished iteration."""

import json
from pathlib import Path

import pytest

import congrad.selfreward.loop as self_rewarding
from congrad.data.formats import load_preference_rows
from congrad.run import train
from conftest import SMALL_EVAL

pytestmark = pytest.mark.slow(seconds=18)

TINY = [
    "+experiment=tiny_self_reward", "iterations=2", "data.languages=[en,de,zh,ar]",
    "self_reward.prompts.per_language=3", "self_reward.generation.num_responses=3",
    "self_reward.generation.max_new_tokens=12", "trainer.max_epochs=1", "eval.languages=[en,de,zh,ar,fr]",
    *SMALL_EVAL,
]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_two_iterations_leave_every_artifact(compose_config, tmp_path):
    cfg = compose_config("train", TINY, resolve=False)
    train(cfg)
    for t in (1, 2):
        it = tmp_path / f"iteration_{t}"
        generations = read_jsonl(it / "generations.jsonl")
        assert len(generations) == 12 and {g["language"] for g in generations} == {"en", "de", "zh", "ar"}
        assert all(len(g["responses"]) == len(g["scores"]) == 3 for g in generations)
        pairs, report = load_preference_rows(it / "pairs.jsonl")
        assert report.loaded >= 8 and set(report.loaded_by_language) == {"en", "de", "zh", "ar"}
        assert all(row.raw["chosen_score"] > row.raw["rejected_score"] for row in pairs)
        for name in ("scores.jsonl", "kept.jsonl", "summary.json"):
            assert (it / "filter" / name).is_file(), name
        assert 0 < len(read_jsonl(it / "filter" / "kept.jsonl")) <= len(read_jsonl(it / "filter" / "scores.jsonl"))
        assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (it / "adapter").iterdir()}
        summary = json.loads((it / "self_reward.json").read_text())
        assert summary["judge"] == "rule" and "not self-rewarding" in summary["note"]
        assert summary["counts"]["total"]["pairs"] == len(pairs)
        assert list((it / "wandb").glob("offline-run-*")), "one W&B run per iteration"
        results = json.loads((it / "eval" / "results.json").read_text())
        # the prompts' languages were trained on; fr was not
        assert {lang for lang, row in results["languages"].items() if row["seen"]} == {"en", "de", "zh", "ar"}
        assert results["unseen"]["languages"] == 1 and "win_rate" in results["unseen"]
    # the evaluation curve over iterations, in one run of the loggers (CSV here: <run dir>/metrics.csv)
    curve = [line.split(",") for line in (tmp_path / "metrics.csv").read_text().splitlines()]
    column = curve[0].index("eval/seen/win_rate")
    assert [int(row[curve[0].index("step")]) for row in curve[1:] if row[column]] == [1, 2]
    first, second = (json.loads((tmp_path / f"iteration_{t}" / "iteration.json").read_text()) for t in (1, 2))
    assert first["reference"]["merged_adapters"] == []
    assert second["reference"]["merged_adapters"] == [str(tmp_path / "iteration_1" / "adapter")]


def test_a_restarted_run_resumes_at_the_first_unfinished_iteration(compose_config, tmp_path, monkeypatch):
    cfg = compose_config("train", [*TINY, "~logger.wandb"], resolve=False)
    fit = self_rewarding.fit

    def interrupted(icfg, *args, **kwargs):
        if icfg.paths.output_dir.endswith("iteration_2"):
            raise KeyboardInterrupt
        return fit(icfg, *args, **kwargs)

    monkeypatch.setattr(self_rewarding, "fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    first, second = tmp_path / "iteration_1", tmp_path / "iteration_2"
    assert (first / "iteration.json").is_file() and not (second / "iteration.json").exists()
    assert (second / "generations.jsonl").is_file()
    stamps = {p: p.stat().st_mtime_ns for p in (first / "iteration.json", first / "generations.jsonl",
                                                 first / "adapter", second / "generations.jsonl")}

    monkeypatch.setattr(self_rewarding, "fit", fit)
    calls = []
    monkeypatch.setattr(self_rewarding, "generate_and_judge", lambda *a, **k: calls.append(a) or [])
    train(compose_config("train", [*TINY, "~logger.wandb"], resolve=False))
    assert calls == []  # nothing generated again: iteration 1 skipped, iteration 2 reuses its generations
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in stamps.items())
    assert (second / "iteration.json").is_file() and (second / "adapter" / "adapter_model.safetensors").is_file()
    reference = json.loads((second / "iteration.json").read_text())["reference"]
    assert reference["merged_adapters"] == [str(first / "adapter")]

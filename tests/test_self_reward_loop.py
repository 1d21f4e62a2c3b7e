"""The self-rewarding loop end to end on the tiny model: every artifact of every iteration and the reference
chain. (Resuming at the first unfinished iteration, after SIGTERM at each point: test_loop_faults.py.)"""

import json
from pathlib import Path

import pytest
from conftest import SMALL_EVAL

from congrad.data.formats import load_preference_rows
from congrad.run import train

pytestmark = pytest.mark.slow(seconds=20)

TINY = [
    "+experiment=tiny_self_reward",
    "iterations=2",
    "data.languages=[en,de,zh,ar]",
    "self_reward.prompts.per_language=3",
    "self_reward.generation.num_responses=3",
    "self_reward.generation.max_new_tokens=12",
    "trainer.max_epochs=1",
    "eval.languages=[en,de,zh,ar,fr]",
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


def test_new_prompts_each_iteration_and_the_initial_policy_as_reference(compose_config, tmp_path):
    """self_reward.prompts.per_iteration: disjoint slices of the pool; reference=initial: iteration 2 goes on
    training iteration 1's adapter over the unmerged base (π_0 stays the reference), and π_3 is π_0 with
    iteration 2's adapter."""
    overrides = [o for o in TINY if not o.startswith("eval.")] + [
        "self_reward.prompts.per_language=null",
        "self_reward.prompts.per_iteration=2",
        "self_reward.reference=initial",
        "~eval",
    ]
    train(compose_config("train", overrides, resolve=False))
    prompts = [
        {(g["language"], g["prompt"]) for g in read_jsonl(tmp_path / f"iteration_{t}" / "generations.jsonl")}
        for t in (1, 2)
    ]
    assert len(prompts[0]) == len(prompts[1]) == 8 and not prompts[0] & prompts[1]
    first, second = (json.loads((tmp_path / f"iteration_{t}" / "iteration.json").read_text()) for t in (1, 2))
    assert first["reference"]["merged_adapters"] == second["reference"]["merged_adapters"] == []
    assert first["trained_from"] is None and second["trained_from"] == str(tmp_path / "iteration_1" / "adapter")
    # what evaluate.py run_dir=... merges for each iteration's policy: π_0's adapters, then the iteration's
    assert [[*info["reference"]["merged_adapters"], info["adapter"]] for info in (first, second)] == [
        [str(tmp_path / "iteration_1" / "adapter")],
        [str(tmp_path / "iteration_2" / "adapter")],
    ]

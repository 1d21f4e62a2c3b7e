"""The cost meter: stages are exclusive (a stage inside another stops the outer clock), everything is
counted into the innermost recording, the loop's total sums its iterations, and a failed run still leaves
its cost.json."""

import json
import time

import pytest

from congrad.utils import cost


def test_nested_stages_are_exclusive_and_add_up_to_the_wall_time():
    with cost.recording(None) as meter:
        with cost.stage("train"):
            time.sleep(0.05)
            with cost.stage("sketch"):
                time.sleep(0.1)
                cost.add_sketched(7)
            time.sleep(0.05)
            with cost.stage("evaluate"):
                cost.add_tokens(5)
        cost.add_tokens(2)  # outside every stage
        cost.add_judge_requests(sent=3, cached=4, retried=1)
        snapshot = meter.snapshot()
    seconds = snapshot["seconds"]
    assert seconds["train"] == pytest.approx(0.1, abs=0.03) and seconds["sketch"] == pytest.approx(0.1, abs=0.03)
    assert sum(seconds[s] for s in cost.STAGES) + seconds["other"] == pytest.approx(seconds["total"], abs=0.002)
    assert snapshot["sketch_to_train"] == pytest.approx(seconds["sketch"] / seconds["train"], rel=0.01)
    assert snapshot["tokens_generated"] == {"generate": 0, "judge": 0, "evaluate": 5, "other": 2, "total": 7}
    assert snapshot["judge_requests"] == {"sent": 3, "cached": 4, "retried": 1, "probes": 0}
    assert (snapshot["pairs_sketched"], snapshot["sketch_passes"]) == (7, 1)
    cost.add_tokens(1)  # no recording open: counted nowhere, no error
    assert cost.current() is None


def test_the_total_sums_the_parts_and_recomputes_the_ratio():
    def part(train, sketch, sent):
        return cost.summarize(
            {"train": train, "sketch": sketch}, train + sketch + 1.0, {"generate": 10}, {"sent": sent}, 100, 2
        )

    summed = cost.total([part(4.0, 1.0, 3), part(6.0, 4.0, 5)])
    assert summed["seconds"]["train"] == 10.0 and summed["seconds"]["total"] == 17.0
    assert summed["seconds"]["other"] == 2.0 and summed["sketch_to_train"] == 0.5  # (1 + 4) / (4 + 6)
    assert summed["judge_requests"]["sent"] == 8 and summed["pairs_sketched"] == 200 and summed["parts"] == 2
    assert cost.summarize({}, 1.0, {}, {}, 0, 0)["sketch_to_train"] is None  # no training: no ratio


def test_a_failed_run_still_writes_its_cost(tmp_path):
    path = tmp_path / "cost.json"
    with pytest.raises(RuntimeError), cost.recording(path):
        with cost.stage("judge"):
            cost.add_judge_requests(sent=2)
            raise RuntimeError("the judge server died")
    written = json.loads(path.read_text())
    assert written["finished"] is False and written["judge_requests"]["sent"] == 2
    assert set(cost.metrics(written)) >= {"cost/seconds/judge", "cost/judge_requests/sent", "cost/pairs_sketched"}

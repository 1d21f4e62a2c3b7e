"""`python train.py` as a user runs it: the tiny default learns the preferences, logs to W&B (offline) and
CSV, filters with ConGrad every epoch, saves a loadable adapter, and resumes from its checkpoint."""

import csv
import json
import os
import stat
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, SMALL_EVAL

pytestmark = pytest.mark.slow(seconds=180)


def run_train(run_dir, *overrides):
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={run_dir}", *overrides],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def metric(rows, name):
    return [(int(r["step"]), float(r[name])) for r in rows if r.get(name)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    run_train(run_dir, "trainer.max_epochs=3", "trainer.log_every_n_steps=1")
    return run_dir


def read_metrics(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_the_default_run_learns_the_preferences(run_dir):
    rows = read_metrics(run_dir)
    loss = [v for _, v in metric(rows, "train/loss")]
    accuracy = [v for _, v in metric(rows, "train/rewards/accuracies")]
    # step 0 is the reference point: loss log 2, implicit rewards 0, no pair "won" yet
    assert loss[0] == pytest.approx(0.6931, abs=1e-3) and accuracy[0] == 0.0
    k = 10
    assert sum(loss[-k:]) / k < 0.5, loss
    assert sum(accuracy[-k:]) / k > 0.8, accuracy
    val_loss = [v for _, v in metric(rows, "val/loss")]
    val_margin = [v for _, v in metric(rows, "val/rewards/margins")]
    assert len(val_loss) == 3 and val_loss[-1] < val_loss[0] < 0.6931
    assert val_margin[-1] > val_margin[0] > 0


def test_metric_names_follow_trl_overall_and_per_language(run_dir):
    names = set(read_metrics(run_dir)[0].keys())
    for stage in ("train", "val"):
        for name in (
            "rewards/chosen",
            "rewards/rejected",
            "rewards/margins",
            "rewards/accuracies",
            "logps/chosen",
            "logps/rejected",
        ):
            assert f"{stage}/{name}" in names and f"{stage}/{name}/de" in names and f"{stage}/{name}/zh" in names
    assert {"filter/kept/de", "filter/score_mean/hi", "filter/kept"} <= names
    assert {"train/logits/chosen", "train/logits/rejected", "train/num_tokens", "val/logits/chosen"} <= names


def test_wandb_offline_run_and_filter_files(run_dir):
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    for name in ("scores.jsonl", "kept.jsonl", "summary.json", "conflict.png"):
        assert (run_dir / "filter" / name).is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_truncation_counts_are_in_the_data_report_and_logged_once(run_dir):
    truncated = json.loads((run_dir / "data_report.json").read_text())["truncated"]
    assert truncated["pairs"] == 480 and len(truncated["by_language"]) == 12
    assert sum(counts["lost_eos"] for counts in truncated["by_language"].values()) == truncated["lost_eos"]
    logged = [r for r in read_metrics(run_dir) if r.get("data/truncated/lost_eos")]
    assert len(logged) == 1
    for part in ("prompt", "chosen", "rejected", "lost_eos"):
        assert float(logged[0][f"data/truncated/{part}"]) == truncated[part]
    assert float(logged[0]["data/truncated/lost_eos/de"]) == truncated["by_language"]["de"]["lost_eos"]


def test_the_adapter_loads_with_peft(run_dir):
    from peft import PeftModel
    from transformers import AutoTokenizer

    from congrad.models.factory import build_tiny_llama

    adapter = run_dir / "adapter"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    umask = os.umask(0)
    os.umask(umask)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in (*adapter.iterdir(), run_dir / "checkpoints")}
    assert modes == {**{name: 0o666 & ~umask for name in modes}, "checkpoints": 0o777 & ~umask}, modes  # as any output
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    base = build_tiny_llama(tokenizer, init_seed=0)  # the default seed rebuilds the same frozen base
    ids = tokenizer("Wie entsteht ein Regenbogen?", return_tensors="pt").input_ids
    with torch.no_grad():
        base_logits = base(ids).logits
        tuned = PeftModel.from_pretrained(base, adapter)
        assert not torch.allclose(tuned(ids).logits, base_logits, atol=1e-4)


def test_ckpt_path_resumes_where_the_run_stopped(run_dir, tmp_path):
    run_train(tmp_path, "trainer.max_epochs=4", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", "~eval")
    epochs = {int(r["epoch"]) for r in read_metrics(tmp_path) if r.get("epoch")}
    assert epochs == {3}
    # the token count goes on from the checkpoint's
    before = [v for _, v in metric(read_metrics(run_dir), "train/num_tokens")]
    after = [v for _, v in metric(read_metrics(tmp_path), "train/num_tokens")]
    assert before[-1] < after[0] < 2 * before[-1]


def test_the_run_is_evaluated_against_its_starting_point(run_dir):
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    assert set(results) == {"policy", "baseline", "languages", "harness", "seen", "unseen"}
    assert len(results["languages"]) == 12 and all(row["seen"] for row in results["languages"].values())
    assert results["unseen"] == {} and results["seen"]["languages"] == 12
    # trained three epochs on the tiny set, the policy ranks held-out pairs (other topics) better than chance
    assert results["seen"]["preference_accuracy"] > 0.6
    # the shipped multiple-choice task through lm-eval, on the trained policy and on the model it started from
    assert set(results["harness"]) == {f"congrad_mc_{lang}" for lang in results["languages"]}
    assert all(t["n"] == 16 and t["metric"] == "acc_norm" for t in results["harness"].values())
    assert results["seen"]["mc_n"] == 12 * 16
    for name in ("per_language.csv", "generations.jsonl", "per_language.png", "harness.csv", "harness.png"):
        assert (run_dir / "eval" / name).is_file()
    names = set(read_metrics(run_dir)[0].keys())
    assert {
        "eval/seen/win_rate",
        "eval/seen/preference_accuracy",
        "eval/win_rate/de",
        "eval/nll_delta/zh",
        "eval/seen/mc_delta",
        "eval/mc_delta/de",
        "eval/harness/congrad_mc_de/delta",
    } <= names


def test_evaluate_py_takes_a_run_directory(run_dir, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "evaluate.py"),
            f"run_dir={run_dir}",
            f"output_dir={tmp_path}",
            "~logger",
            "eval.languages=[de,zh]",
            *SMALL_EVAL,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["policy"]["adapters"] == [str(run_dir / "adapter")]
    assert set(results["languages"]) == {"de", "zh"} and results["seen"]["languages"] == 2  # from data_report.json
    assert {name: task["n"] for name, task in results["harness"].items()} == {"congrad_mc_de": 1, "congrad_mc_zh": 1}
    assert "win_rate" in result.stdout  # the table is printed


def test_cost_json_splits_the_run_by_stage_and_the_loggers_get_the_same_numbers(run_dir):
    spent = json.loads((run_dir / "cost.json").read_text())
    seconds = spent["seconds"]
    assert spent["finished"] and all(seconds[stage] > 0 for stage in ("sketch", "train", "evaluate"))
    assert seconds["generate"] == seconds["judge"] == 0  # no self-rewarding loop in the default run
    assert spent["sketch_to_train"] == pytest.approx(seconds["sketch"] / seconds["train"], rel=1e-3)
    candidates = json.loads((run_dir / "filter" / "summary.json").read_text())["total"]
    assert spent["sketch_passes"] == 3 and spent["pairs_sketched"] == 3 * candidates  # before each of 3 epochs
    assert spent["tokens_generated"]["evaluate"] > 0 and spent["judge_requests"]["sent"] == 0  # the rule judge
    logged = {
        name: float(value)
        for row in read_metrics(run_dir)
        for name, value in row.items()
        if name.startswith("cost/") and value
    }
    for stage in ("sketch", "train", "evaluate"):
        assert logged[f"cost/seconds/{stage}"] == seconds[stage]
    assert logged["cost/pairs_sketched"] == spent["pairs_sketched"]

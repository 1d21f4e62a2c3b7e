"""Evaluation against its oracles: a policy compared with itself ties everywhere (win rate exactly 0.5), a
judge that always prefers the first position gives 0.5 once the order is swapped, preference accuracy
rises on pairs the policy was trained toward, the bootstrap CI covers the true rate at about its nominal
frequency; and the results' shape, the seen/unseen split, switched-off parts, bad settings."""

import json
import math
import random

import pytest
import torch
from omegaconf import OmegaConf

from congrad.errors import ConfigError
from congrad.evaluation import metrics
from congrad.evaluation.evaluator import Evaluator
from congrad.evaluation.outputs import write_outputs
from congrad.judging.rule import RuleJudge
from congrad.judging.verdicts import FIRST, SECOND, TIE, majority, parse_winner

LANGS = ["de", "zh", "ar"]
SMALL = [
    f"eval.languages=[{','.join(LANGS)}]",
    "eval.pairs.per_language=3",
    "eval.win_rate.per_language=2",
    "eval.win_rate.generation.max_new_tokens=6",
    "eval.nll.per_language=2",
    "eval.harness.limit=2",
    "eval.win_rate.bootstrap=200",
    "eval.device=cpu",
]
PER_LANGUAGE_KEYS = {
    "seen",
    "n_pairs",
    "preference_accuracy",
    "preference_ties",
    "reward_margin",
    "win_rate",
    "win_rate_ci",
    "wins",
    "ties",
    "losses",
    "unjudged",
    "language_fidelity",
    "nll_delta",
    "mc_accuracy",
    "mc_accuracy_baseline",
    "mc_delta",
    "mc_n",
}


class FirstPositionJudge:
    """A judge with total position bias: whatever it is shown first wins."""

    def compare(self, comparisons, policy=None):
        return [FIRST] * len(comparisons)


@pytest.fixture
def eval_cfg(compose_config, tmp_path):
    def make(*overrides):
        return compose_config("evaluate", [*SMALL, *overrides], output_dir=tmp_path)

    return make


def evaluate(cfg, judge, adapters=(), seen=None, policy=None):
    evaluator = Evaluator(cfg, judge, cfg.paths.output_dir)
    tokenizer, model = policy or evaluator.policy(list(adapters))
    return evaluator.evaluate(tokenizer, model, {"adapters": list(adapters)}, seen)


# ---- pure metrics -------------------------------------------------------------------------------------
def test_outcomes_and_win_rate_by_hand():
    assert metrics.policy_outcome(FIRST, policy_shown_first=True) == metrics.WIN
    assert metrics.policy_outcome(FIRST, policy_shown_first=False) == metrics.LOSS
    assert metrics.policy_outcome(SECOND, policy_shown_first=False) == metrics.WIN
    assert metrics.policy_outcome(TIE, True) == TIE and metrics.policy_outcome(None, True) is None
    # 3 wins, 2 ties, 1 loss: (3 + 1) / 6
    assert metrics.win_rate([metrics.WIN] * 3 + [TIE] * 2 + [metrics.LOSS]) == pytest.approx(4 / 6)


def test_verdict_parsing_and_majority():
    assert parse_winner("A is clearer.\nWinner: B") == SECOND
    assert parse_winner("**Winner:** a") == FIRST and parse_winner("the winner is tie") == TIE
    assert parse_winner("I cannot decide.") is None
    assert majority([FIRST, FIRST, SECOND]) == FIRST
    assert majority([FIRST, SECOND, None]) == TIE and majority([None, None]) is None


def test_preference_stats_and_macro_means():
    stats = metrics.preference_stats(torch.tensor([0.5, -0.25, 0.0, 1.0]))
    assert stats == {"n_pairs": 4, "preference_accuracy": 0.5, "preference_ties": 1, "reward_margin": 0.3125}
    per_language = {
        "de": {"seen": True, "win_rate": 0.25, "wins": 1, "win_rate_ci": [0, 1]},
        "fr": {"seen": True, "win_rate": 0.75, "wins": 3, "win_rate_ci": [0, 1]},
    }
    assert metrics.macro(per_language, ["de", "fr"]) == {"win_rate": 0.5, "wins": 4.0, "languages": 2}
    # a language without held-out prompts, and one without any row: the means are over the others, and say so
    per_language["fr"] = {"seen": True, "nll_delta": 0.5}
    assert metrics.macro(per_language, ["de", "fr", "sw"]) == {
        "win_rate": 0.25,
        "wins": 1.0,
        "nll_delta": 0.5,
        "languages": 3,
        "missing": {
            "win_rate": ["fr", "sw"],
            "wins": ["fr", "sw"],
            "win_rate_ci": ["fr", "sw"],
            "nll_delta": ["de", "sw"],
        },
    }


def test_bootstrap_ci_covers_the_true_rate_at_its_nominal_frequency():
    """Simulated prompts: each judged twice, outcomes drawn with a known expected value; the 95% CI of 3
    languages × 30 prompts should hold the true macro rate in about 95% of 400 seeded repetitions."""
    rng = random.Random(7)
    true_rates = [0.35, 0.55, 0.7]
    cover = 0
    reps = 400
    for rep in range(reps):
        groups = []
        for p in true_rates:  # win with p - 0.1, tie with 0.2, loss otherwise: expected value p

            def draw(p=p):
                u = rng.random()
                return metrics.WIN if u < p - 0.1 else TIE if u < p + 0.1 else metrics.LOSS

            groups.append([[draw(), draw()] for _ in range(30)])
        low, high = metrics.bootstrap_ci(groups, n_boot=300, seed=rep)
        cover += low <= sum(true_rates) / len(true_rates) <= high
    assert 0.89 <= cover / reps <= 0.99, cover / reps


# ---- the evaluator on the tiny model --------------------------------------------------------------------
def test_a_policy_against_itself_ties_everywhere(eval_cfg):
    results, generations = evaluate(eval_cfg(), RuleJudge())
    for lang in LANGS:
        row = results["languages"][lang]
        assert set(row) == PER_LANGUAGE_KEYS
        assert row["win_rate"] == 0.5 and row["ties"] == 4 and row["wins"] == row["losses"] == 0
        assert row["win_rate_ci"] == [0.5, 0.5]
        assert row["preference_accuracy"] == 0.0 and row["preference_ties"] == row["n_pairs"] == 3
        assert row["nll_delta"] == 0.0 and row["mc_accuracy"] == row["mc_accuracy_baseline"] and row["mc_delta"] == 0
        assert row["mc_n"] == 2 and results["harness"][f"congrad_mc_{lang}"]["delta"] == 0.0
    assert all(g["policy"] == g["baseline"] for g in generations) and len(generations) == 2 * len(LANGS)
    assert results["seen"]["win_rate"] == 0.5 and results["seen"]["languages"] == 3 and results["unseen"] == {}


def test_a_judge_that_prefers_the_first_position_gives_half_after_the_swap(eval_cfg, tmp_path):
    cfg = eval_cfg("eval.pairs.enabled=false", "eval.nll.enabled=false", "eval.harness.enabled=false")
    results, generations = evaluate(cfg, FirstPositionJudge(), seen=["de"])
    for row in results["languages"].values():
        assert row["win_rate"] == 0.5 and row["wins"] == row["losses"] == 2 and row["ties"] == 0
    assert all(g["outcomes"] == [metrics.WIN, metrics.LOSS] for g in generations)
    # seen and unseen split; switched-off parts leave no metric behind
    assert results["languages"]["de"]["seen"] and not results["languages"]["zh"]["seen"]
    assert results["seen"]["languages"] == 1 and results["unseen"]["languages"] == 2
    absent = {"n_pairs", "preference_accuracy", "nll_delta", "mc_accuracy", "mc_n"}
    assert not absent & set(results["languages"]["de"]) and not absent & set(results["unseen"])
    write_outputs(tmp_path / "out", results, generations)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(saved) == {"policy", "baseline", "languages", "seen", "unseen"} and saved == results
    header = (tmp_path / "out" / "per_language.csv").read_text().splitlines()[0].split(",")
    assert header[:2] == ["language", "seen"] and "win_rate" in header and "nll_delta" not in header
    assert (tmp_path / "out" / "per_language.png").stat().st_size > 0
    assert not (tmp_path / "out" / "harness.csv").exists() and "harness" not in saved
    assert len((tmp_path / "out" / "generations.jsonl").read_text().splitlines()) == len(generations)


def test_preference_accuracy_rises_on_pairs_the_policy_was_trained_toward(eval_cfg):
    """A few DPO steps on the held-out pairs themselves: afterwards the implicit reward ranks their chosen
    answers first (before training every pair is an exact tie: accuracy 0)."""
    from congrad.evaluation.evaluator import model_config
    from congrad.models.factory import build_policy
    from congrad.training import build_pieces

    cfg = eval_cfg(
        "eval.win_rate.enabled=false",
        "eval.nll.enabled=false",
        "eval.harness.enabled=false",
        "data.path=${eval.pairs.path}",
        "data.val_fraction=0",
        "data.languages=[de,zh,ar]",
        "dpo.optimizer.lr=5e-3",
        "dpo.scheduler=null",
    )
    OmegaConf.resolve(cfg)
    torch.manual_seed(0)
    pieces = build_pieces(cfg)
    module = pieces.module
    optimizer = module.configure_optimizers()
    module.train()
    for _ in range(3):
        for batch in pieces.datamodule.candidate_dataloader(16):
            optimizer.zero_grad()
            module.pair_losses(batch)["loss"].mean().backward()
            optimizer.step()
    before, _ = evaluate(cfg, RuleJudge())
    after, _ = evaluate(cfg, RuleJudge(), policy=(pieces.tokenizer, module.policy))
    for lang in LANGS:
        assert before["languages"][lang]["preference_accuracy"] == 0.0
        assert after["languages"][lang]["preference_accuracy"] == 1.0
        assert after["languages"][lang]["reward_margin"] > 0
    assert model_config(cfg.model, ["x"]).lora is None and build_policy  # the evaluated policy has no fresh LoRA


def test_a_missing_file_or_language_is_an_error_naming_the_key(eval_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"eval\.nll\.path"):
        Evaluator(eval_cfg(f"eval.nll.path={tmp_path / 'missing.jsonl'}"), RuleJudge(), tmp_path)
    with pytest.raises(ConfigError, match=r"eval\.languages: no evaluation rows for xh"):
        Evaluator(eval_cfg("eval.languages=[de,xh]"), RuleJudge(), tmp_path)


def test_a_seen_language_without_rows_is_an_error_like_one_in_eval_languages(eval_cfg, tmp_path):
    with pytest.raises(ConfigError) as raised:
        Evaluator(eval_cfg("eval.seen=[de,sw]"), RuleJudge(), tmp_path)
    assert str(raised.value) == "eval.seen: no evaluation rows for sw (languages with rows: ar, de, zh)"


def test_a_seen_mean_over_fewer_languages_than_the_group_says_so(eval_cfg, tmp_path):
    """Held-out prompts only in de (pairs in de, zh, ar): the seen win rate is de's, with its CI, and the
    results and the table name zh and ar as the languages it leaves out; a seen language the run trained on
    but that has no evaluation rows at all (sw, from the run, not from eval.seen) is missing from every mean."""
    from congrad.evaluation.outputs import table

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "p1", "prompt": "Wie spät ist es?", "language": "de"}\n', encoding="utf-8")
    cfg = eval_cfg(
        f"eval.win_rate.path={prompts}", "eval.nll.enabled=false", "eval.harness.enabled=false", "eval.languages=null"
    )  # every language of the files (with eval.languages, only those count)
    results, _ = evaluate(cfg, RuleJudge(), seen=["de", "zh", "ar", "sw"])
    seen = results["seen"]
    assert seen["win_rate"] == results["languages"]["de"]["win_rate"]
    assert seen["win_rate_ci"] == results["languages"]["de"]["win_rate_ci"]
    assert seen["languages"] == 4 and seen["n_pairs"] == 9
    assert seen["missing"]["win_rate"] == seen["missing"]["win_rate_ci"] == ["ar", "sw", "zh"]
    assert seen["missing"]["preference_accuracy"] == ["sw"]
    lines = table(results).splitlines()
    assert "seen: preference_accuracy, reward_margin over 3 of 4 languages (none for sw)" in lines
    assert "seen: win_rate, language_fidelity over 1 of 4 languages (none for ar, sw, zh)" in lines


def test_macro_ci_is_nan_free_and_ordered(eval_cfg):
    results, _ = evaluate(
        eval_cfg("eval.pairs.enabled=false", "eval.nll.enabled=false", "eval.harness.enabled=false"), RuleJudge()
    )
    low, high = results["seen"]["win_rate_ci"]
    assert not math.isnan(low) and low <= results["seen"]["win_rate"] <= high

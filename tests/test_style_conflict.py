"""The generator's group-wise style rules (a set whose languages conflict) and the study's shipped data: the
default outputs stay byte for byte what they were, the rules hold row by row, the study files are the
generator's output and their held-out rows share no prompt with any training row."""

import json
from pathlib import Path

import pytest

from congrad.data import eval_sets, synthetic
from congrad.data.synthetic import load_templates, make_preference_rows
from congrad.errors import CongradError

DATA = Path(__file__).resolve().parents[1] / "data"
SEEN = ["en", "de", "fr", "es", "ru", "zh", "hi", "ar"]
VERBOSE, CONCISE = ["en", "de", "ru", "zh"], ["fr", "es", "hi", "ar"]
STYLE_ARGS = ["--verbose-languages", *VERBOSE, "--concise-languages", *CONCISE]


def _text(field) -> str:
    return field if isinstance(field, str) else field[-1]["content"]


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


def test_planted_set_is_still_the_generator_output_without_style(tmp_path):
    out = tmp_path / "planted.jsonl"
    synthetic.main(
        [
            "--out",
            str(out),
            "--languages",
            *SEEN,
            "--pairs-per-language",
            "16",
            "--flip-fraction",
            "0.25",
            "--flip-languages",
            "de",
            "ru",
            "hi",
        ]
    )
    assert out.read_bytes() == (DATA / "planted_8lang.jsonl").read_bytes()


def test_style_rules_hold_row_by_row_and_flips_fall_on_quality_pairs():
    style = {"en": "verbose", "de": "concise"}
    rows = make_preference_rows(
        ["en", "de", "fr"], 16, seed=3, flip_fraction=0.125, flip_languages=["en", "de"], style=style, style_share=0.5
    )
    plain = make_preference_rows(["fr"], 16, seed=3, flip_fraction=0.125, flip_languages=["en", "de"])
    assert [r for r in rows if r["language"] == "fr"] == plain  # a language without a rule is unchanged
    for lang, rule in style.items():
        t = load_templates()[lang]
        longest, shortest = max(t.answers, key=len), min(t.answers, key=len)
        preferred, other = (longest, shortest) if rule == "verbose" else (shortest, longest)
        facts = {fact for _, fact in t.topics.values()}
        mine = [r for r in rows if r["language"] == lang]
        assert sum(r["contrast"] == "style" for r in mine) == 8
        assert sum(r["flipped"] for r in mine) == 2
        for r in mine:
            good, bad = (
                (_text(r["rejected"]), _text(r["chosen"]))
                if r["flipped"]
                else (_text(r["chosen"]), _text(r["rejected"]))
            )
            fact = next(f for f in facts if f in good)
            assert good == preferred.format(fact=fact)
            if r["contrast"] == "style":
                assert not r["flipped"] and bad == other.format(fact=fact)
            else:
                assert fact not in bad  # a failure mode, not the other style of the same answer


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"style": {"en": "long"}}, "en=long"),
        ({"style": {"en": "verbose"}, "style_share": 1.5}, "style_share"),
    ],
)
def test_bad_style_settings_are_errors_naming_the_value(kwargs, message):
    with pytest.raises(CongradError, match=message):
        make_preference_rows(["en"], 4, **kwargs)


def test_a_language_given_both_rules_is_an_error():
    with pytest.raises(CongradError, match="de"):
        synthetic.style_rules(["en", "de"], ["de"])


def test_conflict_sets_are_the_generator_output(tmp_path):
    train = tmp_path / "conflict.jsonl"
    synthetic.main(
        [
            "--out",
            str(train),
            "--languages",
            *SEEN,
            "--pairs-per-language",
            "16",
            "--flip-fraction",
            "0.125",
            "--flip-languages",
            "de",
            "ru",
            "hi",
            *STYLE_ARGS,
            "--style-share",
            "0.5",
        ]
    )
    assert train.read_bytes() == (DATA / "conflict_8lang.jsonl").read_bytes()
    eval_sets.main(["--out", str(tmp_path / "eval"), "--sets", "pairs", *STYLE_ARGS, "--style-share", "1.0"])
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["pairs.jsonl"]
    assert (tmp_path / "eval" / "pairs.jsonl").read_bytes() == (DATA / "eval_conflict" / "pairs.jsonl").read_bytes()


def test_default_eval_sets_are_unchanged_by_the_options(tmp_path):
    eval_sets.main(["--out", str(tmp_path)])
    for name in ("pairs", "prompts", "reference_texts", "multiple_choice"):
        assert (tmp_path / f"{name}.jsonl").read_bytes() == (DATA / "eval" / f"{name}.jsonl").read_bytes()


def test_held_out_rows_of_the_study_share_no_prompt_or_answer_with_training_rows():
    train = _read(DATA / "planted_8lang.jsonl") + _read(DATA / "conflict_8lang.jsonl")
    prompts = {_text(r["prompt"]) for r in train}
    answers = {_text(r[k]) for r in train for k in ("chosen", "rejected")}
    held_out = _read(DATA / "eval" / "pairs.jsonl") + _read(DATA / "eval_conflict" / "pairs.jsonl")
    assert not prompts & {_text(r["prompt"]) for r in held_out}
    assert not prompts & {r["prompt"] for r in _read(DATA / "eval" / "prompts.jsonl")}
    assert not answers & {r["text"] for r in _read(DATA / "eval" / "reference_texts.jsonl")}
    chosen = {_text(r["chosen"]) for r in held_out}
    assert not answers & chosen  # held-out correct answers are about held-out topics

"""Truncation is counted in the datamodule's report, warned about when many pairs lose their end of
sequence, and the default config fits the shipped data."""

import logging
from pathlib import Path

import hydra
import pytest

from congrad.data.datamodule import PreferenceDataModule
from congrad.data.synthetic import make_preference_rows
from congrad.models.tokenizer import build_tiny_tokenizer
from congrad.utils.io import write_jsonl

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "tiny_multilingual.jsonl"
PARTS = ("prompt", "chosen", "rejected", "lost_eos")


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    write_jsonl(path, make_preference_rows(["en", "de", "zh", "ar"], pairs_per_language=10, seed=1))
    return path


def served_truncation(tokenizer, dm):
    """Counts from what the datamodule serves, by a plain loop: a completion was cut iff it no longer ends
    with eos (every completion is encoded with one); a prompt was cut iff it differs from the template's
    rendering of the prompt."""
    eos = tokenizer.eos_token_id
    counts = {"pairs": 0, **dict.fromkeys(PARTS, 0)}
    by_language = {}
    features = dm._train_features + dm._val_features
    rows = dm.train_rows + dm.val_rows
    for feature, row in zip(features, rows):
        messages = row.prompt if isinstance(row.prompt, list) else [{"role": "user", "content": row.prompt}]
        prompt_text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        cut = {
            "prompt": feature["prompt_ids"] != tokenizer(prompt_text, add_special_tokens=False)["input_ids"],
            "chosen": feature["chosen_ids"][-1] != eos,
            "rejected": feature["rejected_ids"][-1] != eos,
        }
        cut["lost_eos"] = cut["chosen"] or cut["rejected"]
        for target in (counts, by_language.setdefault(row.language, {"pairs": 0, **dict.fromkeys(PARTS, 0)})):
            target["pairs"] += 1
            for part in PARTS:
                target[part] += cut[part]
    return counts, by_language


@pytest.mark.parametrize("max_length, max_prompt_length", [(40, 16), (64, 24), (512, 256)])
def test_the_report_counts_what_truncation_cut_overall_and_per_language(
    tokenizer, pairs_file, max_length, max_prompt_length
):
    dm = PreferenceDataModule(
        tokenizer, str(pairs_file), max_length=max_length, max_prompt_length=max_prompt_length, val_fraction=0.2
    )
    dm.setup()
    truncated = dm.report.truncated
    counts, by_language = served_truncation(tokenizer, dm)
    assert {k: truncated[k] for k in counts} == counts
    assert truncated["by_language"] == by_language
    assert truncated["pairs"] == 40 and (truncated["max_length"], truncated["max_prompt_length"]) == (
        max_length,
        max_prompt_length,
    )
    if max_length == 40:  # the limits of this case cut every part somewhere
        assert min(truncated[part] for part in PARTS) > 0
    if max_length == 512:
        assert all(truncated[part] == 0 for part in PARTS)


def test_losing_eos_in_more_than_5_percent_of_pairs_is_warned_about(tokenizer, pairs_file, caplog):
    with caplog.at_level(logging.WARNING, logger="congrad.data.datamodule"):
        dm = PreferenceDataModule(tokenizer, str(pairs_file), max_length=40, max_prompt_length=16)
        dm.setup()
    lost, pairs = dm.report.truncated["lost_eos"], dm.report.truncated["pairs"]
    assert lost > 0.05 * pairs
    (record,) = [r for r in caplog.records if "data.max_length" in r.getMessage()]
    message = record.getMessage()
    assert f"{lost} of {pairs} pairs" in message and "data.max_prompt_length" in message

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="congrad.data.datamodule"):
        roomy = PreferenceDataModule(tokenizer, str(pairs_file), max_length=512, max_prompt_length=256)
        roomy.setup()
    assert not [r for r in caplog.records if "data.max_length" in r.getMessage()]


def test_the_default_config_fits_the_shipped_data(compose_config, caplog):
    cfg = compose_config("train")
    assert cfg.data.path == str(SHIPPED)
    tokenizer = hydra.utils.instantiate(cfg.model.tokenizer)
    with caplog.at_level(logging.WARNING, logger="congrad.data.datamodule"):
        dm = hydra.utils.instantiate(cfg.data, tokenizer=tokenizer)
        dm.setup()
    truncated = dm.report.truncated
    assert truncated["pairs"] == 480
    assert truncated["lost_eos"] <= 0.01 * truncated["pairs"], truncated
    assert not [r for r in caplog.records if "data.max_length" in r.getMessage()]
    # the model's positions cover the longest sequence
    longest = max(
        len(f["prompt_ids"]) + max(len(f["chosen_ids"]), len(f["rejected_ids"]))
        for f in dm._train_features + dm._val_features
    )
    assert longest <= cfg.data.max_length <= cfg.model.backbone.max_position_embeddings

import json
from collections import Counter
from pathlib import Path

import datasets
import pytest
import pytorch_lightning as pl
import torch

from congrad.data.datamodule import PreferenceDataModule
from congrad.data.formats import PreferenceRow, load_preference_rows
from congrad.data.languages import ISO_639_1, is_iso_639_1
from congrad.data.synthetic import make_preference_rows
from congrad.data.tokenization import collate_pairs, encode_pair
from congrad.errors import BadRowError, CongradError
from congrad.models.tokenizer import build_tiny_tokenizer
from congrad.utils.io import write_jsonl

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "tiny_multilingual.jsonl"


def good_row(i: int, language: str = "de", **fields) -> dict:
    row = {
        "id": f"r{i}",
        "prompt": f"Frage {i}?",
        "chosen": f"Antwort {i}.",
        "rejected": "Keine Ahnung.",
        "language": language,
    }
    row.update(fields)
    return row


def write_lines(path: Path, lines: list) -> Path:
    path.write_text(
        "".join((line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)) + "\n" for line in lines),
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def bos_tokenizer():
    return build_tiny_tokenizer(with_bos=True)


def make_row(prompt, chosen, rejected, language="en", index=0) -> PreferenceRow:
    raw = {"prompt": prompt, "chosen": chosen, "rejected": rejected, "language": language}
    return PreferenceRow(
        index=index,
        id=str(index),
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        language=language,
        raw=raw,
    )


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# --- languages ----------------------------------------------------------------------------------


def test_iso_639_1_codes():
    assert len(ISO_639_1) == 184
    assert all(len(code) == 2 and code.islower() for code in ISO_639_1)
    assert is_iso_639_1("de") and is_iso_639_1("zh")
    assert not any(is_iso_639_1(code) for code in ("DE", "deu", "xx", "", None, 7))


# --- bad rows -----------------------------------------------------------------------------------

BAD_ROWS = {
    "missing field": ({k: v for k, v in good_row(2).items() if k != "chosen"}, "chosen", "missing"),
    "null field": (good_row(2, prompt=None), "prompt", "missing"),
    "empty string": (good_row(2, chosen=""), "chosen", "empty string"),
    "blank string": (good_row(2, rejected=" \n\t"), "rejected", "blank string"),
    "wrong type": (good_row(2, prompt=17), "prompt", "expected a string or a list of messages, got int"),
    "empty message list": (good_row(2, chosen=[]), "chosen", "empty message list"),
    "message not an object": (good_row(2, prompt=["hi"]), "prompt", "message is not an object"),
    "message without role": (good_row(2, prompt=[{"content": "hi"}]), "prompt", "without a 'role'"),
    "unknown role": (
        good_row(2, prompt=[{"role": "bot", "content": "hi"}]),
        "prompt",
        "role 'bot' is not one of",
    ),
    "user turn in completion": (
        good_row(2, chosen=[{"role": "user", "content": "hi"}]),
        "chosen",
        "role 'user' is not one of assistant",
    ),
    "content not a string": (
        good_row(2, rejected=[{"role": "assistant", "content": 3}]),
        "rejected",
        "without a 'content' string",
    ),
    "blank messages": (good_row(2, chosen=[{"role": "assistant", "content": " "}]), "chosen", "blank"),
    "missing language": ({k: v for k, v in good_row(2).items() if k != "language"}, "language", "missing"),
    "unknown language": (good_row(2, language="xx"), "language", "unknown language 'xx'"),
    "language without ISO 639-1 code": (good_row(2, language="ceb"), "language", "'ceb' (Cebuano) has no ISO 639-1"),
    "language not a string": (good_row(2, language=["de"]), "language", "expected a string, got list"),
    "id of wrong type": (good_row(2, id=[1]), "id", "expected a string or an integer"),
    "invalid JSON": ('{"prompt": "Frage", "chosen": ', "<row>", "invalid JSON"),
    "not an object": ("[1, 2]", "<row>", "expected a JSON object, got list"),
    "duplicate id": (good_row(2, id="r0"), "id", "duplicate of row 1"),
    "no preference": (
        good_row(2, chosen="Gleich.", rejected="Gleich."),
        "rejected",
        "identical to chosen: a pair without a preference",
    ),
    "no preference, two forms": (
        good_row(2, chosen="Gleich.", rejected=[{"role": "assistant", "content": "Gleich."}]),
        "rejected",
        "identical to chosen",
    ),
}


@pytest.mark.parametrize("kind", list(BAD_ROWS))
def test_bad_row_error_names_file_row_and_field(tmp_path, kind):
    bad, field, reason = BAD_ROWS[kind]
    path = write_lines(tmp_path / "x.jsonl", [good_row(0), good_row(1), bad, good_row(3)])
    with pytest.raises(BadRowError) as caught:
        load_preference_rows(path)
    err = caught.value  # "row" is the line an editor shows: the bad row is on line 3
    assert (err.source, err.row, err.field) == (str(path), 3, field)
    assert reason in err.reason
    assert str(err).startswith(f"{path}: row 3: field '{field}': ")
    assert isinstance(err, CongradError)


def test_skip_counts_bad_rows_by_reason_and_loads_the_rest(tmp_path):
    lines = []
    for kind, (bad, _, _) in BAD_ROWS.items():
        lines += [good_row(len(lines)), bad] if kind != "duplicate id" else []
    lines += [good_row(len(lines)), good_row(len(lines) + 1, id="r0")]  # a duplicate of line 1
    path = write_lines(tmp_path / "x.jsonl", lines)
    rows, report = load_preference_rows(path, on_bad_row="skip")
    n_bad = len(BAD_ROWS)
    assert report.total_rows == len(lines)
    assert report.skipped == n_bad and len(report.skipped_rows) == n_bad
    assert report.loaded == len(rows) == len(lines) - n_bad
    assert all(row.raw == lines[row.index] for row in rows)  # indices are file positions
    assert sum(report.skipped_by_reason.values()) == n_bad
    assert report.skipped_by_reason["chosen: empty string"] == 1
    assert report.skipped_by_reason["language: missing"] == 1
    assert report.skipped_by_reason["<row>: invalid JSON"] == 1
    assert report.skipped_by_reason["id: duplicate of row 1"] == 1
    assert report.skipped_by_reason["rejected: identical to chosen: a pair without a preference"] == 2
    assert {
        "row": len(lines),  # the last line
        "id": "r0",
        "language": "de",
        "field": "id",
        "reason": "duplicate of row 1",
    } in report.skipped_rows
    summary = json.loads(json.dumps(report.to_dict()))
    assert summary["skipped"] == n_bad and summary["source"] == str(path)


def test_unknown_on_bad_row_value_is_an_error(tmp_path):
    path = write_lines(tmp_path / "x.jsonl", [good_row(0)])
    with pytest.raises(CongradError, match="on_bad_row"):
        load_preference_rows(path, on_bad_row="ignore")


def test_all_rows_bad_is_an_error(tmp_path):
    path = write_lines(tmp_path / "x.jsonl", [good_row(0, chosen="")])
    with pytest.raises(CongradError, match="no usable preference rows"):
        load_preference_rows(path, on_bad_row="skip")


def test_blank_lines_are_not_rows_and_ids_default_to_the_row_number(tmp_path):
    row = {k: v for k, v in good_row(0).items() if k != "id"}
    path = write_lines(tmp_path / "x.jsonl", [row, "", "   ", {**row, "id": 7}, row])
    rows, report = load_preference_rows(path)
    assert report.total_rows == 3
    assert [(r.index, r.id) for r in rows] == [(0, "0"), (1, "7"), (2, "2")]


# --- language selection -------------------------------------------------------------------------


def test_language_selection_excludes_and_counts_other_languages(tmp_path):
    path = write_lines(
        tmp_path / "x.jsonl", [good_row(0, "de"), good_row(1, "fr"), good_row(2, "ja"), good_row(3, "de")]
    )
    rows, report = load_preference_rows(path, languages=["de", "ja"])
    assert [r.index for r in rows] == [0, 2, 3]
    assert report.excluded_by_language == 1 and report.loaded == 3
    assert report.loaded_by_language == {"de": 2, "ja": 1}
    rows, _ = load_preference_rows(path, languages="fr,ja")
    assert [r.language for r in rows] == ["fr", "ja"]


def test_requested_language_without_rows_is_named(tmp_path):
    path = write_lines(tmp_path / "x.jsonl", [good_row(0, "de")])
    with pytest.raises(CongradError, match="sw"):
        load_preference_rows(path, languages=["de", "sw"])
    with pytest.raises(CongradError, match="'german'"):
        load_preference_rows(path, languages=["german"])


# --- sources ------------------------------------------------------------------------------------

STRING_ROWS = [good_row(i, lang) for i, lang in enumerate(["de", "zh", "ar", "hi", "ru"])]
CONVERSATIONAL_ROWS = [
    good_row(
        i,
        lang,
        prompt=[{"role": "system", "content": "Sei breve."}, {"role": "user", "content": f"Domanda {i}?"}],
        chosen=[{"role": "assistant", "content": f"Risposta {i}."}],
        rejected=[{"role": "assistant", "content": "Non lo so."}],
    )
    for i, lang in enumerate(["it", "ja", "ko"])
]


def _fields(rows):
    return [(r.index, r.id, r.prompt, r.chosen, r.rejected, r.language) for r in rows]


@pytest.mark.parametrize("source_rows", [STRING_ROWS, CONVERSATIONAL_ROWS], ids=["strings", "conversational"])
def test_jsonl_json_parquet_and_saved_dataset_load_the_same_rows(tmp_path, source_rows):
    jsonl = write_lines(tmp_path / "x.jsonl", source_rows)
    json_array = tmp_path / "x.json"
    json_array.write_text(json.dumps(source_rows, ensure_ascii=False), encoding="utf-8")
    dataset = datasets.Dataset.from_list(source_rows)
    dataset.to_parquet(str(tmp_path / "x.parquet"))
    dataset.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": dataset}).save_to_disk(str(tmp_path / "saved_dict"))
    expected, _ = load_preference_rows(jsonl)
    assert [r.raw for r in expected] == source_rows
    for other in ("x.json", "x.parquet", "saved", "saved_dict"):
        rows, report = load_preference_rows(tmp_path / other)
        assert _fields(rows) == _fields(expected), other
        assert report.loaded == len(source_rows)


def test_a_bad_row_in_a_folder_of_json_lines_files_is_named_by_its_file_and_line(tmp_path):
    """A folder of .jsonl files reads as datasets.load_dataset reads it (the same files, in the same order);
    a bad row is named by its file and line, not by the folder and a position over all files. In the
    report (skip) the row is its position over the folder's rows, as for any other dataset folder."""
    folder = tmp_path / "pairs"
    folder.mkdir()
    write_lines(folder / "a.jsonl", [good_row(0), "", good_row(1)])
    write_lines(folder / "b.jsonl", [good_row(2), good_row(3, chosen=""), '{"broken": '])
    with pytest.raises(BadRowError) as caught:
        load_preference_rows(folder)
    assert str(caught.value) == f"{folder / 'b.jsonl'}: row 2: field 'chosen': empty string"
    rows, report = load_preference_rows(folder, on_bad_row="skip")
    assert [r.id for r in rows] == ["r0", "r1", "r2"]
    assert [(r["row"], r["field"]) for r in report.skipped_rows] == [(3, "chosen"), (4, "<row>")]
    good = tmp_path / "good"
    good.mkdir()
    write_lines(good / "b.jsonl", [good_row(2)])
    write_lines(good / "a.jsonl", [good_row(0), good_row(1)])
    by_datasets = datasets.load_dataset(str(good), split="train", cache_dir=str(tmp_path / "cache")).to_list()
    assert [r.raw for r in load_preference_rows(good)[0]] == by_datasets


def test_missing_split_of_saved_dataset_dict(tmp_path):
    datasets.DatasetDict({"train": datasets.Dataset.from_list(STRING_ROWS)}).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(CongradError, match="no split 'test'"):
        load_preference_rows(tmp_path / "d", split="test")


def test_missing_file_and_unreachable_hub_id_are_clear_errors(tmp_path):
    with pytest.raises(CongradError, match="file not found"):
        load_preference_rows(tmp_path / "nope.jsonl")
    with pytest.raises(CongradError, match="no-such-owner/no-such-set") as caught:
        load_preference_rows("no-such-owner/no-such-set")
    assert "data.path" in str(caught.value)


def test_string_and_conversational_fields_and_extra_fields_pass_through(tmp_path):
    rows_in = [good_row(9, flipped=True), CONVERSATIONAL_ROWS[0]]
    rows, _ = load_preference_rows(write_lines(tmp_path / "x.jsonl", rows_in))
    assert rows[0].prompt == "Frage 9?" and rows[0].raw["flipped"] is True
    assert rows[1].prompt == CONVERSATIONAL_ROWS[0]["prompt"]
    assert rows[1].chosen == [{"role": "assistant", "content": "Risposta 0."}]


# --- encode_pair --------------------------------------------------------------------------------


def test_encode_string_pair_with_chat_template(tokenizer):
    row = make_row("Was ist ein Vulkan?", "Ein Berg, der Feuer spuckt.", "Keine Ahnung.")
    enc = encode_pair(tokenizer, row, max_length=512, max_prompt_length=256)
    prompt_text = tokenizer.apply_chat_template(
        [{"role": "user", "content": row.prompt}], add_generation_prompt=True, tokenize=False
    )
    assert enc["prompt_ids"] == ids(tokenizer, prompt_text)
    assert enc["chosen_ids"] == ids(tokenizer, "Ein Berg, der Feuer spuckt.<|end|>")
    assert enc["rejected_ids"] == ids(tokenizer, "Keine Ahnung.<|end|>")
    eos = tokenizer.eos_token_id
    for key in ("chosen_ids", "rejected_ids"):
        assert enc[key][-1] == eos and enc[key].count(eos) == 1


def test_encode_conversational_pair_matches_the_string_form(tokenizer):
    messages = [
        {"role": "system", "content": "Sei breve."},
        {"role": "user", "content": "Che cos'è un vulcano?"},
    ]
    conv = make_row(
        messages,
        [{"role": "assistant", "content": "Una montagna."}],
        [{"role": "assistant", "content": "Boh."}],
    )
    enc = encode_pair(tokenizer, conv, 512, 256)
    assert enc["prompt_ids"] == ids(
        tokenizer, tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    )
    assert enc["chosen_ids"] == ids(tokenizer, "Una montagna.<|end|>")
    string_form = encode_pair(tokenizer, make_row("Che cos'è un vulcano?", "Una montagna.", "Boh."), 512, 256)
    assert enc["chosen_ids"] == string_form["chosen_ids"]


def test_template_with_bos_gives_exactly_one_bos(bos_tokenizer):
    assert bos_tokenizer("x")["input_ids"][0] == bos_tokenizer.bos_token_id  # the trap: adding BOS again
    enc = encode_pair(bos_tokenizer, make_row("Что такое радуга?", "Оптическое явление.", "Не знаю."), 512, 256)
    bos = bos_tokenizer.bos_token_id
    assert enc["prompt_ids"][0] == bos and enc["prompt_ids"].count(bos) == 1
    assert bos not in enc["chosen_ids"] and bos not in enc["rejected_ids"]
    assert (
        enc["chosen_ids"][-1] == bos_tokenizer.eos_token_id and enc["chosen_ids"].count(bos_tokenizer.eos_token_id) == 1
    )


def test_without_chat_template_strings_are_concatenated_with_one_bos_and_one_eos():
    plain = build_tiny_tokenizer(with_bos=True)
    plain.chat_template = None
    eos, bos = plain.eos_token_id, plain.bos_token_id
    enc = encode_pair(plain, make_row("Q: 2+2?\nA:", " 4", " 5<|end|>"), 512, 256)
    assert enc["prompt_ids"] == [bos, *ids(plain, "Q: 2+2?\nA:")]
    assert enc["chosen_ids"] == [*ids(plain, " 4"), eos]
    assert enc["rejected_ids"] == ids(plain, " 5<|end|>") and enc["rejected_ids"].count(eos) == 1
    already_bos = encode_pair(plain, make_row("<|bos|>Q?", "A", "B"), 512, 256)
    assert already_bos["prompt_ids"].count(bos) == 1
    conv = make_row([{"role": "user", "content": "Hi"}, {"role": "user", "content": "there"}], "A", "B")
    assert encode_pair(plain, conv, 512, 256)["prompt_ids"] == [bos, *ids(plain, "Hi\n\nthere")]


def test_prompt_rendered_differently_before_an_answer_falls_back_to_the_common_prefix():
    odd = build_tiny_tokenizer()
    odd.chat_template = (
        "{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\nThinking...' }}{% endif %}"
    )
    enc = encode_pair(odd, make_row("Hi?", "Hello.", "Go away."), 512, 256)
    assert enc["chosen_ids"] == ids(odd, "Hello.<|end|>")
    assert enc["rejected_ids"] == ids(odd, "Go away.<|end|>")


def test_truncation_keeps_the_prompt_end_and_the_completion_start(tokenizer):
    row = make_row(" ".join(f"w{i}" for i in range(40)), "a b c d e f g h i j k", "short")
    full = encode_pair(tokenizer, row, 10_000, 5_000)
    enc = encode_pair(tokenizer, row, max_length=20, max_prompt_length=12)
    assert enc["prompt_ids"] == full["prompt_ids"][-12:]
    assert enc["chosen_ids"] == full["chosen_ids"][:8]
    assert enc["rejected_ids"] == full["rejected_ids"][:8]
    assert len(enc["prompt_ids"]) + max(len(enc["chosen_ids"]), len(enc["rejected_ids"])) <= 20
    n_prompt = len(full["prompt_ids"])
    roomy = encode_pair(tokenizer, row, max_length=n_prompt + len(full["chosen_ids"]), max_prompt_length=n_prompt)
    assert roomy == full


def test_bad_lengths_are_rejected(tokenizer):
    with pytest.raises(CongradError, match="max_prompt_length"):
        encode_pair(tokenizer, make_row("a", "b", "c"), max_length=8, max_prompt_length=8)


# --- collate ------------------------------------------------------------------------------------


def test_collate_marks_exactly_the_completion_tokens(tokenizer):
    rows = [
        make_row("Was ist ein Vulkan?", "Ein Berg.", "Keine Ahnung, wirklich nicht.", "de", 0),
        make_row("什么是彩虹？", "彩虹是光的现象。", "不知道。", "zh", 1),
        make_row(
            [{"role": "user", "content": "Hi"}],
            [{"role": "assistant", "content": "Hello there, friend."}],
            "No.",
            "en",
            2,
        ),
    ]
    features = [{**encode_pair(tokenizer, r, 512, 256), "index": 10 + r.index, "language": r.language} for r in rows]
    pad = tokenizer.pad_token_id
    batch = collate_pairs(features, pad)
    b = len(features)
    sequences = [(f["prompt_ids"], f["chosen_ids"]) for f in features] + [
        (f["prompt_ids"], f["rejected_ids"]) for f in features
    ]
    width = max(len(p) + len(c) for p, c in sequences)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["completion_mask"].shape == (2 * b, width)
    for r, (p, c) in enumerate(sequences):
        n_pad = width - len(p) - len(c)
        assert batch["input_ids"][r].tolist() == p + c + [pad] * n_pad
        assert batch["attention_mask"][r].tolist() == [1] * (len(p) + len(c)) + [0] * n_pad
        assert batch["completion_mask"][r].tolist() == [0] * len(p) + [1] * len(c) + [0] * n_pad
        selected = batch["input_ids"][r][batch["completion_mask"][r].bool()].tolist()
        assert selected == c
    assert (batch["completion_mask"] <= batch["attention_mask"]).all()
    assert batch["index"].tolist() == [10, 11, 12]
    assert batch["language"] == ["de", "zh", "en"]


# --- datamodule ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "synthetic.jsonl"
    rows = make_preference_rows(["en", "de", "zh", "ar"], pairs_per_language=12)
    rows.append({**make_preference_rows(["ko"], pairs_per_language=1)[0]})  # a language with a single row
    write_jsonl(path, rows)
    return path


def make_datamodule(tokenizer, path, **kwargs) -> PreferenceDataModule:
    dm = PreferenceDataModule(tokenizer, str(path), max_length=128, max_prompt_length=64, batch_size=5, **kwargs)
    dm.setup("fit")
    return dm


def served_indices(loader) -> list[int]:
    return [i for batch in loader for i in batch["index"].tolist()]


def test_split_is_stratified_and_deterministic(tokenizer, synthetic_file):
    dm = make_datamodule(tokenizer, synthetic_file, val_fraction=0.25)
    val_by_language = Counter(r.language for r in dm.val_rows)
    assert val_by_language == {"en": 3, "de": 3, "zh": 3, "ar": 3}  # the lone "ko" row stays in training
    assert dm.languages == ["ar", "de", "en", "ko", "zh"]
    assert len(dm.train_rows) + len(dm.val_rows) == dm.report.loaded == 49
    assert {r.index for r in dm.train_rows}.isdisjoint(r.index for r in dm.val_rows)
    assert [r.index for r in dm.train_rows] == sorted(r.index for r in dm.train_rows)
    again = make_datamodule(tokenizer, synthetic_file, val_fraction=0.25)
    assert [r.id for r in again.val_rows] == [r.id for r in dm.val_rows]
    other_seed = make_datamodule(tokenizer, synthetic_file, val_fraction=0.25, seed=1)
    assert [r.id for r in other_seed.val_rows] != [r.id for r in dm.val_rows]
    small = make_datamodule(tokenizer, synthetic_file, val_fraction=0.01)
    assert Counter(r.language for r in small.val_rows) == {"en": 1, "de": 1, "zh": 1, "ar": 1}


def test_no_validation_and_separate_validation_file(tokenizer, synthetic_file, tmp_path):
    dm = make_datamodule(tokenizer, synthetic_file, val_fraction=0.0)
    assert dm.val_rows == [] and dm.val_dataloader() == []
    val_file = write_lines(tmp_path / "val.jsonl", [good_row(0, "de"), good_row(1, "en")])
    dm = make_datamodule(tokenizer, synthetic_file, val_path=str(val_file))
    assert len(dm.train_rows) == 49 and [r.id for r in dm.val_rows] == ["r0", "r1"]
    assert served_indices(dm.val_dataloader()) == [0, 1]


def test_setup_is_idempotent(tokenizer, synthetic_file):
    dm = make_datamodule(tokenizer, synthetic_file)
    rows = dm.train_rows
    dm.setup("validate")
    assert dm.train_rows is rows


def test_train_batches_index_train_rows(tokenizer, synthetic_file):
    dm = make_datamodule(tokenizer, synthetic_file)
    for batch in dm.train_dataloader():
        assert batch["input_ids"].shape[0] == 2 * len(batch["language"])
        assert [dm.train_rows[i].language for i in batch["index"].tolist()] == batch["language"]


def test_active_indices_decide_what_the_next_train_dataloader_serves(tokenizer, synthetic_file):
    dm = make_datamodule(tokenizer, synthetic_file)
    n = len(dm.train_rows)
    assert dm.active_indices == list(range(n))
    first = served_indices(dm.train_dataloader())
    assert sorted(first) == list(range(n))
    dm.set_active_indices([7, 3, 3, n - 1, 0])
    assert dm.active_indices == [0, 3, 7, n - 1]
    assert sorted(served_indices(dm.train_dataloader())) == [0, 3, 7, n - 1]
    assert served_indices(dm.candidate_dataloader()) == list(range(n))  # candidates are always all rows
    dm.set_active_indices(None)
    second = served_indices(dm.train_dataloader())
    assert sorted(second) == list(range(n)) and second != first  # a new order each epoch
    for bad in ([n], [-1], []):
        with pytest.raises(ValueError):
            dm.set_active_indices(bad)


def test_shuffling_is_reproducible(tokenizer, synthetic_file):
    a, b = make_datamodule(tokenizer, synthetic_file), make_datamodule(tokenizer, synthetic_file)
    assert served_indices(a.train_dataloader()) == served_indices(b.train_dataloader())
    assert served_indices(a.train_dataloader()) == served_indices(b.train_dataloader())


def test_candidate_dataloader_serves_every_row_in_order(tokenizer, synthetic_file):
    dm = make_datamodule(tokenizer, synthetic_file)
    loader = dm.candidate_dataloader(batch_size=4)
    assert loader.batch_size == 4
    assert served_indices(loader) == list(range(len(dm.train_rows)))


class _RecordingModule(pl.LightningModule):
    """Records the rows each epoch trains on, and prunes to rows 1 and 4 after the first epoch."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: dict[int, list[int]] = {}

    def training_step(self, batch, batch_idx):
        self.seen.setdefault(self.current_epoch, []).extend(batch["index"].tolist())
        return self.weight * batch["completion_mask"].sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/x", 0.0, batch_size=len(batch["language"]))

    def on_train_epoch_end(self):
        self.trainer.datamodule.set_active_indices([1, 4])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("val_fraction", [0.0, 0.2])
def test_trainer_serves_the_pruned_rows_from_the_next_epoch(tokenizer, synthetic_file, val_fraction):
    dm = PreferenceDataModule(tokenizer, str(synthetic_file), val_fraction=val_fraction, batch_size=8)
    module = _RecordingModule()
    trainer = pl.Trainer(
        max_epochs=2,
        reload_dataloaders_every_n_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=dm)
    assert sorted(module.seen[0]) == list(range(len(dm.train_rows)))
    assert sorted(module.seen[1]) == [1, 4]


def test_datamodule_needs_setup(tokenizer, synthetic_file):
    dm = PreferenceDataModule(tokenizer, str(synthetic_file))
    with pytest.raises(RuntimeError, match="setup"):
        dm.train_dataloader()


# --- synthetic set ------------------------------------------------------------------------------


def test_shipped_file_is_the_generator_output(tmp_path):
    expected = tmp_path / "expected.jsonl"
    write_jsonl(expected, make_preference_rows())
    assert SHIPPED.read_bytes() == expected.read_bytes()


def test_shipped_file_loads_cleanly_with_many_scripts():
    rows, report = load_preference_rows(SHIPPED)
    assert report.skipped == 0 and report.loaded == report.total_rows == len(rows)
    assert len(report.loaded_by_language) >= 8
    assert {"ru", "zh", "ja", "ar", "hi", "ko"} <= set(report.loaded_by_language)
    conversational = sum(isinstance(r.prompt, list) for r in rows)
    assert 0 < conversational < len(rows)
    assert not any(r.raw["flipped"] for r in rows)


def test_generator_is_deterministic_and_languages_are_independent():
    assert make_preference_rows(seed=3) == make_preference_rows(seed=3)
    assert make_preference_rows(seed=3) != make_preference_rows(seed=4)
    both = make_preference_rows(["de", "hi"], pairs_per_language=5)
    assert [r for r in both if r["language"] == "hi"] == make_preference_rows(["hi"], pairs_per_language=5)


def test_flipping_swaps_a_known_number_of_pairs_in_chosen_languages():
    clean = make_preference_rows(["en", "de", "ja"], pairs_per_language=20)
    flipped = make_preference_rows(
        ["en", "de", "ja"], pairs_per_language=20, flip_fraction=0.25, flip_languages=["de", "ja"]
    )
    assert Counter(r["language"] for r in flipped if r["flipped"]) == {"de": 5, "ja": 5}
    for before, after in zip(clean, flipped, strict=True):
        if after["flipped"]:
            assert (after["chosen"], after["rejected"]) == (before["rejected"], before["chosen"])
        else:
            assert after == before
    everywhere = make_preference_rows(["en", "de"], pairs_per_language=10, flip_fraction=0.5)
    assert Counter(r["language"] for r in everywhere if r["flipped"]) == {"en": 5, "de": 5}


# --- JSON lines are split on newlines only; rows are named by the line an editor shows --------------


def test_line_and_paragraph_separators_inside_strings_stay_in_their_row(tmp_path):
    """U+2028, U+2029 and U+0085 are legal inside JSON strings (json.dumps(ensure_ascii=False) writes them
    raw); str.splitlines() would cut the line there."""
    texts = ["eins\u2028zwei", "Absatz\u2029zwei", "next\u0085line"]
    lines = [good_row(i, chosen=text) for i, text in enumerate(texts)]
    path = write_lines(tmp_path / "x.jsonl", lines)
    assert "\u2028" in path.read_text(encoding="utf-8")  # written raw, not as \\u2028
    rows, report = load_preference_rows(path, on_bad_row="skip")
    assert report.skipped == 0 and [r.chosen for r in rows] == texts


def test_rows_are_named_by_their_line_blank_lines_counted(tmp_path):
    path = write_lines(
        tmp_path / "x.jsonl",
        [good_row(0), "", good_row(1, chosen="a\u2028b"), "  ", good_row(2, chosen=""), good_row(3, language="fr")],
    )
    with pytest.raises(BadRowError, match=r"x.jsonl: row 5: field 'chosen': empty string"):
        load_preference_rows(path)
    rows, report = load_preference_rows(path, on_bad_row="skip", languages=["de"])
    assert [(r.index, r.source_row) for r in rows] == [(0, 1), (1, 3)]
    assert [s["row"] for s in report.skipped_rows] == [5]
    assert [e["row"] for e in report.excluded_rows] == [6]


def test_a_line_that_is_not_utf8_is_a_bad_row_naming_file_and_line(tmp_path):
    path = tmp_path / "x.jsonl"
    good = [json.dumps(good_row(i), ensure_ascii=False).encode() for i in range(3)]
    latin1 = json.dumps(good_row(9, chosen="Grüße"), ensure_ascii=False).encode("latin-1")
    path.write_bytes(b"\n".join([good[0], latin1, good[1], b"\xff\xfe", good[2]]) + b"\n")
    with pytest.raises(BadRowError) as caught:
        load_preference_rows(path)
    assert str(caught.value) == f"{path}: row 2: field '<row>': not valid UTF-8"
    rows, report = load_preference_rows(path, on_bad_row="skip")
    assert [r.id for r in rows] == ["r0", "r1", "r2"] and [r.source_row for r in rows] == [1, 3, 5]
    assert report.skipped_by_reason == {"<row>: not valid UTF-8": 2}
    assert [s["row"] for s in report.skipped_rows] == [2, 4]


def test_a_json_array_file_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "x.json"
    path.write_bytes(b'[\n{"prompt": "a"},\n{"prompt": "\xe9"}\n]\n')
    with pytest.raises(CongradError, match=r"x.json: line 3: not valid UTF-8"):
        load_preference_rows(path)


def test_prompts_are_read_the_same_way(tmp_path):
    from congrad.data.prompts import load_prompts

    path = tmp_path / "p.jsonl"
    path.write_bytes(json.dumps({"prompt": "a\u2028b", "language": "de"}, ensure_ascii=False).encode() + b"\n\n\xff\n")
    with pytest.raises(BadRowError, match=r"p.jsonl: row 3: field '<row>': not valid UTF-8"):
        load_prompts(str(path))
    assert [p.prompt for p in load_prompts(str(path), on_bad_row="skip")] == ["a\u2028b"]


def test_a_requested_language_missing_names_the_languages_that_are_there(tmp_path):
    path = write_lines(tmp_path / "x.jsonl", [good_row(0, "de"), good_row(1, "de")])
    with pytest.raises(CongradError, match=r"no rows for requested language\(s\) fr; languages present: de "):
        load_preference_rows(path, languages=["fr"])

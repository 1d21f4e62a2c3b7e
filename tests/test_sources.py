"""Any source as it is: one loader for every row kind, ``columns`` (nested too), languages normalised from the
codes and names sources use, sets split by language (``{lang}`` in a hub config, a split or a local path),
per-language caps and seeded samples, TRL's implicit-prompt preference rows. Local copies laid out as on the hub
(tests/hub_sets.py) load through the code path a hub id takes."""

import json
import time

import datasets
import hub_sets
import pytest

from congrad.data.eval_sets import load_multiple_choice, load_reference_texts
from congrad.data.formats import PROMPTS, load_preference_rows, load_rows
from congrad.data.languages import normalize_language
from congrad.data.prompts import load_prompts, read_prompts
from congrad.data.sources import Source
from congrad.errors import BadRowError, ConfigError, CongradError


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """``datasets`` caches what it reads from a local hub layout; here, in the test's own folder."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets_cache")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


# ---- languages ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, code",
    [
        ("de", "de"),
        ("DE", "de"),
        ("deu", "de"),
        ("ger", "de"),
        ("German", "de"),
        ("german", "de"),
        ("DE_DE", "de"),
        ("de-DE", "de"),
        ("deu_Latn", "de"),
        ("ZH_CN", "zh"),
        ("zho_Hans", "zh"),
        ("cmn", "zh"),
        ("Chinese", "zh"),
        ("chinese", "zh"),
        ("ES_LA", "es"),
        ("spanish", "es"),
        ("AR_XY", "ar"),
        ("arb_Arab", "ar"),
        ("arb", "ar"),
        ("Standard Arabic", "ar"),
        ("hin_Deva", "hi"),
        ("JA_JP", "ja"),
        ("jpn", "ja"),
        ("kor_Hang", "ko"),
        ("korean", "ko"),
        ("PT_BR", "pt"),
        ("SW_KE", "sw"),
        ("swh", "sw"),
        ("YO_NG", "yo"),
        ("Greek", "el"),
        ("Persian", "fa"),
        ("rus_Cyrl", "ru"),
        ("italian", "it"),
    ],
)
def test_language_codes_and_names_sources_use_map_to_iso_639_1(value, code):
    assert normalize_language(value).code == code


@pytest.mark.parametrize("value", ["xx", "Frenglish", "DE_DE_DE", "", "d", "12", "de_"])
def test_a_value_that_names_no_language_maps_to_nothing(value):
    assert normalize_language(value) is None


def test_a_language_without_an_iso_639_1_code_is_named_but_has_no_code():
    found = normalize_language("ceb")
    assert found.code is None and found.name == "Cebuano"


def test_a_language_value_that_maps_to_nothing_names_the_value_the_row_and_the_setting(tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl", [{"inputs": "Hallo?", "lang": "German"}, {"inputs": "Bonjour ?", "lang": "Frenglish"}]
    )
    with pytest.raises(BadRowError) as caught:
        load_prompts(str(path), columns={"prompt": "inputs", "language": "lang"})
    message = str(caught.value)
    assert message.startswith(f"{path}: row 2: field 'lang': unknown language 'Frenglish'")
    assert "self_reward.prompts.columns.language" in message and "self_reward.prompts.language" in message
    with pytest.raises(ConfigError, match=r"eval.win_rate.language='Frenglish': not a language"):
        load_rows(PROMPTS, Source(str(path), "eval.win_rate", columns={"prompt": "inputs"}, language="Frenglish"))


def test_a_constant_language_labels_every_row(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"instruction": "Hallo?"}, {"instruction": "Wie geht's?"}])
    prompts = load_prompts(str(path), columns={"prompt": "instruction"}, language="deu_Latn")
    assert [(p.id, p.prompt, p.language) for p in prompts] == [("0", "Hallo?", "de"), ("1", "Wie geht's?", "de")]


def test_languages_without_an_iso_639_1_code_are_excluded_when_languages_are_asked_for(tmp_path):
    """Aya: rows of Cebuano (no ISO 639-1 code) count as excluded when languages are named, and stop the load
    when every language is asked for (congrad names languages by their ISO 639-1 code)."""
    folder = hub_sets.aya_dataset(tmp_path / "aya")
    columns = {"prompt": "inputs", "language": "language_code", "reference": "targets"}
    prompts, report = read_prompts(str(folder), columns=columns, languages=["de", "ar"])
    assert [(p.language, p.prompt[:3]) for p in prompts] == [
        ("de", "de0"),
        ("de", "de1"),
        ("de", "de2"),
        ("de", "de3"),
        ("ar", "ar0"),
        ("ar", "ar1"),
        ("ar", "ar2"),
        ("ar", "ar3"),
    ]
    assert prompts[0].reference == "answer 0"
    assert report.excluded_by_language == 4 * 4 and report.loaded_by_language == {"ar": 4, "de": 4}
    with pytest.raises(
        BadRowError, match=r"row 20: field 'language_code': language 'ceb' \(Cebuano\) has no ISO 639-1"
    ):
        read_prompts(str(folder), columns=columns)


# ---- columns -----------------------------------------------------------------------------------------------
def test_columns_read_our_fields_from_the_sources_own_and_from_nested_values(tmp_path):
    path = write_jsonl(
        tmp_path / "chat.jsonl",
        [
            {"uid": "a", "messages": [{"role": "user", "content": "Wie spät ist es?"}], "meta": {"lang": "de"}},
            {"uid": "b", "messages": [{"role": "user", "content": "Quelle heure est-il ?"}], "meta": {"lang": "fra"}},
        ],
    )
    prompts = load_prompts(str(path), columns={"id": "uid", "prompt": "messages.0.content", "language": "meta.lang"})
    assert [(p.id, p.prompt, p.language) for p in prompts] == [
        ("a", "Wie spät ist es?", "de"),
        ("b", "Quelle heure est-il ?", "fr"),
    ]
    path = write_jsonl(tmp_path / "missing.jsonl", [{"messages": [], "meta": {"lang": "de"}}])
    with pytest.raises(BadRowError, match=r"row 1: field 'messages.0.content': missing"):
        load_prompts(str(path), columns={"prompt": "messages.0.content", "language": "meta.lang"})


MC_SCHEMAS = {  # the four options and the answer as each hub set has them (BENCHMARKS.md), the right one third
    "Global-MMLU": (
        {
            "question": "Q?",
            "option_a": "a",
            "option_b": "b",
            "option_c": "c",
            "option_d": "d",
            "answer": "C",
            "subject": "x",
        },
        {"choices": ["option_a", "option_b", "option_c", "option_d"]},
    ),
    "Global-MMLU, early revision": (
        {"question": "Q?", "option_a": "a", "option_b": "b", "option_c": "c", "option_d": "d", "answer": 2},
        {"choices": ["option_a", "option_b", "option_c", "option_d"]},
    ),
    "MMMLU": (
        {"Unnamed: 0": 0, "Question": "Q?", "A": "a", "B": "b", "C": "c", "D": "d", "Answer": "C", "Subject": "x"},
        {"question": "Question", "choices": ["A", "B", "C", "D"], "answer": "Answer"},
    ),
    "Belebele": (
        {
            "link": "l",
            "question_number": 1,
            "flores_passage": "P.",
            "question": "Q?",
            "mc_answer1": "a",
            "mc_answer2": "b",
            "mc_answer3": "c",
            "mc_answer4": "d",
            "correct_answer_num": "3",
            "dialect": "deu_Latn",
            "ds": "2023",
        },
        {"choices": ["mc_answer1", "mc_answer2", "mc_answer3", "mc_answer4"], "answer": "correct_answer_num"},
    ),
}


@pytest.mark.parametrize("schema", MC_SCHEMAS)
def test_multiple_choice_options_and_answers_in_each_sets_form(tmp_path, schema):
    row, columns = MC_SCHEMAS[schema]
    path = write_jsonl(tmp_path / "mc.jsonl", [row])
    [question] = load_multiple_choice(path, columns=columns, language="de")
    assert (question.question, question.choices, question.answer) == ("Q?", ("a", "b", "c", "d"), 2)


@pytest.mark.parametrize(
    "answer, why",
    [
        ("E", "letter 'E' is not one of the 4 choices"),
        ("5", "1-based '5' is not one of the 4 choices"),
        ("0", "1-based '0' is not one of the 4 choices"),
        ("C or D", r"expected an index \(0..3\), a letter \(A..D\)"),
    ],
)
def test_an_answer_outside_the_choices_is_a_bad_row(tmp_path, answer, why):
    row, columns = MC_SCHEMAS["Global-MMLU"]
    path = write_jsonl(tmp_path / "mc.jsonl", [{**row, "answer": answer}])
    with pytest.raises(BadRowError, match=rf"row 1: field 'answer': {why}"):
        load_multiple_choice(path, columns=columns, language="de")


# ---- sets split by language --------------------------------------------------------------------------------
def test_lang_in_the_config_reads_one_config_per_language(tmp_path):
    """m-ArenaHard: configs ``de``, ``en``, ...; split ``test``; ids repeat across languages, so a part's are
    prefixed with its language."""
    folder = hub_sets.m_arenahard(tmp_path / "m-ArenaHard")
    source = Source(str(folder), "eval.win_rate", name="{lang}", split="test", columns={"id": "question_id"})
    prompts, report = load_rows(PROMPTS, source, ["de", "zh"])
    assert [(p.id, p.prompt, p.language) for p in prompts] == [
        ("de-q000", "[de] task 0", "de"),
        ("de-q001", "[de] task 1", "de"),
        ("de-q002", "[de] task 2", "de"),
        ("zh-q000", "[zh] task 0", "zh"),
        ("zh-q001", "[zh] task 1", "zh"),
        ("zh-q002", "[zh] task 2", "zh"),
    ]
    assert report.loaded_by_language == {"de": 3, "zh": 3}
    with pytest.raises(CongradError, match=r"eval.win_rate.path=.*config 'fr'"):
        load_rows(PROMPTS, source, ["fr"])
    with pytest.raises(ConfigError, match=r"split by language.*eval.win_rate.languages"):
        load_rows(PROMPTS, source, None)


def test_lang_in_the_split_in_the_sets_own_words(tmp_path):
    """X-AlpacaEval: splits ``english``, ``chinese``, ...: ``lang_codes`` says which is which."""
    folder = hub_sets.x_alpacaeval(tmp_path / "X-AlpacaEval")
    source = Source(
        str(folder),
        "eval.win_rate",
        split="{lang}",
        columns={"prompt": "instruction"},
        lang_codes=hub_sets.X_ALPACAEVAL_SPLITS,
    )
    prompts, _ = load_rows(PROMPTS, source, ["zh", "it"])
    assert [(p.id, p.prompt, p.language) for p in prompts] == [
        ("it-0", "italian instruction 0", "it"),
        ("it-1", "italian instruction 1", "it"),
        ("it-2", "italian instruction 2", "it"),
        ("zh-0", "chinese instruction 0", "zh"),
        ("zh-1", "chinese instruction 1", "zh"),
        ("zh-2", "chinese instruction 2", "zh"),
    ]


def test_lang_in_a_local_path_and_flores_codes_in_a_config(tmp_path):
    folder = hub_sets.alpagasus(tmp_path / "alpagasus")
    prompts = load_prompts(str(folder / "{lang}.jsonl"), languages=["de", "en"], columns={"prompt": "instruction"})
    assert [(p.id, p.language) for p in prompts] == [
        ("de-alpagasus_0", "de"),
        ("de-alpagasus_1", "de"),
        ("de-alpagasus_2", "de"),
        ("en-alpagasus_0", "en"),
        ("en-alpagasus_1", "en"),
        ("en-alpagasus_2", "en"),
    ]
    with pytest.raises(CongradError, match=r"zh\.jsonl|fr\.jsonl"):
        load_prompts(str(folder / "{lang}.jsonl"), languages=["fr"], columns={"prompt": "instruction"})
    flores = hub_sets.flores_plus(tmp_path / "flores_plus")
    texts = load_reference_texts(flores, ["zh", "de"], name="{lang}", split="devtest", lang_codes=hub_sets.FLORES)
    assert [(t.text, t.language) for t in texts] == [
        ("devtest de 0", "de"),
        ("devtest de 1", "de"),
        ("devtest de 2", "de"),
        ("devtest zh 0", "zh"),
        ("devtest zh 1", "zh"),
        ("devtest zh 2", "zh"),
    ]


# ---- caps and samples --------------------------------------------------------------------------------------
def test_a_per_language_cap_keeps_the_first_rows_or_a_seeded_sample_in_input_order(tmp_path):
    rows = [{"prompt": f"{lang} {i}", "language": lang} for i in range(10) for lang in ("de", "fr")]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    first, report = read_prompts(str(path), per_language=3)
    assert [p.prompt for p in first] == ["de 0", "fr 0", "de 1", "fr 1", "de 2", "fr 2"]
    assert report.capped_by_language == {"de": 7, "fr": 7}
    sample = [p.prompt for p in load_prompts(str(path), per_language=3, sample=True, seed=1)]
    assert sample == [p.prompt for p in load_prompts(str(path), per_language=3, sample=True, seed=1)]
    assert sample != [p.prompt for p in load_prompts(str(path), per_language=3, sample=True, seed=2)]
    assert sorted(sample, key=[r["prompt"] for r in rows].index) == sample, "input order kept"
    assert sum(p.startswith("de") for p in sample) == 3 and sum(p.startswith("fr") for p in sample) == 3
    assert sample != [p.prompt for p in first]


def test_length_filters_are_counted_in_the_report(tmp_path):
    folder = hub_sets.aya_dataset(tmp_path / "aya")  # prompt i is 10 * (i + 1) characters long
    prompts, report = read_prompts(
        str(folder),
        columns={"prompt": "inputs", "language": "language_code"},
        languages=["de", "en"],
        min_chars=15,
        max_chars=30,
    )
    assert [len(p.prompt) for p in prompts] == [20, 30, 20, 30]
    assert report.filtered_by_length == {"shorter than 15 characters": 2, "longer than 30 characters": 2}


def test_bad_prompt_rows_are_skipped_counted_and_reported_as_bad_pairs_are(tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [{"prompt": "ok", "language": "de"}, {"prompt": " ", "language": "de"}, {"language": "de"}],
    )
    with pytest.raises(BadRowError, match=r"p.jsonl: row 2: field 'prompt': blank string"):
        load_prompts(str(path))
    prompts, report = read_prompts(str(path), on_bad_row="skip")
    assert [p.prompt for p in prompts] == ["ok"]
    assert report.skipped_by_reason == {"prompt: blank string": 1, "prompt: missing": 1}
    assert [(s["row"], s["field"]) for s in report.skipped_rows] == [(2, "prompt"), (3, "prompt")]


# ---- TRL's implicit prompt ---------------------------------------------------------------------------------
def test_implicit_prompt_rows_are_split_as_trl_splits_them(tmp_path):
    """``trl-lib/ultrafeedback_binarized``: the shared user turn is the prompt, the rest each completion (TRL's
    ``extract_prompt``: the longest common beginning; for strings, a space before the first difference stays
    with the completions)."""
    folder = hub_sets.ultrafeedback_binarized(tmp_path / "ultrafeedback_binarized")
    rows, _ = load_preference_rows(str(folder), language="en")
    assert len(rows) == 4
    assert rows[0].prompt == [{"role": "user", "content": "Question 0?"}]
    assert rows[0].chosen == [{"role": "assistant", "content": "Good answer 0."}]
    assert rows[0].rejected == [{"role": "assistant", "content": "Bad answer 0."}]
    assert rows[0].raw["score_chosen"] == 8.0
    path = write_jsonl(
        tmp_path / "s.jsonl", [{"chosen": "Q: sky? A: blue", "rejected": "Q: sky? A: green", "language": "en"}]
    )
    [row], _ = load_preference_rows(path)
    assert (row.prompt, row.chosen, row.rejected) == ("Q: sky? A:", " blue", " green")


@pytest.mark.parametrize(
    "chosen, rejected, field, why",
    [
        (
            [{"role": "user", "content": "A?"}, {"role": "assistant", "content": "x"}],
            [{"role": "user", "content": "B?"}, {"role": "assistant", "content": "y"}],
            "prompt",
            "share no beginning",
        ),
        ("blue", "green", "prompt", "share no beginning"),
        (
            [{"role": "user", "content": "A?"}],
            [{"role": "user", "content": "A?"}, {"role": "assistant", "content": "y"}],
            "chosen",
            "no completion",
        ),
    ],
)
def test_implicit_prompt_rows_without_a_shared_beginning_are_bad_rows_saying_why(
    tmp_path, chosen, rejected, field, why
):
    path = write_jsonl(tmp_path / "x.jsonl", [{"chosen": chosen, "rejected": rejected, "language": "en"}])
    with pytest.raises(BadRowError, match=rf"x.jsonl: row 1: field '{field}': .*{why}"):
        load_preference_rows(path)


# ---- the hub -----------------------------------------------------------------------------------------------
def test_a_hub_id_that_cannot_be_reached_fails_within_seconds_naming_the_set_the_setting_and_the_download():
    start = time.monotonic()
    with pytest.raises(CongradError) as caught:  # the tests run with HF_HUB_OFFLINE=1 and no cache of this set
        load_rows(
            PROMPTS,
            Source("CohereForAI/m-ArenaHard", "eval.win_rate", name="{lang}", split="test", revision="abc123"),
            ["de"],
        )
    assert time.monotonic() - start < 10
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        "eval.win_rate: cannot load the data set 'CohereForAI/m-ArenaHard', config 'de', "
        "split 'test', revision 'abc123'"
    )
    assert "huggingface-cli download --repo-type dataset CohereForAI/m-ArenaHard --revision abc123" in message
    assert "set eval.win_rate.path=DIR" in message


def test_a_gated_set_says_how_to_get_access():
    with pytest.raises(
        CongradError,
        match=r"gated: accept its terms at https://huggingface.co/datasets/"
        r"openlanguagedata/flores_plus and log in",
    ):
        load_reference_texts(
            "openlanguagedata/flores_plus",
            ["de"],
            name="{lang}",
            split="devtest",
            lang_codes={"de": "deu_Latn"},
            gated=True,
        )


def test_parallel_sets_repeat_ids_across_languages_where_nothing_is_keyed_by_them(tmp_path):
    rows = [
        {"id": "q1", "question": "Q?", "choices": ["a", "b"], "answer": 0, "language": lang} for lang in ("de", "fr")
    ]
    assert [q.language for q in load_multiple_choice(write_jsonl(tmp_path / "mc.jsonl", rows))] == ["de", "fr"]
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [{"id": "p1", "prompt": "Hallo?", "language": "de"}, {"id": "p1", "prompt": "Salut ?", "language": "fr"}],
    )
    with pytest.raises(BadRowError, match=r"row 2: field 'id': duplicate of row 1"):
        load_prompts(str(path))  # prompts are keyed by id (generations, win-rate verdicts)


def test_the_training_data_is_a_source_too(compose_config, tmp_path):
    """data.*: TRL's implicit-prompt hub layout as training pairs, with the language given for the whole set."""
    import hydra

    from congrad.models.tokenizer import build_tiny_tokenizer

    folder = hub_sets.ultrafeedback_binarized(tmp_path / "ultrafeedback_binarized")
    cfg = compose_config(
        "train", [f"data.path={folder}", "+data.language=English", "data.val_fraction=0", "+data.per_language=3"]
    )
    dm = hydra.utils.instantiate(cfg.data, tokenizer=build_tiny_tokenizer())
    dm.setup()
    assert dm.languages == ["en"] and dm.report.loaded == 3 and dm.report.capped_by_language == {"en": 1}

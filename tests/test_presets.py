"""Every preset composes and loads its set: local copies in the hub's schema and layout (tests/hub_sets.py) stand
in for the hub id (``path=`` the copy; config, split, columns, languages and codes from the preset), read by the
functions the programs call (the loop's prompt pool, the evaluation's parts)."""

import json

import datasets
import hub_sets
import pytest

from congrad.data.prompts import read_prompts
from congrad.evaluation.evaluator import load_eval_sets

TEN = ["en", "de", "fr", "es", "it", "ru", "zh", "ja", "ar", "hi"]
FLORES_PLUS = {**hub_sets.FLORES, "zh": "cmn_Hans"}  # FLORES+ names Mandarin by its ISO 639-3 code


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets_cache")


def test_the_shipped_tiny_pool_is_the_default_and_loads_offline(compose_config):
    cfg = compose_config("train", ["+experiment=tiny_self_reward"])
    prompts, report = read_prompts(**cfg.self_reward.prompts)
    assert report.loaded_by_language == {lang: 8 for lang in cfg.self_reward.prompts.rows}  # per_language: 8


def test_the_aya_pool_reads_inputs_and_iso_639_3_codes_filtered_by_length(compose_config, tmp_path):
    folder = hub_sets.aya_dataset(tmp_path / "aya_dataset")  # prompts of 10, 20, 30, 40 characters
    cfg = compose_config(
        "train",
        [
            "+experiment=tiny_self_reward",
            "prompts=aya",
            f"self_reward.prompts.path={folder}",
            "data.languages=[de,zh,ar]",
            "self_reward.prompts.min_chars=16",
        ],
    )
    assert cfg.self_reward.prompts.revision and cfg.self_reward.prompts.sample is True
    prompts, report = read_prompts(**cfg.self_reward.prompts)
    assert report.loaded_by_language == {"ar": 3, "de": 3, "zh": 3}
    assert report.filtered_by_length == {"shorter than 16 characters": 3}
    assert {p.prompt[:3] for p in prompts if p.language == "de"} == {"de1", "de2", "de3"}


def test_the_alpagasus_pool_reads_one_file_per_language(compose_config, tmp_path):
    folder = hub_sets.alpagasus(tmp_path / "alpagasus", languages=("en", "de", "zh"))
    cfg = compose_config(
        "train",
        [
            "+experiment=tiny_self_reward",
            "prompts=alpagasus",
            f'self_reward.prompts.path="{folder}/{{lang}}.jsonl"',
            "data.languages=[zh,de]",
        ],
    )
    prompts, _ = read_prompts(**cfg.self_reward.prompts)
    assert [(p.id, p.language) for p in prompts][:2] == [("de-alpagasus_0", "de"), ("de-alpagasus_1", "de")]
    assert {p.language for p in prompts} == {"de", "zh"} and len(prompts) == 6


def eval_overrides(**paths) -> list[str]:
    others = {
        "pairs": "eval.pairs.enabled=false",
        "nll": "eval.nll.enabled=false",
        "harness": "eval.harness.enabled=false",
        "win_rate": "eval.win_rate.enabled=false",
    }
    return [f"eval.{part}.path={path}" for part, path in paths.items()] + [
        off for part, off in others.items() if part not in paths
    ]


def test_x_alpacaeval_reads_its_splits_named_by_language_word(compose_config, tmp_path):
    folder = hub_sets.x_alpacaeval(tmp_path / "X-AlpacaEval")
    cfg = compose_config("train", ["eval/win_rate=x_alpacaeval", *eval_overrides(win_rate=folder)])
    assert cfg.eval.win_rate.generation.max_new_tokens == 512 and cfg.eval.win_rate.revision
    sets = load_eval_sets(cfg.eval, tmp_path)
    assert sets.languages == ["en", "es", "it", "zh"]
    assert [p.prompt for p in sets.prompts if p.language == "zh"] == [f"chinese instruction {i}" for i in range(3)]


def test_the_ten_language_x_alpacaeval_reads_one_json_list_per_language(compose_config, tmp_path):
    folder = hub_sets.x_alpacaeval10(tmp_path / "x-alpacaeval")
    cfg = compose_config(
        "train", ["eval/win_rate=x_alpacaeval10", *eval_overrides(win_rate=f'"{folder}/{{lang}}.json"')]
    )
    sets = load_eval_sets(cfg.eval, tmp_path)
    assert sets.languages == ["ar", "de", "es", "fr", "it", "ja", "ru", "zh"]
    assert [(p.id, p.prompt) for p in sets.prompts[:2]] == [("ar-0", "ar instruction 0"), ("ar-1", "ar instruction 1")]


def test_m_arenahard_reads_one_config_per_language(compose_config, tmp_path):
    folder = hub_sets.m_arenahard(tmp_path / "m-ArenaHard", languages=[*TEN, "ko"])
    cfg = compose_config("train", ["eval/win_rate=m_arenahard", *eval_overrides(win_rate=folder)])
    assert cfg.eval.win_rate.generation.max_new_tokens == 512
    sets = load_eval_sets(cfg.eval, tmp_path)
    assert sets.languages == sorted(TEN)  # the preset's ten, not ko
    assert sets.prompts[0].id == "ar-q000" and sets.prompts[0].prompt == "[ar] task 0"
    cfg = compose_config(
        "train", ["eval/win_rate=m_arenahard", *eval_overrides(win_rate=folder), "eval.languages=[de,ar]"]
    )
    assert sorted({p.language for p in load_eval_sets(cfg.eval, tmp_path).prompts}) == ["ar", "de"]


def test_flores_plus_devtest_reads_one_config_per_flores_code(compose_config, tmp_path):
    folder = hub_sets.flores_plus(tmp_path / "flores_plus", languages=TEN, per_language=2, codes=FLORES_PLUS)
    cfg = compose_config("train", ["eval/nll=flores_plus", *eval_overrides(nll=folder)])
    assert cfg.eval.nll.gated is True and cfg.eval.nll.revision
    texts = load_eval_sets(cfg.eval, tmp_path).texts
    assert len(texts) == 20 and [t.text for t in texts if t.language == "zh"] == ["devtest zh 0", "devtest zh 1"]


def test_reference_answers_replace_the_baseline_and_each_prompt_needs_one(compose_config, tmp_path):
    path = tmp_path / "refs.jsonl"
    path.write_text(
        "".join(
            json.dumps(r) + "\n"
            for r in [
                {"prompt": "Hallo?", "language": "de", "reference": "Hallo!"},
                {"prompt": "Hi?", "language": "en", "reference": "Hi!"},
            ]
        ),
        encoding="utf-8",
    )
    cfg = compose_config("train", ["eval/win_rate=references", *eval_overrides(win_rate=path)])
    assert cfg.eval.win_rate.against == "reference"
    assert [p.reference for p in load_eval_sets(cfg.eval, tmp_path).prompts] == ["Hallo!", "Hi!"]
    path.write_text(json.dumps({"prompt": "Hallo?", "language": "de"}) + "\n", encoding="utf-8")
    with pytest.raises(Exception, match=r"eval.win_rate.against=reference: 1 of 1 prompts have no reference answer"):
        load_eval_sets(cfg.eval, tmp_path)


def test_eval_paper_composes_the_hub_sets_for_the_ten_languages(compose_config, tmp_path):
    arena = hub_sets.m_arenahard(tmp_path / "m-ArenaHard", languages=TEN, per_language=2)
    flores = hub_sets.flores_plus(tmp_path / "flores_plus", languages=TEN, per_language=1, codes=FLORES_PLUS)
    cfg = compose_config(
        "train",
        [
            "+experiment=llama3_10lang",
            f"eval.win_rate.path={arena}",
            f"eval.nll.path={flores}",
            "eval.harness.enabled=false",
        ],
    )
    assert list(cfg.eval.harness.tasks) == [f"global_mmlu_full_{lang}" for lang in TEN]  # tests/test_harness.py
    assert cfg.self_reward.prompts.path == "CohereForAI/aya_dataset"
    assert cfg.eval.win_rate.name == "{lang}" and cfg.eval.nll.split == "devtest"
    sets = load_eval_sets(cfg.eval, tmp_path)
    assert {p.language for p in sets.prompts} == {t.language for t in sets.texts} == set(TEN)
    assert set(TEN) <= set(sets.languages)


def test_source_settings_are_checked_before_anything_loads(compose_config):
    from congrad.errors import ConfigError
    from congrad.settings import check_settings

    check_settings(compose_config("train", ["+experiment=llama3_10lang"]))
    cfg = compose_config(
        "train",
        [
            "+experiment=tiny_self_reward",
            "+self_reward.prompts.language=Frenglish",
            "eval.win_rate.against=policy",
            "+eval.nll.columns.text=[1]",
            "self_reward.prompts.per_iteration=0",
        ],
    )
    with pytest.raises(ConfigError) as caught:
        check_settings(cfg)
    keys = [line.strip().split("=")[0] for line in str(caught.value).splitlines()[1:]]
    assert keys == [  # in the config's order, top to bottom (an added key comes last in its group)
        "self_reward.prompts.per_iteration",
        "self_reward.prompts.language",
        "eval.win_rate.against",
        "eval.nll.columns",
    ]

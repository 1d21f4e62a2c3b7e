"""Multiple-choice benchmarks through lm-evaluation-harness, against their oracles: the shipped local task
gives, per language, the accuracies of a plain forward pass of the same model (the choice of highest
log-likelihood; per character for acc_norm); a local file in congrad's format becomes a generated task that
scores alike; every preset names lm-eval tasks of langset's languages that read a data set pinned in
``eval.harness.datasets``, and reads local fixtures in exactly the hub schemas of Global-MMLU, Global-MMLU-Lite,
MMMLU and Belebele; the results' shape in results.json, the CSVs, the plots and the loggers."""

import copy
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT

from congrad.errors import BadRowError, ConfigError, CongradError
from congrad.evaluation.evaluator import Evaluator
from congrad.evaluation.harness import SHIPPED_DIR, Harness, resolve, write_multiple_choice_tasks
from congrad.evaluation.outputs import HARNESS_COLUMNS, log_results, write_outputs
from congrad.judging.rule import RuleJudge

ONLY_HARNESS = ["eval.device=cpu", "eval.pairs.enabled=false", "eval.win_rate.enabled=false", "eval.nll.enabled=false"]
LANGSET = ["en", "de", "fr", "es", "it", "ru", "zh", "ja", "ar", "hi"]

pytestmark = pytest.mark.slow(seconds=85)


@pytest.fixture
def harness_cfg(compose_config, tmp_path):
    def make(*overrides):
        return compose_config("evaluate", [*ONLY_HARNESS, *overrides], output_dir=tmp_path)

    return make


def oracle(model, tokenizer, rows) -> dict[str, dict[str, float]]:
    """Per language, the share of ``rows`` (question, choices, answer) whose right choice has the highest
    log-likelihood as the continuation " <choice>" of "<question>\\nAnswer:" (acc), and the highest per
    character of the choice (acc_norm): one plain forward pass per choice. The continuation's tokens are
    those of the whole text after the prompt's (so a word is tokenized as it is in running text)."""
    hits: dict[str, list] = {}
    model.eval()
    for row in rows:
        context = f"{row['question']}\nAnswer:"
        lls = []
        for choice in row["choices"]:
            whole = tokenizer.encode(context + " " + choice)
            n = len(whole) - len(tokenizer.encode(context))
            ids = torch.tensor([whole])
            with torch.no_grad():
                logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1)
            lls.append(float(logps[-n:].gather(1, ids[0, -n:, None]).sum()))
        lls = torch.tensor(lls, dtype=torch.float64)
        chars = torch.tensor([len(c) for c in row["choices"]], dtype=torch.float64)
        counts = hits.setdefault(row["language"], [0, 0, 0])
        counts[0] += int(lls.argmax()) == row["answer"]
        counts[1] += int((lls / chars).argmax()) == row["answer"]
        counts[2] += 1
    return {lang: {"acc": a / n, "acc_norm": b / n, "n": n} for lang, (a, b, n) in hits.items()}


def noisy(model, seed=1, scale=0.5):
    """Another model: ``model`` with seeded noise on every weight (a random-init model prefers the same
    choice for every question; this one does not)."""
    other = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale)
    return other


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").split("\n") if line]


# ---- the shipped task ----------------------------------------------------------------------------------------
def test_the_shipped_task_folder_is_what_the_writer_writes_for_the_shipped_file(tmp_path):
    rows = read_jsonl(ROOT / "data/eval/multiple_choice.jsonl")
    languages = {r["language"] for r in rows}
    write_multiple_choice_tasks("congrad_mc", "data/eval/multiple_choice.jsonl", languages, tmp_path)
    shipped = ROOT / SHIPPED_DIR
    written = sorted(p.name for p in tmp_path.glob("*.yaml"))
    assert written == sorted(p.name for p in shipped.glob("*.yaml")) and len(written) == 13
    for name in written:
        assert (tmp_path / name).read_text() == (shipped / name).read_text(), name


def test_the_shipped_task_scores_what_a_plain_forward_pass_gives_and_the_results_carry_it(harness_cfg, tmp_path):
    languages = ["de", "fr", "hi", "zh"]
    cfg = harness_cfg(f"eval.languages=[{','.join(languages)}]")
    evaluator = Evaluator(cfg, RuleJudge(), tmp_path)
    tokenizer, baseline = evaluator.policy([])
    policy = noisy(baseline)
    rows = [r for r in read_jsonl(ROOT / "data/eval/multiple_choice.jsonl") if r["language"] in languages]
    want, want_base = oracle(policy, tokenizer, rows), oracle(baseline, tokenizer, rows)
    # the oracle tells the two scores and the languages apart (else the comparison below could not fail)
    assert any(w["acc"] != w["acc_norm"] for w in want.values())
    assert len({w["acc_norm"] for w in want.values()}) > 1

    results, generations = evaluator.evaluate(tokenizer, policy, {"adapters": ["noisy"]}, seen=["de", "fr"])
    harness = results["harness"]
    assert sorted(harness) == sorted(f"congrad_mc_{lang}" for lang in want)
    for lang, w in want.items():
        task = harness[f"congrad_mc_{lang}"]
        assert task["metric"] == "acc_norm" and task["n"] == w["n"] == 16 and task["language"] == lang
        base = want_base[lang]["acc_norm"]
        assert task["policy"] == pytest.approx(w["acc_norm"]) and task["baseline"] == pytest.approx(base)
        assert task["delta"] == pytest.approx(w["acc_norm"] - base)
        assert task["seen"] == (lang in ("de", "fr"))
        row = results["languages"][lang]
        assert row["mc_accuracy"] == task["policy"] and row["mc_delta"] == task["delta"] and row["mc_n"] == 16
    assert results["seen"]["mc_n"] == 32 and results["unseen"]["mc_n"] == 16 * (len(want) - 2)
    seen_delta = (harness["congrad_mc_de"]["delta"] + harness["congrad_mc_fr"]["delta"]) / 2
    assert results["seen"]["mc_delta"] == pytest.approx(seen_delta)

    acc = Harness(harness_cfg("eval.harness.metric=acc").eval.harness, tmp_path, languages)
    acc = acc.scores(policy, tokenizer, "cpu")
    for lang, w in want.items():
        assert acc[f"congrad_mc_{lang}"] == {"metric": "acc", "score": pytest.approx(w["acc"]), "n": 16}

    # results.json, harness.csv, harness.png, per_language.csv and the loggers carry them
    from pytorch_lightning.loggers import CSVLogger

    plots = write_outputs(tmp_path / "out", results, generations)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(saved) == {"policy", "baseline", "languages", "harness", "seen", "unseen"} and saved == results
    assert set(saved["harness"]["congrad_mc_de"]) == set(HARNESS_COLUMNS) - {"task"}
    with open(tmp_path / "out" / "harness.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == list(HARNESS_COLUMNS) and len(table) == len(want)
    de = next(r for r in table if r["task"] == "congrad_mc_de")
    assert (de["language"], de["seen"], de["metric"], int(de["n"])) == ("de", "True", "acc_norm", 16)
    assert float(de["delta"]) == pytest.approx(harness["congrad_mc_de"]["delta"], abs=1e-6)
    header = (tmp_path / "out" / "per_language.csv").read_text().splitlines()[0].split(",")
    assert {"mc_accuracy", "mc_accuracy_baseline", "mc_delta", "mc_n"} <= set(header)
    assert set(plots) == {"per_language", "harness"} and all(p.stat().st_size > 0 for p in plots.values())
    logger = CSVLogger(tmp_path / "logs", name="", version="")
    log_results([logger], results, step=0, plots=plots)
    logger.save()
    with open(Path(logger.log_dir) / "metrics.csv", newline="") as f:
        logged = next(csv.DictReader(f))
    for key in ("policy", "baseline", "delta", "n"):
        assert float(logged[f"eval/harness/congrad_mc_de/{key}"]) == pytest.approx(float(harness["congrad_mc_de"][key]))
    assert float(logged["eval/seen/mc_delta"]) == pytest.approx(results["seen"]["mc_delta"])


def test_a_local_file_becomes_a_generated_task_that_scores_alike(harness_cfg, tmp_path):
    rows = [
        {
            "id": f"q{i}",
            "language": lang,
            "question": f"{word} {i}?",
            "choices": ["a", "bb b", "c c c", "dddd"],
            "answer": i % 4,
        }
        for lang, word in (("de", "Frage"), ("fr", "Question"))
        for i in range(5)
    ]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = harness_cfg("eval.harness.tasks=[]", f"+eval.harness.files.mine={path}")
    harness = Harness(cfg.eval.harness, tmp_path)
    assert [(t.name, t.language) for t in harness.tasks] == [("mine_de", "de"), ("mine_fr", "fr")]
    generated = yaml.safe_load((tmp_path / "harness_tasks" / "mine_de.yaml").read_text())
    assert generated["dataset_kwargs"] == {"path": str(path.resolve()), "language": "de"}
    assert Path(generated["include"]).read_text() == (ROOT / SHIPPED_DIR / "_multiple_choice_yaml").read_text()
    evaluator = Evaluator(harness_cfg(), RuleJudge(), tmp_path)
    tokenizer, model = evaluator.policy([])
    model = noisy(model, seed=2)
    want = oracle(model, tokenizer, rows)
    scores = harness.scores(model, tokenizer, "cpu")
    for lang in ("de", "fr"):
        assert scores[f"mine_{lang}"] == {"metric": "acc_norm", "score": pytest.approx(want[lang]["acc_norm"]), "n": 5}

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**rows[0], "answer": 7}) + "\n")
    with pytest.raises(BadRowError, match=r"bad\.jsonl: row 1: field 'answer'"):
        Evaluator(harness_cfg(f"+eval.harness.files.bad={bad}"), RuleJudge(), tmp_path)  # before any model loads
    with pytest.raises(ConfigError, match=r"eval\.harness\.files\.my-set"):
        Harness(harness_cfg(f"+eval.harness.files.my-set={path}").eval.harness, tmp_path)


def test_eval_languages_keep_the_harness_tasks_of_those_languages(harness_cfg, tmp_path):
    tasks, _ = resolve(harness_cfg().eval.harness, tmp_path, ["de", "ja"])
    assert [(t.name, t.language, t.leaves) for t in tasks] == [
        ("congrad_mc_de", "de", ("congrad_mc_de",)),
        ("congrad_mc_ja", "ja", ("congrad_mc_ja",)),
    ]
    with pytest.raises(
        ConfigError,
        match=r"eval\.harness\.tasks: congrad_mc and congrad_mc_de both hold the "
        r"lm-eval task congrad_mc_de",
    ):
        resolve(harness_cfg("eval.harness.tasks=[congrad_mc_de,congrad_mc]").eval.harness, tmp_path)


# ---- lm-eval's own tasks: the presets ------------------------------------------------------------------------
def preset_files() -> list[Path]:
    """Every config under conf/eval/ that names harness tasks (the presets, and eval group options)."""
    files = sorted((ROOT / "conf/eval/harness").glob("*.yaml"))
    return files + [
        p
        for p in sorted((ROOT / "conf/eval").glob("*.yaml"))
        if (yaml.safe_load(p.read_text()) or {}).get("harness", {}).get("tasks")
    ]


def test_every_preset_names_lm_eval_tasks_of_langset_languages_reading_listed_data_sets(harness_cfg, tmp_path):
    """lm-eval's task YAMLs ship in its wheel: the names are checked offline against its own index."""
    assert {p.stem for p in preset_files()} >= {"global_mmlu", "global_mmlu_lite", "mmmlu", "belebele"}
    for path in preset_files():
        preset = path.parent.name == "harness"
        cfg = harness_cfg(f"eval/harness={path.stem}" if preset else f"eval={path.stem}")
        names = list(cfg.eval.harness.tasks)
        tasks, manager = resolve(cfg.eval.harness, tmp_path)  # every name known, every language known
        assert names and set(names) <= set(manager.task_index), path
        hub_ids = {hub_id for entry in cfg.eval.harness.datasets.values() for hub_id in entry.ids}
        for task in tasks:
            paths = {manager.task_index[leaf].cfg.get("dataset_path") for leaf in task.leaves}
            assert paths <= hub_ids | {None}, (path, task.name, paths)  # None: a local task
        if preset:  # one task per name, each in another of langset's languages
            languages = [t.language for t in tasks]
            assert [t.name for t in tasks] == names and len(set(languages)) == len(languages), path
            assert set(languages) <= set(LANGSET), (path, languages)
    expected = {
        "global_mmlu": LANGSET,
        "belebele": LANGSET,
        "global_mmlu_lite": set(LANGSET) - {"ru"},
        "mmmlu": set(LANGSET) - {"en", "ru"},
    }
    for preset, langs in expected.items():
        tasks, _ = resolve(harness_cfg(f"eval/harness={preset}").eval.harness, tmp_path)
        assert {t.language for t in tasks} == set(langs), preset


def test_an_unknown_task_or_unreachable_data_is_an_error_naming_it(harness_cfg, tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"eval\.harness\.tasks: no lm-eval task, group or tag named "
        r"belebele_deu_latn \(close: belebele_deu_Latn",
    ):
        resolve(harness_cfg("eval.harness.tasks=[belebele_deu_latn]").eval.harness, tmp_path)
    # the tests run offline (HF_HUB_OFFLINE=1): the hub set cannot be reached
    with pytest.raises(
        CongradError,
        match=r"eval\.harness\.tasks: belebele_deu_Latn: its data could not be "
        r"loaded \(Couldn't reach 'facebook/belebele'.*"
        r"eval\.harness\.datasets\.belebele\.path",
    ):
        Harness(harness_cfg("eval.harness.tasks=[belebele_deu_Latn]").eval.harness, tmp_path)


def test_train_py_starts_without_importing_lm_eval():
    code = (
        "import sys, congrad.run, congrad.settings, congrad.evaluation.evaluator; "
        "print('lm_eval' in sys.modules, 'lm_eval.tasks' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "False"]


MMLU_CATEGORY = {"stem": "STEM", "humanities": "Humanities", "social_sciences": "Social Sciences", "other": "Other"}
LITE_CATEGORY = {
    "business_ethics": "Business",
    "marketing": "Business",
    "management": "Business",
    "anatomy": "Medical",
    "clinical_knowledge": "Medical",
    "college_medicine": "Medical",
}


def mmlu_subjects() -> dict[str, str]:
    """MMLU's 57 subjects and their categories (as lm-eval's MMMLU tasks list them)."""
    import lm_eval

    return json.loads((Path(lm_eval.__file__).parent / "tasks/openai-mmmlu/subjects.json").read_text())


def readme(configs: dict[str, list[tuple[str, str]]]) -> str:
    """A data set card whose configs map splits to files, as the hub sets lay them out."""
    lines = ["---", "configs:"]
    for name, splits in configs.items():
        lines += [f"- config_name: {name}", "  data_files:"]
        lines += [f"  - split: {split}\n    path: {path}" for split, path in splits]
    return "\n".join([*lines, "---", ""])


def global_mmlu_fixture(root: Path) -> int:
    """CohereForAI/Global-MMLU (and -Lite) as on the hub: config ``de``, parquet files ``de/test-*``,
    ``de/dev-*``; one question per MMLU subject, the answer a letter."""
    import pandas as pd

    rows = []
    for i, (subject, category) in enumerate(mmlu_subjects().items()):
        rows.append(
            {
                "sample_id": f"{subject}/test/{i}",
                "subject": subject,
                "subject_category": LITE_CATEGORY.get(subject, MMLU_CATEGORY[category]),
                "question": f"Frage {i}: was gilt in {subject}?",
                "option_a": "eins",
                "option_b": "die zweite",
                "option_c": "die dritte Antwort",
                "option_d": "vier",
                "answer": "ABCD"[i % 4],
                "required_knowledge": "[]",
                "time_sensitive": "[]",
                "reference": "[]",
                "culture": "[]",
                "region": "[]",
                "country": "[]",
                "cultural_sensitivity_label": "CA",
                "is_annotated": False,
            }
        )
    (root / "de").mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(root / "de/test-00000-of-00001.parquet")
    pd.DataFrame(rows[:5]).to_parquet(root / "de/dev-00000-of-00001.parquet")
    (root / "README.md").write_text(readme({"de": [("test", "de/test-*"), ("dev", "de/dev-*")]}))
    return len(rows)


def mmmlu_fixture(root: Path) -> int:
    """openai/MMMLU as on the hub: config ``DE_DE``, ``test/mmlu_DE-DE.csv`` with a leading unnamed index
    column, ``Question, A, B, C, D, Answer`` (a letter), ``Subject``."""
    (root / "test").mkdir(parents=True)
    lines = [",Question,A,B,C,D,Answer,Subject"]
    lines += [
        f"{i},Frage {i} zu {s}?,eins,die zweite,die dritte Antwort,vier,{'ABCD'[i % 4]},{s}"
        for i, s in enumerate(mmlu_subjects())
    ]
    (root / "test/mmlu_DE-DE.csv").write_text("\n".join(lines) + "\n")
    (root / "README.md").write_text(readme({"DE_DE": [("test", "test/mmlu_DE-DE.csv")]}))
    return len(lines) - 1


def belebele_fixture(root: Path) -> int:
    """facebook/belebele as on the hub: config ``deu_Latn``, ``data/deu_Latn.jsonl``; the right answer's
    number a string ``"1"``-``"4"``."""
    (root / "data").mkdir(parents=True)
    rows = [
        {
            "link": f"https://example.org/{i}",
            "question_number": 1 + i % 2,
            "flores_passage": f"Ein kurzer Text Nummer {i} über das Wetter.",
            "question": f"Worum geht es in {i}?",
            "mc_answer1": "Wetter",
            "mc_answer2": "Sport",
            "mc_answer3": "Essen",
            "mc_answer4": "Musik",
            "correct_answer_num": str(1 + i % 4),
            "dialect": "deu_Latn",
            "ds": "2023-05-03",
        }
        for i in range(6)
    ]
    (root / "data/deu_Latn.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    (root / "README.md").write_text(readme({"deu_Latn": [("test", "data/deu_Latn.jsonl")]}))
    return len(rows)


def test_the_presets_read_local_copies_in_the_hub_schemas(harness_cfg, tmp_path, monkeypatch):
    """lm-eval's own German tasks of each preset, from ``eval.harness.datasets.<set>.path``: every fixture
    question is counted once, in German, with the score the task computes."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    cases = {  # preset: (data set key, its lm-eval task for German, fixture, the score used)
        "global_mmlu": ("global_mmlu", "global_mmlu_full_de", global_mmlu_fixture, "acc"),
        "global_mmlu_lite": ("global_mmlu_lite", "global_mmlu_de", global_mmlu_fixture, "acc"),
        "mmmlu": ("mmmlu", "mmmlu_de_de", mmmlu_fixture, "acc_norm"),
        "belebele": ("belebele", "belebele_deu_Latn", belebele_fixture, "acc_norm"),
    }
    tokenizer = model = None
    for preset, (key, task, fixture, metric) in cases.items():
        n = fixture(tmp_path / preset)
        cfg = harness_cfg(
            f"eval/harness={preset}",
            f"eval.harness.tasks=[{task}]",
            f"eval.harness.datasets.{key}.path={tmp_path / preset}",
        )
        harness = Harness(cfg.eval.harness, tmp_path)
        if model is None:
            tokenizer, model = Evaluator(cfg, RuleJudge(), tmp_path).policy([])
        assert [(t.name, t.language) for t in harness.tasks] == [(task, "de")]
        scores = harness.scores(model, tokenizer, "cpu")[task]
        assert scores["metric"] == metric and scores["n"] == n and 0 <= scores["score"] <= 1, (preset, scores)
    pinned = harness_cfg("eval/harness=mmmlu").eval.harness
    (mmmlu_de,) = [t for t in resolve(pinned, tmp_path)[0] if t.language == "de"]
    assert {o["dataset_kwargs"]["revision"] for o in mmmlu_de.overrides} == {pinned.datasets.mmmlu.revision}


def test_harness_settings_are_checked(harness_cfg):
    from congrad.settings import check_settings

    with pytest.raises(ConfigError) as err:
        check_settings(harness_cfg("eval.harness.metric=f1", "eval.harness.limit=0", "eval.harness.tasks=belebele"))
    for key in (
        "eval.harness.metric='f1': must be one of acc_norm, acc",
        "eval.harness.limit=0",
        "eval.harness.tasks='belebele': must be a list of names",
    ):
        assert key in str(err.value)

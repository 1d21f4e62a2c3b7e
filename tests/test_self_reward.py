"""Steps 1–3 of a self-rewarding iteration: prompts, generation, language ID, judges, pairing; and the
reference policy of iteration t (base + merged adapters + fresh LoRA)."""

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from congrad.data.prompts import Prompt, load_prompts
from congrad.errors import BadRowError, CongradError
from congrad.generation.langid import detect, same_language
from congrad.generation.sampling import Sampling, TextGenerator
from congrad.judging.llm import LLMJudge
from congrad.judging.rule import RuleJudge
from congrad.judging.verdicts import OUT_OF_RANGE, UNPARSEABLE, Candidate, parse_score, verdict_from_texts
from congrad.models.factory import build_policy
from congrad.selfreward.pairing import IDENTICAL, SMALL_GAP, TIE, TOO_FEW, best_vs_worst
from congrad.selfreward.responses import generate_and_judge, pairs_from_generations

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_PROMPTS = ROOT / "data" / "prompts_tiny.jsonl"
ANSWERS = {
    "en": "Photosynthesis is the process by which plants use sunlight, water and carbon dioxide to make sugar.",
    "de": "Die Photosynthese ist der Prozess, bei dem Pflanzen mit Sonnenlicht Zucker herstellen.",
    "ru": "Фотосинтез — это процесс, при котором растения используют солнечный свет, воду и углекислый газ.",
    "zh": "光合作用是植物利用阳光、水和二氧化碳制造糖并释放氧气的过程。",
    "ar": "التمثيل الضوئي هو العملية التي تستخدم فيها النباتات ضوء الشمس والماء وثاني أكسيد الكربون.",
    "hi": "प्रकाश संश्लेषण वह प्रक्रिया है जिसमें पौधे सूरज की रोशनी, पानी और कार्बन डाइऑक्साइड का उपयोग करते हैं।",
}


class CannedGenerator:
    """Stands in for the policy: the same canned responses for every prompt; judge prompts get
    ``judge_texts`` (or the rule judge never asks)."""

    def __init__(self, responses, judge_texts=()):
        self.responses, self.judge_texts, self.calls = list(responses), list(judge_texts), []

    def generate(self, prompts, sampling, desc="generate", max_prompt_length=None):
        self.calls.append((desc, len(prompts), sampling.num_responses))
        return [self.responses[: sampling.num_responses] for _ in prompts]

    def generate_each(self, items, sampling, desc="generate", max_prompt_length=None):
        """The judge asks for one text per (prompt, sample index): sample j gets ``judge_texts[j]``."""
        self.calls.append((desc, len(items)))
        yield list(range(len(items))), [self.judge_texts[j] for _, j in items]


# ---- prompts ---------------------------------------------------------------------------------------


def test_shipped_prompt_set_covers_many_languages_and_scripts():
    prompts = load_prompts(str(SHIPPED_PROMPTS))
    languages = {p.language for p in prompts}
    assert len(languages) >= 8 and {"zh", "ar", "hi", "ru", "ja", "ko"} <= languages
    assert all(isinstance(p.prompt, str) and p.prompt.strip() for p in prompts)
    first = load_prompts(str(SHIPPED_PROMPTS), languages=["de", "zh"], per_language=3)
    assert [p.language for p in first] == ["de"] * 3 + ["zh"] * 3


def test_prompt_rows_are_validated(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        json.dumps({"prompt": "Hallo?", "language": "de"}) + "\n" + json.dumps({"prompt": "", "language": "de"}) + "\n",
        encoding="utf-8",
    )
    with pytest.raises(BadRowError, match=r"prompts.jsonl: row 2: field 'prompt'"):  # line 2 of the file
        load_prompts(str(path))
    assert [p.id for p in load_prompts(str(path), on_bad_row="skip")] == ["0"]
    with pytest.raises(CongradError, match=r"no rows for requested language\(s\) fr; languages present: de"):
        load_prompts(str(path), languages=["fr"], on_bad_row="skip")


# ---- judges ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The reply is on topic and accurate.\nScore: 4", (4.0, None)),
        ("**Score:** 3.5", (3.5, None)),
        ("score = 2/5", (2.0, None)),
        ("Score: 1 at first, but on reflection\nScore: 5", (5.0, None)),
        ("Final score is 0", (0.0, None)),
        ("Score: 7", (None, OUT_OF_RANGE)),
        ("Score: -1", (None, OUT_OF_RANGE)),
        ("I would give it four points.", (None, UNPARSEABLE)),
        ("", (None, UNPARSEABLE)),
        ("Score: many", (None, UNPARSEABLE)),
    ],
)
def test_parse_score(text, expected):
    assert parse_score(text) == expected


def test_verdict_averages_the_valid_samples_and_drops_when_none_is():
    verdict = verdict_from_texts(["Score: 4", "nonsense", "Score: 3", "Score: 9"])
    assert verdict.score == 3.5 and verdict.samples == [4.0, None, 3.0, None]
    assert verdict.problems == [None, UNPARSEABLE, None, OUT_OF_RANGE]
    assert verdict_from_texts(["no idea", "Score: 11"]).score is None


def test_llm_judge_fills_the_template_and_samples_n_judgements():
    judge = LLMJudge(template="Q: {prompt}\nA: {response}\nGrade it.", n_samples=3)
    policy = CannedGenerator([], judge_texts=["Score: 5", "Score: 4", "garbled"])
    verdicts = judge.judge([Candidate("What?", "en", "That."), Candidate("Was?", "de", "Das.")], policy)
    assert policy.calls == [("judge", 6)]  # 2 candidates x 3 samples
    assert [v.score for v in verdicts] == [4.5, 4.5] and verdicts[0].texts[2] == "garbled"
    assert judge.name == "self"
    with pytest.raises(CongradError, match="prompt"):
        LLMJudge(template="only {response}")


def test_judge_template_in_conf_composes(compose_config):
    cfg = compose_config("train", ["self_reward=default"])
    judge = LLMJudge(**{k: v for k, v in cfg.judge.items() if k != "_target_"})
    assert "Score: <points>" in judge.template and judge.sampling.num_responses == 3


def test_rule_judge_prefers_the_prompt_language_script_and_penalises_repetition():
    judge = RuleJudge()
    prompt = "Что такое фотосинтез?"
    right = judge.score(prompt, ANSWERS["ru"])
    wrong_script = judge.score(prompt, ANSWERS["en"])
    repeated = judge.score(prompt, "фотосинтез " * 12)
    assert right > wrong_script and right > repeated and 0 <= min(right, wrong_script, repeated)
    assert right <= 5 and judge.score(prompt, "") == 0
    with pytest.raises(CongradError, match="sum"):
        RuleJudge(script_weight=3.0)


# ---- language identification -------------------------------------------------------------------------


@pytest.mark.parametrize("language", sorted(ANSWERS))
def test_language_identification(language):
    assert same_language(detect(ANSWERS[language]).language, language)


def test_responses_in_another_language_are_judged_and_dropped_when_pairing():
    prompts = [Prompt("de-0", "Was ist die Photosynthese?", "de"), Prompt("zh-0", "什么是光合作用？", "zh")]
    responses = [ANSWERS["de"], ANSWERS["zh"], ANSWERS["en"], ""]
    rows = generate_and_judge(prompts, CannedGenerator(responses), RuleJudge(), Sampling(num_responses=4))
    de, zh = rows
    # every non-empty response is judged and recorded: the file serves either pairing setting
    assert de["dropped"] == zh["dropped"] == [None, None, None, "empty"]
    assert all(score is not None for row in rows for score in row["scores"][:3])
    pairs, report = pairs_from_generations(rows, min_score_gap=0.0, language_match=True)
    assert pairs == []  # one response left per prompt: nothing to pair
    assert report["total"]["dropped_language"] == 4 and report["total"]["dropped_empty"] == 2
    assert report["languages"]["de"]["no_pair_too_few"] == 1

    pairs, report = pairs_from_generations(rows, min_score_gap=0.0, language_match=False)
    assert report["total"]["language_mismatch"] == 4 and "dropped_language" not in report["total"]
    assert {p["language"] for p in pairs} == {"de", "zh"}
    assert all(p["chosen_score"] > p["rejected_score"] for p in pairs)
    assert pairs[0]["chosen"] == ANSWERS["de"]  # its script is the prompt's


def test_unparseable_judgements_drop_the_response_not_the_run():
    prompts = [Prompt("en-0", "What is photosynthesis?", "en")]
    generator = CannedGenerator(
        ["Plants make sugar from light.", "Plants use light."], judge_texts=["no score here", "Score: 12"]
    )
    judge = LLMJudge(template="{prompt} {response}", n_samples=2)
    rows = generate_and_judge(prompts, generator, judge, Sampling(num_responses=2))
    assert rows[0]["dropped"] == ["unjudged", "unjudged"] and rows[0]["judgements"][0] == ["no score here", "Score: 12"]
    pairs, report = pairs_from_generations(rows, min_score_gap=0.0, language_match=False)
    assert pairs == [] and report["total"]["judgements_unparseable"] == 2
    assert report["total"]["judgements_out_of_range"] == 2 and report["total"]["dropped_unjudged"] == 2


# ---- pairing -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "responses, scores, gap, expected",
    [
        (["a", "b", "c"], [1.0, 3.0, 2.0], 0.5, ((1, 0), None)),
        (["a", "b"], [2.0, None], 0.0, (None, TOO_FEW)),
        (["a", "b", "c"], [2.0, 2.0, 2.0], 0.0, (None, TIE)),
        (["a", "b"], [2.0, 2.3], 0.5, (None, SMALL_GAP)),
        (["same", "same"], [1.0, 4.0], 0.5, (None, IDENTICAL)),
    ],
)
def test_best_vs_worst(responses, scores, gap, expected):
    assert best_vs_worst(responses, scores, gap) == expected


# ---- generation and the reference policy ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model_cfg():
    return OmegaConf.create(
        {
            "tokenizer": {"_target_": "congrad.models.tokenizer.build_tiny_tokenizer", "vocab_size": 512},
            "backbone": {"_target_": "congrad.models.factory.build_tiny_llama", "init_seed": 0},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "adapter_path": None},
        }
    )


def test_generation_gives_k_responses_per_prompt(tiny_model_cfg):
    tokenizer, policy = build_policy(tiny_model_cfg)
    generator = TextGenerator(policy, tokenizer, batch_size=2, device="cpu", progress=False)
    prompts = [
        "What is a rainbow?",
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Was ist ein Vulkan?"}],
        "什么是重力？",
    ]
    sampling = Sampling(num_responses=3, max_new_tokens=8)
    torch.manual_seed(0)
    out = generator.generate(prompts, sampling)
    assert [len(texts) for texts in out] == [3, 3, 3] and all(isinstance(t, str) for texts in out for t in texts)
    torch.manual_seed(0)
    assert generator.generate(prompts, sampling) == out
    assert policy.training  # generation leaves the mode as it found it
    greedy = generator.generate(prompts[:1], Sampling(num_responses=2, temperature=0.0, max_new_tokens=8))
    assert greedy[0][0] == greedy[0][1]


def test_reference_of_the_next_iteration_is_the_trained_policy(tiny_model_cfg, tmp_path):
    """π_2 = base with adapter 1 merged; with a fresh LoRA on it, the disabled adapter gives π_2."""
    tokenizer, policy = build_policy(tiny_model_cfg)
    with torch.no_grad():  # a "trained" adapter 1
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)
    policy.save_pretrained(tmp_path / "adapter1")
    ids = torch.tensor([tokenizer("Was ist die Photosynthese?")["input_ids"]])
    expected = policy(input_ids=ids).logits

    cfg = OmegaConf.merge(tiny_model_cfg, {"merge_adapters": [str(tmp_path / "adapter1")]})
    _, next_policy = build_policy(cfg)
    with torch.no_grad(), next_policy.disable_adapter():
        reference = next_policy(input_ids=ids).logits
    torch.testing.assert_close(reference, expected, rtol=1e-4, atol=1e-5)
    trainable = [n for n, p in next_policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


# ---- what a rerun reuses ---------------------------------------------------------------------------------


def test_generations_are_reused_only_when_complete_and_made_from_the_same_source(tmp_path, caplog):
    from congrad.selfreward.reuse import RECORD, reusable_generations, write_generations

    rows = [{"id": f"en-{i}", "language": "en", "prompt": "Why?", "responses": ["a\u2028b", "c"]} for i in range(3)]
    source = {
        "prompts": {"path": "p.jsonl", "count": 3, "sha256": "abc"},
        "merged_adapters": ["d1"],
        "settings": {"seed": 0, "self_reward.generation.num_responses": 2, "judge._target_": "RuleJudge"},
    }
    assert reusable_generations(tmp_path, source) is None, "nothing written yet"
    write_generations(tmp_path, rows, source)
    assert reusable_generations(tmp_path, source) == rows
    path = tmp_path / "generations.jsonl"
    text = path.read_text(encoding="utf-8")

    # made from something else: refused, naming what differs (the file stays)
    for changed, named in (
        ({**source, "settings": {**source["settings"], "seed": 1}}, "seed=0 then, 1 now"),
        ({**source, "prompts": {**source["prompts"], "sha256": "xyz"}}, "other prompts: 3 from p.jsonl"),
        ({**source, "merged_adapters": ["d2"]}, "another policy"),
    ):
        with pytest.raises(CongradError, match=named.replace("(", r"\(")):
            reusable_generations(tmp_path, changed)
    assert path.read_text(encoding="utf-8") == text

    # cut short, a line broken, the record lost: not reused (generated again), never half-read
    for damage in (
        lambda: path.write_text("".join(text.splitlines(keepends=True)[:2]), encoding="utf-8"),
        lambda: path.write_text(text.replace('"responses"', '"respo', 1), encoding="utf-8"),
        lambda: (tmp_path / RECORD).unlink(),
    ):
        write_generations(tmp_path, rows, source)
        damage()
        with caplog.at_level("WARNING", logger="congrad"):
            assert reusable_generations(tmp_path, source) is None
        assert "generating it again" in caplog.records[-1].getMessage()


def test_each_iteration_takes_a_disjoint_seeded_slice_of_the_pool():
    from congrad.data.prompts import iteration_slices
    from congrad.errors import ConfigError

    pool = load_prompts(str(SHIPPED_PROMPTS), languages=["de", "zh"])  # 24 per language
    slices = iteration_slices(pool, 5, 4, seed=3)
    assert [len(s) for s in slices] == [10] * 4
    for piece in slices:
        assert sum(p.language == "de" for p in piece) == 5 and sum(p.language == "zh" for p in piece) == 5
        assert piece == [p for p in pool if p in piece], "pool order within a slice"
    ids = [p.id for piece in slices for p in piece]
    assert len(ids) == len(set(ids)) == 40, "disjoint"
    assert slices == iteration_slices(pool, 5, 4, seed=3), "a resumed run takes the same slices"
    assert slices != iteration_slices(pool, 5, 4, seed=4)
    assert iteration_slices(pool, None, 2, seed=3) == [pool, pool]
    with pytest.raises(
        ConfigError,
        match=r"per_iteration=5: 5 iterations need 25 prompts per language; the pool "
        r"has 24 in de, 24 in zh",
    ):
        iteration_slices(pool, 5, 5, seed=3)

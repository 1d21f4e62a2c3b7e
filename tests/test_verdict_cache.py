"""The verdict cache: its key changes with every part of what was asked; a second judge with the same cache
asks the model nothing and returns the same texts, a partly filled cache asks only for what it lacks; a
local model is known by its weights (a fresh LoRA adapter changes nothing); and a writer killed at any moment
leaves every committed entry readable."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from conftest import ROOT
from omegaconf import OmegaConf

from congrad.generation.sampling import TextGenerator, generated_tokens
from congrad.judging.cache import FILE, VerdictCache, verdict_key
from congrad.judging.llm import LLMJudge
from congrad.judging.verdicts import Candidate, Comparison
from congrad.models.factory import build_policy
from congrad.utils import cost

CANDIDATES = [
    Candidate("What is a rainbow?", "en", "Light in drops."),
    Candidate("Was ist Regen?", "de", "Wasser."),
    Candidate("什么是雨？", "zh", "水。"),
]


def model_cfg(lora: bool):
    return OmegaConf.create(
        {
            "tokenizer": {"_target_": "congrad.models.tokenizer.build_tiny_tokenizer", "vocab_size": 512},
            "backbone": {"_target_": "congrad.models.factory.build_tiny_llama", "init_seed": 0},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "adapter_path": None}
            if lora
            else None,
        }
    )


@pytest.fixture(scope="module")
def policy():
    tokenizer, model = build_policy(model_cfg(lora=True))
    return TextGenerator(model, tokenizer, batch_size=2, device="cpu", progress=False)


def test_the_key_changes_with_every_part():
    parts = dict(judge="local:abc", template="T {prompt}", prompt="T p", sample=0, settings={"temperature": 0.7})
    key = verdict_key(**parts)
    assert key == verdict_key(**parts) and len(key) == 64
    for name, other in (
        ("judge", "api:x"),
        ("template", "U {prompt}"),
        ("prompt", "T q"),
        ("sample", 1),
        ("settings", {"temperature": 0.0}),
    ):
        assert verdict_key(**{**parts, name: other}) != key, name


def test_a_second_judge_reads_what_the_first_stored(policy, tmp_path):
    settings = dict(
        template="Grade: {prompt} -> {response}",
        pairwise_template="{prompt}: A {first} B {second}",
        n_samples=2,
        max_new_tokens=6,
        cache_dir=tmp_path,
    )
    with cost.recording(None) as first_run:
        torch.manual_seed(0)
        first = LLMJudge(**settings).judge(CANDIDATES, policy)
    assert first_run.judge_requests["sent"] == 6 and first_run.judge_requests["cached"] == 0
    assert first_run.tokens["other"] > 0  # the local judge's tokens are counted
    with cost.recording(None) as second_run:
        torch.manual_seed(1)  # another seed: only the cache can give the same texts
        second = LLMJudge(**settings).judge(CANDIDATES, policy)
    assert [v.texts for v in second] == [v.texts for v in first]
    assert second_run.judge_requests["sent"] == 0 and second_run.judge_requests["cached"] == 6
    assert second_run.tokens["other"] == 0  # nothing was generated

    db = sqlite3.connect(tmp_path / FILE)
    ((dropped,),) = db.execute("SELECT key FROM verdicts ORDER BY key LIMIT 1").fetchall()
    db.execute("DELETE FROM verdicts WHERE key = ?", (dropped,))
    db.commit()
    with cost.recording(None) as third_run:
        third = LLMJudge(**settings).judge(CANDIDATES, policy)
    assert third_run.judge_requests["sent"] == 1 and third_run.judge_requests["cached"] == 5
    changed = [(i, j) for i, (a, b) in enumerate(zip(first, third)) for j in range(2) if a.texts[j] != b.texts[j]]
    assert len(changed) <= 1  # everything but the dropped sample is the stored text

    # a pairwise comparison whose two orders read the same (equal answers) is asked once per sample
    with cost.recording(None) as pairs_run:
        LLMJudge(**settings).compare([Comparison("Q?", "en", "same", "same")] * 2, policy)
    assert pairs_run.judge_requests["sent"] == 2 and pairs_run.judge_requests["cached"] == 2


def test_a_local_model_is_known_by_its_weights(policy):
    tokenizer, base = build_policy(model_cfg(lora=False))
    same = TextGenerator(base, tokenizer, device="cpu")
    assert policy.identity == same.identity  # a fresh adapter (B = 0) changes no output
    tokenizer, trained = build_policy(model_cfg(lora=True))
    with torch.no_grad():
        next(p for n, p in trained.named_parameters() if "lora_B" in n).add_(1e-3)
    assert TextGenerator(trained, tokenizer, device="cpu").identity != policy.identity


def test_generated_tokens_stop_at_the_first_end_of_sequence():
    new = torch.tensor([[5, 6, 2, 0, 0], [7, 8, 9, 10, 11], [2, 0, 0, 0, 0]])
    assert generated_tokens(new, [2]) == 3 + 5 + 1


WRITER = textwrap.dedent("""
    import sys
    from congrad.judging.cache import VerdictCache
    cache = VerdictCache(sys.argv[1])
    i = 0
    while True:  # one committed transaction of three entries after another, until killed
        cache.put([(f"k{i}-{j}", "judge", "prompt", j, f"k{i}-{j}" * 200) for j in range(3)])
        i += 1
""")


def test_a_writer_killed_at_any_moment_leaves_every_committed_entry_readable(tmp_path):
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], cwd=ROOT)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if (tmp_path / FILE).exists() and len(VerdictCache(tmp_path)) >= 300:
                break
            time.sleep(0.05)
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    db = sqlite3.connect(tmp_path / FILE)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    rows = db.execute("SELECT key, text FROM verdicts").fetchall()
    assert len(rows) >= 300 and len(rows) % 3 == 0  # whole transactions only
    assert all(text == key * 200 for key, text in rows)
    cache = VerdictCache(tmp_path)  # and it takes new entries
    cache.put([("after", "judge", "prompt", 0, "ok")])
    assert cache.get(["after", "missing"]) == {"after": "ok"} and (cache.hits, cache.misses) == (1, 1)

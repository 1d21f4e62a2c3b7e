"""judge=api against a scripted local HTTP server that answers in the shapes real servers use (OpenAI's
``{"error": {"message", "code"}}``, vLLM's ``{"object": "error", "message"}``, FastAPI's ``{"detail"}``): the
requests carry the judge's settings and the key in their header only; 408/429/5xx and dropped connections are
retried with exponential backoff and ``Retry-After``; a set-up the server refuses is one line naming the
setting; a server that stops answering mid-run stops the run and the rerun sends only what the cache lacks.
(``tests/test_judge_server.py`` runs the same judge against a real ``transformers serve``.)"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from congrad.errors import ConfigError, JudgeUnavailable
from congrad.judging.api import ApiJudge
from congrad.judging.verdicts import Candidate
from congrad.utils import cost

KEY_ENV, KEY = "CONGRAD_TEST_JUDGE_KEY", "sk-test-0123456789abcdef"
TEMPLATE = "Rate the reply.\nRequest: {prompt}\nReply: {response}"
CANDIDATES = [
    Candidate("What is 2+2?", "en", "Four."),
    Candidate("Wie viel ist 2+2?", "de", "Vier."),
    Candidate("Combien font 2+2 ?", "fr", "Quatre."),
]


def expected_score(prompt: str) -> int:
    return len(prompt) % 6


class Handler(BaseHTTPRequestHandler):
    """Pops one scripted answer per POST (status, JSON body, headers; None: drop the connection); with the
    script empty, a chat completion ``Score: <len(prompt) % 6>``."""

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server = self.server
        with server.lock:
            server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
            answer = server.script.pop(0) if server.script else None
        if answer == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        prompt = body["messages"][0]["content"]
        status, payload, headers = answer or (
            200,
            {
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": f"Score: {expected_score(prompt)}"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
            },
            {},
        )
        self._send(status, payload, headers)

    def do_GET(self):  # noqa: N802
        self._send(200, {"object": "list", "data": [{"id": "served-a"}, {"id": "served-b"}]}, {})

    def _send(self, status, payload, headers):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.script, httpd.requests, httpd.lock = [], [], threading.Lock()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def judge(server, **settings):
    values = dict(
        base_url=server.url,
        model="judge-x",
        template=TEMPLATE,
        n_samples=1,
        max_new_tokens=16,
        backoff=0.01,
        max_backoff=0.5,
        cache_dir=None,
    )
    values.update(settings)
    return ApiJudge(**values)


def test_requests_carry_the_settings_and_the_key_only_in_their_header(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    api = judge(
        server,
        api_key_env=KEY_ENV,
        n_samples=2,
        temperature=0.5,
        top_p=0.8,
        max_new_tokens=7,
        extra_body={"top_k": 5},
        seed=3,
    )
    (probe,) = server.requests
    assert probe["body"]["max_tokens"] == 1 and probe["path"] == "/v1/chat/completions"
    verdicts = api.judge(CANDIDATES[:1], policy=None)
    prompt = TEMPLATE.format(prompt="What is 2+2?", response="Four.")
    bodies = sorted((r["body"] for r in server.requests[1:]), key=lambda b: b["seed"])
    assert [b["seed"] for b in bodies] == sorted(api.model.request_seed(prompt, j) for j in (0, 1))
    assert len({b["seed"] for b in bodies}) == 2  # each sample its own draw
    for body in bodies:
        assert body == {
            "model": "judge-x",
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0.5,
            "top_p": 0.8,
            "max_tokens": 7,
            "seed": body["seed"],
            "top_k": 5,
        }
    assert {r["auth"] for r in server.requests} == {f"Bearer {KEY}"}
    assert verdicts[0].score == expected_score(prompt) and verdicts[0].texts == [f"Score: {expected_score(prompt)}"] * 2
    assert api.name == "api" and KEY not in api.model.identity
    judge(server, max_tokens_key="max_completion_tokens")
    assert "max_completion_tokens" in server.requests[-1]["body"] and "max_tokens" not in server.requests[-1]["body"]


def test_429_5xx_and_dropped_connections_are_retried_with_exponential_backoff(server):
    api = judge(server, backoff=0.1, max_backoff=1.0)
    server.script[:] = [
        (503, {"error": {"message": "overloaded"}}, {}),
        (429, {"error": {"message": "slow down"}}, {"Retry-After": "0.3"}),
        "drop",
        (408, {"detail": "timeout"}, {}),
    ]
    start = time.perf_counter()
    with cost.recording(None) as meter:
        verdicts = api.judge(CANDIDATES[:1], policy=None)
    elapsed = time.perf_counter() - start
    # waits: 0.1·2^0, Retry-After 0.3, 0.1·2^2, 0.1·2^3, each less up to 25% jitter (not Retry-After)
    assert 0.75 * (0.1 + 0.4 + 0.8) + 0.3 <= elapsed < 0.1 + 0.3 + 0.4 + 0.8 + 1.0
    assert len(server.requests) == 1 + 5 and verdicts[0].score is not None
    assert meter.judge_requests == {"sent": 1, "cached": 0, "retried": 4, "probes": 0}


def test_a_server_that_stops_answering_stops_the_run_and_the_rerun_sends_only_what_is_missing(server, tmp_path):
    api = judge(server, retries=1, max_concurrency=1, cache_dir=tmp_path / "cache")
    server.script[:] = [None, (503, {"error": {"message": "down"}}, {}), (503, {"error": {"message": "down"}}, {})]
    with pytest.raises(JudgeUnavailable) as stopped:
        api.judge(CANDIDATES, policy=None)
    message = str(stopped.value)
    assert f"judge.base_url={server.url}: the judge server stopped answering (503: down; 2 tries" in message
    assert f"1 of the 3 judgements asked for are stored in the verdict cache ({tmp_path / 'cache'})" in message
    sent_before = len(server.requests)
    with cost.recording(None) as meter:
        verdicts = judge(server, cache_dir=tmp_path / "cache").judge(CANDIDATES, policy=None)
    assert len(server.requests) - sent_before == 1 + 2  # the probe, and the two judgements the cache lacks
    assert meter.judge_requests == {"sent": 2, "cached": 1, "retried": 0, "probes": 1}
    prompts = [TEMPLATE.format(prompt=c.prompt, response=c.response) for c in CANDIDATES]
    assert [v.score for v in verdicts] == [expected_score(p) for p in prompts]


def openai_error(message, code=None):
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}


@pytest.mark.parametrize(
    "answer, key_env, expected",
    [
        (
            (401, openai_error(f"Incorrect API key provided: {KEY}.", "invalid_api_key"), {}),
            KEY_ENV,
            f"judge.api_key_env={KEY_ENV}: the server at {{url}} refuses its key "
            "(401: Incorrect API key provided: ***.)",
        ),
        (
            (401, {"detail": "Unauthorized"}, {}),
            None,
            "judge.api_key_env is not set, and the server at {url} wants a key",
        ),
        (
            (
                404,
                {
                    "object": "error",
                    "message": "The model `judge-x` does not exist.",
                    "type": "NotFoundError",
                    "code": 404,
                },
                {},
            ),
            None,
            "judge.model=judge-x: the server at {url} does not serve it (404: The model `judge-x` does not exist.); "
            "it serves: served-a, served-b",
        ),
        (
            (404, {"detail": "Not Found"}, {}),
            None,
            "judge.base_url={url}: no chat-completions endpoint at {url}/chat/completions (404: Not Found); "
            "an OpenAI-compatible base_url usually ends in /v1",
        ),
        (
            (429, openai_error("You exceeded your current quota.", "insufficient_quota"), {}),
            KEY_ENV,
            f"judge.api_key_env={KEY_ENV}: the account behind the key has no quota left (429: You exceeded",
        ),
        (
            (400, openai_error("Unsupported parameter: 'max_tokens'. Use 'max_completion_tokens' instead."), {}),
            None,
            "judge.base_url={url}: the server refuses the judge's requests (400: Unsupported parameter: 'max_tokens'.",
        ),
    ],
)
def test_a_probe_the_server_refuses_is_one_line_naming_the_setting(server, monkeypatch, answer, key_env, expected):
    monkeypatch.setenv(KEY_ENV, KEY)
    server.script[:] = [answer]
    with pytest.raises(ConfigError) as refused:
        judge(server, api_key_env=key_env)
    message = str(refused.value)
    assert message.startswith(expected.format(url=server.url)) and "\n" not in message and KEY not in message
    assert len(server.requests) == 1  # none of these is worth a retry


def test_no_server_at_base_url_and_a_bad_key_variable(server, monkeypatch):
    server.shutdown()
    server.server_close()
    with pytest.raises(
        ConfigError,
        match=rf"^judge.base_url={server.url}: no judge server answers there "
        r"\(ConnectError: .*; 2 tries, judge.retries=1\)$",
    ):
        judge(server, retries=1)
    with pytest.raises(ConfigError, match=r"^judge.model is not set: give the name of the model the server serves"):
        judge(server, model=None)
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(ConfigError, match=f"judge.api_key_env={KEY_ENV}: the environment variable is not set"):
        judge(server, api_key_env=KEY_ENV)
    with pytest.raises(ConfigError) as pasted:
        judge(server, api_key_env=KEY)  # the key itself where its variable's name belongs
    assert KEY not in str(pasted.value) and "not the key itself" in str(pasted.value)


def test_the_settings_are_checked_before_anything_runs(compose_config):
    from congrad.settings import check_settings

    cfg = compose_config(
        "evaluate",
        [
            "judge=api",
            "judge.model=m",
            "judge.base_url=localhost:8000",
            "judge.max_concurrency=0",
            "judge.max_tokens_key=max_new_tokens",
        ],
        resolve=False,
    )
    with pytest.raises(ConfigError) as bad:
        check_settings(cfg)
    message = str(bad.value)
    assert "judge.base_url='localhost:8000': must be an http:// or https:// address" in message
    assert "judge.max_concurrency=0: must be an integer >= 1" in message
    assert "judge.max_tokens_key='max_new_tokens': must be one of max_tokens, max_completion_tokens" in message

"""An LLM judge behind an OpenAI-compatible chat-completions API (``judge=api``): OpenAI, vLLM
(``vllm serve``), SGLang, TGI, ``transformers serve``, or any proxy that speaks the same protocol.

Each sampled judgement is one request, ``POST {base_url}/chat/completions``, with the filled-in template as
the user message, the judge's sampling settings (``temperature``, ``top_p``, ``max_new_tokens`` as
``max_tokens`` or ``max_completion_tokens``), a ``seed`` drawn from ``seed``, the prompt and the sample index
(servers that honour seeds, like vLLM and SGLang, then answer a rerun alike), and ``extra_body``. Up to
``max_concurrency`` requests are in flight. A request that fails with 408, 409, 429 or 5xx, a connection error
or a timeout is sent again up to ``retries`` times, after ``backoff`` seconds doubled at each retry up to
``max_backoff``, less up to 25% jitter (a ``Retry-After`` header is honoured up to ``max_backoff``); then
the run stops with :class:`~congrad.errors.JudgeUnavailable`, and the verdict cache keeps what came before.

Before anything expensive one probe request (one token) checks the set-up: a key the server refuses, a
model it does not serve or an address where no server answers is one line naming ``judge.api_key_env``,
``judge.model`` or ``judge.base_url`` (exit 2).

The API key is read from the environment variable that ``api_key_env`` names and goes into the
``Authorization`` header only: not into the config, the logs (a server message that quotes it is shown
masked), W&B or any file.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import random
import re
import threading
import typing
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Annotated, Any, ClassVar, Literal

import httpx
from pydantic import Field

from congrad.data.formats import Text
from congrad.data.tokenization import flatten_text
from congrad.errors import ConfigError, CongradError, JudgeUnavailable
from congrad.generation.sampling import Sampling
from congrad.judging.llm import LLMJudge, LLMJudgeSettings
from congrad.utils import cost, schema

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 429})  # and every 5xx
MaxTokensKey = Literal["max_tokens", "max_completion_tokens"]
MAX_TOKENS_KEYS = typing.get_args(MaxTokensKey)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _Stopped(Exception):
    """A request abandoned because another one failed for good."""


class _Exhausted(Exception):
    """The retries of a request are spent; ``failure`` says how its last try failed."""

    def __init__(self, failure: str):
        super().__init__(failure)
        self.failure = failure


class ChatCompletionsClient:
    """The judge model behind ``base_url`` (ends in ``/v1`` for most servers), as the verdict cache and
    :class:`~congrad.judging.llm.LLMJudge` use a model: an ``identity`` and :meth:`generate_each`."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        max_concurrency: int = 8,
        timeout: float = 120.0,
        retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        seed: int = 0,
        max_tokens_key: str = "max_tokens",
        extra_body: dict | None = None,
        progress: bool = True,
    ):
        if not model:
            raise ConfigError(
                f"judge.model is not set: give the name of the model the server serves "
                f"(judge.model=NAME; {base_url}/models lists them)"
            )
        if not str(base_url).startswith(("http://", "https://")):
            raise ConfigError(
                f"judge.base_url={base_url}: must be an http:// or https:// address (e.g. http://localhost:8000/v1)"
            )
        if max_tokens_key not in MAX_TOKENS_KEYS:
            raise ConfigError(f"judge.max_tokens_key={max_tokens_key}: must be one of {', '.join(MAX_TOKENS_KEYS)}")
        self.base_url = str(base_url).rstrip("/")
        self.model = str(model)
        self.api_key_env = api_key_env
        self.max_concurrency, self.retries = int(max_concurrency), int(retries)
        self.backoff, self.max_backoff = float(backoff), float(max_backoff)
        self.seed, self.max_tokens_key = int(seed), max_tokens_key
        self.extra_body = dict(extra_body or {})
        self.progress = progress
        self._secret = _read_key(api_key_env)
        headers = {"Authorization": f"Bearer {self._secret}"} if self._secret else {}
        self._http = httpx.Client(
            headers=headers,
            timeout=float(timeout),
            limits=httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency),
        )
        logging.getLogger("httpx").setLevel(logging.WARNING)  # no log line per request
        self._stop = threading.Event()

    @property
    def identity(self) -> str:
        """The judge model as the verdict cache knows it: the served model's name (and ``extra_body``, which
        may change what it answers); not the address, so the same model on another server shares entries."""
        extra = json.dumps(self.extra_body, sort_keys=True) if self.extra_body else ""
        return f"api:{self.model}{':' + extra if extra else ''}"

    # ---- requests ------------------------------------------------------------------------------------------
    def _body(self, prompt: str, sampling: Sampling, seed: int, max_tokens: int) -> dict:
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            self.max_tokens_key: max_tokens,
            "seed": seed,
            **self.extra_body,
        }

    def request_seed(self, prompt: str, sample: int) -> int:
        """A seed per (prompt, sample index): reproducible, and independent across the responses judged."""
        digest = hashlib.sha256(f"{self.seed}\0{sample}\0{prompt}".encode()).digest()
        return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF

    def _post(self, body: dict) -> tuple[httpx.Response, int]:
        """The first answer that is not to be retried, and the number of retries it took; :class:`_Exhausted`
        once the retries are spent."""
        for attempt in range(self.retries + 1):
            if self._stop.is_set():
                raise _Stopped
            try:
                response = self._http.post(f"{self.base_url}/chat/completions", json=body)
            except httpx.TransportError as err:
                failure, wait = f"{type(err).__name__}: {self._redact(str(err)) or 'no answer'}", None
            else:
                if not _retryable(response):
                    return response, attempt
                failure, wait = f"{response.status_code}: {self.message(response)}", _retry_after(response)
            if attempt == self.retries:
                break
            delay = min(
                wait if wait is not None else self.backoff * 2**attempt * (1 - 0.25 * random.random()), self.max_backoff
            )
            log.info(
                "judge: %s from %s; retry %d of %d in %.1f s", failure, self.base_url, attempt + 1, self.retries, delay
            )
            if self._stop.wait(delay):
                raise _Stopped
        raise _Exhausted(f"{failure}; {self.retries + 1} tries, judge.retries={self.retries}")

    def _complete(self, prompt: str, sampling: Sampling, sample: int) -> tuple[str, int, int]:
        """``(text, completion tokens, retries)`` of one judgement."""
        body = self._body(prompt, sampling, self.request_seed(prompt, sample), sampling.max_new_tokens)
        try:
            response, retried = self._post(body)
        except _Exhausted as err:
            raise JudgeUnavailable(
                f"judge.base_url={self.base_url}: the judge server stopped answering ({err.failure})"
            ) from None
        if response.status_code >= 400:
            raise CongradError(
                f"judge.base_url={self.base_url}: the server refused a judgement request "
                f"({response.status_code}: {self.message(response)})"
            )
        text, tokens = self._parse(response)
        return text, tokens, retried

    def _parse(self, response: httpx.Response) -> tuple[str, int]:
        try:
            data = response.json()
            content = data["choices"][0]["message"].get("content") or ""
            tokens = int((data.get("usage") or {}).get("completion_tokens") or 0)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise CongradError(
                f"judge.base_url={self.base_url}: the answer is not an OpenAI chat completion "
                f"({self._redact(response.text[:200])!r})"
            ) from None
        return str(content), tokens

    def generate_each(
        self,
        items: Sequence[tuple[Text, int]],
        sampling: Sampling,
        desc: str = "judge",
        max_prompt_length: int | None = None,
    ) -> Iterator[tuple[list[int], list[str]]]:
        """One judgement per ``(prompt, sample index)`` item, ``max_concurrency`` requests at a time, yielded
        as each arrives: ``([position], [text])``. ``max_prompt_length`` does not apply (the server
        tokenizes; a prompt longer than its context is refused)."""
        from tqdm.auto import tqdm

        if not items:
            return
        self._stop.clear()
        pool = ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(items)), thread_name_prefix="judge")
        try:
            futures = {
                pool.submit(self._complete, flatten_text(prompt), sampling, sample): position
                for position, (prompt, sample) in enumerate(items)
            }
            for future in tqdm(
                as_completed(futures), total=len(futures), desc=desc, unit="request", disable=not self.progress
            ):
                text, tokens, retried = future.result()
                cost.add_tokens(tokens)
                cost.add_judge_requests(retried=retried)
                yield [futures[future]], [text]
        finally:
            self._stop.set()  # requests still waiting to retry give up
            pool.shutdown(wait=True, cancel_futures=True)

    # ---- the probe -----------------------------------------------------------------------------------------
    def probe(self, sampling: Sampling) -> None:
        """One request of one token with the judge's settings; a set-up the server refuses is a
        :class:`ConfigError` naming the setting to fix."""
        self._stop.clear()
        cost.add_judge_requests(probes=1)
        body = self._body("Reply with the word OK.", sampling, self.seed, 1)
        try:
            response, _ = self._post(body)
        except _Exhausted as err:
            raise ConfigError(
                f"judge.base_url={self.base_url}: no judge server answers there ({err.failure})"
            ) from None
        if response.status_code < 400:
            self._parse(response)
            log.info("judge: %s at %s answers", self.model, self.base_url)
            return
        raise ConfigError(self._probe_problem(response))

    def _probe_problem(self, response: httpx.Response) -> str:
        status, message, code = response.status_code, self.message(response), _error_code(response)
        answer = f"{status}: {message}"
        if status in (401, 403):
            if self.api_key_env is None:
                return (
                    f"judge.api_key_env is not set, and the server at {self.base_url} wants a key ({answer}): "
                    "set judge.api_key_env to the name of an environment variable that holds it"
                )
            return f"judge.api_key_env={self.api_key_env}: the server at {self.base_url} refuses its key ({answer})"
        if status == 429 and code == "insufficient_quota":
            return f"judge.api_key_env={self.api_key_env}: the account behind the key has no quota left ({answer})"
        mentions_model = self.model in message or "model" in message.lower() or code == "model_not_found"
        if (status == 404 and mentions_model) or (status in (400, 422) and self.model in message):
            served = self.served_models()
            listed = f"; it serves: {', '.join(served)}" if served else ""
            return f"judge.model={self.model}: the server at {self.base_url} does not serve it ({answer}){listed}"
        if status == 404:
            return (
                f"judge.base_url={self.base_url}: no chat-completions endpoint at {self.base_url}/chat/completions "
                f"({answer}); an OpenAI-compatible base_url usually ends in /v1"
            )
        return (
            f"judge.base_url={self.base_url}: the server refuses the judge's requests ({answer}); check "
            f"judge.max_tokens_key, judge.extra_body and the sampling settings (judge.temperature, judge.top_p)"
        )

    def served_models(self, limit: int = 10) -> list[str]:
        """The model ids ``GET {base_url}/models`` lists (empty when it lists none)."""
        try:
            data = self._http.get(f"{self.base_url}/models").json()["data"]
            return [str(entry["id"]) for entry in data][:limit]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return []

    def message(self, response: httpx.Response) -> str:
        """The server's error message on one line, the key masked: OpenAI's ``{"error": {"message"}}``,
        vLLM's ``{"message"}``, TGI's ``{"error"}``, FastAPI's ``{"detail"}``, else the body's start."""
        try:
            data = response.json()
        except ValueError:
            data = None
        text = response.text
        if isinstance(data, dict):
            error = data.get("error")
            found = (
                (error.get("message") if isinstance(error, dict) else error)
                or data.get("message")
                or data.get("detail")
            )
            if found:
                text = found if isinstance(found, str) else json.dumps(found)
        text = " ".join(self._redact(str(text)).split())
        return (text[:300] + "…") if len(text) > 300 else (text or response.reason_phrase)

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text


def _read_key(api_key_env: str | None) -> str | None:
    if api_key_env is None:
        return None
    if not _ENV_NAME.fullmatch(str(api_key_env)):
        # never echo the value: it may be the key itself, pasted where its variable's name belongs
        raise ConfigError(
            "judge.api_key_env must be the name of an environment variable (letters, digits and _), "
            "not the key itself: export the key, e.g. OPENAI_API_KEY, and give its name"
        )
    key = os.environ.get(api_key_env, "").strip()
    if not key:
        raise ConfigError(
            f"judge.api_key_env={api_key_env}: the environment variable is not set (export it with the API key)"
        )
    return key


def _retryable(response: httpx.Response) -> bool:
    if response.status_code == 429 and _error_code(response) == "insufficient_quota":
        return False  # an empty account does not refill by waiting
    return response.status_code in RETRY_STATUS or response.status_code >= 500


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (a number of seconds), if the server sent one."""
    for header, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        try:
            value = float(response.headers[header]) * scale
        except (KeyError, ValueError):
            continue
        if value >= 0:
            return value
    return None


def _error_code(response: httpx.Response) -> str | None:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return None
    return str(error.get("code")) if isinstance(error, dict) and error.get("code") else None


def _http_url(value: Any) -> str | None:
    return (
        None if isinstance(value, str) and re.match(r"^https?://[^/\s]+", value) else "an http:// or https:// address"
    )


# The keyword arguments ApiJudge hands to its client; the rest go to the LLM judge.
CLIENT_ARGUMENTS = frozenset(inspect.signature(ChatCompletionsClient).parameters) - {"base_url", "model"}


class ApiJudgeSettings(LLMJudgeSettings):
    """``judge=api``: the arguments of :class:`ApiJudge` (the server, how it is called) and of the LLM judge."""

    group: ClassVar[str] = "judge"
    base_url: schema.checked(_http_url, str)
    model: schema.Text | None
    api_key_env: schema.Text | None
    max_concurrency: Annotated[int, Field(ge=1)]
    timeout: Annotated[float, Field(gt=0)]
    retries: Annotated[int, Field(ge=0)]
    backoff: Annotated[float, Field(ge=0)]
    max_backoff: Annotated[float, Field(ge=0)]
    max_tokens_key: MaxTokensKey
    seed: int
    extra_body: schema.FreeForm | None


class ApiJudge(LLMJudge):
    """:class:`LLMJudge` whose model is a server (``conf/judge/api.yaml``); the rubric, the pairwise template,
    ``n_samples``, sampling and the verdict cache are the LLM judge's. Probes the server when built, which
    Hydra does before any model loads."""

    def __init__(self, base_url: str, model: str, **settings):
        """``settings``: :class:`ChatCompletionsClient`'s keyword arguments (the one list of them and their
        defaults) and :class:`LLMJudge`'s."""
        server = {key: settings.pop(key) for key in CLIENT_ARGUMENTS & settings.keys()}
        client = ChatCompletionsClient(base_url, model, **server)
        super().__init__(model=client, **settings)
        client.probe(self.sampling)

    @property
    def name(self) -> str:
        return "api"

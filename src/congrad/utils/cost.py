"""What a run cost, stage by stage: the ``cost.json`` of every ``train.py`` run (and of each self-rewarding
iteration), ``filter.py`` and ``evaluate.py`` run, written into the run directory (docs/running.md, "Cost of a run").

The stages of the pipeline open :func:`stage` around their work (``generate``, ``judge``, ``sketch``: the
ConGrad pass, ``train``, ``evaluate``); the components count what they do (:func:`add_tokens`,
:func:`add_judge_requests`, :func:`add_sketched`) into the meter of the innermost :func:`recording`, and
nothing when none is open. Stages are exclusive: one opened inside another (the ConGrad pass and the
evaluation inside the fit) stops the outer one's clock, so the stages and ``other`` (loading models and data,
writing files) add up to ``total``, the wall time of the recording.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from congrad.utils.io import write_json

STAGES = ("generate", "judge", "sketch", "train", "evaluate")
TOKEN_STAGES = ("generate", "judge", "evaluate")  # the stages that generate text
OTHER = "other"  # time outside every stage, tokens outside the generating ones
REQUESTS = ("sent", "cached", "retried", "probes")
FILE = "cost.json"


class CostMeter:
    """Wall seconds and generated tokens per stage, judge requests and sketched pairs of one recording."""

    def __init__(self):
        self._lock = threading.Lock()
        self._start = self._mark = time.perf_counter()
        self._stack: list[str] = []
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.tokens = dict.fromkeys((*TOKEN_STAGES, OTHER), 0)
        self.judge_requests = dict.fromkeys(REQUESTS, 0)
        self.pairs_sketched = 0
        self.sketch_passes = 0

    def _switch(self, now: float) -> None:
        if self._stack:
            self.seconds[self._stack[-1]] += now - self._mark
        self._mark = now

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r} (one of {', '.join(STAGES)})")
        with self._lock:
            self._switch(time.perf_counter())
            self._stack.append(name)
        try:
            yield
        finally:
            with self._lock:
                self._switch(time.perf_counter())
                self._stack.pop()

    def add_tokens(self, n: int) -> None:
        with self._lock:
            where = self._stack[-1] if self._stack and self._stack[-1] in TOKEN_STAGES else OTHER
            self.tokens[where] += int(n)

    def add_judge_requests(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                self.judge_requests[name] += int(n)

    def add_sketched(self, pairs: int) -> None:
        with self._lock:
            self.pairs_sketched += int(pairs)
            self.sketch_passes += 1

    def snapshot(self) -> dict:
        """The ``cost.json`` content so far (an open stage counts up to now)."""
        with self._lock:
            now = time.perf_counter()
            seconds = dict(self.seconds)
            if self._stack:
                seconds[self._stack[-1]] += now - self._mark
            return summarize(
                seconds,
                now - self._start,
                dict(self.tokens),
                dict(self.judge_requests),
                self.pairs_sketched,
                self.sketch_passes,
            )


def summarize(
    seconds: dict, total: float, tokens: dict, judge_requests: dict, pairs_sketched: int, sketch_passes: int
) -> dict:
    """The ``cost.json`` layout from the raw numbers; ``sketch_to_train`` is the ConGrad pass's seconds over
    the training seconds (null without training)."""
    stages = {name: round(seconds.get(name, 0.0), 3) for name in STAGES}
    train = seconds.get("train", 0.0)
    return {
        "seconds": {
            **stages,
            OTHER: round(max(0.0, total - sum(seconds.get(n, 0.0) for n in STAGES)), 3),
            "total": round(total, 3),
        },
        "tokens_generated": {
            **{name: int(tokens.get(name, 0)) for name in (*TOKEN_STAGES, OTHER)},
            "total": int(sum(tokens.values())),
        },
        "judge_requests": {name: int(judge_requests.get(name, 0)) for name in REQUESTS},
        "pairs_sketched": int(pairs_sketched),
        "sketch_passes": int(sketch_passes),
        "sketch_to_train": round(seconds.get("sketch", 0.0) / train, 4) if train > 0 else None,
    }


def total(costs: Iterable[dict]) -> dict:
    """The sum of several ``cost.json`` contents (the iterations of a self-rewarding run), the ratio
    recomputed from the summed seconds."""
    costs = list(costs)
    seconds = {name: sum(c["seconds"][name] for c in costs) for name in STAGES}
    tokens = {name: sum(c["tokens_generated"][name] for c in costs) for name in (*TOKEN_STAGES, OTHER)}
    requests = {name: sum(c["judge_requests"][name] for c in costs) for name in REQUESTS}
    summed = summarize(
        seconds,
        sum(c["seconds"]["total"] for c in costs),
        tokens,
        requests,
        sum(c["pairs_sketched"] for c in costs),
        sum(c["sketch_passes"] for c in costs),
    )
    return {**summed, "parts": len(costs), "finished": all(c.get("finished", True) for c in costs)}


_active: list[CostMeter] = []


@contextmanager
def recording(path: str | Path | None) -> Iterator[CostMeter]:
    """Count into a fresh meter while the block runs; write ``path`` (unless None) when it ends, also when it
    fails (``"finished": false``: what a run cost up to its error or interruption)."""
    meter = CostMeter()
    _active.append(meter)
    finished = False
    try:
        yield meter
        finished = True
    finally:
        _active.remove(meter)
        if path is not None:
            write_json(path, {**meter.snapshot(), "finished": finished})


def current() -> CostMeter | None:
    return _active[-1] if _active else None


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Time the block as stage ``name`` of the open recording (nothing without one)."""
    meter = current()
    if meter is None:
        yield
        return
    with meter.stage(name):
        yield


def add_tokens(n: int) -> None:
    if (meter := current()) is not None:
        meter.add_tokens(n)


def add_judge_requests(**counts: int) -> None:
    """``sent`` (judgements the judge produced: requests to a server, generations of a local judge),
    ``cached`` (answered from the verdict cache), ``retried`` (requests sent again), ``probes``."""
    if (meter := current()) is not None:
        meter.add_judge_requests(**counts)


def add_sketched(pairs: int) -> None:
    if (meter := current()) is not None:
        meter.add_sketched(pairs)


def metrics(cost: dict, prefix: str = "cost") -> dict[str, float]:
    """``cost`` as flat logger metrics: ``cost/seconds/train``, ``cost/judge_requests/sent``, ...,
    ``cost/sketch_to_train``."""
    out: dict[str, float] = {}
    for group in ("seconds", "tokens_generated", "judge_requests"):
        for name, value in cost[group].items():
            out[f"{prefix}/{group}/{name}"] = float(value)
    for name in ("pairs_sketched", "sketch_passes", "sketch_to_train"):
        if cost.get(name) is not None:
            out[f"{prefix}/{name}"] = float(cost[name])
    return out


def log_cost(loggers, cost: dict, step: int) -> None:
    """:func:`metrics` into Lightning loggers, flushed (after a fit the trainer has already saved them)."""
    values = metrics(cost)
    for logger in loggers:
        logger.log_metrics(values, step=step)
        logger.save()

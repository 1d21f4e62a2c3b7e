"""Every setting with a closed set of values or a range, checked on the composed config before any model or
data loads: ``check_settings(cfg)`` raises one :class:`~congrad.errors.ConfigError` naming each key that is
out of bounds, its value and what it allows (the entry points print it and exit 2).

It checks the groups that ``cfg`` has (``data``, ``model``, ``dpo``, ``sketch``, ``filter``, ``trainer``,
``self_reward``, ``judge``, ``eval``) and the top-level keys of ``train.py`` and ``filter.py``, so any entry
point over this config tree can call it first thing. The allowed sets come from the code that uses them
(``AGGREGATORS``, ``LOSS_TYPES``, the kernel's width range, ...); unknown keys are left to the code that
reads the group.
"""

from __future__ import annotations

import math
import re
import typing
from collections.abc import Callable, Iterator
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from congrad.data.formats import ON_BAD_ROW, requested_languages
from congrad.data.languages import FORMS, is_iso_639_1, normalize_language
from congrad.errors import ConfigError, CongradError
from congrad.evaluation.harness import METRICS as HARNESS_METRICS
from congrad.filtering.sketching import METHODS, SKETCHES
from congrad.filtering.surgery import AGGREGATORS
from congrad.judging.api import MAX_TOKENS_KEYS
from congrad.kernels import MAX_WIDTH, MIN_WIDTH
from congrad.models.guard import ON_NONFINITE
from congrad.models.losses import LOSS_TYPES

_ABSENT = object()
DTYPES = ("float32", "bfloat16", "float16", "float64")
DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_settings(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` listing every setting of ``cfg`` outside what it allows."""
    problems = list(_problems(cfg))
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} settings are out of bounds:\n  " + "\n  ".join(problems))


# ---- rules: each returns None when the value is allowed, else what is allowed -------------------------------
Rule = Callable[[Any], "str | None"]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def integer(lo: int | None = None, hi: int | None = None) -> Rule:
    what = (
        "an integer"
        + (f" >= {lo}" if lo is not None and hi is None else "")
        + (f" from {lo} to {hi}" if lo is not None and hi is not None else "")
    )

    def rule(v):
        ok = _is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi)
        return None if ok else what

    return rule


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False) -> Rule:
    if lo is not None and hi is not None:
        what = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    elif lo is not None:
        what = f"a number {'>' if lo_open else '>='} {lo:g}"
    else:
        what = "a finite number"

    def rule(v):
        if not _is_number(v):
            return what
        if lo is not None and (v < lo or (lo_open and v == lo)):
            return what
        if hi is not None and (v > hi or (hi_open and v == hi)):
            return what
        return None

    return rule


def choice(options: typing.Iterable[Any]) -> Rule:
    options = tuple(options)

    def rule(v):
        ok = any(v == o and type(v) is type(o) for o in options)  # True is not 1, 1.0 is not "1.0"
        return None if ok else "one of " + ", ".join(str(o) for o in options)

    return rule


def boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def text(v: Any) -> str | None:
    return None if isinstance(v, str) and v.strip() else "a non-empty string"


def http_url(v: Any) -> str | None:
    return None if isinstance(v, str) and re.match(r"^https?://[^/\s]+", v) else "an http:// or https:// address"


def optional(rule: Rule) -> Rule:
    def wrapped(v):
        problem = rule(v) if v is not None else None
        return None if problem is None else f"{problem}, or null"

    return wrapped


def power_of_two(lo: int, hi: int) -> Rule:
    def rule(v):
        ok = _is_int(v) and lo <= v <= hi and v & (v - 1) == 0
        return None if ok else f"a power of two from {lo} (2^{lo.bit_length() - 1}) to {hi} (2^{hi.bit_length() - 1})"

    return rule


def params_selector(v: Any) -> str | None:
    if v in ("lora", "all"):
        return None
    if isinstance(v, str) and v:
        try:
            re.compile(v)
            return None
        except re.error as err:
            return f"lora, all, or a regular expression over parameter names (this one does not compile: {err})"
    return "lora, all, or a regular expression over parameter names"


def languages(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, (list, tuple, str)):
        try:
            requested_languages(v)
            return None
        except CongradError:
            pass
    return "null (every language) or a non-empty list of lower-case ISO 639-1 codes, e.g. [de, fr]"


def names(v: Any) -> str | None:
    ok = isinstance(v, (list, tuple)) and all(isinstance(n, str) and n.strip() for n in v)
    return None if ok else "a list of names, e.g. [congrad_mc, belebele_deu_Latn] ([] for none)"


def language(v: Any) -> str | None:
    found = normalize_language(v) if v is not None else None
    ok = v is None or (found is not None and found.code is not None)
    return None if ok else f"null or a language with an ISO 639-1 code: {FORMS}"


def columns(v: Any) -> str | None:
    ok = v is None or (
        isinstance(v, dict)
        and all(
            isinstance(f, str)
            and f
            or (isinstance(f, (list, tuple)) and f and all(isinstance(x, str) and x for x in f))
            for f in v.values()
        )
    )
    return None if ok else "a mapping of our field -> the source's field (dotted: nested), or to a list of fields"


def lang_codes(v: Any) -> str | None:
    ok = v is None or (isinstance(v, dict) and all(is_iso_639_1(k) and isinstance(c, str) and c for k, c in v.items()))
    return None if ok else "a mapping of ISO 639-1 code -> the set's own code of the language, e.g. {de: german}"


def source_settings(prefix: str) -> dict[str, Rule]:
    """How a data source is read (:class:`congrad.data.sources.Source`), under ``prefix``."""
    return {
        f"{prefix}.name": optional(text),
        f"{prefix}.revision": optional(text),
        f"{prefix}.columns": columns,
        f"{prefix}.language": language,
        f"{prefix}.lang_codes": lang_codes,
        f"{prefix}.per_language": optional(integer(1)),
        f"{prefix}.sample": boolean,
        f"{prefix}.min_chars": optional(integer(0)),
        f"{prefix}.max_chars": optional(integer(1)),
        f"{prefix}.gated": boolean,
    }


def device(v: Any) -> str | None:
    return None if isinstance(v, str) and DEVICE.match(v) else "auto, cpu, cuda or cuda:N"


def lightning_precision(v: Any) -> str | None:
    from lightning_fabric import connector

    allowed = [a for alias in typing.get_args(connector._PRECISION_INPUT) for a in typing.get_args(alias)]
    shown = ", ".join(dict.fromkeys(str(a) for a in allowed))
    return None if v in allowed and not isinstance(v, bool) else f"one of {shown}"


def lightning_accelerator(v: Any) -> str | None:
    from pytorch_lightning.accelerators import AcceleratorRegistry

    allowed = ["auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators())]
    return None if v in allowed else "one of " + ", ".join(allowed)


def lightning_strategy(v: Any) -> str | None:
    from pytorch_lightning.strategies import StrategyRegistry

    if isinstance(v, dict) and isinstance(v.get("_target_"), str):  # a strategy object, e.g. trainer=fsdp's
        return None
    allowed = ["auto", *StrategyRegistry.available_strategies()]
    return (
        None
        if v in allowed
        else ("auto, ddp, fsdp, deepspeed, ... (a Lightning strategy name), or a config with a _target_")
    )


def lightning_devices(v: Any) -> str | None:
    ok = (
        v == "auto"
        or (_is_int(v) and (v >= 1 or v == -1))
        or (isinstance(v, (list, tuple)) and v and all(_is_int(d) and d >= 0 for d in v))
        or (isinstance(v, str) and re.fullmatch(r"\d+(,\d*)*|-1", v) is not None)
    )
    return None if ok else "auto, a number of devices >= 1 (-1: all), or a list of device indices"


# ---- the settings ---------------------------------------------------------------------------------------------
DATA = {
    **source_settings("data"),
    "data.split": text,
    "data.languages": languages,
    "data.on_bad_row": choice(ON_BAD_ROW),
    "data.val_path": optional(text),
    "data.val_fraction": number(0, 1, hi_open=True),
    "data.max_length": integer(2),
    "data.max_prompt_length": integer(1),
    "data.batch_size": integer(1),
    "data.eval_batch_size": optional(integer(1)),
    "data.num_workers": integer(0),
    "data.seed": integer(),
}
MODEL = {
    "model.backbone.dtype": choice(DTYPES),
    "model.gradient_checkpointing": boolean,
    "model.lora.r": integer(1),
    "model.lora.alpha": number(0, lo_open=True),
    "model.lora.dropout": number(0, 1, hi_open=True),
    "model.lora.adapter_path": optional(text),
}
DPO = {
    "dpo.beta": number(0, lo_open=True),
    "dpo.loss_type": choice(LOSS_TYPES),
    "dpo.label_smoothing": number(0, 0.5, hi_open=True),
    "dpo.length_penalty": number(0),
    "dpo.on_nonfinite": choice(ON_NONFINITE),
    "dpo.optimizer.lr": number(0, lo_open=True),
    "dpo.optimizer.weight_decay": number(0),
    "dpo.scheduler.num_warmup_steps": integer(0),
}
SKETCH = {
    "sketch.kind": choice(SKETCHES),
    "sketch.width": power_of_two(MIN_WIDTH, MAX_WIDTH),
    "sketch.seed": integer(),
    "sketch.params": params_selector,
    "sketch.method": choice(METHODS),
    "sketch.chunk_mb": number(0, lo_open=True),
    "sketch.batch_size": optional(integer(1)),
}
FILTER = {
    "filter.aggregator": choice(AGGREGATORS),
    "filter.keep_ratio": optional(number(0, 1, lo_open=True)),
    "filter.threshold": optional(number(-1, 1)),
    "filter.per_language": boolean,
    "filter.min_per_language": integer(0),
    "filter.ema": number(0, 1, hi_open=True),
    "filter.gradvac_target": number(-1, 1, lo_open=True, hi_open=True),
    "filter.normalize": boolean,
    "filter.seed": integer(),
}
TRAINER = {
    "trainer.max_epochs": integer(1),
    "trainer.accelerator": lightning_accelerator,
    "trainer.strategy": lightning_strategy,
    "trainer.devices": lightning_devices,
    "trainer.precision": lightning_precision,
    "trainer.gradient_clip_val": optional(number(0)),
    "trainer.accumulate_grad_batches": integer(1),
    "trainer.log_every_n_steps": integer(1),
    "trainer.check_val_every_n_epoch": optional(integer(1)),
    "trainer.reload_dataloaders_every_n_epochs": integer(0),
}
SELF_REWARD = {
    **source_settings("self_reward.prompts"),
    "self_reward.prompts.path": text,
    "self_reward.prompts.languages": languages,
    "self_reward.prompts.per_language": optional(integer(1)),
    "self_reward.prompts.on_bad_row": choice(ON_BAD_ROW),
    "self_reward.prompts.per_iteration": optional(integer(1)),
    "self_reward.reference": choice(("previous", "initial")),
    "self_reward.generation.num_responses": integer(2),
    "self_reward.generation.temperature": number(0),
    "self_reward.generation.top_p": number(0, 1, lo_open=True),
    "self_reward.generation.top_k": integer(0),
    "self_reward.generation.max_new_tokens": integer(1),
    "self_reward.batch_size": integer(1),
    "self_reward.max_prompt_length": integer(1),
    "self_reward.device": device,
    "self_reward.language_match": boolean,
    "self_reward.min_score_gap": number(0),
}
JUDGE = {
    "judge.n_samples": integer(1),
    "judge.temperature": number(0),
    "judge.top_p": number(0, 1, lo_open=True),
    "judge.max_new_tokens": integer(1),
    "judge.max_prompt_length": integer(1),
    "judge.script_weight": number(0),
    "judge.length_weight": number(0),
    "judge.repetition_weight": number(0),
    "judge.min_chars": integer(1),
    "judge.max_chars": integer(1),
    "judge.cache_dir": optional(text),
    "judge.base_url": http_url,
    "judge.max_concurrency": integer(1),
    "judge.timeout": number(0, lo_open=True),
    "judge.retries": integer(0),
    "judge.backoff": number(0),
    "judge.max_backoff": number(0),
    "judge.max_tokens_key": choice(MAX_TOKENS_KEYS),
    "judge.seed": integer(),
}
EVAL = {
    "eval.languages": languages,
    "eval.seen": languages,
    "eval.device": device,
    "eval.batch_size": integer(1),
    **{f"eval.{part}.enabled": boolean for part in ("pairs", "win_rate", "nll", "harness")},
    **{key: rule for part in ("pairs", "win_rate", "nll") for key, rule in source_settings(f"eval.{part}").items()},
    **{f"eval.{part}.languages": languages for part in ("pairs", "win_rate", "nll")},
    "eval.win_rate.against": choice(("baseline", "reference")),
    "eval.win_rate.generation.temperature": number(0),
    "eval.win_rate.generation.top_p": number(0, 1, lo_open=True),
    "eval.win_rate.generation.top_k": integer(0),
    "eval.win_rate.generation.max_new_tokens": integer(1),
    "eval.win_rate.bootstrap": integer(1),
    "eval.harness.tasks": names,
    "eval.harness.metric": choice(HARNESS_METRICS),
    "eval.harness.num_fewshot": optional(integer(0)),
    "eval.harness.limit": optional(integer(1)),
    "eval.harness.batch_size": integer(1),
    "eval.harness.apply_chat_template": boolean,
}
TOP = {
    "seed": integer(),
    "iterations": integer(0),
    "ckpt_path": optional(text),
    "resume_rescore": boolean,
    "overwrite": boolean,
    "device": device,
    "callbacks.congrad.progress": boolean,
}
SETTINGS = {**TOP, **DATA, **MODEL, **DPO, **SKETCH, **FILTER, **TRAINER, **SELF_REWARD, **JUDGE, **EVAL}


def _problems(cfg: DictConfig) -> Iterator[str]:
    values = {}
    for key, rule in SETTINGS.items():
        value = _select(cfg, key)
        if isinstance(value, _Unresolvable):
            yield f"{key}: {value.reason}"
            continue
        if value is _ABSENT:
            continue
        values[key] = value
        problem = rule(value)
        if problem is not None:
            yield f"{key}={_show(value)}: must be {problem}"
    yield from _relations(cfg, values)


def _relations(cfg: DictConfig, v: dict[str, Any]) -> Iterator[str]:
    """Rules that tie settings together."""
    if "filter.aggregator" in v:  # the filter group is there
        keep_ratio, threshold = v.get("filter.keep_ratio"), v.get("filter.threshold")
        if (keep_ratio is None) == (threshold is None):
            yield (
                f"filter.keep_ratio={_show(keep_ratio)}, filter.threshold={_show(threshold)}: set exactly one "
                "of them (keep_ratio in (0, 1] keeps the best share; threshold in [-1, 1] keeps scores above "
                "it), the other to null"
            )
    length, prompt = v.get("data.max_length"), v.get("data.max_prompt_length")
    if _is_int(length) and _is_int(prompt) and not prompt < length:
        yield (
            f"data.max_prompt_length={prompt}: must be less than data.max_length ({length}), which holds "
            "the prompt and a completion"
        )
    low, high = v.get("judge.min_chars"), v.get("judge.max_chars")
    if _is_int(low) and _is_int(high) and low > high:
        yield f"judge.min_chars={low}: must be at most judge.max_chars ({high})"
    weights = [v.get(f"judge.{name}_weight") for name in ("script", "length", "repetition")]
    if all(_is_number(w) for w in weights) and not math.isclose(sum(weights), 5.0):
        yield (
            f"judge.script_weight + judge.length_weight + judge.repetition_weight = {sum(weights):g}: must be 5, "
            "the top of the rubric scale"
        )
    reload = v.get("trainer.reload_dataloaders_every_n_epochs")
    if _select(cfg, "callbacks.congrad") not in (_ABSENT, None) and reload is not None and reload != 1:
        yield (
            f"trainer.reload_dataloaders_every_n_epochs={_show(reload)}: must be 1 while the ConGrad filter is "
            "on (it prunes the training set between epochs); switch the filter off with callbacks.congrad=null"
        )
    if "output_dir" in cfg.keys() and OmegaConf.is_missing(cfg, "output_dir"):
        yield "output_dir is required: give output_dir=DIR on the command line"


class _Unresolvable:
    def __init__(self, reason: str):
        self.reason = reason


def _select(cfg: DictConfig, key: str) -> Any:
    """The resolved value at ``key`` as plain Python; ``_ABSENT`` when the key (or its group) is not there."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node.keys():
            return _ABSENT
        if OmegaConf.is_missing(node, part):
            return _Unresolvable("is required (???): set it on the command line")
        try:
            node = node[part]
        except Exception as err:  # an interpolation that does not resolve
            return _Unresolvable(f"cannot be resolved ({type(err).__name__}: {str(err).splitlines()[0]})")
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def _show(value: Any) -> str:
    return "null" if value is None else repr(value) if isinstance(value, str) else str(value)

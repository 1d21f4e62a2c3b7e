"""Every setting that names something outside the project, checked before anything expensive loads:
``check_references(cfg, program)`` raises one :class:`~congrad.errors.ConfigError` with a line per reference
that cannot be used, each naming the setting, its value and what is wrong (the entry points print it and
exit 2). The entry points call it right after :func:`congrad.settings.check_settings`.

One check per kind of reference:

- a model or tokenizer (``model.name_or_path``, ``model.{tokenizer,backbone}.name_or_path``,
  ``judge.model.name_or_path``): a readable local folder with a model's ``config.json`` / a tokenizer's
  files, or a hub id that the local Hugging Face cache holds, or that this user may read on the hub;
- a trained adapter (``model.lora.adapter_path``, ``model.merge_adapters``, ``eval.baseline_adapters``, the
  adapters of an evaluated ``run_dir``): a folder whose ``adapter_config.json`` is a peft config (a known
  ``peft_type``) beside the adapter's weights, or a hub id as above;
- a checkpoint (``ckpt_path``): :func:`congrad.utils.checkpoints.inspect_checkpoint`;
- a data or evaluation set (``data.path``, ``data.val_path``, ``self_reward.prompts.path``,
  ``eval.<part>.path``): a local file or folder that exists and can be read, or a hub data set in the local
  cache, or readable on the hub (what is inside is the loader's to check; a set split by language, with
  ``{lang}`` in its path, is checked by the loader part by part);
- a train.py run to evaluate (``run_dir`` of ``evaluate.py``): its ``.hydra/config.yaml``, and the model
  and adapters that config names;
- a logger that needs an account (``logger.wandb.offline=false``): a W&B API key.

The network is asked only about a hub id that is not in the cache, and only within seconds
(:mod:`congrad.utils.hub`); with ``HF_HUB_OFFLINE=1`` it is not asked at all.
"""

from __future__ import annotations

import json
import netrc
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

from congrad.errors import ConfigError, CongradError
from congrad.selfreward.reuse import ADAPTER_WEIGHTS
from congrad.utils import hub
from congrad.utils.checkpoints import inspect_checkpoint

PROGRAMS = ("train", "filter", "evaluate")
EVAL_PARTS = ("pairs", "win_rate", "nll")
# the files that make a local folder a model's weights / a tokenizer (transformers' from_pretrained)
MODEL_FILES = {
    "weights": ("config.json",),
    "tokenizer": ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json"),
}
ADAPTER_CONFIG = "adapter_config.json"
# suffixes of files, never of a hub id (which may hold dots: Qwen/Qwen2.5-7B-Instruct)
FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".txt", ".arrow", ".ckpt", ".safetensors", ".bin", ".gguf")
WANDB_HOST = "https://api.wandb.ai"
WANDB_NO_ACCOUNT = ("offline", "disabled", "dryrun")


@dataclass(frozen=True)
class Reference:
    """A setting that names something outside the project; ``check()`` says what is wrong with it, or None."""

    setting: str
    value: Any
    check: Callable[[], str | None]


def check_references(cfg: DictConfig, program: str) -> None:
    """Raise :class:`ConfigError` naming every reference of ``cfg`` that ``program`` (train, filter,
    evaluate) would read and cannot."""
    problems = [problem for ref in references(cfg, program) if (problem := ref.check()) is not None]
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} settings name something that cannot be used:\n  " + "\n  ".join(problems))


def references(cfg: DictConfig, program: str) -> Iterator[Reference]:
    """The outside references ``program`` reads from ``cfg``: the model (or the evaluated run), the checkpoint,
    the data, the evaluation sets, the judge, the logger."""
    if program not in PROGRAMS:
        raise ValueError(f"program must be one of {', '.join(PROGRAMS)}, got {program!r}")
    run_dir = cfg.get("run_dir") if program == "evaluate" else None
    if run_dir:
        yield Reference("run_dir", run_dir, partial(check_run_dir, str(run_dir)))
        yield from _run_references(Path(run_dir))  # its model replaces cfg.model
    elif cfg.get("model") is not None:
        yield from model_references(cfg.model, "model")
    if cfg.get("ckpt_path"):
        yield Reference("ckpt_path", cfg.ckpt_path, partial(check_checkpoint, str(cfg.ckpt_path)))
    loop = cfg.get("self_reward") is not None and cfg.get("data") is not None and cfg.data.get("path") is None
    if program != "evaluate" and cfg.get("data") is not None:
        for key in ("path", "val_path"):
            if cfg.data.get(key):
                yield _data_reference(f"data.{key}", cfg.data[key])
    if program == "train" and loop:
        yield _data_reference("self_reward.prompts.path", cfg.self_reward.prompts.path)
    evaluation = cfg.get("eval") if program != "filter" else None
    if evaluation is not None:
        for i, adapter in enumerate(evaluation.get("baseline_adapters") or []):
            yield _adapter_reference(f"eval.baseline_adapters[{i}]", adapter)
        for part in EVAL_PARTS:
            section = evaluation.get(part)
            if section is not None and section.get("enabled") and section.get("path"):
                hint = f"or switch the part off: eval.{part}.enabled=false"
                yield _data_reference(f"eval.{part}.path", section.path, hint)
        harness = evaluation.get("harness")
        if harness is not None and harness.get("enabled"):
            for name, path in (harness.get("files") or {}).items():
                yield _data_reference(
                    f"eval.harness.files.{name}", path, "or switch the part off: eval.harness.enabled=false"
                )
    judge_model = OmegaConf.select(cfg, "judge.model", default=None) if program != "filter" else None
    judged = loop or (evaluation is not None and OmegaConf.select(evaluation, "win_rate.enabled", default=False))
    if isinstance(judge_model, DictConfig) and judge_model.get("name_or_path") and judged:
        value = judge_model.name_or_path
        yield Reference(
            "judge.model.name_or_path",
            value,
            partial(
                check_model, "judge.model.name_or_path", str(value), tuple(MODEL_FILES), judge_model.get("revision")
            ),
        )
    wandb = OmegaConf.select(cfg, "logger.wandb", default=None) if program != "filter" else None
    if isinstance(wandb, DictConfig):
        yield Reference("logger.wandb.offline", wandb.get("offline"), partial(check_wandb, wandb))


def local_paths(cfg: DictConfig, program: str) -> list[Path]:
    """The existing local files and folders among the references ``program`` reads (the run directory must
    not be cleared under them)."""
    return [
        Path(str(ref.value))
        for ref in references(cfg, program)
        if isinstance(ref.value, str) and Path(ref.value).exists()
    ]


def model_references(model_cfg: DictConfig, prefix: str, label: str = "") -> Iterator[Reference]:
    """The tokenizer and weights a ``model`` group loads (by hub id or folder), then the trained adapters
    merged into it, each named as the user sets it (``model.name_or_path`` when both parts follow it).
    ``label`` goes before each setting (the config file a run directory's settings come from)."""
    by_value: dict[str, list[str]] = {}
    nodes = {}
    for part, what in (("tokenizer", "tokenizer"), ("backbone", "weights")):
        node = model_cfg.get(part)
        if isinstance(node, DictConfig) and node.get("name_or_path"):
            by_value.setdefault(str(node.name_or_path), []).append(what)
            nodes[str(node.name_or_path)] = (part, node)
    for value, parts in by_value.items():
        part, node = nodes[value]
        follows = str(model_cfg.get("name_or_path")) == value  # the key users set, which both parts follow
        setting = f"{prefix}.name_or_path" if follows else f"{prefix}.{part}.name_or_path"
        yield Reference(
            setting,
            value,
            partial(
                check_model,
                setting,
                value,
                tuple(parts),
                node.get("revision"),
                node.get("if_missing"),
                node.get("gguf_file"),
                label,
            ),
        )
    adapters = [(f"{prefix}.merge_adapters[{i}]", a) for i, a in enumerate(model_cfg.get("merge_adapters") or [])]
    lora = model_cfg.get("lora")
    if isinstance(lora, DictConfig) and lora.get("adapter_path"):
        adapters.append((f"{prefix}.lora.adapter_path", lora.adapter_path))
    for setting, adapter in adapters:
        yield _adapter_reference(setting, adapter, label)


# ---- one check per kind: each returns the line to print, or None when the reference can be used -------------


def check_model(
    setting: str,
    name_or_path: str,
    parts: tuple[str, ...] = tuple(MODEL_FILES),
    revision: str | None = None,
    if_missing: str | None = None,
    gguf_file: str | None = None,
    label: str = "",
) -> str | None:
    """A model's weights and/or tokenizer (``parts``), by local folder or hub id; ``label`` goes before the
    setting in the message."""
    where = f"{label}{setting}={name_or_path}"
    path = Path(name_or_path)
    if path.exists():
        problem = _unusable(path, "folder")
        if problem:
            return f"{where} {problem}"
        wanted = {what: (gguf_file,) if gguf_file else MODEL_FILES[what] for what in parts}
        missing = [" or ".join(files) for files in wanted.values() if not any((path / f).is_file() for f in files)]
        if missing:
            return f"{where} is not a model folder: it has no {' and no '.join(missing)}"
        return None
    if if_missing:
        return f"{where} does not exist; create it once with `{if_missing}`"
    if not _may_be_hub_id(name_or_path):
        return f"{where}: no such folder"
    return _hub_problem(
        where,
        setting,
        name_or_path,
        "model",
        revision,
        MODEL_FILES["weights"] if "weights" in parts else MODEL_FILES["tokenizer"],
    )


def check_adapter(where: str, path: str, setting: str | None = None) -> str | None:
    """A trained adapter in peft format (a train.py run's ``adapter/``), by folder, or by hub id when it is
    a ``setting`` (not a folder of a run); ``where`` is what the message starts with."""
    folder = Path(path)
    if not folder.exists():
        if setting is not None and _may_be_hub_id(path):
            return _hub_problem(where, setting, path, "model", None, (ADAPTER_CONFIG,))
        return f"{where}: no such folder (a trained adapter in peft format, e.g. the adapter/ of a train.py run)"
    problem = _unusable(folder, "folder")
    if problem:
        return f"{where}: {folder} {problem}"
    config = folder / ADAPTER_CONFIG
    if not config.is_file():
        return f"{where}: {folder} is not a peft adapter (no {ADAPTER_CONFIG}); give the adapter/ of a train.py run"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except OSError as err:
        return f"{where}: {config} cannot be read ({err.strerror or err})"
    except ValueError as err:  # not UTF-8, not JSON
        return f"{where}: {config} is not JSON ({str(err).splitlines()[0]})"
    from peft.utils import PeftType

    peft_type = data.get("peft_type") if isinstance(data, dict) else None
    if peft_type not in {t.value for t in PeftType}:
        found = "no peft_type" if peft_type is None else f"peft_type {peft_type!r} is not one peft knows"
        return f"{where}: {config} is not a peft adapter config ({found}); give the adapter/ of a train.py run"
    weights = [folder / name for name in ADAPTER_WEIGHTS if (folder / name).is_file()]
    if not weights:
        return f"{where}: {folder} holds no adapter weights ({' or '.join(ADAPTER_WEIGHTS)})"
    if not os.access(weights[0], os.R_OK):
        return f"{where}: {weights[0]} cannot be read (permission denied)"
    return None


def check_checkpoint(path: str) -> str | None:
    """A checkpoint to resume from (``ckpt_path``): readable, and a congrad training checkpoint."""
    try:
        inspect_checkpoint(path)
    except CongradError as err:
        return str(err)
    except OSError as err:  # no permission, a file system that fails to read it
        return f"ckpt_path={path} cannot be read ({err.strerror or err})"
    return None


def check_data(setting: str, path: str, hint: str = "") -> str | None:
    """A data or evaluation set: a local file or folder that exists and can be read, or a hub data set."""
    where = f"{setting}={path}"
    if "{lang}" in path:  # one part per language: the loader checks each
        return None
    local = Path(path)
    if local.exists():
        problem = _unusable(local, "file or folder")
        return f"{where} {problem}" if problem else None
    if not _may_be_hub_id(path):
        return f"{where}: no such file or folder" + (f" ({hint})" if hint else "")
    return _hub_problem(where, setting, path, "dataset", None, ())


def check_run_dir(path: str) -> str | None:
    """A train.py run directory to evaluate: a readable folder with the run's ``.hydra/config.yaml``."""
    where = f"run_dir={path}"
    folder = Path(path)
    if not folder.exists():
        return f"{where}: no such folder (a train.py run directory, e.g. logs/train/runs/<date>_<time>)"
    problem = _unusable(folder, "folder")
    if problem:
        return f"{where} {problem}"
    config = folder / ".hydra" / "config.yaml"
    if not config.is_file():
        return f"{where}: no .hydra/config.yaml (not a train.py run directory)"
    try:
        OmegaConf.load(config)
    except Exception as err:  # unreadable, not YAML
        return f"{where}: {config} cannot be read ({type(err).__name__}: {str(err).splitlines()[0]})"
    return None


def check_wandb(wandb: DictConfig) -> str | None:
    """W&B online needs an account: an API key from ``WANDB_API_KEY`` or ``wandb login`` (the netrc file)."""
    if wandb.get("offline") is not False or str(wandb.get("mode") or "").lower() in WANDB_NO_ACCOUNT:
        return None
    if os.environ.get("WANDB_MODE", "").lower() in WANDB_NO_ACCOUNT:
        return None
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return None
    host = urlparse(os.environ.get("WANDB_BASE_URL") or WANDB_HOST).netloc
    netrc_file = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        entry = netrc.netrc(netrc_file).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        entry = None
    if entry and entry[2]:
        return None
    return (
        f"logger.wandb.offline=false: logging to W&B online needs an account, and no API key is configured "
        f"(no WANDB_API_KEY, no entry for {host} in {netrc_file}): run `wandb login` or set WANDB_API_KEY, or "
        "log offline with logger.wandb.offline=true (the default; `wandb sync` uploads the run later)"
    )


# ---- helpers ------------------------------------------------------------------------------------------------


def _data_reference(setting: str, value: Any, hint: str = "") -> Reference:
    return Reference(setting, value, partial(check_data, setting, str(value), hint))


def _adapter_reference(setting: str, value: Any, label: str = "") -> Reference:
    return Reference(setting, value, partial(check_adapter, f"{label}{setting}={value}", str(value), setting))


def _run_references(run_dir: Path) -> Iterator[Reference]:
    """The model and adapters an evaluation of ``run_dir`` loads: what its config names, and its adapters."""
    config = run_dir / ".hydra" / "config.yaml"
    try:
        run_cfg = OmegaConf.load(config)
    except Exception:  # check_run_dir names it
        return
    label = f"run_dir={run_dir}: {config.name}: "
    if isinstance(run_cfg.get("model"), DictConfig):
        try:
            yield from model_references(run_cfg.model, "model", label)
        except Exception:  # an interpolation this process cannot resolve: the evaluation reports it
            pass
    trained = [run_dir / "adapter"] if (run_dir / "adapter").exists() else []  # a DPO run's
    trained += [done.parent / "adapter" for done in sorted(run_dir.glob("iteration_*/iteration.json"))]  # a loop's
    for adapter in trained:
        yield Reference("run_dir", str(adapter), partial(check_adapter, f"run_dir={run_dir}", str(adapter)))


def _unusable(path: Path, kind: str) -> str | None:
    """What keeps this process from reading ``path`` (a folder must also be listable), or None."""
    if kind == "folder" and not path.is_dir():
        return "is a file: give a folder"
    if not os.access(path, os.R_OK) or (path.is_dir() and not os.access(path, os.X_OK)):
        return "cannot be read (permission denied)"
    return None


def _may_be_hub_id(value: str) -> bool:
    """Whether a path that does not exist could still be a hub id (``name`` or ``namespace/name``)."""
    return (
        not value.startswith(("/", ".", "~"))
        and value.count("/") <= 1
        and Path(value).suffix.lower() not in FILE_SUFFIXES
        and hub.is_repo_id(value)
    )


def _hub_problem(
    where: str, setting: str, repo_id: str, repo_type: str, revision: str | None, filenames: tuple[str, ...]
) -> str | None:
    """A hub id: fine when the local cache holds it, or when the hub is reachable and lets this user read it."""
    if hub.cached(repo_id, repo_type, revision, filenames):
        return None
    missing = f"{where}: not a local path and not in the local Hugging Face cache"
    advice = hub.how_to_provide(repo_id, setting, repo_type)
    if hub.offline():
        return f"{missing}, and HF_HUB_OFFLINE is set (no network): {advice}"
    if not hub.reachable():
        return f"{missing}, and the hub cannot be reached (no network?): {advice}"
    problem = hub.access_problem(repo_id, repo_type)
    return None if problem is None else f"{missing}, and {problem}"

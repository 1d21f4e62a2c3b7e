"""What a rerun of the self-rewarding loop in the same run directory reuses, checked before it is used.

``iteration_<t>/generations.jsonl`` is reused only if it is what this run would generate.
``generations.meta.json``, written after it, records what it was made from — the prompts (their content),
the generation settings, the policy π_t (its base model's config and the content of the adapters merged
into it), the judge and the seed — and the file's own hash. On a rerun:

- no record, or a file that does not match its recorded hash or does not parse (cut short, damaged): it
  is generated again, and a warning says why;
- a record of other prompts or settings: one line naming what differs, exit 2 — move the file away to
  generate it with the current settings, or run with the ones it was made from.

``self_reward.language_match`` and ``min_score_gap`` shape the pairs, not the generations: they are applied
when pairing, so changing them reuses the file. A finished iteration (``iteration.json``) is skipped, but
its adapter is part of every later policy: a missing one is named before anything loads, and so is a
rerun with the other ``self_reward.reference`` (it would build the later policies differently).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from congrad.data.prompts import Prompt
from congrad.data.sources import read_json_lines
from congrad.errors import BadRowError, CongradError
from congrad.utils.io import write_json, write_jsonl

log = logging.getLogger(__name__)

GENERATIONS = "generations.jsonl"
RECORD = "generations.meta.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
# the adapter settings that change what merging it does (W += B·A·alpha/r, or alpha/sqrt(r) with rsLoRA)
ADAPTER_SCALING = ("r", "lora_alpha", "use_rslora")


def generations_source(cfg: DictConfig, prompts: Sequence[Prompt], adapters: Sequence[str]) -> dict:
    """What an iteration's generations are made from: its prompts, the adapters merged into its policy, and
    the settings that shape them (generation, the base model, the judge, the seed), by their names."""
    sr = cfg.self_reward
    settings = {
        "seed": int(cfg.seed),
        "self_reward.batch_size": sr.batch_size,
        "self_reward.max_prompt_length": sr.max_prompt_length,
    }
    for name, node in (
        ("self_reward.generation", sr.generation),
        ("model.tokenizer", cfg.model.tokenizer),
        ("model.backbone", cfg.model.backbone),
        ("judge", cfg.judge),
    ):
        settings.update(_flat(OmegaConf.to_container(node, resolve=True), name))
    prompt_rows = [[p.id, p.language, p.prompt] for p in prompts]
    return {
        "prompts": {"path": str(sr.prompts.path), "count": len(prompts), "sha256": _digest(prompt_rows)},
        "merged_adapters": [adapter_digest(Path(path)) for path in adapters],
        "settings": settings,
    }


def reusable_generations(it_dir: Path, source: dict) -> list[dict] | None:
    """The rows of ``it_dir/generations.jsonl`` if they can be reused for ``source``; None when there are
    none to reuse (absent, unrecorded, damaged: generate them); a CongradError when they were made from
    something else."""
    path, record_path = it_dir / GENERATIONS, it_dir / RECORD
    if not path.is_file():
        return None
    record = _read_record(record_path)
    if record is None:
        log.warning("%s: no record of what it was made from (%s); generating it again", path, record_path.name)
        return None
    differences = _differences(record.get("made_from", {}), source)
    if differences:
        raise CongradError(
            f"{path} was made from other settings than this run's ({'; '.join(differences)}): to generate it "
            f"again with these, move it and {record_path.name} away; to reuse it, run with the settings it was "
            "made from"
        )
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != record.get("sha256"):
        log.warning(
            "%s is not the file that was written (%d bytes, %d recorded: cut short or changed); generating it again",
            path,
            len(data),
            record.get("bytes", -1),
        )
        return None
    try:
        rows = [row for _, row in read_json_lines(path)]
    except BadRowError as err:
        log.warning("%s; generating it again", err)
        return None
    return rows


def write_generations(it_dir: Path, rows: Sequence[dict], source: dict) -> None:
    """``generations.jsonl``, then the record of what it was made from and of its content."""
    path = it_dir / GENERATIONS
    write_jsonl(path, rows)
    data = path.read_bytes()
    write_json(
        it_dir / RECORD,
        {"made_from": source, "rows": len(rows), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()},
    )


def check_finished(it_dir: Path, reference: str) -> None:
    """A finished iteration's adapter, which every later policy merges, is there, and the iteration was made
    with this run's ``self_reward.reference`` (from iteration 2 on, the other one builds the policies
    differently; iteration 1 is the same under both)."""
    record = it_dir / "iteration.json"
    info = json.loads(record.read_text(encoding="utf-8"))
    made_with = info.get("reference_mode", reference)  # (a record written before the mode was kept: unknown)
    if made_with != reference and info["iteration"] > 1:
        raise CongradError(
            f"{it_dir.name} is finished ({record}) with self_reward.reference={made_with}, but this run has "
            f"self_reward.reference={reference}, which builds the later iterations' policies differently: "
            f"run with self_reward.reference={made_with} to go on, or start a new run directory (hydra.run.dir=...)"
        )
    adapter = it_dir / "adapter"
    if _adapter_files(adapter) is None:
        raise CongradError(
            f"{it_dir.name} is finished ({it_dir / 'iteration.json'}) but its trained adapter {adapter} is missing "
            f"or incomplete, and the iterations after it start from it: restore it, or delete "
            f"{it_dir / 'iteration.json'} (and those of the iterations after it) to train {it_dir.name} again"
        )


def adapter_digest(adapter: Path) -> str:
    """The content of a trained adapter as merging uses it: its weights and their scaling."""
    files = _adapter_files(adapter)
    if files is None:
        raise CongradError(
            f"{adapter}: not a trained adapter to merge (it needs adapter_config.json and "
            f"{' or '.join(ADAPTER_WEIGHTS)})"
        )
    config, weights = files
    scaling = {key: json.loads(config.read_text(encoding="utf-8")).get(key) for key in ADAPTER_SCALING}
    digest = hashlib.sha256(weights.read_bytes())
    digest.update(json.dumps(scaling, sort_keys=True).encode())
    return digest.hexdigest()


def _adapter_files(adapter: Path) -> tuple[Path, Path] | None:
    """``(adapter_config.json, weights)`` of a complete adapter folder (peft format), else None."""
    config = adapter / "adapter_config.json"
    weights = next((adapter / name for name in ADAPTER_WEIGHTS if (adapter / name).is_file()), None)
    return (config, weights) if config.is_file() and weights is not None else None


def _differences(recorded: dict, current: dict) -> list[str]:
    """What differs between two sources, as the settings a user would change."""
    found = []
    old_prompts, new_prompts = recorded.get("prompts") or {}, current["prompts"]
    if old_prompts.get("sha256") != new_prompts["sha256"]:
        found.append(
            f"other prompts: {old_prompts.get('count')} from {old_prompts.get('path')} then, "
            f"{new_prompts['count']} from self_reward.prompts.path={new_prompts['path']} now"
        )
    if recorded.get("merged_adapters") != current["merged_adapters"]:
        found.append("another policy: the adapters merged into it differ")
    old, new = recorded.get("settings") or {}, current["settings"]
    found += [
        f"{key}={old.get(key, '(unset)')} then, {new.get(key, '(unset)')} now"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]
    return found


def _flat(value, prefix: str) -> dict:
    """A nested config as ``{"a.b.c": leaf}``."""
    if not isinstance(value, dict):
        return {prefix: value}
    out = {}
    for key, item in value.items():
        out.update(_flat(item, f"{prefix}.{key}"))
    return out


def _read_record(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

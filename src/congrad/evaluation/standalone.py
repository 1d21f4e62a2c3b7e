"""``evaluate.py``: evaluate the policy of a run directory, or of ``model`` (+ an adapter), against the
baseline; write the files and log them."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf, open_dict

from congrad.errors import ConfigError
from congrad.evaluation.evaluator import Evaluator
from congrad.evaluation.outputs import log_results, table, write_outputs
from congrad.utils import cost
from congrad.utils.instantiate import instantiate_group
from congrad.utils.interrupt import interruptible
from congrad.utils.loggers import closing

log = logging.getLogger(__name__)


@dataclass
class Target:
    """A policy to evaluate: the adapters merged into the base model, in order, and where its files go."""

    name: str
    adapters: list[str]
    out_dir: Path


def evaluate(cfg: DictConfig) -> list[dict]:
    """Evaluate every target of ``cfg`` (one, or every iteration of a self-rewarding run); the results. What it
    cost goes to ``output_dir/cost.json``."""
    with cost.recording(Path(cfg.output_dir) / cost.FILE):
        return _evaluate(cfg)


def _evaluate(cfg: DictConfig) -> list[dict]:
    pl.seed_everything(cfg.seed, workers=True)
    out_dir = Path(cfg.output_dir)
    if cfg.get("run_dir"):
        cfg, targets, seen = from_run(cfg, Path(cfg.run_dir), out_dir)
    else:
        adapter = OmegaConf.select(cfg, "model.lora.adapter_path")
        targets = [Target("policy", [adapter] if adapter else [], out_dir)]
        seen = _seen(cfg.eval.seen, OmegaConf.select(cfg, "data.languages"))
    judge = hydra.utils.instantiate(cfg.judge)
    with cost.stage("evaluate"):  # reads the held-out sets, loads the harness tasks' data
        evaluator = Evaluator(cfg, judge, out_dir)
    loggers = instantiate_group(cfg.get("logger"))
    everything = []
    # a W&B run that is open from the start (it records the config) to the end, finished however that comes
    where = f"during the evaluation into {out_dir} (policies evaluated before it have their results there)"
    with closing(loggers), interruptible(where):
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        for step, target in enumerate(targets):
            with cost.stage("evaluate"):
                tokenizer, policy = evaluator.policy(target.adapters)
                results, generations = evaluator.evaluate(tokenizer, policy, {"adapters": target.adapters}, seen)
            plots = write_outputs(target.out_dir, results, generations)
            log_results(loggers, results, step=step, plots=plots)
            print(f"{target.name}: {target.out_dir}\n{table(results)}")
            everything.append(results)
        cost.log_cost(loggers, cost.current().snapshot(), step=len(targets) - 1)
    return everything


def from_run(cfg: DictConfig, run_dir: Path, out_dir: Path) -> tuple[DictConfig, list[Target], list[str] | None]:
    """The evaluation config with the run's model, data lengths and β; the run's policies (the final
    adapter of a DPO run; every finished iteration of a self-rewarding run); its seen languages."""
    config_file = run_dir / ".hydra" / "config.yaml"
    if not config_file.is_file():
        raise ConfigError(f"run_dir={run_dir}: no .hydra/config.yaml (not a train.py run directory)")
    run_cfg = OmegaConf.load(config_file)
    with open_dict(run_cfg):
        run_cfg.paths = OmegaConf.merge(cfg.paths, {"output_dir": str(run_dir)})
    merged = OmegaConf.merge(
        cfg,
        {
            "model": run_cfg.model,
            "dpo": {"beta": run_cfg.dpo.beta},
            "data": {k: run_cfg.data[k] for k in ("max_length", "max_prompt_length")},
        },
    )
    iterations = sorted(run_dir.glob("iteration_*/iteration.json"), key=lambda p: int(p.parent.name.split("_")[1]))
    if iterations:
        targets = []
        for done in iterations:
            info = json.loads(done.read_text(encoding="utf-8"))
            adapters = [*info["reference"]["merged_adapters"], info["adapter"]]
            targets.append(Target(done.parent.name, adapters, out_dir / done.parent.name))
    elif (run_dir / "adapter" / "adapter_config.json").is_file():
        if run_cfg.model.get("lora") is None:
            raise ConfigError(f"run_dir={run_dir}: a full fine-tuning run; evaluate its model directly")
        start = run_cfg.model.get("merge_adapters") or []
        first = [run_cfg.model.lora.adapter_path] if run_cfg.model.lora.get("adapter_path") else []
        targets = [Target("run", [*start, *first, str(run_dir / "adapter")], out_dir)]
    else:
        raise ConfigError(f"run_dir={run_dir}: no trained adapter (adapter/) and no finished iteration_<t>/")
    seen = _seen(
        cfg.eval.seen,
        OmegaConf.select(run_cfg, "langset.seen"),
        OmegaConf.select(run_cfg, "data.languages"),
        _trained_languages(run_dir),
    )
    return merged, targets, seen


def _trained_languages(run_dir: Path) -> list[str] | None:
    report = run_dir / "data_report.json"
    if report.is_file():
        return list(json.loads(report.read_text(encoding="utf-8"))["loaded_by_language"])
    return None


def _seen(*candidates) -> list[str] | None:
    """The first of ``candidates`` that is set, as a list; None (every language counts as seen) if none is."""
    for value in candidates:
        if value is not None:
            return list(value)
    log.info("no seen languages given (eval.seen) or recorded by the run: every evaluated language counts as seen")
    return None

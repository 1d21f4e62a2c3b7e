"""The self-rewarding loop (README, "How it works"): ``iterations`` rounds of generate → judge → pair → ConGrad-filtered
DPO, each in ``<run dir>/iteration_<t>/``.

Iteration t starts from π_t: the base model with the adapters of iterations 1..t-1 merged into it, in
order, and a fresh LoRA on top, so the disabled adapter (the DPO reference) is π_t and the trained
adapter gives π_{t+1} (``self_reward.reference=previous``, as Self-Rewarding LMs). With
``self_reward.reference=initial`` (OpenRLHF, RLHFlow) the reference stays π_0: every iteration goes on
training the previous iteration's adapter on the unmerged base, so π_{t+1} is π_0 with iteration t's adapter.
Each iteration's prompts are its slice of the pool (``self_reward.prompts.per_iteration``:
:func:`congrad.data.prompts.iteration_slices`). ``iteration_<t>/iteration.json`` names the adapters the
reference is made of; it is written last, and marks the iteration finished. A run restarted in the same run directory
(``hydra.run.dir=DIR``) skips finished iterations; in an unfinished one it reuses ``generations.jsonl``
when it is what this run would generate (:mod:`congrad.selfreward.reuse`; pairs are rebuilt from it) and
trains again from π_t. SIGTERM or Ctrl-C while generating and judging, or while training, ends the run with
a message that says how to resume it; the rerun gives the pairs and kept sets the run would have given.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf, open_dict
from pydantic import Field

from congrad.data.prompts import PromptPoolSettings, iteration_slices, load_prompts
from congrad.errors import CongradError, Interrupted
from congrad.evaluation.callback import evaluation_callbacks
from congrad.evaluation.outputs import log_results
from congrad.generation.sampling import Sampling, SamplingSettings, TextGenerator
from congrad.judging.rule import RuleJudge
from congrad.models import build_policy
from congrad.models.factory import starting_adapters
from congrad.selfreward.responses import generate_and_judge, pairs_from_generations
from congrad.selfreward.reuse import check_finished, generations_source, reusable_generations, write_generations
from congrad.training import fit
from congrad.utils import cost
from congrad.utils.device import Device
from congrad.utils.instantiate import instantiate_group
from congrad.utils.interrupt import interruptible
from congrad.utils.io import write_json, write_jsonl
from congrad.utils.loggers import closing
from congrad.utils.schema import Settings

log = logging.getLogger(__name__)

RULE_JUDGE_NOTE = (
    "judged by the rule judge: a check of the pipeline, not self-rewarding (the policy did not judge its own responses)"
)
DONE = "iteration.json"


class GenerationSettings(SamplingSettings):
    num_responses: Annotated[int, Field(ge=2)]


class SelfRewardSettings(Settings):
    """The ``self_reward`` group: the prompt pool, how responses are sampled and paired, and which model
    is each iteration's DPO reference."""

    group: ClassVar[str] = "self_reward"
    prompts: PromptPoolSettings
    reference: Literal["previous", "initial"]
    generation: GenerationSettings
    batch_size: Annotated[int, Field(ge=1)]
    max_prompt_length: Annotated[int, Field(ge=1)]
    device: Device
    language_match: bool
    min_score_gap: Annotated[float, Field(ge=0)]


def reference_mode(cfg: DictConfig) -> str:
    """``self_reward.reference``: ``previous`` (π_t, the default) or ``initial`` (π_0)."""
    return cfg.self_reward.get("reference", "previous")


def run_self_reward(cfg: DictConfig) -> dict[str, float]:
    """Run the iterations that are not finished yet; return the final metrics of the last one run."""
    run_dir = Path(cfg.paths.output_dir)
    pool = load_prompts(**cfg.self_reward.prompts)
    slices = iteration_slices(pool, cfg.self_reward.prompts.get("per_iteration"), cfg.iterations, cfg.seed)
    judge = hydra.utils.instantiate(cfg.judge)
    if isinstance(judge, RuleJudge):
        log.warning(RULE_JUDGE_NOTE)
    # trained adapters to start from are part of π_1, merged like the adapters of the iterations
    adapters = starting_adapters(cfg.model)
    reference = reference_mode(cfg)
    initial = reference == "initial"
    trained: str | None = None  # with reference=initial: the one adapter every iteration trains on
    metrics: dict[str, float] = {}
    for t in range(1, cfg.iterations + 1):
        it_dir = run_dir / f"iteration_{t}"
        if (it_dir / DONE).is_file():
            check_finished(it_dir, reference)
            log.info("iteration %d: finished before, skipped", t)
        else:
            with cost.recording(it_dir / cost.FILE):
                metrics = run_iteration(cfg, t, it_dir, adapters, slices[t - 1], judge, trained)
        if initial:
            trained = str(it_dir / "adapter")
        else:
            adapters.append(str(it_dir / "adapter"))
    costs = [run_dir / f"iteration_{t}" / cost.FILE for t in range(1, cfg.iterations + 1)]
    write_json(
        run_dir / cost.FILE,
        cost.total(json.loads(path.read_text(encoding="utf-8")) for path in costs if path.is_file()),
    )
    log_evaluation_curve(cfg, run_dir)
    return metrics


def log_evaluation_curve(cfg: DictConfig, run_dir: Path) -> None:
    """The evaluation of every finished iteration, at step t, in one run of the loggers (W&B: ``<name>-eval``
    in the loop's group; CSV: ``<run dir>/metrics.csv``): the per-iteration curve."""
    found = sorted(
        (int(path.parents[1].name.split("_")[1]), path) for path in run_dir.glob("iteration_*/eval/results.json")
    )
    if not found:
        return
    lcfg = copy.deepcopy(cfg)
    with open_dict(lcfg):
        wandb = OmegaConf.select(lcfg, "logger.wandb")
        if wandb is not None:
            wandb.group = _wandb_group(cfg, run_dir)
            wandb.name = f"{wandb.name}-eval"
            wandb.job_type = "eval"
    loggers = instantiate_group(lcfg.get("logger"))
    with closing(loggers):
        for t, path in found:
            log_results(loggers, json.loads(path.read_text(encoding="utf-8")), step=t)


def run_iteration(
    cfg: DictConfig, t: int, it_dir: Path, adapters: list[str], prompts, judge, trained: str | None = None
) -> dict[str, float]:
    """Iteration t from π_t: the base with ``adapters`` merged and a fresh LoRA (the reference: π_t), or with
    ``trained`` (reference=initial, from iteration 2) that adapter trained on (the reference: π_0)."""
    start = time.time()
    icfg = iteration_config(cfg, t, it_dir, adapters, trained)
    sr = cfg.self_reward
    source = generations_source(cfg, prompts, [*adapters, *([trained] if trained else [])])
    generations = reusable_generations(it_dir, source)  # before the model loads: a mismatch is one line
    pl.seed_everything(cfg.seed + t)  # π_t's fresh adapter: the same in a rerun that skipped iterations
    tokenizer, policy = build_policy(icfg.model)
    if generations is not None:
        log.info("iteration %d: reusing %s", t, it_dir / "generations.jsonl")
    else:
        pl.seed_everything(cfg.seed + t)
        generator = TextGenerator(
            policy, tokenizer, batch_size=sr.batch_size, max_prompt_length=sr.max_prompt_length, device=sr.device
        )
        log.info(
            "iteration %d: generating and judging %d responses to each of %d prompts",
            t,
            sr.generation.num_responses,
            len(prompts),
        )
        with _resumable(t, it_dir, "while generating and judging", reused=False), interruptible():
            generations = generate_and_judge(prompts, generator, judge, Sampling(**sr.generation))
        write_generations(it_dir, generations, source)
    generated_s = time.time() - start

    pairs, counts = pairs_from_generations(generations, sr.min_score_gap, sr.language_match)
    report = {"iteration": t, "judge": judge.name, "counts": counts}
    if isinstance(judge, RuleJudge):
        report["note"] = RULE_JUDGE_NOTE
    write_json(it_dir / "self_reward.json", report)
    if not pairs:
        raise CongradError(
            f"iteration {t}: no preference pairs (counts in {it_dir / 'self_reward.json'}); "
            "try more prompts or responses, a smaller self_reward.min_score_gap, or "
            "self_reward.language_match=false"
        )
    write_jsonl(it_dir / "pairs.jsonl", pairs)
    log.info(
        "iteration %d: %d pairs (%s)",
        t,
        len(pairs),
        ", ".join(f"{lang} {c.get('pairs', 0)}" for lang, c in counts["languages"].items()),
    )

    for attempt in ("checkpoints", "filter"):  # a fit cut short restarts from π_t, its filter history with it
        shutil.rmtree(it_dir / attempt, ignore_errors=True)
    seen = OmegaConf.select(cfg, "data.languages") or sorted({p.language for p in prompts})
    with _resumable(t, it_dir, "while training", reused=True):
        metrics = fit(
            icfg,
            tokenizer,
            policy,
            metrics=_pair_metrics(counts),
            callbacks=evaluation_callbacks(icfg, it_dir / "eval", seen, judge=judge),
        )
    write_json(
        it_dir / DONE,
        {
            "iteration": t,
            "reference": {
                "base": OmegaConf.to_container(cfg.model.backbone, resolve=True),
                "merged_adapters": adapters,
            },
            "reference_mode": reference_mode(cfg),
            "trained_from": trained,  # the adapter this iteration went on training (reference=initial), else null
            "adapter": str(it_dir / "adapter"),
            "judge": report["judge"],
            "pairs": len(pairs),
            "seconds": {"generate_and_judge": round(generated_s, 1), "total": round(time.time() - start, 1)},
        },
    )
    log.info("iteration %d finished in %.1f s", t, time.time() - start)
    return metrics


@contextmanager
def _resumable(t: int, it_dir: Path, phase: str, reused: bool):
    """A signal in iteration t: the message says how to resume, and what the rerun will reuse."""
    try:
        yield
    except Interrupted as err:
        again = "its generations are reused" if reused else "it generates its responses again"
        raise Interrupted(
            err.signum,
            (
                f"interrupted by {err.signal_name} in iteration {t} {phase}: rerun with hydra.run.dir={it_dir.parent} "
                f"to resume (finished iterations are skipped; {again}, and its training starts again from its "
                "reference policy)"
            ),
        ) from None


def iteration_config(
    cfg: DictConfig, t: int, it_dir: Path, adapters: list[str], trained: str | None = None
) -> DictConfig:
    """``cfg`` for the fit of iteration t: outputs in ``it_dir``, data = its pairs, the policy π_t (``adapters``
    merged, and ``trained``, an adapter to go on training, with reference=initial), and one W&B run per
    iteration, grouped by the run (or the sweep's group).

    ``cfg`` comes unresolved, as Hydra hands it over: the outputs of callbacks and loggers follow
    ``paths.output_dir`` through interpolation."""
    icfg = copy.deepcopy(cfg)
    with open_dict(icfg):
        icfg.paths.output_dir = str(it_dir)
        icfg.data.path = str(it_dir / "pairs.jsonl")
        icfg.data.languages = None  # the prompts were of those languages; one without pairs is no error
        icfg.model.merge_adapters = list(adapters)
        if icfg.model.get("lora") is not None:
            icfg.model.lora.adapter_path = None
            icfg.model.lora.init_from = trained
        icfg.ckpt_path = None
        wandb = OmegaConf.select(icfg, "logger.wandb")
        if wandb is not None:
            wandb.group = _wandb_group(cfg, it_dir.parent)
            wandb.name = f"{wandb.name}-iter{t}"
    return icfg


def _wandb_group(cfg: DictConfig, run_dir: Path) -> str:
    """The W&B group of a loop's runs: the configured one (a sweep's), else one per run directory."""
    return OmegaConf.select(cfg, "logger.wandb.group") or f"{cfg.task_name}-{run_dir.name}"


def _pair_metrics(counts: dict) -> dict[str, float]:
    metrics = {f"self_reward/{key}": float(value) for key, value in counts["total"].items()}
    for lang, c in counts["languages"].items():
        metrics[f"self_reward/pairs/{lang}"] = float(c.get("pairs", 0))
    return metrics

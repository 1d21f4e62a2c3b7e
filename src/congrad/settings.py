"""The composed config checked whole before any model or data loads: ``check_settings(cfg)`` raises one
:class:`~congrad.errors.ConfigError` naming every key that is out of bounds or unknown, its value and what it
allows (the entry points print it and exit 2).

Each group's keys are declared once, next to the code that reads them (:mod:`congrad.utils.schema`);
:class:`ConfigSettings` gathers them for the config trees of ``train.py``, ``filter.py`` and ``evaluate.py``,
with the top-level keys and the relations between groups. The judge group is checked by the declaration of
the judge its ``_target_`` builds. A key no declaration names is an error, except under a group that passes
its arguments through to someone else's ``_target_`` (``trainer``, ``logger``, ``callbacks``, ``paths``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, ClassVar

from omegaconf import DictConfig, ListConfig, OmegaConf
from pydantic import ConfigDict, Field

from congrad.data.datamodule import DataSettings
from congrad.data.formats import Languages
from congrad.errors import ConfigError
from congrad.evaluation.evaluator import EvalSettings
from congrad.filtering.callback import ConGradCallbackSettings
from congrad.filtering.method import FilterSettings
from congrad.filtering.sketching import SketchSettings
from congrad.judging.api import ApiJudgeSettings
from congrad.judging.llm import LLMJudgeSettings
from congrad.judging.rule import RuleJudgeSettings
from congrad.models.dpo_module import DPOSettings
from congrad.models.factory import ModelSettings
from congrad.selfreward.loop import SelfRewardSettings
from congrad.training import TrainerSettings
from congrad.utils.device import Device
from congrad.utils.schema import FreeForm, Settings, Text, Unresolved, show

JUDGES = {
    "congrad.judging.rule.RuleJudge": RuleJudgeSettings,
    "congrad.judging.llm.LLMJudge": LLMJudgeSettings,
    "congrad.judging.api.ApiJudge": ApiJudgeSettings,
}


class LangsetSettings(Settings):
    """``langset``: a named set of seen languages and the held-out ones evaluated beside them."""

    name: Text
    seen: Languages
    held_out: list[Text]


class CallbacksSettings(Settings):
    """``callbacks``: Lightning callbacks by name, each a ``_target_`` with its arguments (passed through);
    the ConGrad filter's are declared."""

    model_config = ConfigDict(extra="allow")
    congrad: ConGradCallbackSettings | None


class ConfigSettings(Settings):
    """The whole config tree: the groups and the entry points' own keys (``output_dir``, ``device`` and
    ``run_dir`` are ``filter.py``'s and ``evaluate.py``'s; ``ckpt_path`` to ``iterations`` are ``train.py``'s)."""

    group: ClassVar[str] = ""
    task_name: Text
    tags: list[str]
    seed: int
    output_dir: Text
    device: Device
    run_dir: Text | None
    ckpt_path: Text | None
    resume_rescore: bool
    overwrite: bool
    iterations: Annotated[int, Field(ge=0)]
    data: DataSettings
    model: ModelSettings
    dpo: DPOSettings
    sketch: SketchSettings
    filter: FilterSettings | None
    trainer: TrainerSettings
    self_reward: SelfRewardSettings | None
    judge: FreeForm | None
    eval: EvalSettings | None
    langset: LangsetSettings | None
    callbacks: CallbacksSettings | None
    logger: FreeForm | None
    paths: FreeForm
    hydra: FreeForm

    @classmethod
    def relations(cls, values: dict[str, Any]) -> Iterator[str]:
        trainer, callbacks = values.get("trainer"), values.get("callbacks")
        reload = trainer.get("reload_dataloaders_every_n_epochs") if isinstance(trainer, dict) else None
        filtering = isinstance(callbacks, dict) and callbacks.get("congrad") is not None
        if filtering and reload is not None and reload != 1:
            yield (
                f"trainer.reload_dataloaders_every_n_epochs={show(reload)}: must be 1 while the ConGrad filter is "
                "on (it prunes the training set between epochs); switch the filter off with callbacks.congrad=null"
            )
        judge = values.get("judge")
        if isinstance(judge, dict):
            schema = JUDGES.get(judge.get("_target_"))
            if schema is not None:
                yield from schema.problems(judge, "judge")


def check_settings(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` listing every setting of ``cfg`` that is unknown or outside what it allows."""
    problems = ConfigSettings.problems(plain(cfg))
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} settings are unknown or out of bounds:\n  " + "\n  ".join(problems))


def plain(node: Any, place: str = "") -> Any:
    """``node`` as plain Python, resolved; a value that cannot be read becomes an :class:`Unresolved` naming why,
    so one bad interpolation does not hide the rest."""
    if isinstance(node, DictConfig):
        out = {}
        for key in node.keys():
            where = f"{place}.{key}" if place else str(key)
            if OmegaConf.is_missing(node, key):
                out[key] = Unresolved(f"is required (???): give {where}=… on the command line")
                continue
            try:
                value = node[key]
            except Exception as err:  # an interpolation that does not resolve
                out[key] = Unresolved(f"cannot be resolved ({type(err).__name__}: {str(err).splitlines()[0]})")
                continue
            out[key] = plain(value, where)
        return out
    if isinstance(node, ListConfig):
        try:
            return OmegaConf.to_container(node, resolve=True)
        except Exception as err:
            return Unresolved(f"cannot be resolved ({type(err).__name__}: {str(err).splitlines()[0]})")
    return node

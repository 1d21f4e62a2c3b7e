"""Multiple-choice benchmarks through lm-evaluation-harness (``lm-eval``): the alignment tax on knowledge and
reading comprehension, measured with lm-eval's own task definitions on models already in memory (its ``HFLM``
wrapper around the loaded model and tokenizer: nothing is loaded a second time).

- ``eval.harness.tasks``: lm-eval task, group or tag names (``global_mmlu_full_de``, ``mmmlu_de_de``,
  ``belebele_deu_Latn``, ``xcopa_it``, ...), or ``congrad_mc``, the shipped offline set as a local task
  (``data/eval/harness/``, on ``eval.harness.include_path``). A name whose questions are all in one language
  is reported as one task; a group over several languages (``congrad_mc``, ``belebele``) as its members.
- A reported task's language comes from the dataset config its lm-eval tasks read (``de``, ``DE_DE``, or a
  code listed in ``eval.harness.dataset_languages`` such as ``deu_Latn``); its score is lm-eval's
  ``eval.harness.metric`` (``acc_norm``: the log-likelihood of each answer divided by its length in
  characters, so models with different tokenizers compare) where its tasks compute it, else ``acc``, over
  all its questions (subtasks weighted by their sizes), with ``n`` the number of questions.
- ``eval.harness.datasets``: the hub sets the tasks read, by their hub ids: the revision they are read at
  (passed to ``datasets.load_dataset`` through the task's ``dataset_kwargs``) or a local copy laid out as on
  the hub.
- ``eval.harness.files``: local multiple-choice files in congrad's format (``question``, ``choices``,
  ``answer`` index, ``language``); each becomes a generated group of per-language tasks (written into the
  output directory, ``harness_tasks/``) built on the shipped task template.

lm-eval is imported inside the functions that use it, so importing this module (and starting train.py)
costs nothing; with only local tasks asked for, lm-eval's own task index (about 15,000 YAML files, seconds
to read) is not built at all.
"""

from __future__ import annotations

import difflib
import logging
import re
import tempfile
import typing
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from omegaconf import DictConfig, OmegaConf
from pydantic import Field

from congrad.errors import ConfigError, CongradError
from congrad.utils.io import atomic_path
from congrad.utils.project import project_root
from congrad.utils.schema import FreeForm, Settings, Text, checked

log = logging.getLogger(__name__)

Metric = Literal["acc_norm", "acc"]
METRICS = typing.get_args(Metric)


def _names(value: Any) -> str | None:
    ok = isinstance(value, (list, tuple)) and all(isinstance(n, str) and n.strip() for n in value)
    return None if ok else "a list of names, e.g. [congrad_mc, belebele_deu_Latn] ([] for none)"


class HarnessSettings(Settings):
    """``eval.harness``: the lm-eval tasks (``tasks``, found in ``include_path`` and lm-eval's own), how they
    run, and the data they read: ``files`` (a task's own local file), ``datasets`` (the hub ids, revisions and
    local copies of the multilingual benchmarks), ``dataset_languages`` (a set's language code -> ours)."""

    group: ClassVar[str] = "eval.harness"
    enabled: bool
    tasks: checked(_names, list)
    include_path: list[Text]
    files: FreeForm
    datasets: FreeForm
    dataset_languages: FreeForm
    metric: Metric
    num_fewshot: Annotated[int, Field(ge=0)] | None
    limit: Annotated[int, Field(ge=1)] | None
    batch_size: Annotated[int, Field(ge=1)]
    apply_chat_template: bool


SHIPPED_DIR = Path("data/eval/harness")  # relative to the project root
TEMPLATE = "_multiple_choice_yaml"  # lm-eval does not index a file without the .yaml suffix: a template
SHIPPED_TASK = "congrad_mc"
SHIPPED_DATA = "data/eval/multiple_choice.jsonl"
GENERATED_DIR = "harness_tasks"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class HarnessTask:
    """One reported task: an lm-eval name, its language, the lm-eval tasks whose questions it counts, and
    per task the config overrides it is loaded with (the data set's revision or local copy; none: the task
    is loaded by its name)."""

    name: str
    language: str
    leaves: tuple[str, ...]
    overrides: tuple[dict, ...] = ()


# ---- the shipped and the generated local tasks ---------------------------------------------------------------
def read_multiple_choice(path: str | Path, languages: Sequence[str] | None = None) -> list:
    """The rows of a local multiple-choice file (``question``, ``choices``, ``answer`` index, ``language``),
    validated: a bad row is an error naming the file, the row and the field. The one place the local tasks
    read their files."""
    from congrad.data.eval_sets import load_multiple_choice

    return load_multiple_choice(path, languages)


def multiple_choice_dataset(path: str, language: str, **_metadata):
    """The data of a local multiple-choice task (its ``custom_dataset``): the rows of ``language`` in ``path``
    (relative: to the project root) as a ``test`` split of ``id``, ``question``, ``choices``, ``answer``.
    lm-eval passes the task's metadata too; it is not needed."""
    import datasets

    rows = read_multiple_choice(Path(path) if Path(path).is_absolute() else project_root() / path, [language])
    return datasets.DatasetDict(
        {
            "test": datasets.Dataset.from_list(
                [{"id": r.id, "question": r.question, "choices": list(r.choices), "answer": r.answer} for r in rows]
            )
        }
    )


def write_multiple_choice_tasks(
    name: str, data_path: str, languages: Iterable[str], out_dir: str | Path, template: str = TEMPLATE
) -> None:
    """lm-eval task YAMLs for a multiple-choice file in congrad's format: the group ``name`` of one task
    ``<name>_<lang>`` per language, each including ``template`` (the shipped one) and reading ``data_path``."""
    import yaml

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    members = [f"{name}_{lang}" for lang in sorted(languages)]
    files = {f"{name}.yaml": {"group": name, "task": members}}
    for lang, member in zip(sorted(languages), members):
        files[f"{member}.yaml"] = {
            "include": template,
            "task": member,
            "dataset_kwargs": {"path": str(data_path), "language": lang},
        }
    header = f"# lm-eval task written by congrad (congrad.evaluation.harness) for {data_path}\n"
    for file, content in files.items():
        with atomic_path(out_dir / file) as tmp:
            tmp.write_text(header + yaml.safe_dump(content, sort_keys=False, allow_unicode=True), encoding="utf-8")


def _generate_file_tasks(files: Mapping[str, str], out_dir: Path) -> list[str]:
    """``eval.harness.files`` as generated tasks in ``out_dir``; their names."""
    template = str(project_root() / SHIPPED_DIR / TEMPLATE)
    for name, path in files.items():
        if not _NAME.match(str(name)):
            raise ConfigError(
                f"eval.harness.files.{name}: the name of a generated lm-eval task must be letters, "
                "digits and underscores, starting with a letter"
            )
        if not Path(path).is_file():
            raise ConfigError(f"eval.harness.files.{name}: {path} does not exist")
        rows = read_multiple_choice(Path(path))  # the rows are checked here, before any model loads
        write_multiple_choice_tasks(name, str(Path(path).resolve()), {r.language for r in rows}, out_dir, template)
    return list(files)


# ---- resolving names into reported tasks ---------------------------------------------------------------------
@lru_cache(maxsize=4)
def _task_manager(include_path: tuple[str, ...], include_defaults: bool):
    from lm_eval.tasks import TaskManager

    with _quiet():
        return TaskManager(include_path=list(include_path), include_defaults=include_defaults)


def task_manager(names: Sequence[str], include_path: Sequence[str]):
    """A TaskManager that knows ``names``: the folders of ``include_path`` alone when they hold them all,
    else with lm-eval's own tasks too; an unknown name is an error naming it."""
    paths = tuple(str(p) for p in include_path)
    for folder in paths:
        if not Path(folder).is_dir():
            raise ConfigError(f"eval.harness.include_path: {folder} is not a folder")
    manager = _task_manager(paths, False)
    if not set(names) <= set(manager.task_index):
        manager = _task_manager(paths, True)
    unknown = [n for n in names if n not in manager.task_index]
    if unknown:
        from lm_eval import __version__

        hints = {n: difflib.get_close_matches(n, manager.all_tasks, n=3) for n in unknown}
        shown = "; ".join(f"{n}" + (f" (close: {', '.join(h)})" if h else "") for n, h in hints.items())
        raise ConfigError(
            f"eval.harness.tasks: no lm-eval task, group or tag named {shown} in lm-eval {__version__}'s "
            f"tasks or in eval.harness.include_path ({', '.join(paths) or 'none'})"
        )
    return manager


@dataclass
class _Node:
    name: str
    overrides: dict  # what the groups above pass down to it, as lm-eval does
    children: list  # [] for a task
    cfg: dict | None  # a task's config, with the overrides applied


def _tree(index: Mapping, name: str, overrides: dict) -> _Node:
    """The task, group or tag ``name`` of the index with what lm-eval builds below it."""
    from lm_eval.config.group import GroupConfig

    entry = index[name]
    kind = entry.kind.name
    if kind == "TAG":
        return _Node(name, overrides, [_tree(index, task, overrides) for task in sorted(entry.tags)], None)
    if kind != "GROUP":
        return _Node(name, overrides, [], {**entry.cfg, **overrides})
    group_fields = set(GroupConfig.__dataclass_fields__)
    passed = {**{k: v for k, v in entry.cfg.items() if k not in group_fields}, **overrides}
    members = entry.cfg.get("task") or []
    children = []
    for member in members if isinstance(members, list) else [members]:
        if isinstance(member, str):
            child, extra = member, {}
        else:
            child = member.get("group", member.get("task"))
            extra = {k: v for k, v in member.items() if k not in ("group", "task")}
        if child not in index:
            raise ConfigError(
                f"eval.harness.tasks: the lm-eval group {name} defines its member {child} inline; "
                "congrad evaluates groups whose members are registered tasks"
            )
        children.append(_tree(index, child, {**passed, **extra}))
    return _Node(name, overrides, children, None)


def _leaves(node: _Node) -> list[_Node]:
    return [node] if not node.children else [leaf for child in node.children for leaf in _leaves(child)]


def _language(leaf: _Node, table: Mapping[str, str]) -> str:
    """The ISO 639-1 code of a task: its ``dataset_kwargs.language`` (congrad's local tasks) or its dataset
    config (``dataset_name``): a code of ``eval.harness.dataset_languages``, else any form
    :func:`congrad.data.languages.normalize_language` reads (ISO codes, locales, FLORES codes)."""
    from congrad.data.languages import normalize_language

    kwargs = leaf.cfg.get("dataset_kwargs") or {}
    code = kwargs.get("language") or leaf.cfg.get("dataset_name")
    if code in table:
        return table[code]
    language = normalize_language(code)
    if language is not None and language.code is not None:
        return language.code
    raise ConfigError(
        f"eval.harness.tasks: the lm-eval task {leaf.name} reads the dataset config {code!r}, whose "
        f"language is not known: add eval.harness.dataset_languages.{code}=<ISO 639-1 code>"
    )


def _units(node: _Node, table: Mapping[str, str]) -> list[tuple[_Node, str]]:
    """``node`` as reported tasks: itself when its questions are in one language, else its members."""
    languages = {_language(leaf, table) for leaf in _leaves(node)}
    if len(languages) == 1:
        return [(node, languages.pop())]
    return [unit for child in node.children for unit in _units(child, table)]


def _dataset_overrides(leaf: _Node, datasets: Mapping[str, Any]) -> dict:
    """What loads a task's hub set at its pinned revision, or from its local copy (``eval.harness.datasets``)."""
    by_id = {hub_id: (key, entry) for key, entry in datasets.items() for hub_id in entry.get("ids") or ()}
    if leaf.cfg.get("dataset_path") not in by_id:
        return {}
    key, entry = by_id[leaf.cfg["dataset_path"]]
    kwargs = dict(leaf.cfg.get("dataset_kwargs") or {})
    if entry.get("path"):
        if not Path(entry["path"]).is_dir():
            raise ConfigError(f"eval.harness.datasets.{key}.path: {entry['path']} is not a folder")
        kwargs.pop("revision", None)
        return {"dataset_path": str(entry["path"]), **({"dataset_kwargs": kwargs} if kwargs else {})}
    if entry.get("revision"):
        return {"dataset_kwargs": {**kwargs, "revision": str(entry["revision"])}}
    return {}


def resolve(
    section: DictConfig, work_dir: str | Path, languages: Sequence[str] | None = None
) -> tuple[list[HarnessTask], Any]:
    """The reported tasks of ``eval.harness`` (only those in ``languages`` when given) and the TaskManager
    that loads them; generated tasks for ``eval.harness.files`` are written into ``work_dir/harness_tasks``."""
    files = _plain(section.get("files"))
    include_path = [str(p) for p in section.get("include_path") or []]
    names = [str(n) for n in section.tasks or []]
    if files:
        generated = Path(work_dir) / GENERATED_DIR
        names += _generate_file_tasks(files, generated)
        include_path.append(str(generated))
    manager = task_manager(names, include_path)
    table = _plain(section.get("dataset_languages"))
    datasets = _plain(section.get("datasets"))
    tasks, seen_leaves = [], {}
    for name in dict.fromkeys(names):
        for node, language in _units(_tree(manager.task_index, name, {}), table):
            if languages is not None and language not in languages:
                continue
            leaves = tuple(leaf.name for leaf in _leaves(node))
            for leaf in leaves:
                if leaf in seen_leaves:
                    raise ConfigError(
                        f"eval.harness.tasks: {name} and {seen_leaves[leaf]} both hold the lm-eval "
                        f"task {leaf}: list it once"
                    )
                seen_leaves[leaf] = name
            overrides = tuple({**leaf.overrides, **_dataset_overrides(leaf, datasets)} for leaf in _leaves(node))
            tasks.append(HarnessTask(node.name, language, leaves, overrides if any(overrides) else ()))
    return tasks, manager


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})


# ---- running them --------------------------------------------------------------------------------------------
class Harness:
    """The tasks of ``eval.harness``, resolved and their data loaded once (a data set that cannot be loaded
    is an error now, before any model loads); :meth:`scores` runs them on one model."""

    def __init__(
        self, section: DictConfig, work_dir: str | Path, languages: Sequence[str] | None = None, seed: int = 0
    ):
        self.section, self.seed = section, seed
        self.tasks, self._manager = resolve(section, work_dir, languages)
        self._loaded = {}
        for task in self.tasks:
            self._loaded.update(self._load(task))

    @property
    def languages(self) -> list[str]:
        return sorted({task.language for task in self.tasks})

    def _load(self, task: HarnessTask) -> dict:
        """lm-eval's tasks of ``task``, their data loaded: by name, or with overrides one by one through a
        task file that includes the task's own and adds them (in lm-eval 0.4.13 an inline group given to
        ``TaskManager.load``, or a group file given by path, passes its own keys down to its members)."""
        import yaml

        index = self._manager.task_index
        try:
            with _quiet(), tempfile.TemporaryDirectory(prefix="congrad-harness-") as tmp:
                specs = [task.name]
                if task.overrides:
                    specs = [str(Path(tmp) / f"{leaf}.yaml") for leaf in task.leaves]
                    for spec, leaf, overrides in zip(specs, task.leaves, task.overrides):
                        Path(spec).write_text(
                            yaml.safe_dump({"include": str(index[leaf].yaml_path), **overrides, "task": leaf}),
                            encoding="utf-8",
                        )
                loaded = self._manager.load(specs)["tasks"]
        except OSError as err:  # datasets' ConnectionError, FileNotFoundError, DatasetNotFoundError, ...
            keys = ", ".join(f"eval.harness.datasets.{k}.path" for k in (self.section.get("datasets") or {}))
            raise CongradError(
                f"eval.harness.tasks: {task.name}: its data could not be loaded ({err}). Download the data set "
                f"where there is network (it is then read from the Hugging Face cache, HF_HOME), or point "
                f"{keys or 'eval.harness.datasets.<name>.path'} at a local copy laid out as on the hub"
            ) from err
        if set(loaded) != set(task.leaves):
            raise RuntimeError(f"lm-eval built {sorted(loaded)} for {task.name}, expected {sorted(task.leaves)}")
        return loaded

    def scores(self, model, tokenizer, device) -> dict[str, dict]:
        """Per reported task: ``{"metric", "score", "n"}`` of ``model`` (a causal LM, moved to ``device``)."""
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM

        section = self.section
        model.to(device).eval()
        with _quiet():
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=int(section.batch_size))
            out = simple_evaluate(
                model=lm,
                tasks=list(self._loaded.values()),
                task_manager=self._manager,
                num_fewshot=section.num_fewshot,
                limit=section.limit,
                bootstrap_iters=0,
                log_samples=False,
                apply_chat_template=bool(section.apply_chat_template),
                random_seed=self.seed,
                numpy_random_seed=self.seed,
                torch_random_seed=self.seed,
                fewshot_random_seed=self.seed,
            )
        return {task.name: _score(task, out, section.metric) for task in self.tasks}


def _score(task: HarnessTask, out: dict, preferred: str) -> dict:
    """The questions of ``task``'s lm-eval tasks pooled: the mean of ``preferred`` where every one computes
    it, else of ``acc``, weighted by their numbers of questions."""
    results = [out["results"][leaf] for leaf in task.leaves]
    sizes = [out["n-samples"][leaf]["effective"] for leaf in task.leaves]
    for metric in dict.fromkeys((preferred, "acc")):
        if all(f"{metric},none" in r for r in results):
            total = sum(sizes)
            score = sum(r[f"{metric},none"] * n for r, n in zip(results, sizes)) / total if total else float("nan")
            return {"metric": metric, "score": float(score), "n": int(total)}
    raise CongradError(
        f"eval.harness.tasks: {task.name} reports neither {preferred} nor acc (congrad evaluates multiple-choice tasks)"
    )


@contextmanager
def _quiet():
    """lm-eval's log at ERROR while it runs here: its warnings about a model passed in memory and about
    custom datasets are expected."""
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def main() -> None:
    """Write the shipped task folder (``data/eval/harness/``) from the shipped multiple-choice set."""
    root = project_root()
    languages = {row.language for row in read_multiple_choice(root / SHIPPED_DATA)}
    write_multiple_choice_tasks(SHIPPED_TASK, SHIPPED_DATA, languages, root / SHIPPED_DIR)
    print(f"wrote {SHIPPED_TASK} ({len(languages)} languages) to {root / SHIPPED_DIR}")


if __name__ == "__main__":
    main()

"""A run directory belongs to one run: ``train.py``'s ``hydra.run.dir`` and ``evaluate.py``'s ``output_dir`` (its
run directory), or a multirun's ``hydra.sweep.dir``.

:class:`RunDirectory`, a Hydra callback of the entry points (``conf/hydra/default.yaml``), claims the directory
before Hydra writes its own files (``.hydra/``, the log) into it (in a distributed run, rank 0 alone):

- it is locked for as long as the run (or the multirun) lasts (:func:`congrad.utils.fileset.locked_directory`):
  a second run into it stops at once, naming the process and host that hold it;
- ``evaluate.py``'s ``output_dir`` must not be the ``run_dir`` it evaluates, whose ``.hydra/`` would be replaced;
- a directory that already holds a run's results (:func:`run_outputs`) is refused, unless the run resumes it
  — ``train.py`` with a ``ckpt_path`` inside it while that run has not finished (no ``adapter/``, no
  ``eval/``), the self-rewarding loop in its own directory (finished iterations are skipped), ``evaluate.py``
  after an evaluation that stopped before its end (``cost.json``: ``"finished": false``) — or
  ``overwrite=true`` asks to remove what is in it first (refused when something the run reads is inside).

``filter.py`` locks its ``output_dir`` itself while it writes there (:mod:`congrad.filtering.standalone`); its
run directory holds logs only and is left alone.
"""

from __future__ import annotations

import json
import logging
import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from congrad.errors import CongradError
from congrad.utils import cost
from congrad.utils.entry import exit_on_user_error
from congrad.utils.fileset import LOCK, locked_directory, prepare_output_dir

log = logging.getLogger(__name__)

# the program's name (its config) -> the setting that names its run directory
SETTING = {"train": "hydra.run.dir", "evaluate": "output_dir"}
FINISHED = {"train": ("adapter/", "eval/results.json"), "evaluate": ("results.json",)}


def run_outputs(directory: Path, program: str) -> list[str]:
    """What ``directory`` holds of a ``program`` run's results, as paths relative to it: ``train.py``'s
    ``adapter/``, ``eval/results.json``, its checkpoints and the loop's ``iteration_<t>/``; ``evaluate.py``'s
    ``results.json`` (also per iteration)."""
    found = [name for name in FINISHED[program] if (directory / name.rstrip("/")).exists()]
    if program == "train":
        found += [f"checkpoints/{p.name}" for p in sorted((directory / "checkpoints").glob("*.ckpt"))]
        found += [f"{p.name}/" for p in sorted(directory.glob("iteration_*")) if p.is_dir()]
    else:
        found += [f"{p.parent.name}/{p.name}" for p in sorted(directory.glob("iteration_*/results.json"))]
    return found


def claim(directory: Path, config: DictConfig, program: str, setting: str, where: str | None = None) -> None:
    """Check that ``directory`` can take this run (see the module docstring); clear it when ``overwrite=true``
    asks. ``setting`` names the directory (``where``, when given, says more); the caller holds its lock."""
    outputs = run_outputs(directory, program)
    if not outputs or _resumes(directory, config, program, outputs):
        return
    where = where or f"{setting}={directory}"
    if config.get("overwrite") is True:
        _clear(directory, config, program, where)
        return
    finished = [name for name in outputs if name in FINISHED[program] or name.endswith("results.json")]
    what = "a finished run" if finished or program == "evaluate" else "a run that did not finish"
    ways = [
        f"give another {'output_dir' if program == 'evaluate' else 'directory'}"
        + (" (without hydra.run.dir= each run gets a new one)" if setting == "hydra.run.dir" else "")
    ]
    if program == "train" and not finished and not any(name.startswith("iteration_") for name in outputs):
        ways.insert(0, f"resume it with ckpt_path={directory / 'checkpoints' / 'last.ckpt'}")
    raise CongradError(
        f"{where} holds {what} ({', '.join(outputs)}): a new run there would mix its files with "
        f"that run's; {', '.join(ways)}, or set overwrite=true to clear it first"
    )


class RunDirectory(Callback):
    """Claims the run directory of ``train.py`` and ``evaluate.py`` (the sweep directory of a multirun) for the
    run, from its start to its end (module docstring); other programs' are left alone."""

    def __init__(self) -> None:
        self._lock = ExitStack()

    def __getstate__(self) -> dict:  # the jobs a submitit launcher pickles: the lock stays with its process
        return {}

    def __setstate__(self, state: dict) -> None:
        self._lock = ExitStack()

    @exit_on_user_error
    def on_run_start(self, config: DictConfig, config_name: str | None = None, **kwargs: Any) -> None:
        if config_name not in SETTING or _other_rank():
            return
        setting = SETTING[config_name]
        directory = Path(str(config.hydra.run.dir))
        if config_name == "evaluate":
            _not_the_evaluated_run(directory, config)
        self._claim(directory, config, config_name, setting)

    @exit_on_user_error
    def on_multirun_start(self, config: DictConfig, config_name: str | None = None, **kwargs: Any) -> None:
        if config_name not in SETTING:
            return
        directory = Path(str(config.hydra.sweep.dir))
        self._claim(directory, config, config_name, "hydra.sweep.dir")

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._lock.close()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._lock.close()

    def _claim(self, directory: Path, config: DictConfig, program: str, setting: str) -> None:
        where = f"{setting}={directory}"
        prepare_output_dir(directory, where)
        self._lock.enter_context(locked_directory(directory, where))
        if setting == "hydra.sweep.dir":  # each job's directory is one below
            for job in sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")):
                claim(job, config, program, setting, f"{where}: its job directory {job.name}/")
        else:
            claim(directory, config, program, setting)


def _other_rank() -> bool:
    """Whether this process is a rank other than 0 of a distributed run (Lightning's DDP launcher starts the
    script again per rank, torchrun and SLURM each task): the directory is rank 0's, which holds its lock."""
    from pytorch_lightning.utilities import rank_zero_only

    return rank_zero_only.rank != 0


def _resumes(directory: Path, config: DictConfig, program: str, outputs: list[str]) -> bool:
    """Whether the run continues the one whose ``outputs`` ``directory`` holds: the self-rewarding loop in its
    own directory, a ``ckpt_path`` inside a run that has not finished, or an evaluation that stopped before its
    end (its ``cost.json`` says so; the rerun evaluates every policy again, judgements from the verdict cache)."""
    if program == "evaluate":
        try:
            return json.loads((directory / cost.FILE).read_text(encoding="utf-8")).get("finished") is False
        except (OSError, ValueError, AttributeError):  # none (an earlier version's), or not a record
            return False
    if all(name.startswith("iteration_") for name in outputs):
        return config.get("self_reward") is not None
    ckpt_path = config.get("ckpt_path")
    unfinished = all(name.startswith("checkpoints/") for name in outputs)
    return bool(ckpt_path) and unfinished and _within(Path(str(ckpt_path)), directory)


def _not_the_evaluated_run(out_dir: Path, config: DictConfig) -> None:
    run_dir = config.get("run_dir")
    if run_dir and Path(str(run_dir)).resolve() == out_dir.resolve():
        raise CongradError(
            f"output_dir={out_dir} is the run_dir it evaluates: the evaluation would replace that "
            "run's .hydra/ (the config that describes its training) with its own; give another "
            "output_dir"
        )


def _clear(directory: Path, config: DictConfig, program: str, where: str) -> None:
    """Remove everything in ``directory`` but its lock, unless something the run reads is inside it."""
    from congrad.preflight import local_paths

    inside = [path for path in local_paths(config, program) if _within(path, directory)]
    if inside:
        raise CongradError(
            f"overwrite=true would clear {where}, but {inside[0]}, which this run reads, is inside "
            "it: give another directory, or move what the run reads out of it"
        )
    log.warning("overwrite=true: clearing %s", where)
    for entry in directory.iterdir():
        if entry.name == LOCK:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _within(path: Path, directory: Path) -> bool:
    path, directory = path.resolve(), directory.resolve()
    return path == directory or directory in path.parents

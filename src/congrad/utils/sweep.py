"""A Hydra multirun in which one job's failure is that job's alone (docs/running.md, "Exit codes and resuming").

In a single run an entry point ends with the status of what happened (2, 3, 130, 143, or a traceback and 1).
In a multirun the same failure ends only its job: :func:`failed_job` logs its one line (and a fault's
traceback) into the job's log and returns a :class:`JobFailure` as the job's result, so Hydra's launcher
goes on with the next job. :class:`SweepStatus`, a Hydra callback (``conf/hydra/default.yaml``), writes
each job's status into its own run directory (``job_status.json``: ``status`` null while it runs, then its
exit status and one-line ``message``; with the job's ``pid`` and ``host``, so that a job killed before it
could write its end, by SIGKILL or the out-of-memory killer, is told from one still running) — in the job's
process, so under the submitit launchers too — and at the end of the multirun prints the jobs that failed,
with their overrides and run directories, and exits with the status of the first of them.

A signal stops the sweep, not only the job, where the jobs run in the sweep's own process (Hydra's basic
launcher): the interrupted job's status is written, the jobs after it are not run.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from congrad.errors import FAULT, user_error
from congrad.utils.io import write_json

log = logging.getLogger(__name__)

STATUS_FILE = "job_status.json"


@dataclass(frozen=True)
class JobFailure:
    """What a failed job of a multirun returns to Hydra instead of ending the process."""

    status: int
    message: str


def in_multirun() -> bool:
    """Whether the code runs as a job of a Hydra multirun."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:  # not inside a Hydra job
        return False


def failed_job(err: BaseException, status: int) -> JobFailure:
    """Log a job's failure as its one line (a fault: with its traceback) and return it as the job's result."""
    cause = user_error(err)
    if cause is not None:
        message = str(cause)
    elif isinstance(err, KeyboardInterrupt):
        message = "interrupted (SIGINT)"
    else:
        message = f"{type(err).__name__}: {err}".splitlines()[0]
    log.error("error: %s", message, exc_info=err if status == FAULT and cause is None else None)
    return JobFailure(status, message)


class SweepStatus(Callback):
    """Each job's status in its run directory; at the end of a multirun, the failed jobs and a non-zero exit."""

    def __init__(self) -> None:
        self.sweep_id: str | None = None
        self.sweep_pid: int | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"
        self.sweep_pid = os.getpid()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if _is_multirun(config):
            write_json(
                _status_path(config),
                {**self._job(config), "status": None, "message": None, "started": _now(), "ended": None, **_process()},
            )

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not _is_multirun(config):
            return
        status, message = _outcome(job_return)
        path = _status_path(config)
        started = _read(path).get("started") if path.is_file() else None
        record = {**self._job(config), "status": status, "message": message, "started": started, "ended": _now()}
        write_json(path, {**record, **_process()})
        if status >= 128 and os.getpid() == self.sweep_pid:  # a signal to the sweep's own process
            statuses = job_statuses(Path(config.hydra.sweep.dir), self.sweep_id)
            print(summary(statuses, stopped_by=_read(path)), file=sys.stderr)
            sys.exit(status)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        statuses = job_statuses(Path(config.hydra.sweep.dir), self.sweep_id)
        failed = [job for job in statuses if job.get("status")]
        if failed:
            print(summary(statuses), file=sys.stderr)
            sys.exit(failed[0]["status"])
        log.info("all %d jobs finished", len(statuses))

    def _job(self, config: DictConfig) -> dict:
        return {
            "sweep": self.sweep_id,
            "job": int(config.hydra.job.num),
            "overrides": list(OmegaConf.to_container(config.hydra.overrides.task)),
            "run_dir": str(config.hydra.runtime.output_dir),
        }


def job_status(run_dir: str | os.PathLike) -> dict | None:
    """The ``job_status.json`` of a run directory (None: not a job of a multirun, or not yet started)."""
    path = Path(run_dir) / STATUS_FILE
    return _read(path) if path.is_file() else None


def job_statuses(sweep_dir: Path, sweep_id: str | None = None) -> list[dict]:
    """The status of every job below ``sweep_dir`` (of the multirun ``sweep_id`` only, when given), by job."""
    found = [_read(path) for path in sweep_dir.rglob(STATUS_FILE)]
    found = [job for job in found if sweep_id is None or job.get("sweep") == sweep_id]
    return sorted(found, key=lambda job: job.get("job", -1))


def process_ended(status: dict) -> bool:
    """Whether the process of a job whose status has no end is known to be gone: its ``pid`` no longer
    exists on ``host``, which is this machine (elsewhere, or for a status without them, nothing is known)."""
    if status.get("host") != socket.gethostname() or not isinstance(status.get("pid"), int):
        return False
    try:
        os.kill(status["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # a process of another user has that pid now
        return False
    return False


def summary(statuses: list[dict], stopped_by: dict | None = None) -> str:
    """The lines a multirun ends with: which jobs failed, with their status, message, overrides, run dir."""
    failed = [job for job in statuses if job.get("status")]
    if stopped_by is not None:
        lines = [
            f"error: the sweep was stopped in job #{stopped_by['job']} (status {stopped_by['status']}); "
            f"the jobs after it were not run. {len(failed)} of {len(statuses)} jobs run failed:"
        ]
    else:
        lines = [f"error: {len(failed)} of {len(statuses)} jobs failed (the others finished):"]
    for job in failed:
        lines += [
            f"  #{job.get('job')} status {job['status']}: {job.get('message')}",
            f"    overrides: {' '.join(job.get('overrides') or []) or '(none)'}",
            f"    run dir: {job.get('run_dir')}",
        ]
    return "\n".join(lines)


def _outcome(job_return: JobReturn) -> tuple[int, str | None]:
    if job_return.status == JobStatus.FAILED:  # an exception the entry point did not handle
        err = job_return._return_value
        return FAULT, f"{type(err).__name__}: {err}".splitlines()[0]
    value = job_return.return_value
    if isinstance(value, JobFailure):
        return value.status, value.message
    return 0, None


def _is_multirun(config: DictConfig) -> bool:
    return OmegaConf.select(config, "hydra.mode") == RunMode.MULTIRUN


def _status_path(config: DictConfig) -> Path:
    return Path(config.hydra.runtime.output_dir) / STATUS_FILE


def _read(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return {"status": None, "message": f"{path} cannot be read ({err})", "run_dir": str(path.parent)}
    return (
        value
        if isinstance(value, dict)
        else {"status": None, "message": f"{path} is not a JSON object", "run_dir": str(path.parent)}
    )


def _process() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname()}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")

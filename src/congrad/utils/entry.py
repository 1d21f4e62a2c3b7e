"""Shared behaviour of the command-line entry points: one line, no stack trace, for what the user can act
on, and an exit status that says what happened (README, "Exit codes and resuming")."""

from __future__ import annotations

import functools
import signal
import sys
from typing import Any, Callable, TypeVar

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from congrad.errors import exit_status, user_error
from congrad.utils.fileset import prepare_output_dir
from congrad.utils.sweep import failed_job, in_multirun

F = TypeVar("F", bound=Callable)


def exit_on_user_error(fn: F) -> F:
    """Report a :class:`CongradError` as one message and exit with its ``exit_code`` (2 for a setting,
    input or path to fix), without a stack trace; Ctrl-C outside training exits 130 the same way. A fault
    keeps its traceback (Hydra prints it, status 1).

    As a job of a Hydra multirun, every failure (a fault too) ends only that job: it is logged and
    returned as the job's result (:mod:`congrad.utils.sweep`), and the multirun goes on."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (Exception, KeyboardInterrupt) as err:
            if in_multirun():
                return failed_job(err, exit_status(err))
            if isinstance(err, KeyboardInterrupt):
                print("error: interrupted (SIGINT)", file=sys.stderr)
                sys.exit(128 + signal.SIGINT)
            cause = user_error(err)
            if cause is None:
                raise
            print(f"error: {cause}", file=sys.stderr)
            sys.exit(cause.exit_code)

    return wrapper  # type: ignore[return-value]


class OutputDirIsRunDir(Callback):
    """Hydra callback of an entry point whose run directory is ``output_dir`` (``evaluate.py``): Hydra creates
    the run directory before the task function runs, so a path that cannot be a directory is reported here,
    as one line and exit 2, rather than as Hydra's stack trace."""

    @exit_on_user_error
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        prepare_output_dir(config.hydra.run.dir)

"""Shared behaviour of the command-line entry points: one line, no stack trace, for what the user can act
on, and an exit status that says what happened (docs/running.md, "Exit codes and resuming")."""

from __future__ import annotations

import functools
import os
import re
import signal
import sys
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, TypeVar

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, open_dict, read_write

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


class RunPaths(Callback):
    """Hydra callback of every entry point (``conf/hydra/default.yaml``): the paths of a run, before Hydra
    creates its directory.

    A leading ``~`` of any setting becomes the home directory: in a config file, or quoted on the command
    line as Hydra's grammar wants it (``"data.path='~/pairs.jsonl'"``), where no shell expands it. Then the
    run directory must exist or be creatable and take data (not read-only, not full): what is wrong is one
    line and exit 2, not Hydra's traceback. ``setting`` names the run directory in that line: ``hydra.run.dir``,
    or ``output_dir`` for ``evaluate.py``, whose run directory it is. In a multirun the command-line values
    are expanded before each job is composed from them."""

    def __init__(self, setting: str = "hydra.run.dir"):
        self.setting = setting

    @exit_on_user_error
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        expand_user(config)
        prepare_output_dir(config.hydra.run.dir, f"{self.setting}={config.hydra.run.dir}")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        expand_user(config)
        with read_write(config):
            for group in ("task", "hydra"):  # the overrides every job is composed from
                overrides = config.hydra.overrides[group]
                for i, override in enumerate(overrides):
                    overrides[i] = expand_user_in_override(override)


def expand_user(node: DictConfig | ListConfig) -> None:
    """In place: every string value under ``node`` that is ``~`` or starts with ``~/`` (interpolations left
    as they are), with the home directory in its place."""
    with read_write(node), open_dict(node) if isinstance(node, DictConfig) else nullcontext():
        keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
        for key in keys:
            child = node._get_node(key)
            if child is None or child._is_interpolation():
                continue
            if isinstance(child, (DictConfig, ListConfig)):
                expand_user(child)
            elif isinstance(child._value(), str) and _HOME.match(child._value()):
                node[key] = os.path.expanduser(child._value())


_HOME = re.compile(r"~(/|$)")
_HOME_IN_VALUE = re.compile(r"(^|[,\[(])(['\"]?)~(?=[/'\",\])]|$)")  # a value, or one of a sweep's, quoted or not


def expand_user_in_override(override: str) -> str:
    """A command-line override ``key=value`` (or a sweep ``key=a,b``) with ``~`` expanded at the start of its
    value(s); the key part (``~key`` deletes a key) is left alone."""
    key, sep, value = override.partition("=")
    if not sep:
        return override
    return key + sep + _HOME_IN_VALUE.sub(lambda m: m.group(1) + m.group(2) + os.path.expanduser("~"), value)

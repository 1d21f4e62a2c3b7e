"""Errors meant for the person running congrad.

Entry points print a :class:`CongradError` as one clear message (no stack trace) and exit with its
:attr:`~CongradError.exit_code`: 2 for a setting, an input or a path to fix, 3 when training diverged,
128 + the signal number when a run was interrupted; anything else is a bug and keeps its traceback
(docs/running.md, "Exit codes and resuming").
"""

import signal

FAULT = 1
USER_ERROR = 2
DIVERGED = 3


class CongradError(Exception):
    """A problem the user can fix: bad input data, a model that cannot be loaded, a wrong setting."""

    exit_code = USER_ERROR


class ConfigError(CongradError, ValueError):
    """A setting outside the values it allows; the message names the key and what is allowed."""


class BadRowError(CongradError, ValueError):
    """A preference row with a missing, empty or malformed field; names the file, the row and the field.

    ``row`` is the row's number as an editor shows it: the 1-based line of a JSON-lines file (blank lines
    counted), else the row's position (from 0, as ``dataset[row]``)."""

    def __init__(self, source: str, row: int, field: str, reason: str):
        self.source, self.row, self.field, self.reason = source, row, field, reason
        super().__init__(f"{source}: row {row}: field '{field}': {reason}")


class ModelLoadError(CongradError):
    """A model or tokenizer that cannot be loaded; the message says what to set."""


class NonFiniteError(CongradError):
    """A NaN or infinite loss, gradient or score: training diverged (or the policy's weights already had).
    The message names the step, the languages of the batch and the settings to look at."""

    exit_code = DIVERGED


class Interrupted(CongradError):
    """A run stopped by SIGTERM (how SLURM preempts) or SIGINT (Ctrl-C); the message says where the
    resumable checkpoint is. The exit status is the shell's convention, 128 + the signal number."""

    def __init__(self, signum: int, message: str):
        self.signum = signum
        self.exit_code = 128 + int(signum)
        super().__init__(message)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


class JudgeUnavailable(CongradError):
    """A judge server that stopped answering during a run (after its retries); the message names the server
    and what the verdict cache kept, so that the rerun continues from there."""


def user_error(err: BaseException) -> CongradError | None:
    """The :class:`CongradError` behind ``err``, also when a wrapper (Hydra's instantiate) re-raised it."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, CongradError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def exit_status(err: BaseException) -> int:
    """The status a process ends with when ``err`` ends it: the ``exit_code`` of the CongradError behind it,
    130 for Ctrl-C, the code of a ``SystemExit``, 1 for anything else (a fault)."""
    if isinstance(err, SystemExit):
        return err.code if isinstance(err.code, int) else (0 if err.code is None else FAULT)
    if isinstance(err, KeyboardInterrupt):
        return 128 + int(signal.SIGINT)
    cause = user_error(err)
    return cause.exit_code if cause is not None else FAULT

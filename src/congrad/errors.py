"""Errors meant for the person running congrad.

Entry points print a :class:`CongradError` as one clear message (no stack trace) and exit with its
:attr:`~CongradError.exit_code`: 2 for a setting, an input or a path to fix, 3 when training diverged,
128 + the signal number when a run was interrupted; anything else is a bug and keeps its traceback
(README, "Exit codes and resuming").
"""

import signal

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

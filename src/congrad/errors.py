"""Errors meant for the person running congrad.

Entry points print a :class:`CongradError` as one clear message (no stack trace) and exit with status 2;
anything else is a bug and keeps its traceback.
"""


class CongradError(Exception):
    """A problem the user can fix: bad input data, a model that cannot be loaded, a wrong setting."""


class ConfigError(CongradError, ValueError):
    """A setting outside the values it allows; the message names the key and what is allowed."""


class BadRowError(CongradError, ValueError):
    """A preference row with a missing, empty or malformed field; names the file, the row and the field."""

    def __init__(self, source: str, row: int, field: str, reason: str):
        self.source, self.row, self.field, self.reason = source, row, field, reason
        super().__init__(f"{source}: row {row}: field '{field}': {reason}")


class ModelLoadError(CongradError):
    """A model or tokenizer that cannot be loaded; the message says what to set."""

"""Shared behaviour of the command-line entry points."""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

from congrad.errors import CongradError

F = TypeVar("F", bound=Callable)


def exit_on_user_error(fn: F) -> F:
    """Report a :class:`CongradError` as one message and exit with status 2, without a stack trace."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CongradError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]

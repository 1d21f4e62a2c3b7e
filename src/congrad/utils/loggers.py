"""Loggers are closed on every way out of the code that opened them: a W&B run is finished with the exit status
of what ended it (0 when the block finished, the error's status otherwise: 2, 3, 130, 143, 1 for a fault), so
no run is left "running" on the dashboard, an offline run is complete for ``wandb sync``, and the next run of
the same process (a sweep's next job, the loop's next iteration) starts a run of its own instead of logging
into the one left open (``wandb.init`` returns the active run)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from congrad.errors import exit_status

log = logging.getLogger(__name__)


@contextmanager
def closing(loggers: Sequence[Any]) -> Iterator[Sequence[Any]]:
    """Finish ``loggers`` (Lightning loggers) when the block ends, however it ends."""
    try:
        yield loggers
    except BaseException as err:
        finish(loggers, exit_status(err))
        raise
    finish(loggers, 0)


def finish(loggers: Sequence[Any], status: int) -> None:
    """Finalize every logger, and finish the W&B runs they opened with exit code ``status`` (a run is marked
    failed unless it is 0). A logger that never opened its run opens none here."""
    from pytorch_lightning.loggers import WandbLogger

    for logger in loggers:
        try:
            logger.finalize("success" if status == 0 else "failed")
            if isinstance(logger, WandbLogger) and logger._experiment is not None:
                logger._experiment.finish(exit_code=status)
                logger._experiment = None
        except Exception as err:  # closing must not hide what ended the run
            log.warning("could not close the logger %s: %s: %s", type(logger).__name__, type(err).__name__, err)

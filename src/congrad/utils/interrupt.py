"""SIGTERM (how SLURM preempts) and SIGINT (Ctrl-C) during training: finish the batch, save a resumable
checkpoint, exit 128 + the signal number (docs/running.md, "Exit codes and resuming").

Lightning turns SIGTERM into a stop at the end of the current batch, by raising ``SIGTERMException`` — a
``SystemExit`` that would exit 0, as if the run had finished. :class:`GracefulStop`, part of every fit,
makes a first Ctrl-C do the same (a second one stops at once), saves ``last.ckpt`` into the checkpoint
folder (with the filter state, like every checkpoint; no adapter is written, as it is only at the end of a
finished fit) and lets the fit raise :class:`~congrad.errors.Interrupted`, which the entry points turn into
exit 143 (SIGTERM) or 130 (SIGINT). A resumed run (``ckpt_path=.../last.ckpt``) continues with the next
batch, in the same order.

A signal that comes before training starts (while the model loads, during the first ConGrad pass) ends
the process at once, with the same status: there is nothing to resume yet. Where a run holds something open
outside a fit (a W&B run of ``evaluate.py``, the self-rewarding loop's generation and judging),
:func:`interruptible` makes the signal raise :class:`~congrad.errors.Interrupted` instead, so that the code
around it closes what it opened and says where the run stopped.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

from congrad.errors import Interrupted

log = logging.getLogger(__name__)


class GracefulStop(pl.Callback):
    def __init__(self, resume_hint: str = "python train.py <the same overrides>"):
        self.resume_hint = resume_hint
        self.signum: int | None = None
        self.checkpoint: Path | None = None
        self.where = ""
        self._previous = None

    # ---- during training: Ctrl-C asks for the same stop as SIGTERM ------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.signum, self.checkpoint = None, None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._sigint_handler(trainer))
        log.info("training: SIGTERM or Ctrl-C stops after the current batch and saves a resumable checkpoint")

    def _sigint_handler(self, trainer: pl.Trainer):
        def handler(signum, frame):
            if self.signum is not None:  # a second Ctrl-C: stop now, without a checkpoint
                raise KeyboardInterrupt
            self.signum = signal.SIGINT
            log.warning("Ctrl-C: stopping after the current batch (press it again to stop at once)")
            trainer._signal_connector.received_sigterm = True  # Lightning's stop at the end of the batch

        return handler

    def _restore(self) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous)
        self._previous = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    # ---- the stop -----------------------------------------------------------------------------------
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()
        self.where = f"epoch {trainer.current_epoch}, step {trainer.global_step}"
        if isinstance(exception, SIGTERMException):  # at the end of a batch: a consistent state to save
            self.signum = self.signum or signal.SIGTERM
            dirpath = getattr(trainer.checkpoint_callback, "dirpath", None)
            if dirpath is not None:
                self.checkpoint = Path(dirpath) / "last.ckpt"
                trainer.save_checkpoint(self.checkpoint, weights_only=False)  # a temporary file, renamed
        elif isinstance(exception, KeyboardInterrupt):  # mid-step: nothing consistent to save
            self.signum = signal.SIGINT

    def error(self) -> Interrupted:
        """The error a fit stopped by a signal raises."""
        name = signal.Signals(self.signum).name
        if self.checkpoint is not None:
            what = (
                f"saved a resumable checkpoint, {self.checkpoint}. Resume with: "
                f"{self.resume_hint} ckpt_path={self.checkpoint}"
            )
        else:
            what = (
                "no checkpoint was saved (a second Ctrl-C stops at once; callbacks.model_checkpoint=null "
                "saves none); the last one saved is in the run's checkpoints/ folder, if any"
            )
        return Interrupted(self.signum, f"interrupted by {name} at {self.where}: {what}")


@contextmanager
def interruptible(where: str = "") -> Iterator[None]:
    """SIGTERM and SIGINT raise :class:`Interrupted` ("interrupted by SIGTERM ``where``") while the block runs.
    Not around a fit: Lightning's own handler, which stops at the end of a batch, would call this one too."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupted(signum, " ".join(filter(None, ("interrupted by", signal.Signals(signum).name, where))))

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
